package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestVertexTokenRefreshedBeforeExpiry: a Vertex AI access token is
// refreshed before it expires, not after a request fails with it. The
// token endpoint's first token expires in 5 seconds, inside the oauth2
// library's early-refresh margin (10 s), so the next request must fetch
// a fresh one though the first has not expired; the fresh one, good for an
// hour, is then reused. No clock is waited on: the margin does the work.
func TestVertexTokenRefreshedBeforeExpiry(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(mock)
	defer up.Close()
	var issued atomic.Int32
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := issued.Add(1)
		expires := 3600
		if n == 1 {
			expires = 5
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"ya29.t%d","token_type":"Bearer","expires_in":%d}`, n, expires)
	}))
	defer tokens.Close()
	creds, _ := json.Marshal(serviceAccount(t, "refresh@proj.iam.gserviceaccount.com", tokens.URL))
	yaml := fmt.Sprintf(`
model_list:
  - model_name: vg
    litellm_params: {model: vertex_ai/gemini-2.0-flash, vertex_project: p, vertex_location: us-central1, vertex_credentials: %s, api_base: %s}
general_settings:
  master_key: sk-1234
`, creds, up.URL)
	cfg, err := config.Parse("v.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, nil)
	for i, want := range []string{"Bearer ya29.t1", "Bearer ya29.t2", "Bearer ya29.t2"} {
		resp, out := e.post(t, "/v1/chat/completions", "sk-1234", `{"model":"vg","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %v", i, resp.StatusCode, out)
		}
		if got := mock.LastRequest().Header.Get("Authorization"); got != want {
			t.Fatalf("call %d sent %q, want %q", i, got, want)
		}
	}
	if n := issued.Load(); n != 2 {
		t.Fatalf("%d tokens issued, want 2", n)
	}
}
