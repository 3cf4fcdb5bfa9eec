package gateway

import (
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ratelimit"
)

// TestAppendResetMatchesString: appendReset writes what formatReset (the
// duration rounded to the millisecond, by time.Duration.String) writes,
// for every millisecond up to three hours, around each rounding edge, for
// negative, huge and random durations.
func TestAppendResetMatchesString(t *testing.T) {
	check := func(d time.Duration) {
		if got, want := string(appendReset([]byte("x"), d)), "x"+formatReset(d); got != want {
			t.Fatalf("appendReset(%d) = %q, want %q", int64(d), got, want)
		}
	}
	for ms := int64(0); ms <= 3*3600*1000; ms++ {
		check(time.Duration(ms) * time.Millisecond)
	}
	for _, d := range []time.Duration{-1, -time.Hour, math.MinInt64, math.MaxInt64, math.MaxInt64 - time.Millisecond, 499 * time.Microsecond, 500 * time.Microsecond, 999_499_999, 999_500_000, 59_999_500_000, 3_599_999_500_000, 100 * time.Hour, 1<<40 + 123456789} {
		check(d)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 1_000_000 {
		check(time.Duration(r.Int64N(int64(1000 * time.Hour))))
		check(time.Duration(r.Int64()))
	}
}

// oldLimitHeaders is limitHeaders as it was before its values were made
// from one buffer (each formatted apart), kept as the reference.
func oldLimitHeaders(h http.Header, tk *ratelimit.Ticket) {
	if tk == nil {
		return
	}
	var vals []string
	for i := range 2 {
		best, found := ratelimit.State{}, -1
		for j, r := range tk.Rules() {
			isTok := r.Kind == ratelimit.Tokens || r.Kind == ratelimit.TokenBucket
			if r.Kind == ratelimit.Parallel || isTok != (i == 1) {
				continue
			}
			if found < 0 || tk.States[j].Remaining < best.Remaining {
				best, found = tk.States[j], j
			}
		}
		if found < 0 {
			continue
		}
		if vals == nil {
			vals = make([]string, 6)
		}
		v := vals[3*i : 3*i+3 : 3*i+3]
		v[0] = strconv.FormatInt(tk.Rules()[found].Limit, 10)
		v[1] = strconv.FormatInt(max(best.Remaining, 0), 10)
		v[2] = formatReset(best.Reset)
		k := &limitHeaderKeys[i]
		h[k[0]], h[k[1]], h[k[2]] = v[0:1:1], v[1:2:2], v[2:3:3]
	}
}

// TestLimitHeadersMatchOld: for tickets of 0 to 6 rules of every kind
// (windows and buckets of requests and tokens, parallel slots), with
// limits, remaining counts (negative ones too) and resets drawn at random,
// the x-ratelimit-* headers are the old code's, each value a slice of
// length and capacity 1 (an Add must not write into a neighbour).
func TestLimitHeadersMatchOld(t *testing.T) {
	kinds := []ratelimit.Kind{ratelimit.Requests, ratelimit.Tokens, ratelimit.RequestBucket, ratelimit.TokenBucket, ratelimit.Parallel}
	r := rand.New(rand.NewPCG(5, 6))
	num := func() int64 {
		switch r.IntN(4) {
		case 0:
			return r.Int64N(10)
		case 1:
			return r.Int64N(1000)
		case 2:
			return r.Int64N(1 << 40)
		}
		return r.Int64()
	}
	for n := range 20_000 {
		tk := new(ratelimit.Ticket)
		for range n % 7 {
			tk.Add(ratelimit.Rule{Kind: kinds[r.IntN(len(kinds))], Limit: num(), Window: time.Minute, Name: "rpm_limit"})
		}
		for j := range tk.States {
			tk.States[j] = ratelimit.State{Remaining: num() - num()/2, Reset: time.Duration(r.Int64N(int64(2*time.Hour))) - time.Second}
		}
		got, want := http.Header{"X-Other": {"a"}}, http.Header{"X-Other": {"a"}}
		limitHeaders(got, tk)
		oldLimitHeaders(want, tk)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ticket %d: headers %v, want %v", n, got, want)
		}
		for k, v := range got {
			if len(v) != 1 || cap(v) != 1 {
				t.Fatalf("ticket %d: %s has length %d, capacity %d", n, k, len(v), cap(v))
			}
		}
		got.Add("X-Ratelimit-Limit-Requests", "extra")
		for _, k := range limitHeaderKeys[1] {
			if v := got[k]; len(v) > 0 && v[0] != want[k][0] {
				t.Fatalf("ticket %d: an Add to another header changed %s to %q", n, k, v[0])
			}
		}
	}
	limitHeaders(http.Header{}, nil) // no ticket: nothing to write, no panic
}

// TestCachedNumbersMatchFormat: cachedInt and cachedBudget give what
// strconv gives, for numbers that share a table entry, asked in turn from
// many goroutines at once (run it with -race).
func TestCachedNumbersMatchFormat(t *testing.T) {
	ints := []int64{0, 5, 99, 100, 101, 100000000, 10000000000, -1, -100, math.MaxInt64, math.MinInt64}
	for i := range int64(300) { // more numbers than entries: collisions
		ints = append(ints, i*7919+1000)
	}
	floats := []float64{0, 1, 0.5, 1e6, 1000000, 123.456, 1e-9, 1e21, math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1), math.NaN(), math.Copysign(0, -1), -3.25}
	for i := range 300 {
		floats = append(floats, float64(i)*1.37)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 50 {
				for i := range ints {
					n := ints[(i+g*37+round)%len(ints)]
					if got, want := cachedInt(n), strconv.FormatInt(n, 10); got != want {
						errs <- "cachedInt(" + want + ") = " + got
						return
					}
				}
				for i := range floats {
					v := floats[(i+g*31+round)%len(floats)]
					if got, want := cachedBudget(v), strconv.FormatFloat(v, 'g', -1, 64); got != want {
						errs <- "cachedBudget(" + want + ") = " + got
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
