package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// leaseUpstream answers chat completions (3 completion tokens). A request
// whose prompt starts with "hold" is kept until release is closed (or its
// caller leaves), counted in arrived first; "hold-fail" is then answered
// 500.
type leaseUpstream struct {
	arrived atomic.Int64
	calls   atomic.Int64
	release chan struct{}
}

func (u *leaseUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.calls.Add(1)
	var body struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	content := ""
	if len(body.Messages) > 0 {
		content = body.Messages[0].Content
	}
	if strings.HasPrefix(content, "hold") {
		u.arrived.Add(1)
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if content == "hold-fail" {
		w.WriteHeader(500)
		_, _ = io.WriteString(w, `{"error":{"message":"boom","type":"server_error"}}`)
		return
	}
	_, _ = io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"a b c"},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}`)
}

// leaseTTL is the replicas' --redis-lease-ttl in these tests. A lease is
// renewed every leaseTTL/4 once 3/4 of it has passed, so a renewal has at
// most leaseTTL/4 to land before the lease expires: 3 s leaves 750 ms, which
// held beside other tests and a CPU hog, where 1 s (250 ms) did not.
const leaseTTL = 3 * time.Second

// leaseRig is one replica on PostgreSQL + Redis with leases of leaseTTL,
// in front of a leaseUpstream; release lets held requests finish (once;
// also at the test's end, before the replica stops).
func leaseRig(t *testing.T, extra string) (r *rig, s *Server, up *leaseUpstream, release func(), c *redis.Client) {
	t.Helper()
	up = &leaseUpstream{release: make(chan struct{})}
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	r = newRig(t, rigSpec{name: "leaserenew", postgres: true, redis: true, up: hs.URL})
	// Holds wait for Redis as long as it takes: nothing falls back to the
	// replica's own ledger on a busy machine.
	s = r.start(t, pricedConfig+"  redis_url: {{REDIS}}\n"+extra,
		Options{RedisLeaseTTL: leaseTTL, RedisHoldTimeout: time.Minute, RedisReadTimeout: time.Minute})
	release = sync.OnceFunc(func() { close(up.release) })
	t.Cleanup(release) // registered after the replica: runs before it stops
	return r, s, up, release, r.client(t)
}

// redisMS is Redis's clock in milliseconds.
func redisMS(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	now, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return now.UnixMilli()
}

// leaseField is a per-request hold's lease in a budget hash: 24 hex
// digits (not an allotment's "al." lease, nor a carry marker "c:...").
var leaseField = regexp.MustCompile(`^[0-9a-f]{24}$`)

// holdLeases are the per-request holds' leases in a budget hash: lease ->
// expiry (ms, Redis's clock).
func holdLeases(t *testing.T, c *redis.Client, key string) map[string]int64 {
	t.Helper()
	all, err := c.HGetAll(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for f, v := range all {
		if !leaseField.MatchString(f) {
			continue
		}
		_, x, _ := strings.Cut(v, ":")
		exp, _ := strconv.ParseInt(x, 10, 64)
		m[f] = exp
	}
	return m
}

// heldRequest sends a request with prompt content on key in the
// background; it returns the status (0 when the client gave up) on done,
// and cancel makes its client leave.
func heldRequest(url, key, content string) (done chan int, cancel func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"`+content+`"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	return done, cancel
}

// outlive waits until Redis's clock is past expiry by several lease
// lengths: a lease that was not renewed would have expired long before.
func outlive(t *testing.T, c *redis.Client, expiry int64) {
	t.Helper()
	until := expiry + 3*leaseTTL.Milliseconds()
	if _, ok := within(time.Minute, func() bool { return redisMS(t, c) > until }); !ok {
		t.Fatal("Redis's clock did not pass the lease's first expiry by three lease lengths in a minute")
	}
}

var leaseModes = []struct{ name, extra string }{
	{"allotments on (the default)", ""},
	{"allotments off", "  budget_allotments: false\n"},
}

// TestLongRequestKeepsItsRedisHold: with a lease of leaseTTL, a request held
// open (by its upstream) for several lease lengths keeps its budget hold
// on Redis: its lease is still there, unexpired, long past the expiry it
// was placed with, and a second request on the same budget (room for one
// worst case) is refused while it runs. (Without renewal the lease
// expired after leaseTTL, the second request's hold swept it, and it was
// admitted: the budget was passed.) Then the request ends - answered, an
// upstream error, or its client gone - and the hold is gone from Redis,
// nothing held, and its spend booked once: Redis's spent and the store's
// are the sum of the key's spend rows, one per upstream call. With
// allotments on (the default) the key's budget is too small to allot: its
// requests hold per request, as at the end of any budget.
func TestLongRequestKeepsItsRedisHold(t *testing.T) {
	t.Parallel() // each case waits on leases in a rig of its own (waitBound)
	for _, m := range leaseModes {
		for _, end := range []string{"answered", "upstream error", "client gone"} {
			t.Run(m.name+", "+end, func(t *testing.T) {
				t.Parallel()
				r, s, up, release, c := leaseRig(t, m.extra)
				if (s.allot != nil) != (m.extra == "") {
					t.Fatalf("allotments on: %v", s.allot != nil)
				}
				const key = "sk-leaserenew-hold"
				hash := r.key(t, key, `"max_budget": 0.0003`) // one worst case (max_tokens 3)
				bud := r.budget("key", hash)

				content := "hold"
				if end == "upstream error" {
					content = "hold-fail"
				}
				done, cancel := heldRequest(r.urls[0], key, content)
				defer cancel()
				if _, ok := within(time.Minute, func() bool { return up.arrived.Load() == 1 }); !ok {
					t.Fatal("the held request never reached the upstream")
				}
				leases := holdLeases(t, c, bud)
				if len(leases) != 1 {
					t.Fatalf("Redis has %d per-request holds for the key, want 1: %v", len(leases), leases)
				}
				var lease string
				var first int64
				for l, x := range leases {
					lease, first = l, x
				}
				outlive(t, c, first)
				if x, ok := holdLeases(t, c, bud)[lease]; !ok || x <= redisMS(t, c) {
					t.Errorf("the running request's lease is gone or expired (%v, expiry %d) %d ms past the expiry it was placed with",
						ok, x, redisMS(t, c)-first)
				}
				// The budget's room is held: another request is refused.
				if code, body := send(t, r.urls[0]+"/v1/chat/completions", key,
					`{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`); code != 400 || !strings.Contains(body, "budget") {
					t.Fatalf("a second request while the first runs past its lease: %d %s, want 400 budget_exceeded", code, body)
				}

				switch end {
				case "client gone":
					cancel()
					if code := <-done; code != 0 {
						t.Fatalf("the request was answered %d after its client left", code)
					}
				default:
					release()
					want := 200
					if end == "upstream error" {
						want = 500
					}
					if code := <-done; code != want {
						t.Fatalf("the held request: %d, want %d", code, want)
					}
				}

				// The hold is gone and the spend booked once.
				ctx := context.Background()
				var logs []store.SpendLog
				var sum float64
				if _, ok := within(time.Minute, func() bool {
					r.flush()
					var err error
					if logs, _, err = r.st.ListSpendLogs(ctx, store.SpendFilter{KeyHash: hash, Page: store.Page{Number: 1, Size: 100}}); err != nil {
						t.Fatal(err)
					}
					sum = 0
					for _, l := range logs {
						sum += l.Cost
					}
					v, err := c.HMGet(ctx, bud, "spent", "held").Result()
					if err != nil {
						t.Fatal(err)
					}
					spent, _ := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
					held, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
					k, err := r.st.GetKey(ctx, hash)
					return err == nil && int64(len(logs)) == up.calls.Load() && held == 0 && len(holdLeases(t, c, bud)) == 0 &&
						spent == int64(ledger.USD(sum)) && math.Abs(k.Spend-sum) < 1e-12
				}); !ok {
					all, _ := c.HGetAll(ctx, bud).Result()
					t.Fatalf("after the request ended: %d spend rows (%v) for %d upstream calls; Redis's hash %v", len(logs), sum, up.calls.Load(), all)
				}
				if end == "answered" && math.Abs(sum-0.0003) > 1e-12 {
					t.Fatalf("the answered request booked %v, want 0.0003", sum)
				}
				if end != "answered" && sum != 0 {
					t.Fatalf("a request that produced nothing booked %v", sum)
				}
				if a, _ := s.book.Lookup(store.KindKey, hash); a == nil || a.Reserved() != 0 {
					t.Fatal("the replica still holds for the key")
				}
			})
		}
	}
}

// TestLongRequestKeepsItsParallelSlot: with max_parallel_requests 1 and a
// lease of leaseTTL, a request held open for several lease lengths keeps its
// slot on Redis (the lease's expiry in the rule's sorted set moves on),
// so a second request is refused 429 while it runs (without renewal the
// slot expired, and the set with it, and the second was admitted); once it
// ends, answered or its client gone, the slot is given back and the next
// request passes.
func TestLongRequestKeepsItsParallelSlot(t *testing.T) {
	t.Parallel() // each case waits on leases in a rig of its own (waitBound)
	for _, m := range leaseModes {
		for _, end := range []string{"answered", "client gone"} {
			t.Run(m.name+", "+end, func(t *testing.T) {
				t.Parallel()
				r, _, up, release, c := leaseRig(t, m.extra)
				const key = "sk-leaserenew-par"
				r.key(t, key, `"max_budget": 1, "max_parallel_requests": 1`)
				ctx := context.Background()
				slots := func() (set string, members []redis.Z) {
					keys, err := c.Keys(ctx, "{"+r.prefix+"}:rl:par:*").Result()
					if err != nil {
						t.Fatal(err)
					}
					if len(keys) != 1 {
						return "", nil
					}
					z, err := c.ZRangeWithScores(ctx, keys[0], 0, -1).Result()
					if err != nil {
						t.Fatal(err)
					}
					return keys[0], z
				}

				done, cancel := heldRequest(r.urls[0], key, "hold")
				defer cancel()
				if _, ok := within(time.Minute, func() bool { return up.arrived.Load() == 1 }); !ok {
					t.Fatal("the held request never reached the upstream")
				}
				set, z := slots()
				if len(z) != 1 {
					t.Fatalf("Redis has %v parallel slots in %q, want 1", z, set)
				}
				lease, first := z[0].Member, int64(z[0].Score)
				outlive(t, c, first)
				if _, z := slots(); len(z) != 1 || z[0].Member != lease || int64(z[0].Score) <= redisMS(t, c) {
					t.Errorf("the running request's slot is gone or expired: %v, %d ms past the expiry it was taken with", z, redisMS(t, c)-first)
				}
				resp, body := sendH(t, r.urls[0]+"/v1/chat/completions", key, `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`)
				if resp.StatusCode != 429 {
					t.Fatalf("a second request while the first runs past its lease: %d %s, want 429", resp.StatusCode, body)
				}

				if end == "client gone" {
					cancel()
					if code := <-done; code != 0 {
						t.Fatalf("the request was answered %d after its client left", code)
					}
				} else {
					release()
					if code := <-done; code != 200 {
						t.Fatalf("the held request: %d", code)
					}
				}
				if _, ok := within(time.Minute, func() bool { _, z := slots(); return len(z) == 0 }); !ok {
					_, z := slots()
					t.Fatalf("the slot was not given back: %v", z)
				}
				if code, body := send(t, r.urls[0]+"/v1/chat/completions", key, `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`); code != 200 {
					t.Fatalf("the next request after the slot came back: %d %s", code, body)
				}
			})
		}
	}
}
