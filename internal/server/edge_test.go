package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// fullHash is a whole sha256 in hex, as a key's hash is stored.
var fullHash = regexp.MustCompile(`[0-9a-f]{64}`)

// get fetches url with an optional key and returns the status and body.
func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestUnauthenticatedSurfacesShowNoKeyHash: after keys with budgets (and a
// model budget) served requests, no route a client can read without a key
// (nor a 401's message) shows any key's whole hash; /metrics names keys by
// the first 8 hex digits of the hash, with the alias.
func TestUnauthenticatedSurfacesShowNoKeyHash(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	_, out := e.post(t, "/key/generate", "sk-1234", `{"key_alias": "exposed", "max_budget": 10, "soft_budget": 0.0001, "model_max_budget": {"gpt-4": {"budget_limit": 5}}}`)
	aliased := out["key"].(string)
	_, out = e.post(t, "/key/generate", "sk-1234", `{"max_budget": 10}`)
	plain := out["key"].(string)
	_, out = e.post(t, "/user/new", "sk-1234", `{"user_id": "u-edge", "max_budget": 10}`)
	userKey := out["key"].(string)
	keys := []string{aliased, plain, userKey, "sk-1234"}
	for _, k := range keys {
		if resp, body := sendH(t, e.url+"/v1/chat/completions", k, chat3); resp.StatusCode != 200 {
			t.Fatalf("chat with %s: %d %s", k[:6], resp.StatusCode, body)
		}
	}
	e.srv.writer.Flush()

	surfaces := []struct {
		path, key string
	}{
		{"/metrics", ""},
		{"/health/liveliness", ""},
		{"/health/liveness", ""},
		{"/health/readiness", ""},
		{"/health", ""}, // 401
		{"/openapi.json", ""},
		{"/", ""},
		{"/docs", ""},
		{"/ui/", ""},
		{"/ui/app.js", ""},
		{"/v1/models", ""},                  // 401 without a key
		{"/key/info?key=" + sha(plain), ""}, // 401
		{"/key/info", "sk-not-a-key"},       // 401
		{"/v1/models", "sk-not-a-key"},      // 401
	}
	for _, tt := range surfaces {
		code, body := get(t, e.url+tt.path, tt.key)
		for _, k := range keys {
			if strings.Contains(body, sha(k)) {
				t.Errorf("GET %s (%d) shows the whole hash of %s…", tt.path, code, k[:6])
			}
		}
		if m := fullHash.FindString(body); m != "" {
			t.Errorf("GET %s (%d) shows a 64-hex value %s", tt.path, code, m)
		}
	}
	fams := scrape(t, e.url, "")
	for _, k := range []string{aliased, plain, userKey} {
		if _, ok := value(fams, "tollgate_key_spend_usd_total", "key_hash", sha(k)[:8]); !ok {
			t.Errorf("no key_spend series for key %s… under its 8-digit prefix", sha(k)[:8])
		}
		if _, ok := value(fams, "tollgate_max_budget_usd", "entity", "key", "id", sha(k)[:8]); !ok && k != userKey {
			t.Errorf("no budget gauge for key %s… under its 8-digit prefix", sha(k)[:8])
		}
	}
	if _, ok := value(fams, "tollgate_key_spend_usd_total", "key_hash", sha(aliased)[:8], "key_alias", "exposed"); !ok {
		t.Error("the aliased key's series lacks its alias")
	}
	testLog.mu.Lock()
	logged := testLog.buf.String()
	testLog.mu.Unlock()
	for _, line := range strings.Split(logged, "\n") {
		if strings.Contains(line, "soft budget crossed") && fullHash.MatchString(line) {
			t.Errorf("log line shows a whole key hash: %s", line)
		}
	}
}

// TestMetricsAuth: with require_auth_for_metrics_endpoint, /metrics needs
// the master key or an admin's (or admin viewer's) key.
func TestMetricsAuth(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "litellm_settings:\n  require_auth_for_metrics_endpoint: true\n")
	keyOf := func(role string) string {
		_, out := e.post(t, "/user/new", "sk-1234", fmt.Sprintf(`{"user_role": %q}`, role))
		k, _ := out["key"].(string)
		if k == "" {
			t.Fatalf("/user/new %s: %v", role, out)
		}
		return k
	}
	tests := []struct {
		name, key string
		want      int
	}{
		{"no key", "", 401},
		{"not a key", "sk-no-such-key-at-all", 401},
		{"internal_user", keyOf("internal_user"), 403},
		{"internal_user_viewer", keyOf("internal_user_viewer"), 403},
		{"proxy_admin_viewer", keyOf("proxy_admin_viewer"), 200},
		{"proxy_admin", keyOf("proxy_admin"), 200},
		{"master key", "sk-1234", 200},
	}
	for _, tt := range tests {
		code, body := get(t, e.url+"/metrics", tt.key)
		if code != tt.want {
			t.Errorf("%s: /metrics %d, want %d: %.200s", tt.name, code, tt.want, body)
		}
		if code != 200 {
			decodeError(t, []byte(body))
		}
	}
}

// TestMetricsCardinalityIsBounded: model names, end users and keys a client
// makes up add no series: 60 unknown model names, 60 unknown end users and
// 60 unknown keys (open mode serves those) grow /metrics by almost nothing.
func TestMetricsCardinalityIsBounded(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedOpenConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{Store: sqliteStore(t)})
	if code, body := send(t, url+"/customer/new", "", `{"user_id": "known-customer"}`); code != 200 {
		t.Fatalf("/customer/new: %d %s", code, body)
	}
	round := func(i int) {
		t.Helper()
		code, body := send(t, url+"/v1/chat/completions", fmt.Sprintf("sk-made-up-%d", i),
			fmt.Sprintf(`{"model":"no-such-model-%d","metadata":{"tags":["refused-%d"]},"messages":[{"role":"user","content":"hi"}]}`, i, i))
		if code != 404 {
			t.Fatalf("unknown model: %d %s", code, body)
		}
		code, body = send(t, url+"/v1/chat/completions", fmt.Sprintf("sk-made-up-%d", i),
			fmt.Sprintf(`{"model":"gpt-4","max_tokens":3,"user":"end-user-%d","metadata":{"tags":["steady"]},"messages":[{"role":"user","content":"hi"}]}`, i))
		if code != 200 {
			t.Fatalf("known model: %d %s", code, body)
		}
	}
	round(0) // the unknown series exist from here on
	_, before := get(t, url+"/metrics", "")
	// 60 names: a series per name would be 60 lines of 40 bytes or more,
	// past the 2,000 bytes allowed below.
	const names = 60
	for i := 1; i <= names; i++ {
		round(i)
	}
	_, after := get(t, url+"/metrics", "")
	// Counts grow by a few digits; a series per name would be >60 lines.
	if grew := len(after) - len(before); grew > 2000 {
		t.Errorf("/metrics grew by %d bytes over %d made-up names", grew, names)
	}
	for _, s := range []string{"no-such-model-", "end-user-", "sk-made-up", "refused-"} {
		if strings.Contains(after, s) {
			t.Errorf("/metrics holds a client-chosen name %q", s)
		}
	}
	if m := fullHash.FindString(after); m != "" {
		t.Errorf("/metrics in open mode shows a 64-hex value %s", m)
	}
	if code, body := get(t, url+"/v1/models", "sk-made-up-1"); code != 200 || fullHash.MatchString(body) || !strings.Contains(body, "gpt-4") {
		t.Errorf("/v1/models in open mode: %d %s", code, body)
	}
	if code, body := send(t, url+"/v1/chat/completions", "", `{"model":"gpt-4","max_tokens":3,"user":"known-customer","messages":[{"role":"user","content":"hi"}]}`); code != 200 {
		t.Fatalf("known customer: %d %s", code, body)
	}
	fams := scrape(t, url, "")
	if _, ok := value(fams, "tollgate_end_user_spend_usd_total", "end_user", "known-customer"); !ok {
		t.Error("an end user made with /customer/new has no spend series")
	}
	if _, ok := value(fams, "tollgate_end_user_spend_usd_total", "end_user", "unknown"); !ok {
		t.Error("made-up end users are not counted under unknown")
	}
	if v, _ := value(fams, "tollgate_requests_total", "model_group", "unknown", "status", "404"); v != names+1 {
		t.Errorf("requests_total{model_group=unknown,status=404} = %v, want %d", v, names+1)
	}
	if v, _ := value(fams, "tollgate_requests_total", "model_group", "gpt-4", "status", "200"); v != names+2 {
		t.Errorf("requests_total{model_group=gpt-4,status=200} = %v, want %d", v, names+2)
	}
	// Tags of refused requests mint no series: they count under "other".
	if v, _ := value(fams, "tollgate_tag_requests_total", "tag", "steady"); v != names+1 {
		t.Errorf("tag_requests_total{tag=steady} = %v, want %d", v, names+1)
	}
	if v, _ := value(fams, "tollgate_tag_requests_total", "tag", "other"); v != names+1 {
		t.Errorf("tag_requests_total{tag=other} = %v, want %d (the refused requests)", v, names+1)
	}
}

// TestTagLabelsAreBounded: at most 100 request tags get series of their
// own (tag_requests_total, tag_spend_usd_total), first come; the others
// count under "other", once per request. metrics_key_labels (off here)
// does not turn tag labels off.
func TestTagLabelsAreBounded(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedOpenConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{Store: sqliteStore(t)})
	for i := range 130 {
		code, body := send(t, url+"/v1/chat/completions", "",
			fmt.Sprintf(`{"model":"gpt-4","max_tokens":2,"metadata":{"tags":["steady","t-%d","t-%d-b"]},"messages":[{"role":"user","content":"hi"}]}`, i, i))
		if code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	fams := scrape(t, url, "")
	tags := map[string]float64{}
	for _, m := range fams["tollgate_tag_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "tag" {
				tags[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	// steady, then t-i and t-i-b for i < 49 and t-49: 100 tags.
	if len(tags) != 101 || tags["steady"] != 130 || tags["t-0"] != 1 || tags["t-49"] != 1 || tags["t-49-b"] != 0 {
		t.Errorf("%d tag labels (want 100 and other): steady %v t-0 %v t-49 %v", len(tags), tags["steady"], tags["t-0"], tags["t-49"])
	}
	if tags["other"] != 81 { // requests 49 (t-49-b) to 129
		t.Errorf("tag_requests_total{tag=other} = %v, want 81", tags["other"])
	}
	if v, _ := value(fams, "tollgate_tag_spend_usd_total", "tag", "other"); v <= 0 {
		t.Errorf("tag_spend_usd_total{tag=other} = %v", v)
	}
	if v, _ := value(fams, "tollgate_tag_spend_usd_total", "tag", "steady"); v <= 0 {
		t.Errorf("tag_spend_usd_total{tag=steady} = %v", v)
	}
}

// pricedOpenConfig is an open gateway (no master key) with a priced model,
// so requests with made-up keys are served and cost something.
const pricedOpenConfig = `
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", input_cost_per_token: 0.0001, output_cost_per_token: 0.0001}
`

// TestHeaderValuesWithControlCharactersAreRefused: /model/new and
// /model/update refuse a header (or api_key) whose value could split a
// header on the way upstream, naming the field, and change nothing.
func TestHeaderValuesWithControlCharactersAreRefused(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	base := func(params string) string {
		return `{"model_name": "hdr", "litellm_params": {"model": "openai/x", "api_base": "http://127.0.0.1:1"` + params + `}, "model_info": {"id": "hdr-1"}}`
	}
	tests := []struct {
		name, params, field string
	}{
		{"CRLF in headers", `, "headers": {"X-Team": "core\r\nX-Injected: 1"}`, "headers.X-Team"},
		{"LF in extra_headers", `, "extra_headers": {"X-A": "a\nb"}`, "extra_headers.X-A"},
		{"NUL in headers", `, "headers": {"X-A": "a\u0000b"}`, "headers.X-A"},
		{"space in a header name", `, "headers": {"X A": "b"}`, `headers.\"X A\"`},
		{"LF in api_key", `, "api_key": "sk-up\nX-Injected: 1"`, "api_key"},
		{"CR in organization", `, "organization": "org\r"`, "organization"},
	}
	for _, tt := range tests {
		code, body := send(t, e.url+"/model/new", "sk-1234", base(tt.params))
		if code != 400 || !strings.Contains(body, tt.field) || !strings.Contains(body, "control character") && !strings.Contains(body, "header name") {
			t.Errorf("%s: /model/new %d %s", tt.name, code, body)
		}
	}
	if code, body := get(t, e.url+"/model/info", "sk-1234"); code != 200 || strings.Contains(body, "hdr-1") {
		t.Fatalf("a refused model was stored: %d %s", code, body)
	}
	// A clean header is accepted; an update that adds a bad one is refused
	// and leaves the model as it was.
	if code, body := send(t, e.url+"/model/new", "sk-1234", base(`, "headers": {"X-Team": "core"}`)); code != 200 {
		t.Fatalf("clean header: %d %s", code, body)
	}
	code, body := send(t, e.url+"/model/update", "sk-1234", `{"id": "hdr-1", "litellm_params": {"headers": {"X-Team": "a\r\nb"}}}`)
	if code != 400 || !strings.Contains(body, "headers.X-Team") {
		t.Errorf("/model/update with CRLF: %d %s", code, body)
	}
	if code, body := get(t, e.url+"/model/info", "sk-1234"); code != 200 || !strings.Contains(body, "hdr-1") {
		t.Errorf("the model vanished after a refused update: %d %s", code, body)
	}
}

// TestUnknownModelNameIsClipped: the 404 for an unknown model repeats at
// most the first 100 characters of its name.
func TestUnknownModelNameIsClipped(t *testing.T) {
	ts := newGateway(t, mockConfig, "http://127.0.0.1:1")
	long := strings.Repeat("m", 100) + strings.Repeat("X", 100000)
	resp, b := post(t, ts.URL+"/v1/chat/completions", `{"model":"`+long+`","messages":[{"role":"user","content":"hi"}]}`)
	e := decodeError(t, b)
	if resp.StatusCode != 404 || e.Error.Code != "model_not_found" {
		t.Fatalf("%d %s", resp.StatusCode, e.Error.Code)
	}
	if !strings.Contains(e.Error.Message, strings.Repeat("m", 100)) || strings.Contains(e.Error.Message, "X") || len(e.Error.Message) > 300 {
		t.Errorf("404 message is %d bytes: %.300s", len(e.Error.Message), e.Error.Message)
	}
	// A multi-byte name is cut on a character boundary.
	resp, b = post(t, ts.URL+"/v1/chat/completions", `{"model":"`+strings.Repeat("é", 80)+`","messages":[{"role":"user","content":"hi"}]}`)
	if e := decodeError(t, b); resp.StatusCode != 404 || !utf8.ValidString(e.Error.Message) {
		t.Errorf("%d %q", resp.StatusCode, e.Error.Message)
	}
}

// TestSlowClientsAreCut: with request_body_timeout and
// request_header_timeout of 1 s, a flood of 500 connections that declare a
// body and send a byte every half second (half of them with a valid key, so
// the body is read; half without, so it is left unread), plus connections
// sending their headers as slowly, are all cut soon after the deadline,
// while a normal request on a fresh connection is served and a stream
// lasting longer than the body deadline runs to its end.
func TestSlowClientsAreCut(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{ChunkDelay: 400 * time.Millisecond, Chunks: 12}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", up.URL)+
		"general_settings:\n  master_key: sk-1234\n  request_body_timeout: 1\n  request_header_timeout: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	url, _ := serveSrv(t, cfg, Options{})
	addr := strings.TrimPrefix(url, "http://")

	type outcome struct {
		kind   string
		status string        // the response's status line, if any
		took   time.Duration // from the headers (or first byte) sent to the connection's end
		cut    bool          // the server ended the connection (not our safety bound)
	}
	const flood, slowHeaders = 500, 20
	results := make(chan outcome, flood+slowHeaders)
	slow := func(kind, head, drip string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			results <- outcome{kind: kind, status: "dial: " + err.Error()}
			return
		}
		defer conn.Close()
		start := time.Now()
		done := make(chan struct{})
		go func() { // one byte (or header line) every half second, at most 60 times
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for range 60 {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				if _, err := io.WriteString(conn, drip); err != nil {
					return
				}
			}
		}()
		if _, err := io.WriteString(conn, head); err != nil {
			close(done)
			results <- outcome{kind: kind, status: "write: " + err.Error()}
			return
		}
		conn.SetReadDeadline(time.Now().Add(40 * time.Second)) // our own bound, far past the server's
		b, err := io.ReadAll(conn)
		close(done)
		status, _, _ := strings.Cut(string(b), "\r\n")
		var ne net.Error
		results <- outcome{kind: kind, status: status, took: time.Since(start), cut: !(errors.As(err, &ne) && ne.Timeout())}
	}
	body := func(key string) string {
		h := "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
		if key != "" {
			h += "Authorization: Bearer " + key + "\r\n"
		}
		return h + "\r\n{"
	}
	for i := range flood {
		key := ""
		if i%2 == 0 {
			key = "sk-1234"
		}
		go slow(map[bool]string{true: "body, read", false: "body, unread"}[key != ""], body(key), " ")
	}
	for range slowHeaders {
		go slow("headers", "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n", "X-Slow: 1\r\n")
	}

	// Meanwhile a normal request and a stream longer than the body deadline.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer sk-1234")
	streamStart := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || !strings.Contains(string(sb), "data: [DONE]") {
		t.Errorf("a stream during the flood: %d, err %v, body %.200q", resp.StatusCode, err, sb)
	}
	if took := time.Since(streamStart); took < time.Second {
		t.Errorf("the stream took %v: shorter than the body deadline, so it proves nothing", took)
	}

	got := map[string][]outcome{}
	for range flood + slowHeaders {
		o := <-results
		got[o.kind] = append(got[o.kind], o)
	}
	for kind, os := range got {
		var worst time.Duration
		for _, o := range os {
			worst = max(worst, o.took)
			if !o.cut {
				t.Errorf("%s: a connection was still open after %v (status %q)", kind, o.took, o.status)
				break
			}
			want := map[string]string{"body, read": "HTTP/1.1 408", "body, unread": "HTTP/1.1 401"}[kind]
			if !strings.HasPrefix(o.status, want) {
				t.Errorf("%s: status %q, want %q…", kind, o.status, want)
				break
			}
		}
		// The deadline is 1 s; the bound is generous for a busy machine
		// and far below the 30 s the trickle would last.
		if worst > 15*time.Second {
			t.Errorf("%s: the slowest connection was cut after %v", kind, worst)
		}
		t.Logf("%s: %d connections, all cut, the slowest after %v", kind, len(os), worst.Round(time.Millisecond))
	}
}

// TestPanicInARouteIsA500: a route that panics, whether it renders errors
// through apierror or not, answers a 500 in the OpenAI shape through the
// real server, and the gateway goes on serving.
func TestPanicInARouteIsA500(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", "http://127.0.0.1:1")))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("GET /test/panic-plain", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p *Server
		_ = p.opts // nil pointer dereference
	}))
	srv.Handle("GET /test/panic-apierror", apierror.Handler(testLogger, func(w http.ResponseWriter, r *http.Request) error {
		panic(fmt.Sprintf("index %d", []int{}[len(r.URL.Path)]))
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	for _, path := range []string{"/test/panic-plain", "/test/panic-apierror"} {
		code, body := get(t, url+path, "")
		if code != 500 {
			t.Errorf("%s: %d %s", path, code, body)
			continue
		}
		if e := decodeError(t, []byte(body)); e.Error.Type != "api_error" || e.Error.Message != "internal error" {
			t.Errorf("%s: %s", path, body)
		}
	}
	if code, body := get(t, url+"/health/liveness", ""); code != 200 {
		t.Errorf("after the panics: %d %s", code, body)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestPagesSendSecurityHeaders: every HTML page (the docs at / and /docs,
// the UI and its files) refuses framing, sniffing and referrers, and runs
// under a CSP that allows only its own scripts (the docs page's inline
// script by hash; the browser test in internal/ui runs both pages under it).
func TestPagesSendSecurityHeaders(t *testing.T) {
	url := serveCfg(t, config.Default(), Options{Store: sqliteStore(t)})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/docs", "/ui/", "/ui/app.js", "/ui/app.css", "/ui"} {
		resp, err := client.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		for name, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if got := h.Get(name); got != want {
				t.Errorf("%s: %s %q, want %q", path, name, got, want)
			}
		}
		csp := h.Get("Content-Security-Policy")
		directives := map[string]string{}
		for _, d := range strings.Split(csp, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
			directives[name] = value
		}
		if directives["frame-ancestors"] != "'none'" || directives["default-src"] != "'none'" || strings.Contains(csp, "unsafe") ||
			strings.Contains(csp, "http") || strings.Contains(csp, "*") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if s := directives["script-src"]; s != "'self'" && !(strings.HasPrefix(s, "'sha256-") && !strings.Contains(s, " ")) {
			t.Errorf("%s: script-src %q allows more than the page's own script", path, s)
		}
	}
}

// TestWildcardModelLabelsAreBounded: a wildcard group forwards any name; a
// name becomes a gen_ai_request_model label only once the upstream served
// it, and at most 200 of them, while model_group stays the pattern.
func TestWildcardModelLabelsAreBounded(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(`
model_list:
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "`+up.URL+`"}
`))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{})
	for i := range 230 {
		code, body := send(t, url+"/v1/chat/completions", "", fmt.Sprintf(`{"model":"openai/m-%d","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`, i))
		if code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	fams := scrape(t, url, "")
	names := map[string]bool{}
	for _, m := range fams["tollgate_gen_ai_client_operation_duration"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "gen_ai_request_model" {
				names[l.GetValue()] = true
			}
		}
	}
	if len(names) > 201 || !names["openai/m-0"] || !names["openai/*"] {
		t.Errorf("%d request-model labels (want the first 200 names and the pattern)", len(names))
	}
	if v, _ := value(fams, "tollgate_requests_total", "model_group", "openai/*"); v != 230 {
		t.Errorf("requests_total{model_group=openai/*} = %v, want 230", v)
	}
}
