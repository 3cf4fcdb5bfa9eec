package sqlstore

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// PutModel creates or replaces a model, keeping its creation time.
func (s *DB) PutModel(ctx context.Context, m *store.Model) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := time.Now().UTC()
	if m.CreatedAt.IsZero() {
		m.CreatedAt = now
	}
	m.UpdatedAt = now
	_, err := s.db.ExecContext(ctx, `INSERT INTO models (id, data, created_at, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at`,
		m.ID, string(m.Entry), micros(m.CreatedAt), micros(m.UpdatedAt))
	return err
}

// DeleteModel removes a model.
func (s *DB) DeleteModel(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, `DELETE FROM models WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ListModels returns every model, oldest first.
func (s *DB) ListModels(ctx context.Context) ([]store.Model, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, `SELECT id, data, created_at, updated_at FROM models ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Model
	for rows.Next() {
		var m store.Model
		var data string
		var created, updated int64
		if err := rows.Scan(&m.ID, &data, &created, &updated); err != nil {
			return nil, err
		}
		m.Entry, m.CreatedAt, m.UpdatedAt = []byte(data), fromMicros(created), fromMicros(updated)
		out = append(out, m)
	}
	return out, rows.Err()
}
