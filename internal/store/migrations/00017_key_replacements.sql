-- +goose Up
-- A regenerated key's old hash and the hash that replaced it (ReplaceKey).
-- Requests in flight when a key is regenerated settle later, and their
-- spend names the old hash, whose keys row is gone: ApplySpend follows
-- old_hash to new_hash so that the key's spend and its model budgets get
-- it. A chain (regenerated twice) points every old hash at the newest one.
-- Rows older than ReplaceKey's retention are dropped.
CREATE TABLE key_replacements (
    old_hash    TEXT PRIMARY KEY,
    new_hash    TEXT NOT NULL,
    replaced_at BIGINT NOT NULL
);
CREATE INDEX key_replacements_new ON key_replacements (new_hash);

-- +goose Down
DROP TABLE key_replacements;
