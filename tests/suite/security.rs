//! Security: no shell, ids that cannot escape, private files, another user for the job,
//! refused world-writable config and model dir, no secrets in the store.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::helper::{assert_clean_error, cgroup_dirs, stderr, stdout, Env};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn is_root() -> bool {
    // SAFETY: trivial libc call.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn commands_are_never_passed_through_a_shell() {
    let env = Env::new();
    let marker = env.path("pwned");
    let evil = format!("$(touch {m}); `touch {m}`; touch {m}", m = marker.display());
    let o = env
        .cmd()
        .args(["run", "-q", "--", "echo", &evil])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim_end(), evil, "the argument was altered");
    assert!(!marker.exists(), "a shell interpreted the argument");
    // The command is stored as an argv array, verbatim.
    let cmd: String = env
        .conn()
        .query_row("SELECT command FROM resource_prediction", [], |r| r.get(0))
        .unwrap();
    let argv: Vec<String> = serde_json::from_str(&cmd).unwrap();
    assert_eq!(argv, vec!["echo".to_string(), evil]);
}

#[test]
fn hostile_job_keys_cannot_escape_the_cgroup_or_model_dir() {
    let env = Env::new();
    for key in [
        "../../etc",
        "/sys/fs/cgroup/memory",
        "a/../../b\n",
        "presize-1-1",
    ] {
        let o = env.run(&["run", "-q", "--job-key", key, "--", "true"]);
        assert_eq!(o.status.code(), Some(0), "{key:?}: {}", stderr(&o));
    }
    let rows = env.rows();
    assert_eq!(rows.len(), 4);
    // Stored verbatim, used only as data.
    let keys: Vec<String> = env
        .conn()
        .prepare("SELECT job_key FROM resource_prediction ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(keys[0], "../../etc");
    // Nothing was created from the key anywhere.
    assert!(!env.path("etc").exists() && !env.models.join("../../etc").exists());
    assert!(cgroup_dirs("etc").is_empty() && cgroup_dirs("b\n").is_empty());
    // Cgroup names derive from numbers only:
    // presize-<executor pid>-<start ticks>-<pidns hex>-<random hex token>-<row id>.
    let names: Vec<Option<String>> = env
        .conn()
        .prepare("SELECT cgroup_name FROM resource_prediction")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for n in names.into_iter().flatten() {
        let rest = n.strip_prefix("presize-").expect("prefix");
        assert!(
            rest.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
            "cgroup name {n:?}"
        );
    }
}

#[test]
fn database_and_model_files_are_private() {
    let env = Env::new();
    // Enough rows for a forced retrain, so a model file is written too.
    for n in 0..6 {
        let code = format!("x = bytearray({} << 20)", n + 1);
        let o = env.run(&["run", "-q", "--job-key", "p", "--", "python3", "-c", &code]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let o = env.run(&["retrain", "--min-rows", "1", "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dir = env.db.parent().unwrap();
    assert_eq!(mode(dir), 0o700, "database directory");
    assert_eq!(mode(&env.db), 0o600, "database file");
    for side in ["-wal", "-shm"] {
        let p = env.db.with_file_name(format!("presize.db{side}"));
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{} is readable by others", p.display());
        }
    }
    assert_eq!(mode(&env.models), 0o700, "model directory");
    let mut files = 0;
    for e in std::fs::read_dir(&env.models).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            files += 1;
            assert_eq!(mode(&e.path()) & 0o077, 0, "{}", e.path().display());
        }
    }
    assert!(files >= 1, "no model file written");
}

#[test]
fn world_writable_config_is_refused_and_model_dir_ignored() {
    let env = Env::with_config("[policy]\nmem_headroom = 2.0\n");
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = env.run(&["run", "--", "true"]);
    assert_clean_error(&o, 2, "world-writable");
    assert_eq!(env.count(), 0, "a job ran under a config anyone can edit");
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o600)).unwrap();

    std::fs::create_dir_all(&env.models).unwrap();
    std::fs::set_permissions(&env.models, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = env.run(&[
        "predict",
        "--json",
        crate::helper::fixture("analysis.py").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("world-writable"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["source"], "prior",
        "a model from a world-writable dir was used"
    );
}

#[test]
fn environment_secrets_are_not_written_to_the_store() {
    let env = Env::new();
    let secret = "s3cr3t-9f8e7d6c5b4a";
    let o = env
        .cmd()
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("DB_PASSWORD", secret)
        .args(["run", "-q", "--", "sh", "-c", "test -n \"$DB_PASSWORD\""])
        .output()
        .unwrap();
    // The job itself still sees its environment.
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Checkpoint so everything is in the main file, then scan every byte of the store.
    env.conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let dir = env.db.parent().unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            let bytes = std::fs::read(e.path()).unwrap();
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "secret found in {}", e.path().display());
        }
    }
}

#[test]
fn a_job_started_by_root_runs_as_another_user() {
    if !is_root() {
        eprintln!("skipped: --user needs root");
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = env
        .cmd()
        .args(["run", "-q", "--user", "nobody", "--", "sh", "-c"])
        .arg("id -u; id -G; echo $HOME; touch /root/presize-user-test")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let text = stdout(&o);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("65534"), "{text}");
    let groups = lines.next().unwrap_or_default();
    assert!(
        !groups.split(' ').any(|g| g == "0"),
        "root's group kept: {groups}"
    );
    // The job could not write where only root may; its failure is its own exit code.
    assert_ne!(o.status.code(), Some(0));
    assert!(!std::path::Path::new("/root/presize-user-test").exists());
    let rows = env.rows();
    assert_eq!(rows[0].outcome.as_deref(), Some("failed"));
    // Unknown users and root are refused before anything runs or is recorded.
    let o = env.run(&["run", "--user", "no-such-user-xyz", "--", "true"]);
    assert_clean_error(&o, 2, "no-such-user-xyz");
    let o = env.run(&["run", "--user", "root", "--", "true"]);
    assert_clean_error(&o, 2, "root");
    assert_eq!(env.count(), 1);
}

#[test]
fn a_user_job_gets_a_reset_environment_and_the_users_path() {
    if !is_root() {
        eprintln!("skipped: --user needs root");
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A program that only root's PATH finds.
    let bin = env.path("rootbin");
    std::fs::create_dir_all(&bin).unwrap();
    let prog = bin.join("only-for-root");
    std::fs::write(&prog, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root_path = format!("{}:/usr/bin:/bin", bin.display());
    let o = env
        .cmd()
        .env("PATH", &root_path)
        .env("SECRET_TOKEN", "s3cret")
        .env("LD_PRELOAD", "/nonexistent.so")
        .env("LANG", "C.UTF-8")
        .args(["run", "-q", "--user", "nobody", "--", "env"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let vars: Vec<&str> = text.lines().collect();
    assert!(!text.contains("SECRET_TOKEN"), "{text}");
    assert!(!text.contains("LD_PRELOAD"), "{text}");
    assert!(!text.contains("PRESIZE_"), "{text}");
    assert!(
        vars.contains(&"PATH=/usr/local/bin:/usr/bin:/bin"),
        "{text}"
    );
    assert!(
        vars.contains(&"USER=nobody") && vars.contains(&"LOGNAME=nobody"),
        "{text}"
    );
    assert!(vars.contains(&"LANG=C.UTF-8"), "{text}");
    assert!(
        vars.iter()
            .any(|v| v.starts_with("HOME=") && *v != "HOME=/root"),
        "{text}"
    );
    // The program is looked up in the user's PATH, not root's.
    let o = env
        .cmd()
        .env("PATH", &root_path)
        .args(["run", "--user", "nobody", "--", "only-for-root"])
        .output()
        .unwrap();
    assert_clean_error(&o, 2, "only-for-root");
    let o = env
        .cmd()
        .env("PATH", &root_path)
        .args(["run", "-q", "--", "only-for-root"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
