package auth

import (
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeSharedValuesDoNotCollide: two keys whose lists, aliases,
// metadata or config differ but spell the same once their parts are
// joined with NULs (a JSON string may hold \u0000) must each read back
// their own value from a snapshot loaded with both.
func TestProbeSharedValuesDoNotCollide(t *testing.T) {
	mk := func(raw string) *store.Key { return &store.Key{TokenHash: HashHex(raw), KeyName: raw} }
	a, b := mk("sk-a"), mk("sk-b")
	a.Models, b.Models = []string{"x\x00y", "z"}, []string{"x", "y\x00z"}
	a.Aliases, b.Aliases = map[string]string{"p": "q\x00r\x00s"}, map[string]string{"p": "q", "r": "s"}
	a.Metadata, b.Metadata = map[string]any{"m": "v\x00n\x00sw"}, map[string]any{"m": "v", "n": "w"}
	a.Config, b.Config = map[string]any{"c": "1\x00d\x00s2"}, map[string]any{"c": "1", "d": "2"}
	want := []store.Key{*clone(a), *clone(b)}
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{a, b}})
	loaded := NewSnapshot(nil)
	loaded.PutLoadedKeys([]*store.Key{clone(&want[0]), clone(&want[1])})
	for _, s := range []*Snapshot{snap, loaded} {
		for _, w := range want {
			got, ok := s.Key(w.TokenHash)
			if !ok {
				t.Fatalf("%s missing", w.KeyName)
			}
			if !reflect.DeepEqual(got.Models, w.Models) || !reflect.DeepEqual(got.Aliases, w.Aliases) ||
				!reflect.DeepEqual(got.Metadata, w.Metadata) || !reflect.DeepEqual(got.Config, w.Config) {
				t.Errorf("%s reads another key's values:\n got %q %q %q %q\nwant %q %q %q %q", w.KeyName,
					got.Models, got.Aliases, got.Metadata, got.Config, w.Models, w.Aliases, w.Metadata, w.Config)
			}
		}
	}
}
