-- +goose Up
-- What an upstream reported next to what was booked: the token columns hold
-- the booked usage; reported_* hold the upstream's own numbers, and the two
-- flags say why they may differ (clamped: negative or beyond the request's
-- hold; estimated: no usage was reported and the gateway counted it).
ALTER TABLE spend_logs ADD COLUMN reported_prompt_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE spend_logs ADD COLUMN reported_completion_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE spend_logs ADD COLUMN usage_clamped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE spend_logs ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;

-- Spend of budgets without an entity row of their own: a key's
-- model_max_budget entries ("key_model", "<key hash>/<model>") and keys that
-- only custom_auth knows ("custom_auth_key", the key hash). key_hash is the
-- key they belong to, so that a key's budgets are found by index (a LIKE on
-- id cannot use one under PostgreSQL's default collations).
CREATE TABLE budget_spend (
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    key_hash TEXT NOT NULL DEFAULT '',
    spend    DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, id)
);
CREATE INDEX budget_spend_key ON budget_spend (key_hash);

-- +goose Down
DROP TABLE budget_spend;
ALTER TABLE spend_logs DROP COLUMN usage_estimated;
ALTER TABLE spend_logs DROP COLUMN usage_clamped;
ALTER TABLE spend_logs DROP COLUMN reported_completion_tokens;
ALTER TABLE spend_logs DROP COLUMN reported_prompt_tokens;
