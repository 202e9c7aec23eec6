-- Wave 2: one sizing engine decides every limit, and every row says where each limit came
-- from. SQLite cannot change a CHECK constraint in place, so the table is rebuilt (the
-- documented 12-step procedure: new table, copy, drop, rename, indexes) to admit the
-- `queue_timeout` outcome (a job whose --queue-timeout expired in admission is not a
-- rejected job), then the provenance columns are added. Existing rows keep every value.
CREATE TABLE resource_prediction_v5 (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id              TEXT    NOT NULL,            -- links the attempts of one job
    analysis_id         TEXT,                        -- caller's own id, if given
    job_key             TEXT    NOT NULL,
    runtime             TEXT    NOT NULL,
    script_path         TEXT,
    script_sha256       TEXT,
    command             TEXT    NOT NULL,            -- JSON array of arguments
    features            TEXT    NOT NULL,            -- JSON object name -> value
    schema_hash         TEXT    NOT NULL,
    predicted_cpu_s     REAL,
    predicted_rss_mb    REAL,
    predicted_wall_s    REAL,
    upper_cpu_s         REAL,
    upper_rss_mb        REAL,
    upper_wall_s        REAL,
    lower_rss_mb        REAL,
    confidence          REAL,
    source              TEXT,                        -- model | prior
    memory_limit_mb     INTEGER,                     -- limit derived from the prediction
    timeout_s           INTEGER,
    applied_memory_mb   INTEGER,                     -- what was actually enforced
    applied_timeout_s   INTEGER,
    enforced            INTEGER NOT NULL DEFAULT 0,  -- 1: the predicted limits were applied
    memory_enforced     INTEGER NOT NULL DEFAULT 0,  -- 1: a kernel memory cap was in force
    dry_run             INTEGER NOT NULL DEFAULT 0,
    backend             TEXT,                        -- cgroup-v2 | cgroup-v1 | none
    priority            TEXT    NOT NULL DEFAULT 'normal',
    attempt             INTEGER NOT NULL DEFAULT 1,
    actual_cpu_s        REAL,
    actual_rss_mb       REAL,
    actual_wall_s       REAL,
    rusage_maxrss_mb    REAL,
    measure_source      TEXT,
    exit_code           INTEGER,
    signal              INTEGER,
    outcome             TEXT CHECK (outcome IS NULL OR outcome IN
                            ('ok', 'failed', 'oom_killed', 'timed_out', 'rejected', 'lost',
                             'queue_timeout')),
    model_version       TEXT    NOT NULL,
    host                TEXT    NOT NULL,
    executor_pid        INTEGER,
    executor_start      INTEGER,                     -- /proc/<pid>/stat starttime, guards pid reuse
    job_pid             INTEGER,
    job_start           INTEGER,
    cgroup_name         TEXT,
    predicted_at        TEXT    NOT NULL,
    started_at          TEXT,
    settled_at          TEXT,
    slurm_job_id        TEXT,
    slurm_state         TEXT,
    slurm_max_rss_mb    REAL,
    slurm_cpus          INTEGER,
    slurm_script        TEXT,
    slurm_output        TEXT,
    slurm_error         TEXT,
    cwd                 TEXT,
    memory_source       TEXT,   -- predicted | static | override | dry-run
    timeout_source      TEXT,   -- predicted | static | override | dry-run
    evidence            TEXT,   -- history | model | novel (the sizing engine's evidence level)
    limit_reason        TEXT    -- why: which evidence, model, quantile; why static applied
);

INSERT INTO resource_prediction_v5 (id, job_id, analysis_id, job_key, runtime, script_path, script_sha256, command, features, schema_hash, predicted_cpu_s, predicted_rss_mb, predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s, lower_rss_mb, confidence, source, memory_limit_mb, timeout_s, applied_memory_mb, applied_timeout_s, enforced, memory_enforced, dry_run, backend, priority, attempt, actual_cpu_s, actual_rss_mb, actual_wall_s, rusage_maxrss_mb, measure_source, exit_code, signal, outcome, model_version, host, executor_pid, executor_start, job_pid, job_start, cgroup_name, predicted_at, started_at, settled_at, slurm_job_id, slurm_state, slurm_max_rss_mb, slurm_cpus, slurm_script, slurm_output, slurm_error, cwd)
    SELECT id, job_id, analysis_id, job_key, runtime, script_path, script_sha256, command, features, schema_hash, predicted_cpu_s, predicted_rss_mb, predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s, lower_rss_mb, confidence, source, memory_limit_mb, timeout_s, applied_memory_mb, applied_timeout_s, enforced, memory_enforced, dry_run, backend, priority, attempt, actual_cpu_s, actual_rss_mb, actual_wall_s, rusage_maxrss_mb, measure_source, exit_code, signal, outcome, model_version, host, executor_pid, executor_start, job_pid, job_start, cgroup_name, predicted_at, started_at, settled_at, slurm_job_id, slurm_state, slurm_max_rss_mb, slurm_cpus, slurm_script, slurm_output, slurm_error, cwd FROM resource_prediction;

DROP TABLE resource_prediction;
ALTER TABLE resource_prediction_v5 RENAME TO resource_prediction;

CREATE INDEX idx_resource_prediction_settled_at ON resource_prediction (settled_at);
CREATE INDEX idx_resource_prediction_job_key ON resource_prediction (job_key, settled_at);
CREATE INDEX idx_resource_prediction_job_id ON resource_prediction (job_id);
CREATE INDEX idx_resource_prediction_slurm ON resource_prediction (slurm_job_id)
    WHERE slurm_job_id IS NOT NULL;

-- Rows written before wave 2: derive the source of each limit from what was recorded.
UPDATE resource_prediction SET
    memory_source = CASE WHEN dry_run = 1 THEN 'dry-run'
                         WHEN enforced = 1 THEN 'predicted' ELSE 'static' END,
    timeout_source = CASE WHEN dry_run = 1 THEN 'dry-run'
                          WHEN enforced = 1 THEN 'predicted' ELSE 'static' END
    WHERE applied_memory_mb IS NOT NULL;

-- The sizing engine's per-key window: one small row per settled attempt of a job key, so a
-- decision reads the key's recent history by index, at the same cost whatever the store's
-- size (never a scan of the key's wide rows).
CREATE TABLE key_history (
    row_id      INTEGER PRIMARY KEY,           -- resource_prediction.id of the attempt
    job_key     TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    peak_mb     REAL,                          -- measured peak (need) of the attempt
    wall_s      REAL,
    cpu_s       REAL,
    input_mb    REAL,                          -- total size of the job's input files
    arg_log10   REAL,                          -- log10 of the largest numeric argument
    cap_mb      REAL,                          -- memory cap enforced (NULL: none)
    timeout_s   REAL
);
CREATE INDEX idx_key_history_key ON key_history (job_key, row_id);

-- Backfill the window from the settled history.
INSERT INTO key_history (row_id, job_key, outcome, peak_mb, wall_s, cpu_s, input_mb, arg_log10,
                         cap_mb, timeout_s)
    SELECT id, job_key, outcome, actual_rss_mb, actual_wall_s, actual_cpu_s,
           json_extract(features, '$.input_total_mb'),
           CASE WHEN json_extract(features, '$.arg_numeric_count') > 0
                THEN json_extract(features, '$.arg_max_numeric_log10') END,
           CASE WHEN memory_enforced = 1 THEN applied_memory_mb END,
           applied_timeout_s
    FROM resource_prediction
    WHERE outcome IN ('ok', 'oom_killed', 'timed_out') AND json_valid(features);
