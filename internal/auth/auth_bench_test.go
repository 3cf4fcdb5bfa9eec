package auth

import (
	"net/http"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// BenchmarkAuthenticate is the key lookup of every request: hash the
// presented key, find it in the snapshot, check it is usable.
func BenchmarkAuthenticate(b *testing.B) {
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{{TokenHash: config.HashKey("sk-bench-key"), KeyName: "sk-...key"}}})
	a := NewAuthenticator(&config.Config{GeneralSettings: config.GeneralSettings{MasterKey: "sk-master"}}, snap, Options{})
	req, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer sk-bench-key")
	var p Principal
	b.ReportAllocs()
	for b.Loop() {
		if err := a.AuthenticateInto(req, &p); err != nil || p.Key == nil {
			b.Fatal(err)
		}
	}
}
