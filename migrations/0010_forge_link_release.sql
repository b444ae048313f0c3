-- Deployment status back to the forges (engine/src/forge/): the deploy that hands
-- an environment back to its branch after its merge request closed or merged is
-- reported to the request's project like any other. Never edit this file once it
-- has landed; add a new migration instead.

-- `released`: the merge request no longer deploys to the environment
-- (MergeRequestDetached); its next run is still reported (the deploy back to the
-- branch it tracks), and the link goes with that run.
ALTER TABLE forge_links ADD COLUMN released boolean NOT NULL DEFAULT false;
