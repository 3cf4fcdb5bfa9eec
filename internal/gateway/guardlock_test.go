package gateway

import (
	"testing"

	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/store"
)

// BenchmarkGuardLock is what guardLock adds to every request: an unlocked
// key and team (the common case), and a locked team whose request names
// no guardrails (the body is then searched for the three members).
func BenchmarkGuardLock(b *testing.B) {
	body := []byte(`{"model":"gpt-4","metadata":{"tags":["a"]},"messages":[{"role":"user","content":"hello there"}]}`)
	req, err := decode(body, "")
	if err != nil {
		b.Fatal(err)
	}
	md := map[string]any{"note": "x", "guardrails": []any{"pii-mask"}}
	locked := map[string]any{"guardrails": map[string]any{"modify_guardrails": false}}
	for _, bc := range []struct {
		name string
		team map[string]any
	}{{"unlocked", md}, {"locked", locked}} {
		c := &call{req: req, p: &auth.Principal{Key: &store.Key{Metadata: md}, Team: &store.Team{Metadata: bc.team}}}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if c.guardLock() != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}
