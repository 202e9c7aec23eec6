//! Reading history by time (forecast, report) and importing attempts that already ran.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{q, record_from_row, JobRecord, NewPrediction, Settlement, Store, StoreError};

/// Format a time the way every timestamp column is written (RFC 3339 UTC, milliseconds), so
/// that text comparison in SQL orders times correctly.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// When an imported attempt was predicted, started and settled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptTimes {
    pub predicted_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub settled_at: SystemTime,
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
    /// Insert an attempt that already ran elsewhere, with its own timestamps: history
    /// imported from another executor, and test fixtures with chosen times. Returns the id.
    ///
    /// Written as insert → settle → set times; if a later step fails the row is removed, so
    /// no half-imported row is left for the next `run` to mark `lost`.
    pub fn import_settled(
        &mut self,
        row: &NewPrediction,
        settlement: &Settlement,
        times: &AttemptTimes,
    ) -> Result<i64, StoreError> {
        let id = self.insert_prediction(row)?;
        let finish = |store: &mut Store| -> Result<(), StoreError> {
            if !row.rejected {
                store.settle(id, settlement)?;
            }
            store
                .conn
                .execute(
                    "UPDATE resource_prediction SET predicted_at = ?2, started_at = ?3,
                        settled_at = ?4 WHERE id = ?1",
                    params![
                        id,
                        rfc3339(times.predicted_at),
                        times.started_at.map(rfc3339),
                        rfc3339(times.settled_at)
                    ],
                )
                .map_err(q("importing a settled row"))?;
            Ok(())
        };
        if let Err(e) = finish(self) {
            let _ = self
                .conn
                .execute("DELETE FROM resource_prediction WHERE id = ?1", [id]);
            return Err(e);
        }
        Ok(id)
    }

    /// Rows settled in `[from, to)` (RFC 3339 as written by [`rfc3339`]), oldest first.
    pub fn settled_between(&self, from: &str, to: &str) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM resource_prediction
                 WHERE settled_at >= ?1 AND settled_at < ?2 ORDER BY settled_at, id",
                super::RECORD_COLUMNS
            ))
            .map_err(q("reading settled rows by time"))?;
        let rows = stmt
            .query_map([from, to], record_from_row)
            .map_err(q("reading settled rows by time"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("reading settled rows by time"))?;
        Ok(rows)
    }

    /// `settled_at` of the newest row settled before `t`, if any.
    pub fn last_settled_before(&self, t: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT max(settled_at) FROM resource_prediction WHERE settled_at < ?1",
                [t],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(q("finding the previous active window"))
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
