package ledger

import (
	"runtime"
	"testing"
	"unsafe"
	"weak"

	"github.com/tollgate/tollgate/internal/store"
)

// A request's principal formats the key's hash into a buffer of its own
// (auth.Principal.setKey), so an account named by a slice of that buffer
// would keep the whole principal alive for as long as the account lives:
// ≈ 600 B for every key that has made a request.
func TestAccountDoesNotKeepItsIDsBufferAlive(t *testing.T) {
	b := NewBook(nil)
	buf := make([]byte, 640)
	copy(buf, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	w := weak.Make(&buf[0])
	id := unsafe.String(&buf[0], 64)
	a := b.Account(store.KindKey, id, Spec{})
	buf, id = nil, ""
	runtime.GC()
	runtime.GC()
	if w.Value() != nil {
		t.Fatal("the account keeps the buffer its id was read from alive")
	}
	if got := b.Account(store.KindKey, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Spec{}); got != a {
		t.Fatal("the account is not found again by its id")
	}
	runtime.KeepAlive(b)
}
