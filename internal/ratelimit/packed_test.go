package ratelimit

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/rscript"
)

// TestPackedGateMatchesOld: the gate's scripts with the rules packed in
// one binary string decide exactly as the scripts before (oldgate_test.go)
// over a random walk of admissions (taken, or not taken as when a fused
// budget hold is refused), settlements and pauses, on several rules of
// every kind at once: the same replies, and after every step the same
// keys with the same contents. Both run on the real Redis against a clock
// the test sets (TIME is replaced by a read of a hash), on keys of their
// own.
func TestPackedGateMatchesOld(t *testing.T) {
	c, prefix := realRedis(t)
	ctx := context.Background()
	clock := "{" + prefix + "}:clock"
	fake := func(src string) *rscript.Script {
		if !strings.Contains(src, "redis.call('TIME')") {
			t.Fatal("the script does not read TIME")
		}
		return rscript.New(strings.ReplaceAll(src, "redis.call('TIME')", "redis.call('HMGET', '"+clock+"', 's', 'us')"))
	}
	const admitTail = `
local out, take = gate_admit(KEYS, ARGV)
if take and ARGV[#ARGV] == 'take' then take() end
return out
`
	const doneTail = `
gate_done(KEYS, ARGV)
return 1
`
	oldGate := oldLuaCommon + oldLuaAdmit + oldLuaDone + "\nlocal gate_admit, gate_done = rl_admit, rl_done\n"
	oldAdmit, oldDone := fake(oldGate+admitTail), fake(oldGate+doneTail)
	newAdmit, newDone := fake(gateLua+admitTail), fake(gateLua+doneTail)

	r := runner(t, c)
	oldRd, newRd := NewRedis(r, prefix+"-old"), NewRedis(r, prefix+"-new")
	const ttl = 60_000
	other := Scope{"team", "t1"}
	rules := []Rule{
		{Scope: keyScope, Kind: Requests, Limit: 8, Window: time.Minute, Name: "rpm_limit"},
		{Scope: keyScope, Kind: Tokens, Limit: 500, Window: time.Minute, Name: "tpm_limit"},
		{Scope: keyScope, Kind: Parallel, Limit: 3, Name: "max_parallel_requests"},
		{Scope: other, Kind: Requests, Limit: 1<<62 + 12345, Window: 2 * time.Minute, Name: "rpm_limit"},
		{Scope: other, Kind: Tokens, Limit: 1200, Window: 2 * time.Minute, Name: "tpm_limit"},
		{Scope: keyScope, Kind: RequestBucket, Limit: 5, Window: 10 * time.Second, Fill: 1, Name: "localRateLimit[0]"},
		{Scope: other, Kind: TokenBucket, Limit: 400, Window: 10 * time.Second, Fill: 50, Name: "localRateLimit[1]"},
		{Scope: Scope{"user", "u1"}, Kind: TokenBucket, Limit: 1 << 55, Window: 10 * time.Second, Fill: -3, Name: "localRateLimit[2]"},
	}
	var keys []string
	for i := range rules {
		keys = append(keys, oldRd.key(&rules[i]), newRd.key(&rules[i]))
	}
	keys = append(keys, clock)
	t.Cleanup(func() { c.Del(context.Background(), keys...) })

	seed := uint64(31)
	rnd := func(n uint64) uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return (seed >> 33) % n }
	nowMS := int64(1_764_460_000_123)
	setClock := func() {
		if err := c.HSet(ctx, clock, "s", nowMS/1000, "us", nowMS%1000*1000+int64(rnd(1000))).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// dump is a key's contents and whether it has an expiry.
	dump := func(key string) string {
		typ, err := c.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "hash":
			v, err = c.HGetAll(ctx, key).Result()
		case "zset":
			v, err = c.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "none":
		default:
			t.Fatalf("%s is a %s", key, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		pttl, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s %v expiry=%v", typ, v, pttl > 0)
	}
	run := func(s *rscript.Script, keys []string, args ...any) []int64 {
		res, err := rscript.Int64s(r.Run(ctx, s, keys, args...))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	type open struct {
		t    *Ticket
		atMS int64
	}
	var inflight []open
	refused := map[string]int{}
	admitted, settled := 0, 0
	for step := range 1500 {
		switch x := rnd(100); {
		case x < 10:
			nowMS += int64(rnd(2000))
		case x < 13:
			nowMS += int64(20_000 + rnd(200_000)) // past a window, some
		}
		setClock()
		if x := rnd(100); x < 60 || len(inflight) == 0 {
			tk := &Ticket{Est: int64(rnd(120))}
			switch rnd(20) {
			case 0:
				tk.Est = int64(rnd(2000)) // past some limits
			case 1, 2, 3:
				tk.Est = 0 // no estimate (no tokenize)
			}
			for i := range rules {
				if rnd(3) == 0 {
					tk.Add(rules[i])
				}
			}
			if len(tk.rules) == 0 {
				tk.Add(rules[rnd(uint64(len(rules)))])
			}
			tk.lease = fmt.Sprintf("lease-%d", step)
			take := "take"
			if rnd(8) == 0 {
				take = "leave" // the budget hold refused: decided, not taken
			}
			ok, oa := oldRd.oldArgs(tk, tk.Est, tk.lease, int64(ttl))
			nk, na := newRd.args(tk, tk.Est, ttl)
			got, want := run(newAdmit, nk, append(na, take)...), run(oldAdmit, ok, append(oa, take)...)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d: admission of %v: packed %v, old %v", step, tk.Rules(), got, want)
			}
			if got[0] == 0 {
				refused[kindNames[tk.Rules()[got[1]-1].Kind]]++
			} else if take == "take" {
				admitted++
				inflight = append(inflight, open{tk, got[1]})
			}
		} else {
			j := int(rnd(uint64(len(inflight))))
			o := inflight[j]
			inflight = append(inflight[:j], inflight[j+1:]...)
			tokens := int64(rnd(300))
			if rnd(10) == 0 {
				tokens = 0
			}
			delta := tokens - o.t.Est
			ok, oa := oldRd.oldArgs(o.t, delta, o.t.lease, o.atMS)
			nk, na := newRd.args(o.t, delta, o.atMS)
			for _, call := range []struct {
				s *rscript.Script
				k []string
				a []any
			}{{oldDone, ok, oa}, {newDone, nk, na}} {
				if _, err := r.Run(ctx, call.s, call.k, call.a...); err != nil {
					t.Fatalf("step %d: settlement: %v", step, err)
				}
			}
			settled++
		}
		for i := range rules {
			o, n := dump(oldRd.key(&rules[i])), dump(newRd.key(&rules[i]))
			if o != n {
				t.Fatalf("step %d: %s (%s) differs: packed %s, old %s", step, rules[i].Name, kindNames[rules[i].Kind], n, o)
			}
		}
	}
	// The walk must have met every outcome for it to show anything.
	if admitted < 100 || settled < 100 || len(refused) < 4 {
		t.Fatalf("the walk was too tame: %d admitted, %d settled, refusals by kind %v", admitted, settled, refused)
	}
	t.Logf("%d admitted, %d settled, refusals by kind %v", admitted, settled, refused)
}

// TestPackedNumbers: rl_num reads back every int64 as the Lua number
// tonumber makes of its decimal form (what the scripts used before), the
// extremes and values past 2^53 included.
func TestPackedNumbers(t *testing.T) {
	c, _ := realRedis(t)
	r := runner(t, c)
	s := rscript.New(luaPacked + `
local out = {}
for i = 2, #ARGV do
  local a, b = rl_num(ARGV[1], (i - 2) * 8 + 1), tonumber(ARGV[i])
  if a ~= b then out[#out + 1] = ARGV[i] .. ' read as ' .. string.format('%.17g', a) end
end
return out
`)
	vals := []int64{0, 1, -1, 255, 256, -256, 4294967295, 4294967296, -4294967296, -4294967297,
		1<<53 - 1, 1 << 53, 1<<53 + 1, -(1<<53 + 1), 1<<62 + 12345, -(1<<62 + 12345),
		math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1, 1_764_460_000_123}
	seed := uint64(5)
	for range 300 {
		seed = seed*6364136223846793005 + 1442695040888963407
		vals = append(vals, int64(seed), int64(seed>>uint(seed%64)))
	}
	rd, tk := NewRedis(r, ""), &Ticket{}
	args := []any{nil}
	var buf []byte
	for _, v := range vals {
		_, a := rd.args(tk, v, 0) // the encoder the scripts are called with
		buf = append(buf, a[0].([]byte)[:8]...)
		args = append(args, v)
	}
	args[0] = buf
	bad, err := r.Run(context.Background(), s, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := bad.([]any); len(l) != 0 {
		t.Fatalf("rl_num differs from tonumber: %v", l)
	}
}
