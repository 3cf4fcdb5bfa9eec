package auth

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeSnapshotKeepsLaterTeam: PutTeam stored whatever copy of a team
// came last. Copies arrive out of order (two edits' answers publish in
// either order, /user/delete's re-read of a team, the miss path's read),
// and an older one replaced a newer until the next resync: a team blocked
// in the store served unblocked, a removed member kept her membership. A
// copy read before the team's deletion brought it back.
func TestProbeSnapshotKeepsLaterTeam(t *testing.T) {
	t0 := time.Now().UTC()
	team := func(stamp time.Time, blocked bool, spend float64) *store.Team {
		return &store.Team{TeamID: "t", Blocked: blocked, Spend: spend, UpdatedAt: stamp,
			Members: []store.TeamMember{{UserID: "ann", BudgetID: map[bool]string{true: "b-new", false: "b-old"}[blocked]}}}
	}
	s := NewSnapshot(nil)
	s.PutTeam(team(t0.Add(2*time.Microsecond), true, 0)) // the later edit's answer first
	s.PutTeam(team(t0.Add(time.Microsecond), false, 0))  // the earlier edit's answer
	if got, _ := s.Team("t"); !got.Blocked {
		t.Errorf("an older copy of the team replaced the newer one: blocked %v, stamp %v", got.Blocked, got.UpdatedAt)
	}
	if v, _ := s.memberBudgets.Load("t"); v == nil || v.(map[string]string)["ann"] != "b-new" {
		t.Errorf("the older copy's member budgets replaced the newer one's: %v", v)
	}
	// The store-change feed delivering an older row (another replica's
	// answer, a resync that read before): the same rule.
	s.Apply(&store.Snapshot{Teams: []*store.Team{team(t0, false, 0)}}, nil, time.Time{})
	if got, _ := s.Team("t"); !got.Blocked {
		t.Errorf("the feed's older copy replaced the newer one")
	}
	// An equal stamp is the same write: its spend (written apart from the
	// record) may be the newer.
	s.Apply(&store.Snapshot{Teams: []*store.Team{team(t0.Add(2*time.Microsecond), true, 7)}}, nil, time.Time{})
	if got, _ := s.Team("t"); got.Spend != 7 {
		t.Errorf("a copy of the same write was refused: spend %v", got.Spend)
	}
	// Deleted: a copy written before the deletion stays out, a team made
	// again after it comes in.
	s.DeleteTeam("t", time.Time{})
	s.PutTeam(team(t0.Add(2*time.Microsecond), true, 0))
	if _, ok := s.Team("t"); ok {
		t.Errorf("a copy read before the team's deletion brought it back")
	}
	fed := NewSnapshot(&store.Snapshot{Teams: []*store.Team{team(t0.Add(2*time.Microsecond), true, 0)}})
	fed.Apply(&store.Snapshot{Teams: []*store.Team{team(t0.Add(time.Microsecond), true, 0)}},
		[]store.Deletion{{Kind: store.KindTeam, ID: "t", At: t0.Add(3 * time.Microsecond)}}, time.Time{})
	if _, ok := fed.Team("t"); ok {
		t.Errorf("the feed's copy from before the deletion brought the team back")
	}
	// A team last written long ago: its tombstone lasts forgetFor from
	// the deletion, not from the stamp (a resync prunes in between).
	old := NewSnapshot(&store.Snapshot{Teams: []*store.Team{team(t0.Add(-time.Hour), false, 0)}})
	old.DeleteTeam("t", time.Time{})
	old.Apply(&store.Snapshot{}, nil, time.Time{})
	old.PutTeam(team(t0.Add(-time.Hour), false, 0))
	if _, ok := old.Team("t"); ok {
		t.Errorf("a copy read before the deletion of a team last written an hour ago brought it back")
	}
	again := time.Now().Add(time.Second).UTC()
	s.PutTeam(team(again, false, 0))
	if got, ok := s.Team("t"); !ok || !got.UpdatedAt.Equal(again) {
		t.Errorf("a team made again after its deletion is missing: %+v", got)
	}
}
