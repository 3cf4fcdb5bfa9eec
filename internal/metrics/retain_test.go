package metrics

import (
	"runtime"
	"testing"
	"unsafe"
	"weak"
)

// A request's principal formats the key's hash into a buffer of its own
// (auth.Principal.setKey); a key's spend series labelled with a slice of
// it would keep the whole principal alive for as long as the series.
func TestKeySeriesDoesNotKeepTheHashsBufferAlive(t *testing.T) {
	m := New(Options{KeyLabels: true})
	buf := make([]byte, 640)
	copy(buf, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	w := weak.Make(&buf[0])
	m.ObserveRequest(&Request{Operation: "chat", Provider: "openai", RequestModel: "gpt-4", ModelGroup: "gpt-4", Status: 200,
		Cost: 0.01, KeyHash: unsafe.String(&buf[0], 8), KeyAlias: "a"})
	buf = nil
	runtime.GC()
	runtime.GC()
	if w.Value() != nil {
		t.Fatal("the key's spend series keeps the buffer its hash was read from alive")
	}
	runtime.KeepAlive(m)
}
