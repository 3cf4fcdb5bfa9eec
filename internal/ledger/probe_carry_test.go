package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeDelayedSettleAfterItsCarry: a settle whose request is delayed
// on its way to Redis (its caller gave up: the outcome is in doubt) runs
// only after a later hold applied it from the doubt list (lease there:
// applied, lease deleted, marker written). The late settle must then not
// add its spend a second time.
func TestProbeDelayedSettleAfterItsCarry(t *testing.T) {
	t.Parallel()
	g := newLostRig(t)
	ctx := context.Background()
	gate := countGate{admit: "{" + g.prefix + "}:gate:admit", done: "{" + g.prefix + "}:gate:done"}
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
	accts := []*ledger.Account{key}
	gated := func() ledger.Hold {
		t.Helper()
		h, decided, err := g.s.ReserveGated(ctx, accts, ledger.AskStrict(ledger.USD(1)), gate)
		if err != nil || !decided {
			t.Fatalf("gated hold: decided %v, %v", decided, err)
		}
		return h
	}
	// Loads the fused scripts and books 0.1.
	if _, ok := ledger.SettleGated(gated(), ledger.USD(0.1), true, gate); !ok {
		t.Fatal("the gated hold was not on Redis")
	}
	h := gated()
	g.p.Stall() // the settle's request is held back in the network
	if _, ok := ledger.SettleGated(h, ledger.USD(0.2), true, gate); !ok {
		t.Fatal("the gated hold was not on Redis")
	}
	g.s.WaitOutcomes() // the settle is in doubt
	for deadline := time.Now().Add(30 * time.Second); !g.r.Degraded() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	g.r.Recover()
	// A later hold (a new connection) applies the settle in doubt.
	h2, err := g.s.Reserve(ctx, accts, 0)
	if err != nil {
		t.Fatal(err)
	}
	h2.Release()
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.3)); got != want {
		t.Fatalf("after the carry: Redis has spent %s, want %s", got, want)
	}
	// The delayed settle reaches Redis now.
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n, _ := g.c.Get(ctx, gate.done).Int(); n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delayed settle never ran")
		}
	}
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.3)); got != want {
		t.Fatalf("Redis has spent %s, want %s: the delayed settle counted again after its carry", got, want)
	}
	if got := g.field("k", "held"); got != "0" {
		t.Fatalf("Redis holds %s after every hold ended, want 0", got)
	}
}

// TestProbeLostSettleIdleAccount: a settle that ran but whose answer was
// lost, on an account that then stays idle (no hold) past the horizon
// while Redis is back, must not be booked a second time as plain spend by
// the account's next hold.
func TestProbeLostSettleIdleAccount(t *testing.T) {
	t.Parallel()
	// The settle's doubt must be resolved (Redis back, the background carry
	// done) before its horizon for the case to be the one under test; a
	// machine too loaded for that in 12 s gets a longer lease each time.
	for ttl := 16 * time.Second; ; ttl *= 2 {
		if lostSettleIdleAccount(t, ttl) || t.Failed() {
			return
		}
		if ttl >= 128*time.Second {
			t.Fatal("the lost settle's doubt was never resolved within its horizon, even with a lease of 128 s")
		}
		t.Logf("resolved after the horizon of a %v lease (a loaded machine); again with a longer one", ttl)
	}
}

// lostSettleIdleAccount runs TestProbeLostSettleIdleAccount's case with a
// lease of ttl; it reports false, concluding nothing, when the doubt was
// resolved only after the horizon.
func lostSettleIdleAccount(t *testing.T, ttl time.Duration) bool {
	t.Helper()
	g := newLostRig(t)
	// Horizon 3/4 ttl: room for the calls lost while Redis does not answer
	// (2 s read timeouts) before it is back.
	g.s.LeaseTTL = ttl
	ctx := context.Background()
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
	g.spend(t, key, ledger.USD(0.1))
	placed := time.Now()
	h, err := g.s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	g.p.DropReplies()
	h.Settle(ledger.USD(0.2))
	g.waitSpent(t, "k", ledger.USD(0.3)) // it ran
	g.back(t, true)
	g.s.WaitResolved()
	if time.Since(placed) >= g.s.LeaseTTL*3/4 {
		return false
	}
	// The account is idle until the lost settle's horizon has passed.
	for time.Since(placed) < g.s.LeaseTTL*3/4+100*time.Millisecond {
		time.Sleep(20 * time.Millisecond)
	}
	g.spend(t, key, 0)
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.3)); got != want {
		t.Fatalf("Redis has spent %s, want %s: the lost settle, which ran, was carried again as spend", got, want)
	}
	if key.Spent() != ledger.USD(0.3) {
		t.Fatalf("local view %v, want 0.3", key.Spent().Dollars())
	}
	return true
}
