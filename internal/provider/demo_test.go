package provider

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// The demo provider answers what the mock upstream answered for it before
// it had one of its own: same text, same usage, same stream events. Only the
// ids and timestamps differ.
func TestDemoAnswersAsTheMockUpstreamDid(t *testing.T) {
	tests := []struct {
		name string
		op   Op
		body string
	}{
		{"chat", OpChat, `{"model":"demo","messages":[{"role":"user","content":"Hello!"}]}`},
		{"chat, last user message, parts", OpChat, `{"model":"demo","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"one two "},{"type":"text","text":"three"}]}]}`},
		{"chat, long message cut at twelve words", OpChat, `{"model":"demo","messages":[{"role":"user","content":"a b c d e f g h i j k l m n o p"}]}`},
		{"chat, max_tokens", OpChat, `{"model":"demo","max_tokens":2,"messages":[{"role":"user","content":"Hello there"}]}`},
		{"chat, max_completion_tokens", OpChat, `{"model":"demo","max_completion_tokens":4,"messages":[{"role":"user","content":"Hello there"}]}`},
		{"chat stream", OpChat, `{"model":"demo","stream":true,"messages":[{"role":"user","content":"one two three"}]}`},
		{"chat stream with usage", OpChat, `{"model":"demo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello!"}]}`},
		{"chat stream, long", OpChat, `{"model":"demo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"a b c d e f g h i j k l m n o p"}]}`},
		{"chat stream, one word", OpChat, `{"model":"demo","stream":true,"max_tokens":1,"messages":[{"role":"user","content":"x"}]}`},
		{"completion", OpCompletions, `{"model":"demo","prompt":"Say this is a test"}`},
		{"completion stream with usage", OpCompletions, `{"model":"demo","prompt":"Say this","stream":true,"stream_options":{"include_usage":true}}`},
		{"malformed", OpChat, `{"model":`},
	}
	tg, err := Build(&config.Deployment{ModelName: "demo", Provider: "demo", Model: "demo"}, NewClients())
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{NoRecord: true}))
	defer up.Close()
	mock, err := Build(&config.Deployment{ModelName: "mock", Provider: "openai", Model: "demo", APIBase: up.URL + "/v1"}, NewClients())
	if err != nil {
		t.Fatal(err)
	}
	ids := regexp.MustCompile(`"id":"[^"]*","object":"([^"]*)","created":[0-9]+`)
	code := regexp.MustCompile(`"code":"?[0-9]+"?`)
	send := func(t *testing.T, tg *Target, op Op, body string) (int, string, string) {
		t.Helper()
		req, err := tg.NewRequest(context.Background(), op, "demo", []byte(body), "", strings.Contains(body, `"stream":true`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tg.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		b = ids.ReplaceAll(b, []byte(`"id":"X","object":"$1","created":0`))
		b = code.ReplaceAll(b, []byte(`"code":"N"`))
		return resp.StatusCode, strings.Split(resp.Header.Get("Content-Type"), ";")[0], string(bytes.TrimSpace(b))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, got := send(t, tg, tt.op, tt.body)
			wantStatus, wantCtype, want := send(t, mock, tt.op, tt.body)
			if status != wantStatus || ctype != wantCtype {
				t.Errorf("demo: %d %s, mock: %d %s", status, ctype, wantStatus, wantCtype)
			}
			if tt.name == "malformed" {
				if !strings.Contains(got, `"type":"invalid_request_error"`) || !strings.Contains(got, "malformed JSON") {
					t.Errorf("demo error: %s", got)
				}
				return
			}
			if got != want {
				t.Errorf("demo answered\n%s\nthe mock upstream\n%s", got, want)
			}
		})
	}
}

// Each owner of a pool has its own clients; one pool gives every target of
// a provider the same client, whatever deployment built it; the transport
// is the one every upstream dialect has always had.
func TestClientsAreOwnedNotShared(t *testing.T) {
	d1 := &config.Deployment{ModelName: "a", Provider: "openai", Model: "gpt-4o"}
	d2 := &config.Deployment{ModelName: "b", Provider: "openai", Model: "gpt-4o-mini"}
	p, q := NewClients(), NewClients()
	build := func(d *config.Deployment, pool *Clients) *Target {
		t.Helper()
		tg, err := Build(d, pool)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	a, b, c := build(d1, p), build(d2, p), build(d1, q)
	tests := []struct {
		name  string
		x, y  *Target
		share bool
	}{
		{"one pool, two deployments of a provider", a, b, true},
		{"two pools, one deployment", a, c, false},
		{"two pools, two deployments", b, c, false},
	}
	for _, tt := range tests {
		if (tt.x.client == tt.y.client) != tt.share {
			t.Errorf("%s: same client %v, want %v", tt.name, tt.x.client == tt.y.client, tt.share)
		}
	}
	if a.client == p.For("anthropic") {
		t.Error("two providers share a client")
	}
	lean, ok := a.client.Transport.(*h1Transport)
	if !ok {
		t.Fatalf("transport %T", a.client.Transport)
	}
	tr := lean.fallback // https and whatever the lean path leaves
	if tr.MaxIdleConns != 1024 || tr.MaxIdleConnsPerHost != 512 || tr.IdleConnTimeout != 90*time.Second ||
		tr.ResponseHeaderTimeout != 0 || !tr.DisableCompression || !tr.ForceAttemptHTTP2 || tr.Proxy == nil {
		t.Errorf("transport settings changed: %+v", tr)
	}
	if a.client.CheckRedirect == nil {
		t.Error("redirects are followed")
	}
	if err := Check(&config.Deployment{ModelName: "x", Provider: "azure", Model: "m"}); err == nil {
		t.Error("Check accepts an azure deployment with no api_base")
	}
}

// The fake upstream is for tests and `tollgate mock-upstream`: no package
// on the request path links it.
func TestProductCodeDoesNotImportMockUpstream(t *testing.T) {
	for _, pkg := range []string{"./internal/provider", "./internal/router", "./internal/gateway", "./internal/server", "./internal/admin"} {
		cmd := exec.Command("go", "list", "-deps", pkg)
		cmd.Dir = "../.."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		if strings.Contains(string(out), "internal/mockupstream") {
			t.Errorf("%s imports internal/mockupstream", pkg)
		}
	}
}
