-- The event store: the only source of truth in shiplog (DESIGN.md §3).
-- Never edit this file once it has landed; add a new migration instead.

-- One row per stream. `version` is the last version assigned (never a count) and
-- `last_hash` the hash of that event, so an append extends the chain without
-- reading the stream's events.
CREATE TABLE streams (
    stream_id   text   PRIMARY KEY,
    stream_type text   NOT NULL,
    version     bigint NOT NULL CHECK (version >= 0),
    last_hash   bytea  NOT NULL CHECK (octet_length(last_hash) = 32)
);

-- Every fact, in the order it was committed. `payload` and `metadata` hold canonical
-- JSON (RFC 8785) as text: jsonb would re-order keys and the hash chain is computed
-- over the exact stored bytes (see docs/audit.md).
CREATE TABLE events (
    global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: readers only pass a transaction once no older one
    -- is still in flight, which makes reading by (tx_id, global_position) gap-free.
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL REFERENCES streams (stream_id),
    version         bigint      NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    payload         text        NOT NULL,
    metadata        text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (octet_length(hash) = 32),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX events_cursor_idx ON events (tx_id, global_position);

-- Seals chain the global order: each covers the events after the previous seal's
-- cursor up to its own, so a stream deleted whole or a reordering is detected even
-- though every per-stream chain still verifies.
CREATE TABLE seals (
    seal_id       bigint      PRIMARY KEY CHECK (seal_id >= 1),
    to_tx_id      bigint      NOT NULL,
    to_position   bigint      NOT NULL,
    event_count   bigint      NOT NULL CHECK (event_count >= 1),
    prev_hash     bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash          bytea       NOT NULL CHECK (octet_length(hash) = 32),
    sealed_at     timestamptz NOT NULL DEFAULT now()
);

-- Facts are immutable: even the owner cannot change or remove them by accident.
CREATE FUNCTION shiplog_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'shiplog: % on % is forbidden, the log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION shiplog_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION shiplog_reject_change();
CREATE TRIGGER seals_immutable BEFORE UPDATE OR DELETE ON seals
    FOR EACH ROW EXECUTE FUNCTION shiplog_reject_change();
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON seals
    FOR EACH STATEMENT EXECUTE FUNCTION shiplog_reject_change();

-- The role the server runs as after migrating: it may read and append facts, never
-- rewrite them. Roles are cluster-wide: another database on the same cluster may
-- have created it already, or be creating it right now.
DO $$
BEGIN
    CREATE ROLE shiplog_runtime NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- The migrating user works as the runtime role afterwards (`SET ROLE`).
GRANT shiplog_runtime TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO shiplog_runtime;
GRANT SELECT, INSERT ON events, seals TO shiplog_runtime;
GRANT SELECT, INSERT, UPDATE ON streams TO shiplog_runtime;
