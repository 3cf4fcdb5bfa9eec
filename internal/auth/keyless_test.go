package auth

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// TestKeylessAllocatesNothing: an open gateway's request without a key
// gets the one read-only empty principal (no allocation: 640 bytes a
// request before); a request with a key, or a closed gateway, does not.
func TestKeylessAllocatesNothing(t *testing.T) {
	open := NewAuthenticator(&config.Config{}, nil, Options{})
	req, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
	p, err := open.Authenticate(req)
	if err != nil || p == nil || !reflect.DeepEqual(*p, Principal{}) {
		t.Fatalf("open, no key: %+v, %v", p, err)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = open.Authenticate(req) }); allocs != 0 {
		t.Errorf("open, no key: %v allocations, want 0", allocs)
	}
	keyed, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
	keyed.Header.Set("Authorization", "Bearer sk-anything")
	q, err := open.Authenticate(keyed)
	if err != nil || q == p || q.KeyHash != config.HashKey("sk-anything") {
		t.Fatalf("open, a key: %+v (shared %v), %v", q, q == p, err)
	}
	if !reflect.DeepEqual(*p, Principal{}) {
		t.Fatalf("the keyless principal changed: %+v", p)
	}
	closed := NewAuthenticator(&config.Config{GeneralSettings: config.GeneralSettings{MasterKey: "sk-master"}}, nil, Options{})
	if _, err := closed.Authenticate(req); err != ErrNoKey {
		t.Fatalf("closed, no key: %v, want ErrNoKey", err)
	}
}
