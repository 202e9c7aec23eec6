//! The heavy-library catalogue.
//!
//! Each entry names a library whose presence in a script says a lot about the
//! job's resource needs. For every entry the feature vector carries two values:
//! `lib_<key>_imported` (0/1) and `lib_<key>_usage` (count of references; see
//! [`crate::features::scan_source`] for the exact rule).
//!
//! **Weight** is a rough, dimensionless heaviness on a 0–3 scale: roughly how much
//! memory and CPU a typical job pays for using the library, relative to
//! `scanpy = 1.0` (a single-cell workflow over a mid-sized AnnData). Foundation
//! libraries almost every script loads sit near 0.2; deep-learning frameworks and
//! gene-regulatory-network inference sit at 2–2.5. The weights of the imported
//! entries are summed into the `heavy_weight` feature; they are priors for a cold
//! model, not measurements, and operators may change them in the config file.
//!
//! Matching is by import name (case-insensitive), restricted to the entry's
//! languages. R entries may list key exported functions: after `library(pkg)`,
//! a call to one of them counts as a use of the package.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::lang::Language;
use super::schema::Schema;

/// One library in the catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Canonical (distribution) name, e.g. `scikit-learn`, `Seurat`.
    pub name: String,
    /// Languages whose imports may match this entry.
    pub languages: Vec<Language>,
    /// Import names that select this entry (the name itself always does).
    pub aliases: Vec<String>,
    /// Rough relative heaviness (0–3, scanpy = 1.0); see the module docs.
    pub weight: f64,
    /// R only: exported functions whose calls count as uses after `library()`.
    #[serde(default)]
    pub exports: Vec<String>,
}

/// A config-file override: `[catalog] name = { weight = 1.0, aliases = [...] }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogOverride {
    pub weight: f64,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// The heavy-library catalogue: entries sorted by feature key, with lookup
/// indices. Build it with [`Catalog::builtin`] or [`Catalog::with_overrides`].
#[derive(Clone, Debug)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    keys: Vec<String>,
    /// (lowercased alias, entry index, language mask), sorted by alias.
    alias_index: Vec<(Box<[u8]>, u32, u8)>,
    /// (exported function name, entry index), sorted by name; case-sensitive.
    export_index: Vec<(Box<[u8]>, u32)>,
    /// Pre-filters: bit `len` (< 32) of `[first byte]` is set when some alias
    /// (lowercased) / export of that length starts with that byte.
    alias_filter: Box<[u32; 256]>,
    export_filter: Box<[u32; 256]>,
    schema: OnceLock<Arc<Schema>>,
}

fn filter_of<'a>(words: impl Iterator<Item = &'a [u8]>) -> Box<[u32; 256]> {
    let mut t = Box::new([0u32; 256]);
    for w in words {
        if let Some(&f) = w.first() {
            // Words of 31 bytes or more all share bit 31.
            t[f as usize] |= 1 << w.len().min(31);
        }
    }
    t
}

#[inline(always)]
fn passes(filter: &[u32; 256], w: &[u8]) -> bool {
    match w.first() {
        Some(&f) => filter[f as usize] & (1 << w.len().min(31)) != 0,
        None => false,
    }
}

const PY: &[Language] = &[Language::Python];
const R: &[Language] = &[Language::R];
const PY_R: &[Language] = &[Language::Python, Language::R];

type Builtin = (
    &'static str,
    &'static [Language],
    &'static [&'static str],
    f64,
    &'static [&'static str],
);

const BUILTIN: &[Builtin] = &[
    // Python
    ("scanpy", PY, &["scanpy"], 1.0, &[]),
    ("anndata", PY, &["anndata"], 0.6, &[]),
    (
        "torch",
        PY_R,
        &[
            "torch",
            "torchvision",
            "torchaudio",
            "lightning",
            "pytorch_lightning",
        ],
        2.0,
        &["torch_tensor", "nn_module", "cuda_is_available"],
    ),
    ("tensorflow", PY_R, &["tensorflow"], 2.0, &[]),
    ("jax", PY, &["jax", "jaxlib", "flax", "optax"], 1.5, &[]),
    ("pyscenic", PY, &["pyscenic", "arboreto"], 2.5, &[]),
    ("pymc", PY, &["pymc", "pymc3"], 1.5, &[]),
    ("numpy", PY, &["numpy"], 0.2, &[]),
    ("pandas", PY, &["pandas"], 0.4, &[]),
    ("scipy", PY, &["scipy"], 0.3, &[]),
    ("scikit-learn", PY, &["sklearn", "scikit_learn"], 0.5, &[]),
    (
        "xgboost",
        PY_R,
        &["xgboost"],
        0.8,
        &["xgb.train", "xgb.DMatrix", "xgb.cv", "xgboost"],
    ),
    (
        "lightgbm",
        PY_R,
        &["lightgbm"],
        0.8,
        &["lgb.train", "lgb.Dataset", "lgb.cv", "lightgbm"],
    ),
    ("dask", PY, &["dask", "distributed"], 1.0, &[]),
    ("polars", PY, &["polars"], 0.5, &[]),
    ("pyarrow", PY, &["pyarrow"], 0.4, &[]),
    ("statsmodels", PY, &["statsmodels"], 0.4, &[]),
    // R
    (
        "Seurat",
        R,
        &["Seurat", "SeuratObject"],
        1.5,
        &[
            "CreateSeuratObject",
            "NormalizeData",
            "FindVariableFeatures",
            "ScaleData",
            "RunPCA",
            "FindNeighbors",
            "FindClusters",
            "RunUMAP",
            "RunTSNE",
            "FindAllMarkers",
            "FindMarkers",
            "SCTransform",
            "IntegrateData",
            "IntegrateLayers",
            "FindIntegrationAnchors",
            "SelectIntegrationFeatures",
            "JoinLayers",
            "Read10X",
            "Read10X_h5",
            "PercentageFeatureSet",
            "AddModuleScore",
            "CellCycleScoring",
            "DimPlot",
            "FeaturePlot",
            "VlnPlot",
            "DoHeatmap",
        ],
    ),
    (
        "DESeq2",
        R,
        &["DESeq2"],
        1.0,
        &[
            "DESeqDataSetFromMatrix",
            "DESeqDataSetFromHTSeqCount",
            "DESeqDataSetFromTximport",
            "DESeqDataSet",
            "DESeq",
            "results",
            "lfcShrink",
            "vst",
            "rlog",
            "varianceStabilizingTransformation",
            "estimateSizeFactors",
            "estimateDispersions",
            "nbinomWaldTest",
            "nbinomLRT",
        ],
    ),
    (
        "edgeR",
        R,
        &["edgeR"],
        0.5,
        &[
            "DGEList",
            "calcNormFactors",
            "normLibSizes",
            "estimateDisp",
            "estimateCommonDisp",
            "estimateTagwiseDisp",
            "glmQLFit",
            "glmQLFTest",
            "glmFit",
            "glmLRT",
            "exactTest",
            "filterByExpr",
            "cpm",
            "topTags",
        ],
    ),
    (
        "data.table",
        R,
        &["data.table"],
        0.4,
        &[
            "fread",
            "fwrite",
            "data.table",
            "as.data.table",
            "setDT",
            "setkey",
            "setkeyv",
            "rbindlist",
            "setorder",
        ],
    ),
    (
        "Bioconductor",
        R,
        &[
            "BiocGenerics",
            "S4Vectors",
            "IRanges",
            "GenomicRanges",
            "SummarizedExperiment",
            "SingleCellExperiment",
            "Biobase",
            "DelayedArray",
            "HDF5Array",
        ],
        0.8,
        &[
            "SummarizedExperiment",
            "SingleCellExperiment",
            "assay",
            "assays",
            "colData",
            "rowData",
            "DataFrame",
            "SimpleList",
            "GRanges",
            "IRanges",
            "makeGRangesFromDataFrame",
        ],
    ),
];

/// The feature key of a catalogue name: lowercased, every non-alphanumeric
/// byte replaced by `_` (`scikit-learn` → `scikit_learn`).
pub fn feature_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn lang_mask(langs: &[Language]) -> u8 {
    langs.iter().fold(0u8, |m, l| m | l.mask())
}

fn clean_weight(w: f64) -> f64 {
    if w.is_finite() {
        w.clamp(0.0, 1000.0)
    } else {
        0.0
    }
}

/// The built-in entries in `BUILTIN` order.
fn builtin_entries() -> Vec<CatalogEntry> {
    BUILTIN
        .iter()
        .map(|(name, langs, aliases, weight, exports)| CatalogEntry {
            name: (*name).to_string(),
            languages: langs.to_vec(),
            aliases: aliases.iter().map(|a| (*a).to_string()).collect(),
            weight: *weight,
            exports: exports.iter().map(|e| (*e).to_string()).collect(),
        })
        .collect()
}

impl Catalog {
    /// The built-in catalogue (see the module docs for the weights).
    pub fn builtin() -> Catalog {
        Catalog::from_entries(builtin_entries())
    }

    /// The built-in catalogue with config-file overrides applied. An override
    /// whose key matches an existing entry (by feature key, so case and
    /// punctuation do not matter) replaces its weight and, when it lists any,
    /// its aliases. Any other key adds a new entry that matches imports in
    /// Python, R and shell (where "imports" are the programs called). Keys with
    /// no alphanumeric character are ignored; non-finite weights become 0.
    pub fn with_overrides(overrides: &BTreeMap<String, CatalogOverride>) -> Catalog {
        // The built-in entries as listed (not yet deduplicated or sorted): the first entry
        // of a key is the one an override changes and the one `from_entries` keeps, as
        // when starting from `Catalog::builtin()`, whose index would be built twice.
        let mut entries: Vec<CatalogEntry> = builtin_entries();
        for (name, ov) in overrides {
            let name = name.trim();
            if !name.chars().any(|c| c.is_ascii_alphanumeric()) {
                continue;
            }
            let key = feature_key(name);
            let aliases: Vec<String> = ov
                .aliases
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            if let Some(e) = entries.iter_mut().find(|e| feature_key(&e.name) == key) {
                e.weight = clean_weight(ov.weight);
                if !aliases.is_empty() {
                    e.aliases = aliases;
                }
            } else {
                entries.push(CatalogEntry {
                    name: name.to_string(),
                    languages: vec![Language::Python, Language::R, Language::Shell],
                    aliases,
                    weight: clean_weight(ov.weight),
                    exports: Vec::new(),
                });
            }
        }
        Catalog::from_entries(entries)
    }

    /// Builds a catalogue from explicit entries (deduplicated by feature key,
    /// first wins; sorted by feature key).
    pub fn from_entries(entries: Vec<CatalogEntry>) -> Catalog {
        let mut keyed: Vec<(String, CatalogEntry)> = Vec::with_capacity(entries.len());
        let mut seen: HashSet<String> = HashSet::with_capacity(entries.len());
        for mut e in entries {
            let key = feature_key(&e.name);
            if key.is_empty() || !seen.insert(key.clone()) {
                continue;
            }
            e.weight = clean_weight(e.weight);
            keyed.push((key, e));
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let (keys, entries): (Vec<String>, Vec<CatalogEntry>) = keyed.into_iter().unzip();

        let mut alias_index: Vec<(Box<[u8]>, u32, u8)> = Vec::new();
        let mut export_index: Vec<(Box<[u8]>, u32)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let idx = i as u32;
            let mask = lang_mask(&e.languages);
            for a in std::iter::once(&e.name).chain(e.aliases.iter()) {
                let lower: Box<[u8]> = a.as_bytes().to_ascii_lowercase().into_boxed_slice();
                alias_index.push((lower, idx, mask));
            }
            for x in &e.exports {
                export_index.push((x.as_bytes().into(), idx));
            }
        }
        // Sorted by word, and for a word listed more than once the first entry's (a stable
        // sort keeps insertion order among equal words; `dedup_by` keeps the first).
        alias_index.sort_by(|a, b| a.0.cmp(&b.0));
        alias_index.dedup_by(|later, first| later.0 == first.0);
        export_index.sort_by(|a, b| a.0.cmp(&b.0));
        export_index.dedup_by(|later, first| later.0 == first.0);
        let alias_filter = filter_of(alias_index.iter().map(|(a, _, _)| &**a));
        let export_filter = filter_of(export_index.iter().map(|(a, _)| &**a));
        Catalog {
            entries,
            keys,
            alias_index,
            export_index,
            alias_filter,
            export_filter,
            schema: OnceLock::new(),
        }
    }

    /// The entries, sorted by feature key (the schema's order).
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// Feature keys of the entries, in the same order as [`Catalog::entries`].
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The schema for this catalogue, computed once and shared.
    pub fn schema(&self) -> Arc<Schema> {
        Arc::clone(
            self.schema
                .get_or_init(|| Arc::new(Schema::for_catalog(self))),
        )
    }

    /// The entry an import name selects in `lang` (case-insensitive).
    pub fn lookup(&self, import_name: &str, lang: Language) -> Option<usize> {
        self.lookup_bytes(import_name.as_bytes(), lang)
    }

    pub(crate) fn lookup_bytes(&self, name: &[u8], lang: Language) -> Option<usize> {
        if name.is_empty() || name.len() > 128 || self.alias_index.is_empty() {
            return None;
        }
        let first = name[0].to_ascii_lowercase();
        if self.alias_filter[first as usize] & (1 << name.len().min(31)) == 0 {
            return None;
        }
        let mut buf = [0u8; 128];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        let lower: &[u8] = lower;
        let pos = self
            .alias_index
            .binary_search_by(|(a, _, _)| (**a).cmp(lower))
            .ok()?;
        let (_, idx, mask) = &self.alias_index[pos];
        if mask & lang.mask() != 0 {
            Some(*idx as usize)
        } else {
            None
        }
    }

    /// The entry exporting the R function `name` (exact match), if any.
    pub(crate) fn export_owner(&self, name: &[u8]) -> Option<usize> {
        if !passes(&self.export_filter, name) {
            return None;
        }
        self.export_index
            .binary_search_by(|(a, _)| (**a).cmp(name))
            .ok()
            .map(|p| self.export_index[p].1 as usize)
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::builtin()
    }
}
