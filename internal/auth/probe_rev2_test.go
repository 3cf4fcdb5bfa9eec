package auth

import (
	"net/http"
	"time"

	"github.com/tollgate/tollgate/internal/config"
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

// TestProbeUpdateOneOfTwoAlike: two keys loaded alike (one shared part);
// each update of one key is what the next request sees, and the other key
// keeps its values.
func TestProbeUpdateOneOfTwoAlike(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	base := func(raw string) *store.Key {
		return &store.Key{TokenHash: HashHex(raw), KeyName: raw, UserID: "u", Models: []string{"m"},
			Metadata: map[string]any{"a": "b"}, Aliases: map[string]string{"x": "y"}, Limits: store.Limits{MaxBudget: f(5), RPMLimit: i64(3)}}
	}
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{base("sk-one"), base("sk-two")}})
	a := NewAuthenticator(&config.Config{}, snap, Options{})
	read := func(raw string) *store.Key {
		req, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
		req.Header.Set("Authorization", "Bearer "+raw)
		var p Principal
		if err := a.AuthenticateInto(req, &p); err != nil {
			return nil
		}
		return p.Key
	}
	updates := []func(k *store.Key){
		func(k *store.Key) { k.Models = []string{"m", "n"} },
		func(k *store.Key) { k.MaxBudget = f(6) },
		func(k *store.Key) { k.RPMLimit = i64(4) },
		func(k *store.Key) { k.Metadata = map[string]any{"a": "c"} },
		func(k *store.Key) { k.Aliases = map[string]string{"x": "z"} },
		func(k *store.Key) { k.TPMLimit = i64(9) },
		func(k *store.Key) { e := time.Date(2300, 1, 1, 0, 0, 0, 0, time.FixedZone("Y", -7200)); k.Expires = &e },
		func(k *store.Key) { k.Blocked = true },
	}
	cur := base("sk-one")
	for i, u := range updates {
		u(cur)
		snap.PutKey(clone(cur))
		got := read("sk-one")
		if cur.Blocked {
			if got != nil {
				t.Fatalf("update %d: a blocked key was let in", i)
			}
		} else if got == nil || !reflect.DeepEqual(*got, *cur) {
			t.Fatalf("update %d:\n got %+v\nwant %+v", i, got, cur)
		}
		if other := read("sk-two"); other == nil || !reflect.DeepEqual(*other, *base("sk-two")) {
			t.Fatalf("update %d of one key changed the other: %+v", i, other)
		}
	}
}

// TestProbeConcurrentUpdatesReadWhole: while one key is rewritten between
// two versions, every request reads one version whole (its models, budget
// and alias agree), under -race.
func TestProbeConcurrentUpdatesReadWhole(t *testing.T) {
	version := func(n int) *store.Key {
		b := float64(n)
		alias := string(rune('a' + n))
		return &store.Key{TokenHash: HashHex("sk-c"), KeyName: "c", KeyAlias: &alias, Models: []string{alias},
			Metadata: map[string]any{"v": alias}, Limits: store.Limits{MaxBudget: &b}, UpdatedAt: time.Unix(int64(n), 0).UTC()}
	}
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{version(0)}})
	a := NewAuthenticator(&config.Config{}, snap, Options{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			snap.PutKey(version(i % 2))
		}
	}()
	req, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer sk-c")
	for stop := false; !stop; {
		select {
		case <-done:
			stop = true
		default:
		}
		p, err := a.Authenticate(req)
		if err != nil {
			t.Fatal(err)
		}
		k := p.Key
		n := int(*k.MaxBudget)
		want := string(rune('a' + n))
		if *k.KeyAlias != want || k.Models[0] != want || k.Metadata["v"] != want {
			t.Fatalf("mixed versions: budget %v alias %q models %v metadata %v", *k.MaxBudget, *k.KeyAlias, k.Models, k.Metadata)
		}
	}
}

// TestProbeWritesDuringLoadWin: a key blocked, updated or deleted while
// the start-up load runs keeps that state when the load's older row
// arrives.
func TestProbeWritesDuringLoadWin(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	row := func(raw string) *store.Key {
		return &store.Key{TokenHash: HashHex(raw), KeyName: raw, Models: []string{"m"}, UpdatedAt: t1}
	}
	snap := NewSnapshot(nil)
	snap.StartLoading()
	blocked := row("sk-blocked")
	blocked.Blocked, blocked.UpdatedAt = true, t1.Add(time.Second)
	snap.PutKey(blocked)
	updated := row("sk-updated")
	updated.Models, updated.UpdatedAt = []string{"n"}, t1.Add(time.Second)
	snap.PutKey(updated)
	snap.PutKey(row("sk-deleted"))
	snap.DeleteKey(HashHex("sk-deleted"))
	snap.PutLoadedKeys([]*store.Key{row("sk-blocked"), row("sk-updated"), row("sk-deleted"), row("sk-new")})
	snap.DoneLoading()
	if k, ok := snap.Key(HashHex("sk-blocked")); !ok || !k.Blocked {
		t.Errorf("blocked during the load: %+v", k)
	}
	if k, ok := snap.Key(HashHex("sk-updated")); !ok || !reflect.DeepEqual(k.Models, []string{"n"}) {
		t.Errorf("updated during the load: %+v", k)
	}
	if k, ok := snap.Key(HashHex("sk-deleted")); ok {
		t.Errorf("deleted during the load, back: %+v", k)
	}
	if _, ok := snap.Key(HashHex("sk-new")); !ok {
		t.Error("a loaded key is missing")
	}
}
