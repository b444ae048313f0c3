-- Webhook deliveries already received, so that a delivery replayed (by an attacker
-- who captured a signed request, or by a forge redelivering it) changes nothing.
-- Never edit this file once it has landed; add a new migration instead.
-- (0004 is taken by the API tokens migration.)

-- One row per delivery whose signature or token checked out, written before the
-- push is acted on: the primary key refuses the same delivery a second time, so a
-- delivery is acted on at most once, whichever server instance receives it.
CREATE TABLE webhook_deliveries (
    provider    text        NOT NULL CHECK (provider IN ('github', 'gitlab')),
    -- X-GitHub-Delivery; X-Gitlab-Event-UUID, or Idempotency-Key without it.
    delivery_id text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, delivery_id)
);

-- Recorded and checked, never changed: a delivery row that could be deleted would
-- let its request be replayed.
GRANT SELECT, INSERT ON webhook_deliveries TO shiplog_runtime;
