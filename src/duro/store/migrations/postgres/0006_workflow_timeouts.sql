-- Workflow timeouts. A run's deadlines are timer rows with reserved sequence numbers
-- (0: run timeout, -1: execution timeout); these columns carry them across continue-as-new.
ALTER TABLE executions ADD COLUMN execution_deadline DOUBLE PRECISION;  -- absolute, for the whole chain
ALTER TABLE executions ADD COLUMN run_timeout DOUBLE PRECISION;         -- seconds, re-armed for each run
