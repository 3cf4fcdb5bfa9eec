package ledger

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/rscript"
)

// TestPackedBudgetMatchesOld: the budget hold and settle with the hold's
// numbers packed in one string, read in place by offset (the fused
// scripts' way), do exactly what the scripts before did (oldbudget_test.go)
// over a random walk of holds in every mode, settles, releases, carried
// spend and settles in doubt, new periods, leases expiring, a lost account
// and leases of the layout before: the same replies, and after every step
// the same keys with the same contents. Both run on the real Redis against
// a clock the test sets (TIME is replaced by a read of a hash), on keys of
// their own.
func TestPackedBudgetMatchesOld(t *testing.T) {
	c, r, prefix := redisRig(t, "packed")
	ctx := context.Background()
	clock := "{" + prefix + "}:clock"
	fake := func(src string) *rscript.Script {
		return rscript.New(strings.ReplaceAll(src, "redis.call('TIME')", "redis.call('HMGET', '"+clock+"', 's', 'us')"))
	}
	oldHold := fake(oldLuaNow + oldLuaHold + "\nreturn bud_hold(KEYS, ARGV)\n")
	oldSettle := fake(oldLuaSettle + "\nreturn bud_settle(KEYS, ARGV)\n")
	newHold := fake(luaNow + luaHold + "\nreturn bud_hold(KEYS, ARGV, 0, 0)\n")
	newSettle := fake(luaSettle + "\nreturn bud_settle(KEYS, ARGV, 0, 0)\n")
	// As in the fused scripts: the gate's keys and arguments first.
	newHoldAt := fake(luaNow + luaHold + "\nreturn bud_hold(KEYS, ARGV, 2, 3)\n")
	newSettleAt := fake(luaSettle + "\nreturn bud_settle(KEYS, ARGV, 2, 3)\n")
	if !strings.Contains(luaNow, "redis.call('TIME')") || !strings.Contains(oldLuaNow, "redis.call('TIME')") {
		t.Fatal("the hold does not read TIME")
	}

	const ttl = 60_000 // ms: leases expire within the walk
	const nAcc = 3
	side := func(name string) (keys []string, pres string) {
		for i := range nAcc {
			keys = append(keys, fmt.Sprintf("{%s}:%s:bud:acct%d", prefix, name, i))
		}
		return keys, fmt.Sprintf("{%s}:%s:replicas", prefix, name)
	}
	oldKeys, oldPres := side("old")
	newKeys, newPres := side("new")
	junk := []string{"{" + prefix + "}:junk1", "{" + prefix + "}:junk2"}

	seed := uint64(31)
	rnd := func(n uint64) uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return (seed >> 33) % n }
	nowMS := int64(1_764_460_000_123)
	setClock := func() {
		if err := c.HSet(ctx, clock, "s", nowMS/1000, "us", nowMS%1000*1000+int64(rnd(1000))).Err(); err != nil {
			t.Fatal(err)
		}
	}
	setClock()
	// Leases of the layout before on account 0: one expiring in the walk.
	for _, k := range []string{oldKeys[0], newKeys[0]} {
		c.HSet(ctx, k, "spent", 100, "period", 5, "held", 700)
		c.HSet(ctx, k+":h", "legacy1", 300, "legacy2", 400)
		c.ZAdd(ctx, k+":e", redisZ(nowMS+5_000, "legacy1"), redisZ(nowMS+500_000, "legacy2"))
	}
	// dump is every key of a side, named without the side, with its
	// contents and whether it has an expiry.
	dump := func(name string) string {
		keys, err := c.Keys(ctx, "{"+prefix+"}:"+name+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			typ, _ := c.Type(ctx, k).Result()
			var v any
			switch typ {
			case "hash":
				v, err = c.HGetAll(ctx, k).Result()
			case "zset":
				v, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
			default:
				t.Fatalf("%s is a %s", k, typ)
			}
			if err != nil {
				t.Fatal(err)
			}
			pttl, _ := c.PTTL(ctx, k).Result()
			fmt.Fprintf(&b, "%s %s %v expiry=%v\n", strings.TrimPrefix(k, "{"+prefix+"}:"+name+":"), typ, v, pttl > 0)
		}
		return b.String()
	}
	run := func(s *rscript.Script, keys []string, args []any) []int64 {
		res, err := rscript.Int64s(r.Run(ctx, s, keys, args...))
		if err != nil {
			t.Fatalf("%v (keys %v)", err, keys)
		}
		return res
	}

	budgets := []int64{20_000, 1 << 61, 1_000_000}
	periods := []int64{5, 1_764_460_000_000_000_001, 0}
	type lease struct {
		name string
		accs []int
	}
	var inflight []lease
	seen := map[string]int{}
	for step := range 2500 {
		switch x := rnd(100); {
		case x < 10:
			nowMS += int64(rnd(5_000))
		case x < 13:
			nowMS += int64(ttl + rnd(3*ttl)) // leases expire
		case x < 14:
			nowMS += 86_400_000 + int64(rnd(1000)) // a day: expiry refreshed, markers swept
		}
		setClock()
		if rnd(30) == 0 { // a replica's heartbeat
			m := fmt.Sprintf("replica-%d", rnd(3))
			for _, p := range []string{oldPres, newPres} {
				c.ZAdd(ctx, p, redisZ(nowMS, m))
			}
		}
		if rnd(25) == 0 { // a new budget period on one account
			i := rnd(nAcc)
			periods[i] += int64(1 + rnd(1_000_000_000))
		}
		if rnd(150) == 0 { // Redis lost an account
			i := rnd(nAcc)
			c.Del(ctx, oldKeys[i], newKeys[i])
		}
		x := rnd(100)
		switch {
		case x < 55 || len(inflight) == 0:
			// A hold on one to three accounts.
			perm := []int{0, 1, 2}
			for i := len(perm) - 1; i > 0; i-- {
				j := int(rnd(uint64(i + 1)))
				perm[i], perm[j] = perm[j], perm[i]
			}
			accs := perm[:1+rnd(nAcc)]
			mode := int64(rnd(3))
			amount := int64(rnd(1500))
			switch rnd(12) {
			case 0:
				amount = 0
			case 1:
				amount = 1<<61 - int64(rnd(1<<20))
			case 2:
				amount = 1<<53 + int64(rnd(1000))
			case 3, 4, 5, 6:
				amount = 15_000 + int64(rnd(10_000)) // more than account 0 has left, often
			}
			est, capped := int64(rnd(400)), int64(rnd(200))
			if rnd(6) == 0 {
				est = 1<<54 + int64(rnd(100))
			}
			name := fmt.Sprintf("lease%d", step)
			ttlArg := int64(ttl)
			alive := int64(30_000)
			oa := []any{amount, name, ttlArg, fmt.Sprint(mode), est, capped}
			na := []any{nil, name}
			packed := holdArgs(len(accs), amount, ttlArg, mode, est, capped, alive)
			var ok, nk []string
			for _, i := range accs {
				sd := int64(rnd(3000))
				if i == 1 && rnd(10) == 0 { // the account whose budget is 2^61
					sd = 1<<60 + int64(rnd(1<<30))
				}
				carry := "0"
				switch rnd(14) {
				case 0:
					carry = fmt.Sprintf("c:tag%d=%d", rnd(40), rnd(500))
				case 1:
					if len(inflight) > 0 {
						l := inflight[rnd(uint64(len(inflight)))]
						carry = fmt.Sprintf("s:%s=%d,c:tag%d=%d", l.name, rnd(800), rnd(40), int64(rnd(500))-100)
					}
				case 2:
					if i == 1 {
						carry = fmt.Sprintf("c:big%d=%d", rnd(5), int64(1<<58)+int64(rnd(1000)))
					}
				}
				oa = append(oa, budgets[i], sd, periods[i], carry)
				packed = binary.BigEndian.AppendUint64(packed, uint64(budgets[i]))
				na = append(na, sd, periods[i], carry)
				ok, nk = append(ok, oldKeys[i]), append(nk, newKeys[i])
			}
			na[0] = string(packed)
			oa = append(oa, alive)
			ok, nk = append(ok, oldPres), append(nk, newPres)
			want := run(oldHold, ok, oa)
			var got []int64
			if rnd(2) == 0 {
				got = run(newHold, nk, na)
			} else {
				got = run(newHoldAt, append(append([]string{}, junk...), nk...), append([]any{"j1", "j2", "j3"}, na...))
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d: hold (mode %d, amount %d, accounts %v): packed %v, old %v", step, mode, amount, accs, got, want)
			}
			switch {
			case want[0] == 1 && want[len(want)-1] == 1:
				seen["held capped"]++
			case want[0] == 1 && want[len(want)-2] < amount:
				seen["held short"]++
			case want[0] == 1:
				seen["held"]++
			case len(want) == 6:
				seen["refused: short busy"]++
			default:
				seen["refused"]++
			}
			if want[0] == 1 {
				inflight = append(inflight, lease{name, accs})
			}
		default:
			// A settle (or a release: 0) of a hold in flight, or of a lease
			// that is not there (after a failed reserve, or swept).
			var l lease
			if rnd(12) == 0 {
				l = lease{fmt.Sprintf("gone%d", step), []int{int(rnd(nAcc))}}
			} else {
				j := int(rnd(uint64(len(inflight))))
				l = inflight[j]
				inflight = append(inflight[:j], inflight[j+1:]...)
			}
			actual := int64(rnd(2000))
			switch rnd(40) {
			case 0, 1, 2, 3, 4:
				actual = 0
			case 5:
				actual = 1<<60 + int64(rnd(1000)) // past every budget but one, till a new period
			}
			var ok, nk []string
			for _, i := range l.accs {
				ok, nk = append(ok, oldKeys[i]), append(nk, newKeys[i])
			}
			ok, nk = append(ok, oldPres), append(nk, newPres)
			args := []any{actual, l.name, 0}
			want := run(oldSettle, ok, args)
			var got []int64
			if rnd(2) == 0 {
				got = run(newSettle, nk, args)
			} else {
				got = run(newSettleAt, append(append([]string{}, junk...), nk...), append([]any{"j1", "j2", "j3"}, args...))
			}
			// The packed reply ends with each account's period (branch
			// ledgergaps), which the old one lacks.
			if len(got) != len(want)+len(l.accs) || !reflect.DeepEqual(got[:len(want)], want) {
				t.Fatalf("step %d: settle of %s (%d): packed %v, old %v", step, l.name, actual, got, want)
			}
			seen["settled"]++
		}
		if o, n := dump("old"), dump("new"); o != n {
			t.Fatalf("step %d: the keys differ:\npacked:\n%s\nold:\n%s", step, n, o)
		}
	}
	for _, k := range []string{"held", "held short", "held capped", "refused", "refused: short busy", "settled"} {
		if seen[k] < 5 {
			t.Fatalf("the walk was too tame: %v", seen)
		}
	}
	t.Logf("outcomes: %v", seen)
}

func redisZ(score int64, member string) redis.Z {
	return redis.Z{Score: float64(score), Member: member}
}

// TestBudNum: bud_num reads back every int64 packed by holdArgs as the Lua
// number tonumber makes of its decimal form (what the hold used before),
// the extremes, negatives and values past 2^53 included.
func TestBudNum(t *testing.T) {
	c := redisClient(t)
	src := luaNum + `
local out = {}
for i = 2, #ARGV do
  local a, b = bud_num(ARGV[1], (i - 2) * 8 + 1), tonumber(ARGV[i])
  if a ~= b then out[#out + 1] = ARGV[i] .. ' read as ' .. string.format('%.17g', a) end
end
return out
`
	vals := []int64{0, 1, -1, 255, 256, -256, 4294967295, 4294967296, -4294967296, -4294967297,
		1<<53 - 1, 1 << 53, 1<<53 + 1, -(1<<53 + 1), 1<<61 - 1, 1 << 61, -(1 << 61),
		math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1, 1_764_460_000_123}
	seed := uint64(7)
	for range 300 {
		seed = seed*6364136223846793005 + 1442695040888963407
		vals = append(vals, int64(seed), int64(seed>>uint(seed%64)))
	}
	args := []any{string(holdArgs(0, vals...))}
	for _, v := range vals {
		args = append(args, v)
	}
	bad, err := c.Eval(context.Background(), src, nil, args...).Result()
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := bad.([]any); len(l) != 0 {
		t.Fatalf("bud_num differs from tonumber: %v", l)
	}
}
