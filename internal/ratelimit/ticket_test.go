package ratelimit

import (
	"fmt"
	"testing"
	"time"
	"unsafe"
)

// TestDraftTicketSizedToItsRules: a Draft's ticket holds the rules added
// (those of negative limit left out), in order, with a state and an
// allotment slot each, in storage of its own: resetting and refilling the
// draft (as the gateway does for its next request) changes nothing in a
// ticket made before, which a Redis settlement may still read. Up to
// sizedRules rules the ticket and its rules are one block of 120 bytes and
// 128 a rule: within 512 bytes (no malloc header) up to 3 rules, and
// from 4 exactly a size class with the allocator's 8-byte header.
func TestDraftTicketSizedToItsRules(t *testing.T) {
	var d Draft
	for n := range 30 {
		d.Reset()
		want := make([]Rule, 0, n)
		for i := range n {
			r := Rule{Scope: Scope{"key", fmt.Sprintf("k%d", i)}, Kind: Kind(i % 5), Limit: int64(i), Window: time.Minute, Name: fmt.Sprint("r", i)}
			d.Add(r)
			want = append(want, r)
			d.Add(Rule{Scope: r.Scope, Limit: -1}) // unlimited: left out
		}
		tk := d.Ticket()
		d.Reset()
		for range n + 2 {
			d.Add(Rule{Scope: Scope{"team", "other"}, Limit: 7, Name: "x"})
		}
		got := tk.Rules()
		if len(got) != n || len(tk.States) != n || len(tk.al) != n {
			t.Fatalf("%d rules: a ticket of %d rules, %d states, %d allotments", n, len(got), len(tk.States), len(tk.al))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%d rules: rule %d is %+v, want %+v", n, i, got[i], want[i])
			}
		}
		if n <= sizedRules && (cap(got) != n || cap(tk.States) != n || cap(tk.al) != n) {
			t.Fatalf("%d rules: room for %d rules, %d states, %d allotments", n, cap(got), cap(tk.States), cap(tk.al))
		}
		tk.Add(Rule{Scope: Scope{"key", "late"}, Limit: 1, Name: "late"}) // past its room: grows
		if len(tk.Rules()) != n+1 || tk.Rules()[n].Name != "late" || (n > 0 && tk.Rules()[0] != want[0]) {
			t.Fatalf("%d rules: a rule added to a sized ticket: %+v", n, tk.Rules())
		}
	}
	sizes := []uintptr{unsafe.Sizeof(ticket1{}), unsafe.Sizeof(ticket2{}), unsafe.Sizeof(ticket3{}), unsafe.Sizeof(ticket4{}),
		unsafe.Sizeof(ticket5{}), unsafe.Sizeof(ticket6{}), unsafe.Sizeof(ticket7{}), unsafe.Sizeof(ticket8{})}
	for i, s := range sizes {
		if want := uintptr(120 + 128*(i+1)); s != want {
			t.Errorf("a ticket of %d rules is %d bytes, want %d", i+1, s, want)
		}
	}
	if len(sizes) != sizedRules {
		t.Fatalf("%d block sizes for %d sized rules", len(sizes), sizedRules)
	}
}

// TestDraftResetDropsItsRules: a Draft kept for reuse holds no request's
// strings once reset.
func TestDraftResetDropsItsRules(t *testing.T) {
	var d Draft
	for range draftRules + 3 { // past its own room too
		d.Add(Rule{Scope: Scope{"key", "k"}, Limit: 1, Name: "rpm_limit", Label: "l"})
	}
	d.Reset()
	for i, r := range d.buf {
		if r != (Rule{}) {
			t.Fatalf("rule %d kept after Reset: %+v", i, r)
		}
	}
	if len(d.Rules()) != 0 {
		t.Fatalf("%d rules after Reset", len(d.Rules()))
	}
}
