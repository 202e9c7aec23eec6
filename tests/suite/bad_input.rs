//! The bad-input matrix: every case gets a one-line error naming the problem (or the right
//! outcome for a job), the documented exit code, no panic, and the store's earlier rows
//! intact (`PRAGMA integrity_check` = ok).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;

use presize::features::{Catalog, FeatureVector, Schema};
use presize::job::Outcome;
use presize::model::trained::{TrainConfig, TrainedModel, TrainingRow};

use crate::helper::{assert_clean_error, fixture, stderr, Env};

enum Expect {
    /// One-line error, this exit code, mentioning this text.
    Error(i32, &'static str),
    /// This exit code; stderr contains this text (if given); the job's row has this outcome.
    Job(i32, Option<&'static str>, Option<&'static str>),
}

struct Case {
    name: &'static str,
    make: Box<dyn Fn(&Env) -> Command + Send + Sync>,
    expect: Expect,
    /// The case breaks the database itself: skip the "earlier rows intact" check.
    breaks_db: bool,
}

fn case(
    name: &'static str,
    expect: Expect,
    make: impl Fn(&Env) -> Command + Send + Sync + 'static,
) -> Case {
    Case {
        name,
        make: Box::new(make),
        expect,
        breaks_db: false,
    }
}

fn predict(env: &Env, script: &str) -> Command {
    let mut c = env.cmd();
    c.args(["predict", "--json", script]);
    c
}

fn run(env: &Env, args: &[&str]) -> Command {
    let mut c = env.cmd();
    c.arg("run").args(args);
    c
}

fn file(env: &Env, name: &str, bytes: &[u8]) -> String {
    let p = env.path(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

/// A real trained model file in the env's model dir, promoted; returns its path.
fn model_file(env: &Env) -> std::path::PathBuf {
    let schema = Arc::new(Schema::for_catalog(&Catalog::builtin()));
    let rows: Vec<TrainingRow> = (0..60)
        .map(|i| {
            let mut f = BTreeMap::new();
            f.insert("lang_python".to_string(), 1.0);
            f.insert("input_total_mb".to_string(), (i % 10) as f64);
            TrainingRow {
                id: i,
                features: FeatureVector::from_map(schema.clone(), &f).values,
                outcome: Outcome::Ok,
                cpu_s: Some(1.0 + (i % 10) as f64),
                rss_mb: Some(50.0 + 5.0 * (i % 10) as f64),
                wall_s: Some(1.0 + (i % 10) as f64),
                memory_cap_mb: None,
                timeout_s: None,
            }
        })
        .collect();
    let m = TrainedModel::train(
        &rows,
        &schema,
        &TrainConfig::default(),
        "gbt-fixture".into(),
        &mut |_| {},
    )
    .unwrap();
    presize::model::save_model(&env.models, &m, true).unwrap()
}

fn cases() -> Vec<Case> {
    let py = fixture("analysis.py").display().to_string();
    let mut v = vec![
        case("missing script", Expect::Error(2, "missing.py"), |e| {
            predict(e, &e.path("missing.py").display().to_string())
        }),
        case("script is a directory", Expect::Error(2, "adir"), |e| {
            std::fs::create_dir_all(e.path("adir")).unwrap();
            predict(e, &e.path("adir").display().to_string())
        }),
        case("binary script", Expect::Error(2, "blob.py"), |e| {
            predict(e, &file(e, "blob.py", b"\x7fELF\x00\x01\x02\x00binary"))
        }),
        case("empty script", Expect::Job(0, None, None), |e| {
            predict(e, &file(e, "empty.py", b""))
        }),
        case("non-UTF-8 script", Expect::Job(0, None, None), |e| {
            predict(
                e,
                &file(e, "latin1.py", b"# caf\xe9\nimport numpy\n\xff\xfe = 1\n"),
            )
        }),
        case("100 MB script", Expect::Job(0, None, None), |e| {
            let line = b"x = [i for i in range(10)]  # filler line\n";
            let body: Vec<u8> = line.repeat(100 * 1024 * 1024 / line.len());
            predict(e, &file(e, "huge.py", &body))
        }),
        case(
            "NUL bytes past the sniffed head",
            Expect::Job(0, None, None),
            |e| {
                let mut body = b"import pandas\n".repeat(1000);
                body.extend_from_slice(b"s = '\x00\x00'\n");
                predict(e, &file(e, "nul.py", &body))
            },
        ),
        case("1 MB single line", Expect::Job(0, None, None), |e| {
            let mut body = b"x = ".to_vec();
            body.extend(b"1+".repeat(512 * 1024));
            body.extend_from_slice(b"1\n");
            predict(e, &file(e, "oneline.py", &body))
        }),
        case(
            "malformed notebook",
            Expect::Error(2, "malformed.ipynb"),
            |e| predict(e, &fixture("malformed.ipynb").display().to_string()),
        ),
        case(
            "notebook without code cells",
            Expect::Job(0, None, None),
            |e| {
                predict(
                e,
                &file(e, "prose.ipynb", br##"{"cells":[{"cell_type":"markdown","source":["# hi"]}],"metadata":{},"nbformat":4,"nbformat_minor":5}"##),
            )
            },
        ),
        case(
            "Rmd with an unterminated chunk",
            Expect::Job(0, None, None),
            |e| {
                predict(
                    e,
                    &file(
                        e,
                        "open.Rmd",
                        b"text\n```{r}\nlibrary(data.table)\nx <- 1\n",
                    ),
                )
            },
        ),
        case("--input missing", Expect::Error(2, "nope.csv"), move |e| {
            let mut c = e.cmd();
            c.args([
                "predict",
                "--input",
                &e.path("nope.csv").display().to_string(),
                &py,
            ]);
            c
        }),
        case("--input is a FIFO", Expect::Error(2, "fifo"), |e| {
            let p = e.path("fifo");
            let ok = Command::new("mkfifo").arg(&p).status().unwrap().success();
            assert!(ok);
            run(e, &["--input", &p.display().to_string(), "--", "true"])
        }),
        case(
            "PRESIZE_DRY_RUN=maybe",
            Expect::Error(2, "PRESIZE_DRY_RUN"),
            |e| {
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_DRY_RUN", "maybe");
                c
            },
        ),
        case(
            "PRESIZE_HOST_BUDGET_MB=-5",
            Expect::Error(2, "PRESIZE_HOST_BUDGET_MB"),
            |e| {
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_HOST_BUDGET_MB", "-5");
                c
            },
        ),
        case(
            "PRESIZE_HOST_BUDGET_MB=abc",
            Expect::Error(2, "PRESIZE_HOST_BUDGET_MB"),
            |e| {
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_HOST_BUDGET_MB", "abc");
                c
            },
        ),
        case("unparsable config", Expect::Error(2, "config"), |e| {
            let p = file(e, "bad.toml", b"[policy\n");
            let mut c = run(e, &["--", "true"]);
            c.env("PRESIZE_CONFIG", p);
            c
        }),
        case("unknown config key", Expect::Error(2, "mem_hedroom"), |e| {
            let p = file(e, "typo.toml", b"[policy]\nmem_hedroom = 3\n");
            let mut c = run(e, &["--", "true"]);
            c.env("PRESIZE_CONFIG", p);
            c
        }),
        case(
            "corrupt model file",
            Expect::Job(0, Some("unreadable"), None),
            |e| {
                let p = model_file(e);
                std::fs::write(p, b"\x00\x01garbage").unwrap();
                run(e, &["--", "true"])
            },
        ),
        case(
            "truncated model file",
            Expect::Job(0, Some("unreadable"), None),
            |e| {
                let p = model_file(e);
                let text = std::fs::read(&p).unwrap();
                std::fs::write(&p, &text[..text.len() / 3]).unwrap();
                run(e, &["--", "true"])
            },
        ),
        case(
            "model of another feature schema",
            Expect::Job(0, Some("schema"), None),
            |e| {
                let p = model_file(e);
                let text = std::fs::read_to_string(&p).unwrap();
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let hash = v["schema"]["hash"].as_str().unwrap().to_string();
                std::fs::write(&p, text.replace(&hash, "0123456789abcdef")).unwrap();
                run(e, &["--", "true"])
            },
        ),
        case(
            "model of a future format",
            Expect::Job(0, Some("format version"), None),
            |e| {
                let p = model_file(e);
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::write(
                    &p,
                    text.replacen("\"format_version\":1", "\"format_version\":7", 1),
                )
                .unwrap();
                run(e, &["--", "true"])
            },
        ),
        case(
            "command does not exist",
            Expect::Error(2, "no-such-program-xyz"),
            |e| run(e, &["--", "no-such-program-xyz"]),
        ),
        case(
            "command is a directory",
            Expect::Error(2, "directory"),
            |e| {
                std::fs::create_dir_all(e.path("bindir")).unwrap();
                run(e, &["--", &e.path("bindir").display().to_string()])
            },
        ),
        case(
            "command is not executable",
            Expect::Error(2, "not executable"),
            |e| run(e, &["--", &file(e, "noexec.sh", b"#!/bin/sh\necho hi\n")]),
        ),
        case("empty command", Expect::Error(2, "no command"), |e| {
            run(e, &["--"])
        }),
        case(
            "job writes 1 GB to stdout",
            Expect::Job(0, None, Some("ok")),
            |e| run(e, &["-q", "--", "head", "-c", "1073741824", "/dev/zero"]),
        ),
        case(
            "job closes stdout early",
            Expect::Job(0, None, Some("ok")),
            |e| run(e, &["-q", "--", "sh", "-c", "exec >&-; sleep 0.1; exit 0"]),
        ),
        case(
            "job dies by a signal",
            Expect::Job(128 + 9, None, Some("failed")),
            |e| run(e, &["-q", "--", "sh", "-c", "kill -KILL $$"]),
        ),
        case(
            "job ignores SIGTERM",
            Expect::Job(124, None, Some("timed_out")),
            |e| {
                let p = file(e, "grace.toml", b"[policy]\ngrace_period_s = 1\n");
                let mut c = run(
                    e,
                    &[
                        "-q",
                        "--timeout",
                        "1",
                        "--",
                        "sh",
                        "-c",
                        "trap '' TERM; sleep 30",
                    ],
                );
                c.env("PRESIZE_CONFIG", p);
                c
            },
        ),
        case(
            "--memory-mb above i64::MAX",
            Expect::Error(2, "--memory-mb 9223372036854775808"),
            |e| run(e, &["--memory-mb", "9223372036854775808", "--", "true"]),
        ),
        case(
            "--memory-mb u64::MAX",
            Expect::Error(2, "--memory-mb"),
            |e| run(e, &["--memory-mb", "18446744073709551615", "--", "true"]),
        ),
        case(
            "--memory-mb above the host budget",
            Expect::Error(2, "host memory budget"),
            |e| {
                let mut c = run(e, &["--memory-mb", "1001", "--", "true"]);
                c.env("PRESIZE_HOST_BUDGET_MB", "1000");
                c
            },
        ),
        case("--memory-mb 0", Expect::Error(2, "--memory-mb 0"), |e| {
            run(e, &["--memory-mb", "0", "--", "true"])
        }),
        case("--timeout u64::MAX", Expect::Error(2, "--timeout"), |e| {
            run(e, &["--timeout", "18446744073709551615", "--", "true"])
        }),
        case("--timeout 0", Expect::Error(2, "--timeout 0"), |e| {
            run(e, &["--timeout", "0", "--", "true"])
        }),
        case(
            "burst_factor = nan",
            Expect::Error(2, "burst_factor"),
            |e| {
                let p = file(e, "nan.toml", b"[admission]\nburst_factor = nan\n");
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_CONFIG", p);
                c
            },
        ),
        case(
            "burst_factor = inf",
            Expect::Error(2, "burst_factor"),
            |e| {
                let p = file(e, "inf.toml", b"[admission]\nburst_factor = inf\n");
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_CONFIG", p);
                c
            },
        ),
        case("coverage = 2", Expect::Error(2, "coverage"), |e| {
            let p = file(e, "cov.toml", b"[model]\ncoverage = 2\n");
            let mut c = run(e, &["--", "true"]);
            c.env("PRESIZE_CONFIG", p);
            c
        }),
        case(
            "config owned by another user",
            Expect::Error(2, "owned by uid 65534"),
            |e| {
                let p = file(e, "theirs.toml", b"");
                // SAFETY: chown(2) on a file this test created (the suite runs as root).
                let c_path = std::ffi::CString::new(p.clone()).unwrap();
                unsafe { libc::chown(c_path.as_ptr(), 65534, 65534) };
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_CONFIG", p);
                c
            },
        ),
        case(
            "config path with a newline",
            Expect::Error(2, "no-such\\nconfig"),
            |e| {
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_CONFIG", e.path("no-such\nconfig.toml"));
                c
            },
        ),
        case(
            "PRESIZE_DB=/dev/null",
            Expect::Error(4, "not a regular file"),
            |e| {
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_DB", "/dev/null");
                c
            },
        ),
    ];
    let mut db_cases = vec![
        case(
            "DB in a missing directory",
            Expect::Job(0, None, None),
            |e| {
                let mut c = run(e, &["-q", "--", "true"]);
                c.env("PRESIZE_DB", e.path("new/deeper/p.db"));
                c
            },
        ),
        case(
            "DB path under a regular file",
            Expect::Error(4, "hostname"),
            |e| {
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_DB", "/etc/hostname/p.db");
                c
            },
        ),
        case(
            "DB in a read-only filesystem",
            Expect::Error(4, "/proc"),
            |e| {
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_DB", "/proc/presize-test.db");
                c
            },
        ),
        case("corrupt DB file", Expect::Error(4, "corrupt.db"), |e| {
            let p = file(e, "corrupt.db", &[0x5a; 8192]);
            let mut c = run(e, &["--", "true"]);
            c.env("PRESIZE_DB", p);
            c
        }),
        case(
            "DB locked longer than the busy timeout",
            Expect::Error(4, "locked"),
            |e| {
                let cfg = file(e, "short.toml", b"[store]\nbusy_timeout_ms = 300\n");
                // Another process holds the write lock for 3 s.
                let db = e.db.display().to_string();
                Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
                     c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(3)",
                    &db,
                ])
                .stdout(Stdio::piped())
                .spawn()
                .map(|mut ch| {
                    use std::io::Read;
                    let mut buf = [0u8; 6];
                    let _ = ch.stdout.as_mut().unwrap().read_exact(&mut buf);
                    std::mem::forget(ch);
                })
                .unwrap();
                let mut c = run(e, &["--", "true"]);
                c.env("PRESIZE_CONFIG", cfg);
                c
            },
        ),
    ];
    for c in &mut db_cases {
        c.breaks_db = true;
    }
    v.extend(db_cases);
    v
}

#[test]
fn bad_input_matrix() {
    let cases = cases();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    // The cases are independent (each has its own store): four at a time.
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while let Some(c) =
                    cases.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    // The panic itself is printed by the hook; name the case beside it.
                    let r =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_case(c)));
                    assert!(r.is_ok(), "case {:?} failed", c.name);
                }
            });
        }
    });
}

fn check_case(c: &Case) {
    let env = Env::new();
    // An earlier, settled row that must survive every case.
    let o = env.run(&["run", "-q", "--job-key", "earlier", "--", "true"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}: seeding: {}",
        c.name,
        stderr(&o)
    );
    let before = env.rows();
    let mut cmd = (c.make)(&env);
    let o = cmd.stdout(Stdio::null()).output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{}: panic: {err}", c.name);
    match c.expect {
        Expect::Error(code, mention) => {
            eprintln!("case {:?}: {}", c.name, err.trim());
            assert_clean_error(&o, code, mention);
        }
        Expect::Job(code, mention, outcome) => {
            assert_eq!(o.status.code(), Some(code), "{}: {err}", c.name);
            if let Some(m) = mention {
                assert!(err.contains(m), "{}: {err:?} lacks {m:?}", c.name);
            }
            if let Some(want) = outcome {
                let rows = env.rows();
                let last = rows.last().unwrap();
                assert_eq!(last.outcome.as_deref(), Some(want), "{}", c.name);
            }
        }
    }
    if !c.breaks_db {
        let after = env.rows();
        assert!(after.len() >= before.len(), "{}: rows lost", c.name);
        assert_eq!(after[0].outcome, before[0].outcome, "{}", c.name);
        assert_eq!(after[0].settled_at, before[0].settled_at, "{}", c.name);
        assert!(env.integrity_ok(), "{}: integrity", c.name);
    }
}

#[test]
fn dev_null_as_database_creates_nothing_in_dev() {
    let env = Env::new();
    let leftovers = [
        "/dev/null-journal",
        "/dev/null-wal",
        "/dev/null.migrate-lock",
    ];
    for p in leftovers {
        // Left there by an older presize; not ours to keep.
        let _ = std::fs::remove_file(p);
    }
    let o = env
        .cmd()
        .env("PRESIZE_DB", "/dev/null")
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_clean_error(&o, 4, "not a regular file");
    for p in leftovers {
        assert!(!std::path::Path::new(p).exists(), "{p} created");
    }
}

#[test]
fn a_job_key_with_terminal_escapes_prints_inert() {
    let env = Env::new();
    let key = "evil\x1b]0;pwned\x07\x1b[2J";
    let o = env.run(&["run", "--job-key", key, "--", "true"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("evil\\u{1b}]0;pwned"), "{err:?}");
    let py = fixture("analysis.py").display().to_string();
    for args in [
        &["predict", "--job-key", key, &py][..],
        &["stats", "--by", "job-key"][..],
    ] {
        let o = env.run(args);
        let out = crate::helper::stdout(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(out.contains("evil"), "{args:?}: {out}");
        assert!(
            !out.contains('\x1b') && !out.contains('\x07'),
            "{args:?}: {out:?}"
        );
    }
}
