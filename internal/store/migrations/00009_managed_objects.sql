-- +goose Up
-- Files and batches created through the gateway (/v1/files, /v1/batches):
-- the upstream's id, who created it (key hash, user, team) and on which
-- deployment, so that a key sees only its own and later calls reach the
-- same upstream account; parent_id is the batch a batch's output or error
-- file came from. object is the upstream's JSON as last seen, which
-- listings serve. A batch's charged flag is set once, conditionally, by the
-- replica that books its cost (cost: what it booked).
CREATE TABLE managed_objects (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    user_id     TEXT NOT NULL DEFAULT '',
    team_id     TEXT NOT NULL DEFAULT '',
    model_group TEXT NOT NULL DEFAULT '',
    deployment  TEXT NOT NULL DEFAULT '',
    provider    TEXT NOT NULL DEFAULT '',
    parent_id   TEXT NOT NULL DEFAULT '',
    object      TEXT NOT NULL,
    charged     INTEGER NOT NULL DEFAULT 0,
    cost        DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX managed_objects_owner ON managed_objects (kind, key_hash, created_at);
CREATE INDEX managed_objects_kind ON managed_objects (kind, created_at);

-- +goose Down
DROP TABLE managed_objects;
