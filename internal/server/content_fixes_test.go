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

// waitKeyRow polls the store (flushing the writer) for key's row, up to 30 s.
func waitKeyRow(t *testing.T, e *spendEnv, st store.Store, key string) (store.SpendLog, bool) {
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

// TestInvalidUTF8ContentDoesNotStallSpendWriter: with
// store_prompts_in_spend_logs, a message holding a byte that is not UTF-8
// (a Latin-1 "café", which the gateway accepts and answers) is stored with
// U+FFFD in its place; PostgreSQL refused the raw byte, and the writer
// retried that batch for ever, so no other key's row landed either.
func TestInvalidUTF8ContentDoesNotStallSpendWriter(t *testing.T) {
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
		if _, ok := waitKeyRow(t, e, st, good); !ok {
			t.Error("another key's spend row never reached the store: the writer is stuck on the non-UTF-8 content row")
		}
		row, ok := waitKeyRow(t, e, st, bad)
		if !ok {
			t.Fatal("the spend row of the request with a non-UTF-8 message never reached the store")
		}
		if !json.Valid(row.Messages) || !strings.Contains(string(row.Messages), "au lait") {
			t.Errorf("stored messages: %q", row.Messages)
		}
	})
}

// TestNonUTF8TagHeaderIsCleaned: a Latin-1 byte in an x-litellm-tags
// header is made U+FFFD in the tag: the Prometheus tag label panicked on
// it after the answer started (the client got EOF, the call was logged
// twice), and PostgreSQL refused it in spend_daily_tags, wedging the
// writer.
func TestNonUTF8TagHeaderIsCleaned(t *testing.T) {
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
		if _, ok := waitKeyRow(t, e, st, good); !ok {
			t.Error("another key's spend row never reached the store: the writer is stuck on the row with a non-UTF-8 tag")
		}
	})
}

// TestClientStringsThatAreNotUTF8: the other strings a client controls
// and the store and the metric labels take (the end user, a metadata tag,
// an end user with a NUL byte) neither break the answer nor wedge the
// spend writer on PostgreSQL: the rows land, and later rows too.
func TestClientStringsThatAreNotUTF8(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "  store_prompts_in_spend_logs: true\n")
		for i, body := range []string{
			"{\"model\":\"gpt-4\",\"user\":\"caf\xe9\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
			`{"model":"gpt-4","user":"nul\u0000user","messages":[{"role":"user","content":"x"}]}`,
			"{\"model\":\"gpt-4\",\"metadata\":{\"tags\":[\"caf\xe9\",\"tab\\there\"],\"note\":\"caf\xe9\\u0000\"},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
		} {
			k := e.newKey(t, `{}`)
			if resp, out := e.post(t, "/v1/chat/completions", k, body); resp.StatusCode != 200 {
				t.Fatalf("body %d: %d %v", i, resp.StatusCode, out)
			}
			row, ok := waitKeyRow(t, e, st, k)
			if !ok {
				t.Fatalf("body %d: its spend row never reached the store", i)
			}
			// The end user is kept, cleaned, rather than dropped with the
			// row's other client fields.
			if want := map[int]string{0: "caf\uFFFD", 1: "nuluser"}[i]; want != "" && row.EndUser != want {
				t.Errorf("body %d: end user %q, want %q", i, row.EndUser, want)
			}
		}
		// An unknown model named with a Latin-1 byte is refused cleanly.
		if resp, out := e.post(t, "/v1/chat/completions", e.newKey(t, `{}`), "{\"model\":\"caf\xe9\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"); resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("an unknown non-UTF-8 model: %d %v", resp.StatusCode, out)
		}
		good := e.newKey(t, `{}`)
		if resp, out := e.post(t, "/v1/chat/completions", good, chat3); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %v", resp.StatusCode, out)
		}
		if _, ok := waitKeyRow(t, e, st, good); !ok {
			t.Error("a later row never reached the store")
		}
	})
}
