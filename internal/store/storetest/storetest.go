// Package storetest is the conformance suite every store engine passes.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// Opener returns a fresh, empty store for one test.
type Opener func(t *testing.T) store.Store

func ptr[T any](v T) *T { return &v }

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"KeyRoundTrip", keyRoundTrip},
		{"KeyConflictsAndNotFound", keyConflicts},
		{"KeyListFilterPage", keyList},
		{"ReplaceKeyKeepsSpend", replaceKey},
		{"HashReplacedKnowsTheBudgetAccount", hashReplaced},
		{"UsersTeamsEndUsers", entities},
		{"ApplySpendIsAtomicAndIdempotent", applySpend},
		{"SpendOfAnEarlierKeyUnderTheHash", spendOfEarlierKey},
		{"ProbeSpendLandsOnTheKeyAsRead", probeSpendOnKeyAsRead},
		{"ProbeHashesReplacedTakesAnyString", probeHashesReplacedAnyString},
		{"ConcurrentApplySpend", concurrentSpend},
		{"ManyBatchesWithReplays", manyBatches},
		{"BudgetSpendAndReportedUsage", budgetSpend},
		{"SpendLogFilters", spendFilters},
		{"SpendReport", spendReport},
		{"SpendTagsAndTagReport", spendTags},
		{"SpendLogContentBudget", spendContentBudget},
		{"Models", models},
		{"LoadAll", loadAll},
		{"LoadKeysInPages", loadKeysInPages},
		{"Audit", audit},
		{"Changes", changes},
		{"DeleteOwnerDeletesKeys", deleteOwner},
		{"DeleteUserLeavesTeams", deleteUserLeavesTeams},
		{"UnencodableRecordIsAnError", unencodable},
		{"BudgetsAndOrganizations", budgetsAndOrgs},
		{"ManagedObjects", managedObjects},
		{"MarkChargedOnce", markChargedOnce},
		{"ResetBudgetOncePerPeriod", resetBudget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

var ctx = context.Background()

func fullKey(hash string) *store.Key {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	reset := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	return &store.Key{
		TokenHash: hash, KeyName: "sk-...ABCD", KeyAlias: ptr("alias-" + hash), UserID: "u1", TeamID: "t1",
		Models: []string{"gpt-4", "beta-models"}, Aliases: map[string]string{"gpt-3.5-turbo": "my-free-tier"},
		Config: map[string]any{"x": "y"}, Metadata: map[string]any{"user": "ishaan@berri.ai"}, Tags: []string{"a"},
		Spend: 1.5, Limits: store.Limits{MaxBudget: ptr(10.0), BudgetDuration: ptr("1mo"), BudgetResetAt: &reset, MaxParallelRequests: ptr(int64(3)), TPMLimit: ptr(int64(1000)), RPMLimit: ptr(int64(10))}, SoftBudget: ptr(8.0),
		ModelMaxBudget: map[string]float64{"gpt-4": 2}, ModelRPMLimit: map[string]int64{"gpt-4": 5}, ModelTPMLimit: map[string]int64{"gpt-4": 50},
		Expires: &exp, Blocked: true, CreatedBy: "master",
	}
}

func keyRoundTrip(t *testing.T, s store.Store) {
	k := fullKey("h1")
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetKey(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if *got.KeyAlias != "alias-h1" || got.UserID != "u1" || got.TeamID != "t1" || got.Models[1] != "beta-models" ||
		got.Aliases["gpt-3.5-turbo"] != "my-free-tier" || got.Metadata["user"] != "ishaan@berri.ai" || got.Spend != 1.5 ||
		*got.MaxBudget != 10 || *got.SoftBudget != 8 || *got.BudgetDuration != "1mo" || !got.BudgetResetAt.Equal(*k.BudgetResetAt) ||
		*got.MaxParallelRequests != 3 || *got.TPMLimit != 1000 || *got.RPMLimit != 10 || got.ModelMaxBudget["gpt-4"] != 2 ||
		got.ModelRPMLimit["gpt-4"] != 5 || got.ModelTPMLimit["gpt-4"] != 50 || !got.Expires.Equal(*k.Expires) || !got.Blocked ||
		got.CreatedAt.IsZero() || got.Tags[0] != "a" || got.Config["x"] != "y" {
		t.Fatalf("round trip lost fields: %+v", got)
	}
	byAlias, err := s.GetKeyByAlias(ctx, "alias-h1")
	if err != nil || byAlias.TokenHash != "h1" {
		t.Fatalf("by alias: %v %v", byAlias, err)
	}
	got.Models = []string{"x"}
	got.Spend = 999 // updates never overwrite the spend column
	if err := s.UpdateKey(ctx, got); err != nil {
		t.Fatal(err)
	}
	again, _ := s.GetKey(ctx, "h1")
	if again.Models[0] != "x" || again.Spend != 1.5 {
		t.Fatalf("after update: models %v spend %v", again.Models, again.Spend)
	}
	if err := s.DeleteKey(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetKey(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func keyConflicts(t *testing.T, s store.Store) {
	if err := s.CreateKey(ctx, fullKey("h1")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, fullKey("h1")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate hash: %v", err)
	}
	dup := fullKey("h2")
	dup.KeyAlias = ptr("alias-h1")
	if err := s.CreateKey(ctx, dup); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate alias: %v", err)
	}
	noAlias := fullKey("h3")
	noAlias.KeyAlias = nil
	noAlias2 := fullKey("h4")
	noAlias2.KeyAlias = nil
	if err := s.CreateKey(ctx, noAlias); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, noAlias2); err != nil {
		t.Errorf("two keys without alias: %v", err)
	}
	for name, err := range map[string]error{
		"get":    func() error { _, err := s.GetKey(ctx, "nope"); return err }(),
		"update": s.UpdateKey(ctx, fullKey("nope")),
		"delete": s.DeleteKey(ctx, "nope"),
		"user":   func() error { _, err := s.GetUser(ctx, "nope"); return err }(),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a missing row: %v", name, err)
		}
	}
}

func keyList(t *testing.T, s store.Store) {
	for i := range 7 {
		k := fullKey(fmt.Sprintf("h%d", i))
		k.UserID = []string{"a", "b"}[i%2]
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	got, total, err := s.ListKeys(ctx, store.KeyFilter{UserID: "a", Page: store.Page{Number: 2, Size: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if total != 4 || len(got) != 1 || got[0].UserID != "a" {
		t.Fatalf("page 2 of user a: total %d, %d rows", total, len(got))
	}
	got, total, _ = s.ListKeys(ctx, store.KeyFilter{Alias: "h5"})
	if total != 1 || got[0].TokenHash != "h5" {
		t.Fatalf("alias filter: %d", total)
	}
}

func replaceKey(t *testing.T, s store.Store) {
	if err := s.CreateKey(ctx, fullKey("old")); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, []store.SpendLog{{RequestID: "r", KeyHash: "old", Cost: 2, StartedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutObject(ctx, &store.ManagedObject{ID: "file-old", Kind: store.ObjectFile, KeyHash: "old", Object: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	k := fullKey("new")
	k.KeyAlias = ptr("alias-old")
	if err := s.ReplaceKey(ctx, "old", k); err != nil {
		t.Fatal(err)
	}
	if o, err := s.GetObject(ctx, store.ObjectFile, "file-old"); err != nil || o.KeyHash != "new" {
		t.Fatalf("the key's file after regenerate: %+v %v", o, err)
	}
	if _, err := s.GetKey(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Error("old hash still valid")
	}
	got, err := s.GetKey(ctx, "new")
	if err != nil || got.Spend != 3.5 {
		t.Fatalf("new key: %v spend %v, want 3.5", err, got.Spend)
	}
}

// hashReplaced: a key's budget account (the hash it had before its first
// regenerate) is a replaced hash on every store; a live hash is not.
func hashReplaced(t *testing.T, s store.Store) {
	if err := s.CreateKey(ctx, fullKey("first")); err != nil {
		t.Fatal(err)
	}
	k := fullKey("second")
	k.BudgetAccount = "first"
	if err := s.ReplaceKey(ctx, "first", k); err != nil {
		t.Fatal(err)
	}
	meta := fullKey("meta")
	meta.Metadata = map[string]any{"budget_account": "other"} // not an account
	if err := s.CreateKey(ctx, meta); err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]bool{"first": true, "second": false, "other": false} {
		if got, err := s.HashReplaced(ctx, h); err != nil || got != want {
			t.Errorf("HashReplaced(%q) = %v, %v; want %v", h, got, err, want)
		}
	}
	// HashesReplaced answers the same, for many hashes at once (more than
	// one of the SQL store's batches).
	ask := []string{"second", "other", "first", "first"}
	for i := range 1200 {
		ask = append(ask, fmt.Sprintf("absent-%d", i))
	}
	got, err := s.HashesReplaced(ctx, ask)
	if err != nil || len(got) != 1 || !got["first"] {
		t.Errorf("HashesReplaced = %v, %v; want first alone", got, err)
	}
	if got, err := s.HashesReplaced(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("HashesReplaced(nil) = %v, %v; want nothing", got, err)
	}
}

// spendOfEarlierKey: a spend row naming the creation of an earlier key
// under the hash (deleted, and a key made again with its secret) is logged
// but not booked on the key there now; one naming this key's creation, or
// none, is.
func spendOfEarlierKey(t *testing.T, s store.Store) {
	k := &store.Key{TokenHash: "remade", KeyName: "sk-...made", ModelMaxBudget: map[string]float64{"gpt-4": 5}}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	made := k.CreatedAt
	row := func(id string, keyMade time.Time) store.SpendLog {
		return store.SpendLog{RequestID: id, KeyHash: "remade", KeyCreatedAt: keyMade, ModelGroup: "gpt-4", Cost: 1,
			Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: "remade/gpt-4"}}, StartedAt: made, EndedAt: made}
	}
	if err := s.ApplySpend(ctx, []store.SpendLog{row("earlier", made.Add(-time.Hour)), row("this", made), row("unknown", time.Time{})}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetKey(ctx, "remade")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spend != 2 {
		t.Errorf("key spend %v, want 2: the earlier key's row is not this key's", got.Spend)
	}
	logs, _, err := s.ListSpendLogs(ctx, store.SpendFilter{KeyHash: "remade", Page: store.Page{Size: 10}})
	if err != nil || len(logs) != 3 {
		t.Errorf("spend logs under the hash: %d, %v; want all 3", len(logs), err)
	}
}

// probeSpendOnKeyAsRead: the creation time a request carries
// (SpendLog.KeyCreatedAt) is the key's as the replica read it - from
// GetKey, LoadKeys or Changes, or as CreateKey/ReplaceKey left it - with
// nanoseconds and in any zone: the store's created_at (microseconds) must
// never be later than it, or every spend of the key would miss it. A
// regenerated key (ReplaceKey, its CreatedAt kept, as /key/regenerate
// does) is charged too.
func probeSpendOnKeyAsRead(t *testing.T, s store.Store) {
	mark := time.Now().Add(-time.Minute)
	zone := time.FixedZone("IST", 5*3600+1800)
	made := time.Date(2026, 3, 4, 5, 6, 7, 999_999_999, zone) // rounds up to the next second, truncates to .999999
	k := &store.Key{TokenHash: "asread", KeyName: "sk-...read", CreatedAt: made, ModelMaxBudget: map[string]float64{"gpt-4": 5}}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	fresh := &store.Key{TokenHash: "asread-now", KeyName: "sk-...now"} // CreatedAt: the store's now
	if err := s.CreateKey(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	seen := map[string][]time.Time{"asread": {made}, "asread-now": {fresh.CreatedAt}}
	for _, h := range []string{"asread", "asread-now"} {
		got, err := s.GetKey(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		seen[h] = append(seen[h], got.CreatedAt)
	}
	if err := s.LoadKeys(ctx, func(page []*store.Key) error {
		for _, k := range page {
			seen[k.TokenHash] = append(seen[k.TokenHash], k.CreatedAt)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	snap, _, err := s.Changes(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range snap.Keys {
		seen[k.TokenHash] = append(seen[k.TokenHash], k.CreatedAt)
	}
	n := 0
	row := func(hash string, keyMade time.Time) store.SpendLog {
		n++
		return store.SpendLog{RequestID: fmt.Sprintf("asread-%d", n), KeyHash: hash, KeyCreatedAt: keyMade, ModelGroup: "gpt-4", Cost: 1,
			Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: hash + "/gpt-4"}}, StartedAt: made, EndedAt: made}
	}
	for h, times := range seen {
		if len(times) < 4 {
			t.Fatalf("key %s read %d times, want 4 (as created, GetKey, LoadKeys, Changes)", h, len(times))
		}
		var rows []store.SpendLog
		for _, at := range times {
			rows = append(rows, row(h, at))
		}
		if err := s.ApplySpend(ctx, rows); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetKey(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if got.Spend != float64(len(times)) {
			t.Errorf("key %s (created %v, read back as %v): spend %v, want %d", h, times[0], times, got.Spend, len(times))
		}
	}
	// Regenerated: the record under the new hash keeps its creation.
	old, err := s.GetKey(ctx, "asread")
	if err != nil {
		t.Fatal(err)
	}
	next := *old
	next.TokenHash, next.BudgetAccount = "asread-2", "asread"
	if err := s.ReplaceKey(ctx, "asread", &next); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetKey(ctx, "asread-2")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, []store.SpendLog{row("asread-2", got.CreatedAt), row("asread-2", next.CreatedAt)}); err != nil {
		t.Fatal(err)
	}
	after, err := s.GetKey(ctx, "asread-2")
	if err != nil {
		t.Fatal(err)
	}
	if want := old.Spend + 2; after.Spend != want || after.ModelSpend["gpt-4"] != old.ModelSpend["gpt-4"]+2 {
		t.Errorf("regenerated key: spend %v, model spend %v; want %v and %v", after.Spend, after.ModelSpend, want, old.ModelSpend["gpt-4"]+2)
	}
}

// probeHashesReplacedAnyString: the hashes HashesReplaced is asked about
// travel as a JSON array (SQL): quotes, backslashes, SQL and non-ASCII
// text are matched as themselves, and change nothing.
func probeHashesReplacedAnyString(t *testing.T, s store.Store) {
	odd := []string{`q'uote"d\back`, `x') OR 1=1 --`, "caf\u00e9 \u2028 ü/gpt-4", `["nested"]`}
	for i, a := range odd {
		k := fullKey(fmt.Sprintf("odd-%d", i))
		k.BudgetAccount = a
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateKey(ctx, fullKey("plain")); err != nil {
		t.Fatal(err)
	}
	ask := append([]string{"plain", "x", `x'`, "odd-0"}, odd...)
	got, err := s.HashesReplaced(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(odd) {
		t.Errorf("HashesReplaced = %v; want exactly %q", got, odd)
	}
	for _, a := range odd {
		if !got[a] {
			t.Errorf("HashesReplaced missed %q: %v", a, got)
		}
	}
	if _, err := s.GetKey(ctx, "plain"); err != nil {
		t.Errorf("a key is gone after HashesReplaced: %v", err)
	}
}

func entities(t *testing.T, s store.Store) {
	u := &store.User{UserID: "ishaan1", UserEmail: "ishaan@litellm.ai", UserRole: "admin", Teams: []string{"cto-team"}, Limits: store.Limits{MaxBudget: ptr(20.0), BudgetDuration: ptr("1h")}, Metadata: map[string]any{}}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, u); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate user: %v", err)
	}
	gu, err := s.GetUser(ctx, "ishaan1")
	if err != nil || gu.UserEmail != "ishaan@litellm.ai" || gu.UserRole != "admin" || *gu.MaxBudget != 20 || gu.Teams[0] != "cto-team" {
		t.Fatalf("user: %+v %v", gu, err)
	}
	// UpdateUser is conditional on the stamp the user was read with, as
	// UpdateTeam: of two writers of one read the readB is refused
	// (store.ErrChanged), and so is a writer that read her before a budget
	// reset; a write to a deleted user brings nobody back.
	readA, _ := s.GetUser(ctx, "ishaan1")
	readB, _ := s.GetUser(ctx, "ishaan1")
	readA.Teams = []string{"cto-team", "ml-team"}
	if err := s.UpdateUser(ctx, readA); err != nil {
		t.Fatal(err)
	}
	if !readA.UpdatedAt.After(readB.UpdatedAt) {
		t.Fatalf("user stamp after an update: %v, read %v: want later", readA.UpdatedAt, readB.UpdatedAt)
	}
	readB.UserEmail = "stale@litellm.ai"
	if err := s.UpdateUser(ctx, readB); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("update of a user changed since she was read: %v, want ErrChanged", err)
	}
	if gu, _ := s.GetUser(ctx, "ishaan1"); gu.UserEmail != "ishaan@litellm.ai" || len(gu.Teams) != 2 || !gu.UpdatedAt.Equal(readA.UpdatedAt) {
		t.Fatalf("user after a refused stale update: %+v", gu)
	}
	if !readB.UpdatedAt.Before(readA.UpdatedAt) {
		t.Fatalf("a refused update's stamp: %v, want the one read (before %v)", readB.UpdatedAt, readA.UpdatedAt)
	}
	if err := s.ResetBudget(ctx, store.KindUser, "ishaan1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	readA.UserEmail = "before-the-reset@litellm.ai"
	if err := s.UpdateUser(ctx, readA); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("update of a user read before her budget reset: %v, want ErrChanged", err)
	}
	if gu, _ := s.GetUser(ctx, "ishaan1"); gu.UserEmail != "ishaan@litellm.ai" || gu.BudgetResetAt == nil || !gu.UpdatedAt.After(readA.UpdatedAt) {
		t.Fatalf("user after an update refused for a reset: %+v", gu)
	}
	ghost := *readA
	ghost.UserID = "no-such-user"
	if err := s.UpdateUser(ctx, &ghost); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing user: %v, want ErrNotFound", err)
	}
	if _, err := s.GetUser(ctx, "no-such-user"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a missing user after an update of her: %v, want ErrNotFound", err)
	}
	tm := &store.Team{TeamID: "cto-team", TeamAlias: "CTO", Models: []string{"gpt-4"}, Members: []store.TeamMember{{UserID: "ishaan1", Role: "admin"}}, Limits: store.Limits{MaxBudget: ptr(100.0)}}
	if err := s.CreateTeam(ctx, tm); err != nil {
		t.Fatal(err)
	}
	tm.Blocked = true
	if err := s.UpdateTeam(ctx, tm); err != nil {
		t.Fatal(err)
	}
	gt, _ := s.GetTeam(ctx, "cto-team")
	if !gt.Blocked || gt.Members[0].Role != "admin" || gt.Models[0] != "gpt-4" {
		t.Fatalf("team: %+v", gt)
	}
	// UpdateTeam is conditional on the stamp the team was read with: of two
	// writers of one read, the second is refused (store.ErrChanged), not
	// allowed to overwrite the first's change.
	first, _ := s.GetTeam(ctx, "cto-team")
	second, _ := s.GetTeam(ctx, "cto-team")
	first.Models = []string{"gpt-4", "gpt-4o"}
	if err := s.UpdateTeam(ctx, first); err != nil {
		t.Fatal(err)
	}
	second.TeamAlias = "stale"
	if err := s.UpdateTeam(ctx, second); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("update of a team changed since it was read: %v, want ErrChanged", err)
	}
	if gt, _ := s.GetTeam(ctx, "cto-team"); gt.TeamAlias != "CTO" || len(gt.Models) != 2 || !gt.UpdatedAt.Equal(first.UpdatedAt) {
		t.Fatalf("team after a refused stale update: %+v", gt)
	}
	gone := *first
	gone.TeamID = "no-such-team"
	if err := s.UpdateTeam(ctx, &gone); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing team: %v, want ErrNotFound", err)
	}
	e := &store.EndUser{UserID: "cust-1", Alias: "Acme", Limits: store.Limits{MaxBudget: ptr(5.0)}}
	if err := s.CreateEndUser(ctx, e); err != nil {
		t.Fatal(err)
	}
	list, total, err := s.ListEndUsers(ctx, store.Page{})
	if err != nil || total != 1 || list[0].Alias != "Acme" {
		t.Fatalf("end users: %v %d %v", list, total, err)
	}
	for _, err := range []error{s.DeleteUser(ctx, "ishaan1"), s.DeleteTeam(ctx, "cto-team"), s.DeleteEndUser(ctx, "cust-1")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, n, _ := s.ListUsers(ctx, store.Page{}); n != 0 {
		t.Errorf("users left: %d", n)
	}
}

func applySpend(t *testing.T, s store.Store) {
	s.CreateKey(ctx, fullKey("k"))
	s.CreateUser(ctx, &store.User{UserID: "u"})
	s.CreateTeam(ctx, &store.Team{TeamID: "t"})
	day := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	batch := []store.SpendLog{
		{RequestID: "r1", KeyHash: "k", UserID: "u", TeamID: "t", EndUser: "e", ModelGroup: "gpt-4", Cost: 0.25, PromptTokens: 10, CompletionTokens: 5, Status: 200, StartedAt: day, EndedAt: day},
		{RequestID: "r2", KeyHash: "k", UserID: "u", TeamID: "t", ModelGroup: "gpt-4", Cost: 0.5, StartedAt: day, EndedAt: day},
		// A failed request: no cost, its error information kept (migration 00015).
		{RequestID: "r4", KeyHash: "k", UserID: "u", TeamID: "t", ModelGroup: "gpt-4", Status: 503, StartedAt: day, EndedAt: day,
			ErrorInformation: &store.ErrorInformation{ErrorCode: "503", ErrorClass: "ServiceUnavailableError", LLMProvider: "openai", ErrorMessage: "deployment d answered 503"}},
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Replaying the batch (and a request repeated within one) changes nothing.
	if err := s.ApplySpend(ctx, append(batch, batch[0])); err != nil {
		t.Fatal(err)
	}
	k, _ := s.GetKey(ctx, "k")
	u, _ := s.GetUser(ctx, "u")
	tm, _ := s.GetTeam(ctx, "t")
	e, err := s.GetEndUser(ctx, "e")
	if err != nil {
		t.Fatalf("end user not created by its first spend: %v", err)
	}
	if k.Spend != 1.5+0.75 || u.Spend != 0.75 || tm.Spend != 0.75 || e.Spend != 0.25 {
		t.Fatalf("spend key %v user %v team %v end user %v", k.Spend, u.Spend, tm.Spend, e.Spend)
	}
	logs, total, err := s.ListSpendLogs(ctx, store.SpendFilter{})
	if err != nil || total != 3 {
		t.Fatalf("logs: %d %v", total, err)
	}
	var r1, r4 store.SpendLog
	for _, l := range logs {
		switch l.RequestID {
		case "r1":
			r1 = l
		case "r4":
			r4 = l
		}
	}
	if r1.ErrorInformation != nil || r4.ErrorInformation == nil || *r4.ErrorInformation != *batch[2].ErrorInformation || r4.Status != 503 || r4.Cost != 0 {
		t.Fatalf("error information: r1 %+v, r4 %+v", r1.ErrorInformation, r4)
	}
	if r1.PromptTokens != 10 || r1.CompletionTokens != 5 || r1.Status != 200 || !r1.StartedAt.Equal(day) || r1.EndUser != "e" {
		t.Fatalf("r1 = %+v", r1)
	}
	// A failing batch leaves nothing behind: a row with an invalid (NULL-forbidden) value is hard to
	// craft portably, so use a cancelled context, which aborts the transaction.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.ApplySpend(cctx, []store.SpendLog{{RequestID: "r3", KeyHash: "k", Cost: 1, StartedAt: day}}); err == nil {
		t.Fatal("cancelled batch reported success")
	}
	if k2, _ := s.GetKey(ctx, "k"); k2.Spend != k.Spend {
		t.Fatalf("failed batch changed spend: %v", k2.Spend)
	}
	// So does a batch whose deadline has passed.
	dctx, dcancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer dcancel()
	if err := s.ApplySpend(dctx, []store.SpendLog{{RequestID: "r3", KeyHash: "k", Cost: 1, StartedAt: day}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("batch past its deadline: err %v, want context.DeadlineExceeded", err)
	}
	if k2, _ := s.GetKey(ctx, "k"); k2.Spend != k.Spend {
		t.Fatalf("batch past its deadline changed spend: %v", k2.Spend)
	}
	if _, total, err := s.ListSpendLogs(ctx, store.SpendFilter{RequestID: "r3"}); err != nil || total != 0 {
		t.Fatalf("batch past its deadline wrote %d rows (%v)", total, err)
	}
}

// budgetSpend: spend on budgets without a row of their own is kept once per
// request, read back as the key's ModelSpend (everywhere a key is read),
// moves with a regenerated key and goes with a deleted one; the reported
// usage and its flags round-trip.
func budgetSpend(t *testing.T, s store.Store) {
	s.CreateKey(ctx, fullKey("k"))
	day := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	model := store.BudgetRef{Kind: store.KindKeyModel, ID: "k/gpt-4"}
	hook := store.BudgetRef{Kind: store.KindCustomAuthKey, ID: "h"}
	batch := []store.SpendLog{
		{RequestID: "b1", KeyHash: "k", ModelGroup: "gpt-4", Cost: 0.25, StartedAt: day, EndedAt: day, Budgets: []store.BudgetRef{model},
			PromptTokens: 5, CompletionTokens: 3, ReportedPromptTokens: 5, ReportedCompletionTokens: 100000000, UsageClamped: true},
		{RequestID: "b2", KeyHash: "h", ModelGroup: "gpt-4", Cost: 0.5, StartedAt: day, EndedAt: day, Budgets: []store.BudgetRef{hook}, UsageEstimated: true},
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, batch); err != nil { // a replay counts nothing
		t.Fatal(err)
	}
	spends, err := s.BudgetSpends(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[store.BudgetRef]float64{}
	for _, b := range spends {
		got[b.BudgetRef] = b.Spend
	}
	if len(got) != 2 || got[model] != 0.25 || got[hook] != 0.5 {
		t.Fatalf("budget spends %v", spends)
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil || k.ModelSpend["gpt-4"] != 0.25 {
		t.Fatalf("GetKey model spend %v (%v)", k, err)
	}
	snap, err := s.LoadAll(ctx)
	if err != nil || len(snap.Keys) != 1 || snap.Keys[0].ModelSpend["gpt-4"] != 0.25 {
		t.Fatalf("LoadAll model spend %v", err)
	}
	logs, _, err := s.ListSpendLogs(ctx, store.SpendFilter{RequestID: "b1"})
	if err != nil || len(logs) != 1 || logs[0].ReportedCompletionTokens != 100000000 || !logs[0].UsageClamped || logs[0].UsageEstimated {
		t.Fatalf("b1 = %+v (%v)", logs, err)
	}
	if logs, _, _ := s.ListSpendLogs(ctx, store.SpendFilter{RequestID: "b2"}); len(logs) != 1 || !logs[0].UsageEstimated {
		t.Fatalf("b2 = %+v", logs)
	}
	if err := s.ReplaceKey(ctx, "k", fullKey("k2")); err != nil {
		t.Fatal(err)
	}
	if k, err := s.GetKey(ctx, "k2"); err != nil || k.ModelSpend["gpt-4"] != 0.25 {
		t.Fatalf("model spend after ReplaceKey %v (%v)", k, err)
	}
	if err := s.DeleteKey(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if spends, _ := s.BudgetSpends(ctx); len(spends) != 1 || spends[0].BudgetRef != hook {
		t.Fatalf("after DeleteKey: %v", spends)
	}
	// Many keys at once (LoadAll, Changes) read the table in one query.
	var many []store.SpendLog
	for i := range 40 {
		h := fmt.Sprintf("many%02d", i)
		s.CreateKey(ctx, fullKey(h))
		many = append(many, store.SpendLog{RequestID: "m" + h, KeyHash: h, ModelGroup: "m", Cost: float64(i), StartedAt: day, EndedAt: day,
			Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: h + "/m"}}})
	}
	if err := s.ApplySpend(ctx, many); err != nil {
		t.Fatal(err)
	}
	snap, err = s.LoadAll(ctx)
	if err != nil || len(snap.Keys) != 40 {
		t.Fatalf("LoadAll: %d keys (%v)", len(snap.Keys), err)
	}
	for _, k := range snap.Keys {
		var i int
		fmt.Sscanf(k.TokenHash, "many%02d", &i)
		if k.ModelSpend["m"] != float64(i) {
			t.Fatalf("key %s model spend %v", k.TokenHash, k.ModelSpend)
		}
	}
	// Deleting a user deletes her keys, and their model budgets with them.
	s.CreateUser(ctx, &store.User{UserID: "owner"})
	owned := fullKey("owned")
	owned.UserID = "owner"
	s.CreateKey(ctx, owned)
	ref := store.BudgetRef{Kind: store.KindKeyModel, ID: "owned/m"}
	if err := s.ApplySpend(ctx, []store.SpendLog{{RequestID: "o1", KeyHash: "owned", Cost: 1, StartedAt: day, EndedAt: day, Budgets: []store.BudgetRef{ref}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, "owner"); err != nil {
		t.Fatal(err)
	}
	spends, _ = s.BudgetSpends(ctx)
	for _, b := range spends {
		if b.BudgetRef == ref {
			t.Fatal("a deleted user's key kept its model budget")
		}
	}
}

func concurrentSpend(t *testing.T, s store.Store) {
	s.CreateKey(ctx, fullKey("k"))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]store.SpendLog, 50)
			for i := range batch {
				batch[i] = store.SpendLog{RequestID: fmt.Sprintf("w%d-%d", w, i), KeyHash: "k", Cost: 0.001, StartedAt: time.Now()}
			}
			if err := s.ApplySpend(ctx, batch); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	k, _ := s.GetKey(ctx, "k")
	if got := k.Spend - 1.5; got < 0.3999999 || got > 0.4000001 {
		t.Fatalf("spend after 400 concurrent rows = %v, want 0.4", got)
	}
}

func spendFilters(t *testing.T, s store.Store) {
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var batch []store.SpendLog
	for i := range 10 {
		batch = append(batch, store.SpendLog{RequestID: fmt.Sprintf("r%d", i), ResponseID: fmt.Sprintf("chatcmpl-%d", i), CallType: "acompletion", KeyHash: []string{"a", "b"}[i%2], TeamID: "t", Cost: 1, StartedAt: base.Add(time.Duration(i) * 24 * time.Hour),
			ModelGroup: []string{"m1", "m2", "m3"}[i%3], Status: []int{200, 500, 200, 0, 429}[i%5]})
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    store.SpendFilter
		want int
	}{
		{"key", store.SpendFilter{KeyHash: "a"}, 5},
		{"request id", store.SpendFilter{RequestID: "r3"}, 1},
		{"response id", store.SpendFilter{RequestID: "chatcmpl-3"}, 1},
		{"response id and key", store.SpendFilter{RequestID: "chatcmpl-3", KeyHash: "a"}, 0},
		{"no such id", store.SpendFilter{RequestID: "chatcmpl-33"}, 0},
		{"dates", store.SpendFilter{From: base.Add(2 * 24 * time.Hour), To: base.Add(5 * 24 * time.Hour)}, 3},
		{"team and key", store.SpendFilter{TeamID: "t", KeyHash: "b"}, 5},
		{"model group", store.SpendFilter{ModelGroup: "m1"}, 4},
		{"model group and key", store.SpendFilter{ModelGroup: "m1", KeyHash: "a"}, 2},
		{"success", store.SpendFilter{Status: "success"}, 4},
		{"failure (status 0 too)", store.SpendFilter{Status: "failure"}, 6},
		{"status code", store.SpendFilter{Status: "429"}, 2},
		{"status code and model", store.SpendFilter{Status: "500", ModelGroup: "m2"}, 1},
		{"no such model", store.SpendFilter{ModelGroup: "m1' OR '1'='1"}, 0},
		{"model and failure", store.SpendFilter{ModelGroup: "m2", Status: "failure"}, 2},
	}
	for _, tt := range tests {
		_, total, err := s.ListSpendLogs(ctx, tt.f)
		if err != nil || total != tt.want {
			t.Errorf("%s: %d, want %d (%v)", tt.name, total, tt.want, err)
		}
	}
	if _, _, err := s.ListSpendLogs(ctx, store.SpendFilter{Status: "bad"}); err == nil {
		t.Error("status filter \"bad\" was accepted")
	}
	page, total, _ := s.ListSpendLogs(ctx, store.SpendFilter{Page: store.Page{Number: 1, Size: 3}})
	if total != 10 || len(page) != 3 || page[0].RequestID != "r9" || page[0].ResponseID != "chatcmpl-9" || page[0].CallType != "acompletion" {
		t.Fatalf("newest first, paged: total %d len %d first %s", total, len(page), page[0].RequestID)
	}
}

func loadAll(t *testing.T, s store.Store) {
	s.CreateKey(ctx, fullKey("k1"))
	s.CreateKey(ctx, fullKey("k2"))
	s.CreateUser(ctx, &store.User{UserID: "u"})
	s.CreateTeam(ctx, &store.Team{TeamID: "t"})
	s.CreateEndUser(ctx, &store.EndUser{UserID: "e"})
	snap, err := s.LoadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Keys) != 2 || len(snap.Users) != 1 || len(snap.Teams) != 1 || len(snap.EndUsers) != 1 {
		t.Fatalf("snapshot sizes %d %d %d %d", len(snap.Keys), len(snap.Users), len(snap.Teams), len(snap.EndUsers))
	}
}

func audit(t *testing.T, s store.Store) {
	for i := range 3 {
		e := store.AuditEntry{Actor: "master", Action: "created", ObjectType: "key", ObjectID: fmt.Sprint(i), After: `{"a":1}`, At: time.Now().Add(time.Duration(i) * time.Second)}
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	list, total, err := s.ListAudit(ctx, store.Page{Size: 2})
	if err != nil || total != 3 || len(list) != 2 || list[0].ObjectID != "2" || list[0].After != `{"a":1}` {
		t.Fatalf("audit: %+v %d %v", list, total, err)
	}
}

func changes(t *testing.T, s store.Store) {
	s.CreateKey(ctx, fullKey("old"))
	s.CreateUser(ctx, &store.User{UserID: "old-user"})
	time.Sleep(5 * time.Millisecond)
	mark := time.Now()
	time.Sleep(5 * time.Millisecond)
	s.CreateKey(ctx, fullKey("new"))
	s.CreateTeam(ctx, &store.Team{TeamID: "t"})
	s.DeleteUser(ctx, "old-user")
	k, _ := s.GetKey(ctx, "old")
	k.Blocked = false
	if err := s.UpdateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	changed, deleted, err := s.Changes(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	var hashes []string
	for _, k := range changed.Keys {
		hashes = append(hashes, k.TokenHash)
	}
	if len(hashes) != 2 || len(changed.Teams) != 1 || len(changed.Users) != 0 {
		t.Fatalf("changed keys %v teams %d users %d", hashes, len(changed.Teams), len(changed.Users))
	}
	if len(deleted) != 1 || deleted[0].Kind != store.KindUser || deleted[0].ID != "old-user" {
		t.Fatalf("deletions %+v", deleted)
	}
}

func spendReport(t *testing.T, s store.Store) {
	d1 := time.Date(2026, 11, 1, 23, 59, 0, 0, time.UTC)
	d2 := d1.Add(2 * time.Minute) // the next UTC day
	batch := []store.SpendLog{
		{RequestID: "a", KeyHash: "k1", TeamID: "t1", EndUser: "e1", ModelGroup: "gpt-4", Cost: 1, PromptTokens: 10, CompletionTokens: 1, StartedAt: d1},
		{RequestID: "b", KeyHash: "k1", TeamID: "t1", EndUser: "e2", ModelGroup: "gpt-4", Cost: 2, PromptTokens: 20, CompletionTokens: 2, StartedAt: d1},
		{RequestID: "c", KeyHash: "k2", TeamID: "t1", ModelGroup: "claude", Cost: 4, StartedAt: d1},
		{RequestID: "d", KeyHash: "k2", TeamID: "t2", ModelGroup: "gpt-4", Cost: 8, StartedAt: d2},
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	rows, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "team_id"})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ReportRow{
		{Day: "2026-11-01", Group: "t1", Model: "claude", Requests: 1, Spend: 4},
		{Day: "2026-11-01", Group: "t1", Model: "gpt-4", Requests: 2, PromptTokens: 30, CompletionTokens: 3, Spend: 3},
		{Day: "2026-11-02", Group: "t2", Model: "gpt-4", Requests: 1, Spend: 8},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("by team:\n got %v\nwant %v", rows, want)
	}
	rows, err = s.SpendReport(ctx, store.ReportFilter{GroupBy: "end_user", From: d1, To: d1.AddDate(0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	want = []store.ReportRow{
		{Day: "2026-11-01", Group: "", Model: "claude", Requests: 1, Spend: 4},
		{Day: "2026-11-01", Group: "e1", Model: "gpt-4", Requests: 1, PromptTokens: 10, CompletionTokens: 1, Spend: 1},
		{Day: "2026-11-01", Group: "e2", Model: "gpt-4", Requests: 1, PromptTokens: 20, CompletionTokens: 2, Spend: 2},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("by end user on day 1:\n got %v\nwant %v", rows, want)
	}
	rows, err = s.SpendReport(ctx, store.ReportFilter{GroupBy: "key_hash", KeyHash: "k2"})
	if err != nil || len(rows) != 2 || rows[0].Spend != 4 || rows[1].Spend != 8 {
		t.Fatalf("k2 by key: %v %v", rows, err)
	}
	if _, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "day; DROP TABLE keys"}); err == nil {
		t.Fatal("an unknown group column was accepted")
	}
}

// spendTags: a row's tags, metadata, messages and response round-trip
// (absent ones read back as nil); the tag rollup counts a row once under
// each of its tags, only for rows inserted (a replay adds nothing); the tag
// filter of ListSpendLogs matches whole tags only, case-sensitively.
func spendTags(t *testing.T, s store.Store) {
	d1 := time.Date(2026, 11, 1, 23, 59, 0, 0, time.UTC)
	d2 := d1.Add(2 * time.Minute) // the next UTC day
	md := map[string]any{"generation_name": "g1", "tags": []any{"prod"}, "n": 2.5, "nested": map[string]any{"a": true}}
	batch := []store.SpendLog{
		{RequestID: "a", Status: 200, ModelGroup: "gpt-4", Cost: 1, PromptTokens: 10, CompletionTokens: 1, StartedAt: d1,
			RequestTags: []string{"prod", "app:x"}, Metadata: md,
			Messages: json.RawMessage(`[{"role":"user","content":"hi"}]`), Response: json.RawMessage(`{"choices":[]}`)},
		{RequestID: "b", Status: 200, ModelGroup: "gpt-4", Cost: 2, PromptTokens: 20, CompletionTokens: 2, StartedAt: d1, RequestTags: []string{"prod", "prod"}},
		{RequestID: "c", ModelGroup: "claude", Cost: 4, StartedAt: d1, Status: 502, RequestTags: []string{"Prod", `we"ird,"prod`}},
		{RequestID: "d", Status: 200, ModelGroup: "gpt-4", Cost: 8, StartedAt: d2, RequestTags: []string{"app:x"}},
		{RequestID: "e", Status: 200, ModelGroup: "gpt-4", Cost: 16, StartedAt: d2},
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, batch[:2]); err != nil { // a replay
		t.Fatal(err)
	}
	logs, _, err := s.ListSpendLogs(ctx, store.SpendFilter{RequestID: "a"})
	if err != nil || len(logs) != 1 {
		t.Fatalf("row a: %v %v", logs, err)
	}
	a := logs[0]
	if fmt.Sprint(a.RequestTags) != "[prod app:x]" || fmt.Sprint(a.Metadata) != fmt.Sprint(md) ||
		string(a.Messages) != `[{"role":"user","content":"hi"}]` || string(a.Response) != `{"choices":[]}` {
		t.Fatalf("row a read back: tags %v metadata %v messages %s response %s", a.RequestTags, a.Metadata, a.Messages, a.Response)
	}
	logs, _, _ = s.ListSpendLogs(ctx, store.SpendFilter{RequestID: "e"})
	if len(logs) != 1 || logs[0].RequestTags != nil || logs[0].Metadata != nil || logs[0].Messages != nil || logs[0].Response != nil {
		t.Fatalf("row e has no tags, metadata or content: %+v", logs)
	}
	for _, tt := range []struct {
		tag  string
		want string
	}{
		{"prod", "[a b]"}, // same start: by request id
		{"Prod", "[c]"},
		{"app:x", "[d a]"},
		{`we"ird,"prod`, "[c]"},
		{"pro", "[]"},
		{"ird", "[]"},
		{"%", "[]"},
	} {
		logs, total, err := s.ListSpendLogs(ctx, store.SpendFilter{Tag: tt.tag})
		var ids []string
		for _, l := range logs {
			ids = append(ids, l.RequestID)
		}
		if err != nil || fmt.Sprint(ids) != tt.want || total != len(ids) {
			t.Errorf("tag %q: got %v (total %d) %v, want %s", tt.tag, ids, total, err, tt.want)
		}
	}
	rows, err := s.TagReport(ctx, store.TagFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.TagRow{
		{Day: "2026-11-01", Tag: "Prod", Model: "claude", Requests: 1, FailedRequests: 1, Spend: 4},
		{Day: "2026-11-01", Tag: "app:x", Model: "gpt-4", Requests: 1, PromptTokens: 10, CompletionTokens: 1, Spend: 1},
		{Day: "2026-11-01", Tag: "prod", Model: "gpt-4", Requests: 2, PromptTokens: 30, CompletionTokens: 3, Spend: 3},
		{Day: "2026-11-01", Tag: `we"ird,"prod`, Model: "claude", Requests: 1, FailedRequests: 1, Spend: 4},
		{Day: "2026-11-02", Tag: "app:x", Model: "gpt-4", Requests: 1, Spend: 8},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("tag report:\n got %v\nwant %v", rows, want)
	}
	rows, err = s.TagReport(ctx, store.TagFilter{From: d2, To: d2.AddDate(0, 0, 1)})
	if err != nil || fmt.Sprint(rows) != fmt.Sprint(want[4:]) {
		t.Fatalf("tag report on day 2: %v %v", rows, err)
	}
	rows, err = s.TagReport(ctx, store.TagFilter{Tags: []string{"app:x", "Prod"}})
	if err != nil || fmt.Sprint(rows) != fmt.Sprint([]store.TagRow{want[0], want[1], want[4]}) {
		t.Fatalf("tag report for two tags: %v %v", rows, err)
	}
}

func models(t *testing.T, s store.Store) {
	a := &store.Model{ID: "m1", Entry: []byte(`{"model_name":"a"}`)}
	if err := s.PutModel(ctx, a); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if err := s.PutModel(ctx, &store.Model{ID: "m2", Entry: []byte(`{"model_name":"b"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutModel(ctx, &store.Model{ID: "m1", Entry: []byte(`{"model_name":"a2"}`)}); err != nil {
		t.Fatal(err)
	}
	ms, err := s.ListModels(ctx)
	if err != nil || len(ms) != 2 || ms[0].ID != "m1" || string(ms[0].Entry) != `{"model_name":"a2"}` || ms[1].ID != "m2" {
		t.Fatalf("models: %+v %v", ms, err)
	}
	if err := s.DeleteModel(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteModel(ctx, "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting a deleted model: %v", err)
	}
	if ms, _ := s.ListModels(ctx); len(ms) != 1 {
		t.Fatalf("after delete: %+v", ms)
	}
}

// deleteOwner: deleting a user or a team deletes its keys in the same
// transaction and leaves a tombstone for each.
func deleteOwner(t *testing.T, s store.Store) {
	mark := time.Now().Add(-time.Second)
	s.CreateUser(ctx, &store.User{UserID: "u1"})
	s.CreateTeam(ctx, &store.Team{TeamID: "t2"})
	k1, k2, k3 := fullKey("k1"), fullKey("k2"), fullKey("k3")
	k2.UserID, k2.TeamID, k2.KeyAlias = "other", "t2", nil
	k3.UserID, k3.TeamID, k3.KeyAlias = "other", "t3", nil
	for _, k := range []*store.Key{k1, k2, k3} {
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteUser(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTeam(ctx, "t2"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"k1", "k2"} {
		if _, err := s.GetKey(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("key %s of a deleted owner: %v", h, err)
		}
	}
	if _, err := s.GetKey(ctx, "k3"); err != nil {
		t.Errorf("a key of another team went too: %v", err)
	}
	_, dels, err := s.Changes(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dels {
		got = append(got, string(d.Kind)+":"+d.ID)
	}
	slices.Sort(got)
	if want := "key:k1 key:k2 team:t2 user:u1"; strings.Join(got, " ") != want {
		t.Errorf("tombstones %v, want %s", got, want)
	}
	if err := s.DeleteUser(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting a missing user: %v", err)
	}
}

// deleteUserLeavesTeams: deleting a user takes her out of every team's
// members and member budgets in the same call (the API did it after the
// store's deletion, and a failure there left the deletion half applied),
// and drops the spend of her member budgets, so that a user created again
// under the id inherits neither; deleting a team drops its member budgets'
// spend too.
func deleteUserLeavesTeams(t *testing.T, s store.Store) {
	mark := time.Now().Add(-time.Second)
	for _, u := range []string{"leaver", "stays"} {
		if err := s.CreateUser(ctx, &store.User{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	both := []store.TeamMember{{UserID: "leaver", Role: "admin"}, {UserID: "stays", Role: "user"}}
	budgets := []store.MemberBudget{{UserID: "leaver", MaxBudget: 5}, {UserID: "stays", MaxBudget: 7}}
	for _, tm := range []*store.Team{
		{TeamID: "t1", Members: both, MemberBudgets: budgets},
		{TeamID: "t2", Members: both[1:]},
		{TeamID: "t3", Members: both, MemberBudgets: budgets},
	} {
		if err := s.CreateTeam(ctx, tm); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	var batch []store.SpendLog
	for i, b := range []struct{ team, user string }{{"t1", "leaver"}, {"t1", "stays"}, {"t3", "leaver"}, {"t3", "stays"}} {
		batch = append(batch, store.SpendLog{RequestID: fmt.Sprint("m", i), UserID: b.user, TeamID: b.team, Cost: 1, StartedAt: now, EndedAt: now,
			Budgets: []store.BudgetRef{{Kind: store.KindTeamMember, ID: store.MemberBudgetID(b.team, b.user)}}})
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}

	// created_at is an entity's incarnation (the snapshot's tombstones):
	// set by the create, kept by every write of the record (the user's
	// edits, a budget reset, the rewrite of her teams at a member's
	// deletion), new when the id is made again.
	born := map[string]time.Time{}
	for _, id := range []string{"leaver", "stays", "t1"} {
		if id == "t1" {
			tm, err := s.GetTeam(ctx, id)
			if err != nil || tm.CreatedAt.IsZero() {
				t.Fatalf("team %s as created: %+v %v", id, tm, err)
			}
			born[id] = tm.CreatedAt
			continue
		}
		u, err := s.GetUser(ctx, id)
		if err != nil || u.CreatedAt.IsZero() {
			t.Fatalf("user %s as created: %+v %v", id, u, err)
		}
		born[id] = u.CreatedAt
	}
	if u, err := s.GetUser(ctx, "stays"); err == nil {
		u.UserEmail = "stays@example.com"
		if err := s.UpdateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct {
		k  store.Kind
		id string
	}{{store.KindUser, "stays"}, {store.KindTeam, "t1"}} {
		if err := s.ResetBudget(ctx, r.k, r.id, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteUser(ctx, "leaver"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTeam(ctx, "t3"); err != nil {
		t.Fatal(err)
	}
	if tm, err := s.GetTeam(ctx, "t1"); err != nil || !tm.CreatedAt.Equal(born["t1"]) {
		t.Errorf("team t1's created_at after a reset and a member's deletion: %+v %v, want %v", tm, err, born["t1"])
	}
	if u, err := s.GetUser(ctx, "stays"); err != nil || !u.CreatedAt.Equal(born["stays"]) {
		t.Errorf("user stays' created_at after an edit and a reset: %+v %v, want %v", u, err, born["stays"])
	}
	if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	if u, err := s.GetUser(ctx, "leaver"); err != nil || u.CreatedAt.Equal(born["leaver"]) {
		t.Errorf("a user made again: created_at %+v %v, want a new one (not %v)", u, err, born["leaver"])
	}
	if err := s.DeleteUser(ctx, "leaver"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t1", "t2"} {
		tm, err := s.GetTeam(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(tm.Members) != 1 || tm.Members[0].UserID != "stays" || tm.Members[0].Role != "user" {
			t.Errorf("team %s's members after the deletion: %+v", id, tm.Members)
		}
		if id == "t1" && (len(tm.MemberBudgets) != 1 || tm.MemberBudgets[0].UserID != "stays" || tm.MemberBudgets[0].MaxBudget != 7) {
			t.Errorf("team %s's member budgets after the deletion: %+v", id, tm.MemberBudgets)
		}
	}
	spends, err := s.BudgetSpends(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, b := range spends {
		left = append(left, fmt.Sprintf("%s:%s=%g", b.Kind, b.ID, b.Spend))
	}
	slices.Sort(left)
	if want := "team_member:t1/stays=1"; strings.Join(left, " ") != want {
		t.Errorf("budget spend after the deletions: %v, want %s", left, want)
	}
	// Other replicas learn of the changed team from Changes.
	snap, _, err := s.Changes(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(snap.Teams, func(tm *store.Team) bool { return tm.TeamID == "t1" }); i < 0 || len(snap.Teams[i].Members) != 1 {
		t.Errorf("Changes does not bring team t1 without its deleted member: %+v", snap.Teams)
	}
}

// unencodable: a record that cannot be stored (a time past year 9999) is
// an error, never a panic, and writes nothing.
func unencodable(t *testing.T, s store.Store) {
	far := time.Date(10245, 1, 1, 0, 0, 0, 0, time.UTC)
	k := fullKey("far")
	k.Expires = &far
	if err := s.CreateKey(ctx, k); err == nil {
		t.Fatal("a key expiring in year 10245 was stored")
	}
	if _, err := s.GetKey(ctx, "far"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused key is there: %v", err)
	}
	ok := fullKey("near")
	if err := s.CreateKey(ctx, ok); err != nil {
		t.Fatal(err)
	}
	ok.Expires = &far
	if err := s.UpdateKey(ctx, ok); err == nil {
		t.Fatal("an update to year 10245 was stored")
	}
	u := &store.User{UserID: "far", Limits: store.Limits{BudgetResetAt: &far}}
	if err := s.CreateUser(ctx, u); err == nil {
		t.Fatal("a user resetting in year 10245 was stored")
	}
}

func budgetsAndOrgs(t *testing.T, s store.Store) {
	reset := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	b := &store.Budget{BudgetID: "tier-1", Limits: store.Limits{MaxBudget: ptr(5.0), MaxParallelRequests: ptr(int64(2)), TPMLimit: ptr(int64(100)), RPMLimit: ptr(int64(3)), BudgetDuration: ptr("30d"), BudgetResetAt: &reset}, SoftBudget: ptr(4.0),
		ModelMaxBudget: map[string]any{"gpt-4": map[string]any{"max_budget": 1.0}}, CreatedBy: "admin"}
	if err := s.CreateBudget(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBudget(ctx, &store.Budget{BudgetID: "tier-1"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate budget: %v, want ErrConflict", err)
	}
	got, err := s.GetBudget(ctx, "tier-1")
	if err != nil {
		t.Fatal(err)
	}
	if *got.MaxBudget != 5 || *got.SoftBudget != 4 || *got.MaxParallelRequests != 2 || *got.TPMLimit != 100 || *got.RPMLimit != 3 ||
		*got.BudgetDuration != "30d" || !got.BudgetResetAt.Equal(reset) || got.CreatedAt.IsZero() || got.CreatedBy != "admin" {
		t.Fatalf("budget round trip: %+v", got)
	}
	if m, _ := got.ModelMaxBudget["gpt-4"].(map[string]any); m["max_budget"] != 1.0 {
		t.Fatalf("model_max_budget: %v", got.ModelMaxBudget)
	}
	got.RPMLimit = ptr(int64(7))
	if err := s.UpdateBudget(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetBudget(ctx, "tier-1"); *got.RPMLimit != 7 {
		t.Fatalf("update: rpm %d", *got.RPMLimit)
	}
	if err := s.UpdateBudget(ctx, &store.Budget{BudgetID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing budget: %v", err)
	}

	o := &store.Organization{OrganizationID: "org-1", OrganizationAlias: "Acme", BudgetID: "tier-1", Models: []string{"gpt-4"},
		Members: []store.OrgMember{{UserID: "u1", UserRole: "org_admin"}}, CreatedBy: "admin", UpdatedBy: "admin"}
	if err := s.CreateOrganization(ctx, o); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateOrganization(ctx, &store.Organization{OrganizationID: "org-1"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate organization: %v", err)
	}
	// Spend of a team's request reaches its organization.
	err = s.ApplySpend(ctx, []store.SpendLog{{RequestID: "org-r1", TeamID: "t", Cost: 0.25, StartedAt: time.Now(), EndedAt: time.Now(),
		Budgets: []store.BudgetRef{{Kind: store.KindOrganization, ID: "org-1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	og, err := s.GetOrganization(ctx, "org-1")
	if err != nil {
		t.Fatal(err)
	}
	if og.OrganizationAlias != "Acme" || og.BudgetID != "tier-1" || og.Models[0] != "gpt-4" || len(og.Members) != 1 ||
		og.Members[0].UserRole != "org_admin" || og.Spend != 0.25 {
		t.Fatalf("organization round trip: %+v", og)
	}
	if spends, _ := s.BudgetSpends(ctx); len(spends) != 0 {
		t.Fatalf("organization spend went to budget_spend too: %v", spends)
	}
	og.Models = append(og.Models, "gpt-4o")
	og.Spend = 99 // the record's spend never overwrites the column
	if err := s.UpdateOrganization(ctx, og); err != nil {
		t.Fatal(err)
	}
	if og, _ := s.GetOrganization(ctx, "org-1"); len(og.Models) != 2 || og.Spend != 0.25 {
		t.Fatalf("after update: %+v", og)
	}
	if err := s.SetSpend(ctx, store.KindOrganization, "org-1", 0); err != nil {
		t.Fatal(err)
	}
	snap, err := s.LoadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Budgets) != 1 || len(snap.Organizations) != 1 || snap.Organizations[0].Spend != 0 {
		t.Fatalf("LoadAll: %d budgets, %d organizations", len(snap.Budgets), len(snap.Organizations))
	}
	list, total, err := s.ListOrganizations(ctx, store.Page{})
	if err != nil || total != 1 || len(list) != 1 {
		t.Fatalf("ListOrganizations: %d %d %v", len(list), total, err)
	}
	bl, total, err := s.ListBudgets(ctx, store.Page{})
	if err != nil || total != 1 || len(bl) != 1 {
		t.Fatalf("ListBudgets: %d %d %v", len(bl), total, err)
	}
	since := time.Now().Add(-time.Second)
	if err := s.DeleteOrganization(ctx, "org-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBudget(ctx, "tier-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBudget(ctx, "tier-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	_, dels, err := s.Changes(ctx, since)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[store.Kind]bool{}
	for _, d := range dels {
		kinds[d.Kind] = true
	}
	if !kinds[store.KindOrganization] || !kinds[store.KindBudget] {
		t.Fatalf("tombstones: %v", dels)
	}
}

// spendContentBudget: a listing with ContentBytes returns the messages and
// response of the newest rows while they fit in it, and the later rows
// whole but without them (ContentOmitted); rows without content are not
// marked; no budget returns everything.
func spendContentBudget(t *testing.T, s store.Store) {
	at := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	msg := json.RawMessage(`[{"role":"user","content":"` + strings.Repeat("x", 1000) + `"}]`)
	var batch []store.SpendLog
	for i := range 4 {
		batch = append(batch, store.SpendLog{RequestID: fmt.Sprintf("cb%d", i), Status: 200, ModelGroup: "g", StartedAt: at.Add(-time.Duration(i) * time.Minute),
			Messages: msg, Response: json.RawMessage(`{"choices":[]}`)})
	}
	batch = append(batch, store.SpendLog{RequestID: "cb9", Status: 200, ModelGroup: "g", StartedAt: at.Add(-time.Hour)})
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatal(err)
	}
	per := len(msg) + len(`{"choices":[]}`)
	logs, _, err := s.ListSpendLogs(ctx, store.SpendFilter{ContentBytes: 2*per + per/2})
	if err != nil || len(logs) != 5 {
		t.Fatalf("rows %d, %v", len(logs), err)
	}
	var got []string
	for _, l := range logs {
		got = append(got, fmt.Sprintf("%s:%t:%t", l.RequestID, l.Messages != nil, l.ContentOmitted))
	}
	if want := "[cb0:true:false cb1:true:false cb2:false:true cb3:false:true cb9:false:false]"; fmt.Sprint(got) != want {
		t.Errorf("rows under a budget of two rows' content: %v, want %s", got, want)
	}
	logs, _, _ = s.ListSpendLogs(ctx, store.SpendFilter{})
	for _, l := range logs {
		if l.ContentOmitted || (l.RequestID != "cb9" && l.Messages == nil) {
			t.Errorf("no budget: row %s omitted %t", l.RequestID, l.ContentOmitted)
		}
	}
}

// manyBatches writes 16 batches whose rows spread over two days, two
// keys, two models and a few tags, each batch also carrying rows of earlier
// batches again (a replay after an ambiguous failure) and one row twice.
// Every rollup (key spend, budget_spend, daily, tag) must then equal the
// sum over the distinct rows, and the rows of a third of the response ids
// must be found by them (the index finds them by their last character,
// migration 00014).
// Costs are multiples of 1/64, so float sums are exact in any order.
func manyBatches(t *testing.T, s store.Store) {
	for _, k := range []string{"ka", "kb"} {
		if err := s.CreateKey(ctx, &store.Key{TokenHash: k}); err != nil {
			t.Fatal(err)
		}
	}
	day := time.Date(2026, 11, 20, 23, 0, 0, 0, time.UTC)
	// Response ids: several per last character, a multi-byte last
	// character, and none at all.
	tails := []string{"a", "b", "Z", "0", "é"}
	var rows []store.SpendLog
	for i := range 160 {
		l := store.SpendLog{
			RequestID:  fmt.Sprintf("%012x%020x", 1_000_000+i, i*7919),
			ResponseID: fmt.Sprintf("chatcmpl-%d%s", i*31%97, tails[i%len(tails)]),
			KeyHash:    []string{"ka", "kb"}[i%2], ModelGroup: []string{"m1", "m2"}[i%3%2],
			PromptTokens: int64(i % 50), CompletionTokens: int64(i % 7), Cost: float64(i%9) / 64,
			Status: []int{200, 200, 429}[i%3], StartedAt: day.Add(time.Duration(i) * 7 * time.Minute),
		}
		l.EndedAt = l.StartedAt
		if i%11 == 0 {
			l.ResponseID = ""
		}
		if i%4 == 0 {
			l.RequestTags = []string{"prod", fmt.Sprintf("job%d", i%3)}
		}
		if i%5 == 0 {
			l.Budgets = []store.BudgetRef{{Kind: store.KindKeyModel, ID: l.KeyHash + "/" + l.ModelGroup}}
		}
		rows = append(rows, l)
	}
	for b := range 16 {
		batch := slices.Clone(rows[b*10 : b*10+10])
		batch = append(batch, batch[3]) // twice in one batch
		if b > 0 {
			batch = append(batch, rows[(b-1)*10+9], rows[b*7%(b*10)]) // earlier batches again
		}
		if err := s.ApplySpend(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ApplySpend(ctx, rows[:80]); err != nil { // a whole replay
		t.Fatal(err)
	}

	type sum struct {
		requests, failed, prompt, completion int64
		spend                                float64
	}
	add := func(m map[string]*sum, k string, l store.SpendLog) {
		if m[k] == nil {
			m[k] = &sum{}
		}
		m[k].requests++
		if l.Status >= 400 {
			m[k].failed++
		}
		m[k].prompt += l.PromptTokens
		m[k].completion += l.CompletionTokens
		m[k].spend += l.Cost
	}
	daily, tags, keys, budgets := map[string]*sum{}, map[string]*sum{}, map[string]*sum{}, map[string]*sum{}
	var total float64
	for _, l := range rows {
		d := l.StartedAt.UTC().Format(time.DateOnly)
		add(daily, d+"|"+l.KeyHash+"|"+l.ModelGroup, l)
		for _, tag := range l.RequestTags {
			add(tags, d+"|"+tag+"|"+l.ModelGroup, l)
		}
		add(keys, l.KeyHash, l)
		for _, b := range l.Budgets {
			add(budgets, b.ID, l)
		}
		total += l.Cost
	}
	if got, err := s.TotalSpend(ctx); err != nil || got != total {
		t.Fatalf("TotalSpend = %v (%v), rows sum to %v", got, err, total)
	}
	report, err := s.SpendReport(ctx, store.ReportFilter{GroupBy: "key_hash"})
	if err != nil {
		t.Fatal(err)
	}
	if len(report) != len(daily) {
		t.Errorf("daily rollup has %d groups, rows make %d", len(report), len(daily))
	}
	for _, r := range report {
		w := daily[r.Day+"|"+r.Group+"|"+r.Model]
		if w == nil || r.Requests != w.requests || r.PromptTokens != w.prompt || r.CompletionTokens != w.completion || r.Spend != w.spend {
			t.Errorf("daily rollup %+v, rows sum to %+v", r, w)
		}
	}
	tagRows, err := s.TagReport(ctx, store.TagFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tagRows) != len(tags) {
		t.Errorf("tag rollup has %d groups, rows make %d", len(tagRows), len(tags))
	}
	for _, r := range tagRows {
		w := tags[r.Day+"|"+r.Tag+"|"+r.Model]
		if w == nil || r.Requests != w.requests || r.FailedRequests != w.failed || r.PromptTokens != w.prompt || r.CompletionTokens != w.completion || r.Spend != w.spend {
			t.Errorf("tag rollup %+v, rows sum to %+v", r, w)
		}
	}
	for k, w := range keys {
		if got, err := s.GetKey(ctx, k); err != nil || got.Spend != w.spend {
			t.Errorf("key %s spend %v (%v), rows sum to %v", k, got, err, w.spend)
		}
	}
	spends, err := s.BudgetSpends(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(spends) != len(budgets) {
		t.Errorf("budget_spend has %d rows, want %d", len(spends), len(budgets))
	}
	for _, b := range spends {
		if w := budgets[b.ID]; w == nil || b.Spend != w.spend {
			t.Errorf("budget %s spend %v, rows sum to %+v", b.ID, b.Spend, w)
		}
	}
	if _, n, err := s.ListSpendLogs(ctx, store.SpendFilter{}); err != nil || n != len(rows) {
		t.Fatalf("spend logs: %d (%v), want %d", n, err, len(rows))
	}
	byResponse := map[string][]string{}
	for _, l := range rows {
		if l.ResponseID != "" {
			byResponse[l.ResponseID] = append(byResponse[l.ResponseID], l.RequestID)
		}
	}
	// A third of the ids (every last character among them) are looked up:
	// on an engine without an index on them (DynamoDB) each is a scan.
	for id, want := range byResponse {
		if n, _ := strconv.Atoi(strings.TrimRightFunc(strings.TrimPrefix(id, "chatcmpl-"), func(r rune) bool { return r > '9' || r < '0' })); n >= 33 {
			continue
		}
		got, n, err := s.ListSpendLogs(ctx, store.SpendFilter{RequestID: id, Page: store.Page{Size: 100}})
		if err != nil || n != len(want) || len(got) != len(want) {
			t.Fatalf("response id %q: %d rows (%v), want %d", id, n, err, len(want))
		}
		for _, l := range got {
			if l.ResponseID != id || !slices.Contains(want, l.RequestID) {
				t.Fatalf("response id %q found row %s with response id %q", id, l.RequestID, l.ResponseID)
			}
		}
	}
	// A request id is found by itself; an id of neither kind finds nothing.
	if got, n, err := s.ListSpendLogs(ctx, store.SpendFilter{RequestID: rows[123].RequestID}); err != nil || n != 1 || got[0].ResponseID != rows[123].ResponseID {
		t.Fatalf("by request id: %d %+v (%v)", n, got, err)
	}
	if _, n, err := s.ListSpendLogs(ctx, store.SpendFilter{RequestID: "chatcmpl-none"}); err != nil || n != 0 {
		t.Fatalf("unknown id: %d (%v)", n, err)
	}
}

// resetBudget: a budget period that has ended is reset once: spend to
// zero, budget_reset_at to the next end, the record seen by Changes; a
// second reset to the same end (another replica's sweep) changes nothing;
// a missing entity is ErrNotFound.
func resetBudget(t *testing.T, s store.Store) {
	ended := time.Now().Add(-time.Hour).UTC()
	next := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	k := fullKey("k")
	k.BudgetResetAt = &ended
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	mark := time.Now()
	if err := s.ResetBudget(ctx, store.KindKey, "k", next); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetKey(ctx, "k")
	if err != nil || got.Spend != 0 || got.BudgetResetAt == nil || !got.BudgetResetAt.Equal(next) || got.Models[0] != "gpt-4" {
		t.Fatalf("after reset: %+v %v", got, err)
	}
	if err := s.ApplySpend(ctx, []store.SpendLog{{RequestID: "after-reset", KeyHash: "k", Cost: 1, StartedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetBudget(ctx, store.KindKey, "k", next); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetKey(ctx, "k"); got.Spend != 1 {
		t.Fatalf("a second reset of the same period zeroed the spend: %v", got.Spend)
	}
	changed, _, err := s.Changes(ctx, mark)
	if err != nil || len(changed.Keys) != 1 || !changed.Keys[0].BudgetResetAt.Equal(next) {
		t.Fatalf("Changes after reset: %+v %v", changed, err)
	}
	if err := s.ResetBudget(ctx, store.KindUser, "nobody", next); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reset of a missing user: %v", err)
	}
}

// loadKeysInPages: LoadKeys hands every key over exactly once, with its
// own model spend (also for keys at a page's edge), serves other calls
// between pages (SQLite has one connection: a page read still holding it
// would make the GetKey below wait forever), and stops at page's error.
func loadKeysInPages(t *testing.T, s store.Store) {
	n := 2*store.KeyPage + 7
	day := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var logs []store.SpendLog
	for i := range n {
		h := fmt.Sprintf("page%05d", i)
		if err := s.CreateKey(ctx, &store.Key{TokenHash: h, KeyName: "sk-...", CreatedAt: day, UpdatedAt: day}); err != nil {
			t.Fatal(err)
		}
		if i%97 == 0 || i%store.KeyPage <= 1 || i%store.KeyPage == store.KeyPage-1 {
			logs = append(logs, store.SpendLog{RequestID: "p" + h, KeyHash: h, ModelGroup: "m", Cost: float64(i + 1), StartedAt: day, EndedAt: day,
				Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: h + "/m"}}})
		}
	}
	if err := s.ApplySpend(ctx, logs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	pages := 0
	err := s.LoadKeys(ctx, func(page []*store.Key) error {
		pages++
		for _, k := range page {
			seen[k.TokenHash]++
			var i int
			fmt.Sscanf(k.TokenHash, "page%05d", &i)
			want := 0.0
			if i%97 == 0 || i%store.KeyPage <= 1 || i%store.KeyPage == store.KeyPage-1 {
				want = float64(i + 1)
			}
			if k.ModelSpend["m"] != want || (want == 0 && k.ModelSpend != nil) {
				return fmt.Errorf("key %s: model spend %v, want %v", k.TokenHash, k.ModelSpend, want)
			}
		}
		gctx, cancel := context.WithTimeout(ctx, time.Minute) // bounds a deadlock only
		defer cancel()
		if _, err := s.GetKey(gctx, page[0].TokenHash); err != nil {
			return fmt.Errorf("GetKey between pages: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("LoadKeys handed over %d keys, want %d", len(seen), n)
	}
	for h, c := range seen {
		if c != 1 {
			t.Fatalf("key %s handed over %d times", h, c)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.LoadKeys(ctx, func([]*store.Key) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("page's error: LoadKeys returned %v after %d pages", err, calls)
	}
	t.Logf("%d keys in %d pages", n, pages)
}
