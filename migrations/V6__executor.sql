-- Wave 2 executor: who owns a row or a reservation (more than a pid), what a job needed versus
-- what its cgroup was charged, OOM events under a job that still succeeded, and waiters that
-- stopped polling.

-- The executor that wrote the row: boot id (/proc/sys/kernel/random/boot_id), the inode of its
-- PID namespace (/proc/self/ns/pid) and a random per-process token (also in its cgroup names).
-- A row is only marked `lost` when its executor is proven dead: another boot, or the same PID
-- namespace and no process with that pid and start time.
ALTER TABLE resource_prediction ADD COLUMN executor_boot_id TEXT;
ALTER TABLE resource_prediction ADD COLUMN executor_pidns INTEGER;
ALTER TABLE resource_prediction ADD COLUMN executor_token TEXT;
-- actual_rss_mb keeps meaning what the job needs (non-reclaimable peak: anon + shmem + kernel,
-- never page cache). charged_peak_mb is the cgroup's own peak (memory.peak /
-- memory.max_usage_in_bytes), page cache included.
ALTER TABLE resource_prediction ADD COLUMN charged_peak_mb REAL;
-- OOM kills the kernel made inside the job's cgroup (memory.events / memory.oom_control
-- oom_kill). Non-zero with outcome `ok`: a child was OOM-killed but the job's main process
-- exited 0.
ALTER TABLE resource_prediction ADD COLUMN oom_events INTEGER;

ALTER TABLE reservation ADD COLUMN boot_id TEXT;
ALTER TABLE reservation ADD COLUMN pidns INTEGER;
-- A waiter refreshes heartbeat_ms (unix ms) every poll; one that stopped refreshing (SIGSTOP,
-- frozen) loses its place at the head of the queue until it polls again.
ALTER TABLE reservation ADD COLUMN heartbeat_ms INTEGER;
ALTER TABLE reservation ADD COLUMN poll_ms INTEGER;
