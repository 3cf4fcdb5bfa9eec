package ratelimit

import (
	"context"
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
