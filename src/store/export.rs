//! Streaming every row with its stored features, for `presize export`.

use rusqlite::types::ValueRef;

use super::features::{Decoder, FeaturesError};
use super::{q, record_from_row, JobRecord, Store, StoreError, RECORD_COLUMNS};

/// One row's stored features (compact or JSON), readable by name.
pub struct RowFeatures<'a> {
    dec: &'a Decoder,
    stored: ValueRef<'a>,
}

impl RowFeatures<'_> {
    /// Write the row's values into `out` (zeroed by the caller) in the order of the names
    /// given to [`Store::for_each_row_with_features`]; see [`Decoder::dense`].
    pub fn dense(&self, out: &mut [f64]) -> Result<(), FeaturesError> {
        self.dec.dense(self.stored, out)
    }

    /// The JSON object the row's features stand for (every name it was recorded with).
    pub fn to_json(&self) -> Result<serde_json::Value, FeaturesError> {
        self.dec.to_json(self.stored)
    }

    /// The stored text of a row written before migration V11 whose features were not
    /// converted (not an object of numbers, or not JSON at all).
    pub fn text(&self) -> Option<&str> {
        match self.stored {
            ValueRef::Text(t) => std::str::from_utf8(t).ok(),
            _ => None,
        }
    }
}

impl Store {
    /// Call `each(row, schema_hash, features)` for every row, oldest first, without
    /// holding the table in memory; `features` places values in the order of `names`.
    /// Stops at the first error `each` returns (`Ok(false)` from `each` stops early without
    /// error).
    pub fn for_each_row_with_features<E: From<StoreError>>(
        &self,
        names: &[String],
        each: &mut dyn FnMut(&JobRecord, &str, &RowFeatures<'_>) -> Result<bool, E>,
    ) -> Result<(), E> {
        let dec = Decoder::new(&self.conn, names).map_err(q("reading feature names"))?;
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
            let stored = r.get_ref(n - 1).map_err(q("reading rows for export"))?;
            let features = RowFeatures { dec: &dec, stored };
            if !each(&rec, &hash, &features)? {
                break;
            }
        }
        Ok(())
    }
}
