//! Settlements that could not be written (disk full) survive in a file whose space was
//! reserved before the job started, and are settled by the next `presize` that opens the store.
//!
//! Before an attempt starts, [`Spool::reserve`] creates `<db>.settle-<row>` filled with
//! [`SPOOL_BYTES`] zero bytes. If the settlement later fails, [`Spool::write`] overwrites those
//! same bytes in place (no new blocks are needed, so it works on a full file system); on success
//! dropping the [`Spool`] removes the file. [`replay`] settles every filled spool file of a store.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Measured, Settlement, Store, StoreError};

/// Space reserved per attempt (a settlement is ~400 bytes of JSON).
pub const SPOOL_BYTES: usize = 4096;

/// What a spool file holds once filled.
#[derive(Debug, Serialize, Deserialize)]
struct Spooled {
    id: i64,
    settlement: Settlement,
    measured: Measured,
}

/// The reserved spool file of one attempt; removed on drop unless [`Spool::write`] filled it.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    filled: bool,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.filled {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn prefix(db: &Path) -> String {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}.settle-")
}

impl Spool {
    /// Reserve the space for row `id`'s settlement beside the database.
    pub fn reserve(db: &Path, id: i64) -> std::io::Result<Spool> {
        let path = db.with_file_name(format!("{}{id}", prefix(db)));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        // Writing the bytes is what reserves them (also under delayed allocation, which
        // reserves at write time); no fsync is needed until the file holds a settlement.
        f.write_all(&[0u8; SPOOL_BYTES])?;
        Ok(Spool {
            path,
            filled: false,
        })
    }

    /// Write the settlement into the reserved bytes (in place: no allocation on disk).
    pub fn write(&mut self, id: i64, s: &Settlement, m: &Measured) -> std::io::Result<()> {
        let text = serde_json::to_vec(&Spooled {
            id,
            settlement: s.clone(),
            measured: m.clone(),
        })
        .map_err(std::io::Error::other)?;
        if text.len() > SPOOL_BYTES {
            return Err(std::io::Error::other("settlement larger than its spool"));
        }
        let mut f = OpenOptions::new().write(true).open(&self.path)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&text)?;
        f.sync_all()?;
        self.filled = true;
        Ok(())
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Settle every filled spool file of `store` (first result wins: a row settled meanwhile is
/// left as it is) and remove it. Empty reservations of settled rows are removed too; those of
/// unsettled rows may belong to a running attempt and stay. Returns the row ids settled.
pub fn replay(store: &mut Store) -> Result<Vec<i64>, StoreError> {
    let db = store.path().to_owned();
    let Some(dir) = db.parent().map(|d| {
        if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        }
    }) else {
        return Ok(Vec::new());
    };
    let prefix = prefix(&db);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut settled = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix(&prefix)
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        if end == 0 {
            if store.record(id)?.is_none_or(|r| r.settled_at.is_some()) {
                let _ = std::fs::remove_file(e.path());
            }
            continue;
        }
        match serde_json::from_slice::<Spooled>(&bytes[..end]) {
            Ok(sp) if sp.id == id => {
                if store.settle_measured(id, &sp.settlement, &sp.measured)? {
                    settled.push(id);
                }
                let _ = std::fs::remove_file(e.path());
            }
            // Not ours or torn: leave it for an operator rather than guess.
            _ => {}
        }
    }
    settled.sort_unstable();
    Ok(settled)
}
