package server

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
)

// TestCrashedReplicaSpendReseededFromStore: replica A, on an allotment,
// loses Redis and serves ten requests against it (booked, written to the
// store by its spend writer, never flushed to Redis), then stops: its last
// flush cannot reach Redis, as after a crash. Its allotment's lease ends
// (set in the past here: what LeaseTTL + 30 s would do) and B's next hold
// sweeps it. B's own view of the key never had A's unflushed spend (B made
// its account before the crash, and its resync has not read the store
// since), so before branch reseed Redis stayed short of it and B served past
// max_budget by that much. Now B reads the store's spend off the request
// path and brings Redis to it: Redis's spend reaches the store's, and B,
// driven to the budget, leaves the store's spend within max_budget
// (strict).
func TestCrashedReplicaSpendReseededFromStore(t *testing.T) {
	crashedReplicaReseed(t, "reseed", "sk-reseed-crash", "", nil, `"max_budget": 0.03`, false)
}

// TestReseedReadsAfterOwnWriter: the same crash, with B's spend writer
// slow: the row of B's sweeping request is not yet in the store when B's
// heartbeat reads the store for the reseed. The read lacked it while
// Redis had it (settled there), and Redis, brought to the read, lost that
// request for good (CI's TestRegeneratedKeyReseededFromStore failure,
// one request short). B now flushes its own writer before the read.
func TestReseedReadsAfterOwnWriter(t *testing.T) {
	crashedReplicaReseed(t, "reseedslow", "sk-reseed-slow", "", nil, `"max_budget": 0.03`, true)
}

// TestRegeneratedKeyReseededFromStore: the same crash, on a key regenerated
// before it: its budget account is named by its first hash
// (store.Key.BudgetAccount), which has no keys row since. The reseed read
// the store by the account's id, found nothing, and left the pending
// amount to the 'rs' mark (the next hold's own view, B's record from the
// regenerate): Redis stayed short of A's unflushed spend. It now reads the
// record the account is booked on (the key's current hash).
func TestRegeneratedKeyReseededFromStore(t *testing.T) {
	crashedReplicaReseed(t, "reseedregen", "sk-reseed-regen-first", "sk-reseed-regen-second", nil, `"max_budget": 0.03`, false)
}

// TestProbeReseedBudgetIDPeriod: the same crash, on a key whose budget
// (max_budget and budget_duration) comes from a budget object (budget_id),
// as LiteLLM's keys and customers may have it. Redis's period for the key
// is the budget's reset time (the snapshot fills it in), while the key's
// own row has none: the reseed compared the two, found them apart, and
// released the dead allotment's pending amount without raising anything
// (and without the 'rs' mark): Redis stayed short of A's unflushed spend
// and B served past the budget.
func TestProbeReseedBudgetIDPeriod(t *testing.T) {
	crashedReplicaReseed(t, "reseedbid", "sk-reseed-bid", "", func(r *rig) {
		if code, body := send(t, r.urls[0]+"/budget/new", "sk-1234", `{"budget_id": "reseed-bid", "max_budget": 0.03, "budget_duration": "30d"}`); code != 200 {
			t.Fatal(code, body)
		}
	}, `"budget_id": "reseed-bid"`, false)
}

// crashedReplicaReseed runs the crash above on a key made with fields;
// with regen set, the key is regenerated to it (new_key) before any request.
// With slowB, B's spend writer cannot write from just before its sweeping
// request until B's reseed has run or B has beaten three times since.
func crashedReplicaReseed(t *testing.T, name, key, regen string, pre func(*rig), fields string, slowB bool) {
	r := newRig(t, rigSpec{name: name, postgres: true, redis: true})
	gate := &gatedSpend{Store: r.st}
	p, err := netsim.NewProxy(r.ropts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Cut)
	tail := "  budget_allotments: true\nlitellm_settings:\n  budget_enforcement: strict\n"
	// B (first: the key is made there) reads the store's changes once an
	// hour: its record of the key's spend is the one from before the
	// crash, as a replica's whose resync lags (the store slow, a long
	// resync interval) or has not run since.
	r.start(t, pricedConfig+"  redis_url: {{REDIS}}\n"+tail,
		Options{Store: gate, ResyncInterval: time.Hour, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	r.start(t, pricedConfig+"  redis_url: redis://"+p.Addr()+"/"+strconv.Itoa(r.ropts.DB)+"\n"+tail, Options{ResyncInterval: 100 * time.Millisecond})
	a, ua, ub := r.srvs[1], r.urls[1], r.urls[0]
	const budget, cost = 0.03, 0.0003
	if pre != nil {
		pre(r)
	}
	hash := r.key(t, key, fields)
	ctx := context.Background()
	c := r.client(t)
	bk := r.budget("key", hash) // a regenerated key's account keeps it
	if regen != "" {
		if code, body := send(t, ub+"/key/regenerate", "sk-1234", `{"key": "`+key+`", "new_key": "`+regen+`"}`); code != 200 {
			t.Fatal(code, body)
		}
		key, hash = regen, sha(regen)
		for _, u := range r.urls {
			if _, ok := within(time.Minute, func() bool {
				code, _ := send(t, u+"/v1/chat/completions", key, `{"model":"nope"}`)
				return code == 404
			}); !ok {
				t.Fatalf("%s never served the regenerated key", u)
			}
		}
	}
	// B's account first, with one request (held per request: no allotment).
	if code, body := send(t, ub+"/v1/chat/completions", key, chat3); code != 200 {
		t.Fatal(code, body)
	}
	// A takes an allotment: a burst, then a flush sizes it. Under load
	// (the race detector, other packages' tests) the burst's requests can
	// spread over several of A's 100 ms flushes, each seeing one request
	// alone (held per request, no allotment), or the allotment can shrink
	// back after five flushes without a request before the flush below
	// runs: then the burst is sent again, at most three times in all
	// (24 of the budget's 100 requests).
	var leases []string
	for round := 0; len(leases) == 0 && round < 3; round++ {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, body := send(t, ua+"/v1/chat/completions", key, chat3); code != 200 {
					t.Errorf("A before the cut: %d %s", code, body)
				}
			}()
		}
		wg.Wait()
		if err := a.allot.Flush(ctx, false); err != nil {
			t.Fatal(err)
		}
		for f := range c.HGetAll(ctx, bk).Val() {
			if strings.HasPrefix(f, "al.") {
				leases = append(leases, f)
			}
		}
	}
	if len(leases) == 0 {
		t.Fatal("A holds no allotment after three bursts, each followed by a flush")
	}
	// A loses Redis; ten requests decided against its allotment.
	local := a.allot.Local.Load()
	p.Cut()
	for i := range 10 {
		if code, body := send(t, ua+"/v1/chat/completions", key, chat3); code != 200 {
			t.Fatalf("A's request %d on its allotment with Redis away: %d %s", i, code, body)
		}
	}
	if n := a.allot.Local.Load() - local; n < 10 {
		t.Fatalf("only %d of A's 10 requests were decided against its allotment", n)
	}
	r.stops[1]() // A stops; its last flush cannot reach Redis
	r.srvs[0].writer.Flush()
	k, err := r.st.GetKey(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	stored := int64(k.Spend*1e9 + 0.5)
	onRedis, _ := strconv.ParseInt(c.HGet(ctx, bk, "spent").Val(), 10, 64)
	if stored-onRedis < 10*300000 {
		t.Fatalf("setup: the store has %d, Redis %d: A's ten unflushed requests are not missing from Redis", stored, onRedis)
	}
	// A's allotment lease ends (its expiry in the past), as 15 min + 30 s
	// after A's last flush would have it; B's next hold sweeps it.
	for _, l := range leases {
		v := c.HGet(ctx, bk, l).Val()
		amt, _, _ := strings.Cut(v, ":")
		c.HSet(ctx, bk, l, amt+":1", "nx", "1")
	}
	reseeded := r.srvs[0].shared.Reseeded()
	if slowB {
		gate.close()
	}
	if code, body := send(t, ub+"/v1/chat/completions", key, chat3); code != 200 {
		t.Fatal(code, body)
	}
	stored += 300000
	if slowB {
		// Open once B's reseed ran (it read the store without the row)
		// or B beat three times since (its reseed waits on its writer).
		since, _ := c.Time(ctx).Result()
		if _, ok := within(time.Minute, func() bool {
			if r.srvs[0].shared.Reseeded() > reseeded {
				return true
			}
			beats, _ := c.ZRangeWithScores(ctx, r.srvs[0].shared.PresenceKey(), 0, -1).Result()
			for _, z := range beats {
				if int64(z.Score) >= since.Add(3*time.Second).UnixMilli() {
					return true
				}
			}
			return false
		}); !ok {
			t.Fatal("B neither reseeded nor beat three times in a minute")
		}
		gate.open()
	}
	if _, ok := within(time.Minute, func() bool {
		s, _ := strconv.ParseInt(c.HGet(ctx, bk, "spent").Val(), 10, 64)
		return s >= stored
	}); !ok {
		t.Fatalf("after the dead replica's allotment was swept, Redis has spent %s, want the store's %d (A's unflushed spend lost; reseed mark %q)",
			c.HGet(ctx, bk, "spent").Val(), stored, c.HGet(ctx, bk, "rs").Val())
	}
	if rs := c.HGet(ctx, bk, "rs").Val(); rs != "" {
		t.Fatalf("the pending reseed fell back to the next hold's view (rs %s), not the store's read", rs)
	}
	// B, driven to the budget: refused before the store's spend passes it.
	for i := 0; ; i++ {
		code, body := send(t, ub+"/v1/chat/completions", key, chat3)
		if code == 400 && strings.Contains(body, "budget_exceeded") {
			break
		}
		if code != 200 {
			t.Fatalf("B: %d %s", code, body)
		}
		if i > 200 {
			t.Fatal("B never refused")
		}
	}
	r.srvs[0].writer.Flush()
	if k, err = r.st.GetKey(ctx, hash); err != nil {
		t.Fatal(err)
	}
	if k.Spend > budget+1e-9 {
		t.Fatalf("strict budget %v: the store records %v spent (%.0f requests past it)", budget, k.Spend, (k.Spend-budget)/cost)
	}
	t.Logf("store spend %v of %v", k.Spend, budget)
}

// TestSpendEditClearsReseedMark: an account whose Redis hash carries a
// reseed mark ('rs': what an old replica's sweep of a dead allotment
// leaves, or a pending reseed no replica read) is edited by an operator
// on replica A (spend back to 0). Replica B, whose view still has the
// spend from before the edit, must decide on the edit: before branch
// reseed the mark survived the edit and B's next hold raised the edited
// spend from its own view, so B kept refusing a key its operator had
// reset.
func TestSpendEditClearsReseedMark(t *testing.T) {
	tail := "  budget_allotments: false\nlitellm_settings:\n  budget_enforcement: strict\n"
	r := replicas(t, 2, rigSpec{name: "reseededit", postgres: true, redis: true},
		pricedConfig+"  redis_url: {{REDIS}}\n"+tail,
		Options{ResyncInterval: 100 * time.Millisecond, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	const key = "sk-reseed-edit"
	hash := r.key(t, key, `"max_budget": 0.001`)
	ctx := context.Background()
	c := r.client(t)
	bk := r.budget("key", hash)
	served := 0
	for {
		code, body := send(t, r.urls[1]+"/v1/chat/completions", key, chat3)
		if code == 400 && strings.Contains(body, "budget_exceeded") {
			break
		}
		if code != 200 {
			t.Fatal(code, body)
		}
		if served++; served > 10 {
			t.Fatal("B never refused")
		}
	}
	c.HSet(ctx, bk, "rs", "1000000")
	if code, body := send(t, r.urls[0]+"/key/update", "sk-1234", `{"key": "`+key+`", "spend": 0}`); code != 200 {
		t.Fatal(code, body)
	}
	code, body := send(t, r.urls[1]+"/v1/chat/completions", key, chat3)
	if code != 200 {
		t.Fatalf("after the operator reset the key's spend on A, B: %d %s (Redis spent %s)", code, body, c.HGet(ctx, bk, "spent").Val())
	}
	// Its settle lands after the answer.
	if _, ok := within(time.Minute, func() bool { return c.HGet(ctx, bk, "spent").Val() == "300000" }); !ok {
		t.Fatalf("after the edit to 0 and one request, Redis has spent %s, want 300000", c.HGet(ctx, bk, "spent").Val())
	}
	for _, f := range []string{"rs", "rq"} {
		if c.HExists(ctx, bk, f).Val() {
			t.Fatalf("the edit left the mark %q", f)
		}
	}
}

// gatedSpend is a store whose spend batches (ApplySpend) wait while the
// gate is closed: a spend writer that has not written yet.
type gatedSpend struct {
	store.Store
	mu   sync.Mutex
	wait chan struct{} // nil: open
}

func (g *gatedSpend) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wait == nil {
		g.wait = make(chan struct{})
	}
}

func (g *gatedSpend) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wait != nil {
		close(g.wait)
		g.wait = nil
	}
}

func (g *gatedSpend) ApplySpend(ctx context.Context, batch []store.SpendLog) error {
	g.mu.Lock()
	w := g.wait
	g.mu.Unlock()
	if w != nil {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Store.ApplySpend(ctx, batch)
}
