package ledger

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestDoubtBoundAndHorizon: items whose call lost its answer stay in doubt
// up to maxDoubt per account, the next one going back to unsynced (carried
// again under a new tag: never lost); every item in doubt goes with the
// next carry, a settle as one (by its lease) until the horizon and as plain
// tagged spend after; an answer drops them once; SetSpent forgets them. All
// along, unsynced + carrying is what Redis may not have.
func TestDoubtBoundAndHorizon(t *testing.T) {
	a := NewAccount(store.KindKey, "k", 0, USD(10))
	owed := func() int64 { return a.remote().unsynced.Load() + a.remote().carrying.Load() }
	for i := range maxDoubt + 1 {
		a.remote().unsynced.Add(1) // a settle while Redis was away
		p := a.claimUnsynced()
		if _, sent := a.carryArg(p, "t"+strconv.Itoa(i), 0, 0); i > 0 && len(sent) != min(i, maxDoubt) {
			t.Fatalf("carry %d sent %d items in doubt, want %d", i, len(sent), min(i, maxDoubt))
		}
		a.landCarry(outUnknown, p, "t"+strconv.Itoa(i), nil, false, 0)
	}
	if n := a.remote().doubt.n.Load(); n != maxDoubt || a.remote().unsynced.Load() != 1 || owed() != maxDoubt+1 {
		t.Fatalf("%d in doubt, unsynced %d, owed %d; want %d, 1, %d", n, a.remote().unsynced.Load(), owed(), maxDoubt, maxDoubt+1)
	}
	// The oldest tags are kept (a new tag for one already sent could count it twice).
	if a.remote().doubt.items[0].tag != "t0" {
		t.Fatalf("first item in doubt %q, want t0", a.remote().doubt.items[0].tag)
	}

	b := NewAccount(store.KindKey, "k", 0, USD(10))
	const horizon = int64(time.Minute)
	b.remote().carrying.Add(5)
	b.doubtful(carryItem{tag: "sL", lease: "L", amount: 5, at: 100})
	if arg, _ := b.carryArg(0, "", horizon, 100+horizon-1); arg != "s:L=5," {
		t.Fatalf("before the horizon: %v, want the settle by its lease", arg)
	}
	arg, sent := b.carryArg(3, "T", horizon, 100+horizon)
	if s, _ := arg.(string); !strings.Contains(s, "c:T=3,") || !strings.Contains(s, "c:sL=5,") || len(sent) != 1 {
		t.Fatalf("at the horizon: %v %v, want the pending and the settle as tagged spend", arg, sent)
	}
	b.remote().carrying.Add(3) // as claimUnsynced would have
	b.landCarry(outRan, 3, "T", sent, false, 0)
	b.landCarry(outRan, 0, "", sent, false, 0) // a second carrier of the same item
	if b.remote().carrying.Load() != 0 || b.remote().doubt.n.Load() != 0 {
		t.Fatalf("after the answer: carrying %d, %d in doubt; want 0, 0", b.remote().carrying.Load(), b.remote().doubt.n.Load())
	}
	if arg, _ := b.carryArg(0, "", horizon, 0); arg != int64(0) {
		t.Fatalf("nothing to carry sent %v, want 0", arg)
	}

	a.SetSpent(USD(1))
	if a.remote().doubt.n.Load() != 0 || owed() != 0 {
		t.Fatalf("after SetSpent: %d in doubt, owed %d", a.remote().doubt.n.Load(), owed())
	}
}
