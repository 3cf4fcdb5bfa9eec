package sqlstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// sqlEngines runs fn on a fresh SQLite store and, when
// TOLLGATE_TEST_POSTGRES_URL is set, on a fresh PostgreSQL one.
func sqlEngines(t *testing.T, fn func(t *testing.T, s *sqlstore.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, storetest.OpenSQLite(t, filepath.Join(t.TempDir(), "tollgate.db")))
	})
	t.Run("postgres", func(t *testing.T) {
		base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
		if base == "" {
			t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run")
		}
		fn(t, storetest.OpenPostgres(t, base))
	})
}

// TestProbeTeamResetStampsLater: ResetBudget stamped a team with the
// clock's time, not store.NextStamp: a reset in the microsecond of the
// stamp an editor read let the editor's conditional write through, and it
// wrote back the period the reset had ended (a second reset of it then
// zeroes the new period's spend).
func TestProbeTeamResetStampsLater(t *testing.T) {
	sqlEngines(t, func(t *testing.T, s *sqlstore.DB) {
		storetest.TeamResetStampsLater(t, s, func(f func() time.Time) { sqlstore.SetClock(s, f) })
	})
}

// TestProbeTeamStampReadIsCompared: GetTeam read updated_at from the JSON
// record and UpdateTeam compared the column: a team whose two disagree
// answered ErrChanged to every edit (409 at the API), for ever.
func TestProbeTeamStampReadIsCompared(t *testing.T) {
	sqlEngines(t, func(t *testing.T, s *sqlstore.DB) {
		storetest.TeamStampReadIsCompared(t, s, func(t *testing.T, id string, d time.Duration) {
			q := fmt.Sprintf(`UPDATE teams SET updated_at = updated_at + %d WHERE team_id = '%s'`, d.Microseconds(), id)
			if err := sqlstore.Exec(context.Background(), s, q); err != nil {
				t.Fatal(err)
			}
		})
	})
}
