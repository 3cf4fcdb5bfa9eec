package sqlstore

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

const objectColumns = `id, kind, key_hash, user_id, team_id, model_group, deployment, provider, parent_id, object, charged, cost, created_at, updated_at`

// PutObject records a new managed object.
func (s *DB) PutObject(ctx context.Context, o *store.ManagedObject) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := time.Now().UTC()
	if o.CreatedAt.IsZero() {
		o.CreatedAt = now
	}
	o.UpdatedAt = now
	_, err := s.db.ExecContext(ctx, `INSERT INTO managed_objects (`+objectColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		o.ID, string(o.Kind), o.KeyHash, o.UserID, o.TeamID, o.ModelGroup, o.Deployment, o.Provider, o.ParentID,
		string(o.Object), boolInt(o.Charged), o.Cost, micros(o.CreatedAt), micros(o.UpdatedAt))
	return classify(err)
}

// GetObject reads one managed object of kind.
func (s *DB) GetObject(ctx context.Context, kind store.ObjectKind, id string) (*store.ManagedObject, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	row := s.db.QueryRowContext(ctx, `SELECT `+objectColumns+` FROM managed_objects WHERE id = $1 AND kind = $2`, id, string(kind))
	o, err := scanObject(row)
	if err != nil {
		return nil, classify(err)
	}
	return o, nil
}

// UpdateObject replaces an object's last-seen JSON.
func (s *DB) UpdateObject(ctx context.Context, kind store.ObjectKind, id string, object []byte) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `UPDATE managed_objects SET object = $1, updated_at = $2 WHERE id = $3 AND kind = $4`,
		string(object), micros(time.Now()), id, string(kind))
	return affected(res, err)
}

// DeleteObject removes a managed object.
func (s *DB) DeleteObject(ctx context.Context, kind store.ObjectKind, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `DELETE FROM managed_objects WHERE id = $1 AND kind = $2`, id, string(kind))
	return affected(res, err)
}

// ListObjects lists managed objects of one kind, newest first.
func (s *DB) ListObjects(ctx context.Context, f store.ObjectFilter) ([]store.ManagedObject, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	limit := f.Limit
	if limit <= 0 {
		limit = 20
	}
	limit = min(limit, 10000)
	q := `SELECT ` + objectColumns + ` FROM managed_objects WHERE kind = ` + s.param(1)
	args := []any{string(f.Kind)}
	if f.KeyHash != "" {
		args = append(args, f.KeyHash)
		q += ` AND key_hash = ` + s.param(len(args))
	}
	if f.After != "" {
		// The page after an object: older than it, or as old with a smaller
		// id. The cursor is looked up among the listed objects only, so
		// another key's id pages like an id that does not exist.
		args = append(args, f.After)
		cursor := `SELECT created_at, id FROM managed_objects WHERE id = ` + s.param(len(args)) + ` AND kind = ` + s.param(1)
		if f.KeyHash != "" {
			cursor += ` AND key_hash = ` + s.param(2)
		}
		q += ` AND (created_at, id) < (` + cursor + `)`
	}
	args = append(args, limit)
	q += ` ORDER BY created_at DESC, id DESC LIMIT ` + s.param(len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.ManagedObject
	for rows.Next() {
		o, err := scanObject(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *o)
	}
	return out, rows.Err()
}

// MarkCharged sets a batch's charged flag once.
func (s *DB) MarkCharged(ctx context.Context, id string, cost float64) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `UPDATE managed_objects SET charged = 1, cost = $1, updated_at = $2
		WHERE id = $3 AND kind = $4 AND charged = 0`, cost, micros(time.Now()), id, string(store.ObjectBatch))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func scanObject(row interface{ Scan(...any) error }) (*store.ManagedObject, error) {
	var o store.ManagedObject
	var kind, object string
	var charged int
	var created, updated int64
	if err := row.Scan(&o.ID, &kind, &o.KeyHash, &o.UserID, &o.TeamID, &o.ModelGroup, &o.Deployment, &o.Provider, &o.ParentID,
		&object, &charged, &o.Cost, &created, &updated); err != nil {
		return nil, err
	}
	o.Kind, o.Object, o.Charged = store.ObjectKind(kind), []byte(object), charged != 0
	o.CreatedAt, o.UpdatedAt = fromMicros(created), fromMicros(updated)
	return &o, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
