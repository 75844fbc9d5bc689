-- Settling an execution asks "does it still have a pending or running task?" after
-- every task ends; without this index that scans all of the execution's tasks each
-- time, quadratic in the execution's size (scan-all and replication plan thousands).
CREATE INDEX tasks_unfinished_by_execution ON tasks (execution_id)
    WHERE status IN ('pending', 'running');
