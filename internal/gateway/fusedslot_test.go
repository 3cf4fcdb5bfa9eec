package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// malformedAfterGate is a replica's budgets on Redis whose fused hold
// ends as one whose reply was malformed after the gate admitted
// (ledger's TestFusedHoldMalformedAfterTheGateGivesTheSlotBackOnce): the
// real script runs - the ticket's parallel slot taken, the hold placed -
// then the hold is dropped and an error answered, decided, the ticket
// left taken.
type malformedAfterGate struct{ *ledger.Shared }

func (m malformedAfterGate) ReserveGated(ctx context.Context, accts []*ledger.Account, q ledger.Ask, g ledger.Gate) (ledger.Hold, bool, error) {
	h, decided, err := m.Shared.ReserveGated(ctx, accts, q, g)
	if err != nil || !decided {
		return h, decided, err
	}
	h.Release()
	return nil, true, errors.New("redis: budget hold answered [1]")
}

// TestFusedHoldEndingsGiveTheSlotBackOnce: Books.place decides a pending
// rate-limit ticket with its budget hold in one Redis script (real Redis,
// max_parallel_requests 2, another request holding one slot throughout).
// Whatever the ending, the call's ticket is given back as finish gives
// it back (Limits.done), once: a slot the script took is freed, one it
// did not take is not (the other request's slot stays). A hold whose
// reply was malformed after the gate admitted left the ticket taken, and
// place dropped it as if refused: its slot was never given back, and the
// lease renewal kept it for as long as the replica ran.
func TestFusedHoldEndingsGiveTheSlotBackOnce(t *testing.T) {
	u := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if u == "" {
		t.Skip("TOLLGATE_TEST_REDIS_URL is not set: skipping a test of rate limits and budgets on Redis")
	}
	tests := []struct {
		name    string
		budget  float64 // the key's
		limit   int64   // its max_parallel_requests
		garble  bool    // the hold's reply malformed after the gate admitted
		wantErr bool
		kept    bool // the call keeps its ticket (a slot to give back)
	}{
		{"admitted and held", 1, 2, false, false, true},
		{"hold malformed after the gate admitted", 1, 2, true, true, true},
		{"refused by the budget", 0.1, 2, false, true, false},
		{"refused by the rate limit", 1, 1, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := redis.ParseURL(u)
			if err != nil {
				t.Fatal(err)
			}
			c := redis.NewClient(o)
			t.Cleanup(func() { c.Close() })
			ctx := context.Background()
			r := rscript.NewRunner(c, rscript.Options{Log: slog.New(slog.DiscardHandler)})
			if err := r.Start(ctx); err != nil {
				t.Fatal(err)
			}
			prefix := "fusedslot-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			t.Cleanup(func() {
				if keys, _ := c.Keys(ctx, "{"+prefix+"}:*").Result(); len(keys) > 0 {
					c.Del(ctx, keys...)
				}
			})
			sh := ledger.NewShared(r, ledger.SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
			var holder ledger.Holder = sh
			if tt.garble {
				holder = malformedAfterGate{sh}
			}
			rl := &RateLimits{Limiter: ratelimit.New(ratelimit.NewRedis(r, prefix))}
			par := ratelimit.Rule{Scope: ratelimit.Scope{Entity: store.KindKey, ID: "k"}, Kind: ratelimit.Parallel, Limit: tt.limit, Name: "max_parallel_requests"}
			newTicket := func() *ratelimit.Ticket {
				var d ratelimit.Draft
				d.Add(par)
				return d.Ticket()
			}
			other := newTicket()
			if d := rl.Limiter.Admit(ctx, other); d != nil || !other.Shared() {
				t.Fatalf("the other request: %v (shared %v)", d, other.Shared())
			}
			defer rl.Limiter.Done(other, 0)
			set := c.Keys(ctx, "{"+prefix+"}:rl:par*").Val()
			if len(set) != 1 {
				t.Fatalf("parallel sets on Redis: %v, want one", set)
			}
			slots := func() int64 { return c.ZCard(ctx, set[0]).Val() }

			cl := &call{g: &Gateway{opts: Options{Limits: rl}}, w: httptest.NewRecorder(), ticket: newTicket(), pending: true}
			key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(tt.budget))
			h, err := (&Books{}).place(ctx, cl, holder, []*ledger.Account{key}, ledger.AskStrict(ledger.USD(0.5)))
			if (err != nil) != tt.wantErr {
				t.Fatalf("place: %v, want an error: %v", err, tt.wantErr)
			}
			if h != nil {
				h.Release()
			}
			if (cl.ticket != nil) != tt.kept {
				t.Fatalf("the call keeps its ticket: %v, want %v (taken: %v)", cl.ticket != nil, tt.kept, cl.ticket != nil && cl.ticket.Taken())
			}
			if tt.kept && slots() != 2 {
				t.Fatalf("%d slots taken while the call runs, want 2", slots())
			}
			// finish: the ticket given back, once.
			if tk := cl.ticket; tk != nil {
				cl.ticket = nil
				rl.done(tk, 0)
				rl.done(tk, 0)
			}
			deadline := time.Now().Add(time.Minute)
			for slots() != 1 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := slots(); n != 1 {
				t.Fatalf("%d slots after the call, want 1 (the other request's)", n)
			}
		})
	}
}
