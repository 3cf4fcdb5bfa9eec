package provider

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

func TestBuildURLsAndHeaders(t *testing.T) {
	tests := []struct {
		name       string
		d          config.Deployment
		op         Op
		wantURL    string
		authHeader string
		authValue  string
	}{
		{"bare gpt-4 is OpenAI", config.Deployment{ModelName: "gpt-4", Provider: "openai", Model: "gpt-4", APIKey: "k"},
			OpChat, "https://api.openai.com/v1/chat/completions", "Authorization", "Bearer k"},
		{"openai with custom base", config.Deployment{Provider: "openai", Model: "m", APIBase: "http://10.0.0.1:9000/v1/"},
			OpEmbeddings, "http://10.0.0.1:9000/v1/embeddings", "Authorization", ""},
		{"huggingface TGI base without path", config.Deployment{Provider: "huggingface", Model: "HuggingFaceH4/zephyr-7b-beta", APIBase: "http://0.0.0.0:8001"},
			OpChat, "http://0.0.0.0:8001/v1/chat/completions", "Authorization", ""},
		{"ollama default", config.Deployment{Provider: "ollama", Model: "llama2"},
			OpChat, "http://localhost:11434/v1/chat/completions", "Authorization", ""},
		{"hosted_vllm", config.Deployment{Provider: "hosted_vllm", Model: "m", APIBase: "https://vllm.example/v1", APIKey: "v"},
			OpCompletions, "https://vllm.example/v1/completions", "Authorization", "Bearer v"},
		{"azure", config.Deployment{Provider: "azure", Model: "azure-embedding-model", APIBase: "https://res.openai.azure.com/", APIKey: "az", APIVersion: "2023-07-01-preview"},
			OpEmbeddings, "https://res.openai.azure.com/openai/deployments/azure-embedding-model/embeddings?api-version=2023-07-01-preview", "api-key", "az"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := Build(&tt.d, NewClients())
			if err != nil {
				t.Fatal(err)
			}
			req, err := tg.NewRequest(context.Background(), tt.op, "m", []byte(`{}`), "", false)
			if err != nil {
				t.Fatal(err)
			}
			if req.URL.String() != tt.wantURL {
				t.Errorf("URL = %s, want %s", req.URL, tt.wantURL)
			}
			if got := req.Header.Get(tt.authHeader); got != tt.authValue {
				t.Errorf("%s = %q, want %q", tt.authHeader, got, tt.authValue)
			}
			if tt.d.Provider == "azure" && req.Header.Get("Authorization") != "" {
				t.Error("azure must not send Authorization")
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name string
		d    config.Deployment
		want string
	}{
		{"unknown provider", config.Deployment{ModelName: "x", Provider: "nosuch", Model: "m"}, `provider "nosuch" is not supported`},
		{"vllm needs a base", config.Deployment{ModelName: "x", Provider: "hosted_vllm", Model: "m"}, "needs litellm_params.api_base"},
		{"azure needs a base", config.Deployment{ModelName: "x", Provider: "azure", Model: "m"}, "needs litellm_params.api_base"},
		{"base not http", config.Deployment{ModelName: "x", Provider: "openai", Model: "m", APIBase: "ftp://h"}, "not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(&tt.d, NewClients())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestUpstreamModel(t *testing.T) {
	tests := []struct {
		modelName, model, requested, want string
	}{
		{"gpt-4", "gpt-4o", "gpt-4", "gpt-4o"},
		{"*", "", "gpt-3.5-turbo", "gpt-3.5-turbo"},
		{"openai/*", "*", "openai/gpt-4o", "gpt-4o"},
		{"gpt-4*", "*", "gpt-4-turbo", "gpt-4-turbo"},
	}
	for _, tt := range tests {
		tg, err := Build(&config.Deployment{ModelName: tt.modelName, Provider: "openai", Model: tt.model}, NewClients())
		if err != nil {
			t.Fatal(err)
		}
		if got := tg.UpstreamModel(tt.requested); got != tt.want {
			t.Errorf("%s/%s: UpstreamModel(%q) = %q, want %q", tt.modelName, tt.model, tt.requested, got, tt.want)
		}
	}
}

func TestDemoTransportStreams(t *testing.T) {
	tg, err := Build(&config.Deployment{ModelName: "demo", Provider: "demo", Model: "demo"}, NewClients())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := tg.NewRequest(context.Background(), OpChat, "demo", []byte(`{"model":"demo","stream":true,"messages":[{"role":"user","content":"hi"}]}`), "", true)
	resp, err := tg.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || !strings.Contains(string(b), "[DONE]") {
		t.Fatalf("demo stream: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}

func TestPriceOverrides(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	// gpt-4o-mini in the table: input 1.5e-7, output 6e-7, cache read 7.5e-8.
	tests := []struct {
		name               string
		d                  config.Deployment
		in, out, cacheRead float64
		priced             bool
	}{
		{"table", config.Deployment{Provider: "openai", Model: "gpt-4o-mini"}, 1.5e-7, 6e-7, 7.5e-8, true},
		{"input override scales the cache discount", config.Deployment{Provider: "openai", Model: "gpt-4o-mini", InputCostPerToken: f(3e-7)}, 3e-7, 6e-7, 1.5e-7, true},
		{"free input, free cache", config.Deployment{Provider: "openai", Model: "gpt-4o-mini", InputCostPerToken: f(0)}, 0, 6e-7, 0, true},
		{"cache override wins", config.Deployment{Provider: "openai", Model: "gpt-4o-mini", InputCostPerToken: f(3e-7), CacheReadInputTokenCost: f(1e-8)}, 3e-7, 6e-7, 1e-8, true},
		// azure/gpt-4o-mini has its own entry.
		{"base_model is priced as served", config.Deployment{Provider: "azure", Model: "my-deployment", BaseModel: "gpt-4o-mini"}, 1.65e-7, 6.6e-7, 7.5e-8, true},
		{"unknown", config.Deployment{Provider: "openai", Model: "nobody-knows"}, 0, 0, 0, false},
		{"unknown with prices", config.Deployment{Provider: "openai", Model: "nobody-knows", InputCostPerToken: f(1), OutputCostPerToken: f(2)}, 1, 2, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := DeploymentPrice(&tt.d)
			near := func(a, b float64) bool { return a-b < 1e-18 && b-a < 1e-18 }
			if ok != tt.priced || !near(p.InputPerToken, tt.in) || !near(p.OutputPerToken, tt.out) || !near(p.CacheReadPerToken, tt.cacheRead) {
				t.Fatalf("DeploymentPrice = %+v %v; want in %g out %g cache read %g priced %v", p, ok, tt.in, tt.out, tt.cacheRead, tt.priced)
			}
		})
	}
}

// TestShownBase: credentials a URL may carry (user information, a query
// string) never leave in what callers are shown of an api_base.
func TestShownBase(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.openai.com/v1":                           "https://api.openai.com/v1",
		"https://user:secret@llm.internal:8443/v1/":           "https://llm.internal:8443/v1/",
		"https://x.openai.azure.com/openai?api-key=SECRET123": "https://x.openai.azure.com/openai",
		"http://u:p@host?k=v#frag":                            "http://host",
		"":                                                    "",
	} {
		if got := ShownBase(in); got != want {
			t.Errorf("ShownBase(%q) = %q, want %q", in, got, want)
		}
	}
}
