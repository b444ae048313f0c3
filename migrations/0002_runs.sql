-- Runs: the work queue workers claim from, log lines, and variable values.
-- Never edit this file once it has landed; add a new migration instead.

-- One row per run, written in the same transaction as the run's RunQueued event
-- (and updated with its later lifecycle events), so the queue and the log never
-- disagree. Workers claim with FOR UPDATE SKIP LOCKED and hold a lease they renew;
-- a run whose lease expired is claimed again and resumed from its events.
CREATE TABLE run_queue (
    run_id       uuid        PRIMARY KEY,
    environment  text        NOT NULL,  -- the environment's stream id
    state        text        NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    queued_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker       text,
    lease_until  timestamptz
);
-- Claiming looks for the oldest unfinished run of each environment.
CREATE INDEX run_queue_open_idx ON run_queue (environment, queued_at) WHERE state <> 'done';

-- Output of builds, release commands, jobs and hooks. Not events: they would
-- swamp the log. Append-only, numbered per run, read by offset.
CREATE TABLE run_logs (
    run_id  uuid        NOT NULL,
    seq     bigint      NOT NULL,
    job     text        NOT NULL,
    at      timestamptz NOT NULL,
    stream  text        NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line    text        NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TRIGGER run_logs_immutable BEFORE UPDATE OR DELETE ON run_logs
    FOR EACH ROW EXECUTE FUNCTION shiplog_reject_change();

-- The values of each version of an application's environment variables, secrets
-- included. Events carry only the redacted form and the digest (invariant 7).
CREATE TABLE variable_sets (
    application text   NOT NULL,
    version     bigint NOT NULL,
    yaml        text   NOT NULL,
    PRIMARY KEY (application, version)
);

GRANT SELECT, INSERT, UPDATE ON run_queue TO shiplog_runtime;
GRANT SELECT, INSERT ON run_logs, variable_sets TO shiplog_runtime;
