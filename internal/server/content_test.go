package server

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// rowRecorder is a store that keeps a copy of every spend row the writer
// hands it: the messages and response columns are not persisted yet, so
// the rows are read at the store's door.
type rowRecorder struct {
	store.Store
	mu   sync.Mutex
	rows []store.SpendLog
}

func (r *rowRecorder) ApplySpend(ctx context.Context, batch []store.SpendLog) error {
	r.mu.Lock()
	r.rows = append(r.rows, batch...)
	r.mu.Unlock()
	return r.Store.ApplySpend(ctx, batch)
}

// rowsOf waits (up to 30 s, flushing the writer) for n rows of key.
func (r *rowRecorder) rowsOf(t *testing.T, e *spendEnv, key string, n int) []store.SpendLog {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		e.srv.writer.Flush()
		var out []store.SpendLog
		r.mu.Lock()
		for _, l := range r.rows {
			if l.KeyHash == sha(key) {
				out = append(out, l)
			}
		}
		r.mu.Unlock()
		if len(out) >= n || time.Now().After(deadline) {
			if len(out) < n {
				t.Fatalf("%d spend rows of the key after 30 s, want %d", len(out), n)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const secretChat = `{"model":"gpt-4","messages":[{"role":"user","content":"mail jane@example.com card 4111 1111 1111 1111 key sk-proj-abcDEF1234567890xyz"}]}`

func leaks(s string) bool {
	return strings.Contains(s, "jane@example.com") || strings.Contains(s, "4111 1111 1111 1111") || strings.Contains(s, "sk-proj-abcDEF1234567890xyz")
}

// TestSpendRowsKeepRedactedContent: with store_prompts_in_spend_logs the
// spend row carries the messages and the answer (a stream assembled),
// masked; a key or a team whose metadata turns message logging off
// leaves its rows without content.
func TestSpendRowsKeepRedactedContent(t *testing.T) {
	rec := &rowRecorder{Store: sqliteStore(t)}
	e := startSpend(t, rec, mockupstream.Options{Chunks: 3}, "  store_prompts_in_spend_logs: true\n")
	key := e.newKey(t, `{}`)
	if resp, out := e.post(t, "/v1/chat/completions", key, secretChat); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	row := rec.rowsOf(t, e, key, 1)[0]
	if m := string(row.Messages); !strings.Contains(m, "<EMAIL_ADDRESS>") || !strings.Contains(m, "<CREDIT_CARD>") || !strings.Contains(m, "<API_KEY>") || leaks(m) {
		t.Errorf("row messages: %s", m)
	}
	if r := string(row.Response); !strings.Contains(r, `"chat.completion"`) || leaks(r) {
		t.Errorf("row response: %s", r)
	}

	streamKey := e.newKey(t, `{}`)
	if resp, _ := e.post(t, "/v1/chat/completions", streamKey, strings.Replace(secretChat, `{"model"`, `{"stream":true,"model"`, 1)); resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	row = rec.rowsOf(t, e, streamKey, 1)[0]
	if r := string(row.Response); !strings.Contains(r, `"object":"chat.completion"`) || !strings.Contains(r, `"content":"`) || leaks(r) {
		t.Errorf("stream row response: %s", r)
	}

	offKey := e.newKey(t, `{"metadata":{"turn_off_message_logging":true}}`)
	e.post(t, "/v1/chat/completions", offKey, secretChat)
	if row := rec.rowsOf(t, e, offKey, 1)[0]; row.Messages != nil || row.Response != nil {
		t.Errorf("key opt-out: %s / %s", row.Messages, row.Response)
	}

	_, team := e.post(t, "/team/new", "sk-1234", `{"team_alias":"quiet","metadata":{"logging":[{"callback_name":"langfuse","callback_type":"success","callback_vars":{"turn_off_message_logging":true}}]}}`)
	teamID, _ := team["team_id"].(string)
	if teamID == "" {
		t.Fatalf("team/new: %v", team)
	}
	teamKey := e.newKey(t, `{"team_id":"`+teamID+`"}`)
	e.post(t, "/v1/chat/completions", teamKey, secretChat)
	if row := rec.rowsOf(t, e, teamKey, 1)[0]; row.Messages != nil || row.Response != nil {
		t.Errorf("team opt-out: %s / %s", row.Messages, row.Response)
	}
}

// TestSpendRowsWithoutStorePrompts: without store_prompts_in_spend_logs,
// and with it under turn_off_message_logging, rows carry no content.
func TestSpendRowsWithoutStorePrompts(t *testing.T) {
	for _, extra := range []string{"", "  store_prompts_in_spend_logs: true\nlitellm_settings:\n  turn_off_message_logging: true\n"} {
		rec := &rowRecorder{Store: sqliteStore(t)}
		e := startSpend(t, rec, mockupstream.Options{}, extra)
		key := e.newKey(t, `{}`)
		if resp, out := e.post(t, "/v1/chat/completions", key, secretChat); resp.StatusCode != 200 {
			t.Fatalf("chat: %d %v", resp.StatusCode, out)
		}
		if row := rec.rowsOf(t, e, key, 1)[0]; row.Messages != nil || row.Response != nil {
			t.Errorf("config %q: content %s / %s", extra, row.Messages, row.Response)
		}
	}
}

// TestContentLoggingConfig: secrets and every PII class by default; the
// classes named; none with an empty list; an unknown class stops the start.
func TestContentLoggingConfig(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // classes, in order; nil: an error is expected
		err        string
	}{
		{"default", "general_settings: {store_prompts_in_spend_logs: true}\n",
			[]string{"PRIVATE_KEY", "JWT", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "API_KEY", "AUTHORIZATION",
				"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PHONE_NUMBER"}, ""},
		{"named", "general_settings:\n  content_logging: {redact_secrets: false, redact_pii: [US_SSN, EMAIL_ADDRESS]}\n",
			[]string{"US_SSN", "EMAIL_ADDRESS"}, ""},
		{"none", "general_settings:\n  content_logging: {redact_secrets: false, redact_pii: []}\n", []string{}, ""},
		{"unknown", "general_settings:\n  content_logging: {redact_pii: [PERSON]}\n", nil, `unknown redaction class "PERSON"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse("t.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			cl, err := contentLogging(cfg)
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, c := range cl.Redactor.Classes() {
				got = append(got, string(c))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("classes %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := config.Parse("t.yaml", []byte("general_settings:\n  content_logging: {max_field_bytes: 10}\n")); err == nil || !strings.Contains(err.Error(), "max_field_bytes") {
		t.Errorf("a tiny cap: %v", err)
	}
}
