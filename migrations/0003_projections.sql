-- Read models: tables folded from the event log by the projections crate.
-- Never edit this file once it has landed; add a new migration instead.
--
-- Read models live in their own schema. Each projection writes one generation of
-- tables at a time (`read.environments_g3`); a view without the suffix
-- (`read.environments`) points at the live generation, so a rebuild fills a new
-- generation while the old one keeps serving and then swaps the views in one
-- transaction. Read models are disposable: dropping them all and rebuilding gives
-- identical content. The runtime role owns what it creates here; it can never
-- change an event (it still has SELECT and INSERT only on `events`).
CREATE SCHEMA read;
GRANT USAGE, CREATE ON SCHEMA read TO shiplog_runtime;

-- One row per generation of each projection. A generation's checkpoint moves in
-- the same transaction as its read-model writes (exactly-once effect). The live
-- generation is the one the views point at; at most one per projection.
CREATE TABLE read.checkpoints (
    projection  text        NOT NULL,
    generation  integer     NOT NULL,
    version     integer     NOT NULL,  -- the code version that wrote it
    tx_id       bigint      NOT NULL DEFAULT 0,
    position    bigint      NOT NULL DEFAULT 0,
    events      bigint      NOT NULL DEFAULT 0,  -- events folded so far
    live        boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, generation)
);
CREATE UNIQUE INDEX checkpoints_one_live_idx ON read.checkpoints (projection) WHERE live;
GRANT SELECT, INSERT, UPDATE, DELETE ON read.checkpoints TO shiplog_runtime;
