package jsonbody

import (
	"bytes"
	"testing"
)

// cursorMembers walks c to its end: the keys and values it gives.
func cursorMembers(c *Cursor) (ms [][2][]byte) {
	for {
		k, v, more := c.Next()
		if !more {
			return ms
		}
		ms = append(ms, [2][]byte{k, v})
	}
}

// TestProbeReuseAcrossBodies: an Object and a Cursor reused from one body to
// the next (Reset, Start, StartValid, after a full, partial or failed walk
// of the previous body, which may have had more members than the record
// holds) give what fresh ones give: nothing of the previous body's record
// is carried over. checkRecords only uses fresh ones.
func TestProbeReuseAcrossBodies(t *testing.T) {
	cases := recordCases()
	var o Object
	var c Cursor
	for i, prev := range cases {
		for j, b := range cases {
			if (i+j)%3 != 0 && i != j { // a third of the pairs: enough, and quick
				continue
			}
			_ = o.Reset(prev)
			var fresh Object
			ferr := fresh.Reset(b)
			err := o.Reset(b)
			if (err == nil) != (ferr == nil) || len(o.Members) != len(fresh.Members) {
				t.Fatalf("Reset(%.60q) after Reset(%.60q): %v, %d members; fresh %v, %d", b, prev, err, len(o.Members), ferr, len(fresh.Members))
			}
			for k, m := range o.Members {
				f := fresh.Members[k]
				if m.Key != f.Key || !bytes.Equal(m.Value, f.Value) || m.start != f.start || m.end != f.end {
					t.Fatalf("Reset(%.60q) after Reset(%.60q): member %d %q, fresh %q", b, prev, k, m.Key, f.Key)
				}
			}
			if err == nil && !bytes.Equal(o.With("model", []byte(`"m"`)), fresh.With("model", []byte(`"m"`))) {
				t.Fatalf("With after reuse differs over %.60q", b)
			}

			var fc Cursor
			fstart := fc.Start(b)
			want := cursorMembers(&fc)
			for _, taken := range []int{0, 5, cursorTops, cursorTops + 1, 1 << 30} {
				if c.Start(prev) == nil {
					for range taken {
						if _, _, more := c.Next(); !more {
							break
						}
					}
				}
				if got := c.Start(b); (got == nil) != (fstart == nil) {
					t.Fatalf("Start(%.60q) after %d of %.60q: %v, fresh %v", b, taken, prev, got, fstart)
				}
				got := cursorMembers(&c)
				if len(got) != len(want) {
					t.Fatalf("Cursor over %.60q after %d of %.60q: %d members, fresh %d", b, taken, prev, len(got), len(want))
				}
				for k := range got {
					if !bytes.Equal(got[k][0], want[k][0]) || !bytes.Equal(got[k][1], want[k][1]) {
						t.Fatalf("Cursor over %.60q after %.60q: member %d %q, fresh %q", b, prev, k, got[k][0], want[k][0])
					}
				}
				// StartValid over a validated body after a recorded walk.
				if fstart == nil {
					_ = c.Start(prev)
					_, _, _ = c.Next()
					if !c.StartValid(b) {
						t.Fatalf("StartValid(%.60q) false", b)
					}
					if got := cursorMembers(&c); len(got) != len(want) {
						t.Fatalf("StartValid over %.60q after Start(%.60q): %d members, fresh %d", b, prev, len(got), len(want))
					}
				}
			}
		}
	}
}
