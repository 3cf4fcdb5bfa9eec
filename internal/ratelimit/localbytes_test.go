package ratelimit

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/memtest"
	"github.com/tollgate/tollgate/internal/store"
)

// admitter is the in-process limiter, new or old (oldlocal_test.go).
type admitter interface {
	Admit(*Ticket) *Denied
	Done(*Ticket, int64)
}

// keyRules are a key's rpm_limit, tpm_limit and max_parallel_requests, as
// the gateway adds them (gateway/limits.go), on a key hash of 64 hex
// digits formatted into a buffer of the request's.
func keyRules(t *Ticket, i int, kinds ...Kind) {
	id := string(fmt.Appendf(make([]byte, 0, 64), "%064x", i))
	sc := Scope{Entity: store.KindKey, ID: id}
	for _, k := range kinds {
		switch k {
		case Requests:
			t.Add(Rule{Scope: sc, Kind: Requests, Limit: 100, Window: time.Minute, Name: "rpm_limit"})
		case Tokens:
			t.Add(Rule{Scope: sc, Kind: Tokens, Limit: 100_000, Window: time.Minute, Name: "tpm_limit"})
		case Parallel:
			t.Add(Rule{Scope: sc, Kind: Parallel, Limit: 10, Name: "max_parallel_requests"})
		case TokenBucket:
			t.Add(Rule{Scope: sc, Kind: TokenBucket, Limit: 1_000, Fill: 100, Window: time.Second, Name: "localRateLimit[0]"})
		}
	}
}

// liveBytesPerKey is the live heap that n keys' first requests (admitted
// and settled, 120 tokens against an estimate of 100) leave in l, per key.
func liveBytesPerKey(t testing.TB, l admitter, n int, kinds ...Kind) float64 {
	warm := new(Ticket)
	keyRules(warm, -1, kinds...)
	l.Admit(warm)
	l.Done(warm, 0)
	before := memtest.LiveHeap()
	for i := range n {
		tk := new(Ticket)
		keyRules(tk, i, kinds...)
		tk.Est = 100
		if d := l.Admit(tk); d != nil {
			t.Fatalf("key %d refused: %v", i, d)
		}
		l.Done(tk, 120)
	}
	after := memtest.LiveHeap()
	runtime.KeepAlive(l)
	return float64(int64(after)-int64(before)) / float64(n)
}

// TestLocalStateBytes bounds what the in-process limiter keeps for a key
// with rpm_limit, tpm_limit and max_parallel_requests after its first
// request (kept until an hour after its last): its three states, their
// map slot and the key's id. It was 4,095 B (1,152 B a state of any
// kind, and a map slot and an id cloned for each); the old one is measured
// alongside for the log.
func TestLocalStateBytes(t *testing.T) {
	const n = 20_000
	three := []Kind{Requests, Tokens, Parallel}
	nw := liveBytesPerKey(t, NewLocal(), n, three...)
	if raceOn {
		// The old limiter and the single rules are measured for the log
		// only: under the race detector (ten times slower, the same
		// sizes) the bound's measurement alone.
		t.Logf("a key with rpm, tpm and parallel limits: %.0f B", nw)
	} else {
		old := liveBytesPerKey(t, newOldLocal(), n, three...)
		t.Logf("a key with rpm, tpm and parallel limits: %.0f B (old %.0f B)", nw, old)
		for _, k := range []Kind{Parallel, Requests, TokenBucket} {
			name := map[Kind]string{Parallel: "parallel", Requests: "rpm", TokenBucket: "token bucket"}[k]
			t.Logf("a key with one %s rule: %.0f B (old %.0f B)", name, liveBytesPerKey(t, NewLocal(), n, k), liveBytesPerKey(t, newOldLocal(), n, k))
		}
	}
	// 96 + 96 + 96 B of states, 416 + 416 of windows, the id's 64 and one
	// map slot (40 B at a load of 7/8 to 7/16: 46 to 91 B).
	if nw > 1_300 {
		t.Fatalf("a key with rpm, tpm and parallel limits keeps %.0f B in the local limiter, want ≤ 1,300", nw)
	}
}

// BenchmarkLocalKeyBytes is a new key's first request (admitted and
// settled) on the local limiter, with rpm, tpm and parallel limits: B/op
// is what it allocates, live-B/key what stays.
func BenchmarkLocalKeyBytes(b *testing.B) { benchKeyBytes(b, NewLocal()) }

// BenchmarkOldLocalKeyBytes is BenchmarkLocalKeyBytes on the old states.
func BenchmarkOldLocalKeyBytes(b *testing.B) { benchKeyBytes(b, newOldLocal()) }

func benchKeyBytes(b *testing.B, l admitter) {
	tks := make([]Ticket, b.N)
	for i := range tks {
		keyRules(&tks[i], i, Requests, Tokens, Parallel)
		tks[i].Est = 100
	}
	before := memtest.LiveHeap()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range tks {
		l.Admit(&tks[i])
		l.Done(&tks[i], 120)
	}
	b.StopTimer()
	after := memtest.LiveHeap()
	runtime.KeepAlive(tks)
	runtime.KeepAlive(l)
	b.ReportMetric(float64(int64(after)-int64(before))/float64(b.N), "live-B/key")
}

// BenchmarkLocalAdmitClocked is BenchmarkAdmitLocal's four rules (rpm, tpm,
// parallel, a token bucket) admitted and settled on a clock that moves 10
// ms a call, so that every run does the same work: 100 calls a sub-window,
// a minute's 61 sub-windows counted. For instruction counts.
func BenchmarkLocalAdmitClocked(b *testing.B) {
	l := NewLocal()
	benchAdmitClocked(b, l, &l.now)
}

// BenchmarkOldLocalAdmitClocked is BenchmarkLocalAdmitClocked on the old states.
func BenchmarkOldLocalAdmitClocked(b *testing.B) {
	l := newOldLocal()
	benchAdmitClocked(b, l, &l.now)
}

func benchAdmitClocked(b *testing.B, l admitter, clock *func() time.Time) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	*clock = func() time.Time { return now }
	sc := Scope{Entity: store.KindKey, ID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	rules := []Rule{
		{Scope: sc, Kind: Requests, Limit: 1 << 40, Window: time.Minute, Name: "rpm_limit"},
		{Scope: sc, Kind: Tokens, Limit: 1 << 40, Window: time.Minute, Name: "tpm_limit"},
		{Scope: sc, Kind: Parallel, Limit: 1 << 20, Name: "max_parallel_requests"},
		{Scope: Scope{"global", ""}, Kind: TokenBucket, Limit: 1 << 40, Fill: 1, Window: time.Minute, Name: "localRateLimit[0]"},
	}
	var tk Ticket
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(10 * time.Millisecond)
		tk.reuse()
		for _, r := range rules {
			tk.Add(r)
		}
		tk.Est = 90
		if d := l.Admit(&tk); d != nil {
			b.Fatal(d)
		}
		l.Done(&tk, 100)
	}
}
