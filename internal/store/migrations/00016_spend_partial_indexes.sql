-- +goose Up
-- The spend writer pays for every index entry a row adds. A plain
-- gateway's rows (no virtual keys) have no key hash, and failed calls,
-- embeddings and the like no answer id: such rows now add no entry to the
-- key index or the answer-id index. A query uses a partial index only when
-- its WHERE carries the index's condition, so ListSpendLogs adds
-- key_hash <> '' and response_id <> '' to those filters (SQLite matches the
-- condition verbatim). Nothing looks rows up by an empty key or answer id.
DROP INDEX spend_logs_key;
CREATE INDEX spend_logs_key ON spend_logs (key_hash, started_at) WHERE key_hash <> '';
DROP INDEX spend_logs_response_tail;
CREATE INDEX spend_logs_response_tail ON spend_logs (substr(response_id, length(response_id)), started_at, response_id) WHERE response_id <> '';

-- +goose Down
DROP INDEX spend_logs_response_tail;
CREATE INDEX spend_logs_response_tail ON spend_logs (substr(response_id, length(response_id)), started_at, response_id);
DROP INDEX spend_logs_key;
CREATE INDEX spend_logs_key ON spend_logs (key_hash, started_at);
