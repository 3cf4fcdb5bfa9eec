package sqlstore

import (
	"context"

	"github.com/tollgate/tollgate/internal/store"
)

// StoreSpendBlocks stores rows as spend blocks the way SQLite's spend
// writer does: appended in order to a block, a new one begun when it is
// full() or, with perBlock > 0, holds perBlock rows (tests make many small
// blocks whose started ranges overlap).
func StoreSpendBlocks(ctx context.Context, s *DB, rows []store.SpendLog, perBlock int) error {
	b := newSpendBlock()
	flush := func() error {
		if b.rows == 0 {
			return nil
		}
		_, err := s.db.ExecContext(ctx, `INSERT INTO spend_blocks (format, row_count, min_started, max_started, min_ended, max_ended, ids, attrs, summary, data)
			VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9)`, b.rows, b.minStarted, b.maxStarted, b.minEnded, b.maxEnded, b.ids, b.attrs, b.summaryBytes(), b.data)
		b = newSpendBlock()
		return err
	}
	for i := range rows {
		b.add(&rows[i])
		if b.full() || (perBlock > 0 && b.rows >= perBlock) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}
