package ledger

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeSeedAndDoubtListAgree: a hold on an account Redis does not
// have (flushed, or an older period) sends a seed and the items in doubt,
// and Redis applies every item on top of the seed. An item that an answer
// resolves between the two (another hold landing, the background carry)
// must then be in exactly one of them: in the seed and sent, it counts
// twice.
func TestProbeSeedAndDoubtListAgree(t *testing.T) {
	a := NewAccount(store.KindKey, "k", 0, USD(100))
	const x = 7
	a.spent.Add(1000 + x) // 1000 on Redis, x in doubt
	a.used.Add(1000 + x)
	a.remote().carrying.Add(x)
	a.doubtful(carryItem{tag: "x", amount: x})
	var stop atomic.Bool
	var flips atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // answers resolve the item; it is lost again (in doubt anew)
		defer wg.Done()
		for !stop.Load() {
			a.resolve([]string{"x"}, true, 0)
			a.remote().carrying.Add(x)
			a.doubtful(carryItem{tag: "x", amount: x})
			flips.Add(1)
		}
	}()
	bad := 0
	// Until the other side has resolved it often, while this one holds.
	for i := 0; flips.Load() < 300000 && i < 100000000 && bad == 0; i++ {
		_, sent, seed, _ := a.holdArg(0, "", 1<<62, 0)
		got := seed
		if len(sent) == 1 {
			got += x
		}
		// 1000 (the item in carrying, not in the list yet) is fine: it is
		// sent later, to a key that then has its marker.
		if got > 1000+x {
			bad++
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d holds sent a seed and items that count the item in doubt twice", bad)
	}
}
