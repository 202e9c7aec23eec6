//! The cold-start prior: interpreter base RSS + measured import footprints + an input term.
//!
//! The table is `models/prior.json`, produced by `scripts/measure-footprints.py` (see
//! `models/README.md`). Its confidence is deliberately low so the policy keeps the static
//! defaults until a trained model exists.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Bounds, ModelError, Prediction, Source};
use crate::features::FeatureVector;

/// The file name of the prior inside a model directory.
pub const PRIOR_FILE: &str = "prior.json";
/// The prior shipped inside the binary.
pub const EMBEDDED_PRIOR: &str = include_str!("../../models/prior.json");
/// Confidence of a prior prediction: below the default policy threshold (0.05).
pub const PRIOR_CONFIDENCE: f64 = 0.01;
/// Confidence of a prior prediction backed by earlier runs of the same job.
pub const PRIOR_WITH_HISTORY_CONFIDENCE: f64 = 0.03;

/// Base cost of starting a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeCost {
    pub base_rss_mb: f64,
    pub base_wall_s: f64,
    pub base_cpu_s: f64,
    #[serde(default)]
    pub source: String,
}

/// Measured footprint of importing one library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibraryCost {
    #[serde(default)]
    pub language: String,
    pub rss_mb: f64,
    pub wall_s: f64,
    pub cpu_s: f64,
    #[serde(default)]
    pub source: String,
}

/// Cost per MB of input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputTerm {
    pub rss_mb_per_input_mb: f64,
    pub s_per_input_mb: f64,
    #[serde(default)]
    pub source: String,
}

/// The prior table as stored in `prior.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorTable {
    pub format_version: u32,
    pub runtimes: BTreeMap<String, RuntimeCost>,
    pub libraries: BTreeMap<String, LibraryCost>,
    #[serde(default)]
    pub input_terms: BTreeMap<String, InputTerm>,
}

/// The prior model.
#[derive(Debug, Clone)]
pub struct Prior {
    table: PriorTable,
    /// (feature name `lib_<x>_imported`, cost) for every library in the table.
    libs: Vec<(String, LibraryCost)>,
    version: String,
}

fn feature_key(name: &str) -> String {
    name.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl Prior {
    /// Parse a prior table.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let table: PriorTable = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if table.format_version != 1 {
            return Err(format!(
                "format version {} is not supported (this presize reads 1)",
                table.format_version
            ));
        }
        let bad = |v: f64| !v.is_finite() || v < 0.0;
        for (k, r) in &table.runtimes {
            if bad(r.base_rss_mb) || bad(r.base_wall_s) || bad(r.base_cpu_s) {
                return Err(format!("runtime {k} has an invalid cost"));
            }
        }
        for (k, l) in &table.libraries {
            if bad(l.rss_mb) || bad(l.wall_s) || bad(l.cpu_s) {
                return Err(format!("library {k} has an invalid cost"));
            }
        }
        let libs = table
            .libraries
            .iter()
            .map(|(k, v)| (format!("lib_{}_imported", feature_key(k)), v.clone()))
            .collect();
        let digest = Sha256::digest(text.as_bytes());
        let version = format!(
            "prior-{}",
            digest
                .iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(Self {
            table,
            libs,
            version,
        })
    }

    /// Read a prior table from a file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_json(&text).map_err(|reason| ModelError::Corrupt {
            path: path.to_owned(),
            reason,
        })
    }

    /// The prior shipped in the binary.
    pub fn embedded() -> Self {
        match Self::from_json(EMBEDDED_PRIOR) {
            Ok(p) => p,
            // The embedded table is checked by a unit test; keep a usable fallback anyway.
            Err(_) => Self {
                table: PriorTable {
                    format_version: 1,
                    runtimes: BTreeMap::new(),
                    libraries: BTreeMap::new(),
                    input_terms: BTreeMap::new(),
                },
                libs: Vec::new(),
                version: "prior-fallback".into(),
            },
        }
    }

    /// Version string recorded with each prediction (`prior-<hash of the table>`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The underlying table.
    pub fn table(&self) -> &PriorTable {
        &self.table
    }

    /// Predict from the physical terms; earlier runs of the same job, when known, dominate.
    pub fn predict(&self, fv: &FeatureVector) -> Prediction {
        let get = |n: &str| fv.get(n).filter(|v| v.is_finite()).unwrap_or(0.0);
        let runtime = if get("lang_python") > 0.0 {
            "python"
        } else if get("lang_r") > 0.0 {
            "r"
        } else if get("lang_shell") > 0.0 {
            "shell"
        } else {
            "other"
        };
        let base = self
            .table
            .runtimes
            .get(runtime)
            .cloned()
            .unwrap_or(RuntimeCost {
                base_rss_mb: 16.0,
                base_wall_s: 0.05,
                base_cpu_s: 0.02,
                source: "fallback".into(),
            });
        let term = self
            .table
            .input_terms
            .get(runtime)
            .cloned()
            .unwrap_or(InputTerm {
                rss_mb_per_input_mb: if runtime == "shell" { 0.05 } else { 1.0 },
                s_per_input_mb: 0.02,
                source: "fallback".into(),
            });
        // Footprints overlap (pandas already loads numpy…): measured together, the sum of
        // the individual footprints was 1.7–2.2× the real peak, while max + 0.1·(rest) came
        // within 13 % (models/README.md). The point uses that; the upper bound the full sum.
        let (mut sum_rss, mut max_rss, mut lib_wall, mut lib_cpu) = (0.0f64, 0.0f64, 0.0, 0.0);
        for (feat, cost) in &self.libs {
            if get(feat) > 0.0 {
                sum_rss += cost.rss_mb;
                max_rss = max_rss.max(cost.rss_mb);
                lib_wall += cost.wall_s;
                lib_cpu += cost.cpu_s;
            }
        }
        let lib_rss = max_rss + 0.1 * (sum_rss - max_rss);
        let input_mb = get("input_total_mb");
        // Memory the command lines tell the tools to use (JVM heap + overhead, sort
        // buffers × threads, …; features::hints): the tools run beside the interpreter.
        let hint_mb = get("hint_memory_mb");
        let rss = base.base_rss_mb + lib_rss + term.rss_mb_per_input_mb * input_mb + hint_mb;
        let wall = base.base_wall_s + lib_wall + term.s_per_input_mb * input_mb;
        let cpu = base.base_cpu_s + lib_cpu + term.s_per_input_mb * input_mb;
        let mut p = Prediction {
            cpu_seconds: cpu,
            peak_rss_mb: rss,
            wall_seconds: wall,
            confidence: PRIOR_CONFIDENCE,
            upper: Bounds {
                peak_rss_mb: base.base_rss_mb
                    + 1.25 * sum_rss
                    + 8.0 * term.rss_mb_per_input_mb * input_mb
                    + 1.25 * hint_mb
                    + 32.0,
                wall_seconds: 4.0 * wall + 5.0,
                cpu_seconds: 4.0 * cpu + 5.0,
            },
            // The interpreter and its imports must load whatever the input: a physical floor.
            lower: Bounds {
                peak_rss_mb: 0.8 * (base.base_rss_mb + lib_rss),
                wall_seconds: 0.5 * (base.base_wall_s + lib_wall),
                cpu_seconds: 0.5 * (base.base_cpu_s + lib_cpu),
            },
            model_version: self.version.clone(),
            source: Source::Prior,
        };
        if get("prior_count") >= 1.0 {
            // Earlier runs of this job are better evidence than any table.
            p.peak_rss_mb = get("prior_mean_rss_mb").max(p.lower.peak_rss_mb);
            p.wall_seconds = get("prior_mean_wall_s");
            p.cpu_seconds = get("prior_mean_cpu_s");
            p.upper.peak_rss_mb = p.upper.peak_rss_mb.max(1.5 * get("prior_max_rss_mb"));
            p.upper.wall_seconds = p.upper.wall_seconds.max(1.5 * get("prior_max_wall_s"));
            p.upper.cpu_seconds = p.upper.cpu_seconds.max(1.5 * get("prior_max_cpu_s"));
            p.confidence = PRIOR_WITH_HISTORY_CONFIDENCE;
        }
        // Stated threads: CPU time may run at that many cores for the whole wall time.
        let threads = get("hint_threads");
        if threads > 1.0 {
            p.upper.cpu_seconds = p.upper.cpu_seconds.max(threads * p.upper.wall_seconds);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_prior_parses_and_is_physical() {
        let p = Prior::from_json(EMBEDDED_PRIOR).expect("shipped prior.json must parse");
        let py = &p.table().runtimes["python"];
        assert!(py.base_rss_mb > 1.0 && py.base_rss_mb < 200.0);
        assert!(p.table().libraries.contains_key("numpy"));
        assert!(p.version().starts_with("prior-"));
    }

    #[test]
    fn stated_memory_raises_point_and_upper_not_lower() {
        let p = Prior::embedded();
        let schema = std::sync::Arc::new(crate::features::Schema::for_catalog(
            &crate::features::Catalog::builtin(),
        ));
        let mut fv = FeatureVector::zeros(schema);
        fv.set("lang_shell", 1.0);
        let plain = p.predict(&fv);
        fv.set("hint_memory_mb", 12_288.0 + 1_228.8);
        fv.set("hint_threads", 4.0);
        let hinted = p.predict(&fv);
        assert!((hinted.peak_rss_mb - plain.peak_rss_mb - 13_516.8).abs() < 1e-6);
        assert!(hinted.upper.peak_rss_mb >= 1.25 * 13_516.8);
        assert_eq!(hinted.lower.peak_rss_mb, plain.lower.peak_rss_mb);
        assert!(hinted.upper.cpu_seconds >= 4.0 * hinted.upper.wall_seconds);
    }

    #[test]
    fn corrupt_tables_are_errors() {
        assert!(Prior::from_json("{").is_err());
        assert!(Prior::from_json(r#"{"format_version":2,"runtimes":{},"libraries":{}}"#).is_err());
        assert!(Prior::from_json(
            r#"{"format_version":1,"runtimes":{"python":{"base_rss_mb":-1,"base_wall_s":0,"base_cpu_s":0}},"libraries":{}}"#
        )
        .is_err());
    }
}
