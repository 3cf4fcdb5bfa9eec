package ratelimit

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/rscript"
)

// proxiedRunner is a started script runner on c's Redis through a
// netsim proxy the test may cut; the proxy is restored and the client
// closed at cleanup.
func proxiedRunner(t *testing.T, c *redis.Client) (*netsim.Proxy, *rscript.Runner) {
	t.Helper()
	px, err := netsim.NewProxy(c.Options().Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Restore() })
	o := *c.Options()
	o.Addr = px.Addr()
	pc := redis.NewClient(&o)
	t.Cleanup(func() { pc.Close() })
	r := rscript.NewRunner(pc, rscript.Options{})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return px, r
}

// allotReplica is one replica's limiter with allotments, on its own runner.
func allotReplica(t *testing.T, c *redis.Client, prefix string, every time.Duration) (*Limiter, *Allotter) {
	t.Helper()
	l := New(NewRedis(runner(t, c), prefix))
	a := NewAllotter(l, AllotOptions{Every: every})
	if a == nil {
		t.Fatal("no allotter on a limiter with Redis")
	}
	return l, a
}

// windowSum is what Redis counts in a window's key now.
func windowSum(t *testing.T, c *redis.Client, prefix string, r Rule) int64 {
	t.Helper()
	rd := NewRedis(nil, prefix)
	v, err := c.HGet(context.Background(), rd.key(&r), "s").Int64()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return v
}

// TestAllotmentsNeverAdmitPastLimit: three replicas × eight concurrent
// requesters on one rpm, tpm or max_parallel_requests rule, their
// allotments flushed by their own flushers, admit no more than the limit
// (in flight at once, for parallel), most of them in process; after a
// graceful stop Redis counts exactly what was admitted (each allotment's
// unused part given back once) and holds no slot.
func TestAllotmentsNeverAdmitPastLimit(t *testing.T) {
	tests := []struct {
		name  string
		rule  Rule
		est   int64
		used  func(i int) int64 // tokens a request really used
		exact bool              // used == est: the window never holds more than the limit
	}{
		{"rpm", Rule{Scope: keyScope, Kind: Requests, Limit: 600, Window: time.Minute, Name: "rpm_limit"}, 0, func(int) int64 { return 0 }, true},
		{"tpm", Rule{Scope: keyScope, Kind: Tokens, Limit: 60000, Window: time.Minute, Name: "tpm_limit"}, 100, func(int) int64 { return 100 }, true},
		{"tpm corrected", Rule{Scope: keyScope, Kind: Tokens, Limit: 60000, Window: time.Minute, Name: "tpm_limit"}, 100, func(i int) int64 { return 50 + 50*int64(i%3) }, false},
		{"parallel", Rule{Scope: keyScope, Kind: Parallel, Limit: 12, Name: "max_parallel_requests"}, 0, func(int) int64 { return 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, prefix := realRedis(t)
			var ls []*Limiter
			var as []*Allotter
			var wg sync.WaitGroup
			ctx, stop := context.WithCancel(context.Background())
			for range 3 {
				l, a := allotReplica(t, c, prefix, 10*time.Millisecond)
				ls, as = append(ls, l), append(as, a)
				wg.Add(1)
				go func() { defer wg.Done(); a.Run(ctx) }()
			}
			var admitted, tokens, inflight, peak atomic.Int64
			// Warm up: each replica holds an allotment before the
			// requesters race (else 24 of them on 12 parallel slots keep
			// Redis's lease set full and no flush ever finds room: all of
			// it is decided per request, correctly, but nothing is shown).
			for i, l := range ls {
				deadline := time.Now().Add(30 * time.Second)
				for as[i].Local.Load() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("no allotment granted to an idle replica")
					}
					tk := ticket(tt.est, tt.rule)
					if d := l.Admit(context.Background(), tk); d != nil {
						t.Fatalf("refused while warming up: %v", d)
					}
					admitted.Add(1)
					tokens.Add(tt.used(0))
					l.Done(tk, tt.used(0))
					runtime.Gosched()
				}
			}
			var warm int64
			for _, a := range as {
				warm += a.Local.Load()
			}
			var work sync.WaitGroup
			for w := range 24 {
				work.Add(1)
				go func() {
					defer work.Done()
					l := ls[w%3]
					refusedRun := 0
					for i := 0; i < 3000 && refusedRun < 200; i++ {
						tk := ticket(tt.est, tt.rule)
						if l.Admit(context.Background(), tk) != nil {
							refusedRun++
							continue
						}
						refusedRun = 0
						n := inflight.Add(1)
						for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
						}
						admitted.Add(1)
						u := tt.used(i)
						tokens.Add(u)
						runtime.Gosched()
						inflight.Add(-1)
						l.Done(tk, u)
						if tt.rule.Kind == Parallel && i > 400 {
							return
						}
					}
				}()
			}
			work.Wait()
			stop() // graceful: every allotment returned
			wg.Wait()
			var local int64
			for _, a := range as {
				local += a.Local.Load()
				if !a.Empty() {
					t.Error("a replica still holds allotments after its stop")
				}
			}
			t.Logf("admitted %d (%d tokens), %d in process, peak in flight %d", admitted.Load(), tokens.Load(), local, peak.Load())
			if local == warm {
				t.Fatal("no request was decided against an allotment while the requesters raced")
			}
			switch tt.rule.Kind {
			case Requests:
				if admitted.Load() > tt.rule.Limit {
					t.Fatalf("admitted %d against rpm %d", admitted.Load(), tt.rule.Limit)
				}
				if s := windowSum(t, c, prefix, tt.rule); s != admitted.Load() {
					t.Fatalf("Redis counts %d requests after the stop, %d were admitted", s, admitted.Load())
				}
			case Tokens:
				if tt.exact && admitted.Load()*tt.est > tt.rule.Limit {
					t.Fatalf("admitted %d requests of %d tokens against tpm %d", admitted.Load(), tt.est, tt.rule.Limit)
				}
				// (per-request tickets' corrections are queued, not waited for)
				var s int64
				within(t, func() bool { s = windowSum(t, c, prefix, tt.rule); return s >= tokens.Load() })
				if s < tokens.Load() || s > tokens.Load()+tokens.Load()/20 {
					t.Fatalf("Redis counts %d tokens after the stop, requests used %d", s, tokens.Load())
				}
			case Parallel:
				if peak.Load() > tt.rule.Limit {
					t.Fatalf("%d requests in flight at once against max_parallel_requests %d", peak.Load(), tt.rule.Limit)
				}
				rd := NewRedis(nil, prefix)
				// (the per-request tickets' slots are released by a queued
				// script, not waited for: Limiter.Done)
				var n int64
				if !within(t, func() bool { n = c.ZCard(context.Background(), rd.key(&tt.rule)).Val(); return n == 0 }) {
					t.Fatalf("%d parallel slots still taken on Redis after the stop", n)
				}
			}
		})
	}
}

// TestAllotmentNearLimitRunsPerRequest: one replica, flushed every two
// requests, admits exactly the rpm limit: allotments while much is left,
// per request at the end, and a refused request that finds this
// replica's own allotment holding room has it given back and is decided
// again.
func TestAllotmentNearLimitRunsPerRequest(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, 100*time.Millisecond)
	rule := Rule{Scope: keyScope, Kind: Requests, Limit: 40, Window: time.Minute, Name: "rpm_limit"}
	admitted := 0
	var remoteAtEnd int64
	for i := range 60 {
		tk := ticket(0, rule)
		if d := l.Admit(context.Background(), tk); d == nil {
			admitted++
			l.Done(tk, 0)
		} else if i < 40 {
			t.Fatalf("request %d refused with %d admitted of 40: %v", i, admitted, d)
		}
		if admitted == 36 && remoteAtEnd == 0 {
			remoteAtEnd = a.Remote.Load()
		}
		if i%2 == 1 {
			if err := a.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if admitted != 40 {
		t.Fatalf("admitted %d against rpm 40", admitted)
	}
	if a.Local.Load() == 0 {
		t.Fatal("nothing decided against an allotment")
	}
	if a.Remote.Load() <= remoteAtEnd {
		t.Fatal("the last requests under the limit were not decided per request")
	}
	if s := windowSum(t, c, prefix, rule); s < 40 {
		t.Fatalf("Redis counts %d of 40 admitted", s)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := windowSum(t, c, prefix, rule); s != 40 {
		t.Fatalf("after the stop Redis counts %d of 40 admitted", s)
	}
}

// TestAllotmentRefusedWithRoomCounted: a request Redis refuses while this
// replica's own allotment of the rule holds room (the limit lowered below
// what the allotment was granted under: Redis decides, and counts the
// allotment as used) is counted in RefusedWithRoom, and decided again once
// the room is given back; a refusal with no allotment held is not counted.
func TestAllotmentRefusedWithRoomCounted(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, 100*time.Millisecond)
	rule := Rule{Scope: keyScope, Kind: Requests, Limit: 1000, Window: time.Minute, Name: "rpm_limit"}
	for range 4 {
		tk := ticket(0, rule)
		if d := l.Admit(context.Background(), tk); d != nil {
			t.Fatal(d)
		}
		l.Done(tk, 0)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := a.Held(); h.Requests == 0 || h.Rules != 1 {
		t.Fatalf("no allotment held after a flush: %+v", h)
	}
	lowered := rule
	lowered.Limit = 5 // below what the window counts with the allotment
	tk := ticket(0, lowered)
	d := l.Admit(context.Background(), tk)
	if d == nil {
		l.Done(tk, 0)
	}
	if n := a.RefusedWithRoom.Load(); n != 1 {
		t.Fatalf("RefusedWithRoom = %d after one refusal with the allotment holding room", n)
	}
	if h := a.Held(); h.Requests != 0 {
		t.Fatalf("the room was not given back: %+v", h)
	}
	if d = l.Admit(context.Background(), ticket(0, lowered)); d == nil {
		t.Fatal("admitted past a limit of 5 with the window full")
	}
	if n := a.RefusedWithRoom.Load(); n != 1 {
		t.Fatalf("RefusedWithRoom = %d: a refusal with nothing held was counted", n)
	}
}

// TestAllotmentLostFlushAppliedOnce: a flush whose answer is lost (it ran
// on Redis) is sent again as is and applied once; requests meanwhile are
// decided on the allotment already held.
func TestAllotmentLostFlushAppliedOnce(t *testing.T) {
	c, prefix := realRedis(t)
	px, r := proxiedRunner(t, c)
	l := New(NewRedis(r, prefix))
	a := NewAllotter(l, AllotOptions{})
	// Hour windows: a minute-slot allotment outlives a busy machine's
	// pauses (a 1 s slot may end between the lost flush and the requests).
	rpm := Rule{Scope: keyScope, Kind: Requests, Limit: 1000, Window: time.Hour, Name: "rph"}
	tpm := Rule{Scope: keyScope, Kind: Tokens, Limit: 100000, Window: time.Hour, Name: "tph"}
	admitted, tokens := int64(0), int64(0)
	admit := func(n int) {
		for range n {
			tk := ticket(10, rpm, tpm)
			if d := l.Admit(context.Background(), tk); d != nil {
				t.Fatalf("refused: %v", d)
			}
			admitted++
			tokens += 12
			l.Done(tk, 12)
		}
	}
	admit(20)
	for range 2 {
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		admit(10)
	}
	px.DropReplies()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if err := a.Flush(ctx); err == nil {
		t.Fatal("a flush whose answer was dropped succeeded")
	}
	cancel()
	local := a.Local.Load()
	admit(5)
	if a.Local.Load() != local+5 {
		t.Fatal("requests were not decided on the allotment held while the flush's answer was lost")
	}
	if err := px.Restore(); err != nil {
		t.Fatal(err)
	}
	if !within(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return a.Flush(ctx) == nil
	}) {
		t.Fatal("the flush was never answered after Redis came back")
	}
	admit(10)
	if !within(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return a.Close(ctx) == nil
	}) {
		t.Fatal("allotments not returned")
	}
	if s := windowSum(t, c, prefix, rpm); s != admitted {
		t.Fatalf("Redis counts %d requests, %d were admitted: a flush applied twice or never", s, admitted)
	}
	if s := windowSum(t, c, prefix, tpm); s != tokens {
		t.Fatalf("Redis counts %d tokens, requests used %d", s, tokens)
	}
}

// TestAllotmentsReturnedAtStop: Close gives back every allotment of every
// kind (the parallel slots of requests still in flight as they end) and
// Redis then counts exactly what was admitted.
func TestAllotmentsReturnedAtStop(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, 100*time.Millisecond)
	rules := []Rule{
		{Scope: keyScope, Kind: Requests, Limit: 500, Window: time.Minute, Name: "rpm_limit"},
		{Scope: keyScope, Kind: Tokens, Limit: 50000, Window: time.Minute, Name: "tpm_limit"},
		{Scope: keyScope, Kind: Parallel, Limit: 50, Name: "max_parallel_requests"},
	}
	var held []*Ticket
	for i := range 40 {
		tk := ticket(20, rules...)
		if d := l.Admit(context.Background(), tk); d != nil {
			t.Fatal(d)
		}
		if i%2 == 0 {
			held = append(held, tk)
		} else {
			l.Done(tk, 20)
		}
		if i%10 == 9 {
			if err := a.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a.Local.Load() == 0 {
		t.Fatal("nothing decided against an allotment")
	}
	rd := NewRedis(nil, prefix)
	if n := c.ZCard(context.Background(), rd.key(&rules[2])).Val(); n < int64(len(held)) {
		t.Fatalf("%d slots on Redis for %d requests in flight", n, len(held))
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close(context.Background()) }()
	for _, tk := range held {
		l.Done(tk, 20)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if s := windowSum(t, c, prefix, rules[0]); s != 40 {
		t.Fatalf("Redis counts %d requests, 40 were admitted", s)
	}
	if s := windowSum(t, c, prefix, rules[1]); s != 800 {
		t.Fatalf("Redis counts %d tokens, requests used 800", s)
	}
	if n := c.ZCard(context.Background(), rd.key(&rules[2])).Val(); n != 0 {
		t.Fatalf("%d parallel slots left on Redis after the stop", n)
	}
	tk := ticket(20, rules...)
	if d := l.Admit(context.Background(), tk); d != nil || !tk.Shared() {
		t.Fatalf("after Close a request is decided per request on Redis: %v, shared %v", d, tk.Shared())
	}
	l.Done(tk, 20)
}

// TestAllotmentsNoScriptPerRequest: in the steady state a request whose
// rules are all inside allotments runs no script: Redis (MONITOR) sees
// the flushes and nothing else of this limiter. Hour windows (minute
// slots): a busy machine's pauses do not outlast an allotment's slot; a
// measured run that crossed a slot boundary on Redis's clock (where a
// late flush may leave requests to the per-request script) is run again,
// once: the next one cannot cross another.
func TestAllotmentsNoScriptPerRequest(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, 100*time.Millisecond)
	rules := []Rule{
		{Scope: keyScope, Kind: Requests, Limit: 10000000, Window: time.Hour, Name: "rph_limit"},
		{Scope: keyScope, Kind: Tokens, Limit: 1000000000, Window: time.Hour, Name: "tph_limit"},
		{Scope: keyScope, Kind: Parallel, Limit: 1000, Name: "max_parallel_requests"},
	}
	run := func(n int) {
		for i := range n {
			tk := ticket(30, rules...)
			if d := l.Admit(context.Background(), tk); d != nil {
				t.Fatal(d)
			}
			l.Done(tk, 40)
			if i%50 == 49 {
				if err := a.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	slot := func() int64 { // the rules' slot on Redis's clock
		now, err := c.Time(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now.UnixMilli() / slotLen(time.Hour).Milliseconds()
	}
	run(200) // warm up: allotments granted and sized
	mon := monitor(t, c.Options().Addr)
	marker := prefix + ":start"
	if !within(t, func() bool { // MONITOR may start after the first GET
		c.Get(context.Background(), marker)
		select {
		case line := <-mon:
			return strings.Contains(line, marker)
		case <-time.After(100 * time.Millisecond):
			return false
		}
	}) {
		t.Fatal("MONITOR shows nothing")
	}
	// This limiter's lines, read as they come (a shared Redis's other
	// traffic must not fill the channel and drop ours).
	var mu sync.Mutex
	var seen []string
	stopRead := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			select {
			case line := <-mon:
				if strings.Contains(line, prefix) {
					mu.Lock()
					seen = append(seen, line)
					mu.Unlock()
				}
			case <-stopRead:
				return
			}
		}
	}()
	defer func() { close(stopRead); <-readDone }()
	// upTo waits for s among this limiter's lines, and returns them.
	upTo := func(s string) []string {
		var got []string
		if !within(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for i, line := range seen {
				if strings.Contains(line, s) {
					got, seen = seen[:i], seen[i+1:]
					return true
				}
			}
			return false
		}) {
			t.Fatal("MONITOR never showed " + s)
		}
		return got
	}
	for attempt := 0; ; attempt++ {
		mark := fmt.Sprintf("%s:sync%d", prefix, attempt)
		c.Get(context.Background(), mark)
		upTo(mark)
		flushes, remote := a.Flushes.Load(), a.Remote.Load()
		// The wait may have outlasted the allotments' slot: the flusher (this
		// test's) sizes them again, as it does every interval.
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		from := slot()
		run(500)
		crossed := slot() != from
		end := fmt.Sprintf("%s:end%d", prefix, attempt)
		c.Get(context.Background(), end)
		perRequest, flushLines := 0, 0
		for _, line := range upTo(end) {
			if !strings.Contains(strings.ToLower(line), "eval") {
				continue
			}
			if strings.Contains(line, ":af:") {
				flushLines++
			} else {
				perRequest++
			}
		}
		t.Logf("500 requests: %d flush scripts, %d per-request scripts (slot boundary crossed: %v)", flushLines, perRequest, crossed)
		if want := a.Flushes.Load() - flushes; int64(flushLines) != want {
			t.Fatalf("Redis saw %d flush scripts, %d were sent", flushLines, want)
		}
		if perRequest == 0 && a.Remote.Load() == remote {
			break
		}
		if !crossed || attempt > 0 {
			t.Fatalf("%d per-request scripts (%d tickets not decided locally) in the steady state", perRequest, a.Remote.Load()-remote)
		}
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestParallelAllotmentCoversARecentBurst: a max_parallel_requests
// allotment is sized for the bursts of recent intervals, not only the last
// one's: after an interval with 4 requests in flight at once and a quiet
// one with 1, a burst of 8 is decided in process, without a per-request
// script (each would add a Redis round trip to the requests that already
// waited most: issue 31, item 3, branch tail3). The slots stay within the
// limit's share, and are all returned at the stop.
func TestParallelAllotmentCoversARecentBurst(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, time.Hour) // flushed by the test only
	rule := Rule{Scope: keyScope, Kind: Parallel, Limit: 1000, Name: "max_parallel_requests"}
	flush := func() {
		t.Helper()
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	burst := func(n int) {
		t.Helper()
		var tks []*Ticket
		for range n {
			tk := ticket(0, rule)
			if d := l.Admit(context.Background(), tk); d != nil {
				t.Fatal(d)
			}
			tks = append(tks, tk)
		}
		for _, tk := range tks {
			l.Done(tk, 0)
		}
	}
	burst(2) // two requests: the rule gets an allotment at the flush
	flush()
	burst(4) // the allotment grows to cover four
	flush()
	burst(4) // an interval whose peak on the allotment is 4
	flush()
	burst(1) // a quiet one
	burst(1)
	flush()
	remote := a.Remote.Load()
	burst(8)
	if n := a.Remote.Load() - remote; n != 0 {
		t.Fatalf("%d of a burst of 8 (twice the peak of the interval before last) ran the per-request script", n)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rd := NewRedis(nil, prefix)
	if n, err := c.ZCard(context.Background(), rd.key(&rule)).Result(); err != nil || n != 0 {
		t.Fatalf("after the stop Redis holds %d slots (%v)", n, err)
	}
}

// TestParallelAllotmentOfAQuietRuleStaysSmall: the room a
// max_parallel_requests allotment keeps for arrivals during a pause
// follows the rule's arrivals, so a key with one request an interval holds
// a few slots on Redis, not parallelSpare more (every flush re-adds every
// slot a replica holds: thousands of quiet keys would make each flush
// carry thousands of members).
func TestParallelAllotmentOfAQuietRuleStaysSmall(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, time.Hour) // flushed by the test only
	rule := Rule{Scope: keyScope, Kind: Parallel, Limit: 1000, Name: "max_parallel_requests"}
	rd := NewRedis(nil, prefix)
	for i := range 6 {
		for range 2 { // two requests an interval, one at a time
			tk := ticket(0, rule)
			if d := l.Admit(context.Background(), tk); d != nil {
				t.Fatal(d)
			}
			l.Done(tk, 0)
		}
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		n, err := c.ZCard(context.Background(), rd.key(&rule)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n > 8 {
			t.Fatalf("after flush %d a rule with one request in flight at a time holds %d slots on Redis", i, n)
		}
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
