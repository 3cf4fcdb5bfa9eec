package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The per-key spend counter, kept in a map of its own, is exposed as the
// CounterVec it replaces was: one counter series per (key_hash,
// key_alias), every concurrent add counted.
func TestKeySpendSeries(t *testing.T) {
	m := New(Options{KeyLabels: true})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				m.ObserveRequest(&Request{Operation: "chat", Provider: "openai", RequestModel: "gpt-4", ModelGroup: "gpt-4", Status: 200,
					Cost: 0.25, KeyHash: "0123456789abcdef", KeyAlias: "a"})
				m.ObserveRequest(&Request{Operation: "chat", Provider: "openai", RequestModel: "gpt-4", ModelGroup: "gpt-4", Status: 200,
					Cost: 0.5, KeyHash: "fedcba9876543210"})
			}
		}()
	}
	wg.Wait()
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"# TYPE tollgate_key_spend_usd_total counter\n",
		`tollgate_key_spend_usd_total{key_alias="a",key_hash="01234567"} 2000` + "\n",
		`tollgate_key_spend_usd_total{key_alias="",key_hash="fedcba98"} 4000` + "\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %q:\n%s", want, grep(string(body), "key_spend"))
		}
	}
	rec = httptest.NewRecorder()
	New(Options{KeyLabels: true}).Handler(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if b, _ := io.ReadAll(rec.Body); strings.Contains(string(b), "key_spend") {
		t.Errorf("a gateway that served no key shows key spend:\n%s", grep(string(b), "key_spend"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
