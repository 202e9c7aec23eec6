//! TEMPORARY compile stub; replaced by the real scanner.
#![allow(dead_code, unused_variables)]
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CatalogOverride {
    pub weight: f64,
    #[serde(default)]
    pub aliases: Vec<String>,
}
#[derive(Debug, Clone)]
pub struct Catalog;
impl Catalog {
    pub fn builtin() -> Self {
        Catalog
    }
    pub fn with_overrides(m: &BTreeMap<String, CatalogOverride>) -> Self {
        Catalog
    }
}
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub max_script_bytes: u64,
}
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    R,
    Shell,
    Other,
}
impl Language {
    pub fn as_str(&self) -> &'static str {
        "other"
    }
}
#[derive(Debug, Clone, Default)]
pub struct InputStats {
    pub total_bytes: u64,
    pub max_bytes: u64,
    pub count: u32,
}
#[derive(Debug, Clone)]
pub struct ScriptScan {
    pub path: PathBuf,
    pub language: Language,
    pub sha256: String,
    pub bytes_read: u64,
    pub file_bytes: u64,
    pub truncated: bool,
    pub imports: BTreeSet<String>,
}
pub struct FeatureRequest<'a> {
    pub script: Option<&'a Path>,
    pub runtime: Option<&'a str>,
    pub inputs: &'a [PathBuf],
    pub command: &'a [OsString],
    pub prior: &'a PriorRuns,
}
#[derive(Debug, Clone)]
pub struct Extracted {
    pub vector: FeatureVector,
    pub scan: Option<ScriptScan>,
    pub inputs: InputStats,
    pub language: Language,
}
#[derive(Debug, Clone)]
pub struct Schema {
    pub name: String,
    pub version: u32,
    pub names: Vec<String>,
    pub hash: String,
}
#[derive(Debug, Clone)]
pub struct FeatureVector {
    pub schema: Arc<Schema>,
    pub values: Vec<f64>,
}
impl FeatureVector {
    pub fn get(&self, n: &str) -> Option<f64> {
        None
    }
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
}
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("x")]
    X,
}
pub fn resolve_script(c: &[OsString]) -> Option<PathBuf> {
    None
}
pub fn runtime_from_command(c: &[OsString]) -> Option<String> {
    None
}
pub fn extract(
    r: &FeatureRequest<'_>,
    c: &Catalog,
    o: &ScanOptions,
) -> Result<Extracted, FeatureError> {
    Err(FeatureError::X)
}
