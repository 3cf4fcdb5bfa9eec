package server

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestCohereStreamClientGoneIsCharged: a client that leaves a Cohere
// stream before its message-end (which carries the usage) is still
// charged, for the prompt and what was streamed to it, and logged as 499.
func TestCohereStreamClientGoneIsCharged(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{ChunkDelay: 100 * time.Millisecond, Chunks: 40}))
	defer up.Close()
	cfg, err := config.Parse("c.yaml", []byte(fmt.Sprintf(`
model_list:
  - model_name: command
    litellm_params: {model: cohere/command-r, api_key: co-key, api_base: "%s"}
general_settings:
  master_key: sk-1234
`, up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	e := serveEnv(t, cfg, st)
	key := newKey(t, e, `{}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	words := strings.Repeat("word ", 60)
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"command","stream":true,"messages":[{"role":"user","content":"`+words+`"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	for deltas := 0; deltas < 2; {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
			deltas++
		}
	}
	cancel() // the client walks away mid-stream
	resp.Body.Close()
	logs := awaitSpendRows(e.srv, st, key)
	if len(logs) != 1 || logs[0].Status != 499 || logs[0].PromptTokens <= 0 || logs[0].CompletionTokens < 2 || logs[0].Cost <= 0 {
		t.Fatalf("abandoned stream booked as %+v", logs)
	}
}
