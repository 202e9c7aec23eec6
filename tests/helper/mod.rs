//! Test fixtures: an isolated presize environment per test (temp DB, model dir, config).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;

pub mod history;

/// Path of a file under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Path of a file under the repository root.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// An isolated presize environment.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub models: PathBuf,
    pub config: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        Env::with_config("")
    }

    pub fn with_config(toml: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml).expect("write config");
        Env {
            db: dir.path().join("data/presize.db"),
            models: dir.path().join("data/models"),
            config,
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `presize` with this environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_presize"));
        c.env("PRESIZE_DB", &self.db)
            .env("PRESIZE_MODEL_DIR", &self.models)
            .env("PRESIZE_CONFIG", &self.config)
            .env("HOME", self.dir.path())
            .env_remove("PRESIZE_DRY_RUN")
            .env_remove("PRESIZE_HOST_BUDGET_MB")
            .env_remove("XDG_DATA_HOME");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn presize")
    }

    pub fn conn(&self) -> Connection {
        Connection::open(&self.db).expect("open db")
    }

    pub fn count(&self) -> i64 {
        if !self.db.exists() {
            return 0;
        }
        self.conn()
            .query_row("SELECT count(*) FROM resource_prediction", [], |r| r.get(0))
            .unwrap_or(0)
    }

    /// Reservations held in the admission ledger (waiting or running).
    pub fn reservations(&self) -> i64 {
        self.conn()
            .query_row("SELECT count(*) FROM reservation", [], |r| r.get(0))
            .expect("count reservations")
    }

    pub fn integrity_ok(&self) -> bool {
        let s: String = self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        s == "ok"
    }

    /// All rows, oldest first.
    pub fn rows(&self) -> Vec<RowView> {
        self.try_rows().expect("read rows")
    }

    /// True once the first row has been started (tolerates a database still being created).
    pub fn first_started(&self) -> bool {
        self.db.exists()
            && self
                .try_rows()
                .ok()
                .and_then(|r| r.first().cloned())
                .is_some_and(|r| r.started_at.is_some())
    }

    /// All rows, or the error (e.g. while another process is still creating the schema).
    pub fn try_rows(&self) -> rusqlite::Result<Vec<RowView>> {
        let conn = Connection::open(&self.db)?;
        // `features` as the JSON object it stands for (stored compactly since V11).
        let dec = presize::store::features::Decoder::new(&conn, &[])?;
        let mut st = conn.prepare(
            "SELECT id, job_id, outcome, attempt, applied_memory_mb, applied_timeout_s,
                        memory_limit_mb, timeout_s, enforced, memory_enforced, dry_run,
                        actual_rss_mb, actual_cpu_s, actual_wall_s, exit_code, settled_at,
                        started_at, predicted_at, model_version, features, backend
                 FROM resource_prediction ORDER BY id",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(RowView {
                    id: r.get(0)?,
                    job_id: r.get(1)?,
                    outcome: r.get(2)?,
                    attempt: r.get(3)?,
                    applied_memory_mb: r.get(4)?,
                    applied_timeout_s: r.get(5)?,
                    memory_limit_mb: r.get(6)?,
                    timeout_s: r.get(7)?,
                    enforced: r.get::<_, i64>(8)? != 0,
                    memory_enforced: r.get::<_, i64>(9)? != 0,
                    dry_run: r.get::<_, i64>(10)? != 0,
                    actual_rss_mb: r.get(11)?,
                    actual_cpu_s: r.get(12)?,
                    actual_wall_s: r.get(13)?,
                    exit_code: r.get(14)?,
                    settled_at: r.get(15)?,
                    started_at: r.get(16)?,
                    predicted_at: r.get(17)?,
                    model_version: r.get(18)?,
                    features: dec
                        .to_json(r.get_ref(19)?)
                        .map_or_else(|e| format!("unreadable: {e}"), |v| v.to_string()),
                    backend: r.get(20)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>();
        rows
    }
}

#[derive(Debug, Clone)]
pub struct RowView {
    pub id: i64,
    pub job_id: String,
    pub outcome: Option<String>,
    pub attempt: i64,
    pub applied_memory_mb: Option<i64>,
    pub applied_timeout_s: Option<i64>,
    pub memory_limit_mb: Option<i64>,
    pub timeout_s: Option<i64>,
    pub enforced: bool,
    pub memory_enforced: bool,
    pub dry_run: bool,
    pub actual_rss_mb: Option<f64>,
    pub actual_cpu_s: Option<f64>,
    pub actual_wall_s: Option<f64>,
    pub exit_code: Option<i64>,
    pub settled_at: Option<String>,
    pub started_at: Option<String>,
    pub predicted_at: String,
    pub model_version: String,
    pub features: String,
    pub backend: Option<String>,
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert a clean failure: the given exit code, one line on stderr, no panic.
pub fn assert_clean_error(o: &Output, code: i32, must_mention: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(
        err.to_lowercase().contains(&must_mention.to_lowercase()),
        "{err:?} does not mention {must_mention:?}"
    );
}

/// Is a process gone (absent or a zombie)?
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
    }
}

/// Can this machine enforce memory caps with cgroups (root + a writable memory hierarchy)?
pub fn cgroups_available() -> Result<(), String> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        || Path::new("/sys/fs/cgroup/memory").is_dir();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v1 || v2 {
        Ok(())
    } else {
        Err("no cgroup memory controller mounted".into())
    }
}

/// True when the cgroup tests can run here; otherwise prints why and returns false, or panics
/// when `PRESIZE_REQUIRE_CGROUP_TESTS=1` (CI as root must not skip them).
pub fn cgroup_tests_can_run() -> bool {
    match cgroups_available() {
        Ok(()) => true,
        Err(why) => {
            if std::env::var_os("PRESIZE_REQUIRE_CGROUP_TESTS").is_some_and(|v| v == "1") {
                panic!("cgroup tests required but cannot run: {why}");
            }
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// Every directory under /sys/fs/cgroup whose name starts with `prefix`.
pub fn cgroup_dirs(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![Path::new("/sys/fs/cgroup").to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    found.push(p.display().to_string());
                }
                stack.push(p);
            }
        }
    }
    found
}

/// Cgroup directories made by the presize process `pid` (names
/// `presize-<pid>-<start>-<pidns hex>-<token>-<row>`).
pub fn cgroup_dirs_of(pid: u32) -> Vec<String> {
    cgroup_dirs("presize-")
        .into_iter()
        .filter(|d| {
            let name = d.rsplit('/').next().unwrap_or_default();
            name.split('-').nth(1) == Some(pid.to_string().as_str())
        })
        .collect()
}
