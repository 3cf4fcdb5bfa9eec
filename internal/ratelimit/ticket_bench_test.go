package ratelimit

import (
	"testing"
	"time"
)

var ticketSink *Ticket

// BenchmarkTicket is a rate-limited request's ticket, made as the gateway
// makes one that goes to the limiter (a heap ticket), with a key's rpm, tpm
// and parallel limits: its bytes are the ticket's share of a governed
// request's. (b.N tickets of 22 rules: BenchmarkTicket22.)
func BenchmarkTicket(b *testing.B) { benchTicket(b, 3) }

// BenchmarkTicket22 is BenchmarkTicket with a fully limited hierarchy's 21
// rules and one localRateLimit bucket.
func BenchmarkTicket22(b *testing.B) { benchTicket(b, 22) }

func benchTicket(b *testing.B, n int) {
	r := Rule{Scope: Scope{"key", "k"}, Kind: Requests, Limit: 10, Window: time.Minute, Name: "rpm_limit"}
	b.ReportAllocs()
	for b.Loop() {
		t := new(Ticket)
		for range n {
			t.Add(r)
		}
		ticketSink = t
	}
}
