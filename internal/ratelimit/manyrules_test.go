package ratelimit

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestTicketOfAnySize: a ticket keeps every rule it is given — 40 here,
// well past its inline storage and past the 16 it once held (and dropped
// silently beyond) — and each of them is decided: for each rule in turn,
// with that rule's limit at 1 and every other's at 100, a second request
// is refused by that rule and no other, on every backend.
func TestTicketOfAnySize(t *testing.T) {
	const n = 40
	kinds := []Kind{Requests, Parallel, RequestBucket}
	rules := func(k int) []Rule {
		rs := make([]Rule, n)
		for i := range rs {
			rs[i] = Rule{Scope: Scope{"key", fmt.Sprintf("t%d-r%d", k, i)}, Kind: kinds[i%len(kinds)], Limit: 100,
				Window: time.Minute, Fill: 1, Name: fmt.Sprintf("rule%d", i)}
		}
		rs[k].Limit = 1
		return rs
	}
	run := func(t *testing.T, b backend) {
		for k := range n {
			rs := rules(k)
			tk := ticket(0, rs...)
			if got := tk.Rules(); len(got) != n || got[n-1] != rs[n-1] || got[k] != rs[k] {
				t.Fatalf("a ticket given %d rules holds %d", n, len(got))
			}
			if d := b.admit(tk); d != nil {
				t.Fatalf("rule %d: first request refused: %v", k, d)
			}
			if len(tk.States) != n {
				t.Fatalf("rule %d: %d states for %d rules", k, len(tk.States), n)
			}
			for i, s := range tk.States {
				if want := int64(99); i == k && s.Remaining != 0 || i != k && s.Remaining != want {
					t.Fatalf("rule %d: rule %d's remaining is %d", k, i, s.Remaining)
				}
			}
			d := b.admit(ticket(0, rs...))
			if d == nil {
				t.Fatalf("rule %d (%s, limit 1) of %d was not enforced: a second request was admitted", k, rs[k].Name, n)
			}
			if d.Rule != rs[k] {
				t.Fatalf("rule %d: refused by %s, want %s", k, d.Rule.Name, rs[k].Name)
			}
		}
	}
	eachBackend(t, run)
	if os.Getenv("TOLLGATE_TEST_REDIS_URL") != "" {
		t.Run("redis", func(t *testing.T) {
			c, prefix := realRedis(t)
			run(t, &realBackend{rd: NewRedis(runner(t, c), prefix)})
		})
	}
}

// realBackend is the real Redis server as a backend (its clock is not
// settable: advance is not supported).
type realBackend struct{ rd *Redis }

func (b *realBackend) admit(t *Ticket) *Denied {
	d, err := b.rd.Admit(context.Background(), t)
	if err != nil {
		panic(err)
	}
	return d
}
func (b *realBackend) done(t *Ticket, tokens int64) {
	if err := b.rd.Done(context.Background(), t, tokens); err != nil {
		panic(err)
	}
}
func (b *realBackend) advance(time.Duration) { panic("realBackend: no settable clock") }
