package auth

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// TestDeletedKeyStaysDeleted: a resync that read a key's row before the key
// was deleted on this replica (or before its tombstone) does not put it
// back; a key written again after the deletion does come back.
func TestDeletedKeyStaysDeleted(t *testing.T) {
	h := HashHex("sk-deleted-key")
	written := time.Now().Add(-time.Second)
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{{TokenHash: h, UpdatedAt: written}}})
	stale := &store.Snapshot{Keys: []*store.Key{{TokenHash: h, UpdatedAt: written}}}
	tomb := []store.Deletion{{Kind: store.KindKey, ID: h, At: written.Add(time.Millisecond)}}
	again := &store.Snapshot{Keys: []*store.Key{{TokenHash: h, UpdatedAt: time.Now().Add(time.Second)}}}
	// The cases run in order on one snapshot.
	tests := []struct {
		name      string
		deleteNow bool // the management API deleted the key on this replica
		changed   *store.Snapshot
		deleted   []store.Deletion
		present   bool
	}{
		{"deleted here, stale row read", true, stale, nil, false},
		{"tombstone and stale row in one resync", false, stale, tomb, false},
		{"written again after the deletion", false, again, tomb, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.deleteNow {
				snap.DeleteKey(h)
			}
			snap.Apply(tt.changed, tt.deleted, time.Time{})
			sum := Hash("sk-deleted-key")
			_, byHash := snap.Key(h)
			_, bySum := snap.KeyBySum(&sum)
			if byHash != tt.present || bySum != tt.present {
				t.Fatalf("key present: %v/%v, want %v", byHash, bySum, tt.present)
			}
		})
	}
}

func p64(v int64) *int64 { return &v }

// TestBudgetObjectsFillLimits: a key or end user that names a budget is
// published with the budget's limits where its own are unset, follows the
// budget's changes and deletion, and a resync (Apply) that brings a budget
// and what names it together resolves them in either order.
func TestBudgetObjectsFillLimits(t *testing.T) {
	s := NewSnapshot(&store.Snapshot{Budgets: []*store.Budget{{BudgetID: "b", Limits: store.Limits{RPMLimit: p64(1), TPMLimit: p64(100)}}}})
	s.PutKey(&store.Key{TokenHash: "k", BudgetID: "b", Limits: store.Limits{TPMLimit: p64(5)}})
	s.PutEndUser(&store.EndUser{UserID: "e", BudgetID: "b"})
	k, _ := s.Key("k")
	if k.RPMLimit == nil || *k.RPMLimit != 1 || *k.TPMLimit != 5 {
		t.Fatalf("key: rpm %v tpm %v, want the budget's rpm 1 and its own tpm 5", k.RPMLimit, *k.TPMLimit)
	}
	s.PutBudget(&store.Budget{BudgetID: "b", Limits: store.Limits{RPMLimit: p64(9)}})
	k, _ = s.Key("k")
	e, _ := s.EndUser("e")
	if *k.RPMLimit != 9 || *e.RPMLimit != 9 || e.TPMLimit != nil {
		t.Fatalf("after the budget's update: key rpm %d, end user rpm %d tpm %v", *k.RPMLimit, *e.RPMLimit, e.TPMLimit)
	}
	s.DeleteBudget("b")
	k, _ = s.Key("k")
	if k.RPMLimit != nil || *k.TPMLimit != 5 {
		t.Fatalf("after the budget's deletion: key rpm %v", k.RPMLimit)
	}
	// A deleted key is not brought back by its budget's change.
	s.DeleteKey("k")
	s.PutBudget(&store.Budget{BudgetID: "b", Limits: store.Limits{RPMLimit: p64(2)}})
	if _, ok := s.Key("k"); ok {
		t.Fatal("a budget change resurrected a deleted key")
	}
	// A resync carrying a new budget and the end user that names it.
	s.Apply(&store.Snapshot{EndUsers: []*store.EndUser{{UserID: "f", BudgetID: "c"}}, Budgets: []*store.Budget{{BudgetID: "c", Limits: store.Limits{MaxBudget: func() *float64 { v := 3.0; return &v }()}}}}, nil, time.Time{})
	if f, _ := s.EndUser("f"); f.MaxBudget == nil || *f.MaxBudget != 3 {
		t.Fatalf("resync: end user max_budget %v", f.MaxBudget)
	}
	// Team memberships and organizations.
	team := &store.Team{TeamID: "t", OrganizationID: "o", Members: []store.TeamMember{{UserID: "ann", BudgetID: "c"}, {UserID: "bob"}}}
	s.PutTeam(team)
	s.PutOrganization(&store.Organization{OrganizationID: "o", BudgetID: "c"})
	if b := s.MemberBudget(team, "ann"); b == nil || b.BudgetID != "c" {
		t.Fatalf("ann's membership budget: %v", b)
	}
	if b := s.MemberBudget(team, "bob"); b != nil {
		t.Fatalf("bob has no membership budget, got %v", b)
	}
	if o, b := s.TeamOrganization(team); o == nil || b == nil || b.BudgetID != "c" {
		t.Fatalf("team organization: %v %v", o, b)
	}
	s.Apply(nil, []store.Deletion{{Kind: store.KindOrganization, ID: "o"}, {Kind: store.KindTeam, ID: "t"}}, time.Time{})
	if o, _ := s.TeamOrganization(team); o != nil {
		t.Fatal("deleted organization still found")
	}
	if b := s.MemberBudget(team, "ann"); b != nil {
		t.Fatal("deleted team's membership budget still found")
	}
}

// TestKeyIndexEveryHashShape: the one key index finds a key by its token
// hash exactly as stored and, when that hash is a sha256 hex digest in any
// case, by the digest; a hash that is not a digest only by the string.
// Deleting a key removes it from every path.
func TestKeyIndexEveryHashShape(t *testing.T) {
	lower := HashHex("sk-lower")
	upper := strings.ToUpper(HashHex("sk-upper"))
	mixed := HashHex("sk-mixed")
	mixed = strings.ToUpper(mixed[:10]) + mixed[10:]
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{{TokenHash: lower}, {TokenHash: upper}, {TokenHash: "not-a-digest"}}})
	snap.PutKey(&store.Key{TokenHash: mixed})
	for _, c := range []struct{ raw, hash string }{{"sk-lower", lower}, {"sk-upper", upper}, {"sk-mixed", mixed}} {
		sum := Hash(c.raw)
		if k, ok := snap.KeyBySum(&sum); !ok || k.TokenHash != c.hash {
			t.Fatalf("%s by digest: %v %v", c.raw, k, ok)
		}
		if k, ok := snap.Key(c.hash); !ok || k.TokenHash != c.hash {
			t.Fatalf("%s by hash: %v %v", c.raw, k, ok)
		}
	}
	if _, ok := snap.Key(strings.ToLower(upper)); ok {
		t.Fatal("a hash stored in upper case found by its lower-case spelling")
	}
	if _, ok := snap.Key("not-a-digest"); !ok {
		t.Fatal("a key whose hash is not a digest is missing")
	}
	n := 0
	snap.RangeKeys(func(*store.Key) bool { n++; return true })
	if n != 4 {
		t.Fatalf("RangeKeys visited %d keys, want 4", n)
	}
	for _, h := range []string{lower, upper, mixed, "not-a-digest"} {
		snap.DeleteKey(h)
		if _, ok := snap.Key(h); ok {
			t.Fatalf("%s still found after its deletion", h)
		}
	}
	for _, raw := range []string{"sk-lower", "sk-upper", "sk-mixed"} {
		sum := Hash(raw)
		if _, ok := snap.KeyBySum(&sum); ok {
			t.Fatalf("%s still found by digest after its deletion", raw)
		}
	}
}

// TestCompactedKeysKeepTheirValues: keys loaded together share equal
// values (ids, model lists, metadata) yet each reads as it was stored, and
// a later write to one key's record leaves the others alone.
func TestCompactedKeysKeepTheirValues(t *testing.T) {
	mk := func(h, user string, models []string, md map[string]any) *store.Key {
		budget := float64(len(user)) + 4 // 5 for u, 5 for v
		if h == "k3" {
			budget = 7
		}
		return &store.Key{TokenHash: h, UserID: user, Models: models, Metadata: md, Aliases: map[string]string{"a": "b"},
			Limits: store.Limits{MaxBudget: &budget, RPMLimit: p64(int64(len(h)))}}
	}
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{
		mk("k1", "u", []string{"m1", "m2"}, map[string]any{"app": "x", "n": 1.0}),
		mk("k2", "u", []string{"m1", "m2"}, map[string]any{"app": "x", "n": 1.0}),
		mk("k3", "v", []string{"m1"}, map[string]any{"app": "y", "nested": map[string]any{"a": 1.0}}),
	}})
	k1, _ := snap.Key("k1")
	k2, _ := snap.Key("k2")
	k3, _ := snap.Key("k3")
	if k1.UserID != "u" || k3.UserID != "v" || len(k1.Models) != 2 || k1.Models[1] != "m2" || len(k3.Models) != 1 ||
		k2.Metadata["app"] != "x" || k2.Metadata["n"] != 1.0 || k3.Metadata["app"] != "y" || k3.Aliases["a"] != "b" {
		t.Fatalf("values changed: %+v %+v %+v", k1, k2, k3)
	}
	if *k1.MaxBudget != 5 || *k2.MaxBudget != 5 || *k3.MaxBudget != 7 || *k3.RPMLimit != 2 || k1.MaxBudget != k2.MaxBudget {
		t.Fatalf("limits: %v %v %v rpm %v", *k1.MaxBudget, *k2.MaxBudget, *k3.MaxBudget, *k3.RPMLimit)
	}
	if &k1.Models[0] != &k2.Models[0] {
		t.Fatal("equal model lists were not shared")
	}
	// An append to a shared list must not show in the other key.
	grown := append(k1.Models, "m3")
	grown[0] = "changed"
	if k2.Models[0] != "m1" || len(k2.Models) != 2 {
		t.Fatalf("an append to one key's models changed another's: %v", k2.Models)
	}
}

// TestPackedKeysReadAsStored: a key reads back from the snapshot's packed
// record exactly as it was put, whichever way it went in (loaded together
// with others, or written alone) and whichever way it is read (decoded for
// management, or read into the request's Principal), with every field set
// or left unset, times in UTC or not, and a name holding a NUL.
func TestPackedKeysReadAsStored(t *testing.T) {
	at := time.Date(2026, 11, 29, 12, 0, 0, 123456789, time.UTC)
	local := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	f := func(v float64) *float64 { return &v }
	s := func(v string) *string { return &v }
	tm := func(v time.Time) *time.Time { return &v }
	full := &store.Key{TokenHash: HashHex("sk-full"), KeyName: "sk-...full", KeyAlias: s("full"), UserID: "u", TeamID: "t",
		Models: []string{"a", "b"}, Aliases: map[string]string{"x": "y"}, Config: map[string]any{"c": 1.0},
		Metadata: map[string]any{"m": "v", "n": map[string]any{"d": true}}, Tags: []string{"tag"}, Spend: 1.5,
		SoftBudget: f(2), Limits: store.Limits{MaxBudget: f(3), BudgetDuration: s("30d"), BudgetResetAt: tm(at),
			MaxParallelRequests: p64(4), TPMLimit: p64(5), RPMLimit: p64(6)},
		ModelMaxBudget: map[string]float64{"a": 1}, ModelRPMLimit: map[string]int64{"a": 2}, ModelTPMLimit: map[string]int64{"a": 3},
		ModelSpend: map[string]float64{"a": 0.5}, AllowedCacheControls: []string{"no-cache"}, Expires: tm(at.AddDate(100, 0, 0)),
		BlockedBy: "owner", CreatedBy: "admin", CreatedAt: at, UpdatedAt: at.Add(time.Second)}
	tests := []struct {
		name string
		raw  string
		key  *store.Key
	}{
		{"every field set", "sk-full", full},
		{"nothing set", "sk-bare", &store.Key{TokenHash: HashHex("sk-bare")}},
		{"empty alias, empty lists and maps", "sk-empty", &store.Key{TokenHash: HashHex("sk-empty"), KeyName: "n", KeyAlias: s(""),
			Models: []string{}, Aliases: map[string]string{}, Metadata: map[string]any{}, ModelSpend: map[string]float64{}}},
		{"times not in UTC, a NUL in the name", "sk-odd", &store.Key{TokenHash: HashHex("sk-odd"), KeyName: "a\x00b", KeyAlias: s("c"),
			CreatedAt: local, UpdatedAt: local, Expires: tm(local.AddDate(100, 0, 0)), Limits: store.Limits{BudgetResetAt: tm(time.Time{})}}},
		{"hash in upper case", "sk-upper", &store.Key{TokenHash: strings.ToUpper(HashHex("sk-upper")), KeyName: "u", UpdatedAt: at}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := *tt.key
			loaded := NewSnapshot(&store.Snapshot{Keys: []*store.Key{clone(tt.key)}})
			written := NewSnapshot(nil)
			written.PutKey(clone(tt.key))
			for _, snap := range []*Snapshot{loaded, written} {
				got, ok := snap.Key(want.TokenHash)
				if !ok || !reflect.DeepEqual(*got, want) {
					t.Fatalf("decoded:\n got %+v\nwant %+v", got, &want)
				}
				var p Principal
				a := NewAuthenticator(&config.Config{}, snap, Options{})
				req, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
				req.Header.Set("Authorization", "Bearer "+tt.raw)
				err := a.AuthenticateInto(req, &p)
				if want.Blocked {
					if err == nil {
						t.Fatal("a blocked key was let in")
					}
					continue
				}
				if err != nil || p.Key == nil || !reflect.DeepEqual(*p.Key, want) || p.KeyHash != want.TokenHash {
					t.Fatalf("read into the principal (%v):\n got %+v\nwant %+v", err, p.Key, &want)
				}
			}
		})
	}
}

// clone is a copy of k with maps and slices of its own (a put takes them).
func clone(k *store.Key) *store.Key {
	b, _ := json.Marshal(k)
	var c store.Key
	_ = json.Unmarshal(b, &c)
	c.CreatedAt, c.UpdatedAt, c.Expires, c.BudgetResetAt = k.CreatedAt, k.UpdatedAt, k.Expires, k.BudgetResetAt
	if k.ModelSpend != nil && c.ModelSpend == nil {
		c.ModelSpend = map[string]float64{}
	}
	return &c
}

// TestPeriodsVisitsPackedResetTimes: the period sweep visits every key
// with a budget period, whether its reset time is packed in the record
// (UTC, in range: no rare-field block at all) or kept whole (a zone other
// than UTC). The first kind crashed the sweep once (a nil rare-field
// block read before checking where the time lives).
func TestPeriodsVisitsPackedResetTimes(t *testing.T) {
	day := "1d"
	utc := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	zoned := time.Date(2026, 12, 1, 9, 0, 0, 0, time.FixedZone("X", 9*3600))
	packed, kept := HashHex("sk-packed-reset"), HashHex("sk-kept-reset")
	none := HashHex("sk-no-period")
	at := time.Now().UTC().Truncate(time.Second)
	snap := NewSnapshot(&store.Snapshot{Keys: []*store.Key{
		{TokenHash: packed, CreatedAt: at, UpdatedAt: at, Limits: store.Limits{BudgetDuration: &day, BudgetResetAt: &utc}},
		{TokenHash: kept, CreatedAt: at, UpdatedAt: at, Limits: store.Limits{BudgetDuration: &day, BudgetResetAt: &zoned}},
		{TokenHash: none, CreatedAt: at, UpdatedAt: at},
	}})
	got := map[string]time.Time{}
	snap.Periods(func(kind store.Kind, id, duration string, resetAt time.Time) {
		if kind == store.KindKey {
			if duration != day {
				t.Errorf("key %s: duration %q, want %q", id, duration, day)
			}
			got[id] = resetAt
		}
	})
	if len(got) != 2 || !got[packed].Equal(utc) || !got[kept].Equal(zoned) {
		t.Fatalf("periods visited %v, want %s at %v and %s at %v", got, packed, utc, kept, zoned)
	}
}

// TestApplyKeepsWritesMadeAfterTheRead: a resync reads the store, then an
// admin write here changes a team, a key, a user, an end user, an
// organization and a budget (and deletes another team); the resync's
// Apply, with rows as they were before those writes, must not put them
// back. A later resync, which read after the writes, applies again.
func TestApplyKeepsWritesMadeAfterTheRead(t *testing.T) {
	locked := map[string]any{"guardrails": map[string]any{"modify_guardrails": false}}
	oldTeam := &store.Team{TeamID: "t", Metadata: locked}
	h := HashHex("sk-resync-race")
	oldKey := &store.Key{TokenHash: h, Blocked: false}
	s := NewSnapshot(&store.Snapshot{
		Teams: []*store.Team{oldTeam, {TeamID: "gone"}}, Keys: []*store.Key{oldKey},
		Users:    []*store.User{{UserID: "u", UserRole: "internal_user"}},
		EndUsers: []*store.EndUser{{UserID: "e", Blocked: false}},
	})
	read := time.Now() // the resync's query starts
	stale := &store.Snapshot{
		Teams: []*store.Team{{TeamID: "t", Metadata: locked}, {TeamID: "gone"}}, Keys: []*store.Key{{TokenHash: h}},
		Users:         []*store.User{{UserID: "u", UserRole: "internal_user"}},
		EndUsers:      []*store.EndUser{{UserID: "e"}},
		Organizations: []*store.Organization{{OrganizationID: "o"}},
		Budgets:       []*store.Budget{{BudgetID: "b"}},
	}
	for !time.Now().After(read) { // a clock coarser than the calls
	}
	s.PutTeam(&store.Team{TeamID: "t", Metadata: map[string]any{"guardrails": map[string]any{"modify_guardrails": true}}})
	s.PutKey(&store.Key{TokenHash: h, Blocked: true})
	s.PutUser(&store.User{UserID: "u", UserRole: "proxy_admin_viewer"})
	s.PutEndUser(&store.EndUser{UserID: "e", Blocked: true})
	s.PutOrganization(&store.Organization{OrganizationID: "o", Blocked: true})
	s.PutBudget(&store.Budget{BudgetID: "b", Limits: store.Limits{RPMLimit: p64(7)}})
	s.DeleteTeam("gone", time.Time{})
	s.Apply(stale, nil, read)

	check := func(when string, wantNew bool) {
		t.Helper()
		tm, _ := s.Team("t")
		g, _ := tm.Metadata["guardrails"].(map[string]any)
		if lifted := g["modify_guardrails"] == true; lifted != wantNew {
			t.Errorf("%s: team lock lifted %v, want %v", when, lifted, wantNew)
		}
		k, _ := s.Key(h)
		if k == nil || k.Blocked != wantNew {
			t.Errorf("%s: key %+v, want blocked %v", when, k, wantNew)
		}
		if u, _ := s.User("u"); u == nil || (u.UserRole == "proxy_admin_viewer") != wantNew {
			t.Errorf("%s: user %+v", when, u)
		}
		if e, _ := s.EndUser("e"); e == nil || e.Blocked != wantNew {
			t.Errorf("%s: end user %+v, want blocked %v", when, e, wantNew)
		}
		if o, _ := s.Organization("o"); o == nil || o.Blocked != wantNew {
			t.Errorf("%s: organization %+v, want blocked %v", when, o, wantNew)
		}
		if b, _ := s.Budget("b"); b == nil || (b.RPMLimit != nil) != wantNew {
			t.Errorf("%s: budget %+v", when, b)
		}
		if _, ok := s.Team("gone"); ok == wantNew {
			t.Errorf("%s: deleted team present %v", when, ok)
		}
	}
	check("stale resync after the writes", true)

	// A resync that read after the writes brings the store as it is (here,
	// the old rows again: as if another replica wrote them since).
	s.Apply(stale, nil, time.Now())
	check("a resync that read after the writes", false)
	s.localMu.Lock()
	left := len(s.local)
	s.localMu.Unlock()
	if left != 0 {
		t.Errorf("%d marks of writes here kept after a later read", left)
	}
}
