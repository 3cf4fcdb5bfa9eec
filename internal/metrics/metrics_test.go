package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// touched returns metrics on which every series has been written once.
func touched(t *testing.T) *Metrics {
	book := ledger.NewBook(nil)
	b := 1.0
	book.Account(store.KindKey, "k", ledger.Spec{Budget: &b})
	m := New(Options{KeyLabels: true, Book: book, WriterPending: func() int { return 0 }, WriterLag: func() time.Duration { return 0 },
		RedisDegraded: func() bool { return false }, Deployments: func(yield func(string, string, bool)) { yield("gpt-4", "d1", true) }})
	m.ObserveRequest(&Request{Operation: "chat", Provider: "openai", RequestModel: "gpt-4", ModelGroup: "gpt-4", Status: 200,
		PromptTokens: 3, CompletionTokens: 4, HasUsage: true, Duration: time.Second, TTFT: time.Millisecond, Stream: true,
		Cost: 0.1, KeyHash: "k", KeyAlias: "a", User: "u", Team: "t", EndUser: "e"})
	m.RateLimited(store.KindKey, "rpm_limit")
	m.BudgetRefused(store.KindKey)
	m.SoftBudgetCrossed(store.KindKey)
	m.Retried("gpt-4")
	m.FellBack("gpt-4", "gpt-3.5")
	m.CooledDown("gpt-4", "d1")
	return m
}

// TestDashboardReadsRealMetrics: every metric the Grafana dashboard queries
// is one the gateway exports, so the dashboard cannot drift from the code.
func TestDashboardReadsRealMetrics(t *testing.T) {
	fams, err := touched(t).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	raw, err := os.ReadFile("../../deploy/grafana/tollgate-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`tollgate_[a-z0-9_]+`)
	seen := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				seen++
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && have[b] {
						base = b
					}
				}
				if !have[base] {
					t.Errorf("panel %q queries %s, which the gateway does not export", p.Title, n)
				}
			}
		}
	}
	if seen < 15 {
		t.Fatalf("the dashboard references only %d metrics", seen)
	}
}

func TestPrefix(t *testing.T) {
	fams, err := New(Options{Prefix: "agentgateway"}).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		n := f.GetName()
		if !strings.HasPrefix(n, "agentgateway_") && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") {
			t.Errorf("%s lacks the prefix", n)
		}
	}
}

func BenchmarkObserveRequest(b *testing.B) {
	m := New(Options{KeyLabels: true})
	r := &Request{Operation: "chat", Provider: "openai", RequestModel: "gpt-4", ModelGroup: "gpt-4", Status: 200,
		PromptTokens: 30, CompletionTokens: 40, HasUsage: true, Duration: time.Second, Overhead: 50 * time.Microsecond,
		Cost: 0.001, KeyHash: "0123456789abcdef", KeyAlias: "a", Team: "t"}
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveRequest(r)
	}
}
