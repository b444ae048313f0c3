-- Where a projection stalls: the event its live generation cannot fold (one that
-- does not decode, or a view PostgreSQL refuses to store), recorded by the runner
-- so that `projections`, `/metrics` and `/readyz` can name it instead of the read
-- models silently falling behind. Cleared by the next batch folded.
-- Never edit this file once it has landed; add a new migration instead.
ALTER TABLE read.checkpoints
    ADD COLUMN stalled_position bigint,
    ADD COLUMN stalled_error    text;
