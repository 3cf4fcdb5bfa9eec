package jsonbody

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzScan: any bytes either fail to scan or give members whose values
// read back, and whose edits stay valid JSON objects.
func FuzzScan(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	f.Add([]byte(`{"a\u00e9":1,"b":{"c":[1,2,{"d":null}]},"e":"x\"y"}`))
	f.Add([]byte(` { } `))
	f.Fuzz(func(t *testing.T, b []byte) {
		var o Object
		err := o.Reset(b)
		checkCursor(t, b, &o, err)
		if err != nil {
			return
		}
		for _, m := range o.Members {
			if !json.Valid(m.Value) {
				t.Fatalf("member %q has invalid value %q", m.Key, m.Value)
			}
		}
		for _, m := range o.Members {
			if got := o.Get(m.Key); got == nil {
				t.Fatalf("Get(%q) = nil for a scanned member", m.Key)
			}
			_, _ = o.String(m.Key)
			_, _ = o.Bool(m.Key)
			_, _ = o.Int(m.Key)
			edited := o.With(m.Key, []byte(`17`))
			var e Object
			if err := e.Reset(edited); err != nil {
				t.Fatalf("With(%q) made %q from %q: %v", m.Key, edited, b, err)
			}
			if !bytes.Equal(e.Get(m.Key), []byte(`17`)) {
				t.Fatalf("With(%q) then Get = %q", m.Key, e.Get(m.Key))
			}
		}
		added := o.With("tollgate_fuzz_new", []byte(`true`))
		var e Object
		if err := e.Reset(added); err != nil || !e.Has("tollgate_fuzz_new") {
			t.Fatalf("adding a member to %q gave %q: %v", b, added, err)
		}
	})
}

// FuzzRelax: Relax never panics, leaves valid JSON untouched, and its
// output is only ever accepted after validation.
func FuzzRelax(f *testing.F) {
	f.Add([]byte("{\"max_budget\": 10,}"))
	f.Add([]byte("{\"models\": [\"beta-models\"], # 👈 Model Access Group\n \"x\": 1 // c\n}"))
	f.Add([]byte(`{"s":"# not a comment, // nor this,]"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, changed := Relax(b)
		if json.Valid(b) && (changed || !bytes.Equal(out, b)) {
			t.Fatalf("Relax changed valid JSON %q to %q", b, out)
		}
		if !changed && !bytes.Equal(out, b) {
			t.Fatalf("Relax reports no change but %q became %q", b, out)
		}
	})
}

// checkCursor: a Cursor over b fails as Reset failed and otherwise gives
// Reset's members, in order, with the keys KeyIs matches to theirs.
func checkCursor(t *testing.T, b []byte, o *Object, resetErr error) {
	t.Helper()
	var c Cursor
	err := c.Start(b)
	if (err == nil) != (resetErr == nil) || (err != nil && err.Error() != resetErr.Error()) {
		t.Fatalf("Start(%q) = %v, Reset gave %v", b, err, resetErr)
	}
	if err != nil {
		return
	}
	for i := 0; ; i++ {
		k, v, ok := c.Next()
		if !ok {
			if i != len(o.Members) {
				t.Fatalf("Cursor over %q gave %d members, Reset %d", b, i, len(o.Members))
			}
			return
		}
		if i >= len(o.Members) || !KeyIs(k, o.Members[i].Key) || !bytes.Equal(v, o.Members[i].Value) {
			t.Fatalf("Cursor over %q: member %d is %q: %q", b, i, k, v)
		}
	}
}
