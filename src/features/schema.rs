//! The named, versioned feature schema and the feature vector.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::catalog::Catalog;
use super::vector::{BASE_FEATURES, LIB_FEATURES};

/// Schema name carried by every feature vector.
pub const SCHEMA_NAME: &str = "presize-features";
/// Bumped whenever the meaning of an existing feature changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Feature names plus a hash over them, so a model can refuse a vector it was
/// not trained on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Always [`SCHEMA_NAME`] for schemas built here.
    pub name: String,
    pub version: u32,
    pub names: Vec<String>,
    /// First 16 hex characters of sha256(name \n version \n names joined by \n).
    pub hash: String,
}

impl Schema {
    /// The schema of the vectors [`crate::features::extract`] builds with `catalog`.
    pub fn for_catalog(catalog: &Catalog) -> Schema {
        let mut names: Vec<String> = BASE_FEATURES.iter().map(|s| (*s).to_string()).collect();
        for key in catalog.keys() {
            for (suffix, _) in LIB_FEATURES {
                names.push(format!("lib_{key}_{suffix}"));
            }
        }
        Schema::new(SCHEMA_NAME, SCHEMA_VERSION, names)
    }

    /// A schema with the given name, version and names; computes the hash.
    pub fn new(name: &str, version: u32, names: Vec<String>) -> Schema {
        let hash = Schema::compute_hash(name, version, &names);
        Schema {
            name: name.to_string(),
            version,
            names,
            hash,
        }
    }

    /// The hash rule: 16 hex chars of sha256 over `name`, `version` and the
    /// names, all joined by `'\n'`.
    pub fn compute_hash(name: &str, version: u32, names: &[String]) -> String {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(b"\n");
        h.update(version.to_string().as_bytes());
        for n in names {
            h.update(b"\n");
            h.update(n.as_bytes());
        }
        let digest = h.finalize();
        hex::encode(&digest[..8])
    }

    /// True when `hash` matches the name, version and names (e.g. after loading
    /// a schema from a model file).
    pub fn is_consistent(&self) -> bool {
        self.hash == Schema::compute_hash(&self.name, self.version, &self.names)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Feature values in schema order. Serialises as a JSON object name → value.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureVector {
    pub schema: Arc<Schema>,
    pub values: Vec<f64>,
}

fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

impl FeatureVector {
    /// A vector of zeros for `schema`.
    pub fn zeros(schema: Arc<Schema>) -> FeatureVector {
        let values = vec![0.0; schema.names.len()];
        FeatureVector { schema, values }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.schema
            .index_of(name)
            .and_then(|i| self.values.get(i).copied())
    }

    /// Sets a value by name (non-finite values become 0); false if the schema
    /// has no such feature.
    pub fn set(&mut self, name: &str, value: f64) -> bool {
        match self.schema.index_of(name) {
            Some(i) if i < self.values.len() => {
                self.values[i] = finite(value);
                true
            }
            _ => false,
        }
    }

    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.schema
            .names
            .iter()
            .zip(self.values.iter())
            .map(|(n, v)| (n.clone(), *v))
            .collect()
    }

    /// Rebuilds a vector for `schema` from a name → value map (e.g. the
    /// `features` JSON of a stored row). Names the map lacks become 0, as do
    /// non-finite values; names the schema lacks are ignored.
    pub fn from_map(schema: Arc<Schema>, map: &BTreeMap<String, f64>) -> FeatureVector {
        let values = schema
            .names
            .iter()
            .map(|n| map.get(n).copied().map(finite).unwrap_or(0.0))
            .collect();
        FeatureVector { schema, values }
    }
}

impl Serialize for FeatureVector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let n = self.schema.names.len().min(self.values.len());
        let mut map = serializer.serialize_map(Some(n))?;
        for (name, v) in self.schema.names.iter().zip(self.values.iter()) {
            map.serialize_entry(name, &finite(*v))?;
        }
        map.end()
    }
}
