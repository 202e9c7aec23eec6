//! The applicability domain of a trained model: what it has seen in training, so the
//! sizing engine can tell a job inside it from a novel one (a new runtime, heavy library,
//! script or input range) and never tighten limits on an extrapolation.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::trained::runtime_of;
use crate::features::FeatureVector;

/// Sizes may exceed the largest seen in training by this factor before a job is novel.
pub const RANGE_FACTOR: f64 = 1.5;
/// At most this many job keys are remembered (a larger history keeps the newest).
pub const MAX_KEYS: usize = 200_000;

/// What a model saw in training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    /// Runtimes (`python`, `r`, `shell`, `other`) with at least one training row.
    pub runtimes: BTreeSet<String>,
    /// Heavy libraries imported by at least one training row (catalog keys).
    pub libraries: BTreeSet<String>,
    /// Largest total input size seen (MB).
    pub input_mb_max: f64,
    /// Largest log10 numeric argument seen.
    pub arg_log10_max: f64,
    /// Short hashes of the job keys trained on, sorted.
    pub keys: Vec<u64>,
}

/// A short stable hash of a job key.
pub fn key_hash(job_key: &str) -> u64 {
    let d = Sha256::digest(job_key.as_bytes());
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Where the features [`Domain`] reads sit in a schema's dense order (looked up once, so
/// learning a row costs a few array reads).
#[derive(Debug, Clone)]
pub struct DomainIndex {
    runtimes: Vec<(&'static str, usize)>,
    libraries: Vec<(String, usize)>,
    input: Option<usize>,
    arg_count: Option<usize>,
    arg_max: Option<usize>,
}

impl DomainIndex {
    pub fn new(names: &[String]) -> Self {
        let ix = |n: &str| names.iter().position(|m| m == n);
        DomainIndex {
            runtimes: [
                ("python", "lang_python"),
                ("r", "lang_r"),
                ("shell", "lang_shell"),
            ]
            .into_iter()
            .filter_map(|(rt, n)| ix(n).map(|i| (rt, i)))
            .collect(),
            libraries: names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let lib = n.strip_prefix("lib_")?.strip_suffix("_imported")?;
                    Some((lib.to_string(), i))
                })
                .collect(),
            input: ix("input_total_mb"),
            arg_count: ix("arg_numeric_count"),
            arg_max: ix("arg_max_numeric_log10"),
        }
    }
}

impl Domain {
    /// Learn one training row from its dense values (`value(i)` for schema index `i`).
    pub fn observe_dense(&mut self, idx: &DomainIndex, value: &dyn Fn(usize) -> f64) {
        let rt = idx
            .runtimes
            .iter()
            .find(|(_, i)| value(*i) > 0.0)
            .map_or("other", |(rt, _)| *rt);
        self.runtimes.insert(rt.to_string());
        for (lib, i) in &idx.libraries {
            if value(*i) > 0.0 && !self.libraries.contains(lib) {
                self.libraries.insert(lib.clone());
            }
        }
        if let Some(i) = idx.input {
            let v = value(i);
            if v.is_finite() {
                self.input_mb_max = self.input_mb_max.max(v);
            }
        }
        if idx.arg_count.is_some_and(|i| value(i) > 0.0) {
            if let Some(i) = idx.arg_max {
                let a = value(i);
                if a.is_finite() {
                    self.arg_log10_max = self.arg_log10_max.max(a);
                }
            }
        }
    }

    /// Record the job keys trained on.
    pub fn set_keys<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) {
        let mut k: Vec<u64> = keys.into_iter().map(key_hash).collect();
        k.sort_unstable();
        k.dedup();
        k.truncate(MAX_KEYS);
        self.keys = k;
    }

    /// Why a job is outside what the model has seen; empty when it is inside.
    pub fn novelty(&self, fv: &FeatureVector, job_key: &str) -> Vec<String> {
        let get = |k: &str| fv.get(k).filter(|v| v.is_finite()).unwrap_or(0.0);
        let mut why = Vec::new();
        let rt = runtime_of(&get);
        if !self.runtimes.contains(rt) {
            why.push(format!("runtime {rt}"));
        }
        let new_libs: Vec<&str> = fv
            .schema
            .names
            .iter()
            .filter_map(|n| n.strip_prefix("lib_")?.strip_suffix("_imported"))
            .filter(|lib| {
                get(&format!("lib_{lib}_imported")) > 0.0 && !self.libraries.contains(*lib)
            })
            .collect();
        if !new_libs.is_empty() {
            why.push(format!("heavy library {}", new_libs.join(", ")));
        }
        if self.keys.binary_search(&key_hash(job_key)).is_err() {
            why.push("script (job key) not in training".into());
        }
        let input = get("input_total_mb");
        if input > RANGE_FACTOR * self.input_mb_max.max(1.0) {
            why.push(format!(
                "input {input:.0} MB beyond the {:.0} MB seen",
                self.input_mb_max
            ));
        }
        if get("arg_numeric_count") > 0.0 {
            let a = get("arg_max_numeric_log10");
            if a > self.arg_log10_max + RANGE_FACTOR.log10() {
                why.push(format!(
                    "numeric argument 1e{a:.1} beyond the 1e{:.1} seen",
                    self.arg_log10_max
                ));
            }
        }
        why
    }
}
