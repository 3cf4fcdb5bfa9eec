-- +goose Up
-- A spend row answered from the response cache: cache_hit is 1 for a hit
-- (0 for every other row, and for rows written before this migration),
-- cache_key the hex key it was served under ('' otherwise), and
-- saved_cost what the answer would have cost at its deployment's price
-- (0 for a miss). The row's cost is what the client was charged.
ALTER TABLE spend_logs ADD COLUMN cache_hit BIGINT NOT NULL DEFAULT 0;
ALTER TABLE spend_logs ADD COLUMN cache_key TEXT NOT NULL DEFAULT '';
ALTER TABLE spend_logs ADD COLUMN saved_cost DOUBLE PRECISION NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE spend_logs DROP COLUMN saved_cost;
ALTER TABLE spend_logs DROP COLUMN cache_key;
ALTER TABLE spend_logs DROP COLUMN cache_hit;
