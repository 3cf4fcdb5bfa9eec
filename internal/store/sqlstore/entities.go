package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/tollgate/tollgate/internal/store"
)

// docTable stores records of T as JSON with an id and a spend column. The
// spend column is authoritative: writes of the record never overwrite it
// (concurrent spend batches would be lost); SetSpend does, explicitly.
type docTable[T any] struct {
	name, idCol string
	kind        store.Kind
	id          func(*T) string
	spend       func(*T) *float64
	times       func(*T) (created, updated *time.Time)
}

func (t docTable[T]) create(ctx context.Context, db *sql.DB, v *T) error {
	now := time.Now().UTC()
	c, u := t.times(v)
	if c.IsZero() {
		*c = now
	}
	*u = now
	data, err := encode(v)
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, fmt.Sprintf(`INSERT INTO %s (%s, spend, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)`, t.name, t.idCol),
		t.id(v), *t.spend(v), data, micros(*c), micros(*u))
	return classify(err)
}

func (t docTable[T]) get(ctx context.Context, db *sql.DB, id string) (*T, error) {
	row := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT data, spend, updated_at FROM %s WHERE %s = $1`, t.name, t.idCol), id)
	return t.scan(row)
}

// scan decodes a row of data, spend, updated_at.
func (t docTable[T]) scan(row interface{ Scan(...any) error }) (*T, error) {
	var data string
	var spend float64
	var updated int64
	if err := row.Scan(&data, &spend, &updated); err != nil {
		return nil, classify(err)
	}
	v := new(T)
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return nil, fmt.Errorf("%s: corrupt record: %w", t.name, err)
	}
	*t.spend(v) = spend
	t.stamp(v, updated)
	return v, nil
}

// stamp gives v the updated_at of its row's column (microseconds) where its
// JSON says otherwise (a hand edit, an older version's write): the column
// is what conditional writes compare (UpdateTeam) and Changes selects on,
// so a record is read with it.
func (t docTable[T]) stamp(v *T, updated int64) {
	if _, u := t.times(v); updated != 0 && micros(*u) != updated {
		*u = fromMicros(updated)
	}
}

func (t docTable[T]) update(ctx context.Context, db *sql.DB, v *T) error {
	_, u := t.times(v)
	*u = time.Now().UTC()
	data, err := encode(v)
	if err != nil {
		return err
	}
	res, err := db.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET data = $1, updated_at = $2 WHERE %s = $3`, t.name, t.idCol),
		data, micros(*u), t.id(v))
	return affected(res, classify(err))
}

// updateIfUnchanged is update conditional on the stored updated_at being
// v's, as the caller read it (store.Store's UpdateTeam): a compare-and-swap,
// which PostgreSQL re-checks on the row a concurrent writer committed and
// SQLite's single writer orders. store.ErrChanged when the row was written
// since, store.ErrNotFound when it is gone; v keeps its stamp on failure.
func (t docTable[T]) updateIfUnchanged(ctx context.Context, db *sql.DB, v *T) error {
	_, u := t.times(v)
	read := *u
	*u = store.NextStamp(read, time.Now())
	data, err := encode(v)
	if err != nil {
		*u = read
		return err
	}
	res, err := db.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET data = $1, updated_at = $2 WHERE %s = $3 AND updated_at = $4`, t.name, t.idCol),
		data, micros(*u), t.id(v), micros(read))
	err = affected(res, classify(err))
	if !errors.Is(err, store.ErrNotFound) {
		if err != nil {
			*u = read
		}
		return err
	}
	*u = read
	var one int
	switch err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT 1 FROM %s WHERE %s = $1`, t.name, t.idCol), t.id(v)).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: %s %s", store.ErrNotFound, t.kind, t.id(v))
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: %s %s", store.ErrChanged, t.kind, t.id(v))
}

// delete removes a row and leaves a tombstone for other replicas.
func (t docTable[T]) delete(ctx context.Context, s *DB, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s = $1`, t.name, t.idCol), id)
		if err := affected(res, err); err != nil {
			return err
		}
		return tombstone(ctx, tx, t.kind, id)
	})
}

// deleteOwner removes a user or team and, in the same transaction, every
// key whose keyCol names it (LiteLLM deletes them too), leaving a tombstone
// for each so that other replicas drop them at their next resync; then
// runs also, with the owner's record as stored, in the same transaction.
//
// On PostgreSQL the deletion first takes the owner's advisory lock
// (ownerLockName) exclusively, and every write that gives a key an owner
// (CreateKey, UpdateKey, ReplaceKey) takes the lock of each owner it names
// shared, before anything else: a key written while its owner is deleted is
// either committed before the deletion reads the owner's keys (and is
// deleted with them) or waits for the deletion and is refused (lockOwners).
// Without it a key created between the read and the commit outlived its
// owner. The spend writer takes no advisory lock, so its order (keys, then
// owners) meets no new lock. On SQLite the deletion's transaction holds the
// database's write lock from its BEGIN (IMMEDIATE) to its commit: no key
// write, from this process or another, commits in between.
func deleteOwner[T any](ctx context.Context, s *DB, t docTable[T], keyCol, id string, also func(tx *sql.Tx, data string) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if s.dialect == goose.DialectPostgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || $1, 0))`, ownerLockName(t.kind, id)); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT token_hash FROM keys WHERE `+keyCol+` = $1`, id)
		if err != nil {
			return err
		}
		var hashes []string
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return err
			}
			hashes = append(hashes, h)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// The keys are locked by hash, in the order the spend writer
		// (applySpend) locks them: in the table's order, a deletion and a
		// writer could each take one of two keys and wait for the other's,
		// and PostgreSQL aborted one of them with a deadlock (40P01; a
		// /user/delete answered 500). strings.Compare, as applySpend: not
		// the database's collation.
		slices.Sort(hashes)
		for _, h := range hashes {
			// Still the owner's: a key moved to another owner while the
			// deletion waited for it stays with that owner.
			res, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE token_hash = $1 AND `+keyCol+` = $2`, h, id)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				if err != nil {
					return err
				}
				continue
			}
			if err := dropKeyBudgets(ctx, tx, h); err != nil {
				return err
			}
			if err := tombstone(ctx, tx, store.KindKey, h); err != nil {
				return err
			}
		}
		var data string
		err = tx.QueryRowContext(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s = $1 RETURNING data`, t.name, t.idCol), id).Scan(&data)
		if err != nil {
			return classify(err)
		}
		if also != nil {
			if err := also(tx, data); err != nil {
				return err
			}
		}
		return tombstone(ctx, tx, t.kind, id)
	})
}

// ownerLockName names the advisory lock of an owner of keys (PostgreSQL;
// deleteOwner, lockOwners). Advisory locks are the whole database's: the
// statements that take one hash it with current_schema(), so that stores
// in different schemas of one database (tests, say) do not wait for each
// other.
func ownerLockName(kind store.Kind, id string) string { return "tollgate/" + string(kind) + "/" + id }

// lockOwners takes, on PostgreSQL, the shared advisory lock of the user
// and the team k names, in that order, before the key is written in tx:
// a deletion of either (deleteOwner) that has begun is waited for, and one
// that begins waits for tx. An owner that was there before the wait and is
// gone after it was deleted meanwhile: the write is refused
// (store.OwnerDeletedError, an ErrNotFound) rather than leave a key of a
// deleted owner behind. A key may still name an owner that is not there at
// all (the API lets it).
func (s *DB) lockOwners(ctx context.Context, tx *sql.Tx, k *store.Key) error {
	if s.dialect != goose.DialectPostgres {
		return nil // deleteOwner holds SQLite's one write lock throughout
	}
	for _, o := range []struct {
		kind       store.Kind
		table, col string
		id         string
	}{{store.KindUser, "users", "user_id", k.UserID}, {store.KindTeam, "teams", "team_id", k.TeamID}} {
		if o.id == "" {
			continue
		}
		exists := `SELECT EXISTS (SELECT 1 FROM ` + o.table + ` WHERE ` + o.col + ` = $1)`
		var before, after bool
		if err := tx.QueryRowContext(ctx, exists, o.id).Scan(&before); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock_shared(hashtextextended(current_schema() || '/' || $1, 0))`, ownerLockName(o.kind, o.id)); err != nil {
			return err
		}
		if !before {
			continue
		}
		if err := tx.QueryRowContext(ctx, exists, o.id).Scan(&after); err != nil {
			return err
		}
		if !after {
			return &store.OwnerDeletedError{Kind: o.kind, ID: o.id}
		}
	}
	return nil
}

// leaveTeams takes a deleted user out of every team's members and member
// budgets, and drops the spend of those budgets (budget_spend), in tx: a
// user created later under the same id is no member by inheritance.
// Teams are locked in team_id order, after the user, as the spend writer
// locks them (applySpend).
func (s *DB) leaveTeams(ctx context.Context, tx *sql.Tx, userID string) error {
	// A cheap filter on the documents' JSON (json.Marshal writes
	// "user_id":"<id>" with no space, as encode does); each match is decoded
	// and checked. LIKE is case-insensitive on SQLite: a filter only.
	quoted, err := json.Marshal(userID)
	if err != nil {
		return err
	}
	q := `SELECT team_id, data, updated_at FROM teams WHERE data LIKE $1 ESCAPE '\' ORDER BY team_id`
	if s.dialect == goose.DialectPostgres {
		q += ` FOR NO KEY UPDATE`
	}
	rows, err := tx.QueryContext(ctx, q, "%"+likeEscaper.Replace(`"user_id":`+string(quoted))+"%")
	if err != nil {
		return err
	}
	type doc struct {
		id, data string
		updated  int64
	}
	var found []doc
	for rows.Next() {
		var d doc
		if err := rows.Scan(&d.id, &d.data, &d.updated); err != nil {
			rows.Close()
			return err
		}
		found = append(found, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, d := range found {
		var t store.Team
		if err := json.Unmarshal([]byte(d.data), &t); err != nil {
			return fmt.Errorf("teams: corrupt record: %w", err)
		}
		n := len(t.Members) + len(t.MemberBudgets)
		t.Members = slices.DeleteFunc(t.Members, func(m store.TeamMember) bool { return m.UserID == userID })
		t.MemberBudgets = slices.DeleteFunc(t.MemberBudgets, func(b store.MemberBudget) bool { return b.UserID == userID })
		if len(t.Members)+len(t.MemberBudgets) == n {
			continue
		}
		// A new stamp, later than the column's: a team edit that read the
		// team before this transaction wrote it finds it changed
		// (UpdateTeam) and redoes its change on the team without her.
		t.UpdatedAt = store.NextStamp(fromMicros(d.updated), time.Now())
		now := t.UpdatedAt
		data, err := encode(&t)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE teams SET data = $1, updated_at = $2 WHERE team_id = $3`, data, micros(now), d.id); err != nil {
			return err
		}
		if err := dropMemberBudgets(ctx, tx, d.id, []string{userID}); err != nil {
			return err
		}
	}
	return nil
}

// dropMemberBudgets removes the spend of users' budgets within team.
func dropMemberBudgets(ctx context.Context, tx *sql.Tx, team string, users []string) error {
	slices.Sort(users)
	for _, u := range slices.Compact(users) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM budget_spend WHERE kind = $1 AND id = $2`,
			string(store.KindTeamMember), store.MemberBudgetID(team, u)); err != nil {
			return err
		}
	}
	return nil
}

// dropTeamBudgets removes the spend of a deleted team's member budgets
// (data: its record as it was).
func dropTeamBudgets(ctx context.Context, tx *sql.Tx, data string) error {
	var t store.Team
	if err := json.Unmarshal([]byte(data), &t); err != nil {
		return fmt.Errorf("teams: corrupt record: %w", err)
	}
	var members []string
	for _, m := range t.Members {
		members = append(members, m.UserID)
	}
	for _, b := range t.MemberBudgets {
		members = append(members, b.UserID)
	}
	return dropMemberBudgets(ctx, tx, t.TeamID, members)
}

func tombstone(ctx context.Context, tx *sql.Tx, kind store.Kind, id string) error {
	now := time.Now()
	if _, err := tx.ExecContext(ctx, `INSERT INTO deletions (kind, id, at) VALUES ($1, $2, $3)`, string(kind), id, micros(now)); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM deletions WHERE at < $1`, micros(now.Add(-24*time.Hour)))
	return err
}

// since reads the rows updated at or after t.
// since reads the rows that cond (on updated_at, or changed_xid:
// ChangesFrom; $1 is from) selects.
func (t docTable[T]) since(ctx context.Context, db *sql.DB, cond string, from int64) ([]*T, error) {
	rows, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT data, spend, updated_at FROM %s WHERE %s`, t.name, cond), from)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*T
	for rows.Next() {
		v, err := t.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (t docTable[T]) list(ctx context.Context, db *sql.DB, where string, args []any, p store.Page) ([]*T, int, error) {
	if where != "" {
		where = " WHERE " + where
	}
	var total int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t.name+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := p.PageBounds()
	q := fmt.Sprintf(`SELECT data, spend, updated_at FROM %s%s ORDER BY created_at, %s LIMIT %d OFFSET %d`, t.name, where, t.idCol, limit, offset)
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []*T
	for rows.Next() {
		v, err := t.scan(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, v)
	}
	return out, total, rows.Err()
}

func (t docTable[T]) all(ctx context.Context, db *sql.DB) ([]*T, error) {
	rows, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT data, spend, updated_at FROM %s`, t.name))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var rs []rawRecord
	for rows.Next() {
		var r rawRecord
		if err := rows.Scan(&r.data, &r.spend, &r.updated); err != nil {
			return nil, classify(err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil || len(rs) == 0 {
		return nil, err
	}
	return t.decodeAll(rs)
}

// page reads up to limit records whose id sorts after after, in id order
// (keyset paging on the primary key), and the last one's id.
func (t docTable[T]) page(ctx context.Context, db *sql.DB, after string, limit int) ([]*T, string, error) {
	rows, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT %[2]s, data, spend, updated_at FROM %[1]s WHERE %[2]s > $1 ORDER BY %[2]s LIMIT %[3]d`, t.name, t.idCol, limit), after)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	rs := make([]rawRecord, 0, limit)
	var last string
	for rows.Next() {
		var r rawRecord
		if err := rows.Scan(&last, &r.data, &r.spend, &r.updated); err != nil {
			return nil, "", classify(err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil || len(rs) == 0 {
		return nil, "", err
	}
	out, err := t.decodeAll(rs)
	return out, last, err
}

// rawRecord is a row's JSON, spend and updated_at, not yet decoded.
type rawRecord struct {
	data    []byte
	spend   float64
	updated int64
}

// decodeAll decodes rs.
func (t docTable[T]) decodeAll(rs []rawRecord) ([]*T, error) {
	// Decoding the records' JSON is most of a large table's load (100,000
	// keys: about a second of CPU); it runs on every CPU Go may use.
	out := make([]*T, len(rs))
	errs := make([]error, len(rs))
	decode := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := new(T)
			if err := json.Unmarshal(rs[i].data, v); err != nil {
				errs[i] = fmt.Errorf("%s: corrupt record: %w", t.name, err)
				continue
			}
			*t.spend(v) = rs[i].spend
			t.stamp(v, rs[i].updated)
			out[i] = v
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(rs)/1000+1)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			decode(w*len(rs)/workers, (w+1)*len(rs)/workers)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the first corrupt record, as a sequential read would
		}
	}
	return out, nil
}

func affected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

var (
	users = docTable[store.User]{name: "users", idCol: "user_id", kind: store.KindUser,
		id:    func(u *store.User) string { return u.UserID },
		spend: func(u *store.User) *float64 { return &u.Spend },
		times: func(u *store.User) (*time.Time, *time.Time) { return &u.CreatedAt, &u.UpdatedAt }}
	teams = docTable[store.Team]{name: "teams", idCol: "team_id", kind: store.KindTeam,
		id:    func(t *store.Team) string { return t.TeamID },
		spend: func(t *store.Team) *float64 { return &t.Spend },
		times: func(t *store.Team) (*time.Time, *time.Time) { return &t.CreatedAt, &t.UpdatedAt }}
	endUsers = docTable[store.EndUser]{name: "end_users", idCol: "user_id", kind: store.KindEndUser,
		id:    func(e *store.EndUser) string { return e.UserID },
		spend: func(e *store.EndUser) *float64 { return &e.Spend },
		times: func(e *store.EndUser) (*time.Time, *time.Time) { return &e.CreatedAt, &e.UpdatedAt }}
	budgets = docTable[store.Budget]{name: "budgets", idCol: "budget_id", kind: store.KindBudget,
		id: func(b *store.Budget) string { return b.BudgetID },
		// A budget has no spend: the column stays 0 and is read into a
		// value nobody keeps.
		spend: func(*store.Budget) *float64 { return new(float64) },
		times: func(b *store.Budget) (*time.Time, *time.Time) { return &b.CreatedAt, &b.UpdatedAt }}
	organizations = docTable[store.Organization]{name: "organizations", idCol: "organization_id", kind: store.KindOrganization,
		id:    func(o *store.Organization) string { return o.OrganizationID },
		spend: func(o *store.Organization) *float64 { return &o.Spend },
		times: func(o *store.Organization) (*time.Time, *time.Time) { return &o.CreatedAt, &o.UpdatedAt }}
	keys = docTable[store.Key]{name: "keys", idCol: "token_hash", kind: store.KindKey,
		id:    func(k *store.Key) string { return k.TokenHash },
		spend: func(k *store.Key) *float64 { return &k.Spend },
		times: func(k *store.Key) (*time.Time, *time.Time) { return &k.CreatedAt, &k.UpdatedAt }}
)

// Users, teams and end users.

func (s *DB) CreateUser(ctx context.Context, u *store.User) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return users.create(ctx, s.db, u)
}
func (s *DB) GetUser(ctx context.Context, id string) (*store.User, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return users.get(ctx, s.db, id)
}

// UpdateUser is conditional on the user being as read, as UpdateTeam
// (store.Store): ErrChanged when she was written since.
func (s *DB) UpdateUser(ctx context.Context, u *store.User) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return users.updateIfUnchanged(ctx, s.db, u)
}
func (s *DB) DeleteUser(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// Her keys and her team memberships go with her, in one transaction.
	return deleteOwner(ctx, s, users, "user_id", id, func(tx *sql.Tx, _ string) error { return s.leaveTeams(ctx, tx, id) })
}
func (s *DB) ListUsers(ctx context.Context, p store.Page) ([]*store.User, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return users.list(ctx, s.db, "", nil, p)
}

func (s *DB) CreateTeam(ctx context.Context, t *store.Team) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return teams.create(ctx, s.db, t)
}
func (s *DB) GetTeam(ctx context.Context, id string) (*store.Team, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return teams.get(ctx, s.db, id)
}
func (s *DB) UpdateTeam(ctx context.Context, t *store.Team) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return teams.updateIfUnchanged(ctx, s.db, t)
}
func (s *DB) DeleteTeam(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return deleteOwner(ctx, s, teams, "team_id", id, func(tx *sql.Tx, data string) error { return dropTeamBudgets(ctx, tx, data) })
}
func (s *DB) ListTeams(ctx context.Context, p store.Page) ([]*store.Team, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return teams.list(ctx, s.db, "", nil, p)
}

func (s *DB) CreateEndUser(ctx context.Context, e *store.EndUser) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return endUsers.create(ctx, s.db, e)
}
func (s *DB) GetEndUser(ctx context.Context, id string) (*store.EndUser, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return endUsers.get(ctx, s.db, id)
}
func (s *DB) UpdateEndUser(ctx context.Context, e *store.EndUser) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return endUsers.update(ctx, s.db, e)
}
func (s *DB) DeleteEndUser(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return endUsers.delete(ctx, s, id)
}
func (s *DB) ListEndUsers(ctx context.Context, p store.Page) ([]*store.EndUser, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return endUsers.list(ctx, s.db, "", nil, p)
}

// Budgets and organizations.

func (s *DB) CreateBudget(ctx context.Context, b *store.Budget) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return budgets.create(ctx, s.db, b)
}
func (s *DB) GetBudget(ctx context.Context, id string) (*store.Budget, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return budgets.get(ctx, s.db, id)
}
func (s *DB) UpdateBudget(ctx context.Context, b *store.Budget) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return budgets.update(ctx, s.db, b)
}
func (s *DB) DeleteBudget(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return budgets.delete(ctx, s, id)
}
func (s *DB) ListBudgets(ctx context.Context, p store.Page) ([]*store.Budget, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return budgets.list(ctx, s.db, "", nil, p)
}

func (s *DB) CreateOrganization(ctx context.Context, o *store.Organization) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return organizations.create(ctx, s.db, o)
}
func (s *DB) GetOrganization(ctx context.Context, id string) (*store.Organization, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return organizations.get(ctx, s.db, id)
}
func (s *DB) UpdateOrganization(ctx context.Context, o *store.Organization) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return organizations.update(ctx, s.db, o)
}
func (s *DB) DeleteOrganization(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return organizations.delete(ctx, s, id)
}
func (s *DB) ListOrganizations(ctx context.Context, p store.Page) ([]*store.Organization, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return organizations.list(ctx, s.db, "", nil, p)
}

// Keys carry alias, user and team columns besides the document.

func keyCols(k *store.Key) (alias any) {
	if k.KeyAlias != nil && *k.KeyAlias != "" {
		return *k.KeyAlias
	}
	return nil
}

func (s *DB) CreateKey(ctx context.Context, k *store.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := time.Now().UTC()
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now
	}
	k.UpdatedAt = now
	data, err := encode(k)
	if err != nil {
		return err
	}
	const insert = `INSERT INTO keys (token_hash, key_alias, user_id, team_id, spend, data, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	_, err = s.writeOwnedKey(ctx, k, insert, k.TokenHash, keyCols(k), k.UserID, k.TeamID, k.Spend, data, micros(k.CreatedAt), micros(k.UpdatedAt))
	return err
}

// writeOwnedKey runs q, a statement writing the key k (CreateKey,
// UpdateKey), with args. A key that names an owner (user or team) on
// PostgreSQL is written in a transaction that takes the owners' advisory
// locks first (lockOwners), so that it does not outlive an owner deleted
// meanwhile (deleteOwner); otherwise - SQLite, whose deletion holds the one
// write lock throughout, or no owner - q runs alone. The error is
// classified (store.ErrConflict, ...).
func (s *DB) writeOwnedKey(ctx context.Context, k *store.Key, q string, args ...any) (sql.Result, error) {
	if s.dialect != goose.DialectPostgres || k.UserID == "" && k.TeamID == "" {
		res, err := s.db.ExecContext(ctx, q, args...)
		return res, classify(err)
	}
	var res sql.Result
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.lockOwners(ctx, tx, k); err != nil {
			return err
		}
		var err error
		res, err = tx.ExecContext(ctx, q, args...)
		return classify(err)
	})
	return res, err
}

func (s *DB) GetKey(ctx context.Context, hash string) (*store.Key, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return withModelSpend(ctx, s.db)(keys.get(ctx, s.db, hash))
}

func (s *DB) GetKeyByAlias(ctx context.Context, alias string) (*store.Key, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return withModelSpend(ctx, s.db)(keys.scan(s.db.QueryRowContext(ctx, `SELECT data, spend, updated_at FROM keys WHERE key_alias = $1`, alias)))
}

const keyModelKind = string(store.KindKeyModel)

// withModelSpend sets a key just read to its ModelSpend from budget_spend,
// the only place it is kept (ApplySpend adds to it).
func withModelSpend(ctx context.Context, db *sql.DB) func(*store.Key, error) (*store.Key, error) {
	return func(k *store.Key, err error) (*store.Key, error) {
		if err != nil {
			return nil, err
		}
		if err := attachModelSpend(ctx, db, []*store.Key{k}); err != nil {
			return nil, err
		}
		return k, nil
	}
}

// attachModelSpendOneByOne is how many keys attachModelSpend looks up by
// their index; for more it reads every key_model row once.
const attachModelSpendOneByOne = 32

// attachModelSpend sets the ModelSpend of ks from budget_spend.
func attachModelSpend(ctx context.Context, db *sql.DB, ks []*store.Key) error {
	return attachModelSpendRange(ctx, db, ks, "", "")
}

// attachModelSpendRange is attachModelSpend for keys whose token hashes
// all sort after lo and at or before hi (hi empty: anywhere): it reads the
// budget_spend rows of that range through the key_hash index.
func attachModelSpendRange(ctx context.Context, db *sql.DB, ks []*store.Key, lo, hi string) error {
	byHash := make(map[string]*store.Key, len(ks))
	for _, k := range ks {
		k.ModelSpend = nil
		byHash[k.TokenHash] = k
	}
	read := func(q string, args ...any) error {
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("model spend: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var hash, id string
			var spend float64
			if err := rows.Scan(&hash, &id, &spend); err != nil {
				return err
			}
			k := byHash[hash]
			if _, model, ok := strings.Cut(id, "/"); ok && k != nil {
				if k.ModelSpend == nil {
					k.ModelSpend = map[string]float64{}
				}
				k.ModelSpend[model] = spend
			}
		}
		return rows.Err()
	}
	const cols = `SELECT key_hash, id, spend FROM budget_spend WHERE kind = $1`
	if hi != "" {
		return read(cols+` AND key_hash > $2 AND key_hash <= $3`, keyModelKind, lo, hi)
	}
	if len(ks) > attachModelSpendOneByOne {
		return read(cols, keyModelKind)
	}
	for _, k := range ks {
		if err := read(cols+` AND key_hash = $2`, keyModelKind, k.TokenHash); err != nil {
			return err
		}
	}
	return nil
}

func (s *DB) UpdateKey(ctx context.Context, k *store.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	k.UpdatedAt = time.Now().UTC()
	data, err := encode(k)
	if err != nil {
		return err
	}
	const update = `UPDATE keys SET key_alias = $1, user_id = $2, team_id = $3, data = $4, updated_at = $5 WHERE token_hash = $6`
	return affected(s.writeOwnedKey(ctx, k, update, keyCols(k), k.UserID, k.TeamID, data, micros(k.UpdatedAt), k.TokenHash))
}

// ReplaceKey moves a key's record to a new hash (regenerate), keeping its spend.
func (s *DB) ReplaceKey(ctx context.Context, oldHash string, k *store.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.lockOwners(ctx, tx, k); err != nil {
			return err
		}
		// The old row's spend is read by the DELETE that removes it: on
		// PostgreSQL a spend batch adding to it meanwhile is waited for
		// and its increment read (a SELECT before the DELETE read the
		// spend without the row's lock and lost what a batch committed
		// between the two: TestReplaceKeyKeepsSpendCommittedMeanwhile).
		var spend float64
		if err := tx.QueryRowContext(ctx, `DELETE FROM keys WHERE token_hash = $1 RETURNING spend`, oldHash).Scan(&spend); err != nil {
			return classify(err)
		}
		if err := tombstone(ctx, tx, store.KindKey, oldHash); err != nil {
			return err
		}
		k.Spend = spend
		k.UpdatedAt = time.Now().UTC()
		data, err := encode(k)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO keys (token_hash, key_alias, user_id, team_id, spend, data, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			k.TokenHash, keyCols(k), k.UserID, k.TeamID, spend, data, micros(k.CreatedAt), micros(k.UpdatedAt))
		if err != nil {
			return classify(err)
		}
		// The model budgets' spend moves with the key.
		_, err = tx.ExecContext(ctx, `UPDATE budget_spend SET id = CAST($1 AS TEXT) || substr(id, CAST($2 AS INTEGER)), key_hash = CAST($1 AS TEXT)
			WHERE key_hash = $3 AND kind = $4`, k.TokenHash, len(oldHash)+1, oldHash, keyModelKind)
		if err != nil {
			return err
		}
		// So do its files and batches: the key reaches them under its new secret.
		_, err = tx.ExecContext(ctx, `UPDATE managed_objects SET key_hash = $1 WHERE key_hash = $2`, k.TokenHash, oldHash)
		if err != nil {
			return err
		}
		return replaced(ctx, tx, oldHash, k.TokenHash)
	})
}

// HashReplaced: hash is a forwarding's old hash, or a key's budget
// account (store.Key.BudgetAccount, in its data: read as JSON, so that
// metadata naming it does not count).
func (s *DB) HashReplaced(ctx context.Context, hash string) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	field := `json_extract(data, '$.budget_account')`
	if s.dialect == goose.DialectPostgres {
		field = `CAST(data AS jsonb)->>'budget_account'`
	}
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM key_replacements WHERE old_hash = $1
		UNION ALL SELECT 1 FROM keys WHERE `+field+` = $1 LIMIT 1`, hash).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// replacedBatch is how many hashes one HashesReplaced query asks about.
const replacedBatch = 1000

// HashesReplaced: HashReplaced for each of hashes, one query per
// replacedBatch hashes, given as one JSON array (each one scan of keys,
// where HashReplaced per hash made one scan each).
func (s *DB) HashesReplaced(ctx context.Context, hashes []string) (map[string]bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	field, list := `json_extract(data, '$.budget_account')`, `SELECT value FROM json_each($1)`
	if s.dialect == goose.DialectPostgres {
		field, list = `CAST(data AS jsonb)->>'budget_account'`, `SELECT jsonb_array_elements_text(CAST($1 AS jsonb))`
	}
	hashes = slices.Compact(slices.Sorted(slices.Values(hashes)))
	used := map[string]bool{}
	for part := range slices.Chunk(hashes, replacedBatch) {
		arg, err := json.Marshal(part)
		if err != nil {
			return nil, err
		}
		rows, err := s.db.QueryContext(ctx, `SELECT old_hash FROM key_replacements WHERE old_hash IN (`+list+`)
			UNION SELECT `+field+` FROM keys WHERE `+field+` IN (`+list+`)`, string(arg))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return nil, err
			}
			used[h] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return used, nil
}

// replacementsKept is how long ReplaceKey keeps a replaced hash's
// forwarding (key_replacements): longer than any request stays in flight
// or any spend batch waits in the writer's queue.
const replacementsKept = 7 * 24 * time.Hour

// replaced records, in ReplaceKey's tx, that newHash replaced oldHash: spend
// that still names oldHash (requests in flight when the key was
// regenerated settle later) is booked on newHash by ApplySpend
// (followReplacement). Hashes that oldHash had
// replaced now point at newHash too (one lookup, however long the chain);
// a forwarding from newHash, a live key again, is dropped; so are those
// older than replacementsKept.
func replaced(ctx context.Context, tx *sql.Tx, oldHash, newHash string) error {
	now := time.Now()
	for _, q := range []struct {
		text string
		args []any
	}{
		{`UPDATE key_replacements SET new_hash = $1 WHERE new_hash = $2`, []any{newHash, oldHash}},
		{`INSERT INTO key_replacements (old_hash, new_hash, replaced_at) VALUES ($1, $2, $3)
			ON CONFLICT (old_hash) DO UPDATE SET new_hash = excluded.new_hash, replaced_at = excluded.replaced_at`, []any{oldHash, newHash, micros(now)}},
		{`DELETE FROM key_replacements WHERE old_hash = $1 OR replaced_at < $2`, []any{newHash, micros(now.Add(-replacementsKept))}},
	} {
		if _, err := tx.ExecContext(ctx, q.text, q.args...); err != nil {
			return fmt.Errorf("key replacement: %w", err)
		}
	}
	return nil
}

func (s *DB) DeleteKey(ctx context.Context, hash string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// The key and its model budgets go in one transaction.
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE token_hash = $1`, hash)
		if err := affected(res, err); err != nil {
			return err
		}
		if err := dropKeyBudgets(ctx, tx, hash); err != nil {
			return err
		}
		return tombstone(ctx, tx, store.KindKey, hash)
	})
}

// dropKeyBudgets removes a deleted key's model budgets, and the
// forwardings of the hashes it replaced (key_replacements): late spend of
// a deleted key goes to no key, whatever its hash.
func dropKeyBudgets(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, hash string) error {
	if _, err := db.ExecContext(ctx, `DELETE FROM budget_spend WHERE key_hash = $1 AND kind = $2`, hash, keyModelKind); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, `DELETE FROM key_replacements WHERE new_hash = $1`, hash)
	return err
}

func (s *DB) ListKeys(ctx context.Context, f store.KeyFilter) ([]*store.Key, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if f.UserID != "" {
		add("user_id = $%d", f.UserID)
	}
	if f.TeamID != "" {
		add("team_id = $%d", f.TeamID)
	}
	if f.Alias != "" {
		// The alias matches literally: % and _ are escaped (same ESCAPE
		// clause on SQLite and PostgreSQL).
		add(`key_alias LIKE $%d ESCAPE '\'`, "%"+likeEscaper.Replace(f.Alias)+"%")
	}
	return keys.list(ctx, s.db, strings.Join(conds, " AND "), args, f.Page)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

var kindTables = map[store.Kind][2]string{
	store.KindKey: {"keys", "token_hash"}, store.KindUser: {"users", "user_id"},
	store.KindTeam: {"teams", "team_id"}, store.KindEndUser: {"end_users", "user_id"},
	store.KindOrganization: {"organizations", "organization_id"},
}

// ResetBudget starts a new budget period for one entity. It is
// conditional on the period it ends: only a stored reset time that has
// passed, and is before next, is replaced, and the update applies only to
// the record as read (so replicas sweeping at once reset once, and a late
// reset never zeroes the current period's spend).
func (s *DB) ResetBudget(ctx context.Context, kind store.Kind, id string, next time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	t, ok := kindTables[kind]
	if !ok {
		return fmt.Errorf("unknown kind %q", kind)
	}
	for range 5 {
		done := true
		err := s.tx(ctx, func(tx *sql.Tx) error {
			var data string
			var updated int64
			err := tx.QueryRowContext(ctx, fmt.Sprintf(`SELECT data, updated_at FROM %s WHERE %s = $1`, t[0], t[1]), id).Scan(&data, &updated)
			if err != nil {
				return classify(err)
			}
			// A stamp later than the one read, as every team write's: an
			// editor who read the team before the reset finds it changed
			// (UpdateTeam), also on a clock behind, or in one microsecond.
			now := s.now().UTC()
			stamp := store.NextStamp(fromMicros(updated), now)
			enc, ok, err := store.ResetRecord(data, next, now, stamp)
			if err != nil || !ok {
				return err // !ok: this period, or a later one, has started already
			}
			res, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET spend = 0, data = $1, updated_at = $2 WHERE %s = $3 AND data = $4 AND updated_at = $5`, t[0], t[1]),
				enc, micros(stamp), id, data, updated)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			done = err == nil && n > 0 // else changed since read: read again
			return err
		})
		if err != nil || done {
			return err
		}
	}
	return fmt.Errorf("reset %s %s: the record kept changing", kind, id)
}

// SetSpend overwrites an entity's spend (an operator edit).
func (s *DB) SetSpend(ctx context.Context, kind store.Kind, id string, spend float64) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	t, ok := kindTables[kind]
	if !ok {
		return fmt.Errorf("unknown kind %q", kind)
	}
	res, err := s.db.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET spend = $1 WHERE %s = $2`, t[0], t[1]), spend, id)
	return affected(res, err)
}

// LoadAll reads every key, user, team and end user.
func (s *DB) LoadAll(ctx context.Context) (*store.Snapshot, error) {
	snap, err := s.LoadAllButKeys(ctx)
	if err != nil {
		return nil, err
	}
	err = s.LoadKeys(ctx, func(page []*store.Key) error {
		snap.Keys = append(snap.Keys, page...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// LoadKeys reads every key, with its model spend, store.KeyPage keys at a
// time in token hash order: each page is one indexed range read of keys
// and one of budget_spend, and the connection is free between pages (on
// SQLite there is one, which a request's key lookup may be waiting for).
func (s *DB) LoadKeys(ctx context.Context, page func([]*store.Key) error) error {
	after := ""
	for {
		ks, last, err := s.keyPage(ctx, after, store.KeyPage)
		if err != nil || len(ks) == 0 {
			return err
		}
		if err := page(ks); err != nil {
			return err
		}
		if len(ks) < store.KeyPage {
			return nil
		}
		after = last
	}
}

// keyPage reads up to limit keys whose token hash sorts after after, with
// their model spend, and the last one's token hash.
func (s *DB) keyPage(ctx context.Context, after string, limit int) ([]*store.Key, string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ks, last, err := keys.page(ctx, s.db, after, limit)
	if err != nil || len(ks) == 0 {
		return nil, "", err
	}
	if err := attachModelSpendRange(ctx, s.db, ks, after, last); err != nil {
		return nil, "", err
	}
	return ks, last, nil
}

// LoadAllButKeys reads every user, team, end user, budget and
// organization: LoadAll without the keys.
func (s *DB) LoadAllButKeys(ctx context.Context) (*store.Snapshot, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var snap store.Snapshot
	var err error
	if snap.Users, err = users.all(ctx, s.db); err != nil {
		return nil, err
	}
	if snap.Teams, err = teams.all(ctx, s.db); err != nil {
		return nil, err
	}
	if snap.EndUsers, err = endUsers.all(ctx, s.db); err != nil {
		return nil, err
	}
	if snap.Budgets, err = budgets.all(ctx, s.db); err != nil {
		return nil, err
	}
	if snap.Organizations, err = organizations.all(ctx, s.db); err != nil {
		return nil, err
	}
	return &snap, nil
}

// Changes reads what was written or deleted at or after since. On
// PostgreSQL a replica's resync reads by ChangeMark and ChangesFrom
// instead: a row stamped before since by a transaction that committed
// after a read at since is not here.
func (s *DB) Changes(ctx context.Context, since time.Time) (*store.Snapshot, []store.Deletion, error) {
	return s.changes(ctx, "", micros(since))
}

// changes reads the rows whose col is at or after from: updated_at (and a
// deletion's at) when col is "", else col of every table (changed_xid).
func (s *DB) changes(ctx context.Context, col string, from int64) (*store.Snapshot, []store.Deletion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rowCol, delCol := "updated_at >= $1", "at >= $1"
	if col != "" {
		// Below the xmax of the query's snapshot: every id this cluster
		// has committed is. An id above it was stamped by another
		// cluster (a database restored from a dump starts its own ids
		// lower): read again by every look, for ever, rather than once.
		rowCol = col + " >= $1 AND " + col + " < txid_snapshot_xmax(txid_current_snapshot())"
		delCol = rowCol
	}
	var snap store.Snapshot
	var err error
	if snap.Keys, err = keys.since(ctx, s.db, rowCol, from); err != nil {
		return nil, nil, err
	}
	if err := attachModelSpend(ctx, s.db, snap.Keys); err != nil {
		return nil, nil, err
	}
	if snap.Users, err = users.since(ctx, s.db, rowCol, from); err != nil {
		return nil, nil, err
	}
	if snap.Teams, err = teams.since(ctx, s.db, rowCol, from); err != nil {
		return nil, nil, err
	}
	if snap.EndUsers, err = endUsers.since(ctx, s.db, rowCol, from); err != nil {
		return nil, nil, err
	}
	if snap.Budgets, err = budgets.since(ctx, s.db, rowCol, from); err != nil {
		return nil, nil, err
	}
	if snap.Organizations, err = organizations.since(ctx, s.db, rowCol, from); err != nil {
		return nil, nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT kind, id, at FROM deletions WHERE `+delCol+` ORDER BY at`, from)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var dels []store.Deletion
	for rows.Next() {
		var d store.Deletion
		var kind string
		var at int64
		if err := rows.Scan(&kind, &d.ID, &at); err != nil {
			return nil, nil, err
		}
		d.Kind, d.At = store.Kind(kind), fromMicros(at)
		dels = append(dels, d)
	}
	return &snap, dels, rows.Err()
}
