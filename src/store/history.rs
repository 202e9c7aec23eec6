//! Reading history by time (forecast, report) and importing attempts that already ran.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};

use super::{
    q, record_from_row, JobRecord, NewPrediction, Settlement, Store, StoreError, RECORD_COLUMNS,
};
use crate::util::rfc3339;

/// When an imported attempt was predicted, started and settled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptTimes {
    pub predicted_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub settled_at: SystemTime,
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

    /// Rows settled in `[from, to)` (RFC 3339 as written by [`crate::util::rfc3339`]), oldest first.
    pub(crate) fn settled_between(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM resource_prediction
                 WHERE settled_at >= ?1 AND settled_at < ?2 ORDER BY settled_at, id",
                RECORD_COLUMNS
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
    pub(crate) fn last_settled_before(&self, t: &str) -> Result<Option<String>, StoreError> {
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
}
