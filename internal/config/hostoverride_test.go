package config

import "testing"

// TestHostOverrideScheme: agentgateway reaches a hostOverride of host:port
// over plain HTTP unless a backendTLS policy applies; a scheme says it
// explicitly; port 443 and a bare host are HTTPS.
func TestHostOverrideScheme(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, policies, host, want string
	}{
		{"host:port is plain HTTP", "", "localhost:11434", "http://localhost:11434"},
		{"backendTLS makes it HTTPS", "\n  policies:\n    backendTLS: {}", "vllm.internal:8443", "https://vllm.internal:8443"},
		{"port 443 is HTTPS", "", "api.example.com:443", "https://api.example.com:443"},
		{"a bare host is HTTPS", "", "api.example.com", "https://api.example.com"},
		{"http:// is kept", "\n  policies:\n    backendTLS: {}", "http://10.0.0.5:8000", "http://10.0.0.5:8000"},
		{"https:// is kept", "", "https://10.0.0.5:8000", "https://10.0.0.5:8000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := "llm:" + tt.policies + "\n  models:\n  - name: m\n    provider: openAI\n    params:\n      hostOverride: \"" + tt.host + "\"\n"
			cfg, err := Parse("agw.yaml", []byte(yaml))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := cfg.Deployments[0].APIBase; got != tt.want {
				t.Errorf("api base = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestHostOverrideSchemeOnRoutes: the same rule on a route's ai backend,
// with the route's own backendTLS policy.
func TestHostOverrideSchemeOnRoutes(t *testing.T) {
	t.Parallel()
	route := func(policies string) string {
		return "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          hostOverride: \"ollama:11434\"\n          provider:\n            openAI: {model: llama3.2}\n" + policies
	}
	plain, err := Parse("a.yaml", []byte(route("")))
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.Deployments[0].APIBase; got != "http://ollama:11434" {
		t.Errorf("without backendTLS: %q", got)
	}
	if plain.ListenPort != 3000 {
		t.Errorf("listen port %d, want binds[0].port 3000", plain.ListenPort)
	}
	tls, err := Parse("b.yaml", []byte(route("      policies:\n        backendTLS: {}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := tls.Deployments[0].APIBase; got != "https://ollama:11434" {
		t.Errorf("with backendTLS: %q", got)
	}
}

// TestLLMPortIsListenPort: llm.port is the port the file asks for.
func TestLLMPortIsListenPort(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("p.yaml", []byte("llm:\n  port: 3000\n  models:\n  - name: m\n    provider: openAI\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListenPort != 3000 {
		t.Errorf("listen port %d, want 3000", cfg.ListenPort)
	}
}

// TestDemoModelIsPriced: the embedded default's demo model has its
// (fictional) non-zero prices.
func TestDemoModelIsPriced(t *testing.T) {
	t.Parallel()
	d := Default().Deployments[0]
	if d.InputCostPerToken == nil || *d.InputCostPerToken <= 0 || d.OutputCostPerToken == nil || *d.OutputCostPerToken <= 0 {
		t.Fatalf("demo prices = %v / %v, want both > 0", d.InputCostPerToken, d.OutputCostPerToken)
	}
}
