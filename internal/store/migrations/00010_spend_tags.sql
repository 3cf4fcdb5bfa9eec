-- +goose Up
-- A spend row's request tags (a JSON array of strings), the request's own
-- metadata (a JSON object, LiteLLM's requester_metadata), and the redacted,
-- size-capped messages and response when store_prompts_in_spend_logs keeps
-- them (JSON). NULL when absent; rows written before this migration have
-- none of them.
ALTER TABLE spend_logs ADD COLUMN request_tags TEXT;
ALTER TABLE spend_logs ADD COLUMN metadata TEXT;
ALTER TABLE spend_logs ADD COLUMN messages TEXT;
ALTER TABLE spend_logs ADD COLUMN response TEXT;

-- Spend per day, request tag and model group: one rollup row gets each
-- spend row once per tag it carries (a request with two tags counts in
-- both), written by ApplySpend in the spend row's transaction.
-- failed_requests counts the rows whose status was 0 or 400 and above. The tag
-- reports (/spend/tags, /global/spend/tags) read only this table.
CREATE TABLE spend_daily_tags (
    day               TEXT NOT NULL, -- YYYY-MM-DD (UTC)
    tag               TEXT NOT NULL,
    model_group       TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    failed_requests   BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    spend             DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, tag, model_group)
);
CREATE INDEX spend_daily_tags_tag ON spend_daily_tags (tag, day);

-- +goose Down
DROP TABLE spend_daily_tags;
ALTER TABLE spend_logs DROP COLUMN response;
ALTER TABLE spend_logs DROP COLUMN messages;
ALTER TABLE spend_logs DROP COLUMN metadata;
ALTER TABLE spend_logs DROP COLUMN request_tags;
