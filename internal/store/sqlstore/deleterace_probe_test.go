package sqlstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// TestProbeMemberBudgetOfAUserWithoutARecordIsKept: a member budget is
// charged by a principal whose key and user have no row: general_settings
// custom_auth in replace mode vouches for user "ext" of team "team" with a
// key of its own (never stored), and "ext" is a member named by user_id
// in /team/new, which creates no user. The batch's budget_spend row was
// dropped (the member budget was added to only while her user or the key
// was there), so her spend in the team was forgotten at the next restart
// and her budget did not hold. A user deleted (tombstoned) still gets no
// row back.
func TestProbeMemberBudgetOfAUserWithoutARecordIsKept(t *testing.T) {
	t.Parallel()
	bothEngines(t, func(t *testing.T, s *sqlstore.DB) {
		ctx := context.Background()
		if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateTeam(ctx, &store.Team{TeamID: "team",
			Members:       []store.TeamMember{{UserID: "ext"}, {UserID: "leaver"}},
			MemberBudgets: []store.MemberBudget{{UserID: "ext", MaxBudget: 5}, {UserID: "leaver", MaxBudget: 5}}}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, "leaver"); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		var batch []store.SpendLog
		for _, u := range []string{"ext", "leaver"} {
			batch = append(batch, store.SpendLog{RequestID: "r-" + u, KeyHash: "hooked-" + u, UserID: u, TeamID: "team", Cost: 1,
				StartedAt: now, EndedAt: now, Budgets: []store.BudgetRef{{Kind: store.KindTeamMember, ID: store.MemberBudgetID("team", u)}}})
		}
		if err := s.ApplySpend(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(budgetRows(t, s), " "), "team_member:team/ext"; got != want {
			t.Errorf("budget_spend rows: %q, want %q", got, want)
		}
	})
}
