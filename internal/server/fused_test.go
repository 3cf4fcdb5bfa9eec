package server

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// fusedEnv is gateways on one store and one Redis (a prefix of their
// own), serving pricedConfig strictly, allotments off: a key with rate limits and a budget
// has its admission and its first hold decided in one script.
type fusedEnv struct {
	*rig
	rc *redis.Client
}

func startFused(t testing.TB, replicas int, up string) *fusedEnv {
	t.Helper()
	return startFusedWith(t, replicas, up, "")
}

// startFusedWith is startFused with more litellm_settings lines.
func startFusedWith(t testing.TB, replicas int, up, settings string) *fusedEnv {
	t.Helper()
	// budget_allotments: false: these tests are of the per-request fused
	// scripts (they count scripts and commands per request, and read the
	// budget's 'held' after a refusal), which allotments, on by default
	// with Redis, replace with a flush per interval and holds of their own.
	// Allotments across replicas: allot_test.go.
	r := newRig(t, rigSpec{name: "fused", redis: true, up: up})
	for range replicas {
		r.start(t, pricedConfig+"  redis_url: {{REDIS}}\n  budget_allotments: false\nlitellm_settings:\n  budget_enforcement: strict\n"+settings, Options{})
	}
	return &fusedEnv{rig: r, rc: r.client(t)}
}

// TestFusedOneScriptPerPhase: a request whose key has rate limits and a
// budget makes exactly one Redis script call before its upstream call (the
// admission and the hold) and one after (the settle and the ticket's
// release), as MONITOR on its prefix shows.
func TestFusedOneScriptPerPhase(t *testing.T) {
	var mu sync.Mutex
	var upAt []time.Time
	mock := mockupstream.New(mockupstream.Options{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upAt = append(upAt, time.Now())
		mu.Unlock()
		mock.ServeHTTP(w, r)
	}))
	defer up.Close()
	e := startFused(t, 1, up.URL)
	e.key(t, "sk-fused-count", `"max_budget": 1, "rpm_limit": 1000, "tpm_limit": 1000000, "max_parallel_requests": 50`)

	ctx := context.Background()
	lines := monitor(t, e.rc.Options())
	// MONITOR is on once it echoes a command of ours.
	mark := "{" + e.prefix + "}:mark"
	if _, ok := within(30*time.Second, func() bool {
		e.rc.Get(ctx, mark)
		for {
			select {
			case l := <-lines:
				if strings.Contains(l, mark) {
					return true
				}
			default:
				return false
			}
		}
	}); !ok {
		t.Fatal("MONITOR never echoed a command")
	}

	// Requests go one at a time, and the next is sent only once the
	// previous one's after-call has been seen: the settle runs after the
	// answer is written, so on a busy machine it may otherwise land after
	// the next request's upstream call. Each drain ends at a GET of the mark
	// key echoed back (MONITOR keeps Redis's order), so every script call
	// made before it has been read.
	tag := "{" + e.prefix + "}:"
	var calls []time.Time
	drain := func() bool {
		e.rc.Get(ctx, mark)
		for {
			var l string
			select {
			case l = <-lines:
			case <-time.After(30 * time.Second): // a dropped echo: within tries again
				return false
			}
			if strings.Contains(l, mark) {
				return true
			}
			verb, _, _ := strings.Cut(strings.TrimPrefix(l[strings.Index(l, "]")+1:], " "), " ")
			if strings.Contains(l, tag) && strings.Contains(strings.ToLower(verb), "eval") {
				sec, _, _ := strings.Cut(l, " ")
				f, _ := strconv.ParseFloat(sec, 64)
				calls = append(calls, time.Unix(0, int64(f*1e9)))
			}
		}
	}
	const n = 3
	for i := range n {
		if code, body := send(t, e.urls[0]+"/v1/chat/completions", "sk-fused-count", chat3); code != 200 {
			t.Fatal(code, body)
		}
		// The after-call comes after the answer: wait for it (or for more).
		if _, ok := within(30*time.Second, func() bool { return drain() && len(calls) >= 2*(i+1) }); !ok {
			t.Fatalf("request %d: saw %d script calls in all, want %d", i, len(calls), 2*(i+1))
		}
		if len(calls) != 2*(i+1) {
			t.Fatalf("request %d: %d script calls in all, want %d", i, len(calls), 2*(i+1))
		}
		mu.Lock()
		if len(upAt) != i+1 {
			mu.Unlock()
			t.Fatalf("upstream called %d times for %d requests", len(upAt), i+1)
		}
		at := upAt[i]
		mu.Unlock()
		if before, after := calls[2*i], calls[2*i+1]; !before.Before(at) || !after.After(at) {
			t.Fatalf("request %d: script calls at %v and %v, upstream call at %v: want one before and one after", i, before, after, at)
		}
	}
}

// monitor streams Redis's MONITOR lines (on a plain connection of its own,
// closed when the test ends).
func monitor(t *testing.T, o *redis.Options) <-chan string {
	t.Helper()
	conn, err := net.Dial("tcp", o.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if o.Password != "" {
		fmt.Fprintf(conn, "AUTH %s %s\r\n", cmp.Or(o.Username, "default"), o.Password)
	}
	fmt.Fprintf(conn, "MONITOR\r\n")
	lines := make(chan string, 65536)
	go func() {
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // a full channel drops lines: the test then fails, never hangs
			}
		}
	}()
	return lines
}

// TestFusedReplicasKeepLimitsAndBudgets: requests at once over two
// gateways on one Redis, with the fused scripts: a shared rpm limit lets
// exactly its number through, and a shared budget is never passed (strict).
func TestFusedReplicasKeepLimitsAndBudgets(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{Delay: 5 * time.Millisecond})
	up := httptest.NewServer(mock)
	defer up.Close()
	e := startFused(t, 2, up.URL)
	e.key(t, "sk-fused-rpm", `"max_budget": 10, "rpm_limit": 10, "max_parallel_requests": 100`)
	e.key(t, "sk-fused-budget", `"max_budget": 0.006, "rpm_limit": 100000, "max_parallel_requests": 100`) // 20 × 3e-4

	hammer := func(key string, workers, each int) (codes map[int]int) {
		var mu sync.Mutex
		codes = map[int]int{}
		var wg sync.WaitGroup
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					code, _ := send(t, e.urls[i%2]+"/v1/chat/completions", key, chat3)
					mu.Lock()
					codes[code]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return codes
	}
	if c := hammer("sk-fused-rpm", 6, 5); c[200] != 10 || c[429] != 20 {
		t.Fatalf("a shared 10 rpm over two gateways answered %v to 30 requests", c)
	}
	before := mock.Stats().Requests
	c := hammer("sk-fused-budget", 10, 5)
	served := mock.Stats().Requests - before
	if c[200] > 20 || int64(c[200]) != served || c[200]+c[400]+c[503] != 50 || c[200] < 15 {
		t.Fatalf("a shared budget for 20 requests over two gateways answered %v to 50 (%d reached the upstream)", c, served)
	}
	spent, _ := e.rc.HGet(context.Background(), "{"+e.prefix+"}:bud:key:"+sha("sk-fused-budget"), "spent").Int64()
	held, _ := e.rc.HGet(context.Background(), "{"+e.prefix+"}:bud:key:"+sha("sk-fused-budget"), "held").Int64()
	if held != 0 || spent > int64(ledger.USD(0.006)) || spent != int64(ledger.USD(0.0003))*served {
		t.Fatalf("budget left with %d held and %d spent for %d served (budget %d)", held, spent, served, ledger.USD(0.006))
	}
}

// TestFusedRefusalsTakeNothing: a request refused by its budget in the
// fused script leaves no parallel slot taken (at once, not once a release
// lands) and counts nothing against its rpm, and one refused by a rate
// limit leaves no budget held.
func TestFusedRefusalsTakeNothing(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	e := startFused(t, 1, up.URL)
	ctx := context.Background()
	hash := e.key(t, "sk-fused-poor", `"max_budget": 0.0001, "max_parallel_requests": 1, "rpm_limit": 100`) // less than one request's worst case
	slots := "{" + e.prefix + "}:rl:par:max_parallel_requests:key:" + hash
	for range 3 {
		resp, body := sendH(t, e.urls[0]+"/v1/chat/completions", "sk-fused-poor", chat3)
		if resp.StatusCode != 400 || !strings.Contains(body, "budget_exceeded") {
			t.Fatalf("over budget: %d %s", resp.StatusCode, body)
		}
		// The limits' state is reported, and no request was counted: each
		// refusal sees the same 99 of 100 left (this one's, not taken).
		if got := resp.Header.Get("x-ratelimit-remaining-requests"); got != "99" {
			t.Fatalf("a budget refusal says %q requests remain, want 99 (nothing taken)", got)
		}
		if n := e.rc.ZCard(ctx, slots).Val(); n != 0 {
			t.Fatalf("a budget refusal left %d parallel slots taken", n)
		}
	}
	e.key(t, "sk-fused-slow", `"max_budget": 1, "rpm_limit": 1`)
	if code, body := send(t, e.urls[0]+"/v1/chat/completions", "sk-fused-slow", chat3); code != 200 {
		t.Fatal(code, body)
	}
	if code, body := send(t, e.urls[0]+"/v1/chat/completions", "sk-fused-slow", chat3); code != 429 {
		t.Fatalf("over the rate limit: %d %s", code, body)
	}
	budget := "{" + e.prefix + "}:bud:key:" + sha("sk-fused-slow")
	if held := e.rc.HGet(ctx, budget, "held").Val(); held != "0" {
		t.Fatalf("a rate-limit refusal left %q held on the budget", held)
	}
	for f, v := range e.rc.HGetAll(ctx, budget).Val() {
		if strings.Contains(v, ":") { // a lease: "amount:expiry"
			t.Fatalf("a rate-limit refusal left budget lease %s = %s", f, v)
		}
	}
}

// TestFusedRedisOutageFallsBack: a key with a budget and an rpm limit (its
// admission fused with its hold) keeps being served when Redis goes away
// (the hold in the replica's share, the limits on local counters), and the
// local counters still enforce the rpm limit.
func TestFusedRedisOutageFallsBack(t *testing.T) {
	m := miniredis.RunT(t)
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(pricedConfig, "{{UP}}", up.URL)+"  redis_url: redis://"+m.Addr()+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{Store: sqliteStore(t)})
	if code, body := send(t, url+"/key/generate", "sk-1234", `{"key": "sk-fused-fallback", "rpm_limit": 3, "max_budget": 1}`); code != 200 {
		t.Fatal(code, body)
	}
	if code, body := send(t, url+"/v1/chat/completions", "sk-fused-fallback", chat3); code != 200 {
		t.Fatal(code, body)
	}
	if !m.Exists("{tg}:bud:key:"+sha("sk-fused-fallback")) || len(m.Keys()) < 3 {
		t.Fatalf("the fused admission left %v in Redis", m.Keys())
	}
	m.Close()
	// Redis back before the gateway stops (cleanups run last first): the
	// stop returns the rate-limit allotments instead of waiting out its 5 s
	// bound on a Redis that is gone. Everything under test is checked by then.
	t.Cleanup(func() { _ = m.Restart() })
	for i := range 3 {
		if code, body := send(t, url+"/v1/chat/completions", "sk-fused-fallback", chat3); code != 200 {
			t.Fatalf("request %d with Redis down: %d %s", i, code, body)
		}
	}
	if code, body := send(t, url+"/v1/chat/completions", "sk-fused-fallback", chat3); code != 429 {
		t.Fatalf("the local fallback does not enforce rpm 3: %d %s", code, body)
	}
}

// TestFusedCacheHitsCountAgainstRequestLimits: with the admission left
// pending for the first budget hold (fused), a cache hit, which takes no
// hold, still has its request counted and refused past the rpm limit.
func TestFusedCacheHitsCountAgainstRequestLimits(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	e := startFusedWith(t, 1, up.URL, "  cache: true\n")
	e.key(t, "sk-fused-cached", `"max_budget": 1, "rpm_limit": 2`)
	if code, body := send(t, e.urls[0]+"/v1/chat/completions", "sk-fused-cached", chat3); code != 200 {
		t.Fatal(code, body)
	}
	// The answer is kept after the client has it: wait until it is.
	if _, ok := within(30*time.Second, func() bool {
		resp, err := http.Get(e.urls[0] + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		m, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(m), "tollgate_cache_stores_total 1")
	}); !ok {
		t.Fatal("the first answer was never stored")
	}
	resp, body := sendH(t, e.urls[0]+"/v1/chat/completions", "sk-fused-cached", chat3)
	if resp.StatusCode != 200 || resp.Header.Get("x-tollgate-cache-hit") != "true" {
		t.Fatalf("second request: %d hit=%q %s", resp.StatusCode, resp.Header.Get("x-tollgate-cache-hit"), body)
	}
	resp, body = sendH(t, e.urls[0]+"/v1/chat/completions", "sk-fused-cached", chat3)
	if resp.StatusCode != 429 {
		t.Fatalf("third request over rpm_limit 2: %d hit=%q %s", resp.StatusCode, resp.Header.Get("x-tollgate-cache-hit"), body)
	}
}
