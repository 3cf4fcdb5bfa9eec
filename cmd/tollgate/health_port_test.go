package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestServeSeparateHealthApp: with LiteLLM's SEPARATE_HEALTH_APP=1,
// tollgate serve answers the health routes and /metrics on
// SEPARATE_HEALTH_PORT as well as on the main port; inference routes are
// not served there.
func TestServeSeparateHealthApp(t *testing.T) {
	bin := buildBinary(t)
	port, hport := freePort(t), freePort(t)
	t.Setenv("SEPARATE_HEALTH_APP", "1")
	t.Setenv("SEPARATE_HEALTH_PORT", fmt.Sprint(hport))
	health := fmt.Sprintf("http://127.0.0.1:%d", hport)
	start(t, t.TempDir(), health+"/health/liveliness", bin, "serve", "--port", fmt.Sprint(port))
	for _, path := range []string{"/health/liveliness", "/health/readiness", "/metrics"} {
		resp, err := http.Get(health + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s on the health port: %d %s", path, resp.StatusCode, b)
		}
	}
	resp, err := http.Post(health+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"demo","messages":[{"role":"user","content":"Hello!"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Error("the health port served an inference request")
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/health/liveliness", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("main port /health/liveliness: %d", resp.StatusCode)
	}
}
