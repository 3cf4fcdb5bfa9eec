package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// rawAnswer sends one non-streaming chat request over a fresh connection
// and returns the answer's header block as written on the wire (the status
// line, then each header line in the order net/http wrote it, names as
// sent) and its body.
func rawAnswer(t *testing.T, url, key, body string) (lines []string, answer string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
	if key != "" {
		req += "Authorization: Bearer " + key + "\r\n"
	}
	req += fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	n := -1
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the header block: %v (so far %q)", err, lines)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			n, _ = strconv.Atoi(v)
		}
		lines = append(lines, line)
	}
	if n < 0 {
		t.Fatalf("no Content-Length: %q", lines)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rd, b); err != nil {
		t.Fatal(err)
	}
	return lines, string(b)
}

// wireHeaders checks an answer's header block line by line against want:
// each want line is either the exact line or "Name: ~regexp" for a value
// that changes between runs (a time, an id), matched whole.
//
// The status line comes first; the header lines are compared as a set,
// by name: the lean server (lean.go) writes them in the map's order, not
// sorted as net/http does (RFC 9110 5.3: the order of fields with
// different names is not significant).
func wireHeaders(t *testing.T, got, want []string) {
	t.Helper()
	byName := func(lines []string) []string {
		if len(lines) < 2 {
			return lines
		}
		out := append([]string{lines[0]}, lines[1:]...)
		sort.SliceStable(out[1:], func(i, j int) bool {
			a, _, _ := strings.Cut(out[1+i], ": ")
			b, _, _ := strings.Cut(out[1+j], ": ")
			return a < b
		})
		return out
	}
	got, want = byName(got), byName(want)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		name, pat, isPat := strings.Cut(want[i], ": ~")
		if !isPat {
			ok = got[i] == want[i]
			continue
		}
		v, found := strings.CutPrefix(got[i], name+": ")
		ok = found && regexp.MustCompile("^(?:"+pat+")$").MatchString(v)
	}
	if !ok {
		t.Errorf("header block:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

const headersBody = `{"model":"gpt-4","max_tokens":8,"messages":[{"role":"user","content":"Say hello to the benchmark."}]}`

// TestAnswerHeadersExact pins every header of a whole (non-streaming)
// answer, names and values (the order is the map's: wireHeaders), as a client reads them off the wire:
// the plain gateway's (no master key) and a governed one's (a key with a
// budget and rpm, tpm and parallel limits). The header path is tuned for
// instructions (headers.go, limits.go); this is what such tuning must not
// change. Values that differ between runs (the date, the call id, the
// durations, the rate-limit windows' resets) are matched by pattern, and
// the call id must be the same under both names.
func TestAnswerHeadersExact(t *testing.T) {
	const models = `model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: "{{UP}}", input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
`
	date := `[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT`
	callID := func(lines []string) string {
		var tg, ll string
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l, "X-Tollgate-Call-Id: "); ok {
				tg = v
			}
			if v, ok := strings.CutPrefix(l, "X-Litellm-Call-Id: "); ok {
				ll = v
			}
		}
		if tg != ll {
			t.Errorf("call id %q under Tollgate's name, %q under LiteLLM's", tg, ll)
		}
		return tg
	}

	t.Run("plain", func(t *testing.T) {
		e := startConfig(t, sqliteStore(t), mockupstream.Options{}, models)
		d := e.srv.cfg.Load().Deployments[0]
		up := strings.TrimSuffix(d.APIBase, "/")
		got, body := rawAnswer(t, e.url, "", headersBody)
		if !strings.Contains(body, `"chat.completion"`) {
			t.Fatalf("answer %s", body)
		}
		wireHeaders(t, got, []string{
			"HTTP/1.1 200 OK",
			`Content-Length: ~\d+`, // the mock's answer, its length read whole above
			"Content-Type: application/json",
			"X-Litellm-Attempted-Fallbacks: 0",
			"X-Litellm-Attempted-Retries: 0",
			"X-Litellm-Call-Id: ~[0-9a-f]{32}",
			"X-Litellm-Model-Api-Base: " + up,
			"X-Litellm-Model-Group: gpt-4",
			"X-Litellm-Model-Id: " + d.ID,
			`X-Litellm-Overhead-Duration-Ms: ~\d+`,
			"X-Litellm-Response-Cost: 8.6e-05",
			`X-Litellm-Response-Duration-Ms: ~\d+`,
			"X-Litellm-Version: " + Version,
			"X-Tollgate-Attempted-Fallbacks: 0",
			"X-Tollgate-Attempted-Retries: 0",
			"X-Tollgate-Call-Id: ~[0-9a-f]{32}",
			"X-Tollgate-Model-Id: " + d.ID,
			"X-Tollgate-Response-Cost: 8.6e-05",
			"Date: ~" + date, // the gateway's own, written by net/http after the handler's map
		})
		callID(got)
	})

	t.Run("governed", func(t *testing.T) {
		e := startConfig(t, sqliteStore(t), mockupstream.Options{}, models+"general_settings:\n  master_key: sk-1234\n")
		d := e.srv.cfg.Load().Deployments[0]
		up := strings.TrimSuffix(d.APIBase, "/")
		key := newKey(t, e, `{"max_budget": 1000000, "rpm_limit": 100000000, "tpm_limit": 10000000000, "max_parallel_requests": 100000, "user_id": "bench-user"}`)
		want := func(spend, remainingRequests, remainingTokens string) []string {
			return []string{
				"HTTP/1.1 200 OK",
				`Content-Length: ~\d+`, // the mock's answer, its length read whole above
				"Content-Type: application/json",
				"X-Litellm-Attempted-Fallbacks: 0",
				"X-Litellm-Attempted-Retries: 0",
				"X-Litellm-Call-Id: ~[0-9a-f]{32}",
				"X-Litellm-Key-Max-Budget: 1e+06",
				"X-Litellm-Key-Rpm-Limit: 100000000",
				"X-Litellm-Key-Spend: " + spend,
				"X-Litellm-Key-Tpm-Limit: 10000000000",
				"X-Litellm-Model-Api-Base: " + up,
				"X-Litellm-Model-Group: gpt-4",
				"X-Litellm-Model-Id: " + d.ID,
				`X-Litellm-Overhead-Duration-Ms: ~\d+`,
				"X-Litellm-Response-Cost: 8.6e-05",
				`X-Litellm-Response-Duration-Ms: ~\d+`,
				"X-Litellm-Version: " + Version,
				"X-Ratelimit-Limit-Requests: 100000000",
				"X-Ratelimit-Limit-Tokens: 10000000000",
				"X-Ratelimit-Remaining-Requests: " + remainingRequests,
				"X-Ratelimit-Remaining-Tokens: ~" + remainingTokens,
				`X-Ratelimit-Reset-Requests: ~(\d+m)?\d+(\.\d+)?(ms|s)`,
				`X-Ratelimit-Reset-Tokens: ~(\d+m)?\d+(\.\d+)?(ms|s)`,
				"X-Tollgate-Attempted-Fallbacks: 0",
				"X-Tollgate-Attempted-Retries: 0",
				"X-Tollgate-Call-Id: ~[0-9a-f]{32}",
				"X-Tollgate-Key-Spend: " + spend,
				"X-Tollgate-Model-Id: " + d.ID,
				"X-Tollgate-Response-Cost: 8.6e-05",
				"Date: ~" + date, // the gateway's own (net/http's), not the upstream's
			}
		}
		got, body := rawAnswer(t, e.url, key, headersBody)
		if !strings.Contains(body, `"chat.completion"`) {
			t.Fatalf("answer %s", body)
		}
		wireHeaders(t, got, want("8.6e-05", "99999999", "10000000000"))
		first := callID(got)
		got, _ = rawAnswer(t, e.url, key, headersBody)
		// The first answer's 14 tokens are settled in the limiter just after it
		// is written: the second request may be admitted before or after.
		wireHeaders(t, got, want("0.000172", "99999998", "10000000000|9999999986"))
		if second := callID(got); second == first {
			t.Errorf("two answers carry the same call id %q", first)
		}
	})
}
