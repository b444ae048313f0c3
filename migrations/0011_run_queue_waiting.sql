-- Deployments waiting for approval (docs/releases.md). Never edit this file once
-- it has landed; add a new migration instead.

-- `waiting`: the run is queued but needs approval before a worker may claim it.
-- Claims take only `queued` rows (or `running` ones whose lease expired), and a
-- waiting row still counts as unfinished, so runs queued after it on the same
-- environment wait behind it as they would behind any queued run. An approval
-- turns it `queued`; a rejection or a newer deploy that supersedes it, `done`.
ALTER TABLE run_queue DROP CONSTRAINT run_queue_state_check;
ALTER TABLE run_queue ADD CONSTRAINT run_queue_state_check
    CHECK (state IN ('waiting', 'queued', 'running', 'done'));
