package gateway

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/store"
)

// TestTicketBytesForAKeysLimits: a request under a key's rpm_limit,
// tpm_limit and max_parallel_requests (three rules) allocates one ticket
// of at most 512 bytes, sized to its rules; the ticket with room for six
// rules inline was 944 bytes (a 1,024-byte block) whatever the count.
// Heap bytes (runtime.MemStats, collector off) over 1,000 tickets; the
// tickets are kept, as the limiter keeps a ticket it was given. The whole
// of RateLimits.ticket is measured but for the drafts: the pool's New
// hands out drafts allocated before the measurement, so that a draft the
// pool drops (the race detector's sync.Pool drops a share of those put
// back) costs nothing here, and the test runs with -race as without.
func TestTicketBytesForAKeysLimits(t *testing.T) {
	const n = 1000
	spare := make([]*ratelimit.Draft, 0, n+1)
	for range n + 1 {
		spare = append(spare, new(ratelimit.Draft))
	}
	newDraft := drafts.New
	defer func() { drafts.New = newDraft }()
	drafts.New = func() any {
		if len(spare) == 0 {
			return new(ratelimit.Draft) // counted against the ticket: fails the test
		}
		d := spare[len(spare)-1]
		spare = spare[:len(spare)-1]
		return d
	}
	rpm, tpm, par := int64(100), int64(100_000), int64(10)
	p := &auth.Principal{Key: &store.Key{TokenHash: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", KeyName: "sk-...abcd",
		Limits: store.Limits{RPMLimit: &rpm, TPMLimit: &tpm, MaxParallelRequests: &par}}}
	l := &RateLimits{Limiter: ratelimit.New(nil)}
	c := &call{p: p, req: &request{}, model: "m"}
	tg := &provider.Target{D: &config.Deployment{}}
	if tk := l.ticket(c, tg); tk == nil || len(tk.Rules()) != 3 {
		t.Fatalf("a key with three limits made a ticket of %v", tk)
	}
	kept := make([]*ratelimit.Ticket, n)
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range kept {
		kept[i] = l.ticket(c, tg)
	}
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(kept)
	allocs := float64(after.Mallocs-before.Mallocs) / n
	bytes := float64(after.TotalAlloc-before.TotalAlloc) / n
	t.Logf("a ticket of three rules: %.2f allocations, %.0f bytes", allocs, bytes)
	if allocs > 1.01 || bytes > 520 {
		t.Fatalf("a ticket of three rules costs %.2f allocations and %.0f bytes, want 1 and at most 512", allocs, bytes)
	}
}
