-- Webhook deliveries at least once: a delivery is recorded with what came of it,
-- so that a forge's redelivery of one that failed inside shiplog is acted on
-- again, while one that was acted on is still refused. Never edit this file once
-- it has landed; add a new migration instead.

-- `processing`: claimed by a server that is acting on it (since `claimed_at`);
-- `done`: acted on (its runs were requested; `runs` lists them); `failed`: an
-- internal error stopped it, so a redelivery may claim it again. Rows recorded
-- before this migration were acted on.
ALTER TABLE webhook_deliveries
    ADD COLUMN outcome    text        NOT NULL DEFAULT 'done'
        CHECK (outcome IN ('processing', 'done', 'failed')),
    ADD COLUMN claimed_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN runs       jsonb       NOT NULL DEFAULT '[]';
ALTER TABLE webhook_deliveries ALTER COLUMN outcome SET DEFAULT 'processing';

-- A delivery that was acted on stays so: it must never be claimed again.
CREATE FUNCTION webhook_deliveries_done_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.outcome = 'done' THEN
        RAISE EXCEPTION 'webhook delivery %/% was acted on; it cannot change', OLD.provider, OLD.delivery_id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER webhook_deliveries_done_is_final BEFORE UPDATE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION webhook_deliveries_done_is_final();

-- Still no DELETE: a delivery row that could be deleted would let its request be
-- replayed; only what came of it may change.
GRANT UPDATE (outcome, claimed_at, runs) ON webhook_deliveries TO shiplog_runtime;
