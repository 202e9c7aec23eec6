//! Settled attempts as training rows for `retrain`.

use super::{features, q, Store, StoreError, TrainingRows};
use crate::job::Outcome;

impl Store {
    /// How many settled attempts are usable for training (ok, oom_killed, timed_out);
    /// counted on the `outcome` index of migration V7, not on the wide rows.
    pub(crate) fn count_training_rows(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM resource_prediction INDEXED BY idx_resource_prediction_outcome
                 WHERE outcome IN ('ok', 'oom_killed', 'timed_out')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as usize)
            .map_err(q("counting training rows"))
    }

    /// The latest `limit` settled attempts usable for training (ok, and censored oom_killed /
    /// timed_out), oldest first, each row's features decoded straight into a dense vector in
    /// the order of `names` (no per-row map; a feature the row lacks is 0). A row whose
    /// features cannot be read is left out and counted in [`TrainingRows::unreadable`].
    pub fn training_rows(
        &self,
        names: &[String],
        limit: usize,
    ) -> Result<TrainingRows, StoreError> {
        let dec = features::Decoder::new(&self.conn, names).map_err(q("reading feature names"))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, features, outcome, actual_cpu_s, actual_rss_mb, actual_wall_s,
                        applied_memory_mb, applied_timeout_s, memory_enforced
                 FROM resource_prediction
                 WHERE outcome IN ('ok', 'oom_killed', 'timed_out') ORDER BY id DESC LIMIT ?1",
            )
            .map_err(q("reading training rows"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = TrainingRows::default();
        let mut rows = stmt.query([limit]).map_err(q("reading training rows"))?;
        while let Some(r) = rows.next().map_err(q("reading training rows"))? {
            let id: i64 = r.get(0).map_err(q("reading training rows"))?;
            let mut features = vec![0.0; names.len()];
            let stored = r.get_ref(1).map_err(q("reading training rows"))?;
            if let Err(e) = dec.dense(stored, &mut features) {
                out.unreadable.note(id, e);
                continue;
            }
            let row = (|| {
                let outcome: String = r.get(2)?;
                let enforced: i64 = r.get(8)?;
                let cap: Option<i64> = r.get(6)?;
                Ok(crate::model::trained::TrainingRow {
                    id,
                    features,
                    outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
                    cpu_s: r.get(3)?,
                    rss_mb: r.get(4)?,
                    wall_s: r.get(5)?,
                    memory_cap_mb: cap.filter(|_| enforced != 0).map(|c| c as f64),
                    timeout_s: r.get::<_, Option<i64>>(7)?.map(|t| t as f64),
                })
            })()
            .map_err(q("reading training rows"))?;
            out.rows.push(row);
        }
        out.rows.reverse();
        Ok(out)
    }
}
