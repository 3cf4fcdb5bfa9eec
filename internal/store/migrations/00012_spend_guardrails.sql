-- +goose Up
-- What the guardrails did to a request (a JSON array of
-- {guardrail, mode, action, entities}: names, entity types and counts,
-- never the text found). NULL when no guardrail ran.
ALTER TABLE spend_logs ADD COLUMN guardrails TEXT;

-- +goose Down
ALTER TABLE spend_logs DROP COLUMN guardrails;
