-- +goose Up
-- Deployments added through /model/new: the request's model_list entry as
-- JSON (secrets included; the API never returns them).
CREATE TABLE models (
    id         TEXT PRIMARY KEY,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE models;
