-- Child workflows: each child run points at its parent run, so that its outcome reaches the
-- parent's history and the parent's close policy reaches the child.
ALTER TABLE executions ADD COLUMN parent_workflow_id TEXT;
ALTER TABLE executions ADD COLUMN parent_run_id TEXT;
ALTER TABLE executions ADD COLUMN parent_seq BIGINT;
-- 'terminate' (default), 'request_cancel' or 'abandon': what the parent's close does to it.
ALTER TABLE executions ADD COLUMN parent_close_policy TEXT;
-- The running children of a closing parent.
CREATE INDEX executions_by_parent ON executions (parent_run_id) WHERE parent_run_id IS NOT NULL;
