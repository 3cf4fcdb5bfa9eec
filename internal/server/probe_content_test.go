package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// waitRow polls the store (flushing the writer) for key's row, up to 30 s.
func probeWaitRow(t *testing.T, e *spendEnv, st store.Store, key string) (store.SpendLog, bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		e.srv.writer.Flush()
		rows, _, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
		if err == nil && len(rows) > 0 {
			return rows[0], true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return store.SpendLog{}, false
}

// TestProbeInvalidUTF8ContentStallsSpendWriter: with
// store_prompts_in_spend_logs, a message holding a byte that is not UTF-8
// (a Latin-1 "café", which the gateway accepts and answers) is stored
// as is in spend_logs.messages: redact.JSON keeps an unmasked string's
// raw bytes and json.Valid does not check UTF-8. PostgreSQL refuses the
// text ("invalid byte sequence for encoding UTF8"), the batch fails, and
// the writer retries that same batch for ever: the poison row and every
// row queued behind it (other keys' money) never land.
func TestProbeInvalidUTF8ContentStallsSpendWriter(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "  store_prompts_in_spend_logs: true\n")
		bad, good := e.newKey(t, `{}`), e.newKey(t, `{}`)
		body := "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9 au lait\"}]}"
		if resp, out := e.post(t, "/v1/chat/completions", bad, body); resp.StatusCode != 200 {
			t.Fatalf("latin-1 chat: %d %v", resp.StatusCode, out)
		}
		if resp, out := e.post(t, "/v1/chat/completions", good, secretChat); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %v", resp.StatusCode, out)
		}
		if _, ok := probeWaitRow(t, e, st, good); !ok {
			t.Error("another key's spend row never reached the store: the writer is stuck on the non-UTF-8 content row")
		}
		row, ok := probeWaitRow(t, e, st, bad)
		if !ok {
			t.Fatal("the spend row of the request with a non-UTF-8 message never reached the store")
		}
		if !json.Valid(row.Messages) || !strings.Contains(string(row.Messages), "au lait") {
			t.Errorf("stored messages: %q", row.Messages)
		}
	})
}
