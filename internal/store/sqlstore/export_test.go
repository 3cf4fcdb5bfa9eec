package sqlstore

import "context"

// WALFrames checkpoints the WAL and returns the pages it held: the pages
// written since the last call. SQLite only.
func WALFrames(ctx context.Context, s *DB) (int, error) {
	var busy, frames, moved int
	if err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &moved); err != nil {
		return 0, err
	}
	// TRUNCATE starts the next batch's frames at zero.
	_, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	return frames, err
}

// Exec runs a statement on the store's database.
func Exec(ctx context.Context, s *DB, q string) error {
	_, err := s.db.ExecContext(ctx, q)
	return err
}
