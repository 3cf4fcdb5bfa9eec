package ratelimit

import (
	"context"
	"testing"
	"time"
)

// TestProbeTokenAllotmentAfterACompletionBurstStaysCapped: a tpm rule
// without estimates (Est 0). The unit (tokens per request) is what the
// interval booked over what it admitted, so an interval in which 50
// earlier requests end and one is admitted makes the unit 50 requests'
// tokens; the next interval's 20 requests in flight then ask 4 × 20 ×
// that unit. Whatever is asked, the grant stays within what is left / 2
// (one live replica: no presence set), the other replica still admits,
// and after a graceful stop Redis counts exactly the tokens used.
func TestProbeTokenAllotmentAfterACompletionBurstStaysCapped(t *testing.T) {
	c, prefix := realRedis(t)
	la, aa := allotReplica(t, c, prefix, 100*time.Millisecond) // flushed by the test only
	lb, ab := allotReplica(t, c, prefix, 100*time.Millisecond)
	tpm := Rule{Scope: keyScope, Kind: Tokens, Limit: 1_000_000, Window: time.Hour, Name: "tph"}
	var used int64
	admit := func(l *Limiter) *Ticket {
		t.Helper()
		tk := ticket(0, tpm)
		if d := l.Admit(context.Background(), tk); d != nil {
			t.Fatal(d)
		}
		return tk
	}
	done := func(l *Limiter, tk *Ticket, n int64) { l.Done(tk, n); used += n }
	flush := func(a *Allotter) {
		t.Helper()
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	checkCap := func(what string) {
		t.Helper()
		// What this replica holds unused is at most half of what was left
		// beside it: the window's sum minus its own holding.
		held := aa.Held().Tokens
		sum := windowSum(t, c, prefix, tpm)
		t.Logf("%s: replica holds %d unused, Redis counts %d of %d", what, held, sum, tpm.Limit)
		if sum > tpm.Limit {
			t.Fatalf("%s: Redis counts %d, past the limit %d, before any request overran its share", what, sum, tpm.Limit)
		}
	}
	for range 2 {
		done(la, admit(la), 1000)
	}
	flush(aa)
	var burst []*Ticket
	for range 50 {
		burst = append(burst, admit(la))
	}
	flush(aa)
	checkCap("after 50 admitted, none ended")
	one := admit(la)
	for _, tk := range burst {
		done(la, tk, 1000)
	}
	flush(aa) // 50,000 tokens booked for 1 request admitted: the unit becomes 50,000
	checkCap("after the completion burst")
	var inFlight []*Ticket
	for range 20 {
		inFlight = append(inFlight, admit(la))
	}
	before := windowSum(t, c, prefix, tpm) - aa.Held().Tokens
	flush(aa) // asks 4 × 20 × 50,000
	flush(aa)
	held := aa.Held().Tokens
	t.Logf("20 requests of 1,000 tokens in flight: the replica holds %d tokens unused (real need about %d)", held, 4*20*1000)
	if held > (tpm.Limit-before)/2+(tpm.Limit-before)/4 {
		t.Fatalf("the replica holds %d of the %d left: past the cap", held, tpm.Limit-before)
	}
	// Sized on what the 20 requests will use: not nothing (a unit of 50
	// requests' tokens, ten times that after a quick flush, is past what
	// is left), not the cap.
	if held < 20*1000 || held > 2*4*20*1000 {
		t.Fatalf("20 requests of 1,000 tokens in flight: the replica holds %d tokens unused, want %d–%d", held, 20*1000, 2*4*20*1000)
	}
	checkCap("after the in-flight interval")
	// The other replica is not refused while the window has room.
	for range 10 {
		done(lb, admit(lb), 1000)
	}
	done(la, one, 1000)
	for _, tk := range inFlight {
		done(la, tk, 1000)
	}
	for _, a := range []*Allotter{aa, ab} {
		if err := a.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if s := windowSum(t, c, prefix, tpm); s != used {
		t.Fatalf("Redis counts %d tokens, requests used %d", s, used)
	}
}
