package ratelimit

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestAllotmentLoweredLimitDecidedPerRequest: a rule's limit lowered (a key updated,
// a config reload) below what Redis already counts refuses every further
// request per request at once; an allotment granted under the old limit
// must not keep admitting against the new one until it runs out.
func TestAllotmentLoweredLimitDecidedPerRequest(t *testing.T) {
	for _, kind := range []Kind{Requests, Parallel} {
		t.Run(kindNames[kind], func(t *testing.T) {
			c, prefix := realRedis(t)
			l, a := allotReplica(t, c, prefix, 100*time.Millisecond)
			rule := Rule{Scope: keyScope, Kind: kind, Limit: 1000, Window: time.Hour, Name: "limit"}
			if kind == Parallel {
				rule.Window = 0
			}
			var held []*Ticket
			// Warm up: allotments granted and sized (hour windows: the
			// allotment's minute slot outlasts the test on a busy machine).
			for i := 0; i < 40 || a.Local.Load() < 20; i++ {
				if i > 4000 {
					t.Fatal("no allotment granted")
				}
				tk := ticket(0, rule)
				if d := l.Admit(context.Background(), tk); d != nil {
					t.Fatal(d)
				}
				if kind == Parallel && len(held) < 20 {
					held = append(held, tk) // 20 in flight
				} else {
					l.Done(tk, 0)
				}
				if i%5 == 4 {
					if err := a.Flush(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The limit drops to 10: Redis counts more than that already
			// (20 requests, or 20 in flight).
			low := rule
			low.Limit = 10
			admitted := 0
			for range 50 {
				tk := ticket(0, low)
				if d := l.Admit(context.Background(), tk); d == nil {
					admitted++
					if kind == Parallel {
						held = append(held, tk)
					} else {
						l.Done(tk, 0)
					}
				}
			}
			if admitted != 0 {
				t.Errorf("%d requests admitted after the limit dropped to 10 below what was used", admitted)
			}
			for _, tk := range held {
				l.Done(tk, 0)
			}
			if err := a.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAllotmentCrashedReplicaFreesUnusedSlots: a replica that dies holding
// parallel slots it was not using (allotted, none in flight but one)
// blocks only its request in flight for the lease's life: the unused
// slots are free again soon after its allotments stop deciding, as they
// would be without allotments (a per-request lease only for a request).
func TestAllotmentCrashedReplicaFreesUnusedSlots(t *testing.T) {
	c, prefix := realRedis(t)
	rule := Rule{Scope: keyScope, Kind: Parallel, Limit: 20, Name: "max_parallel_requests"}
	l := New(NewRedis(runner(t, c), prefix))
	a := NewAllotter(l, AllotOptions{Every: 100 * time.Millisecond, LocalFor: 500 * time.Millisecond})
	var inflight *Ticket
	for i := 0; a.Local.Load() < 10; i++ {
		if i > 4000 {
			t.Fatal("no allotment granted")
		}
		tk := ticket(0, rule)
		if d := l.Admit(context.Background(), tk); d != nil {
			t.Fatal(d)
		}
		if inflight == nil && tk.allotted {
			inflight = tk // in flight when the replica dies
		} else {
			l.Done(tk, 0)
		}
		if i%3 == 2 {
			if err := a.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	rd := NewRedis(nil, prefix)
	held := c.ZCard(context.Background(), rd.key(&rule)).Val()
	t.Logf("the replica holds %d slots, 1 in flight, and dies", held)
	if held < 2 {
		t.Fatal("the replica holds no unused slot")
	}
	// Another replica, per request, can take every slot but the dead
	// one's request in flight once the dead one's allotments could no
	// longer decide (LocalFor) and a little more.
	other := New(NewRedis(runner(t, c), prefix))
	got := 0
	if !within(t, func() bool {
		tk := ticket(0, rule)
		if other.Admit(context.Background(), tk) != nil {
			return false
		}
		got++
		return got == int(rule.Limit)-1
	}) {
		t.Fatalf("another replica took %d of the %d slots free: the dead replica's unused slots stay taken for the lease's life", got, rule.Limit-1)
	}
	if d := other.Admit(context.Background(), ticket(0, rule)); d == nil {
		t.Fatal("the dead replica's request in flight lost its slot before the lease's life")
	}
}

// TestAllotmentRefundAfterSlotLeftWindow: an allotment reported only
// after its slot left the window (Redis away meanwhile, here a flusher
// that did not run) gives nothing back: no negative slot, the sum as the
// slots in the window say (3 s window: 50 ms slots).
func TestAllotmentRefundAfterSlotLeftWindow(t *testing.T) {
	c, prefix := realRedis(t)
	l, a := allotReplica(t, c, prefix, 10*time.Millisecond)
	rule := Rule{Scope: keyScope, Kind: Requests, Limit: 100000, Window: 3 * time.Second, Name: "r3s"}
	for i := 0; a.Local.Load() < 3; i++ {
		if i > 4000 {
			t.Fatal("no allotment granted")
		}
		tk := ticket(0, rule)
		if d := l.Admit(context.Background(), tk); d != nil {
			t.Fatal(d)
		}
		l.Done(tk, 0)
		if i%3 == 2 {
			if err := a.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One more flush closes the allotment in use; its report waits until
	// its slot has left the window (61 slots of 50 ms).
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rd := NewRedis(nil, prefix)
	key := rd.key(&rule)
	t0, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !within(t, func() bool { // requests per request meanwhile keep the key
		tk := ticket(0, rule)
		if d, err := l.redis.Admit(context.Background(), tk); err != nil || d != nil {
			t.Fatalf("per request: %v %v", d, err)
		}
		l.Done(tk, 0)
		now, _ := c.Time(context.Background()).Result()
		return now.UnixMilli()/50 > t0.UnixMilli()/50+63
	}) {
		t.Fatal("Redis's clock did not move")
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	all := c.HGetAll(context.Background(), key).Val()
	var sum, s int64
	for f, v := range all {
		n, _ := strconv.ParseInt(v, 10, 64)
		switch f {
		case "s":
			s = n
		case "h":
		default:
			if n < 0 {
				t.Errorf("slot %s counts %d", f, n)
			}
			sum += n
		}
	}
	if s != sum {
		t.Fatalf("the window's sum is %d, its slots count %d: %v", s, sum, all)
	}
}
