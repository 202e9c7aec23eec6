-- SLURM backend: rows with backend = 'slurm' are submitted with sbatch and settled from
-- accounting (sacct). One row per attempt, as for local jobs.
ALTER TABLE resource_prediction ADD COLUMN slurm_job_id TEXT;       -- sbatch's job id
ALTER TABLE resource_prediction ADD COLUMN slurm_state TEXT;        -- State of sacct's job line
ALTER TABLE resource_prediction ADD COLUMN slurm_max_rss_mb REAL;   -- sacct MaxRSS, max over steps
ALTER TABLE resource_prediction ADD COLUMN slurm_cpus INTEGER;      -- --cpus-per-task requested
ALTER TABLE resource_prediction ADD COLUMN slurm_script TEXT;       -- batch script (reused by retries)
ALTER TABLE resource_prediction ADD COLUMN slurm_output TEXT;       -- the job's stdout file
ALTER TABLE resource_prediction ADD COLUMN slurm_error TEXT;        -- the job's stderr file
ALTER TABLE resource_prediction ADD COLUMN cwd TEXT;                -- the job's working directory
CREATE INDEX idx_resource_prediction_slurm ON resource_prediction (slurm_job_id)
    WHERE slurm_job_id IS NOT NULL;
