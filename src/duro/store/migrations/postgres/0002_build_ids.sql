-- Versioning: which builds advanced each run, and the build a pinned run is held to.

-- JSON list of the worker build ids that completed workflow tasks of the run, in first-seen order.
ALTER TABLE executions ADD COLUMN build_ids TEXT;
-- Set by the first workflow task of a run whose workflow is `versioning="pinned"`: only workers
-- of this build id poll its tasks (the poll query filters on it).
ALTER TABLE executions ADD COLUMN pinned_build_id TEXT;
