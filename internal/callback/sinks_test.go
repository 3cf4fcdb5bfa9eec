package callback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestS3SinkPutsSignedJSONLines: a batch is one PutObject, path-style under
// the endpoint, at s3_path/<date>/<time>-<id>.jsonl, its body one payload a
// line, signed with SigV4 over that body; a retry goes to the same key.
func TestS3SinkPutsSignedJSONLines(t *testing.T) {
	type put struct{ path, auth, sha, body string }
	var puts []put
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		puts = append(puts, put{r.Method + " " + r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("X-Amz-Content-Sha256"), string(b)})
	}))
	defer srv.Close()
	p := &config.S3CallbackParams{S3BucketName: "b", S3RegionName: "eu-west-1", S3EndpointURL: config.EnvString(srv.URL + "/"),
		S3AWSAccessKeyID: "AKID", S3AWSSecretAccessKey: "secret", S3Path: "/logs/"}
	s, err := newS3(p, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var items [][]byte
	for _, id := range []string{"a", "b"} {
		it, _ := s.Encode(&Payload{ID: id, Status: "success"})
		items = append(items, it)
	}
	first := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
	b := &Batch{Items: items, First: first, ID: "0123abcd"}
	for i := 0; i < 2; i++ {
		if err := s.Send(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if len(puts) != 2 || puts[0].path != puts[1].path {
		t.Fatalf("puts %+v, want two to one key", puts)
	}
	got := puts[0]
	if got.path != "PUT /b/logs/2026-03-04/05-06-07.000008-0123abcd.jsonl" {
		t.Errorf("path %q", got.path)
	}
	sum := sha256.Sum256([]byte(got.body))
	if got.sha != hex.EncodeToString(sum[:]) || !strings.HasPrefix(got.auth, "AWS4-HMAC-SHA256 Credential=AKID/20") || !strings.Contains(got.auth, "/eu-west-1/s3/aws4_request") {
		t.Errorf("signature: sha %q auth %q", got.sha, got.auth)
	}
	lines := strings.Split(got.body, "\n")
	if len(lines) != 3 || lines[2] != "" || !strings.HasPrefix(lines[0], `{"id":"a"`) || !strings.HasPrefix(lines[1], `{"id":"b"`) {
		t.Errorf("body %q, want two JSON lines", got.body)
	}
}
