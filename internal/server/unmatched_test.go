package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestUnknownRoutes: a path no route serves is a JSON 404 in the OpenAI
// shape naming the method and path; a known path asked with another
// method is a 405 with Allow; served routes are untouched (issue 23
// point 7).
func TestUnknownRoutes(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, gpt4(5, ""))
	do := func(method, path string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, e.url+path, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer sk-1234")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %q", method, path, resp.StatusCode, b)
		}
		return resp, out
	}
	for _, tt := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/v1/nothing-here", 404, "route_not_found", ""},
		{"POST", "/v2/chat/completions", 404, "route_not_found", ""},
		{"POST", "/v1/models", 405, "method_not_allowed", "GET, HEAD"},
		{"GET", "/v1/chat/completions", 405, "method_not_allowed", "POST"},
		{"DELETE", "/key/generate", 405, "method_not_allowed", "POST"},
	} {
		resp, out := do(tt.method, tt.path)
		e, _ := out["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if resp.StatusCode != tt.status || e["code"] != tt.code || resp.Header.Get("Allow") != tt.allow ||
			!strings.Contains(msg, tt.method) || !strings.Contains(msg, tt.path) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %v (Allow %q), want %d %s (Allow %q)", tt.method, tt.path, resp.StatusCode, out, resp.Header.Get("Allow"), tt.status, tt.code, tt.allow)
		}
	}
	if resp, out := do("GET", "/v1/models"); resp.StatusCode != 200 || out["object"] != "list" {
		t.Fatalf("a served route: %d %v", resp.StatusCode, out)
	}
}
