package sqlstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// bothEngines runs fn on a SQLite store and, with
// TOLLGATE_TEST_POSTGRES_URL, on a PostgreSQL one.
func bothEngines(t *testing.T, fn func(t *testing.T, s *sqlstore.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, storetest.OpenSQLite(t, filepath.Join(t.TempDir(), "tollgate.db")))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
		if base == "" {
			t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run")
		}
		fn(t, storetest.OpenPostgres(t, base))
	})
}

// budgetRows are the store's budget_spend rows as "kind:id".
func budgetRows(t *testing.T, s store.Store) []string {
	t.Helper()
	spends, err := s.BudgetSpends(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range spends {
		out = append(out, string(b.Kind)+":"+b.ID)
	}
	slices.Sort(out)
	return out
}

// TestLateSpendDoesNotRecreateBudgets: a spend batch written after a key,
// a user or a team was deleted (the spend writer flushes up to 100 ms
// after a request; on PostgreSQL a batch may also have waited for the
// deletion's locks) does not bring back the budget_spend rows the deletion
// dropped: a key's model budget, a member's budget in a team. Its
// spend_logs rows are kept (spend history), and budgets of entities still
// there are added to as before. The upsert re-created them, with only
// the late batch's spend, under an id a later key, user or team of the
// same name would inherit.
func TestLateSpendDoesNotRecreateBudgets(t *testing.T) {
	t.Parallel()
	bothEngines(t, func(t *testing.T, s *sqlstore.DB) {
		ctx := context.Background()
		for _, u := range []string{"leaver", "stays"} {
			if err := s.CreateUser(ctx, &store.User{UserID: u}); err != nil {
				t.Fatal(err)
			}
		}
		for _, tm := range []*store.Team{
			{TeamID: "team", Members: []store.TeamMember{{UserID: "leaver"}, {UserID: "stays"}},
				MemberBudgets: []store.MemberBudget{{UserID: "leaver", MaxBudget: 9}, {UserID: "stays", MaxBudget: 9}}},
			{TeamID: "gone", Members: []store.TeamMember{{UserID: "stays"}}, MemberBudgets: []store.MemberBudget{{UserID: "stays", MaxBudget: 9}}},
		} {
			if err := s.CreateTeam(ctx, tm); err != nil {
				t.Fatal(err)
			}
		}
		keys := []store.Key{
			{TokenHash: "k-deleted", UserID: "stays", TeamID: "team"},
			{TokenHash: "k-user", UserID: "leaver", TeamID: "team"},
			{TokenHash: "k-team", UserID: "stays", TeamID: "gone"},
			{TokenHash: "k-live", UserID: "stays", TeamID: "team"},
		}
		now := time.Now()
		batch := func(round string) []store.SpendLog {
			var b []store.SpendLog
			for _, k := range keys {
				b = append(b, store.SpendLog{RequestID: round + k.TokenHash, KeyHash: k.TokenHash, UserID: k.UserID, TeamID: k.TeamID,
					Cost: 1, StartedAt: now, EndedAt: now, Budgets: []store.BudgetRef{
						{Kind: store.KindKeyModel, ID: k.TokenHash + "/gpt-4"},
						{Kind: store.KindTeamMember, ID: store.MemberBudgetID(k.TeamID, k.UserID)}}})
			}
			return b
		}
		for _, k := range keys {
			if err := s.CreateKey(ctx, &k); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.ApplySpend(ctx, batch("before-")); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteKey(ctx, "k-deleted"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, "leaver"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteTeam(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		if err := s.ApplySpend(ctx, batch("after-")); err != nil {
			t.Fatal(err)
		}
		// k-deleted's member budget (team/stays) stays: its user and team
		// are there, and k-live adds to it.
		want := "key_model:k-live/gpt-4 team_member:team/stays"
		if got := strings.Join(budgetRows(t, s), " "); got != want {
			t.Errorf("budget_spend rows after late spend: %s, want %s", got, want)
		}
		spends, _ := s.BudgetSpends(ctx)
		for _, b := range spends {
			if want := map[string]float64{"k-live/gpt-4": 2, "team/stays": 4}[b.ID]; b.Spend != want {
				t.Errorf("budget %s spent %g, want %g", b.ID, b.Spend, want)
			}
		}
		if _, n, err := s.ListSpendLogs(ctx, store.SpendFilter{}); err != nil || n != 2*len(keys) {
			t.Errorf("spend_logs rows: %d (%v), want %d: history is kept", n, err, 2*len(keys))
		}
	})
}

// TestSpendWaitingOnADeletionRecreatesNoBudget is the PostgreSQL race
// behind TestLateSpendDoesNotRecreateBudgets: a batch for a user's key
// waits for the user's deletion (which holds the key) and runs once it
// commits. The interleaving is forced: another transaction holds the user
// row (as a spend writer adding to her spend would), so the deletion stops
// before its commit with her key, and its model budget row, deleted.
func TestSpendWaitingOnADeletionRecreatesNoBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := pgStoreAndConn(t)
	if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "kkkk", UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	row := func(id string) []store.SpendLog {
		return []store.SpendLog{{RequestID: id, KeyHash: "kkkk", UserID: "leaver", Cost: 1, StartedAt: now, EndedAt: now,
			Budgets: []store.BudgetRef{{Kind: store.KindKeyModel, ID: "kkkk/gpt-4"}}}}
	}
	if err := s.ApplySpend(ctx, row("r0")); err != nil {
		t.Fatal(err)
	}

	holdUser, userPID := lock(t, raw, `UPDATE users SET spend = spend WHERE user_id = $1`, "leaver")
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteUser(ctx, "leaver") }()
	deleterPID, ok := blockedBy(t, raw, []int{userPID}, deleted)
	if !ok {
		t.Fatalf("the deletion did not wait for the user row: %v", <-deleted)
	}
	written := make(chan error, 1)
	go func() { written <- s.ApplySpend(ctx, row("r1")) }()
	if _, ok := blockedBy(t, raw, []int{deleterPID}, written); !ok {
		t.Fatalf("the batch did not wait for the deletion: %v", <-written)
	}
	if err := holdUser.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if err := <-written; err != nil {
		t.Fatalf("ApplySpend after the deletion: %v", err)
	}
	if got := budgetRows(t, s); len(got) != 0 {
		t.Errorf("budget_spend rows of the deleted user's key: %v", got)
	}
	if _, n, err := s.ListSpendLogs(ctx, store.SpendFilter{KeyHash: "kkkk"}); err != nil || n != 2 {
		t.Errorf("spend_logs rows of the deleted key: %d (%v), want 2", n, err)
	}
}

// TestKeyCreatedDuringOwnerDeletion: on PostgreSQL, a key created for a
// user while the user is being deleted does not outlive her. deleteOwner
// read the user's keys, then deleted them and her; a key committed in
// between was never read and stayed, naming a user that is gone. Now a
// creation that began first is waited for and deleted with her; one that
// comes during the deletion waits for it and is refused (ErrNotFound).
// Each interleaving is forced by a transaction held open beside them.
func TestKeyCreatedDuringOwnerDeletion(t *testing.T) {
	t.Parallel()
	t.Run("creation first", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		s, raw := pgStoreAndConn(t)
		if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
			t.Fatal(err)
		}
		// Another transaction inserts the new key's hash, uncommitted: the
		// creation's INSERT waits for it, its transaction open.
		hold, holdPID := lock(t, raw, `INSERT INTO keys (token_hash, user_id, team_id, spend, data, created_at, updated_at) VALUES ($1, '', '', 0, '{}', 0, 0)`, "new-key")
		created := make(chan error, 1)
		go func() { created <- s.CreateKey(ctx, &store.Key{TokenHash: "new-key", UserID: "leaver"}) }()
		creatorPID, ok := blockedBy(t, raw, []int{holdPID}, created)
		if !ok {
			t.Fatalf("the creation did not wait: %v", <-created)
		}
		deleted := make(chan error, 1)
		go func() { deleted <- s.DeleteUser(ctx, "leaver") }()
		waited, _ := blockedBy(t, raw, []int{creatorPID}, deleted)
		if err := hold.Rollback(); err != nil {
			t.Fatal(err)
		}
		if err := <-created; err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		if err := <-deleted; err != nil {
			t.Fatalf("DeleteUser: %v", err)
		}
		if _, err := s.GetKey(ctx, "new-key"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the key created before the deletion outlived its user (the deletion waited for it: %v): %v", waited != 0, err)
		}
	})
	t.Run("creation during", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		s, raw := pgStoreAndConn(t)
		if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
			t.Fatal(err)
		}
		// The user row held (as a spend batch adding to her spend holds
		// it): the deletion stops before its commit, her keys read.
		hold, holdPID := lock(t, raw, `UPDATE users SET spend = spend WHERE user_id = $1`, "leaver")
		deleted := make(chan error, 1)
		go func() { deleted <- s.DeleteUser(ctx, "leaver") }()
		deleterPID, ok := blockedBy(t, raw, []int{holdPID}, deleted)
		if !ok {
			t.Fatalf("the deletion did not wait: %v", <-deleted)
		}
		created := make(chan error, 1)
		go func() { created <- s.CreateKey(ctx, &store.Key{TokenHash: "new-key", UserID: "leaver"}) }()
		if _, ok := blockedBy(t, raw, []int{deleterPID}, created); !ok {
			t.Error("the creation did not wait for the deletion")
		}
		if err := hold.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := <-deleted; err != nil {
			t.Fatalf("DeleteUser: %v", err)
		}
		createErr := <-created
		_, getErr := s.GetKey(ctx, "new-key")
		if !errors.Is(getErr, store.ErrNotFound) {
			t.Errorf("a key created during its user's deletion outlived her (CreateKey: %v): %v", createErr, getErr)
		}
		if !errors.Is(createErr, store.ErrNotFound) {
			t.Errorf("CreateKey during the deletion: %v, want ErrNotFound", createErr)
		}
	})
}
