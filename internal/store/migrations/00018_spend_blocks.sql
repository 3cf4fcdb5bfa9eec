-- +goose Up
-- SQLite's spend log, stored in blocks of many rows (sqlstore/spendblock.go):
-- a spend_logs row cost the spend writer a B-tree entry in the table, its
-- primary key and each index, about as much CPU as the rest of a request;
-- a block is one entry for hundreds of rows. Each block keeps the range of
-- its rows' started_at and ended_at (Unix microseconds) and two Bloom
-- filters (call and answer ids; keys, users, teams, end users, model groups
-- and tags) that let a listing and the replay check skip it, and a summary
-- (each row's key, user, team, end user, model group, status and
-- started_at, against small dictionaries) that lets a filtered listing
-- count and place rows without reading the data; it comes before data,
-- which SQLite then does not read for it. PostgreSQL
-- keeps writing spend_logs (its rows cost its own process, not the
-- gateway's); the table is created there too so that both engines run one
-- schema, and stays empty.
CREATE TABLE spend_blocks (
    id          INTEGER PRIMARY KEY,
    format      INTEGER NOT NULL,
    row_count   INTEGER NOT NULL,
    min_started BIGINT NOT NULL,
    max_started BIGINT NOT NULL,
    min_ended   BIGINT NOT NULL,
    max_ended   BIGINT NOT NULL,
    ids         BYTEA NOT NULL,
    attrs       BYTEA NOT NULL,
    summary     BYTEA NOT NULL,
    data        BYTEA NOT NULL
);
-- The listing's first statement (sqlstore/spendblockread.go) reads every
-- block's started range and row count in its time range: the index holds
-- them, so that it reads no table row (a block's row is a leaf page or
-- more of its own).
CREATE INDEX spend_blocks_started ON spend_blocks (max_started, min_started, row_count, format);
CREATE INDEX spend_blocks_ended ON spend_blocks (max_ended);

-- +goose Down
-- Going down drops the blocks and the spend log rows they hold (spend,
-- budgets and the daily rollups are elsewhere and stay).
DROP TABLE spend_blocks;
