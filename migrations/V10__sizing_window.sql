-- The sizing engine's inputs on the row itself, so every attempt (local, SLURM retry rows
-- copied from the first) carries the job's size and the settle transaction can add the
-- attempt to the key's window (key_history) without parsing the features.
ALTER TABLE resource_prediction ADD COLUMN size_input_mb REAL;   -- total input size (MB)
ALTER TABLE resource_prediction ADD COLUMN size_arg_log10 REAL;  -- log10 largest numeric argument

UPDATE resource_prediction SET
    size_input_mb = json_extract(features, '$.input_total_mb'),
    size_arg_log10 = CASE WHEN json_extract(features, '$.arg_numeric_count') > 0
                          THEN json_extract(features, '$.arg_max_numeric_log10') END
    WHERE json_valid(features);

-- A key's window: its newest successful runs, read by index whatever the key's length.
CREATE INDEX idx_key_history_ok ON key_history (job_key, row_id) WHERE outcome = 'ok';
-- Live coverage of a model: its newest settled rows, by index.
CREATE INDEX idx_resource_prediction_model ON resource_prediction (model_version, id);

-- Rows from before wave 2 (no evidence recorded): V5 derived their limit sources from
-- `enforced`, but the old code set `enforced = 1` also while the static defaults applied
-- because confidence was below the (default 0.05) threshold. Those are `static`.
UPDATE resource_prediction SET memory_source = 'static', timeout_source = 'static'
    WHERE evidence IS NULL AND dry_run = 0 AND memory_source = 'predicted'
      AND confidence IS NOT NULL AND confidence < 0.05;
