package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/pressly/goose/v3"

	"github.com/tollgate/tollgate/internal/store"
)

// changeMarksVersion is the migration that gives PostgreSQL's changed rows
// and deletion records the id of the transaction that wrote them (a Go
// migration: the trigger is PostgreSQL's alone; on SQLite it does
// nothing).
const changeMarksVersion = 19

// changeTables are the tables Changes reads: each row that a transaction
// inserts, or updates with a new updated_at, gets that transaction's id in
// changed_xid (set by a trigger, so that no statement can forget it; a
// spend write, which leaves updated_at alone, does not set it, as it does
// not move updated_at). Every deletions row gets it too.
var changeTables = []string{"keys", "users", "teams", "end_users", "budgets", "organizations"}

// changeMarksMigration adds changed_xid on PostgreSQL. A resync's cursor
// was a time: rows stamped as they were written, in a transaction that
// committed later than the cursor had moved past the stamp (a user's
// deletion of thousands of keys, longer than the 5 s overlap), were never
// read by other replicas. A transaction id orders what a reader may have
// missed independently of clocks and of how long the writer took
// (ChangeMark).
func (s *DB) changeMarksMigration() *goose.Migration {
	up := func(ctx context.Context, tx *sql.Tx) error {
		if s.dialect != goose.DialectPostgres {
			return nil
		}
		stmts := []string{`CREATE FUNCTION tollgate_change_xid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.changed_xid := txid_current();
	RETURN NEW;
END $$`}
		for _, t := range append(changeTables, "deletions") {
			stmts = append(stmts,
				fmt.Sprintf(`ALTER TABLE %s ADD COLUMN changed_xid BIGINT`, t),
				fmt.Sprintf(`CREATE INDEX %s_changed_xid ON %s (changed_xid)`, t, t),
				fmt.Sprintf(`CREATE TRIGGER %s_changed_xid_ins BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION tollgate_change_xid()`, t, t))
			if t != "deletions" {
				stmts = append(stmts, fmt.Sprintf(`CREATE TRIGGER %s_changed_xid_upd BEFORE UPDATE ON %s FOR EACH ROW
WHEN (NEW.updated_at IS DISTINCT FROM OLD.updated_at) EXECUTE FUNCTION tollgate_change_xid()`, t, t))
			}
		}
		for _, q := range stmts {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}
	down := func(ctx context.Context, tx *sql.Tx) error {
		if s.dialect != goose.DialectPostgres {
			return nil
		}
		for _, t := range append(changeTables, "deletions") {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`DROP TRIGGER IF EXISTS %s_changed_xid_ins ON %s; DROP TRIGGER IF EXISTS %s_changed_xid_upd ON %s; ALTER TABLE %s DROP COLUMN changed_xid`, t, t, t, t, t)); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `DROP FUNCTION tollgate_change_xid()`)
		return err
	}
	return goose.NewGoMigration(changeMarksVersion, &goose.GoFunc{RunTx: up}, &goose.GoFunc{RunTx: down})
}

var _ store.ChangeFeed = (*DB)(nil)

// ChangeMark is, on PostgreSQL, the oldest transaction still in progress
// (the xmin of a snapshot taken now; txid_current and txid_snapshot_xmin,
// 64-bit ids that do not wrap, are PostgreSQL 11's, still served by 17,
// where pg_current_xact_id and pg_snapshot_xmin are their new names from 13): every transaction before it has
// committed or aborted, so a read begun after this call sees all it
// wrote; whatever a read misses was written by a transaction at or after
// the mark, however long that transaction lasts, and ChangesFrom(mark)
// reads it once committed. SQLite has no marks (ok false): one process
// writes it, and its writes are serialized.
func (s *DB) ChangeMark(ctx context.Context) (uint64, bool, error) {
	if s.dialect != goose.DialectPostgres {
		return 0, false, nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var mark int64
	if err := s.db.QueryRowContext(ctx, `SELECT txid_snapshot_xmin(txid_current_snapshot())`).Scan(&mark); err != nil {
		return 0, false, err
	}
	return uint64(mark), true, nil
}

// ChangesFrom reads the rows written, and the deletions recorded, by
// transactions at or after mark (PostgreSQL; ChangeMark).
func (s *DB) ChangesFrom(ctx context.Context, mark uint64) (*store.Snapshot, []store.Deletion, error) {
	if s.dialect != goose.DialectPostgres {
		return nil, nil, fmt.Errorf("sqlstore: change marks are PostgreSQL's")
	}
	return s.changes(ctx, "changed_xid", int64(mark))
}
