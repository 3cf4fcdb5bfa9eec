-- +goose Up
-- One SQL text for SQLite and PostgreSQL. Times are unix microseconds (UTC);
-- money is double precision dollars; records are JSON in `data`.
CREATE TABLE keys (
    token_hash  TEXT PRIMARY KEY,
    key_alias   TEXT UNIQUE,
    user_id     TEXT NOT NULL DEFAULT '',
    team_id     TEXT NOT NULL DEFAULT '',
    spend       DOUBLE PRECISION NOT NULL DEFAULT 0,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX keys_user ON keys (user_id);
CREATE INDEX keys_team ON keys (team_id);

CREATE TABLE users (
    user_id     TEXT PRIMARY KEY,
    spend       DOUBLE PRECISION NOT NULL DEFAULT 0,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE teams (
    team_id     TEXT PRIMARY KEY,
    spend       DOUBLE PRECISION NOT NULL DEFAULT 0,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE end_users (
    user_id     TEXT PRIMARY KEY,
    spend       DOUBLE PRECISION NOT NULL DEFAULT 0,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE spend_logs (
    request_id        TEXT PRIMARY KEY,
    key_hash          TEXT NOT NULL DEFAULT '',
    user_id           TEXT NOT NULL DEFAULT '',
    team_id           TEXT NOT NULL DEFAULT '',
    end_user          TEXT NOT NULL DEFAULT '',
    model_group       TEXT NOT NULL DEFAULT '',
    deployment        TEXT NOT NULL DEFAULT '',
    provider          TEXT NOT NULL DEFAULT '',
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    cost              DOUBLE PRECISION NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL DEFAULT 0,
    latency_ms        BIGINT NOT NULL DEFAULT 0,
    started_at        BIGINT NOT NULL,
    ended_at          BIGINT NOT NULL
);
CREATE INDEX spend_logs_started ON spend_logs (started_at);
CREATE INDEX spend_logs_key ON spend_logs (key_hash, started_at);
CREATE INDEX spend_logs_user ON spend_logs (user_id, started_at);
CREATE INDEX spend_logs_team ON spend_logs (team_id, started_at);
CREATE INDEX spend_logs_end_user ON spend_logs (end_user, started_at);

-- Per-day rollups: reports read these, never the raw log.
CREATE TABLE spend_daily (
    day               TEXT NOT NULL, -- YYYY-MM-DD (UTC)
    key_hash          TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    team_id           TEXT NOT NULL,
    end_user          TEXT NOT NULL,
    model_group       TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    spend             DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, key_hash, user_id, team_id, end_user, model_group)
);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    before_json TEXT NOT NULL DEFAULT '',
    after_json  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE spend_daily;
DROP TABLE spend_logs;
DROP TABLE end_users;
DROP TABLE teams;
DROP TABLE users;
DROP TABLE keys;
