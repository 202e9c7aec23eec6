//! Predictions: the cold-start prior now, gradient-boosted trees once trained.

pub mod conformal;
pub mod gbt;
pub mod prior;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::features::FeatureVector;
pub use prior::Prior;

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
}

impl Predictor {
    /// A predictor with the shipped prior only.
    pub fn prior_only() -> Self {
        Self {
            prior: Prior::embedded(),
        }
    }

    /// Load from a model directory. Never fails: a corrupt or mismatched file is reported as
    /// a warning (returned) and the embedded prior is used instead.
    pub fn load(model_dir: &Path) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
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
        (Self { prior }, warnings)
    }

    /// Copy the shipped model files into `model_dir` if they are not there yet.
    pub fn seed_model_dir(model_dir: &Path) -> Result<(), ModelError> {
        crate::store::create_private_dir(model_dir).map_err(|source| ModelError::Io {
            path: model_dir.to_owned(),
            source,
        })?;
        let path = model_dir.join(prior::PRIOR_FILE);
        if !path.exists() {
            crate::store::write_private_file(&path, prior::EMBEDDED_PRIOR.as_bytes()).map_err(
                |source| ModelError::Io {
                    path: path.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    /// Predict one job.
    pub fn predict(&self, features: &FeatureVector) -> Prediction {
        self.prior.predict(features).sanitized()
    }

    /// The prior in use.
    pub fn prior(&self) -> &Prior {
        &self.prior
    }
}
