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
	tg, err := Build(&config.Deployment{ModelName: "demo", Provider: "demo", Model: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{NoRecord: true}))
	defer up.Close()
	mock, err := Build(&config.Deployment{ModelName: "mock", Provider: "openai", Model: "demo", APIBase: up.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	ids := regexp.MustCompile(`"id":"[^"]*","object":"([^"]*)","created":[0-9]+`)
	code := regexp.MustCompile(`"code":"?[0-9]+"?`)
	send := func(t *testing.T, tg *Target, op Op, body string) (int, string, string) {
		t.Helper()
		req, err := tg.NewRequest(context.Background(), op, []byte(body), strings.Contains(body, `"stream":true`))
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
