//! Input sizes: `--input` files and directories plus regular files named on
//! the command line. Only metadata is read; nothing is ever opened.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FeatureError;

/// Sizes of a job's inputs (deduplicated by canonical path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputStats {
    pub total_bytes: u64,
    pub max_bytes: u64,
    pub count: u32,
}

/// Numbers given on the command line (`--cells 20000`, `n=5e6`, `1e6`): job sizes passed as
/// parameters rather than files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArgStats {
    /// How many arguments are numbers.
    pub count: u32,
    /// log10 of the largest (numbers below 1 count as 1).
    pub max_log10: f64,
    /// Sum of the log10s (the log of their product: rows × columns and the like).
    pub log10_sum: f64,
}

/// Numeric arguments of a command (`argv[0]` excluded; `--k=v` and `k=v` take the value).
pub fn arg_stats(command: &[OsString]) -> ArgStats {
    let mut st = ArgStats::default();
    for arg in command.iter().skip(1).take(MAX_COMMAND_ARGS) {
        let Some(s) = arg.to_str() else { continue };
        let v = match s.split_once('=') {
            Some((_, v)) => v,
            None => s,
        };
        let v = v.replace('_', "");
        let Ok(x) = v.parse::<f64>() else { continue };
        if !x.is_finite() || v.starts_with('-') {
            continue;
        }
        let l = x.abs().max(1.0).log10();
        st.count += 1;
        st.max_log10 = st.max_log10.max(l);
        st.log10_sum += l;
    }
    st
}

/// Entries visited per `--input` directory, at most.
pub const MAX_WALK_ENTRIES: usize = 10_000;
/// Levels below an `--input` directory that are visited, at most.
pub const MAX_WALK_DEPTH: u32 = 8;
/// Command arguments examined, at most.
const MAX_COMMAND_ARGS: usize = 4096;

/// Not found, or a path component is not a directory (ENOTDIR; matched by
/// number because `ErrorKind::NotADirectory` needs Rust 1.83).
pub(crate) fn is_not_found(e: &std::io::Error) -> bool {
    const ENOTDIR: i32 = 20;
    e.kind() == std::io::ErrorKind::NotFound || (cfg!(unix) && e.raw_os_error() == Some(ENOTDIR))
}

pub(crate) fn kind_name(ft: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "FIFO";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_char_device() {
            return "character device";
        }
    }
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

struct Acc<'a> {
    seen: BTreeSet<PathBuf>,
    /// The script's path as given. It is canonicalised when the first
    /// candidate input turns up (most commands name no input file, and a
    /// `realpath` costs a system call per path component).
    script_raw: Option<&'a Path>,
    script: Option<Option<PathBuf>>,
    stats: InputStats,
}

impl Acc<'_> {
    fn add(&mut self, canon: PathBuf, len: u64) {
        let raw = self.script_raw;
        if self
            .script
            .get_or_insert_with(|| raw.map(canonical))
            .as_ref()
            == Some(&canon)
        {
            return;
        }
        if self.seen.insert(canon) {
            self.stats.total_bytes = self.stats.total_bytes.saturating_add(len);
            self.stats.max_bytes = self.stats.max_bytes.max(len);
            self.stats.count = self.stats.count.saturating_add(1);
        }
    }
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Totals the job's inputs: every `--input` (a regular file, or a directory
/// whose regular files are summed by a bounded walk: at most
/// [`MAX_WALK_ENTRIES`] entries and [`MAX_WALK_DEPTH`] levels, symlinks inside
/// not followed) plus every command argument after argv\[0\] (or the value of
/// `--opt=value`) that names an existing regular file. The script itself is
/// never counted. A missing `--input` or one that is a FIFO, socket or device
/// is an error; command arguments that are not regular files are ignored.
pub fn input_stats(
    inputs: &[PathBuf],
    command: &[OsString],
    script: Option<&Path>,
) -> Result<InputStats, FeatureError> {
    let mut acc = Acc {
        seen: BTreeSet::new(),
        script_raw: script,
        script: None,
        stats: InputStats::default(),
    };
    for p in inputs {
        let meta = match fs::metadata(p) {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => {
                return Err(FeatureError::InputNotFound { path: p.clone() })
            }
            Err(e) => {
                return Err(FeatureError::Io {
                    path: p.clone(),
                    source: e,
                })
            }
        };
        let ft = meta.file_type();
        if ft.is_file() {
            acc.add(canonical(p), meta.len());
        } else if ft.is_dir() {
            walk(p, &mut acc)?;
        } else {
            return Err(FeatureError::InputNotRegular {
                path: p.clone(),
                kind: kind_name(&ft),
            });
        }
    }
    for arg in command.iter().skip(1).take(MAX_COMMAND_ARGS) {
        let candidate: PathBuf = match arg.to_str() {
            Some(s) if s.starts_with('-') => match s.split_once('=') {
                Some((_, v)) if !v.is_empty() => PathBuf::from(v),
                _ => continue,
            },
            _ => PathBuf::from(arg),
        };
        if candidate.as_os_str().is_empty() {
            continue;
        }
        if let Ok(meta) = fs::metadata(&candidate) {
            if meta.is_file() {
                acc.add(canonical(&candidate), meta.len());
            }
        }
    }
    Ok(acc.stats)
}

fn walk(root: &Path, acc: &mut Acc<'_>) -> Result<(), FeatureError> {
    let root_canon = canonical(root);
    let first = fs::read_dir(&root_canon).map_err(|e| FeatureError::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    let mut stack: Vec<(PathBuf, u32)> = Vec::new();
    let mut entries = 0usize;
    let mut pending = Some((first, 0u32));
    loop {
        let (rd, depth) = match pending.take() {
            Some(x) => x,
            None => match stack.pop() {
                Some((dir, depth)) => match fs::read_dir(&dir) {
                    Ok(rd) => (rd, depth),
                    Err(_) => continue,
                },
                None => return Ok(()),
            },
        };
        for ent in rd {
            let Ok(ent) = ent else { continue };
            entries += 1;
            if entries > MAX_WALK_ENTRIES {
                return Ok(());
            }
            let Ok(ft) = ent.file_type() else { continue };
            if ft.is_file() {
                if let Ok(m) = ent.metadata() {
                    acc.add(ent.path(), m.len());
                }
            } else if ft.is_dir() && depth + 1 < MAX_WALK_DEPTH {
                stack.push((ent.path(), depth + 1));
            }
        }
    }
}
