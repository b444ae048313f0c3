-- One round trip per append: the stream lock, the expected-version check, the hash
-- chain, the insert and the stream row's move happen in one call of
-- `shiplog_append`, which the event store makes as a single statement (in
-- autocommit, or inside a caller's transaction). The hash is the byte encoding of
-- docs/audit.md, unchanged: `engine/src/store/hash.rs` computes the same bytes in
-- Rust for verification, and a test checks that both agree.
-- Never edit this file once it has landed; add a new migration instead.

-- One event's hash over the fields it covers, in the order docs/audit.md gives:
-- integers big-endian, each text as its UTF-8 byte length (u32) then the bytes,
-- `recorded_at` as RFC 3339 in UTC with six fractional digits. PL/pgSQL with
-- locals, not SQL: a SQL function of SQL functions is not inlined here and would
-- be planned again on every append. STABLE, not IMMUTABLE: `to_char` is.
CREATE FUNCTION shiplog_event_hash(
    prev_hash bytea, stream_id text, version bigint, event_id uuid, event_type text,
    schema_version integer, recorded_at timestamptz, payload text, metadata text
) RETURNS bytea
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    b_stream bytea := convert_to(stream_id, 'UTF8');
    b_type bytea := convert_to(event_type, 'UTF8');
    b_at bytea := convert_to(to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8');
    b_payload bytea := convert_to(payload, 'UTF8');
    b_metadata bytea := convert_to(metadata, 'UTF8');
BEGIN
    RETURN sha256(
        prev_hash
        || int4send(length(b_stream)) || b_stream
        || int8send(version)
        || uuid_send(event_id)
        || int4send(length(b_type)) || b_type
        || int4send(schema_version)
        || int4send(length(b_at)) || b_at
        || int4send(length(b_payload)) || b_payload
        || int4send(length(b_metadata)) || b_metadata
    );
END
$$;

-- Appends events to the end of a stream, atomically. `expected` is the version the
-- stream must be at (0: it must not exist), NULL for any. On a mismatch nothing is
-- written and `positions` is NULL, `actual_version` saying where the stream is; on
-- success `positions` holds the new events' global positions in version order. A
-- stored event id fails the insert on `events_event_id_key`, which the caller
-- turns into an idempotent retry or `EventIdTaken`. The caller validates and
-- canonicalises the events; the table's checks back that up.
CREATE FUNCTION shiplog_append(
    p_stream_id text, p_stream_type text, p_expected bigint,
    p_event_ids uuid[], p_event_types text[], p_schema_versions integer[],
    p_payloads text[], p_metadata text[],
    OUT actual_version bigint, OUT positions bigint[]
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_version bigint;
    v_hash bytea;
    v_now timestamptz;
    v_prevs bytea[];
    v_hashes bytea[];
    v_count integer := cardinality(p_event_ids);
BEGIN
    -- Lock the stream row so appends to one stream are serialised; create it on
    -- the first append. A concurrent creator makes the insert do nothing, and the
    -- loop then locks the row it created.
    LOOP
        SELECT s.version, s.last_hash INTO v_version, v_hash
            FROM streams s WHERE s.stream_id = p_stream_id FOR UPDATE;
        EXIT WHEN FOUND;
        -- A stream that does not exist is at version 0; an append expecting
        -- more writes nothing, not even the stream row.
        IF p_expected IS NOT NULL AND p_expected <> 0 THEN
            actual_version := 0;
            RETURN;
        END IF;
        INSERT INTO streams (stream_id, stream_type, version, last_hash)
            VALUES (p_stream_id, p_stream_type, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
            ON CONFLICT (stream_id) DO NOTHING
            RETURNING version, last_hash INTO v_version, v_hash;
        EXIT WHEN FOUND;
    END LOOP;

    actual_version := v_version;
    IF p_expected IS NOT NULL AND p_expected <> v_version THEN
        RETURN;
    END IF;

    v_now := clock_timestamp();
    FOR i IN 1 .. v_count LOOP
        v_prevs[i] := v_hash;
        v_hash := shiplog_event_hash(v_hash, p_stream_id, v_version + i, p_event_ids[i], p_event_types[i],
                                     p_schema_versions[i], v_now, p_payloads[i], p_metadata[i]);
        v_hashes[i] := v_hash;
    END LOOP;

    WITH inserted AS (
        INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload,
                            metadata, recorded_at, prev_hash, hash)
        SELECT p_stream_id, v_version + x.n, x.id, x.t, x.s, x.p, x.m, v_now, x.ph, x.h
        FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_payloads, p_metadata, v_prevs, v_hashes)
            WITH ORDINALITY AS x(id, t, s, p, m, ph, h, n)
        RETURNING global_position, version
    )
    SELECT array_agg(global_position ORDER BY version) INTO positions FROM inserted;

    UPDATE streams SET version = v_version + v_count, last_hash = v_hash WHERE stream_id = p_stream_id;
END
$$;
