//! A job key's history: the sizing engine's window (`key_history`), the prior-run
//! features, and the keys a retrain trains on.

use rusqlite::params;

use super::{q, Store, StoreError};
use crate::features::PriorRuns;

/// How many of a key's latest successful runs [`Store::prior_runs`] summarises.
pub const PRIOR_WINDOW: i64 = 1000;

impl Store {
    /// [`Store::key_runs`] of `job_key`, preceded by runs recorded under `alias` (the key
    /// the job had before readable keys) while the new key has fewer than `n`.
    pub(crate) fn key_runs_with_alias(
        &self,
        job_key: &str,
        alias: Option<&str>,
        n: usize,
    ) -> Result<Vec<crate::policy::KeyRun>, StoreError> {
        let runs = self.key_runs(job_key, n)?;
        match alias {
            Some(a) if runs.len() < n && a != job_key => {
                let mut old = self.key_runs(a, n - runs.len())?;
                old.extend(runs);
                Ok(old)
            }
            _ => Ok(runs),
        }
    }

    /// The newest `n` successful runs of a job key (oldest first), the sizing engine's
    /// window: an index range scan of the small `key_history` table, the same cost at any
    /// history size.
    pub(crate) fn key_runs(
        &self,
        job_key: &str,
        n: usize,
    ) -> Result<Vec<crate::policy::KeyRun>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT input_mb, arg_log10, peak_mb, wall_s FROM key_history
                 WHERE job_key = ?1 AND outcome = 'ok' ORDER BY row_id DESC LIMIT ?2",
            )
            .map_err(q("reading the key's window"))?;
        let mut runs = stmt
            .query_map(params![job_key, n.min(i64::MAX as usize) as i64], |r| {
                // The same conversion as the decision's own size (one place).
                let size = crate::policy::JobSize::from_columns(r.get(0)?, r.get(1)?);
                Ok(crate::policy::KeyRun {
                    input_mb: size.input_mb,
                    arg: size.arg,
                    peak_mb: r.get::<_, Option<f64>>(2)?.unwrap_or(0.0),
                    wall_s: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                })
            })
            .map_err(q("reading the key's window"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading the key's window"))?;
        runs.reverse();
        Ok(runs)
    }

    /// The job keys with a settled attempt up to row `max_id` (a retrain's training set),
    /// read from the key index.
    pub(crate) fn job_keys_through(&self, max_id: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT job_key FROM key_history WHERE row_id <= ?1
                 AND outcome IN ('ok', 'oom_killed', 'timed_out')",
            )
            .map_err(q("reading job keys"))?;
        let keys = stmt
            .query_map([max_id], |r| r.get(0))
            .map_err(q("reading job keys"))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(q("reading job keys"))?;
        Ok(keys)
    }

    /// Actuals of the latest [`PRIOR_WINDOW`] successful runs of the same job key: count,
    /// last, mean and max of each. Read from the covering partial index
    /// `idx_resource_prediction_prior` (migration V7), newest first and aggregated inside
    /// SQLite, so a key with 40k runs reads the same bounded index range as one with a
    /// thousand and no table page of the wide rows.
    ///
    /// `alias` is the key the same job was recorded under before readable keys (`k-…`): its
    /// runs count until the job has runs under its new key.
    pub fn prior_runs(&self, job_key: &str, alias: Option<&str>) -> Result<PriorRuns, StoreError> {
        let pr = self.prior_runs_of(job_key)?;
        match alias {
            Some(a) if pr.count == 0 && a != job_key => self.prior_runs_of(a),
            _ => Ok(pr),
        }
    }

    fn prior_runs_of(&self, job_key: &str) -> Result<PriorRuns, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT count(*), sum(ifnull(c, 0)), sum(r), sum(ifnull(w, 0)),
                        max(0, max(ifnull(c, 0))), max(0, max(r)), max(0, max(ifnull(w, 0)))
                 FROM (SELECT actual_cpu_s AS c, actual_rss_mb AS r, actual_wall_s AS w
                       FROM resource_prediction INDEXED BY idx_resource_prediction_prior
                       WHERE job_key = ?1 AND outcome = 'ok' AND actual_rss_mb IS NOT NULL
                       ORDER BY id DESC LIMIT ?2)",
            )
            .map_err(q("reading earlier runs"))?;
        type Agg = (i64, f64, f64, f64, f64, f64, f64);
        let (n, sc, sr, sw, xc, xr, xw): Agg = stmt
            .query_row(params![job_key, PRIOR_WINDOW], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<f64>>(1)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(2)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(4)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(5)?.unwrap_or(0.0),
                    r.get::<_, Option<f64>>(6)?.unwrap_or(0.0),
                ))
            })
            .map_err(q("reading earlier runs"))?;
        if n == 0 {
            return Ok(PriorRuns::default());
        }
        let mut last = self
            .conn
            .prepare_cached(
                "SELECT actual_cpu_s, actual_rss_mb, actual_wall_s
                 FROM resource_prediction INDEXED BY idx_resource_prediction_prior
                 WHERE job_key = ?1 AND outcome = 'ok' AND actual_rss_mb IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
            )
            .map_err(q("reading earlier runs"))?;
        let (c0, r0, w0): (Option<f64>, f64, Option<f64>) = last
            .query_row([job_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(q("reading earlier runs"))?;
        let nf = n as f64;
        Ok(PriorRuns {
            count: n as u32,
            last_cpu_s: c0.unwrap_or(0.0),
            mean_cpu_s: sc / nf,
            max_cpu_s: xc,
            last_rss_mb: r0,
            mean_rss_mb: sr / nf,
            max_rss_mb: xr,
            last_wall_s: w0.unwrap_or(0.0),
            mean_wall_s: sw / nf,
            max_wall_s: xw,
        })
    }
}
