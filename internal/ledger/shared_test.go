package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
)

// TestSharedHolds: two replicas' books share one budget on Redis; a hold a
// dead replica left expires; a period reset and an operator edit reseed it.
func TestSharedHolds(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	a := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	b := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	a.LeaseTTL = time.Minute
	keyA := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	keyB := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1)) // replica B's view
	team := ledger.NewAccount(store.KindTeam, "t", 0, ledger.Unlimited)

	h1, err := a.Reserve(ctx, []*ledger.Account{team, keyA}, ledger.USD(0.6))
	if err != nil {
		t.Fatal(err)
	}
	var ex *ledger.ExceededError
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.6)); !errors.As(err, &ex) || ex.Reserved != ledger.USD(0.6) {
		t.Fatalf("replica B ignored A's hold: %v", err)
	}
	h1.Settle(ledger.USD(0.5))
	if keyA.Spent() != ledger.USD(0.5) || team.Spent() != ledger.USD(0.5) {
		t.Fatalf("local mirror: key %v team %v", keyA.Spent(), team.Spent())
	}
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.6)); err == nil {
		t.Fatal("0.5 spent + 0.6 fitted a budget of 1")
	}
	h2, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.4))
	if err != nil {
		t.Fatal(err)
	}
	_ = h2 // replica B dies holding 0.4
	if _, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.2)); err == nil {
		t.Fatal("the dead replica's hold was not counted")
	}
	m.SetTime(time.Now().Add(16 * time.Minute)) // B's lease (15 min) expires
	h3, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.2))
	if err != nil {
		t.Fatalf("an expired hold still blocks: %v", err)
	}
	h3.Release()

	if err := a.ResetPeriod(ctx, store.KindKey, "k", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.9)); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
}

// TestSharedCatchesUpAndTakesEdits: spend booked while Redis was away
// reaches Redis with the next hold, and an operator's spend edit applies on
// every replica.
func TestSharedCatchesUpAndTakesEdits(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	ra := runner(t, c)
	a := ledger.NewShared(ra, ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	b := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	keyA := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	keyB := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))

	h, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.5))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.5))
	ra.Degrade(errAway)
	h, err = a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.4))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.4)) // booked in process only
	ra.Recover()
	if h, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.05)); err != nil {
		t.Fatalf("0.9 spent, 0.05 more: %v", err)
	} else {
		h.Release()
	}
	// Redis now has 0.9: replica B must refuse 0.4.
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.4)); err == nil {
		t.Fatal("the spend booked while Redis was away never reached it")
	}
	// An operator resets the spend on A; B's next hold sees it.
	if err := a.SetSpent(ctx, store.KindKey, "k", 0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.9)); err != nil {
		t.Fatalf("after the edit: %v", err)
	}
}

// runner runs scripts on c as the server does.
func runner(tb testing.TB, c *redis.Client) *rscript.Runner {
	r := rscript.NewRunner(c, rscript.Options{Log: slog.New(slog.DiscardHandler)})
	if err := r.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return r
}

// errAway is what a test tells a runner when it takes Redis for down.
var errAway = errors.New("test: redis taken for away")

// TestSharedHungRedis: against a Redis that accepts and never answers, a
// hold falls back to the replica's own ledger at its deadline, reports the
// failure, and later holds do not ask Redis again while it is known down.
// The fake counts connections and bytes: a hold that asked it would have
// sent a command (and waited on it until its deadline).
func TestSharedHungRedis(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns, got atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { _, _ = io.Copy(counter{&got}, c); c.Close() }()
		}
	}()
	r := runner(t, redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1}))
	r.Recover() // as if it had answered the first ping: the first hold asks it
	s := ledger.NewShared(r, ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	// The account was heard of before Redis hung (all of it remained, one
	// replica alive): a replica that never heard anything spends nothing
	// without Redis (TestProbeCutBeforeHeard).
	m := miniredis.RunT(t)
	before := ledger.NewShared(runner(t, redis.NewClient(&redis.Options{Addr: m.Addr()})), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	if h, err := before.Reserve(context.Background(), []*ledger.Account{key}, 0); err != nil {
		t.Fatal(err)
	} else {
		h.Release()
	}
	// The first hold waits for its deadline, then falls back; one that
	// waited on the hung Redis itself would never return (the bound is
	// only there to report it, generous for a loaded machine).
	type reserved struct {
		h   ledger.Hold
		err error
	}
	first := make(chan reserved, 1)
	go func() {
		h, err := s.Reserve(context.Background(), []*ledger.Account{key}, ledger.USD(0.5))
		first <- reserved{h, err}
	}()
	var h ledger.Hold
	select {
	case res := <-first:
		if res.err != nil {
			t.Fatal(res.err)
		}
		h = res.h
	case <-time.After(60 * time.Second):
		t.Fatal("the first hold is still waiting on a hung Redis after 60 s")
	}
	// A missed deadline is confirmed by a ping (slow is not dead); the
	// ping goes unanswered too, and Redis is taken for down.
	for deadline := time.Now().Add(30 * time.Second); !r.Degraded() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !r.Degraded() {
		t.Fatal("the failure was not reported")
	}
	if got.Load() == 0 {
		t.Fatal("the fake Redis received nothing: the first hold did not ask it")
	}
	h.Settle(ledger.USD(0.25))
	// The commands sent so far (the hold's, the ping) were written long
	// before the ping's deadline made Redis known down: what arrives from
	// here is the next hold's.
	connsBefore, bytesBefore := conns.Load(), got.Load()
	if _, err := s.Reserve(context.Background(), []*ledger.Account{key}, ledger.USD(0.5)); err != nil {
		t.Fatal(err)
	}
	if c, b := conns.Load(), got.Load(); c != connsBefore || b != bytesBefore {
		t.Fatalf("a hold while Redis is known down asked it: %d new connections, %d bytes sent", c-connsBefore, b-bytesBefore)
	}
	if key.Spent() != ledger.USD(0.25) {
		t.Fatalf("local spend %v, want 0.25", key.Spent())
	}
}

// counter is an io.Writer that counts what it is given.
type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

// TestSharedCarriesOfflineSpendOnce: spend booked while Redis was away
// reaches Redis once, however many holds start together when it is back.
func TestSharedCarriesOfflineSpendOnce(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	r := runner(t, redis.NewClient(&redis.Options{Addr: m.Addr()}))
	s := ledger.NewShared(r, ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(100))
	// Redis sees the account, then goes away while 0.5 is spent.
	h, err := s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.1))
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	spendOffline(t, s, r, key, ledger.USD(0.5))
	holdTogether(t, s, key, 20)
	if got := m.HGet("{t}:bud:key:k", "spent"); got != strconv.FormatInt(int64(ledger.USD(0.5)), 10) {
		t.Fatalf("Redis has spent %s, want %d (the offline 0.5, once)", got, int64(ledger.USD(0.5)))
	}
}

// TestSharedSurvivesRedisLosingState: Redis forgetting an account (a
// restart without persistence, a flush) or learning of it from a period
// reset or an operator edit first never breaks holds, loses spend or
// counts it twice.
func TestSharedSurvivesRedisLosingState(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	r := runner(t, redis.NewClient(&redis.Options{Addr: m.Addr()}))
	s := ledger.NewShared(r, ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	spent := func() string { return m.HGet("{t}:bud:key:k", "spent") }
	usd := func(d float64) string { return strconv.FormatInt(int64(ledger.USD(d)), 10) }

	// A period reset reaches Redis before any hold: the hash has no "held".
	next := time.Now().Add(time.Hour).Truncate(time.Second)
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(10))
	key.SetResetAt(next)
	if err := s.ResetPeriod(ctx, store.KindKey, "k", next); err != nil {
		t.Fatal(err)
	}
	h, err := s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(1))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(5))
	if spent() != usd(5) || r.Degraded() {
		t.Fatalf("after a reset-first hold: Redis spent %s, taken for down %v", spent(), r.Degraded())
	}

	// Redis loses everything while a hold is in flight: the settle does
	// not recreate the account from its own amount, and the next hold
	// reseeds it with all the spend.
	h, err = s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(1))
	if err != nil {
		t.Fatal(err)
	}
	m.FlushAll()
	h.Settle(ledger.USD(0.1))
	if key.Spent() != ledger.USD(5.1) {
		t.Fatalf("local view after the flush: %v, want 5.1", key.Spent().Dollars())
	}
	if _, err := s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(9)); err == nil {
		t.Fatal("a $9 hold was admitted on a $10 budget with $5.1 spent")
	}
	if spent() != usd(5.1) {
		t.Fatalf("Redis reseeded to %s, want %s", spent(), usd(5.1))
	}

	// An operator's edit written to Redis first works the same way.
	m.FlushAll()
	if err := s.SetSpent(ctx, store.KindKey, "k", ledger.USD(2), time.Time{}); err != nil {
		t.Fatal(err)
	}
	key.SetSpent(ledger.USD(2))
	h, err = s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(1))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(1))
	if spent() != usd(3) || r.Degraded() {
		t.Fatalf("after an edit-first hold: Redis spent %s, taken for down %v", spent(), r.Degraded())
	}
}

// TestSharedReseedWithOfflineSpend: when Redis has lost an account and
// several holds start together with spend booked offline, the one that
// reseeds and the one that carries the offline spend count it once.
func TestSharedReseedWithOfflineSpend(t *testing.T) {
	m := miniredis.RunT(t)
	r := runner(t, redis.NewClient(&redis.Options{Addr: m.Addr()}))
	// A hold that missed the default 500 ms deadline (a loaded machine)
	// would fall back and carry the offline spend later, not with these
	// holds: the test must not depend on a deadline, so it waits as long
	// as Redis takes.
	s := ledger.NewShared(r, ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	if _, err := s.Heartbeat(context.Background()); err != nil { // a replica that started with Redis up
		t.Fatal(err)
	}
	for trial := range 20 {
		m.FlushAll()
		key := ledger.NewAccount(store.KindKey, "k", ledger.USD(1), ledger.USD(100))
		spendOffline(t, s, r, key, ledger.USD(0.5))
		holdTogether(t, s, key, 30)
		if got, want := m.HGet("{t}:bud:key:k", "spent"), strconv.FormatInt(int64(ledger.USD(1.5)), 10); got != want {
			t.Fatalf("trial %d: Redis spent %s, want %s", trial, got, want)
		}
		if key.Spent() != ledger.USD(1.5) {
			t.Fatalf("trial %d: local view %v, want 1.5", trial, key.Spent().Dollars())
		}
	}
}

// spendOffline books spend on key while s's runner r takes Redis for down.
func spendOffline(t *testing.T, s *ledger.Shared, r *rscript.Runner, key *ledger.Account, spend ledger.Amount) {
	t.Helper()
	r.Degrade(errAway)
	defer r.Recover()
	h, err := s.Reserve(context.Background(), []*ledger.Account{key}, spend*2)
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(spend)
}

// holdTogether starts n small holds on key at once and settles them at 0.
func holdTogether(t *testing.T, s *ledger.Shared, key *ledger.Account, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := s.Reserve(context.Background(), []*ledger.Account{key}, ledger.USD(0.01))
			if err != nil {
				t.Error(err)
				return
			}
			h.Settle(0)
		}()
	}
	wg.Wait()
}

// TestSharedShareWhileCutOff: two replicas announce themselves; one that
// loses Redis may hold on a budget only its share of what remained when it
// last heard (remaining / replicas alive), minus what it spent or holds
// since; strict mode and fail-closed refuse budgeted holds at once and
// serve unbudgeted ones; back on Redis the offline spend lands once.
func TestSharedShareWhileCutOff(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	ra := runner(t, c)
	a := ledger.NewShared(ra, ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	b := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler)})
	for _, s := range []*ledger.Shared{a, b} {
		if n, err := s.Heartbeat(ctx); err != nil || n < 1 {
			t.Fatal(n, err)
		}
	}
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	h, err := a.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.2))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.2))
	if rem, alive := key.LastHeard(); rem != ledger.USD(0.8) || alive != 2 {
		t.Fatalf("last heard %v remaining, %d alive; want 0.8, 2", rem.Dollars(), alive)
	}
	// Replica B holds 0.2 after A last heard; A is then cut off.
	if _, err := b.Reserve(ctx, []*ledger.Account{ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))}, ledger.USD(0.2)); err != nil {
		t.Fatal(err)
	}
	ra.Degrade(errAway)
	tests := []struct {
		name   string
		amount float64
		admit  bool
	}{
		{"within the share", 0.3, true},
		{"past the share (0.3 + 0.2 > 0.8/2)", 0.2, false},
		{"the share's rest", 0.1, true},
		{"nothing left of the share", 0.01, false},
	}
	var holds []ledger.Hold
	for _, tt := range tests {
		h, err := a.Reserve(ctx, []*ledger.Account{key}, ledger.USD(tt.amount))
		var un *ledger.UnavailableError
		switch {
		case tt.admit && err != nil:
			t.Fatalf("%s: refused: %v", tt.name, err)
		case !tt.admit && !errors.As(err, &un):
			t.Fatalf("%s: want a 503-kind refusal, got %v", tt.name, err)
		case tt.admit:
			holds = append(holds, h)
		}
	}
	for _, h := range holds {
		h.Settle(ledger.USD(0.2)) // 0.4 in all, booked offline
	}

	modes := []struct {
		name string
		opts ledger.SharedOptions
	}{
		{"strict", ledger.SharedOptions{Mode: func([]*ledger.Account) ledger.Enforcement { return ledger.EnforceStrict }}},
		{"fail-closed", ledger.SharedOptions{FailClosed: true}},
	}
	for _, tt := range modes {
		rs := runner(t, c)
		rs.Degrade(errAway)
		tt.opts.Prefix, tt.opts.Log = "t", slog.New(slog.DiscardHandler)
		s := ledger.NewShared(rs, tt.opts)
		m.Close() // Redis is really away: a strict hold asks it, and is refused
		other := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
		var un *ledger.UnavailableError
		if _, err := s.Reserve(ctx, []*ledger.Account{other}, ledger.USD(0.01)); !errors.As(err, &un) {
			t.Fatalf("%s: a budgeted hold without Redis: %v", tt.name, err)
		}
		free := ledger.NewAccount(store.KindKey, "free", 0, ledger.Unlimited)
		if _, err := s.Reserve(ctx, []*ledger.Account{free}, ledger.USD(0.01)); err != nil {
			t.Fatalf("%s: an unbudgeted hold without Redis: %v", tt.name, err)
		}
		if err := m.Restart(); err != nil {
			t.Fatal(err)
		}
	}

	ra.Recover()
	h, err = a.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.01))
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if got, want := m.HGet("{t}:bud:key:k", "spent"), strconv.FormatInt(int64(ledger.USD(0.6)), 10); got != want {
		t.Fatalf("Redis spent %s after the cut, want %s (0.2 + the offline 0.4, once)", got, want)
	}
}

// TestCarryOfflineOnStop: spend a replica booked while Redis was away, on
// an account no later hold touched, reaches Redis when the replica stops
// (CarryOffline), once; an account Redis does not have is left to be
// seeded from the store.
func TestCarryOfflineOnStop(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	r := runner(t, c)
	s := ledger.NewShared(r, ledger.SharedOptions{Prefix: "carry", Log: slog.New(slog.DiscardHandler)})
	if _, err := s.Heartbeat(context.Background()); err != nil { // a replica that started with Redis up
		t.Fatal(err)
	}
	book := ledger.NewBook(nil)
	budget := 1.0
	key := book.Account(store.KindKey, "k", ledger.Spec{Budget: &budget})
	h, err := s.Reserve(context.Background(), []*ledger.Account{key}, ledger.USD(0.1))
	if err != nil {
		t.Fatal(err)
	}
	h.Settle(ledger.USD(0.1)) // Redis has the account: spent 0.1
	spendOffline(t, s, r, key, ledger.USD(0.3))
	fresh := book.Account(store.KindUser, "u", ledger.Spec{Budget: &budget}) // never on Redis
	spendOffline(t, s, r, fresh, ledger.USD(0.2))

	for range 2 { // twice: the second carries nothing more
		if failed := s.CarryOffline(context.Background(), book); failed != 0 {
			t.Fatalf("%d accounts not carried", failed)
		}
	}
	if got := m.HGet("{carry}:bud:key:k", "spent"); got != strconv.FormatInt(int64(ledger.USD(0.4)), 10) {
		t.Fatalf("redis spent %s, want 0.4 (0.1 held and settled, 0.3 offline)", got)
	}
	if m.Exists("{carry}:bud:user:u") {
		t.Fatal("an account redis never had was created by the carry (its next hold seeds it from the store)")
	}
}

// BenchmarkSharedHoldSettle: one request's budget phases on a real Redis
// (TOLLGATE_TEST_REDIS_URL): a hold on a key and its user, settled. With
// `redis-cli INFO commandstats` reset before it, usec_per_call of evalsha
// is the Redis CPU each phase costs.
func BenchmarkSharedHoldSettle(b *testing.B) {
	url := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if url == "" {
		b.Skip("TOLLGATE_TEST_REDIS_URL is not set: no Redis to benchmark against")
	}
	c, err := rscript.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s := ledger.NewShared(runner(b, c), ledger.SharedOptions{Prefix: fmt.Sprintf("bench-%d", time.Now().UnixNano()), Log: slog.New(slog.DiscardHandler)})
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1e9))
	user := ledger.NewAccount(store.KindUser, "u", 0, ledger.USD(1e9))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		h, err := s.ReserveUpTo(ctx, []*ledger.Account{key, user}, ledger.USD(0.01))
		if err != nil {
			b.Fatal(err)
		}
		h.Settle(ledger.USD(0.001))
	}
}

// TestSharedKeysExpire: an account is one key, its hash, and it has an
// expiry while a hold is in flight and after its last lease went (a later
// hold within the day the expiry is not refreshed adds one again): a
// replica that dies holding must not leave keys forever. Settled leases
// leave no field behind.
func TestSharedKeysExpire(t *testing.T) {
	m := miniredis.RunT(t)
	r := runner(t, redis.NewClient(&redis.Options{Addr: m.Addr()}))
	s := ledger.NewShared(r, ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(100))
	for round := range 3 {
		h, err := s.Reserve(context.Background(), []*ledger.Account{key}, ledger.USD(1))
		if err != nil {
			t.Fatal(err)
		}
		if ttl := m.TTL("{t}:bud:key:k"); ttl <= 0 {
			t.Fatalf("round %d: the account has no expiry while a hold is in flight", round)
		}
		if leases := leaseFields(m, "{t}:bud:key:k"); len(leases) != 1 {
			t.Fatalf("round %d: %d lease fields while one hold is in flight", round, len(leases))
		}
		h.Settle(ledger.USD(0.5))
		if leases := leaseFields(m, "{t}:bud:key:k"); len(leases) != 0 {
			t.Fatalf("round %d: lease fields %v left after the settle", round, leases)
		}
		if ttl := m.TTL("{t}:bud:key:k"); ttl <= 0 {
			t.Fatalf("round %d: the account lost its expiry", round)
		}
		for _, old := range []string{"{t}:bud:key:k:h", "{t}:bud:key:k:e"} {
			if m.Exists(old) {
				t.Fatalf("round %d: %s made (the layout before this one)", round, old)
			}
		}
	}
	if got := m.HGet("{t}:bud:key:k", "held"); got != "0" {
		t.Fatalf("held %s after every hold settled, want 0", got)
	}
}

// leaseFields are the hash's lease fields ("amount:expiry" values).
func leaseFields(m *miniredis.Miniredis, key string) []string {
	var out []string
	fields, _ := m.HKeys(key)
	for _, f := range fields {
		if strings.Contains(m.HGet(key, f), ":") {
			out = append(out, f)
		}
	}
	return out
}

// TestSharedLeasesExpireOneByOne: leases live in the account's hash and are
// swept only once one may have expired; a dead replica's hold is freed at
// the first hold after its lease expires, while a younger lease of a live
// replica keeps its budget held until it is settled.
func TestSharedLeasesExpireOneByOne(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	a := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	b := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	keyA := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	keyB := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	t0 := time.Now()
	m.SetTime(t0)
	if _, err := b.Reserve(ctx, []*ledger.Account{keyB}, ledger.USD(0.4)); err != nil { // B dies holding it
		t.Fatal(err)
	}
	m.SetTime(t0.Add(10 * time.Minute))
	live, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.4))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.3)); err == nil {
		t.Fatal("0.8 held and 0.3 more fitted a budget of 1")
	}
	m.SetTime(t0.Add(16 * time.Minute)) // B's lease expired, A's has 9 minutes left
	h, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.3))
	if err != nil {
		t.Fatalf("the dead replica's expired hold still blocks: %v", err)
	}
	h.Release()
	if got := m.HGet("{t}:bud:key:k", "held"); got != strconv.FormatInt(int64(ledger.USD(0.4)), 10) {
		t.Fatalf("held %s after the sweep, want the live 0.4", got)
	}
	if _, err := a.Reserve(ctx, []*ledger.Account{keyA}, ledger.USD(0.7)); err == nil {
		t.Fatal("the live hold was swept with the dead one")
	}
	live.Settle(ledger.USD(0.1))
	if got := m.HGet("{t}:bud:key:k", "held"); got != "0" {
		t.Fatalf("held %s after every live hold settled, want 0", got)
	}
	if leases := leaseFields(m, "{t}:bud:key:k"); len(leases) != 0 {
		t.Fatalf("lease fields %v left", leases)
	}
	if got := m.HGet("{t}:bud:key:k", "spent"); got != strconv.FormatInt(int64(ledger.USD(0.1)), 10) {
		t.Fatalf("spent %s, want 0.1", got)
	}
}

// TestSharedRollingUpgrade: a replica of the layout before this one keeps
// its leases in two more keys (k:h, amount; k:e, expiry) and spent and held
// in the same hash. Its holds count here, and one it left when it died is
// freed once expired, though no old replica is left to sweep it.
func TestSharedRollingUpgrade(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	s := ledger.NewShared(runner(t, c), ledger.SharedOptions{Prefix: "t", Log: slog.New(slog.DiscardHandler), HoldTimeout: time.Minute})
	key := ledger.NewAccount(store.KindKey, "k", 0, ledger.USD(1))
	t0 := time.Now()
	m.SetTime(t0)
	// What the old hold script wrote for a hold of 0.5 (15-minute lease).
	old := strconv.FormatInt(int64(ledger.USD(0.5)), 10)
	m.HSet("{t}:bud:key:k", "spent", "0", "period", "0", "held", old)
	m.HSet("{t}:bud:key:k:h", "oldlease", old)
	if _, err := m.ZAdd("{t}:bud:key:k:e", float64(t0.Add(15*time.Minute).UnixMilli()), "oldlease"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.6)); err == nil {
		t.Fatal("the old replica's hold was not counted")
	}
	m.SetTime(t0.Add(31 * time.Minute)) // the old lease expired, and a legacy sweep is due
	h, err := s.Reserve(ctx, []*ledger.Account{key}, ledger.USD(0.6))
	if err != nil {
		t.Fatalf("the dead old replica's expired hold still blocks: %v", err)
	}
	h.Settle(ledger.USD(0.2))
	if got := m.HGet("{t}:bud:key:k", "held"); got != "0" {
		t.Fatalf("held %s, want 0", got)
	}
	if f, _ := m.HKeys("{t}:bud:key:k:h"); len(f) != 0 {
		t.Fatalf("old lease hash still holds %v", f)
	}
}
