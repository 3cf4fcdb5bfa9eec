-- +goose Up
-- The upstream answer's own id (chatcmpl-..., msg_...): LiteLLM's spend logs
-- call it request_id, so /spend/logs shows it there and finds a row by it as
-- well as by the gateway's call id (request_id here). Rows written before
-- this migration, and answers without an id, keep ''.
ALTER TABLE spend_logs ADD COLUMN response_id TEXT NOT NULL DEFAULT '';
CREATE INDEX spend_logs_response ON spend_logs (response_id);
-- LiteLLM's call_type: acompletion, atext_completion, aembedding,
-- anthropic_messages.
ALTER TABLE spend_logs ADD COLUMN call_type TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE spend_logs DROP COLUMN call_type;
DROP INDEX spend_logs_response;
ALTER TABLE spend_logs DROP COLUMN response_id;
