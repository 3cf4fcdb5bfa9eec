package ratelimit

import (
	"runtime"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/tollgate/tollgate/internal/store"
)

// A request's principal formats the key's hash into a buffer of its own
// (auth.Principal.setKey); a counter state whose scope is a slice of it
// would keep the whole principal alive until the state is swept, and a
// state's rule, rewritten by every request, the last request's.
func TestLocalStateDoesNotKeepItsScopesBufferAlive(t *testing.T) {
	l := NewLocal()
	hold := func(kind Kind) weak.Pointer[byte] {
		buf := make([]byte, 640)
		copy(buf, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
		r := &Rule{Scope: Scope{Entity: store.KindKey, ID: unsafe.String(&buf[0], 64)}, Kind: kind, Limit: 10, Window: time.Minute, Name: "rpm_limit"}
		l.mu.Lock()
		l.get(r, time.Now(), &lastScope{})
		l.mu.Unlock()
		return weak.Make(&buf[0])
	}
	// The second finds the first's state; the third is a new state of the
	// same scope, behind the first in its list.
	first, second, third := hold(Requests), hold(Requests), hold(Parallel)
	runtime.GC()
	runtime.GC()
	if first.Value() != nil || second.Value() != nil || third.Value() != nil {
		t.Fatalf("a counter state keeps the buffer its scope was read from alive (first %v, second %v, third %v)", first.Value() != nil, second.Value() != nil, third.Value() != nil)
	}
	if len(l.scopes) != 1 || l.count() != 2 {
		t.Fatalf("%d scopes, %d states, want 1 and 2", len(l.scopes), l.count())
	}
	runtime.KeepAlive(l)
}
