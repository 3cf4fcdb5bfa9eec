package ledger_test

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// lostRig is a replica whose Redis (the real one of TOLLGATE_TEST_REDIS_URL)
// is reached through a proxy that can lose a call: BlackHole (Redis never
// sees it) or DropReplies (Redis runs it, its answer is lost). c reads
// Redis directly.
type lostRig struct {
	c      *redis.Client
	p      *netsim.Proxy
	r      *rscript.Runner
	s      *ledger.Shared
	prefix string
}

func newLostRig(t *testing.T) *lostRig {
	t.Helper()
	// A call Redis does not answer fails at the socket's read timeout, the
	// hold's own deadline being longer: the outcome is not known (it may
	// have run), which is the case under test. Calls that are answered do
	// not depend on either.
	return newLostRigWith(t, 2*time.Second, time.Minute)
}

// newLostRigWith is newLostRig with the socket's read timeout and the
// hold's deadline given.
func newLostRigWith(t *testing.T, readTimeout, holdTimeout time.Duration) *lostRig {
	t.Helper()
	c, prefix := realRedis(t)
	o, err := redis.ParseURL(os.Getenv("TOLLGATE_TEST_REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := netsim.NewProxy(o.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Cut)
	o.Addr = p.Addr()
	o.ReadTimeout, o.MaxRetries = readTimeout, -1
	pc := redis.NewClient(o)
	t.Cleanup(func() { pc.Close() })
	r := runner(t, pc)
	s := ledger.NewShared(r, ledger.SharedOptions{Prefix: prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: holdTimeout})
	return &lostRig{c: c, p: p, r: r, s: s, prefix: prefix}
}

// field is a field of account k's hash on Redis ("" when absent).
func (g *lostRig) field(k, f string) string {
	v, _ := g.c.HGet(context.Background(), "{"+g.prefix+"}:bud:key:"+k, f).Result()
	return v
}

// waitSpent waits (generously) until Redis has spent want on k.
func (g *lostRig) waitSpent(t *testing.T, k string, want ledger.Amount) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if g.field(k, "spent") == usdString(want) {
			return
		}
	}
	t.Fatalf("Redis never had spent %s on %s (it has %s): the lost call did not run", usdString(want), k, g.field(k, "spent"))
}

// back brings Redis back once the lost call's outcome is booked; with
// degraded, the call's failure must first have marked Redis down (its
// check ping unanswered), so that nothing marks it down after.
func (g *lostRig) back(t *testing.T, degraded bool) {
	t.Helper()
	g.s.WaitOutcomes()
	for deadline := time.Now().Add(30 * time.Second); degraded && !g.r.Degraded() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if degraded && !g.r.Degraded() {
		t.Fatal("the lost call never marked Redis down")
	}
	if err := g.p.Restore(); err != nil {
		t.Fatal(err)
	}
	g.r.Recover()
}

// spend holds and settles actual on Redis.
func (g *lostRig) spend(t *testing.T, key *ledger.Account, actual ledger.Amount) {
	t.Helper()
	h, err := g.s.Reserve(context.Background(), []*ledger.Account{key}, ledger.USD(1))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(actual)
}

func usdString(a ledger.Amount) string { return strconv.FormatInt(int64(a), 10) }

// loseWays are the two ways a call's answer is lost: Redis never ran it,
// or ran it and the reply did not come back. The replica cannot tell them
// apart.
var loseWays = []struct {
	name string
	ran  bool
	lose func(*netsim.Proxy)
}{
	{"never ran", false, (*netsim.Proxy).BlackHole},
	{"ran, answer lost", true, (*netsim.Proxy).DropReplies},
}

// TestLostHoldCarriesOfflineSpendOnce: spend booked while Redis was away
// goes with the next hold; when that hold's answer is lost, Redis ends up
// with the spend once, whether the hold ran there or not.
func TestLostHoldCarriesOfflineSpendOnce(t *testing.T) {
	t.Parallel()
	for _, tt := range loseWays {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newLostRig(t)
			ctx := context.Background()
			key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
			g.spend(t, key, ledger.USD(0.1))
			spendOffline(t, g.s, g.r, key, ledger.USD(0.3))
			tt.lose(g.p)
			if h, err := g.s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.01)); err == nil {
				h.Release() // the fallback's hold (this replica's share)
			}
			if tt.ran {
				g.waitSpent(t, "k", ledger.USD(0.4))
			}
			// Checked before Redis is back: from then on the background
			// carry may take the doubt there at any moment.
			g.s.WaitOutcomes()
			if !tt.ran && g.field("k", "spent") != usdString(ledger.USD(0.1)) {
				t.Fatalf("Redis has spent %s before it came back: the lost hold ran", g.field("k", "spent"))
			}
			g.back(t, true)
			g.spend(t, key, 0)
			if got, want := g.field("k", "spent"), usdString(ledger.USD(0.4)); got != want {
				t.Fatalf("Redis has spent %s, want %s (0.1 on Redis, 0.3 offline, once)", got, want)
			}
			if key.Spent() != ledger.USD(0.4) {
				t.Fatalf("local view %v, want 0.4", key.Spent().Dollars())
			}
			g.spend(t, key, 0)
			if got, want := g.field("k", "spent"), usdString(ledger.USD(0.4)); got != want {
				t.Fatalf("a later hold: Redis has spent %s, want %s", got, want)
			}
		})
	}
}

// TestLostSettleCountsOnce: a settle whose answer is lost is booked on
// Redis once, whether it ran there or not, and its hold is freed.
func TestLostSettleCountsOnce(t *testing.T) {
	t.Parallel()
	for _, tt := range loseWays {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newLostRig(t)
			ctx := context.Background()
			key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
			g.spend(t, key, ledger.USD(0.1))
			h, err := g.s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.5))
			if err != nil {
				t.Fatal(err)
			}
			tt.lose(g.p)
			h.Settle(ledger.USD(0.2))
			if tt.ran {
				g.waitSpent(t, "k", ledger.USD(0.3))
			}
			// Checked before Redis is back (see above).
			g.s.WaitOutcomes()
			if !tt.ran && g.field("k", "spent") != usdString(ledger.USD(0.1)) {
				t.Fatalf("Redis has spent %s before it came back: the lost settle ran", g.field("k", "spent"))
			}
			g.back(t, true)
			g.spend(t, key, 0)
			if got, want := g.field("k", "spent"), usdString(ledger.USD(0.3)); got != want {
				t.Fatalf("Redis has spent %s, want %s (0.1, then the lost settle's 0.2 once)", got, want)
			}
			if got := g.field("k", "held"); got != "0" {
				t.Fatalf("Redis holds %s after every hold ended, want 0 (the lost settle's lease freed)", got)
			}
			if key.Spent() != ledger.USD(0.3) {
				t.Fatalf("local view %v, want 0.3", key.Spent().Dollars())
			}
		})
	}
}

// countGate is a Gate that counts its admissions and settlements on Redis.
type countGate struct{ admit, done string }

const countGateLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function gate_admit(k, a) return {1}, function() redis.call('INCR', k[1]) end end
local function gate_done(k, a) redis.call('INCR', k[1]) end
`

func (g countGate) GateLua() string                       { return countGateLua }
func (g countGate) AdmitCall() ([]string, []any)          { return []string{g.admit}, nil }
func (g countGate) Admitted(_ []int64, _ bool) error      { return nil }
func (g countGate) Lost()                                 {}
func (g countGate) DoneCall() (keys []string, args []any) { return []string{g.done}, nil }
func (g countGate) Settled(error)                         {}

// TestLostGatedHoldAndSettle: the fused path (a rate-limit gate in the
// same script as the hold and the settle) carries offline spend and a
// lost settle's spend once, as the budgets' own scripts do.
func TestLostGatedHoldAndSettle(t *testing.T) {
	t.Parallel()
	g := newLostRig(t)
	ctx := context.Background()
	gate := countGate{admit: "{" + g.prefix + "}:gate:admit", done: "{" + g.prefix + "}:gate:done"}
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
	accts := []*ledger.Account{key}
	gated := func(actual ledger.Amount) {
		t.Helper()
		h, decided, err := g.s.ReserveGated(ctx, accts, ledger.AskStrict(ledger.USD(1)), gate)
		if err != nil || !decided {
			t.Fatalf("gated hold: decided %v, %v", decided, err)
		}
		if _, ok := ledger.SettleGated(h, actual, true, gate); !ok {
			t.Fatal("the gated hold was not on Redis")
		}
	}
	gated(ledger.USD(0.1))
	spendOffline(t, g.s, g.r, key, ledger.USD(0.3))
	g.p.BlackHole()
	if h, decided, err := g.s.ReserveGated(ctx, accts, ledger.AskStrict(ledger.USD(0.01)), gate); decided {
		t.Fatalf("a gated hold Redis never answered was decided (%v)", err)
	} else if err == nil {
		h.Release()
	}
	g.back(t, true)
	h, decided, err := g.s.ReserveGated(ctx, accts, ledger.AskStrict(ledger.USD(1)), gate)
	if err != nil || !decided {
		t.Fatalf("gated hold: decided %v, %v", decided, err)
	}
	g.p.BlackHole()
	if _, ok := ledger.SettleGated(h, ledger.USD(0.2), true, gate); !ok {
		t.Fatal("the gated hold was not on Redis")
	}
	g.back(t, true)
	gated(0)
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.6)); got != want {
		t.Fatalf("Redis has spent %s, want %s (0.1, 0.3 offline, the lost settle's 0.2, each once)", got, want)
	}
	if got := g.field("k", "held"); got != "0" {
		t.Fatalf("Redis holds %s after every hold ended, want 0", got)
	}
	if n, _ := g.c.Get(ctx, gate.done).Int(); n != 2 {
		t.Fatalf("the gate was settled %d times on Redis, want 2 (the lost settle never ran)", n)
	}
}

// TestLostCarryOffline: CarryOffline's carry whose answer is lost leaves
// Redis with the offline spend once, whether it ran there or not.
func TestLostCarryOffline(t *testing.T) {
	t.Parallel()
	for _, tt := range loseWays {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newLostRig(t)
			ctx := context.Background()
			book := ledger.NewBook(nil)
			budget := 10.0
			key := book.Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
			g.spend(t, key, ledger.USD(0.1))
			// A first carry, answered, loads the script: one that is not
			// loaded is never sent while Redis does not answer (NotRun).
			spendOffline(t, g.s, g.r, key, ledger.USD(0.05))
			if failed := g.s.CarryOffline(ctx, book); failed != 0 {
				t.Fatalf("%d accounts not carried", failed)
			}
			spendOffline(t, g.s, g.r, key, ledger.USD(0.3))
			tt.lose(g.p)
			if failed := g.s.CarryOffline(ctx, book); failed != 1 {
				t.Fatalf("%d accounts not carried, want 1 (the carry's answer was lost)", failed)
			}
			if tt.ran {
				g.waitSpent(t, "k", ledger.USD(0.45))
			}
			g.back(t, false)
			for range 2 { // twice: the second carries nothing more
				if failed := g.s.CarryOffline(ctx, book); failed != 0 {
					t.Fatalf("%d accounts not carried", failed)
				}
			}
			if got, want := g.field("k", "spent"), usdString(ledger.USD(0.45)); got != want {
				t.Fatalf("Redis has spent %s, want %s (0.1 on Redis, 0.05 and 0.3 offline, once)", got, want)
			}
		})
	}
}

// TestLostSettleAfterLeaseSwept: a settle that lost its answer without
// running, while this replica stays away from Redis until its hold's lease
// has expired and been swept (another replica's hold sweeps it), is still
// booked on Redis: past the horizon it goes as tagged spend, not as a
// settle that only applies while its lease is there.
func TestLostSettleAfterLeaseSwept(t *testing.T) {
	t.Parallel()
	g := newLostRig(t)
	g.s.LeaseTTL = 3 * time.Second
	ctx := context.Background()
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
	g.spend(t, key, ledger.USD(0.1))
	h, err := g.s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	g.p.BlackHole()
	h.Settle(ledger.USD(0.2))
	// Replica B, on Redis, holds until the lost settle's lease is swept;
	// this replica is still cut off (else it takes the settle in doubt to
	// Redis at once, lease there).
	b := ledger.NewShared(runner(t, g.c), ledger.SharedOptions{Prefix: g.prefix, Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	keyB := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
	for deadline := time.Now().Add(60 * time.Second); g.field("k", "held") != "0"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the lost settle's lease was never swept (held %s)", g.field("k", "held"))
		}
		hb, err := b.Reserve(ctx, []*ledger.Account{keyB}, 0)
		if err != nil {
			t.Fatal(err)
		}
		hb.Release()
	}
	if got := g.field("k", "spent"); got != usdString(ledger.USD(0.1)) {
		t.Fatalf("Redis has spent %s before this replica's next hold, want 0.1 (the settle never ran)", got)
	}
	g.back(t, true)
	g.spend(t, key, 0)
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.3)); got != want {
		t.Fatalf("Redis has spent %s, want %s (0.1, then the lost settle's 0.2)", got, want)
	}
	if key.Spent() != ledger.USD(0.3) {
		t.Fatalf("local view %v, want 0.3", key.Spent().Dollars())
	}
}

// TestCarryOfflineWaitsForLostOutcome: a replica stopping while a hold that
// carried offline spend has lost its answer (abandoned at the hold's
// deadline, its outcome not known until its connection fails: here when
// Restore closes the connection the black hole held) still
// leaves Redis with that spend: CarryOffline waits for the outcome and
// carries the item it leaves in doubt. Before, it found nothing to carry
// (the spend sat in carrying, neither unsynced nor in doubt yet) and Redis
// stayed short of it until the account's next reseed.
func TestCarryOfflineWaitsForLostOutcome(t *testing.T) {
	// The hold gives up long before the socket does: its call is abandoned
	// and its outcome stays unknown until the connection fails.
	g := newLostRigWith(t, 3*time.Second, 200*time.Millisecond)
	s, r, p := g.s, g.r, g.p

	book := ledger.NewBook(nil)
	budget := 10.0
	key := book.Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	g.spend(t, key, ledger.USD(0.1))
	spendOffline(t, s, r, key, ledger.USD(0.3))
	p.BlackHole()
	if h, err := s.Reserve(context.Background(), []*ledger.Account{key}, ledger.USD(0.01)); err == nil {
		h.Release() // the fallback's hold
	}
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	r.Recover()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if failed := s.CarryOffline(ctx, book); failed != 0 {
		t.Fatalf("%d accounts not carried", failed)
	}
	if got, want := g.field("k", "spent"), usdString(ledger.USD(0.4)); got != want {
		t.Fatalf("Redis has spent %s once CarryOffline returned, want %s (0.1 on Redis, 0.3 carried by the lost hold)", got, want)
	}
	s.WaitOutcomes()
}

// carriedKey is a book with a budgeted key "k" with 0.10 spent through a hold and 0.01
// carried by CarryUnheld (which loads the carry script): Redis has 0.11.
// The tests of carries under a lost, stalled or slow Redis start from it.
func (g *lostRig) carriedKey(t *testing.T) (*ledger.Book, []*ledger.Account) {
	t.Helper()
	book := ledger.NewBook(nil)
	budget := 10.0
	key := book.Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	accts := []*ledger.Account{key}
	g.spend(t, key, ledger.USD(0.1))
	ledger.Spend(accts, ledger.USD(0.01)) // loads the carry script
	g.s.CarryUnheld(accts)
	g.s.WaitResolved()
	g.waitSpent(t, "k", ledger.USD(0.11))
	return book, accts
}
