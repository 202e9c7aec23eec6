//! Settings: built-in defaults < config file (TOML) < environment < command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::executor::CgroupChoice;
use crate::features::CatalogOverride;
use crate::policy::Policy;
use crate::util::one_line;

/// Default location of the config file, read only when present.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/presize/config.toml";

/// Errors reading the configuration or the environment.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {path}: {source}; fix its permissions or unset PRESIZE_CONFIG"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("config file {path} is world-writable; run `chmod o-w {path}` (presize refuses configs anyone can edit)")]
    WorldWritable { path: PathBuf },
    #[error("config file {path} is owned by uid {owner}; presize (uid {me}) only trusts a config owned by root or by itself: run `chown root {path}`")]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("{var}={value:?} is not valid: {expected}")]
    Env {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot determine where to keep the database: set PRESIZE_DB or HOME")]
    NoHome,
}

/// Where `presize run` runs jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// On this host, under a cgroup (the `cgroup` key picks which).
    #[default]
    Local,
    /// Submitted to a SLURM cluster with `sbatch`, settled from `sacct`.
    Slurm,
}

/// `[executor]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// `local` (default) or `slurm`.
    pub backend: BackendChoice,
    /// Cgroup backend to use.
    pub cgroup: CgroupChoice,
    /// Maximum number of tasks in a job's cgroup (stops fork bombs); 0 = no limit.
    pub pids_max: u64,
    /// cgroup v2: move other processes sharing presize's delegated cgroup into `supervisor`.
    pub v2_move_peers: crate::executor::cgroup::MovePeers,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Local,
            cgroup: CgroupChoice::Auto,
            pids_max: 4096,
            v2_move_peers: Default::default(),
        }
    }
}

/// `[admission]` section: the host memory budget shared by concurrent jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSection {
    /// Let the sum of caps exceed the budget by this factor while the sum of predicted peaks
    /// stays within it; 1.0 = off.
    pub burst_factor: f64,
    /// How often a waiting job looks again, in milliseconds.
    pub poll_ms: u64,
    /// Enter burst mode by itself when the queue or the newest forecast says demand exceeds
    /// the budget (see `executor::burst`).
    pub auto_burst: bool,
    /// Factor of an automatic burst.
    pub auto_burst_factor: f64,
    /// An automatic burst ends by itself after this many seconds.
    pub auto_burst_max_s: u64,
    /// No automatic burst starts within this many seconds of the end of the last burst.
    pub auto_burst_cool_down_s: u64,
    /// The queue's head must have waited this many seconds for the queue to count as demand
    /// over the budget.
    pub auto_burst_after_s: u64,
}

impl Default for AdmissionSection {
    fn default() -> Self {
        Self {
            burst_factor: 1.0,
            poll_ms: 200,
            auto_burst: false,
            auto_burst_factor: 1.2,
            auto_burst_max_s: 1800,
            auto_burst_cool_down_s: 3600,
            auto_burst_after_s: 30,
        }
    }
}

impl AdmissionSection {
    /// Check the automatic burst keys (`burst_factor` is checked with the other sections).
    pub fn validate(&self) -> Result<(), String> {
        if self.auto_burst {
            crate::executor::burst::validate(
                self.auto_burst_factor,
                std::time::Duration::from_secs(self.auto_burst_max_s),
            )
            .map_err(|e| format!("[admission] auto_burst_factor / auto_burst_max_s: {e}"))?;
        }
        Ok(())
    }

    /// The automatic burst rule, when `auto_burst` is on.
    pub fn auto_burst_rule(&self) -> Option<crate::executor::burst::AutoBurst> {
        self.auto_burst.then(|| crate::executor::burst::AutoBurst {
            factor: self.auto_burst_factor,
            max_duration: std::time::Duration::from_secs(self.auto_burst_max_s),
            cool_down: std::time::Duration::from_secs(self.auto_burst_cool_down_s),
            after_wait: std::time::Duration::from_secs(self.auto_burst_after_s),
        })
    }
}

/// `[slurm]` section: how jobs are submitted when the backend is `slurm`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition` (default: the cluster's default partition).
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// Further `sbatch` arguments, one per element (e.g. `["--qos=short"]`).
    pub sbatch_args: Vec<String>,
    /// Batch scripts and the wrapper's peak reports (default: `slurm/` beside the database).
    /// Must be on a file system the compute nodes share.
    pub spool_dir: Option<PathBuf>,
    /// The `presize` binary the batch script runs the job under to measure its peak
    /// (default: this binary, or `presize` in PATH); `""` runs the command directly.
    pub wrapper: Option<PathBuf>,
    /// How often `run --wait` asks `sacct`, in milliseconds (default 1000).
    pub poll_ms: Option<u64>,
}

/// `[features]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Scripts larger than this are scanned up to this size and flagged.
    pub max_script_bytes: u64,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            max_script_bytes: 8 * 1024 * 1024,
        }
    }
}

/// `[store]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// How long a writer waits for another before failing, in milliseconds.
    pub busy_timeout_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            busy_timeout_ms: 30_000,
        }
    }
}

/// `[model]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Target coverage of the calibrated upper bounds.
    pub coverage: f64,
    /// `retrain` trains and evaluates on at most this many of the latest usable settled
    /// rows (older ones are not read), which bounds its time and memory at any store size.
    pub max_train_rows: usize,
}

/// Default of `[model] max_train_rows`.
pub const DEFAULT_MAX_TRAIN_ROWS: usize = 50_000;

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            coverage: 0.95,
            max_train_rows: DEFAULT_MAX_TRAIN_ROWS,
        }
    }
}

/// The config file as written by the operator; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub policy: Policy,
    pub catalog: BTreeMap<String, CatalogOverride>,
    pub executor: ExecutorConfig,
    pub admission: AdmissionSection,
    pub features: FeaturesConfig,
    pub model: ModelConfig,
    pub store: StoreSection,
    pub slurm: SlurmConfig,
    pub forecast: crate::forecast::ForecastConfig,
}

impl ConfigFile {
    /// Parse a config file; unknown keys are errors so typos do not pass silently.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                reason: "not a regular file".into(),
            });
        }
        if is_world_writable(&meta) {
            return Err(ConfigError::WorldWritable {
                path: path.to_owned(),
            });
        }
        {
            use std::os::unix::fs::MetadataExt;
            let me = nix::unistd::geteuid().as_raw();
            if meta.uid() != 0 && meta.uid() != me {
                return Err(ConfigError::ForeignOwner {
                    path: path.to_owned(),
                    owner: meta.uid(),
                    me,
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: one_line(&e.to_string()),
        })?;
        cfg.policy
            .validate()
            .and_then(|()| cfg.validate_sections())
            .map_err(|reason| ConfigError::Parse {
                path: path.to_owned(),
                reason,
            })?;
        Ok(cfg)
    }

    /// Values serde accepts but presize cannot use (NaN, infinities, out-of-range shares).
    fn validate_sections(&self) -> Result<(), String> {
        let burst = self.admission.burst_factor;
        if !(burst.is_finite() && (1.0..=100.0).contains(&burst)) {
            return Err(format!(
                "[admission] burst_factor = {burst}: give a number from 1.0 (off) to 100"
            ));
        }
        let cov = self.model.coverage;
        if !(cov.is_finite() && cov > 0.0 && cov < 1.0) {
            return Err(format!(
                "[model] coverage = {cov}: give a share between 0 and 1 (e.g. 0.95)"
            ));
        }
        if self.model.max_train_rows < 20 {
            return Err(format!(
                "[model] max_train_rows = {} is below 20, the fewest rows retrain trains on",
                self.model.max_train_rows
            ));
        }
        self.admission.validate()?;
        self.forecast.validate()
    }
}

/// Fully resolved settings used by every command.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db_path: PathBuf,
    pub model_dir: PathBuf,
    pub dry_run: bool,
    /// Host memory budget in MB (already resolved from 90 % of physical memory when unset).
    pub host_budget_mb: u64,
    pub config_path: Option<PathBuf>,
    pub file: ConfigFile,
}

impl Settings {
    /// Resolve settings from the process environment and the config file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Resolve settings from a variable lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let (config_path, file) = match get("PRESIZE_CONFIG").filter(|s| !s.is_empty()) {
            Some(p) => {
                let p = PathBuf::from(p);
                (Some(p.clone()), ConfigFile::load(&p)?)
            }
            None => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                if p.exists() {
                    (Some(p.to_owned()), ConfigFile::load(p)?)
                } else {
                    (None, ConfigFile::default())
                }
            }
        };
        let data_dir = || -> Result<PathBuf, ConfigError> {
            if let Some(x) = get("XDG_DATA_HOME").filter(|s| s.starts_with('/')) {
                return Ok(PathBuf::from(x).join("presize"));
            }
            match get("HOME").filter(|s| !s.is_empty()) {
                Some(h) => Ok(PathBuf::from(h).join(".local/share/presize")),
                None => Ok(PathBuf::from("/var/lib/presize")),
            }
        };
        let db_path = match get("PRESIZE_DB").filter(|s| !s.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => data_dir()?.join("presize.db"),
        };
        let model_dir = match get("PRESIZE_MODEL_DIR").filter(|s| !s.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => data_dir()?.join("models"),
        };
        let dry_run = match get("PRESIZE_DRY_RUN") {
            None => false,
            Some(v) => parse_bool(&v).ok_or(ConfigError::Env {
                var: "PRESIZE_DRY_RUN",
                value: v.clone(),
                expected: "use 1/true/yes/on or 0/false/no/off",
            })?,
        };
        let env_budget = match get("PRESIZE_HOST_BUDGET_MB") {
            None => None,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(ConfigError::Env {
                        var: "PRESIZE_HOST_BUDGET_MB",
                        value: v.clone(),
                        expected: "a positive whole number of megabytes",
                    })
                }
            },
        };
        let host_budget_mb = env_budget
            .or((file.policy.host_budget_mb > 0).then_some(file.policy.host_budget_mb))
            .unwrap_or_else(default_host_budget_mb);
        Ok(Settings {
            db_path,
            model_dir,
            dry_run,
            host_budget_mb,
            config_path,
            file,
        })
    }

    /// The limits policy in force.
    pub fn policy(&self) -> &Policy {
        &self.file.policy
    }

    /// Open the database with the configured busy timeout.
    ///
    /// Rows it inserts record this executor's identity (see `executor::owner`).
    pub fn open_store(&self) -> Result<crate::store::Store, crate::store::StoreError> {
        let mut store = crate::store::Store::open_with_timeout(
            &self.db_path,
            std::time::Duration::from_millis(self.file.store.busy_timeout_ms.max(1)),
        )?;
        store.set_writer(|| {
            let me = crate::executor::owner::Identity::current();
            crate::store::WriterIdentity {
                boot_id: me.boot_id.clone(),
                pidns: me.pidns,
                token: Some(me.token.clone()),
            }
        });
        Ok(store)
    }
}

/// 90 % of physical memory (or of the memory limit of our own cgroup, if smaller), in MB.
pub fn default_host_budget_mb() -> u64 {
    let total = physical_memory_mb().unwrap_or(4096);
    let total = match own_cgroup_memory_limit_mb() {
        Some(l) if l < total => l,
        _ => total,
    };
    (total as f64 * 0.9) as u64
}

/// MemTotal from /proc/meminfo, in MB (10^6 bytes is not used: MB here means MiB).
pub fn physical_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn own_cgroup_memory_limit_mb() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if ctrls.is_empty() {
            Path::new("/sys/fs/cgroup")
                .join(path.trim_start_matches('/'))
                .join("memory.max")
        } else if ctrls.split(',').any(|c| c == "memory") {
            Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join("memory.limit_in_bytes")
        } else {
            continue;
        };
        if let Ok(v) = std::fs::read_to_string(&file) {
            if let Ok(bytes) = v.trim().parse::<u64>() {
                // v1 reports "no limit" as a huge page-aligned number.
                if bytes < (1 << 50) {
                    return Some(bytes / (1024 * 1024));
                }
            }
        }
    }
    None
}

/// Parse the usual spellings of a boolean.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn is_world_writable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o002 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn env_values_are_validated() {
        let base = [("HOME", "/tmp/h"), ("PRESIZE_CONFIG", "")];
        assert!(settings(&base).is_ok());
        let e = settings(&[base[0], ("PRESIZE_DRY_RUN", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("PRESIZE_DRY_RUN"), "{e}");
        for bad in ["-5", "abc", "0", ""] {
            let e = settings(&[base[0], ("PRESIZE_HOST_BUDGET_MB", bad)]).unwrap_err();
            assert!(e.to_string().contains("PRESIZE_HOST_BUDGET_MB"), "{e}");
        }
        let s = settings(&[base[0], ("PRESIZE_HOST_BUDGET_MB", "300")]).unwrap();
        assert_eq!(s.host_budget_mb, 300);
        assert_eq!(
            s.db_path,
            PathBuf::from("/tmp/h/.local/share/presize/presize.db")
        );
        let s = settings(&[base[0], ("PRESIZE_DRY_RUN", "TRUE")]).unwrap();
        assert!(s.dry_run);
    }

    #[test]
    fn config_file_unknown_keys_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[policy]\nmem_headroom = 2.0\n").unwrap();
        let c = ConfigFile::load(&p).unwrap();
        assert_eq!(c.policy.mem_headroom, 2.0);
        assert_eq!(c.policy.wall_headroom, 1.3);
        std::fs::write(&p, "[policy]\nmem_headrom = 2.0\n").unwrap();
        let e = ConfigFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("mem_headrom") && !e.contains('\n'), "{e}");
        std::fs::write(&p, "[policy\n").unwrap();
        assert!(ConfigFile::load(&p).is_err());
        std::fs::write(&p, "[policy]\nmem_headroom = -1.0\n").unwrap();
        assert!(ConfigFile::load(&p).is_err());
    }
}
