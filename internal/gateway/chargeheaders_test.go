package gateway

import (
	"net/http"
	"testing"
)

// TestChargeHeadersInSlots: the cost header's value lives in the charge's
// slot (one allocation, the number's string, where a slice of its own was
// made per answer too), under Tollgate's name and LiteLLM's, with capacity
// 1 so that an Add does not write into the next slot.
func TestChargeHeadersInSlots(t *testing.T) {
	c := &charge{}
	h := http.Header{}
	c.headers(h, 0.00123)
	if v := h[hdrCost]; len(v) != 1 || v[0] != "0.00123" || cap(v) != 1 {
		t.Fatalf("%s: %q (cap %d)", hdrCost, v, cap(v))
	}
	if v := h[llmCost]; len(v) != 1 || v[0] != "0.00123" {
		t.Fatalf("%s: %q", llmCost, v)
	}
	h.Add(hdrCost, "x")
	if c.hv[chargeKeySpend] != "" || h[llmCost][0] != "0.00123" {
		t.Fatalf("an Add wrote into the charge's slots: %q", c.hv)
	}
	if n := testing.AllocsPerRun(200, func() { c.headers(h, 0.00123) }); n != 1 {
		t.Errorf("%.1f allocations, want 1 (the value's string)", n)
	}
}
