//! The feature vector's single definition: each base feature's name beside the function
//! that computes its value, and the two per-catalogue-entry features likewise. The schema's
//! names ([`BASE_FEATURES`], [`super::Schema::for_catalog`]) and [`build_vector`]'s values
//! are both read from these tables, so they cannot drift apart.

use super::hints::ResourceHints;
use super::inputs::{ArgStats, InputStats};
use super::lang::Language;
use super::scan::TokenCounts;
use super::schema::FeatureVector;
use super::{Catalog, PriorRuns, ScriptScan};

const MIB: f64 = 1024.0 * 1024.0;

/// Everything one vector is computed from (the catalogue sums precomputed).
pub(super) struct Parts<'a> {
    language: Language,
    scan: Option<&'a ScriptScan>,
    counts: &'a TokenCounts,
    inputs: &'a InputStats,
    args: &'a ArgStats,
    prior: &'a PriorRuns,
    hints: &'a ResourceHints,
    /// Catalogue entries imported, and the sum of their weights.
    heavy: (f64, f64),
}

/// Computes one feature from the parts.
type Value = fn(&Parts<'_>) -> f64;
/// Computes one catalogue-entry feature from (imported, usage).
pub type LibValue = fn(bool, u32) -> f64;

fn flag(x: bool) -> f64 {
    if x {
        1.0
    } else {
        0.0
    }
}

/// `v` if finite and positive, else 0.
pub(super) fn finite_nonneg(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// The base features in vector order: name and value. The meaning of each name is
/// documented on [`BASE_FEATURES`]. Names and order are persisted (the schema hash in
/// stored models and rows): never reorder or rename; append with a schema version bump.
const BASE: [(&str, Value); 38] = [
    ("lang_python", |p| flag(p.language == Language::Python)),
    ("lang_r", |p| flag(p.language == Language::R)),
    ("lang_shell", |p| flag(p.language == Language::Shell)),
    ("lang_other", |p| flag(p.language == Language::Other)),
    ("script_kib", |p| {
        p.scan.map_or(0.0, |s| s.file_bytes as f64 / 1024.0)
    }),
    ("script_truncated", |p| {
        flag(p.scan.is_some_and(|s| s.truncated))
    }),
    ("tokens", |p| p.counts.tokens as f64),
    ("code_lines", |p| p.counts.code_lines as f64),
    ("comment_lines", |p| p.counts.comment_lines as f64),
    ("loops", |p| p.counts.loops as f64),
    ("func_defs", |p| p.counts.func_defs as f64),
    ("calls", |p| p.counts.calls as f64),
    ("read_calls", |p| p.counts.read_calls as f64),
    ("max_numeric_log10", |p| p.counts.max_numeric_log10),
    ("parallel_hints", |p| p.counts.parallel_hints as f64),
    ("gpu_hints", |p| p.counts.gpu_hints as f64),
    ("imports", |p| p.scan.map_or(0, |s| s.imports.len()) as f64),
    ("heavy_imports", |p| p.heavy.0),
    ("heavy_weight", |p| p.heavy.1),
    ("input_total_mb", |p| p.inputs.total_bytes as f64 / MIB),
    ("input_max_mb", |p| p.inputs.max_bytes as f64 / MIB),
    ("input_count", |p| f64::from(p.inputs.count)),
    ("input_total_log_mb", |p| {
        (p.inputs.total_bytes as f64 / MIB).ln_1p()
    }),
    ("arg_numeric_count", |p| f64::from(p.args.count)),
    ("arg_max_numeric_log10", |p| finite_nonneg(p.args.max_log10)),
    ("arg_numeric_log10_sum", |p| finite_nonneg(p.args.log10_sum)),
    ("prior_count", |p| f64::from(p.prior.count)),
    ("prior_last_cpu_s", |p| finite_nonneg(p.prior.last_cpu_s)),
    ("prior_mean_cpu_s", |p| finite_nonneg(p.prior.mean_cpu_s)),
    ("prior_max_cpu_s", |p| finite_nonneg(p.prior.max_cpu_s)),
    ("prior_last_rss_mb", |p| finite_nonneg(p.prior.last_rss_mb)),
    ("prior_mean_rss_mb", |p| finite_nonneg(p.prior.mean_rss_mb)),
    ("prior_max_rss_mb", |p| finite_nonneg(p.prior.max_rss_mb)),
    ("prior_last_wall_s", |p| finite_nonneg(p.prior.last_wall_s)),
    ("prior_mean_wall_s", |p| finite_nonneg(p.prior.mean_wall_s)),
    ("prior_max_wall_s", |p| finite_nonneg(p.prior.max_wall_s)),
    ("hint_memory_mb", |p| finite_nonneg(p.hints.memory_mb)),
    ("hint_threads", |p| finite_nonneg(p.hints.threads)),
];

const fn names<const N: usize>(table: &[(&'static str, Value); N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = table[i].0;
        i += 1;
    }
    out
}

const BASE_NAMES: [&str; BASE.len()] = names(&BASE);

/// Language-neutral and per-language features, in vector order. The catalogue's
/// `lib_<key>_imported` / `lib_<key>_usage` pairs ([`LIB_FEATURES`]) follow, in
/// catalogue order.
///
/// * `lang_*`: one-hot language (0/1).
/// * `script_kib`: the script's size on disk / 1024 (0 without a script);
///   `script_truncated`: 1 when it exceeded `max_script_bytes`.
/// * `tokens` … `gpu_hints`: [`crate::features::TokenCounts`] of the scanned code.
/// * `imports`: distinct top-level imports; `heavy_imports`: catalogue entries
///   imported; `heavy_weight`: sum of their weights.
/// * `input_total_mb`, `input_max_mb` (MiB), `input_count`,
///   `input_total_log_mb` = ln(1 + input_total_mb).
/// * `arg_*`: [`crate::features::ArgStats`] of the command line.
/// * `prior_*`: [`crate::features::PriorRuns`] (non-finite or negative → 0).
/// * `hint_memory_mb`, `hint_threads`: what the job's command lines tell its tools to
///   use ([`crate::features::hints`]): JVM heaps, sort buffers, thread counts; 0 when
///   nothing is stated.
pub const BASE_FEATURES: &[&str] = &BASE_NAMES;

/// The two features of each catalogue entry, in this order after the base features:
/// `lib_<key>_<suffix>`, value from (imported, usage).
pub const LIB_FEATURES: [(&str, LibValue); 2] = [
    ("imported", |imported, _| flag(imported)),
    ("usage", |_, usage| f64::from(usage)),
];

/// Assembles the vector in [`BASE_FEATURES`] order, then the [`LIB_FEATURES`] of each
/// catalogue entry. Every value is finite.
pub fn build_vector(
    catalog: &Catalog,
    language: Language,
    scan: Option<&ScriptScan>,
    inputs: &InputStats,
    args: &ArgStats,
    prior: &PriorRuns,
    hints: &ResourceHints,
) -> FeatureVector {
    let schema = catalog.schema();
    let entries = catalog.entries();
    let mut heavy = (0.0, 0.0);
    if let Some(s) = scan {
        for ((_, imported, _), e) in s.heavy.iter().zip(entries) {
            if *imported {
                heavy.0 += 1.0;
                heavy.1 += e.weight;
            }
        }
    }
    let default_counts = TokenCounts::default();
    let parts = Parts {
        language,
        scan,
        counts: scan.map_or(&default_counts, |s| &s.counts),
        inputs,
        args,
        prior,
        hints,
        heavy,
    };
    let mut v: Vec<f64> = Vec::with_capacity(schema.names.len());
    v.extend(BASE.iter().map(|(_, value)| value(&parts)));
    for i in 0..entries.len() {
        let (imported, usage) = scan
            .and_then(|s| s.heavy.get(i))
            .map_or((false, 0), |(_, im, u)| (*im, *u));
        v.extend(LIB_FEATURES.iter().map(|(_, value)| value(imported, usage)));
    }
    for x in &mut v {
        if !x.is_finite() {
            *x = 0.0;
        }
    }
    FeatureVector { schema, values: v }
}
