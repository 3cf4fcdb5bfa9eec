package sqlstore

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestSpendBlockAttrFilterSkipsRepeats: a block's attribute filter, which
// skips a value its previous row added for the same attribute, is bit for
// bit the filter of every row's every value added; through runs of one
// value, values alternating between rows, a value moving from one
// attribute to another, empty values, a block reset and a block whose
// summary was read back (its next row adds its values again).
func TestSpendBlockAttrFilterSkipsRepeats(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 2))
	pick := func(vals ...string) string { return vals[r.IntN(len(vals))] }
	key := func(i int) string { return fmt.Sprintf("%064x", i) }
	for round := range 200 {
		b := newSpendBlock()
		want := make([]byte, spendAttrFilterBytes)
		n := 1 + r.IntN(spendBlockRows-1)
		for i := range n {
			l := store.SpendLog{RequestID: fmt.Sprintf("r%d-%d", round, i),
				KeyHash: pick(key(1), key(1), key(1), key(2), "", "x"), UserID: pick("u1", "u1", "u2", "", "x"),
				TeamID: pick("t1", "", "x"), EndUser: pick("", "", "e1", "u1"), ModelGroup: pick("gpt-4", "gpt-4", "claude", "x")}
			if r.IntN(4) == 0 {
				l.RequestTags = []string{pick("a", "b", "x")}
			}
			b.add(&l)
			for _, a := range []struct {
				kind byte
				v    string
			}{{attrKey, l.KeyHash}, {attrUser, l.UserID}, {attrTeam, l.TeamID}, {attrEndUser, l.EndUser}, {attrModel, l.ModelGroup}} {
				if a.v != "" {
					filterAdd(want, a.kind, a.v)
				}
			}
			for _, tag := range l.RequestTags {
				filterAdd(want, attrTag, tag)
			}
			switch r.IntN(40) {
			case 0: // the block stored and reset: a new block, an empty filter
				b.reset()
				clear(want)
			case 1: // the open block read back: its summary from its bytes
				stored := b.summaryBytes()
				b.sum = nil
				if !b.setSummary(stored) {
					t.Fatal("the summary did not read back")
				}
			}
			if !bytes.Equal(b.attrs, want) {
				t.Fatalf("round %d, row %d (%+v): the attribute filter differs from every value added", round, i, l)
			}
		}
	}
}
