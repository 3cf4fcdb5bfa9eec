package ratelimit

import (
	"testing"
	"time"
)

var ticketSink *Ticket

// BenchmarkTicket is a rate-limited request's ticket, made as the gateway
// makes one that goes to the limiter (its rules gathered in a reused
// Draft, then a heap ticket sized to them: Draft.Ticket), with a key's
// rpm, tpm and parallel limits: its bytes are the ticket's share of a
// governed request's. (b.N tickets of 22 rules: BenchmarkTicket22.)
func BenchmarkTicket(b *testing.B) { benchTicket(b, 3) }

// BenchmarkTicket22 is BenchmarkTicket with a fully limited hierarchy's 21
// rules and one localRateLimit bucket.
func BenchmarkTicket22(b *testing.B) { benchTicket(b, 22) }

// BenchmarkTicket6 is BenchmarkTicket with six rules: a key's, its team's
// limits (or a user's, or an end user's).
func BenchmarkTicket6(b *testing.B) { benchTicket(b, 6) }

func benchTicket(b *testing.B, n int) {
	r := Rule{Scope: Scope{"key", "k"}, Kind: Requests, Limit: 10, Window: time.Minute, Name: "rpm_limit"}
	d := new(Draft)
	b.ReportAllocs()
	for b.Loop() {
		for range n {
			d.Add(r)
		}
		ticketSink = d.Ticket()
		d.Reset()
	}
}

// reuse empties t for its next rules, keeping its storage: benchmarks of
// an admission's cost, not a ticket's.
func (t *Ticket) reuse() {
	r, s, a := t.rules[:0], t.States[:0], t.al[:0]
	*t = Ticket{}
	t.rules, t.States, t.al = r, s, a
}
