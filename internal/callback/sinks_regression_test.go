package callback

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// awsURIEncode is SigV4's URI encoding (as S3 and MinIO apply it to the
// path they received): every byte but A-Z a-z 0-9 - . _ ~ is %XX; '/' is
// kept in a path.
func awsURIEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '~', c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// verifyS3SigV4 checks r's SigV4 signature the way an S3 server does: it
// rebuilds the canonical request from what it received (the decoded path,
// URI-encoded once) and compares signatures.
func verifyS3SigV4(r *http.Request, secret string) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return fmt.Errorf("authorization %q", auth)
	}
	parts := map[string]string{}
	for p := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		parts[k] = v
	}
	cred := strings.SplitN(parts["Credential"], "/", 2)
	if len(cred) != 2 {
		return fmt.Errorf("credential %q", parts["Credential"])
	}
	scope := cred[1]
	sc := strings.Split(scope, "/")
	signed := strings.Split(parts["SignedHeaders"], ";")
	sort.Strings(signed)
	var ch strings.Builder
	for _, h := range signed {
		v := r.Header.Get(h)
		if h == "host" {
			v = r.Host
		}
		ch.WriteString(h + ":" + strings.TrimSpace(v) + "\n")
	}
	canonical := strings.Join([]string{r.Method, awsURIEncode(r.URL.Path), r.URL.RawQuery, ch.String(),
		strings.Join(signed, ";"), r.Header.Get("X-Amz-Content-Sha256")}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	sts := "AWS4-HMAC-SHA256\n" + r.Header.Get("X-Amz-Date") + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := hmacSHA([]byte("AWS4"+secret), sc[0])
	k = hmacSHA(k, sc[1])
	k = hmacSHA(k, sc[2])
	k = hmacSHA(k, "aws4_request")
	if want := hex.EncodeToString(hmacSHA(k, sts)); want != parts["Signature"] {
		return fmt.Errorf("SignatureDoesNotMatch: canonical request as the server sees it:\n%s", canonical)
	}
	return nil
}

// TestS3SigV4KeyWithReservedCharacters: an s3_path such as
// "logs/dt=2026" (Hive-style partitions are the usual layout of log
// buckets) must sign as S3 verifies it. The sink signs Go's EscapedPath
// with DisableURIPathEscaping, which leaves = + , ; : @ ! $ & ' ( ) *
// unescaped, while S3 and MinIO URI-encode them in their canonical
// request: every PutObject is refused with 403 SignatureDoesNotMatch,
// which is not retried, so every batch is lost. A plain prefix is the
// control showing the verifier agrees with the sink otherwise.
func TestS3SigV4KeyWithReservedCharacters(t *testing.T) {
	for _, tc := range []struct{ prefix string }{{"logs"}, {"logs/dt=2026"}, {"team+a"}, {"a:b"}} {
		t.Run(tc.prefix, func(t *testing.T) {
			var got error
			var path string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				path = r.URL.EscapedPath()
				got = verifyS3SigV4(r, "s3cr3t/key+value")
				if got != nil {
					w.WriteHeader(403)
					return
				}
			}))
			defer srv.Close()
			p := &config.S3CallbackParams{S3BucketName: "b", S3RegionName: "eu-west-1", S3EndpointURL: config.EnvString(srv.URL),
				S3AWSAccessKeyID: "AKID", S3AWSSecretAccessKey: "s3cr3t/key+value", S3Path: config.EnvString(tc.prefix)}
			s, err := newS3(p, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			it, _ := s.Encode(&Payload{ID: "a", Status: "success"})
			err = s.Send(context.Background(), &Batch{Items: [][]byte{it}, First: time.Now(), ID: "0123abcd"})
			if err != nil || got != nil {
				t.Errorf("s3_path %q: PUT %s refused: send err %v; server: %v", tc.prefix, path, err, got)
			}
		})
	}
}

// TestS3DottedBucketIsPathStyle: a bucket whose name has dots
// ("my.logs", allowed by S3) addressed virtual-hosted over https gets a
// host (my.logs.s3.<region>.amazonaws.com) that S3's wildcard certificate
// does not cover: every write would fail TLS verification. Such a bucket
// is addressed path-style, as the SDKs do; a plain one stays
// virtual-hosted.
func TestS3DottedBucketIsPathStyle(t *testing.T) {
	tests := []struct{ bucket, want string }{
		{"my.logs", "https://s3.us-west-2.amazonaws.com/my.logs"},
		{"my-logs", "https://my-logs.s3.us-west-2.amazonaws.com"},
	}
	for _, tt := range tests {
		p := &config.S3CallbackParams{S3BucketName: config.EnvString(tt.bucket), S3RegionName: "us-west-2", S3AWSAccessKeyID: "AKID", S3AWSSecretAccessKey: "x"}
		s, err := newS3(p, env(nil))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.base.String(); got != tt.want {
			t.Errorf("bucket %q is addressed as %s, want %s", tt.bucket, got, tt.want)
		}
	}
}

// TestQueueMemoryIsBoundedByBytes: the queue is bounded by count
// only (10,000 by default). With content logging on, a payload carries up
// to 64 KiB of messages and 64 KiB of response (plus 16 KiB of metadata),
// so a sink that hangs lets one queue hold ~1.4 GiB, per sink. This probe
// publishes 2,000 payloads of 128 KiB (shared buffers here, distinct in
// production) to a hung sink: 250 MiB held and nothing dropped.
func TestQueueMemoryIsBoundedByBytes(t *testing.T) {
	sink := &scripted{block: make(chan struct{})}
	defer close(sink.block)
	q := NewQueue("hung", sink, QueueOptions{}, slog.New(slog.DiscardHandler))
	run(t, q)
	big := json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`)
	const n = 2000
	for i := 0; i < n; i++ {
		q.Publish(&Payload{ID: fmt.Sprint(i), Status: "success", Messages: big, Response: big})
	}
	st := q.Stats()
	held := uint64(st.Depth) * uint64(2*len(big))
	if st.Dropped == 0 {
		t.Errorf("a hung sink's queue holds %d payloads, %d MiB of content, and dropped none: no byte bound", st.Depth, held>>20)
	}
	if held > DefaultMaxBytes || st.Queued+st.Dropped != n {
		t.Errorf("stats %+v: %d MiB held, want at most the default %d MiB", st, held>>20, DefaultMaxBytes>>20)
	}
}

// TestWebhookFailureLogHidesEndpointSecret: a webhook URL often
// carries its secret (Slack-style paths, ?token= or ?dd-api-key=
// queries). A send that fails logs the *url.Error, whose text is the
// whole URL: the secret lands in the gateway's log.
func TestWebhookFailureLogHidesEndpointSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	set := &config.CallbackSettings{CallbackType: "generic_api", Endpoint: config.EnvString("http://" + dead + "/hooks/T000/B000/hook-path-secret?token=query-secret")}
	w, err := newWebhook("hook", set, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var buf syncBuf
	q := NewQueue("hook", w, QueueOptions{MaxAttempts: 1, FlushInterval: time.Millisecond}, slog.New(slog.NewTextHandler(&buf, nil)))
	run(t, q)
	q.Publish(&Payload{ID: "a", Status: "success"})
	wait(t, "the failed send", func() bool { return q.Stats().Failed == 1 })
	if s := buf.String(); strings.Contains(s, "query-secret") || strings.Contains(s, "hook-path-secret") {
		t.Errorf("the sink's failure log carries the endpoint's secret:\n%s", s)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDatadogRequestTagsCannotInjectTags: request tags come from the
// client (x-litellm-tags, the body's metadata.tags, which may hold
// commas). Written into ddtags as they are, a tag "x,env:prod,service:billing"
// becomes three Datadog tags: a caller rewrites env and service of its
// own log entries (and can pollute others' dashboards and monitors).
func TestDatadogRequestTagsCannotInjectTags(t *testing.T) {
	d, err := newDatadog(env(map[string]string{"DD_API_KEY": "k", "DD_SITE": "us5.datadoghq.com", "DD_ENV": "staging"}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Encode(&Payload{ID: "a", Status: "success", RequestTags: []string{"x,env:prod,service:billing"}})
	if err != nil {
		t.Fatal(err)
	}
	var e ddEntry
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	for _, tag := range strings.Split(e.DDTags, ",") {
		if tag == "env:prod" || tag == "service:billing" {
			t.Errorf("ddtags %q: the client's request tag added the Datadog tag %q", e.DDTags, tag)
		}
	}
}

// TestWebhookEndpointFromUnsetEnvIsAStartError: a callback_settings
// webhook whose endpoint is os.environ/NAME with NAME unset has no
// endpoint; the docs say a webhook without an endpoint stops the start.
// With GENERIC_LOGGER_ENDPOINT set (another webhook's), it silently sends
// this webhook's payloads, and its own secret headers, there instead.
func TestWebhookEndpointFromUnsetEnvIsAStartError(t *testing.T) {
	t.Setenv("TG_PROBE_AUDIT_TOKEN", "audit-secret")
	cfg := parse(t, `
litellm_settings:
  callbacks: ["generic_api", "audit"]
callback_settings:
  audit:
    callback_type: generic_api
    endpoint: os.environ/TG_PROBE_AUDIT_URL_UNSET
    headers:
      Authorization: os.environ/TG_PROBE_AUDIT_TOKEN
`)
	d, _, err := New(cfg, Options{Getenv: env(map[string]string{"GENERIC_LOGGER_ENDPOINT": "https://other-vendor.example/ingest"})})
	if err == nil {
		for _, r := range d.routes {
			if w, ok := r.q.sink.(*webhook); ok && r.q.name == "audit" {
				t.Errorf("audit's endpoint resolved to nothing, yet it starts and POSTs to %s with Authorization %q", w.endpoint, w.headers.Get("Authorization"))
			}
		}
	}
}

// TestDatadogAgentHostIsLiteLLMs: LiteLLM reads LITELLM_DD_AGENT_HOST
// and LITELLM_DD_AGENT_PORT, and says why: DD_AGENT_HOST is set for APM
// by ddtrace and by Datadog's Kubernetes admission controller in every
// pod. Tollgate reads DD_AGENT_HOST: an operator with DD_API_KEY and
// DD_SITE whose platform sets DD_AGENT_HOST gets every log sent over
// plain http (DD-API-KEY included) to <agent>:10518, where the agent
// listens for no logs by default, and nothing reaches the intake; a
// LiteLLM config with LITELLM_DD_AGENT_HOST is not honoured.
func TestDatadogAgentHostIsLiteLLMs(t *testing.T) {
	d, err := newDatadog(env(map[string]string{"DD_API_KEY": "k", "DD_SITE": "us5.datadoghq.com", "DD_AGENT_HOST": "10.0.0.5"}))
	if err != nil {
		t.Fatal(err)
	}
	if d.url != "https://http-intake.logs.us5.datadoghq.com/api/v2/logs" {
		t.Errorf("DD_API_KEY, DD_SITE and the platform's DD_AGENT_HOST: logs go to %s, want the intake of DD_SITE", d.url)
	}
	d, err = newDatadog(env(map[string]string{"LITELLM_DD_AGENT_HOST": "dd-agent", "LITELLM_DD_AGENT_PORT": "10519"}))
	if err != nil {
		t.Errorf("LiteLLM's agent mode (LITELLM_DD_AGENT_HOST, no DD_API_KEY): %v", err)
	} else if d.url != "http://dd-agent:10519/api/v2/logs" {
		t.Errorf("LITELLM_DD_AGENT_HOST: logs go to %s", d.url)
	}
}

// TestDatadogTeamTag: LiteLLM adds a team tag to each entry's ddtags
// (the key's team alias, else its id); Tollgate adds none, so LiteLLM
// users' per-team Datadog views match nothing.
func TestDatadogTeamTag(t *testing.T) {
	d, err := newDatadog(env(map[string]string{"DD_API_KEY": "k", "DD_SITE": "us5.datadoghq.com"}))
	if err != nil {
		t.Fatal(err)
	}
	alias, id := "search-team", "team-123"
	b, _ := d.Encode(&Payload{ID: "a", Status: "success", Metadata: Metadata{UserAPIKeyTeamAlias: &alias, UserAPIKeyTeamID: &id}})
	var e ddEntry
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(","+e.DDTags+",", ",team:search-team,") {
		t.Errorf("ddtags %q lack team:search-team", e.DDTags)
	}
}

// TestSingleFormatCountsWhatWasDelivered: with log_format single a
// batch is one POST per payload; when a later POST is refused (a 400: not
// retried) the payloads already delivered are counted as failed with the
// rest, and callback_sent_total misses them: the metrics say 0 delivered,
// 3 lost, where the receiver holds 2.
func TestSingleFormatCountsWhatWasDelivered(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n == 3 {
			w.WriteHeader(400)
		}
	}))
	defer srv.Close()
	w, err := newWebhook("hook", &config.CallbackSettings{CallbackType: "generic_api", Endpoint: config.EnvString(srv.URL), LogFormat: "single"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	q := NewQueue("hook", w, QueueOptions{BatchCount: 3, FlushInterval: time.Hour}, slog.New(slog.DiscardHandler))
	run(t, q)
	for _, id := range []string{"a", "b", "c"} {
		q.Publish(&Payload{ID: id, Status: "success"})
	}
	wait(t, "the batch's end", func() bool { st := q.Stats(); return st.Sent+st.Failed == 3 })
	if st := q.Stats(); st.Sent != 2 || st.Failed != 1 {
		t.Errorf("receiver took 2 of 3, refused the third: sent %d failed %d", st.Sent, st.Failed)
	}
}

// TestDatadogBatchStaysWithinIntakeLimits: Datadog's logs intake
// takes at most 5 MB (uncompressed) per request and refuses more with
// 413, which the queue does not retry. A batch is closed once its items
// reach 4 MiB, so the item that crosses that line may add up to a whole
// entry: with the default 64 KiB content cap an entry reaches ~900 KB
// (json.Marshal writes '<' as \u003c, and the message string escapes it
// again), and 4 MiB + 900 KB > 5 MB. A client whose prompts and answers
// are full of '<' makes such batches, and every payload in them, other
// tenants' included, is lost (with max_field_bytes raised, a single
// entry passes Datadog's 1 MB entry limit too).
func TestDatadogBatchStaysWithinIntakeLimits(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	intake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		n, _ := io.Copy(io.Discard, zr)
		mu.Lock()
		sizes = append(sizes, int(n))
		mu.Unlock()
		if n > 5_000_000 {
			w.WriteHeader(413)
			return
		}
		w.WriteHeader(202)
	}))
	defer intake.Close()
	d, err := newDatadog(env(map[string]string{"DD_API_KEY": "k", "DD_BASE_URL": intake.URL}))
	if err != nil {
		t.Fatal(err)
	}
	lt := json.RawMessage(`"` + strings.Repeat("<", 64<<10-2) + `"`) // 64 KiB of JSON: within the default cap
	big := &Payload{ID: "big", Status: "success", Messages: lt, Response: lt}
	small := &Payload{ID: "small", Status: "success", Messages: json.RawMessage(`"` + strings.Repeat("a", 1000) + `"`)}
	bigLen, _ := d.Encode(big)
	smallLen, _ := d.Encode(small)
	var seq []*Payload
	size := 0
	for range 4 {
		seq = append(seq, big)
		size += len(bigLen)
	}
	for size+len(smallLen) < 4<<20 {
		seq = append(seq, small)
		size += len(smallLen)
	}
	seq = append(seq, big)
	q := NewQueue("datadog", d, QueueOptions{BatchCount: 1000, BatchBytes: 4 << 20, FlushInterval: time.Hour}, slog.New(slog.DiscardHandler))
	for _, p := range seq { // queued before Run: one batch as the worker builds it
		q.Publish(p)
	}
	go q.Run()
	// The first batch is full; what did not fit waits for the next, which
	// Close sends.
	wait(t, "the first batch's end", func() bool { st := q.Stats(); return st.Sent+st.Failed > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q.Close(ctx, true)
	mu.Lock()
	defer mu.Unlock()
	if st := q.Stats(); st.Failed > 0 || st.Sent != uint64(len(seq)) {
		t.Errorf("entries of %d and %d bytes: batches of %v bytes, stats %+v; want all %d delivered", len(bigLen), len(smallLen), sizes, st, len(seq))
	}
	for _, n := range sizes {
		if n > 4<<20+1000 {
			t.Errorf("a batch of %d bytes passes BatchBytes (%d) by more than its separators", n, 4<<20)
		}
	}
	// One entry past 1 MB (content cap raised) is cut to fit, not refused.
	huge := json.RawMessage(`"` + strings.Repeat("<", 300_000) + `"`)
	b, err := d.Encode(&Payload{ID: "huge", Status: "success", Messages: huge, Response: huge})
	if err != nil || len(b) > 1_000_000 || !strings.Contains(string(b), "truncated") {
		t.Errorf("an entry of two 300 KB fields of '<': %d bytes, err %v; want it cut under 1 MB", len(b), err)
	}
}

// TestSinkClientsDoNotFollowRedirects: a sink's answer that redirects is
// not followed: the headers that carry its secret (a webhook's, Datadog's
// DD-API-KEY) would go to wherever the answer points. The send fails, and
// is not retried.
func TestSinkClientsDoNotFollowRedirects(t *testing.T) {
	var mu sync.Mutex
	var elsewhere []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		elsewhere = append(elsewhere, r.Header.Get("X-Api-Key")+r.Header.Get("DD-API-KEY"))
	}))
	defer other.Close()
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/ingest", http.StatusTemporaryRedirect)
	}))
	defer redirecting.Close()
	w, err := newWebhook("hook", &config.CallbackSettings{CallbackType: "generic_api", Endpoint: config.EnvString(redirecting.URL),
		Headers: map[string]config.EnvString{"X-Api-Key": "hook-secret"}}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDatadog(env(map[string]string{"DD_API_KEY": "dd-secret", "DD_BASE_URL": redirecting.URL}))
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []Sink{w, d} {
		q := NewQueue("redirected", sink, QueueOptions{BatchCount: 1, MaxAttempts: 3, BackoffBase: time.Millisecond}, slog.New(slog.DiscardHandler))
		run(t, q)
		q.Publish(&Payload{ID: "a", Status: "success"})
		wait(t, "the failed send", func() bool { return q.Stats().Failed == 1 })
	}
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhere) > 0 {
		t.Errorf("the redirect was followed: the other host got %d requests with keys %q", len(elsewhere), elsewhere)
	}
}
