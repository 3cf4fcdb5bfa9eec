-- +goose Up
-- Why a failed request failed, in LiteLLM's error_information shape (a JSON
-- object of error_code, error_class, llm_provider, error_message; never the
-- prompt or a key). NULL on a row that did not fail.
ALTER TABLE spend_logs ADD COLUMN error_information TEXT;

-- +goose Down
ALTER TABLE spend_logs DROP COLUMN error_information;
