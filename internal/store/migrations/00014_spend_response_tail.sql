-- +goose Up
-- The response-id index (00008) had the upstream's random ids as its keys:
-- every spend row landed on a different page of it, and the spend writer
-- wrote one more 4 KiB page to the WAL (and back at the checkpoint) for
-- each row. This index leads with the id's last character, then the time:
-- rows append to the end of one of a few dozen runs (16 for hex ids, 62 for
-- base62), so a batch touches at most that many pages. A lookup by response
-- id reads the run of its last character (the id is in the index, so no
-- table rows are read), a sixteenth or less of the rows.
-- substr(x, length(x)) is the last character on both engines.
DROP INDEX spend_logs_response;
CREATE INDEX spend_logs_response_tail ON spend_logs (substr(response_id, length(response_id)), started_at, response_id);

-- +goose Down
DROP INDEX spend_logs_response_tail;
CREATE INDEX spend_logs_response ON spend_logs (response_id);
