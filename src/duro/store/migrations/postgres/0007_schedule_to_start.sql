-- Activity schedule_to_start timeout: how long an attempt may wait for a worker to pick it up.
ALTER TABLE tasks ADD COLUMN schedule_to_start_timeout DOUBLE PRECISION;
