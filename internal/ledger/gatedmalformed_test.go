package ledger_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/store"
)

// TestFusedHoldMalformedAfterTheGateGivesTheSlotBackOnce runs the fused
// admit+hold script for real (a rate-limit ticket with a parallel slot and
// a budget hold, on Redis) and has its reply rewritten: each ending of a
// ticket whose slot the script took must give the slot back on Redis
// exactly once (that nothing is left renewed is ratelimit's
// TestGateEndingsLeaveNothingRenewed), and one whose slot was not
// taken must give nothing back (the slot another request holds stays).
//
//   - the hold's part malformed after the gate admitted: the slot is
//     taken (and renewed); ReserveGated answers an error, decided, with
//     the ticket still Taken, and Done gives the slot back. (The gateway
//     dropped such a ticket, taking it for a refusal: its slot was never
//     given back and was renewed for as long as the replica ran.)
//   - the gate's part malformed though the script took it: given back by
//     Admitted, the ticket not Taken.
//   - a gate refusal whose gate part reads as an admission: an error, not
//     a nil hold with a nil error.
func TestFusedHoldMalformedAfterTheGateGivesTheSlotBackOnce(t *testing.T) {
	tests := []struct {
		name    string
		rewrite func(v []any) any
		taken   bool // the ticket is left Taken (its giving back is Done's)
	}{
		{"hold part malformed", func(v []any) any { return []any{int64(1), v[1], []any{int64(1)}} }, true},
		{"hold part a refusal", func(v []any) any {
			return []any{int64(1), v[1], []any{int64(0), int64(1), int64(0), int64(0), int64(1)}}
		}, true},
		{"gate part malformed", func(v []any) any { return []any{int64(1), []any{int64(1)}, v[2]} }, false},
		{"gate refusal reading as an admission", func(v []any) any { return []any{int64(2), v[1]} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, prefix := realRedis(t)
			ctx := context.Background()
			s := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
			rd := ratelimit.NewRedis(runner(t, c), prefix)
			lim := ratelimit.New(rd)
			par := ratelimit.Rule{Scope: ratelimit.Scope{Entity: store.KindKey, ID: "k"}, Kind: ratelimit.Parallel, Limit: 2, Name: "max_parallel_requests"}
			newTicket := func() *ratelimit.Ticket {
				var d ratelimit.Draft
				d.Add(par)
				return d.Ticket()
			}
			var set string
			members := func() int64 { return c.ZCard(ctx, set).Val() }
			// Another request holds a slot throughout: it must stay.
			other := newTicket()
			if d := lim.Admit(ctx, other); d != nil || !other.Shared() {
				t.Fatalf("the other request: %v (shared %v)", d, other.Shared())
			}
			defer lim.Done(other, 0)
			if sets := c.Keys(ctx, "{"+prefix+"}:rl:par*").Val(); len(sets) != 1 {
				t.Fatalf("parallel sets on Redis: %v, want one", sets)
			} else {
				set = sets[0]
			}
			if n := members(); n != 1 {
				t.Fatalf("%d slots in %s, want the other's", n, set)
			}
			key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
			s.SetFusedReply(func(v any, err error) (any, error) {
				if arr, ok := v.([]any); ok && err == nil && len(arr) == 3 {
					return tt.rewrite(arr), nil
				}
				return v, err
			})
			tk := newTicket()
			g := lim.Gate(tk)
			if g == nil {
				t.Fatal("no gate")
			}
			h, decided, err := s.ReserveGated(ctx, []*ledger.Account{key}, ledger.AskStrict(ledger.USD(0.5)), g)
			if h != nil || err == nil || !decided {
				t.Fatalf("ReserveGated: hold %v, decided %v, err %v; want no hold, decided, an error", h, decided, err)
			}
			var d *ratelimit.Denied
			if errors.As(err, &d) {
				t.Fatalf("a malformed reply read as a rate-limit refusal: %v", err)
			}
			if tk.Taken() != tt.taken {
				t.Fatalf("the ticket is Taken: %v, want %v", tk.Taken(), tt.taken)
			}
			if tt.taken {
				if n := members(); n != 2 {
					t.Fatalf("%d slots before Done, want 2 (the other's and this one's)", n)
				}
				lim.Done(tk, 0) // as the gateway's finish does
				lim.Done(tk, 0) // a second call gives nothing back
			}
			// Its slot goes; the other's stays.
			deadline := time.Now().Add(time.Minute)
			for members() != 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if z := c.ZRange(ctx, set, 0, -1).Val(); len(z) != 1 {
				t.Fatalf("slots a minute on: %v, want the other request's alone", z)
			}
		})
	}
}
