package server

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/usage"
)

// googleTokenServer is a fake of Google's OAuth token endpoint: it answers a
// service account's signed JWT assertion with the access token named for
// the account's client_email, and counts the exchanges.
func googleTokenServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() != nil || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		n.Add(1)
		// The assertion's payload names the account: the token does too.
		parts := strings.Split(r.Form.Get("assertion"), ".")
		var claims struct {
			Iss string `json:"iss"`
		}
		if len(parts) == 3 {
			b, _ := base64.RawURLEncoding.DecodeString(parts[1])
			_ = json.Unmarshal(b, &claims)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"ya29.%s","token_type":"Bearer","expires_in":3600}`, strings.Split(claims.Iss, "@")[0])
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// serviceAccount is a service account key for email whose tokens come from
// tokenURI, as the JSON Google issues.
func serviceAccount(t *testing.T, email, tokenURI string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	b, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "p", "private_key_id": "k", "private_key": string(pemKey),
		"client_email": email, "token_uri": tokenURI})
	return string(b)
}

// TestPassThroughVertexIsAuthorized: /vertex_ai/* reaches Vertex AI with an
// OAuth2 access token from the gateway's Google credentials - those of the
// vertex_ai deployment marked use_in_pass_through for the path's project
// and location, else default_vertex_config's - never with the client's
// key; the token is fetched once and reused; the call is governed (model
// access) and booked from Gemini's usageMetadata, or Anthropic's usage for
// Claude on Vertex.
func TestPassThroughVertexIsAuthorized(t *testing.T) {
	f := newNativeFake(t)
	tokens, exchanges := googleTokenServer(t)
	deploymentKey, _ := json.Marshal(serviceAccount(t, "deploy@p1.iam.gserviceaccount.com", tokens.URL))
	defaultKey, _ := json.Marshal(serviceAccount(t, "default@p2.iam.gserviceaccount.com", tokens.URL))
	yaml := fmt.Sprintf(`
model_list:
  - model_name: gemini-vertex
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_project: p1
      vertex_location: us-central1
      vertex_credentials: %s
      api_base: %s/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash
      use_in_pass_through: true
default_vertex_config:
  vertex_project: p2
  vertex_location: europe-west4
  vertex_credentials: %s
  api_base: %s
general_settings:
  master_key: sk-1234
`, deploymentKey, f.url, defaultKey, f.url)
	cfg, err := config.Parse("v.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	gem := `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	u := usage.Usage{Prompt: 10, Completion: 20}
	for _, tt := range []struct {
		path, token string
	}{
		{"/vertex_ai/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent", "Bearer ya29.deploy"},
		{"/vertex_ai/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent", "Bearer ya29.deploy"},
		{"/vertex_ai/v1/projects/p2/locations/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent", "Bearer ya29.default"},
	} {
		resp, body := passSend(t, "POST", e.url+tt.path, gem, "x-litellm-api-key", "Bearer "+key)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", tt.path, resp.StatusCode, body)
		}
		got := f.last(t)
		if got.Header.Get("Authorization") != tt.token || got.Path != strings.TrimPrefix(tt.path, "/vertex_ai") || got.Body != gem {
			t.Fatalf("upstream got %s %v %q", got.Path, got.Header, got.Body)
		}
		for k, vs := range got.Header {
			if strings.Contains(strings.Join(vs, " "), key) {
				t.Fatalf("the client's key reached Vertex AI in %s", k)
			}
		}
	}
	// A key that may not use the model is refused before Vertex AI.
	limited := newKey(t, e, `{"models": ["gpt-4o"]}`)
	before := len(f.requests())
	resp, body := passSend(t, "POST", e.url+"/vertex_ai/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent", gem, "Authorization", "Bearer "+limited)
	if resp.StatusCode != 403 || len(f.requests()) != before {
		t.Fatalf("model outside the key's list: %d %s", resp.StatusCode, body)
	}
	if n := exchanges.Load(); n != 2 {
		t.Fatalf("%d token exchanges for two accounts over three calls, want 2", n)
	}
	claude := `{"anthropic_version":"vertex-2023-10-16","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`
	resp, body = passSend(t, "POST", e.url+"/vertex_ai/v1/projects/p1/locations/us-central1/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict", claude, "Authorization", "Bearer "+key)
	if resp.StatusCode != 200 || f.last(t).Header.Get("Authorization") != "Bearer ya29.deploy" {
		t.Fatalf("claude on vertex: %d %s", resp.StatusCode, body)
	}
	rows := spendRows(t, e, key)
	want := tableCost(t, "vertex_ai", "gemini-2.0-flash", u)
	if len(rows) != 4 || want <= 0 {
		t.Fatalf("%d rows (want 4), price %v", len(rows), want)
	}
	if r, w := rows[3], tableCost(t, "vertex_ai", "claude-3-5-sonnet-v2@20241022", u); r.Status != 200 || !near(r.Cost, w) || w <= 0 || r.PromptTokens != 10 {
		t.Fatalf("claude on vertex booked %+v, want %v", r, w)
	}
	for _, r := range rows[:3] {
		if r.Status != 200 || !near(r.Cost, want) || r.PromptTokens != 10 || r.CompletionTokens != 20 || r.ModelGroup != "gemini-2.0-flash" {
			t.Fatalf("booked %+v, want cost %v", r, want)
		}
	}

}

// TestPassThroughVertexCredentialsFollowTheLeadingProject: Vertex AI routes
// a call on the project its path names first, so /vertex_ai/* chooses the
// credentials by that project alone: a path naming projects/ a second
// time (plainly, percent-encoded, or behind an encoded slash) or holding a
// dot segment is refused with a 400 before Vertex AI, and a project named
// only deeper in the path does not lend its deployment's credentials.
func TestPassThroughVertexCredentialsFollowTheLeadingProject(t *testing.T) {
	f := newNativeFake(t)
	tokens, _ := googleTokenServer(t)
	deploymentKey, _ := json.Marshal(serviceAccount(t, "deploy@p1.iam.gserviceaccount.com", tokens.URL))
	defaultKey, _ := json.Marshal(serviceAccount(t, "default@p2.iam.gserviceaccount.com", tokens.URL))
	cfg, err := config.Parse("v.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: gemini-vertex
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_project: p1
      vertex_location: us-central1
      vertex_credentials: %s
      api_base: %s
      use_in_pass_through: true
default_vertex_config:
  vertex_project: p2
  vertex_location: us-central1
  vertex_credentials: %s
  api_base: %s
general_settings:
  master_key: sk-1234
`, deploymentKey, f.url, defaultKey, f.url)))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{}`)
	gem := `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`
	const p1 = "projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
	for _, path := range []string{
		"/vertex_ai/v1/projects/p2/locations/us-central1/publishers/google/models/x/" + p1,
		"/vertex_ai/v1/projects/p2/locations/us-central1/publishers/google/models/x/pr%6fjects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
		"/vertex_ai/v1/projects/p2%2Fprojects%2Fp1/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
		"/vertex_ai/v1/projects/p1/locations/us-central1/%2e%2e/%2e%2e/%2e%2e/projects-x/p2/models/gemini-2.0-flash:generateContent",
	} {
		before := len(f.requests())
		resp, body := passSend(t, "POST", e.url+path, gem, "Authorization", "Bearer "+key)
		if resp.StatusCode != 400 || !strings.Contains(body, `"error"`) || len(f.requests()) != before {
			t.Fatalf("%s: %d %s, %d upstream requests", path, resp.StatusCode, body, len(f.requests())-before)
		}
	}
	// p1 named only past the leading segments: the default credentials.
	path := "/vertex_ai/v1/publishers/google/models/x/" + p1
	resp, body := passSend(t, "POST", e.url+path, gem, "Authorization", "Bearer "+key)
	if resp.StatusCode != 200 || f.last(t).Header.Get("Authorization") != "Bearer ya29.default" {
		t.Fatalf("%s: %d %s, upstream auth %q", path, resp.StatusCode, body, f.last(t).Header.Get("Authorization"))
	}
	resp, body = passSend(t, "POST", e.url+"/vertex_ai/v1/"+p1, gem, "Authorization", "Bearer "+key)
	if resp.StatusCode != 200 || f.last(t).Header.Get("Authorization") != "Bearer ya29.deploy" {
		t.Fatalf("p1's own path: %d %s, upstream auth %q", resp.StatusCode, body, f.last(t).Header.Get("Authorization"))
	}
}
