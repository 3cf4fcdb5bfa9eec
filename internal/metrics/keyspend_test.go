package metrics

import (
	"io"
	"math"
	"net/http/httptest"
	"strconv"
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

// Adding to a series that exists allocates nothing, and label pairs that
// concatenate alike stay apart.
func TestKeySpendAddToAKnownSeries(t *testing.T) {
	s := newKeySpend("x", "x")
	s.add("01234567", "app", 1)
	s.add("0123456", "7app", 2)
	if n := testing.AllocsPerRun(100, func() { s.add("01234567", "app", 1) }); n != 0 {
		t.Fatalf("%v allocations adding to a known series", n)
	}
	if len(s.m) != 2 {
		t.Fatalf("%d series, want 2", len(s.m))
	}
	for k, i := range s.m {
		h, a := seriesLabels(k)
		want := map[string]float64{"01234567/app": 102, "0123456/7app": 2}[h+"/"+a]
		if got := math.Float64frombits(s.c[i/keyChunk][i%keyChunk]); got != want {
			t.Errorf("series %q %q: %v, want %v", h, a, got, want)
		}
	}
	long := strings.Repeat("a", 300) // a key past add's buffer
	s.add(long, long, 1)
	s.add(long, long, 1)
	for k, i := range s.m {
		if h, a := seriesLabels(k); h == long && a == long {
			if got := math.Float64frombits(s.c[i/keyChunk][i%keyChunk]); got != 2 {
				t.Errorf("long series: %v, want 2", got)
			}
			return
		}
	}
	t.Error("the long series is missing")
}

// Series past the first chunk of counters keep their own.
func TestKeySpendManySeries(t *testing.T) {
	s := newKeySpend("x", "x")
	const n = 3*keyChunk + 7
	for round := range 2 {
		for i := range n {
			s.add(strconv.Itoa(i), "", float64(i+round))
		}
	}
	if len(s.m) != n {
		t.Fatalf("%d series, want %d", len(s.m), n)
	}
	for k, i := range s.m {
		h, _ := seriesLabels(k)
		j, _ := strconv.Atoi(h)
		if got := math.Float64frombits(s.c[i/keyChunk][i%keyChunk]); got != float64(2*j+1) {
			t.Fatalf("series %s: %v, want %v", h, got, 2*j+1)
		}
	}
}
