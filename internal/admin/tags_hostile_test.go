package admin_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawTagChat sends a chat request with the raw x-litellm-tags header value
// (set on the header map directly, so bytes Go would not write through Set
// still go) and returns the status.
func (e *env) rawTagChat(key, header, body string) int {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if header != "" {
		req.Header["X-Litellm-Tags"] = []string{header}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Logf("chat: %v", err)
		return 0
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitKeyRows polls /spend/logs for key until it lists n rows or 30 s
// pass; it returns the rows it saw last.
func (e *env) waitKeyRows(key string, n int) []tagLog {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var logs []tagLog
		e.getJSON("/spend/logs?api_key="+key, "sk-1234", &logs)
		if len(logs) >= n || time.Now().After(deadline) {
			return logs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTagWithNULDoesNotStallSpendWriter: any key holder can send a tag
// holding U+0000 in metadata.tags; PostgreSQL refuses a NUL in TEXT. The
// tag is cleaned (addTag drops control characters) and the writer sets
// aside a row the store refuses, so other callers' rows keep landing.
func TestTagWithNULDoesNotStallSpendWriter(t *testing.T) {
	engines(t, tagConfig, func(t *testing.T, e *env) {
		attacker := e.generate(`{}`)
		victim := e.generate(`{}`)
		if s := e.rawTagChat(attacker, "", `{"model":"priced","messages":[{"role":"user","content":"hi"}],"metadata":{"tags":["a\u0000b"]}}`); s != 200 {
			// Refusing the tag with a 400 would be a fix too; then the
			// victim's row below must still land.
			t.Logf("tag with NUL refused: %d", s)
		}
		if s := e.rawTagChat(victim, "", `{"model":"priced","messages":[{"role":"user","content":"hi"}]}`); s != 200 {
			t.Fatalf("victim's chat: %d", s)
		}
		if logs := e.waitKeyRows(victim, 1); len(logs) != 1 {
			t.Errorf("another key's spend row never reached the store after a request tagged with a NUL (rows %d after 30 s): the spend writer is stuck retrying the batch", len(logs))
		}
	})
}

// TestTagInvalidUTF8HeaderIsCleaned: an x-litellm-tags header may carry bytes
// that are not UTF-8 (net/http accepts obs-text). The tag is cleaned, so
// neither PostgreSQL (spend_daily_tags) nor the Prometheus tag label
// (which panics on a value that is not UTF-8) ever sees the bytes, and
// every caller's rows keep landing.
func TestTagInvalidUTF8HeaderIsCleaned(t *testing.T) {
	engines(t, tagConfig, func(t *testing.T, e *env) {
		attacker := e.generate(`{}`)
		victim := e.generate(`{}`)
		if s := e.rawTagChat(attacker, "ok,bad\xff\xfe", `{"model":"priced","messages":[{"role":"user","content":"hi"}]}`); s != 200 && s != 400 {
			t.Errorf("a served request whose tag header is not UTF-8 got status %d (0: the connection was cut) instead of its answer (or a 400)", s)
		}
		if s := e.rawTagChat(victim, "", `{"model":"priced","messages":[{"role":"user","content":"hi"}]}`); s != 200 {
			t.Fatalf("victim's chat: %d", s)
		}
		if logs := e.waitKeyRows(victim, 1); len(logs) != 1 {
			t.Errorf("another key's spend row never reached the store after a request whose tag is not UTF-8 (rows %d after 30 s)", len(logs))
		}
		if logs := e.waitKeyRows(attacker, 1); len(logs) == 1 {
			for _, tag := range logs[0].RequestTags {
				if !strings.HasPrefix(tag, "ok") && !strings.HasPrefix(tag, "bad") {
					t.Errorf("stored tag %q", tag)
				}
			}
		}
		resp, err := http.Get(e.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `tag_requests_total{tag="ok"}`) {
			t.Errorf("/metrics %d: the served request's valid tag was not counted (tag_requests_total lines: %q)", resp.StatusCode, grepLines(string(b), "tag_requests_total"))
		}
	})
}

func grepLines(s, sub string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestEndUserNULDoesNotStallSpendWriter: a body's user with U+0000 (an
// end_users row and spend_logs.end_user, which PostgreSQL would refuse)
// is cleaned before the write, and the writer isolates a row that can
// never be written: other callers' rows keep landing.
func TestEndUserNULDoesNotStallSpendWriter(t *testing.T) {
	engines(t, tagConfig, func(t *testing.T, e *env) {
		attacker := e.generate(`{}`)
		victim := e.generate(`{}`)
		e.rawTagChat(attacker, "", `{"model":"priced","user":"u\u0000x","messages":[{"role":"user","content":"hi"}]}`)
		if s := e.rawTagChat(victim, "", `{"model":"priced","messages":[{"role":"user","content":"hi"}]}`); s != 200 {
			t.Fatalf("victim's chat: %d", s)
		}
		if logs := e.waitKeyRows(victim, 1); len(logs) != 1 {
			t.Errorf("another key's spend row never reached the store after a request whose user holds a NUL (rows %d after 30 s)", len(logs))
		}
	})
}
