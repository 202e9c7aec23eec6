//! Predictions: the cold-start prior now, gradient-boosted trees once trained.

pub mod allocate;
pub mod conformal;
pub mod domain;
pub mod gbt;
pub mod prior;
pub mod trained;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::features::FeatureVector;
pub use prior::Prior;
pub use trained::TrainedModel;

/// File in the model directory naming the promoted model file.
pub const CURRENT_FILE: &str = "current";

/// Errors loading or saving models.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write model directory {path}: {source}; check PRESIZE_MODEL_DIR")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model directory {path} is world-writable; run `chmod o-w {path}`")]
    WorldWritable { path: PathBuf },
    #[error("training failed: {0}")]
    Train(#[from] gbt::GbtError),
}

/// Where a prediction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A trained model.
    Model,
    /// The physical cold-start prior.
    Prior,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Model => "model",
            Source::Prior => "prior",
        }
    }
}

/// One value per target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub peak_rss_mb: f64,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
}

/// A prediction for one job: point values, calibrated bounds and a confidence in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
    pub wall_seconds: f64,
    /// How far the policy may trust the prediction (see README "Confidence").
    pub confidence: f64,
    pub upper: Bounds,
    pub lower: Bounds,
    pub model_version: String,
    pub source: Source,
}

impl Prediction {
    /// Replace any non-finite or negative number by a safe value so limits stay finite.
    pub fn sanitized(mut self) -> Self {
        fn fix(v: &mut f64, fallback: f64) {
            if !v.is_finite() || *v < 0.0 {
                *v = fallback;
            }
        }
        fix(&mut self.peak_rss_mb, 0.0);
        fix(&mut self.wall_seconds, 0.0);
        fix(&mut self.cpu_seconds, 0.0);
        for b in [&mut self.upper, &mut self.lower] {
            fix(&mut b.peak_rss_mb, 0.0);
            fix(&mut b.wall_seconds, 0.0);
            fix(&mut b.cpu_seconds, 0.0);
        }
        if !self.confidence.is_finite() {
            self.confidence = 0.0;
        }
        self.confidence = self.confidence.clamp(0.0, 1.0);
        self
    }
}

/// Predicts resources for a feature vector: a trained model when one is loaded, else the prior.
#[derive(Debug, Clone)]
pub struct Predictor {
    prior: Prior,
    trained: Option<std::sync::Arc<TrainedModel>>,
}

/// Is this path writable by anyone (a model anyone can replace is refused)?
fn world_writable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o002 != 0)
}

impl Predictor {
    /// A predictor with the shipped prior only.
    pub fn prior_only() -> Self {
        Self {
            prior: Prior::embedded(),
            trained: None,
        }
    }

    /// A predictor over an explicit trained model (and the shipped prior).
    pub fn with_model(model: TrainedModel) -> Self {
        Self {
            prior: Prior::embedded(),
            trained: Some(std::sync::Arc::new(model)),
        }
    }

    /// Load from a model directory. Never fails: a corrupt, mismatched or unsafe file is
    /// reported as a warning (returned) and the prior is used instead.
    pub fn load(model_dir: &Path) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        if model_dir.is_dir() && world_writable(model_dir) {
            warnings.push(format!(
                "model directory {} is world-writable; ignoring its files (run `chmod o-w` on it)",
                model_dir.display()
            ));
            return (Self::prior_only(), warnings);
        }
        let path = model_dir.join(prior::PRIOR_FILE);
        let prior = if path.exists() {
            match Prior::from_file(&path) {
                Ok(p) => p,
                Err(e) => {
                    warnings.push(format!("{e}; using the shipped prior"));
                    Prior::embedded()
                }
            }
        } else {
            Prior::embedded()
        };
        let trained = match current_model_path(model_dir) {
            Ok(None) => None,
            Ok(Some(p)) => match TrainedModel::load(&p) {
                Ok(m) => Some(std::sync::Arc::new(m)),
                Err(e) => {
                    warnings.push(format!("{e}; using the prior"));
                    None
                }
            },
            Err(e) => {
                warnings.push(format!("{e}; using the prior"));
                None
            }
        };
        (Self { prior, trained }, warnings)
    }

    /// Copy the shipped model files into `model_dir` if they are not there yet.
    pub fn seed_model_dir(model_dir: &Path) -> Result<(), ModelError> {
        crate::util::create_private_dir(model_dir).map_err(|source| ModelError::Io {
            path: model_dir.to_owned(),
            source,
        })?;
        let path = model_dir.join(prior::PRIOR_FILE);
        if !path.exists() {
            crate::util::write_private_file(&path, prior::EMBEDDED_PRIOR.as_bytes()).map_err(
                |source| ModelError::Io {
                    path: path.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    /// Predict one job: the trained model if it accepts the features, else the prior.
    pub fn predict(&self, features: &FeatureVector) -> Prediction {
        self.predict_with_warning(features).0
    }

    /// Like [`Predictor::predict`], also saying why the trained model was not used.
    pub fn predict_with_warning(&self, features: &FeatureVector) -> (Prediction, Option<String>) {
        if let Some(m) = &self.trained {
            match m.predict(features) {
                Ok(p) => return (p.sanitized(), None),
                Err(why) => return (self.prior.predict(features).sanitized(), Some(why)),
            }
        }
        (self.prior.predict(features).sanitized(), None)
    }

    /// The prior in use.
    /// Why this job is outside what the trained model has seen (empty when it is inside,
    /// or when no trained model would predict it: then the engine treats it as novel anyway).
    pub fn novelty(&self, fv: &FeatureVector, job_key: &str) -> Vec<String> {
        match &self.trained {
            Some(t) if t.schema.hash == fv.schema.hash => match &t.domain {
                Some(d) => d.novelty(fv, job_key),
                None => vec![format!(
                    "model {} records no training domain (retrain to record it)",
                    t.version
                )],
            },
            _ => Vec::new(),
        }
    }

    pub fn prior(&self) -> &Prior {
        &self.prior
    }

    /// The trained model in use, if any.
    pub fn trained(&self) -> Option<&TrainedModel> {
        self.trained.as_deref()
    }

    /// Version of the model that predicts (trained if loaded, else the prior).
    pub fn version(&self) -> String {
        match &self.trained {
            Some(m) => m.version.clone(),
            None => self.prior.version().to_string(),
        }
    }
}

/// The promoted model file named by `<dir>/current`, if any.
pub fn current_model_path(model_dir: &Path) -> Result<Option<PathBuf>, ModelError> {
    let pointer = model_dir.join(CURRENT_FILE);
    let name = match std::fs::read_to_string(&pointer) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ModelError::Corrupt {
                path: pointer,
                reason: e.to_string(),
            })
        }
    };
    // Only a plain file name inside the model directory (never a path elsewhere).
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !ok {
        return Err(ModelError::Corrupt {
            path: pointer,
            reason: format!("{name:?} is not a model file name"),
        });
    }
    Ok(Some(model_dir.join(name)))
}

/// Write a model file and (optionally) make it the current one, atomically.
pub fn save_model(
    model_dir: &Path,
    model: &TrainedModel,
    promote: bool,
) -> Result<PathBuf, ModelError> {
    crate::util::create_private_dir(model_dir).map_err(|source| ModelError::Io {
        path: model_dir.to_owned(),
        source,
    })?;
    let file = format!("{}.json", model.version);
    let path = model_dir.join(&file);
    crate::util::write_private_file(&path, model.to_json().as_bytes()).map_err(|source| {
        ModelError::Io {
            path: path.clone(),
            source,
        }
    })?;
    if promote {
        let pointer = model_dir.join(CURRENT_FILE);
        crate::util::write_private_file(&pointer, format!("{file}\n").as_bytes()).map_err(
            |source| ModelError::Io {
                path: pointer.clone(),
                source,
            },
        )?;
    }
    Ok(path)
}
