package dynamostore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

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

// TestEndpointFromEnvironment: with no endpoint in database_args, the
// SDK's standard variables name the server: AWS_ENDPOINT_URL_DYNAMODB, else
// AWS_ENDPOINT_URL; database_args' endpoint wins over both. (Not parallel:
// it sets the process environment.)
func TestEndpointFromEnvironment(t *testing.T) {
	url := endpoint(t)
	for _, tt := range []struct {
		name, env, value, option, want string
	}{
		{"service variable", "AWS_ENDPOINT_URL_DYNAMODB", url, "", url},
		{"global variable", "AWS_ENDPOINT_URL", url, "", url},
		{"option wins", "AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1", url, url},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			o := options(t, tt.option)
			s := open(t, o) // creates the tables there: the endpoint was used
			if s.Endpoint() != tt.want {
				t.Fatalf("endpoint %q, want %q", s.Endpoint(), tt.want)
			}
			if err := s.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// faulty is a proxy in front of the test server that answers some
// requests itself: fail(target, n) decides, for the n-th request of an
// operation (X-Amz-Target), whether to throttle it (not forwarded) or to
// forward it and then answer 500 (applied, but the client cannot know).
type faulty struct {
	mu     sync.Mutex
	counts map[string]int
	fail   func(op string, n int) (throttle, lose bool)
	hits   atomic.Int64
	next   http.Handler
}

func (f *faulty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
	f.mu.Lock()
	f.counts[op]++
	n := f.counts[op]
	f.mu.Unlock()
	throttle, lose := f.fail(op, n)
	answer := func(status int, body string) {
		f.hits.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(body))), 10))
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
	if throttle {
		answer(400, `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}`)
		return
	}
	if lose {
		f.next.ServeHTTP(httptest.NewRecorder(), r)
		answer(500, `{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"lost"}`)
		return
	}
	f.next.ServeHTTP(w, r)
}

func proxied(t *testing.T, fail func(op string, n int) (bool, bool)) (*faulty, string) {
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	f := &faulty{counts: map[string]int{}, fail: fail, next: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// TestThrottledSpendIsBookedOnce: every other put and update of a batch is
// throttled (ProvisionedThroughputExceededException); ApplySpend retries
// them and books every row exactly once.
func TestThrottledSpendIsBookedOnce(t *testing.T) {
	t.Parallel()
	f, url := proxied(t, func(op string, n int) (bool, bool) {
		return (op == "UpdateItem" || op == "PutItem") && n%2 == 0, false
	})
	s := open(t, options(t, url))
	// The spend writer's own deadline: throttling backs off for a while.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	batch := make([]store.SpendLog, 30)
	for i := range batch {
		batch[i] = store.SpendLog{RequestID: fmt.Sprintf("r%d", i), KeyHash: "k", TeamID: "t", EndUser: "e", ModelGroup: "m",
			Cost: 0.25, RequestTags: []string{"a"}, StartedAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if f.hits.Load() < 15 {
		t.Fatalf("only %d requests throttled", f.hits.Load())
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil || k.Spend != 7.5 {
		t.Fatalf("key spend %v (%v), want 7.5", k.Spend, err)
	}
	if total, _ := s.TotalSpend(ctx); total != 7.5 {
		t.Fatalf("total %v, want 7.5", total)
	}
	rows, err := s.TagReport(ctx, store.TagFilter{})
	if err != nil || len(rows) != 1 || rows[0].Requests != 30 {
		t.Fatalf("tag report %+v %v", rows, err)
	}
}

// TestLostAnswerNeverDoubleBooks: the key's spend update is applied but
// its answer is lost (500). ApplySpend does not retry it (it might have
// been applied) and reports the error; the spend writer's retry of the
// batch finds the rows claimed and books nothing more: the key is charged
// once, never twice.
func TestLostAnswerNeverDoubleBooks(t *testing.T) {
	t.Parallel()
	var lost atomic.Bool
	_, url := proxied(t, func(op string, n int) (bool, bool) {
		return false, op == "UpdateItem" && lost.Load() && n%3 == 0
	})
	s := open(t, options(t, url))
	ctx := context.Background()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	batch := []store.SpendLog{{RequestID: "r1", KeyHash: "k", Cost: 1, StartedAt: time.Now()}, {RequestID: "r2", KeyHash: "k", Cost: 2, StartedAt: time.Now()}}
	lost.Store(true)
	err := s.ApplySpend(ctx, batch)
	lost.Store(false)
	if err == nil {
		t.Fatal("a lost answer was reported as success")
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil || k.Spend > 3 {
		t.Fatalf("key spend %v (%v): booked twice", k.Spend, err)
	}
}

// TestCapacityPer1000Requests measures the capacity units the spend of
// 1,000 requests consumes (ReturnConsumedCapacity=TOTAL), as the spend
// writer flushes it: in batches of 100 rows, each row with a key, user,
// team, end user, model and one tag, over 10 keys. docs/dynamodb.md
// quotes the numbers it logs.
func TestCapacityPer1000Requests(t *testing.T) {
	t.Parallel()
	o := options(t, endpoint(t))
	o.MeasureCapacity = true
	s := open(t, o)
	ctx := context.Background()
	for i := range 10 {
		if err := s.CreateKey(ctx, &store.Key{TokenHash: fmt.Sprintf("k%d", i), UserID: "u", TeamID: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	s.CreateUser(ctx, &store.User{UserID: "u"})
	s.CreateTeam(ctx, &store.Team{TeamID: "t"})
	// 200 requests are measured and scaled to 1,000: the cost is linear
	// in the batches (the same targets in each) and the rows.
	measure := func(batchSize int) (float64, float64) {
		s.ResetCapacity()
		for b := 0; b < 200; b += batchSize {
			batch := make([]store.SpendLog, batchSize)
			for i := range batch {
				n := b + i
				batch[i] = store.SpendLog{RequestID: fmt.Sprintf("b%d-r%d", batchSize, n), KeyHash: fmt.Sprintf("k%d", n%10), UserID: "u", TeamID: "t",
					EndUser: fmt.Sprintf("e%d", n%5), ModelGroup: "gpt-4", Cost: 0.001, PromptTokens: 100, CompletionTokens: 20, Status: 200,
					RequestTags: []string{"prod"}, StartedAt: time.Now(), EndedAt: time.Now()}
			}
			if err := s.ApplySpend(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		r, w := s.Capacity()
		return 5 * r, 5 * w
	}
	for _, size := range []int{100, 10} {
		r, w := measure(size)
		t.Logf("1,000 requests' spend in batches of %d rows: %.1f read units, %.1f write units", size, r, w)
		// At least one write per spend log; the ADDs are per target per
		// batch, so larger batches cost fewer.
		if w < 1000 || w > 1000+float64(1000/size)*30 {
			t.Errorf("batches of %d: %.1f write units for 1,000 rows", size, w)
		}
	}
	s.ResetCapacity()
	for range 10 {
		if _, _, err := s.Changes(ctx, time.Now().Add(-5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	r, w := s.Capacity()
	t.Logf("one resync (Changes, nothing changed): %.1f read units, %.1f write units", r/10, w/10)
	s.ResetCapacity()
	if _, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "key_hash"}); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Capacity()
	t.Logf("a spend report over the day (10 keys × 5 end users): %.1f read units", r)
}

// BenchmarkSpendReport reads a 30-day report from the daily rollups:
// 30 day partitions of 100 rollup items (100 keys × one model), which is
// what 1,000,000 spend rows of 100 keys over 30 days leave behind. The
// rollups are seeded with 3,000 rows; the report's cost does not depend
// on how many rows made them.
func BenchmarkSpendReport(b *testing.B) {
	o := options(b, endpoint(b))
	o.MeasureCapacity = true
	s := open(b, o)
	ctx := context.Background()
	start := time.Date(2026, 10, 1, 12, 0, 0, 0, time.UTC)
	var batch []store.SpendLog
	for d := range 30 {
		for k := range 100 {
			batch = append(batch, store.SpendLog{RequestID: fmt.Sprintf("d%d-k%d", d, k), KeyHash: fmt.Sprintf("key%03d", k), TeamID: "t", ModelGroup: "gpt-4",
				Cost: 0.01, PromptTokens: 10, StartedAt: start.AddDate(0, 0, d)})
		}
		if len(batch) >= 1000 {
			if err := s.ApplySpend(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = nil
		}
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		b.Fatal(err)
	}
	s.ResetCapacity()
	n := 0
	for b.Loop() {
		rows, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "key_hash", From: start, To: start.AddDate(0, 0, 30)})
		if err != nil || len(rows) != 3000 {
			b.Fatalf("%d rows, %v", len(rows), err)
		}
		n++
	}
	r, _ := s.Capacity()
	b.ReportMetric(r/float64(n), "read-units/op")
}

// TestProvisionedTables: billing_mode PROVISIONED_THROUGHPUT creates the
// tables and their index with the capacities asked for; opening again
// uses the tables as they are.
func TestProvisionedTables(t *testing.T) {
	t.Parallel()
	o := options(t, endpoint(t))
	o.BillingMode, o.ReadCapacityUnits, o.WriteCapacityUnits = "PROVISIONED_THROUGHPUT", 7, 3
	s := open(t, o)
	c := dynamodb.New(dynamodb.Options{Region: "us-west-2", BaseEndpoint: aws.String(o.Endpoint), Credentials: o.Credentials})
	for i, name := range s.Tables() {
		out, err := c.DescribeTable(context.Background(), &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		pt := out.Table.ProvisionedThroughput
		if pt == nil || aws.ToInt64(pt.ReadCapacityUnits) != 7 || aws.ToInt64(pt.WriteCapacityUnits) != 3 {
			t.Errorf("%s: throughput %+v", name, pt)
		}
		if i < 2 { // the user and key tables carry the by_kind index
			if len(out.Table.GlobalSecondaryIndexes) != 1 || aws.ToInt64(out.Table.GlobalSecondaryIndexes[0].ProvisionedThroughput.WriteCapacityUnits) != 3 {
				t.Errorf("%s: indexes %+v", name, out.Table.GlobalSecondaryIndexes)
			}
		}
	}
	if _, err := dynamostore.Open(context.Background(), o); err != nil {
		t.Fatalf("opening existing tables: %v", err)
	}
	o.ReadCapacityUnits = -1
	if _, err := dynamostore.Open(context.Background(), o); err == nil || !strings.Contains(err.Error(), "read_capacity_units") {
		t.Fatalf("negative capacity units: %v", err)
	}
	o.BillingMode = "ON_DEMAND_PLEASE"
	if _, err := dynamostore.Open(context.Background(), o); err == nil || !strings.Contains(err.Error(), "billing_mode") {
		t.Fatalf("an unknown billing mode: %v", err)
	}
}

// TestSSLVerify: a DynamoDB-compatible server behind TLS with a
// certificate nobody signed is refused, unless ssl_verify is false.
func TestSSLVerify(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(u))
	defer srv.Close()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	o := options(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := dynamostore.Open(ctx, o); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an unsigned certificate was accepted: %v", err)
	}
	o.SSLVerify = new(bool)
	open(t, o)
}

// TestLongGroupsRollUp: a rollup whose group (key, user, team, end user,
// model) is longer than a sort key may be on AWS (1,024 bytes) is kept
// under its hash and reported under its own names. (dynalite does not
// enforce the bound: this checks the hashed items round-trip.)
func TestLongGroupsRollUp(t *testing.T) {
	t.Parallel()
	s := open(t, options(t, endpoint(t)))
	ctx := context.Background()
	long := strings.Repeat("é", 600) // 1,200 bytes
	day := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	batch := []store.SpendLog{
		{RequestID: "a", EndUser: long, ModelGroup: "m", Cost: 1, StartedAt: day, RequestTags: []string{long}},
		{RequestID: "b", EndUser: long, ModelGroup: "m", Cost: 2, StartedAt: day, RequestTags: []string{long}},
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	rows, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "end_user"})
	if err != nil || len(rows) != 1 || rows[0].Group != long || rows[0].Spend != 3 || rows[0].Requests != 2 {
		t.Fatalf("report %+v %v", rows, err)
	}
	tags, err := s.TagReport(ctx, store.TagFilter{})
	if err != nil || len(tags) != 1 || tags[0].Tag != long || tags[0].Requests != 2 {
		t.Fatalf("tag report %+v %v", tags, err)
	}
}

// TestThrottledBookingIsSentAgain: every spend update of a batch is
// throttled past its retries, so none is applied and ApplySpend fails with
// its rows claimed. The spend writer's retry of the batch must book them
// (the updates kept and sent again), once: before, the retry found the
// rows claimed and booked nothing, losing the batch.
func TestThrottledBookingIsSentAgain(t *testing.T) {
	t.Parallel()
	var block atomic.Bool
	_, url := proxied(t, func(op string, n int) (bool, bool) {
		return op == "UpdateItem" && block.Load(), false
	})
	o := options(t, url)
	o.ThrottleAttempts = 2
	s := open(t, o)
	ctx := context.Background()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	batch := []store.SpendLog{{RequestID: "r1", KeyHash: "k", ModelGroup: "m", Cost: 1, RequestTags: []string{"a"}, StartedAt: day},
		{RequestID: "r2", KeyHash: "k", ModelGroup: "m", Cost: 2, StartedAt: day}}
	block.Store(true)
	if err := s.ApplySpend(ctx, batch); err == nil {
		t.Fatal("a batch whose every update was throttled was reported booked")
	}
	block.Store(false)
	for range 2 { // the writer's retry, then a replay of the same batch
		if err := s.ApplySpend(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend != 3 {
		t.Fatalf("key spend %v, want 3", k.Spend)
	}
	if total, _ := s.TotalSpend(ctx); total != 3 {
		t.Fatalf("total %v, want 3", total)
	}
	rows, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "key_hash"})
	if err != nil || len(rows) != 1 || rows[0].Requests != 2 || rows[0].Spend != 3 {
		t.Fatalf("spend report %+v %v", rows, err)
	}
}

// TestTableOfAnotherLayoutStopsTheStart: a table that exists with another
// key schema (LiteLLM's own LiteLLM_UserTable is keyed by user_id), or a
// user or key table without the by_kind index, stops the start with an
// error naming it. Before, the store started on it and every write failed
// as data refused (ValidationException), so the spend writer dropped the
// spend rows as rejected.
func TestTableOfAnotherLayoutStopsTheStart(t *testing.T) {
	t.Parallel()
	o := options(t, endpoint(t))
	c := dynamodb.New(dynamodb.Options{Region: "us-west-2", BaseEndpoint: aws.String(o.Endpoint), Credentials: o.Credentials})
	ctx := context.Background()
	create := func(name string, attrs ...string) {
		t.Helper()
		in := &dynamodb.CreateTableInput{TableName: aws.String(name), BillingMode: types.BillingModePayPerRequest}
		for i, a := range attrs {
			in.AttributeDefinitions = append(in.AttributeDefinitions, types.AttributeDefinition{AttributeName: aws.String(a), AttributeType: types.ScalarAttributeTypeS})
			in.KeySchema = append(in.KeySchema, types.KeySchemaElement{AttributeName: aws.String(a), KeyType: []types.KeyType{types.KeyTypeHash, types.KeyTypeRange}[i]})
		}
		if _, err := c.CreateTable(ctx, in); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)}) })
	}
	create(o.UserTable, "user_id")
	_, err := dynamostore.Open(ctx, o)
	if err == nil || !strings.Contains(err.Error(), o.UserTable) || !strings.Contains(err.Error(), "user_id") {
		t.Fatalf("a user table keyed by user_id: %v", err)
	}
	o2 := options(t, endpoint(t))
	create(o2.KeyTable, "pk", "sk") // the layout, without the by_kind index
	_, err = dynamostore.Open(ctx, o2)
	if err == nil || !strings.Contains(err.Error(), o2.KeyTable) || !strings.Contains(err.Error(), "by_kind") {
		t.Fatalf("a key table without by_kind: %v", err)
	}
	for _, o := range []dynamostore.Options{o, o2} {
		for _, name := range []string{o.UserTable, o.KeyTable, o.ConfigTable, o.SpendTable} {
			_, _ = c.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
		}
	}
}

// TestConcurrentAliasChangesLeaveNoStaleLock: one key's alias is changed
// to ten different aliases at once. Whatever alias the key ends with, the
// others must be free for another key to take, and no alias may lead to a
// key that does not carry it. Before, two updates reading the same old
// alias both locked their new one and only the winner's was ever
// released: the loser's alias stayed locked to a key that did not have it.
func TestConcurrentAliasChangesLeaveNoStaleLock(t *testing.T) {
	t.Parallel()
	s := open(t, options(t, endpoint(t)))
	ctx := context.Background()
	old := "old"
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k", KeyAlias: &old}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := fmt.Sprintf("a%d", i)
			_ = s.UpdateKey(ctx, &store.Key{TokenHash: "k", KeyAlias: &a})
		}()
	}
	wg.Wait()
	k, err := s.GetKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		a := fmt.Sprintf("a%d", i)
		if k.KeyAlias != nil && *k.KeyAlias == a {
			if got, err := s.GetKeyByAlias(ctx, a); err != nil || got.TokenHash != "k" {
				t.Errorf("the key's alias %s does not lead to it: %v", a, err)
			}
			continue
		}
		if got, err := s.GetKeyByAlias(ctx, a); err == nil {
			t.Errorf("alias %s leads to key %s whose alias is %v", a, got.TokenHash, *got.KeyAlias)
		}
		if err := s.CreateKey(ctx, &store.Key{TokenHash: "other" + a, KeyAlias: &a}); err != nil {
			t.Errorf("alias %s, which no key has, cannot be taken: %v", a, err)
		}
	}
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "other-old", KeyAlias: &old}); k.KeyAlias != nil && *k.KeyAlias != old && err != nil {
		t.Errorf("the old alias cannot be taken: %v", err)
	}
}

// countingWriter counts the bytes of the answers it passes on.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	return c.ResponseWriter.Write(b)
}

// TestSpendLogListingReadsOnlyThePagesContent: a listing of 40 spend logs
// that each keep 20 KB of messages, one page of 2 rows: the scan must not
// bring every row's content back (the page's rows have theirs read by
// key). Before, the scan read all 800 KB to show two rows, so a listing of
// a large table held every stored prompt in memory.
func TestSpendLogListingReadsOnlyThePagesContent(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	var scanned atomic.Int64
	next := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".Scan") {
			w = countingWriter{w, &scanned}
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s := open(t, options(t, srv.URL))
	ctx := context.Background()
	msg := []byte(`[{"role":"user","content":"` + strings.Repeat("x", 20<<10) + `"}]`)
	var batch []store.SpendLog
	for i := range 40 {
		batch = append(batch, store.SpendLog{RequestID: fmt.Sprintf("r%02d", i), KeyHash: "k", Cost: 1,
			StartedAt: time.Date(2026, 11, 1, 0, i, 0, 0, time.UTC), Messages: msg})
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	logs, total, err := s.ListSpendLogs(ctx, store.SpendFilter{KeyHash: "k", Page: store.Page{Number: 1, Size: 2}})
	if err != nil || total != 40 || len(logs) != 2 {
		t.Fatalf("listing: %d of %d, %v", len(logs), total, err)
	}
	if logs[0].RequestID != "r39" || string(logs[0].Messages) != string(msg) || string(logs[1].Messages) != string(msg) {
		t.Fatalf("the page's rows lack their content: %s, %d bytes", logs[0].RequestID, len(logs[0].Messages))
	}
	if n := scanned.Load(); n > 100<<10 {
		t.Fatalf("the scan read %d KB for a page of two rows", n>>10)
	}
}

// TestLostClaimAnswerIsBookedOnRetry: a spend-log put (the row's claim) is
// applied but its answer is lost. The batch fails; its retry finds the
// item there, with this process's claim token, and books the row, once.
// Before, the retry took the item for a replay and the row was never
// booked.
func TestLostClaimAnswerIsBookedOnRetry(t *testing.T) {
	t.Parallel()
	var lose atomic.Bool
	_, url := proxied(t, func(op string, n int) (bool, bool) {
		return false, op == "PutItem" && lose.CompareAndSwap(true, false)
	})
	s := open(t, options(t, url))
	ctx := context.Background()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	batch := []store.SpendLog{{RequestID: "r1", KeyHash: "k", Cost: 1, StartedAt: time.Now()}}
	lose.Store(true)
	if err := s.ApplySpend(ctx, batch); err == nil {
		t.Fatal("a lost claim answer was reported as success")
	}
	for range 2 { // the writer's retry, then a replay
		if err := s.ApplySpend(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend != 1 {
		t.Fatalf("key spend %v, want 1", k.Spend)
	}
	if total, _ := s.TotalSpend(ctx); total != 1 {
		t.Fatalf("total %v, want 1", total)
	}
}

// TestChangesReadsChangedKeysAtOnce: Changes reads each changed key's
// model spend; with many changed keys (a bulk import) those reads must
// overlap, or a resync tick outlasts its 10 s deadline and, failing, never
// advances. The proxy holds the first key query until a second one comes
// (up to 5 s) and records whether one did. Before, they ran one after
// the other.
func TestChangesReadsChangedKeysAtOnce(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	var hold, overlapped atomic.Bool
	var queries atomic.Int64
	second := make(chan struct{})
	next := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold.Load() && strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".Query") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			if strings.Contains(string(body), `"key#`) { // a key's partition, not the index
				switch queries.Add(1) {
				case 1:
					select {
					case <-second:
						overlapped.Store(true)
					case <-time.After(5 * time.Second):
					}
				case 2:
					close(second)
				}
			}
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s := open(t, options(t, srv.URL))
	ctx := context.Background()
	since := time.Now().Add(-time.Second)
	for i := range 8 {
		if err := s.CreateKey(ctx, &store.Key{TokenHash: fmt.Sprintf("k%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	hold.Store(true)
	snap, _, err := s.Changes(ctx, since)
	hold.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Keys) != 8 {
		t.Fatalf("changes: %d keys, want 8", len(snap.Keys))
	}
	if !overlapped.Load() {
		t.Fatal("the changed keys were read one at a time")
	}
}

// TestTwoReplicasApplyOverlappingBatches: two stores on the same tables
// (two replicas) book overlapping batches at once, each batch replayed by
// the other: every row is booked exactly once.
func TestTwoReplicasApplyOverlappingBatches(t *testing.T) {
	t.Parallel()
	o := options(t, endpoint(t))
	a := open(t, o)
	b, err := dynamostore.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for _, s := range []*dynamostore.DB{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var batch []store.SpendLog
				for j := i; j < i+5; j++ { // rows i..i+4: each row in up to 5 batches on each replica
					batch = append(batch, store.SpendLog{RequestID: fmt.Sprintf("r%02d", j), KeyHash: "k", ModelGroup: "m", Cost: 0.5, StartedAt: day})
				}
				errs <- s.ApplySpend(ctx, batch)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	const rows = 24 // r00 … r23
	k, err := b.GetKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend != rows*0.5 {
		t.Fatalf("key spend %v, want %v", k.Spend, rows*0.5)
	}
	rep, err := a.SpendReport(ctx, store.ReportFilter{GroupBy: "key_hash"})
	if err != nil || len(rep) != 1 || rep[0].Requests != rows {
		t.Fatalf("report %+v %v, want %d requests", rep, err, rows)
	}
}

// TestRecordPastTheItemLimitIsRefused: a user whose metadata passes
// DynamoDB's 400 KB item limit is refused as data (store.ErrRejected, a
// 400 at the API), not an outage.
func TestRecordPastTheItemLimitIsRefused(t *testing.T) {
	t.Parallel()
	s := open(t, options(t, endpoint(t)))
	u := &store.User{UserID: "big", Metadata: map[string]any{"x": strings.Repeat("y", 450<<10)}}
	if err := s.CreateUser(context.Background(), u); !errors.Is(err, store.ErrRejected) {
		t.Fatalf("a 450 KB user: %v, want ErrRejected", err)
	}
}

// TestDeleteWhoseTombstoneFailsLeavesTheRecord: the tombstone of a key's
// (or a user's) delete cannot be written. The delete must then fail with
// the record still there (to be deleted again), never delete it without a
// tombstone: other replicas learn of deletions only from tombstones, so a
// revoked key would stay usable on them until they restart.
func TestDeleteWhoseTombstoneFailsLeavesTheRecord(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	next := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() && strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".PutItem") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			if strings.Contains(string(body), `"deletions#`) {
				w.Header().Set("Content-Type", "application/x-amz-json-1.0")
				w.WriteHeader(400)
				io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"refused"}`)
				return
			}
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s := open(t, options(t, srv.URL))
	ctx := context.Background()
	alias := "a"
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k", KeyAlias: &alias}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, &store.User{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Second)
	refuse.Store(true)
	if err := s.DeleteKey(ctx, "k"); err == nil {
		t.Fatal("a key delete whose tombstone failed was reported done")
	}
	if err := s.DeleteUser(ctx, "u"); err == nil {
		t.Fatal("a user delete whose tombstone failed was reported done")
	}
	refuse.Store(false)
	if _, err := s.GetKey(ctx, "k"); err != nil {
		t.Fatalf("the key is gone without a tombstone: %v", err)
	}
	if _, err := s.GetUser(ctx, "u"); err != nil {
		t.Fatalf("the user is gone without a tombstone: %v", err)
	}
	if err := s.DeleteKey(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	_, dels, err := s.Changes(ctx, since)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range dels {
		found = found || (d.Kind == store.KindKey && d.ID == "k")
	}
	if !found {
		t.Fatalf("the key's deletion is not among the changes: %+v", dels)
	}
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k2", KeyAlias: &alias}); err != nil {
		t.Fatalf("the deleted key's alias is still held: %v", err)
	}
}

// TestRegenerateKeepsTheAliasFromOthers: while a key is regenerated
// (ReplaceKey, same alias), another replica creates a key with that alias
// right after the first one's alias lock is touched. At most one key may
// end up with the alias. Before, the lock was released and taken again,
// so the other key took it in between and both keys had the alias.
func TestRegenerateKeepsTheAliasFromOthers(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	o := options(t, endpoint(t))
	other := open(t, o) // a second replica, straight to the server
	alias := "shared"
	var once sync.Once
	var intruder error
	next := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		next.ServeHTTP(w, r)
		target := r.Header.Get("X-Amz-Target")
		if (strings.HasSuffix(target, ".DeleteItem") || strings.HasSuffix(target, ".UpdateItem")) && strings.Contains(string(body), `"alias#shared"`) {
			once.Do(func() {
				intruder = other.CreateKey(context.Background(), &store.Key{TokenHash: "intruder", KeyAlias: &alias})
			})
		}
	}))
	t.Cleanup(srv.Close)
	po := o
	po.Endpoint = srv.URL
	s, err := dynamostore.Open(context.Background(), po)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "old", KeyAlias: &alias}); err != nil {
		t.Fatal(err)
	}
	err = s.ReplaceKey(ctx, "old", &store.Key{TokenHash: "new", KeyAlias: &alias})
	t.Logf("regenerate: %v; the other replica's create: %v", err, intruder)
	all, _, err := other.ListKeys(ctx, store.KeyFilter{Alias: alias})
	if err != nil {
		t.Fatal(err)
	}
	var with []string
	for _, k := range all {
		if aliasOf := k.KeyAlias; aliasOf != nil && *aliasOf == alias {
			with = append(with, k.TokenHash)
		}
	}
	if len(with) != 1 {
		t.Fatalf("keys with alias %q: %v, want exactly one", alias, with)
	}
}

// TestNoSpendLogsPartialFailureBooksOnce: with disable_spend_logs (no
// claims, so no replay protection) the key's update of a batch is
// throttled past its retries while the others land. A retry of the whole
// batch (what the spend writer does on an error) would book the landed
// updates twice: ApplySpend reports no error, and the next batch sends the
// key's update kept. Before, the error made the writer book the total and
// rollups twice.
func TestNoSpendLogsPartialFailureBooksOnce(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	var block atomic.Bool
	next := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if block.Load() && strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".UpdateItem") && strings.Contains(string(body), `"key#k"`) {
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			w.WriteHeader(400)
			io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}`)
			return
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	o := options(t, srv.URL)
	o.ThrottleAttempts = 2
	s := open(t, o)
	s.DisableSpendLogs(true)
	ctx := context.Background()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k"}); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
	b1 := []store.SpendLog{{RequestID: "r1", KeyHash: "k", ModelGroup: "m", Cost: 1, StartedAt: day}}
	b2 := []store.SpendLog{{RequestID: "r2", KeyHash: "k", ModelGroup: "m", Cost: 2, StartedAt: day}}
	block.Store(true)
	if err := s.ApplySpend(ctx, b1); err != nil {
		block.Store(false)
		if err := s.ApplySpend(ctx, b1); err != nil { // the writer's retry
			t.Fatal(err)
		}
	}
	block.Store(false)
	if err := s.ApplySpend(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if total, _ := s.TotalSpend(ctx); total != 3 {
		t.Fatalf("total %v, want 3", total)
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend != 3 {
		t.Fatalf("key spend %v, want 3", k.Spend)
	}
}
