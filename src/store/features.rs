//! A row's `features`, stored compactly (migration V11).
//!
//! The `features` column holds, for every row presize writes, a BLOB in the format below;
//! rows written before V11 held the JSON object name → number as TEXT, and V11 converts
//! them (`convert_pending`, right after the migration). Readers accept both: a TEXT value
//! is parsed as JSON, as before. The names live once per store in `feature_names` (one row
//! per distinct name list), so a row carries only its values.
//!
//! Format 1 (every integer an unsigned LEB128 varint):
//!
//! ```text
//! 0x01                      format
//! varint                    feature_names.id: the row's names (sorted by name)
//! varint n                  number of values (= the number of names)
//! ceil(n / 4) bytes         2-bit kind of value i at bits 2·(i mod 4) of byte i / 4
//! values, in name order     kind 0: +0.0 (no bytes)
//!                           kind 1: an integral f64 with |v| < 2^53, v ≠ 0: zigzag varint
//!                           kind 2: any other f64, 8 bytes little endian (bit for bit:
//!                                   -0.0, NaN and ±inf are kept as they are)
//!                           kind 3: one byte: 0 = JSON null, 1 = JSON integer (a zigzag
//!                                   varint follows; `3` rather than `3.0` in the text)
//! ```
//!
//! A name list's `hash` is the schema hash rule ([`Schema::compute_hash`]) over its names,
//! so the names of a row presize wrote are those of the schema in the row's `schema_hash`
//! (sorted by name, as the runner records them). A JSON object is converted only when every
//! value is a number or null (integers up to `i64`); anything else stays TEXT, unchanged.
//! Readers use the value as a number: JSON integers and floats alike, null as absent (0),
//! and, for training and the CSV export, a non-finite value as 0.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::features::{Schema, SCHEMA_NAME, SCHEMA_VERSION};

/// The format byte of a compact features value.
pub(crate) const FORMAT: u8 = 1;

/// Rows converted per transaction by [`convert_pending`].
const BATCH: i64 = 2000;

/// Why a stored features value cannot be read.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeaturesError {
    #[error("the features text is not a JSON object: {0}")]
    Json(String),
    #[error("the compact features are corrupt ({0})")]
    Corrupt(&'static str),
    #[error("the compact features name list {0}, which the store does not have")]
    UnknownNames(i64),
    #[error("the features value is {0}, neither JSON text nor a compact blob")]
    WrongType(&'static str),
}

/// One stored value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    /// A number written as a float (`1.5`, `3.0`), or any f64.
    Float(f64),
    /// A number written as a JSON integer (`3`).
    Int(i64),
    /// JSON `null`.
    Null,
}

impl Num {
    /// The value as a number (`None` for null).
    pub(crate) fn as_f64(self) -> Option<f64> {
        match self {
            Num::Float(v) => Some(v),
            Num::Int(i) => Some(i as f64),
            Num::Null => None,
        }
    }

    /// The value as JSON (a non-finite float, which JSON cannot hold, is null).
    pub(crate) fn to_json(self) -> serde_json::Value {
        match self {
            Num::Float(v) => serde_json::Number::from_f64(v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Num::Int(i) => i.into(),
            Num::Null => serde_json::Value::Null,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Cursor over a blob; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, FeaturesError> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(FeaturesError::Corrupt("truncated"))?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, FeaturesError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(FeaturesError::Corrupt("varint overflow"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FeaturesError::Corrupt("varint overflow"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FeaturesError> {
        if self.0.len() < n {
            return Err(FeaturesError::Corrupt("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
}

/// Encode `values` (in the order of name list `names_id`) in format 1.
pub(crate) fn encode(names_id: i64, values: &[Num]) -> Vec<u8> {
    let n = values.len();
    let mut out = Vec::with_capacity(4 + n / 4 + n * 3);
    out.push(FORMAT);
    put_varint(&mut out, names_id.max(0) as u64);
    put_varint(&mut out, n as u64);
    let kinds_at = out.len();
    out.resize(kinds_at + n.div_ceil(4), 0);
    for (i, v) in values.iter().enumerate() {
        let kind = match *v {
            Num::Float(f) if f.to_bits() == 0 => 0,
            Num::Float(f) if f != 0.0 && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                put_varint(&mut out, zigzag(f as i64));
                1
            }
            Num::Float(f) => {
                out.extend_from_slice(&f.to_le_bytes());
                2
            }
            Num::Null => {
                out.push(0);
                3
            }
            Num::Int(i) => {
                out.push(1);
                put_varint(&mut out, zigzag(i));
                3
            }
        };
        out[kinds_at + i / 4] |= kind << (2 * (i % 4));
    }
    out
}

/// The name list id and the values of a format-1 blob; the whole blob is checked (format,
/// lengths, no trailing bytes).
pub(crate) fn decode(blob: &[u8]) -> Result<(i64, Vec<Num>), FeaturesError> {
    let mut c = Cursor(blob);
    if c.byte()? != FORMAT {
        return Err(FeaturesError::Corrupt("unknown format"));
    }
    let id = i64::try_from(c.varint()?).map_err(|_| FeaturesError::Corrupt("name list id"))?;
    let n = usize::try_from(c.varint()?).map_err(|_| FeaturesError::Corrupt("count"))?;
    // Every value needs at least 2 bits of kind: a count the blob cannot hold is corrupt
    // (and never allocates).
    if n.div_ceil(4) > c.0.len() {
        return Err(FeaturesError::Corrupt("count larger than the value"));
    }
    let kinds = c.take(n.div_ceil(4))?;
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let v = match (kinds[i / 4] >> (2 * (i % 4))) & 3 {
            0 => Num::Float(0.0),
            1 => Num::Float(unzigzag(c.varint()?) as f64),
            2 => {
                let b = c.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Num::Float(f64::from_le_bytes(a))
            }
            _ => match c.byte()? {
                0 => Num::Null,
                1 => Num::Int(unzigzag(c.varint()?)),
                _ => return Err(FeaturesError::Corrupt("unknown value kind")),
            },
        };
        values.push(v);
    }
    if !c.0.is_empty() {
        return Err(FeaturesError::Corrupt("trailing bytes"));
    }
    Ok((id, values))
}

/// A JSON features text, parsed: entries sorted by name (a repeated name keeps its last
/// value, as every reader took it), `None` when a value is not a number or null (or an
/// integer beyond `i64`): such a row stays TEXT.
fn parse_json(text: &[u8]) -> Result<Option<Vec<(String, Num)>>, FeaturesError> {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(text)
        .map_err(|e| FeaturesError::Json(crate::util::one_line(&e.to_string())))?;
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let n = match v {
            serde_json::Value::Null => Num::Null,
            serde_json::Value::Number(n) => match (n.as_i64(), n.is_f64(), n.as_f64()) {
                (Some(i), _, _) => Num::Int(i),
                (None, true, Some(f)) => Num::Float(f),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        out.push((k, n));
    }
    Ok(Some(out))
}

/// Writes name lists to `feature_names` and remembers the last one used.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    last: Option<(Vec<String>, i64)>,
}

impl Encoder {
    /// The id of `names` in `feature_names`, added when new. `None` when another list has
    /// the same hash (never seen; the row then stays JSON).
    fn names_id(&mut self, conn: &Connection, names: &[&str]) -> rusqlite::Result<Option<i64>> {
        if let Some((last, id)) = &self.last {
            if last.len() == names.len() && last.iter().zip(names).all(|(a, b)| a == b) {
                return Ok(Some(*id));
            }
        }
        let owned: Vec<String> = names.iter().map(|s| (*s).to_string()).collect();
        let text = serde_json::to_string(&owned).unwrap_or_else(|_| "[]".into());
        // The table holds a few lists (one per feature schema): found by their text, the
        // hash is computed only for a new one.
        let found: Option<i64> = conn
            .prepare_cached("SELECT id FROM feature_names WHERE names = ?1")?
            .query_row([&text], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                let hash = Schema::compute_hash(SCHEMA_NAME, SCHEMA_VERSION, &owned);
                let taken: bool = conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM feature_names WHERE hash = ?1)")?
                    .query_row([&hash], |r| r.get(0))?;
                if taken {
                    return Ok(None);
                }
                conn.prepare_cached("INSERT INTO feature_names (hash, names) VALUES (?1, ?2)")?
                    .execute(params![hash, text])?;
                conn.last_insert_rowid()
            }
        };
        self.last = Some((owned, id));
        Ok(Some(id))
    }

    /// What to store for a features JSON text: the compact blob, or the text itself when
    /// it is not an object of numbers (unreadable text is kept too, and readers report it).
    pub(crate) fn stored(&mut self, conn: &Connection, json: &str) -> rusqlite::Result<SqlValue> {
        let Ok(Some(entries)) = parse_json(json.as_bytes()) else {
            return Ok(SqlValue::Text(json.to_string()));
        };
        let names: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        match self.names_id(conn, &names)? {
            Some(id) => {
                let values: Vec<Num> = entries.iter().map(|(_, v)| *v).collect();
                Ok(SqlValue::Blob(encode(id, &values)))
            }
            None => Ok(SqlValue::Text(json.to_string())),
        }
    }
}

/// Reads stored features (compact or JSON) by name: the store's name lists, loaded once,
/// and where each list's names sit in the caller's order.
#[derive(Debug)]
pub struct Decoder {
    lists: HashMap<i64, Vec<String>>,
    /// Per name list: the position of each of its names in `names` (if there).
    positions: HashMap<i64, Vec<Option<usize>>>,
    index: HashMap<String, usize>,
}

impl Decoder {
    /// A decoder that places values in the order of `names` (may be empty: JSON only).
    pub fn new(conn: &Connection, names: &[String]) -> rusqlite::Result<Decoder> {
        let index: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut lists = HashMap::new();
        let mut stmt = conn.prepare("SELECT id, names FROM feature_names")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let text: String = r.get(1)?;
            // A list that is not a JSON array of strings is left out: its rows then
            // report an unknown name list rather than decoding under wrong names.
            if let Ok(v) = serde_json::from_str::<Vec<String>>(&text) {
                lists.insert(id, v);
            }
        }
        let positions = lists
            .iter()
            .map(|(id, l)| (*id, l.iter().map(|n| index.get(n).copied()).collect()))
            .collect();
        Ok(Decoder {
            lists,
            positions,
            index,
        })
    }

    /// Write the value's numbers into `out` (zeroed by the caller) at the positions of the
    /// decoder's names; names it lacks are skipped, null stays 0, non-finite becomes 0. On an
    /// error `out` may hold part of the row: the caller must not use it.
    pub fn dense(&self, stored: ValueRef<'_>, out: &mut [f64]) -> Result<(), FeaturesError> {
        let mut put = |pos: Option<usize>, v: Num| {
            if let (Some(f), Some(slot)) = (v.as_f64(), pos.and_then(|p| out.get_mut(p))) {
                *slot = if f.is_finite() { f } else { 0.0 };
            }
        };
        match stored {
            ValueRef::Blob(b) => {
                let (id, values) = decode(b)?;
                let pos = self.positions_of(id, values.len())?;
                for (p, v) in pos.iter().zip(values) {
                    put(*p, v);
                }
                Ok(())
            }
            ValueRef::Text(t) => {
                // The pre-V11 reading: a value that is not a number counts as absent.
                let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(t)
                    .map_err(|e| FeaturesError::Json(crate::util::one_line(&e.to_string())))?;
                for (k, v) in map {
                    if let Some(f) = v.as_f64() {
                        put(self.index.get(&k).copied(), Num::Float(f));
                    }
                }
                Ok(())
            }
            other => Err(wrong_type(other)),
        }
    }

    fn positions_of(&self, id: i64, n: usize) -> Result<&[Option<usize>], FeaturesError> {
        let pos = self
            .positions
            .get(&id)
            .ok_or(FeaturesError::UnknownNames(id))?;
        if pos.len() != n {
            return Err(FeaturesError::Corrupt("count differs from its name list"));
        }
        Ok(pos)
    }

    /// The value as the JSON object it stands for (a JSON text as parsed, whatever it holds).
    pub fn to_json(&self, stored: ValueRef<'_>) -> Result<serde_json::Value, FeaturesError> {
        match stored {
            ValueRef::Blob(b) => {
                let (id, values) = decode(b)?;
                self.positions_of(id, values.len())?;
                let names = self.lists.get(&id).ok_or(FeaturesError::UnknownNames(id))?;
                let map: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .zip(values)
                    .map(|(n, v)| (n.clone(), v.to_json()))
                    .collect();
                Ok(serde_json::Value::Object(map))
            }
            ValueRef::Text(t) => serde_json::from_slice(t)
                .map_err(|e| FeaturesError::Json(crate::util::one_line(&e.to_string()))),
            other => Err(wrong_type(other)),
        }
    }
}

fn wrong_type(v: ValueRef<'_>) -> FeaturesError {
    FeaturesError::WrongType(match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    })
}

/// Rows whose features could not be read: how many, and the first of them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unreadable {
    pub count: usize,
    /// The first such row's id and why.
    pub first: Option<(i64, FeaturesError)>,
}

impl Unreadable {
    /// Count row `id`, unreadable because of `e`.
    pub fn note(&mut self, id: i64, e: FeaturesError) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((id, e));
        }
    }

    /// One line for the user (`None` when every row was readable): how many rows were
    /// unreadable, the first one and why, and what was done (`what`).
    pub fn message(&self, what: &str) -> Option<String> {
        let (id, e) = self.first.as_ref()?;
        Some(format!(
            "{} row(s) with unreadable features {what} (first: row {id}: {e})",
            self.count
        ))
    }
}

/// What [`crate::store::Store::training_rows`] read.
#[derive(Debug, Default)]
pub struct TrainingRows {
    /// Oldest first.
    pub rows: Vec<crate::model::trained::TrainingRow>,
    /// Rows left out because their features could not be read.
    pub unreadable: Unreadable,
}

/// What [`convert_pending`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Converted {
    /// JSON rows now stored compactly.
    pub(crate) compacted: u64,
    /// JSON rows left as they were (not an object of numbers, or not JSON at all).
    pub(crate) kept: u64,
}

/// Migration V11's data step: convert every JSON `features` value to the compact form, in
/// transactions of 2,000 rows (memory bounded by one batch), while V11's
/// `pending_conversion` row says it is not finished; the row is deleted with the last batch,
/// so a conversion interrupted (crash, kill) resumes on the next open. Progress goes to
/// stderr when it is a terminal.
pub(crate) fn convert_pending(conn: &mut Connection) -> rusqlite::Result<Converted> {
    let mut done = Converted::default();
    let pending: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pending_conversion WHERE what = 'features')",
        [],
        |r| r.get(0),
    )?;
    if !pending {
        return Ok(done);
    }
    let tty = std::io::stderr().is_terminal();
    let max_id: i64 = conn.query_row(
        "SELECT ifnull(max(id), 0) FROM resource_prediction",
        [],
        |r| r.get(0),
    )?;
    let mut enc = Encoder::default();
    let mut after: i64 = 0;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let batch: Vec<(i64, String)> = tx
            .prepare_cached(
                "SELECT id, features FROM resource_prediction
                 WHERE id > ?1 AND typeof(features) = 'text' ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after, BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let Some(&(last, _)) = batch.last() else {
            tx.execute("DELETE FROM pending_conversion WHERE what = 'features'", [])?;
            tx.commit()?;
            break;
        };
        for (id, text) in &batch {
            match enc.stored(&tx, text)? {
                v @ SqlValue::Blob(_) => {
                    tx.prepare_cached(
                        "UPDATE resource_prediction SET features = ?2 WHERE id = ?1",
                    )?
                    .execute(params![id, v])?;
                    done.compacted += 1;
                }
                _ => done.kept += 1,
            }
        }
        tx.commit()?;
        after = last;
        if tty {
            eprint!(
                "\rpresize: migration V11: compacting stored features, row {after} of {max_id}"
            );
        }
    }
    if tty && (done.compacted + done.kept) > 0 {
        eprintln!(
            "\rpresize: migration V11: {} rows' features compacted, {} kept as JSON text (not an object of numbers); `VACUUM` returns the freed pages to the file system",
            done.compacted, done.kept
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
