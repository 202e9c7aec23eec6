//! Bad input: one-line error, documented exit code, no panic, store unchanged.

use crate::helper::{assert_clean_error, fixture, Env};

/// Seed the store with one settled row so "unchanged" means something.
fn seeded() -> Env {
    let env = Env::new();
    let o = env.run(&["run", "-q", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::helper::stderr(&o));
    assert_eq!(env.count(), 1);
    env
}

#[test]
fn bad_scripts_exit_2_and_leave_the_store_alone() {
    let env = seeded();
    let dir = env.path("adir");
    std::fs::create_dir(&dir).unwrap();
    let bin = env.path("blob.py");
    std::fs::write(&bin, b"import os\n\x00\x01\x02binary").unwrap();
    let missing = env.path("missing.py");
    let malformed = fixture("malformed.ipynb");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["predict".into(), missing.display().to_string()],
            "missing.py",
        ),
        (vec!["predict".into(), dir.display().to_string()], "adir"),
        (vec!["predict".into(), bin.display().to_string()], "blob.py"),
        (
            vec!["predict".into(), malformed.display().to_string()],
            "malformed.ipynb",
        ),
        (
            vec![
                "run".into(),
                "--".into(),
                "python3".into(),
                missing.display().to_string(),
            ],
            "missing.py",
        ),
        (
            vec![
                "run".into(),
                "--".into(),
                "python3".into(),
                bin.display().to_string(),
            ],
            "blob.py",
        ),
        (
            vec![
                "run".into(),
                "--".into(),
                "python3".into(),
                malformed.display().to_string(),
            ],
            "malformed.ipynb",
        ),
        (vec!["run".into()], "no command"),
        (vec!["run".into(), "--".into()], "no command"),
        (
            vec!["run".into(), "--".into(), "no-such-program-xyz".into()],
            "no-such-program-xyz",
        ),
        (
            vec!["run".into(), "--".into(), dir.display().to_string()],
            "directory",
        ),
        (
            vec![
                "run".into(),
                "--input".into(),
                env.path("nope.csv").display().to_string(),
                "--".into(),
                "true".into(),
            ],
            "nope.csv",
        ),
    ];
    for (args, mention) in cases {
        let o = env.cmd().args(&args).output().unwrap();
        assert_clean_error(&o, 2, mention);
    }
    assert_eq!(env.count(), 1, "the store changed");
    assert!(env.integrity_ok());
}

#[test]
fn invalid_environment_values() {
    let env = seeded();
    for (k, v) in [
        ("PRESIZE_DRY_RUN", "maybe"),
        ("PRESIZE_HOST_BUDGET_MB", "-5"),
        ("PRESIZE_HOST_BUDGET_MB", "abc"),
    ] {
        let o = env
            .cmd()
            .env(k, v)
            .args(["run", "--", "true"])
            .output()
            .unwrap();
        assert_clean_error(&o, 2, k);
    }
    std::fs::write(&env.config, "[policy]\nmem_hedroom = 3\n").unwrap();
    let o = env.run(&["run", "--", "true"]);
    assert_clean_error(&o, 2, "mem_hedroom");
    std::fs::write(&env.config, "[policy\n").unwrap();
    let o = env.run(&["stats"]);
    assert_clean_error(&o, 2, "config");
    assert_eq!(env.count(), 1);
}

#[test]
fn store_errors_exit_4() {
    let env = Env::new();
    std::fs::create_dir_all(env.db.parent().unwrap()).unwrap();
    std::fs::write(&env.db, vec![0x5a; 4096]).unwrap();
    let o = env.run(&["run", "--", "true"]);
    assert_clean_error(&o, 4, "presize.db");
    let o = env.run(&["stats"]);
    assert_clean_error(&o, 4, "presize.db");
}
