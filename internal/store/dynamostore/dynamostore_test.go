package dynamostore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/dynamostore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// endpoint is the DynamoDB-compatible server of TOLLGATE_TEST_DYNAMODB_URL
// (.ci/run starts dynalite and sets it); without it the tests skip.
func endpoint(t testing.TB) string {
	t.Helper()
	u := os.Getenv("TOLLGATE_TEST_DYNAMODB_URL")
	if u == "" {
		t.Skip("TOLLGATE_TEST_DYNAMODB_URL is not set: skipping the DynamoDB store suite (e.g. http://127.0.0.1:8000 with dynalite: npx dynalite --port 8000)")
	}
	return u
}

// options are a fresh set of table names (a random prefix) on the test
// server, so that runs and tests never share tables.
func options(t testing.TB, url string) dynamostore.Options {
	var b [5]byte
	_, _ = rand.Read(b[:])
	p := "t" + hex.EncodeToString(b[:]) + "_"
	return dynamostore.Options{Region: "us-west-2", Endpoint: url,
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		UserTable:   p + "users", KeyTable: p + "keys", ConfigTable: p + "config", SpendTable: p + "spend"}
}

func open(t testing.TB, o dynamostore.Options) *dynamostore.DB {
	t.Helper()
	s, err := dynamostore.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		_ = s.DropTables(context.Background())
		s.Close()
	})
	return s
}

func TestDynamoDB(t *testing.T) {
	t.Parallel()
	url := endpoint(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, options(t, url)) })
}
