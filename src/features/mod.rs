//! Feature extraction: what presize knows about a job before it runs.
//!
//! [`extract`] turns a job (script, runtime, inputs, command, prior runs) into a
//! [`FeatureVector`] under a named, versioned [`Schema`]. The script is read at
//! most [`ScanOptions::max_script_bytes`] bytes and scanned by a single-pass,
//! hand-written lexer per language (Python, R, shell); other languages get
//! only the language-neutral features.
//!
//! # What the scanners count
//!
//! Strings and comments are skipped correctly (Python triple-quoted and
//! prefixed strings, R raw strings and backtick names, shell quotes, `$(...)`,
//! backticks and here-documents), so nothing inside them counts.
//!
//! * `tokens`: identifiers/keywords/words, numbers, strings and operators (each
//!   punctuation byte is one token; shell operators such as `&&` are one).
//! * `code_lines`: lines holding any token (lines inside a multi-line string
//!   count); `comment_lines`: lines holding only a comment.
//! * `loops`: Python `for` (comprehensions included) and `while`; R `for`,
//!   `while`, `repeat`; shell `for`, `select`, `while`, `until`.
//! * `func_defs`: Python `def` and `lambda`; R `function` and `\(x)`; shell
//!   `f() {` and `function f`.
//! * `calls`: Python/R: an identifier (not a keyword, not the name in a `def`)
//!   followed by `(`; shell: simple commands run (builtins included).
//! * `read_calls`: calls of file readers (`read_*`, `open`, `load`, `loadtxt`,
//!   `genfromtxt`, `h5py.File`, `sc.read`, R `read.*`, `readRDS`, `fread`,
//!   `Read10X`, ...); shell `cat`/`zcat`/`head`/... and `<` redirections.
//! * `max_numeric_log10`: log10 of the largest numeric literal (`1e6`,
//!   `1_000_000`, `10L`, `0x10`; shell: all-numeric words), 0 if none or < 1.
//! * `parallel_hints`: names such as `n_jobs`, `Pool`, `ThreadPoolExecutor`,
//!   `num_workers`, `threads`, `mclapply`, `parLapply`, `future::plan`,
//!   `%dopar%`; shell `&` (background), `xargs -P`, `parallel`, `--threads`...
//! * `gpu_hints`: identifiers, strings or shell words containing `cuda` or
//!   `gpu` (any case: `torch.cuda`, `"cuda:0"`, `CUDA_VISIBLE_DEVICES`),
//!   `device=`, `jax.devices`, `tf.config`, `nvidia-smi`.
//!
//! # Imports and catalogue usage
//!
//! Imports are top-level names: Python `import a.b as c`, `from a import b`,
//! `importlib.import_module("a")`/`__import__("a")` (relative imports and
//! `__future__` are not imports); R `library(x)`, `require("x")`,
//! `requireNamespace('x')`, `loadNamespace`, `pacman::p_load(a, b)`, `x::f`,
//! `x:::f`; shell: the programs a script runs.
//!
//! For each catalogue entry, `imported` is set when any alias is imported, and
//! **usage** is the number of references through a name bound to the package,
//! not counting the import statement itself: Python counts every later
//! occurrence of a bound name not preceded by `.` (`import scanpy as sc` then
//! `sc.pp.x(...)` is one use; `from scanpy import pp` then `pp.x` is one;
//! `from pandas import read_csv` then `read_csv(...)` is one;
//! `m = importlib.import_module("torch")` binds `m`). R counts each `pkg::` /
//! `pkg:::` reference, plus, after `library(pkg)`/`require(pkg)`, calls of the
//! key exported functions the catalogue lists for it (e.g. `RunPCA(` for
//! Seurat). Shell counts nothing as usage.

mod catalog;
pub mod hints;
mod inputs;
mod lang;
mod notebook;
mod python;
mod rlang;
mod scan;
mod schema;
mod shell;
mod vector;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use catalog::{feature_key, Catalog, CatalogEntry, CatalogOverride};
pub use inputs::{arg_stats, input_stats, ArgStats, InputStats, MAX_WALK_DEPTH, MAX_WALK_ENTRIES};
pub use lang::{
    detect_language, language_from_extension, resolve_script, runtime_from_command,
    runtime_language, Language,
};
pub use scan::TokenCounts;
pub use schema::{FeatureVector, Schema, SCHEMA_NAME, SCHEMA_VERSION};
pub use vector::{build_vector, BASE_FEATURES, LIB_FEATURES};

/// Default cap on the bytes of a script that are read and scanned (8 MiB).
pub const DEFAULT_MAX_SCRIPT_BYTES: u64 = 8 * 1024 * 1024;
/// A script whose first this-many bytes hold a NUL byte is binary.
pub const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// How scripts are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanOptions {
    /// Bytes read at most; a longer script is scanned up to here and flagged
    /// (`script_truncated` = 1).
    pub max_script_bytes: u64,
    /// Compute [`ScriptScan::sha256`] (default true). The hash is recorded by
    /// `presize run` (`script_sha256` column) but no feature depends on it;
    /// callers that only predict may turn it off (it costs about a third of
    /// the scan on a 77 KB script).
    #[serde(default = "default_true")]
    pub script_sha256: bool,
}

fn default_true() -> bool {
    true
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_script_bytes: DEFAULT_MAX_SCRIPT_BYTES,
            script_sha256: true,
        }
    }
}

/// Actuals of earlier settled runs of the same job key (filled by the store).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PriorRuns {
    pub count: u32,
    pub last_cpu_s: f64,
    pub mean_cpu_s: f64,
    pub max_cpu_s: f64,
    pub last_rss_mb: f64,
    pub mean_rss_mb: f64,
    pub max_rss_mb: f64,
    pub last_wall_s: f64,
    pub mean_wall_s: f64,
    pub max_wall_s: f64,
}

/// Result of scanning one script file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptScan {
    pub path: PathBuf,
    pub language: Language,
    /// Hex sha256 of the bytes read (the whole file unless truncated); empty
    /// when [`ScanOptions::script_sha256`] is false.
    pub sha256: String,
    pub bytes_read: u64,
    /// The file's size on disk.
    pub file_bytes: u64,
    pub truncated: bool,
    /// Top-level imported names (Python/R packages, shell programs).
    pub imports: BTreeSet<String>,
    pub counts: TokenCounts,
    /// One element per catalogue entry, in catalogue order:
    /// (canonical name, imported, usage).
    pub heavy: Vec<(String, bool, u32)>,
    /// Resource flags on the script's command lines (shell scripts only).
    #[serde(default)]
    pub hints: hints::ResourceHints,
}

/// Everything [`extract`] needs about a job.
#[derive(Clone, Copy, Debug)]
pub struct FeatureRequest<'a> {
    pub script: Option<&'a Path>,
    pub runtime: Option<&'a str>,
    pub inputs: &'a [PathBuf],
    pub command: &'a [OsString],
    pub prior: &'a PriorRuns,
}

/// The outcome of [`extract`].
#[derive(Clone, Debug)]
pub struct Extracted {
    pub vector: FeatureVector,
    /// Resource flags read from the job's argv and script (also in the vector).
    pub hints: hints::ResourceHints,
    pub scan: Option<ScriptScan>,
    pub inputs: InputStats,
    pub language: Language,
}

/// Path shown in messages: lossy, with control characters escaped so every
/// message stays on one line.
fn shown(p: &Path) -> String {
    p.to_string_lossy()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Why features could not be extracted. Every message is one line naming the
/// path and what to do.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("script {} does not exist: pass an existing file with --script or in the command", shown(.path))]
    ScriptNotFound { path: PathBuf },
    #[error("script {} is a directory: pass the script file itself with --script", shown(.path))]
    IsDirectory { path: PathBuf },
    #[error("script {} is a {kind}, not a regular file: pass a regular script file with --script", shown(.path))]
    ScriptNotRegular { path: PathBuf, kind: &'static str },
    #[error("script {} looks binary (NUL byte in its first 8 KiB): pass a text script with --script", shown(.path))]
    Binary { path: PathBuf },
    #[error("notebook {} is not a valid notebook ({}): re-save it from Jupyter or pass another --script", shown(.path), one_line(.reason))]
    Notebook { path: PathBuf, reason: String },
    #[error("input {} does not exist: check the --input path", shown(.path))]
    InputNotFound { path: PathBuf },
    #[error("input {} is a {kind}, not a regular file or directory: pass files or directories with --input", shown(.path))]
    InputNotRegular { path: PathBuf, kind: &'static str },
    #[error("cannot read {}: {}: check that it exists and is readable", shown(.path), one_line(&.source.to_string()))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn script_io_error(path: &Path, e: std::io::Error) -> FeatureError {
    if inputs::is_not_found(&e) {
        FeatureError::ScriptNotFound {
            path: path.to_path_buf(),
        }
    } else {
        FeatureError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Pure scan of source bytes in `language`: (imports, counts, one
/// (name, imported, usage) per catalogue entry in catalogue order). Never
/// panics; `Other` yields only the line count.
pub fn scan_source(
    src: &[u8],
    language: Language,
    catalog: &Catalog,
) -> (BTreeSet<String>, TokenCounts, Vec<(String, bool, u32)>) {
    let mut acc = scan::Acc::new(catalog, language);
    match language {
        Language::Python => python::scan(src, &mut acc),
        Language::R => rlang::scan(src, &mut acc),
        Language::Shell => shell::scan(src, &mut acc),
        Language::Other => {
            acc.c.lines = src.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    acc.finish(!src.is_empty() && !src.ends_with(b"\n"))
}

/// Reads at most `limit` bytes of a regular file. Returns (bytes, size on disk).
fn read_bounded(path: &Path, limit: u64) -> Result<(Vec<u8>, u64), FeatureError> {
    let meta = fs::metadata(path).map_err(|e| script_io_error(path, e))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(FeatureError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if !ft.is_file() {
        // Never open FIFOs, sockets or devices: that could block forever.
        return Err(FeatureError::ScriptNotRegular {
            path: path.to_path_buf(),
            kind: inputs::kind_name(&ft),
        });
    }
    let file = File::open(path).map_err(|e| script_io_error(path, e))?;
    // Read the size `stat` gave in one call (`read_to_end` on a `Take` has
    // no size hint and reads in growing 8 KiB.. chunks: 5 calls for 77 KB),
    // then to the end, bounded (files that grew, or report size 0 as /proc
    // files do): one more call, returning 0, in the usual case.
    let want = meta.len().min(limit).min(64 * 1024 * 1024) as usize;
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match (&file).read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(script_io_error(path, e)),
        }
    }
    buf.truncate(filled);
    if filled == want {
        (&file)
            .take(limit.saturating_sub(filled as u64))
            .read_to_end(&mut buf)
            .map_err(|e| script_io_error(path, e))?;
    }
    // The size from before the read (a file that grew meanwhile shows at
    // least what was read): no second `fstat`.
    let size = meta.len().max(buf.len() as u64);
    Ok((buf, size))
}

/// Reads (bounded) and scans one script. The language comes from
/// [`detect_language`], except for containers: for `.ipynb` the kernel
/// language in the notebook metadata wins over `runtime` (without one it is
/// `runtime`'s language, else Python) and only code cells are scanned; `.Rmd`
/// is R (only its `{r}` chunks are scanned).
pub fn scan_script(
    path: &Path,
    runtime: Option<&str>,
    catalog: &Catalog,
    opts: &ScanOptions,
) -> Result<ScriptScan, FeatureError> {
    let limit = opts.max_script_bytes;
    let (buf, file_bytes) = read_bounded(path, limit)?;
    let bytes_read = buf.len() as u64;
    let truncated = file_bytes > limit;
    let sha256 = if opts.script_sha256 {
        hex::encode(Sha256::digest(&buf))
    } else {
        String::new()
    };
    if buf[..buf.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
        return Err(FeatureError::Binary {
            path: path.to_path_buf(),
        });
    }
    let first_line = &buf[..scan::find_nl(&buf, 0)];
    let (code, language): (Cow<'_, [u8]>, Language) = match lang::container_of(path) {
        lang::Container::Plain => (
            Cow::Borrowed(&buf[..]),
            detect_language(runtime, path, first_line),
        ),
        lang::Container::Notebook => {
            let nb = notebook::extract_notebook(&buf, truncated).map_err(|reason| {
                FeatureError::Notebook {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
            let language = match nb.kernel_language.as_deref() {
                Some(k) => runtime_language(k).unwrap_or(Language::Other),
                None => runtime
                    .and_then(runtime_language)
                    .unwrap_or(Language::Python),
            };
            (Cow::Owned(nb.code), language)
        }
        // Only `{r}` chunks are extracted, so the code is R whatever the runtime.
        lang::Container::RMarkdown => (Cow::Owned(notebook::extract_rmd(&buf)), Language::R),
    };
    let (imports, counts, heavy) = scan_source(&code, language, catalog);
    let hints = if language == Language::Shell {
        hints::from_shell(&code)
    } else {
        hints::ResourceHints::default()
    };
    Ok(ScriptScan {
        hints,
        path: path.to_path_buf(),
        language,
        sha256,
        bytes_read,
        file_bytes,
        truncated,
        imports,
        counts,
        heavy,
    })
}

/// Builds the feature vector for a job: scans the script (if any), sizes the
/// inputs and folds in prior runs. Every value is finite.
pub fn extract(
    req: &FeatureRequest<'_>,
    catalog: &Catalog,
    opts: &ScanOptions,
) -> Result<Extracted, FeatureError> {
    let scan = match req.script {
        Some(p) => Some(scan_script(p, req.runtime, catalog, opts)?),
        None => None,
    };
    let language = match &scan {
        Some(s) => s.language,
        None => req
            .runtime
            .and_then(runtime_language)
            .unwrap_or(Language::Other),
    };
    let inputs = input_stats(req.inputs, req.command, req.script)?;
    let args = arg_stats(req.command);
    let hints = hints::merge(
        hints::from_argv(req.command),
        scan.as_ref().map(|s| s.hints.clone()).unwrap_or_default(),
    );
    let vector = build_vector(
        catalog,
        language,
        scan.as_ref(),
        &inputs,
        &args,
        req.prior,
        &hints,
    );
    Ok(Extracted {
        hints,
        vector,
        scan,
        inputs,
        language,
    })
}
