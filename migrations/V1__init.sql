-- One row per attempt of a job: written before the job starts, settled after it ends.
CREATE TABLE resource_prediction (
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
                            ('ok', 'failed', 'oom_killed', 'timed_out', 'rejected', 'lost')),
    model_version       TEXT    NOT NULL,
    host                TEXT    NOT NULL,
    executor_pid        INTEGER,
    executor_start      INTEGER,                     -- /proc/<pid>/stat starttime, guards pid reuse
    job_pid             INTEGER,
    job_start           INTEGER,
    cgroup_name         TEXT,
    predicted_at        TEXT    NOT NULL,
    started_at          TEXT,
    settled_at          TEXT
);

CREATE INDEX idx_resource_prediction_settled_at ON resource_prediction (settled_at);
CREATE INDEX idx_resource_prediction_job_key ON resource_prediction (job_key, settled_at);
CREATE INDEX idx_resource_prediction_job_id ON resource_prediction (job_id);
