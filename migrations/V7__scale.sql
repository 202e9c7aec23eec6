-- presize at a million rows: the earlier runs of a job key (`Store::prior_runs`, read by every
-- `predict` and `run`) come from this covering partial index, newest first, so a key with
-- 40k runs costs the same bounded index range as one with a thousand, and no table page of
-- the wide rows is read. Columns: the key, the row id (the order), the three actuals.
CREATE INDEX idx_resource_prediction_prior
    ON resource_prediction (job_key, id, actual_cpu_s, actual_rss_mb, actual_wall_s)
    WHERE outcome = 'ok' AND actual_rss_mb IS NOT NULL;

-- `retrain` counts the usable settled rows and reads only the latest ones it trains on; the
-- count comes from this small index instead of a scan of every wide row.
CREATE INDEX idx_resource_prediction_outcome ON resource_prediction (outcome);
