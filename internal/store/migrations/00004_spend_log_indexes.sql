-- +goose Up
-- Every spend_logs index is paid for on every request by the spend writer.
-- Reports read spend_daily; /spend/logs pages by time and filters mostly by
-- key. The user, team and end-user indexes cost about a third of the
-- writer's CPU on SQLite and served only rare filtered listings, which now
-- scan (a few hundred milliseconds at a million rows).
DROP INDEX spend_logs_user;
DROP INDEX spend_logs_team;
DROP INDEX spend_logs_end_user;

-- +goose Down
CREATE INDEX spend_logs_user ON spend_logs (user_id, started_at);
CREATE INDEX spend_logs_team ON spend_logs (team_id, started_at);
CREATE INDEX spend_logs_end_user ON spend_logs (end_user, started_at);
