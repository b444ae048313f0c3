-- Deployment status back to the forges (engine/src/forge/): what the reporter
-- learnt from the event log, and the reports it still has to post. Derived from
-- the log (like a read model), kept outside it because posting is an effect.
-- Never edit this file once it has landed; add a new migration instead.

-- Environments deploying a merge request of a forge project (from
-- MergeRequestAttached, removed by MergeRequestDetached); key: the stream id.
CREATE TABLE forge_links (
    environment_stream text PRIMARY KEY,
    forge              text NOT NULL CHECK (forge IN ('github', 'gitlab')),
    -- `owner/repo` on GitHub, the path with namespace on GitLab.
    project            text NOT NULL
);

-- One row per run reported: a setup or patch of a linked environment.
CREATE TABLE forge_deployments (
    run_id        uuid    PRIMARY KEY,
    forge         text    NOT NULL CHECK (forge IN ('github', 'gitlab')),
    project       text    NOT NULL,
    commit        text    NOT NULL,
    application   text    NOT NULL,
    environment   text    NOT NULL,
    transient     boolean NOT NULL,
    production    boolean NOT NULL,
    -- GitHub's deployment, once the first report created it.
    deployment_id bigint
);

-- Each status to post, in order per run; retried with backoff until delivered.
CREATE TABLE forge_reports (
    id              bigserial   PRIMARY KEY,
    run_id          uuid        NOT NULL REFERENCES forge_deployments,
    state           text        NOT NULL
        CHECK (state IN ('queued', 'in_progress', 'success', 'failure', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    -- Given up for good (the forge's token was removed), with why in last_error.
    abandoned       timestamptz,
    last_error      text
);
CREATE INDEX forge_reports_pending ON forge_reports (id) WHERE delivered_at IS NULL AND abandoned IS NULL;

-- How far the reporter followed the log: one row.
CREATE TABLE forge_checkpoint (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    tx_id    bigint  NOT NULL,
    position bigint  NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON forge_links, forge_deployments, forge_reports, forge_checkpoint
    TO shiplog_runtime;
GRANT USAGE ON SEQUENCE forge_reports_id_seq TO shiplog_runtime;
