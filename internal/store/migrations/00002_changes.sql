-- +goose Up
-- Replicas resync from rows updated since their last look, and from
-- tombstones of deleted rows (kept a day; older ones are pruned).
CREATE INDEX keys_updated ON keys (updated_at);
CREATE INDEX users_updated ON users (updated_at);
CREATE INDEX teams_updated ON teams (updated_at);
CREATE INDEX end_users_updated ON end_users (updated_at);
CREATE TABLE deletions (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    at   BIGINT NOT NULL
);
CREATE INDEX deletions_at ON deletions (at);

-- +goose Down
DROP TABLE deletions;
DROP INDEX end_users_updated;
DROP INDEX teams_updated;
DROP INDEX users_updated;
DROP INDEX keys_updated;
