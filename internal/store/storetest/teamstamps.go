package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TeamResetStampsLater: a budget reset of a team stamps it later than the
// stamp any editor read, whatever the clock says (store.NextStamp), so that
// the editor's conditional UpdateTeam is refused (store.ErrChanged) and
// does not write back the period the reset ended. setClock stops the
// store's clock (the time ResetBudget stamps with): on the stamp read (a
// reset in the same microsecond as the write the editor read, or on a
// clock whose resolution is coarser) and an hour behind it (another
// replica's clock).
func TeamResetStampsLater(t *testing.T, s store.Store, setClock func(func() time.Time)) {
	for _, c := range []struct {
		name   string
		behind time.Duration
	}{{"same microsecond", 0}, {"clock behind", time.Hour}} {
		ended := time.Now().Add(-3 * time.Hour).UTC()
		next := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		id := "reset-" + map[bool]string{true: "same", false: "behind"}[c.behind == 0]
		if err := s.CreateTeam(ctx, &store.Team{TeamID: id, TeamAlias: "before",
			Limits: store.Limits{BudgetDuration: ptr("1h"), BudgetResetAt: &ended}}); err != nil {
			t.Fatal(err)
		}
		read, err := s.GetTeam(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		was := read.UpdatedAt
		setClock(func() time.Time { return was.Add(-c.behind) })
		err = s.ResetBudget(ctx, store.KindTeam, id, next)
		setClock(time.Now)
		if err != nil {
			t.Fatalf("%s: reset: %v", c.name, err)
		}
		reset, err := s.GetTeam(ctx, id)
		if err != nil || reset.BudgetResetAt == nil || !reset.BudgetResetAt.Equal(next) {
			t.Fatalf("%s: team after its reset: %+v %v", c.name, reset, err)
		}
		if !reset.UpdatedAt.After(was) {
			t.Errorf("%s: the reset stamped the team %v, not later than the %v an editor read", c.name, reset.UpdatedAt, was)
		}
		read.TeamAlias = "edited"
		if err := s.UpdateTeam(ctx, read); !errors.Is(err, store.ErrChanged) {
			t.Errorf("%s: an edit of the team as read before its reset: %v, want ErrChanged", c.name, err)
		}
		if got, err := s.GetTeam(ctx, id); err != nil || got.BudgetResetAt == nil || !got.BudgetResetAt.Equal(next) {
			t.Errorf("%s: the edit undid the reset: budget_reset_at %v (want %v) %v", c.name, got.BudgetResetAt, next, err)
		}
	}
}

// TeamStampReadIsCompared: a team whose stored updated_at (the column, or
// DynamoDB's attribute) and the updated_at in its JSON record disagree (a
// hand edit, an older version's write) is read with the stamp UpdateTeam
// compares, so an edit of it is written, not refused as changed on every
// attempt. skew moves the stored stamp of team id by d, leaving the JSON
// as it is.
func TeamStampReadIsCompared(t *testing.T, s store.Store, skew func(t *testing.T, id string, d time.Duration)) {
	for i, d := range []time.Duration{time.Millisecond, -time.Hour} {
		id := []string{"skew-later", "skew-earlier"}[i]
		if err := s.CreateTeam(ctx, &store.Team{TeamID: id, TeamAlias: "before"}); err != nil {
			t.Fatal(err)
		}
		skew(t, id, d)
		for _, alias := range []string{"first", "second"} {
			tm, err := s.GetTeam(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			tm.TeamAlias = alias
			if err := s.UpdateTeam(ctx, tm); err != nil {
				t.Fatalf("stored stamp moved by %v: edit %q of the team as read: %v", d, alias, err)
			}
		}
		// The team's members leave with a deleted user through the same
		// conditional write on DynamoDB.
		if err := s.CreateUser(ctx, &store.User{UserID: id + "-member"}); err != nil {
			t.Fatal(err)
		}
		tm, _ := s.GetTeam(ctx, id)
		tm.Members = []store.TeamMember{{UserID: id + "-member", Role: "user"}}
		if err := s.UpdateTeam(ctx, tm); err != nil {
			t.Fatal(err)
		}
		skew(t, id, d)
		if err := s.DeleteUser(ctx, id+"-member"); err != nil {
			t.Fatalf("stored stamp moved by %v: delete a member: %v", d, err)
		}
		if got, err := s.GetTeam(ctx, id); err != nil || got.TeamAlias != "second" || len(got.Members) != 0 {
			t.Fatalf("stored stamp moved by %v: team after the edits: %+v %v", d, got, err)
		}
	}
}
