//! The model registry (`model_version`) and the live coverage of a model's bounds.

use std::path::Path;

use rusqlite::{params, TransactionBehavior};
use serde::Serialize;

use super::{q, Store, StoreError};
use crate::util::now_rfc3339;

/// A trained model to record in the registry.
#[derive(Debug, Clone)]
pub struct ModelRecord<'a> {
    pub version: &'a str,
    pub path: &'a Path,
    pub trained_at: &'a str,
    pub rows: usize,
    pub schema_hash: &'a str,
    pub metrics_json: &'a str,
    pub promoted: bool,
}

/// One row of the `model_version` registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVersionRecord {
    pub version: String,
    pub path: String,
    pub trained_at: String,
    pub rows: i64,
    pub schema_hash: String,
    /// Holdout metrics as written by `retrain` (JSON).
    pub metrics: serde_json::Value,
    pub promoted: bool,
    pub promoted_at: Option<String>,
}

impl Store {
    /// Record a trained model in the registry.
    pub fn register_model(&mut self, m: &ModelRecord<'_>) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(q("starting a write"))?;
        tx.execute(
            "INSERT OR REPLACE INTO model_version (version, path, trained_at, rows, schema_hash,
                metrics, promoted, promoted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                m.version,
                m.path.display().to_string(),
                m.trained_at,
                m.rows as i64,
                m.schema_hash,
                m.metrics_json,
                m.promoted as i64,
                m.promoted.then(now_rfc3339)
            ],
        )
        .map_err(q("registering a model"))?;
        tx.commit().map_err(q("committing a model"))
    }

    /// Live coverage of a model's upper bound on peak memory over its newest `n` settled
    /// jobs: `(jobs judged, jobs whose peak stayed within the bound)`. An OOM kill under a cap
    /// at or above the bound counts as not covered; one under a lower cap says nothing.
    pub(crate) fn live_coverage(
        &self,
        model_version: &str,
        n: usize,
    ) -> Result<(u32, u32), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT outcome, actual_rss_mb, upper_rss_mb, applied_memory_mb, memory_enforced
                 FROM resource_prediction
                 WHERE model_version = ?1 AND source = 'model' AND settled_at IS NOT NULL
                 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(q("reading live coverage"))?;
        let mut rows = stmt
            .query(params![model_version, n.min(i64::MAX as usize) as i64])
            .map_err(q("reading live coverage"))?;
        let (mut jobs, mut covered) = (0u32, 0u32);
        while let Some(r) = rows.next().map_err(q("reading live coverage"))? {
            let outcome: Option<String> = r.get(0).map_err(q("reading live coverage"))?;
            let peak: Option<f64> = r.get(1).map_err(q("reading live coverage"))?;
            let upper: Option<f64> = r.get(2).map_err(q("reading live coverage"))?;
            let cap: Option<i64> = r.get(3).map_err(q("reading live coverage"))?;
            let enforced: i64 = r.get(4).map_err(q("reading live coverage"))?;
            let Some(upper) = upper.filter(|u| u.is_finite()) else {
                continue;
            };
            match outcome.as_deref() {
                Some("ok") => {
                    if let Some(p) = peak {
                        jobs += 1;
                        covered += (p <= upper) as u32;
                    }
                }
                Some("oom_killed") if enforced != 0 && cap.is_some_and(|c| c as f64 >= upper) => {
                    jobs += 1;
                }
                _ => {}
            }
        }
        Ok((jobs, covered))
    }

    /// The model registry, oldest first.
    pub fn model_versions(&self) -> Result<Vec<ModelVersionRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT version, path, trained_at, rows, schema_hash, metrics, promoted, promoted_at
                 FROM model_version ORDER BY trained_at, version",
            )
            .map_err(q("reading the model registry"))?;
        let rows = stmt
            .query_map([], |r| {
                let metrics: String = r.get(5)?;
                Ok(ModelVersionRecord {
                    version: r.get(0)?,
                    path: r.get(1)?,
                    trained_at: r.get(2)?,
                    rows: r.get(3)?,
                    schema_hash: r.get(4)?,
                    metrics: serde_json::from_str(&metrics).unwrap_or(serde_json::Value::Null),
                    promoted: r.get::<_, i64>(6)? != 0,
                    promoted_at: r.get(7)?,
                })
            })
            .map_err(q("reading the model registry"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading the model registry"))?;
        Ok(rows)
    }
}
