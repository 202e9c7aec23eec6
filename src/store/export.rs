//! Streaming every row with its stored features, for `presize export`.

use super::{q, record_from_row, JobRecord, Store, StoreError, RECORD_COLUMNS};

impl Store {
    /// Call `each(row, schema_hash, features_json)` for every row, oldest first, without
    /// holding the table in memory. Stops at the first error `each` returns (`Ok(false)`
    /// from `each` stops early without error).
    pub fn for_each_row_with_features<E: From<StoreError>>(
        &self,
        each: &mut dyn FnMut(&JobRecord, &str, &str) -> Result<bool, E>,
    ) -> Result<(), E> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS}, schema_hash, features FROM resource_prediction ORDER BY id"
            ))
            .map_err(q("reading rows for export"))?;
        let mut rows = stmt.query([]).map_err(q("reading rows for export"))?;
        while let Some(r) = rows.next().map_err(q("reading rows for export"))? {
            let rec = record_from_row(r).map_err(q("reading rows for export"))?;
            // The two columns after the record's, wherever the record's end.
            let n = r.as_ref().column_count();
            let hash: String = r.get(n - 2).map_err(q("reading rows for export"))?;
            let features: String = r.get(n - 1).map_err(q("reading rows for export"))?;
            if !each(&rec, &hash, &features)? {
                break;
            }
        }
        Ok(())
    }
}
