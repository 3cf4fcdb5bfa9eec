package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
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

// TestProbeNonUTF8TagHeader: an x-litellm-tags header value is a Go
// string of the header's raw bytes, and a Latin-1 byte in it is kept as a
// tag (logged.go readMeta/addTag check no UTF-8). Then (1) the Prometheus
// tag label panics ("label value is not valid UTF-8", observe.go:103 via
// labels.go tagLabels) after the answer started: the client gets EOF
// instead of its answer, the call is logged twice (200, then 500); and
// (2) the tag goes raw into spend_daily_tags.tag: PostgreSQL refuses the
// batch and the writer retries it for ever, so every later row is lost.
func TestProbeNonUTF8TagHeader(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "")
		bad, good := e.newKey(t, `{}`), e.newKey(t, `{}`)
		req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(chat3))
		req.Header.Set("Authorization", "Bearer "+bad)
		req.Header.Set("x-litellm-tags", "caf\xe9")
		if resp, err := http.DefaultClient.Do(req); err != nil {
			t.Errorf("a request tagged with a non-UTF-8 header got no answer: %v", err)
		} else {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || !json.Valid(b) {
				t.Errorf("a request tagged with a non-UTF-8 header: %d %v %.200s", resp.StatusCode, err, b)
			}
		}
		if resp, out := e.post(t, "/v1/chat/completions", good, chat3); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %v", resp.StatusCode, out)
		}
		if _, ok := probeWaitRow(t, e, st, good); !ok {
			t.Error("another key's spend row never reached the store: the writer is stuck on the row with a non-UTF-8 tag")
		}
	})
}
