//! Signals in every phase of `presize run`: waiting for admission, running, waiting to retry.
//! Each ends with the row settled, the reservation freed, no cgroup left and exit 128 + N; a
//! running job receives the signal presize received (its own handler runs). Also: `nohup`
//! (an inherited SIG_IGN stays ignored), a closed stderr (EPIPE) and a job that reads its
//! terminal.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helper::{cgroup_dirs_of, cgroup_tests_can_run, stderr, Env};

const SIGNALS: [(i32, &str); 4] = [
    (libc::SIGINT, "INT"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGHUP, "HUP"),
    (libc::SIGQUIT, "QUIT"),
];

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a child of this test.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Wait for a child with a deadline (a hung presize fails the test instead of hanging it).
fn finish(child: Child, secs: u64) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(o) => o.expect("wait"),
        Err(_) => {
            kill(pid, libc::SIGKILL);
            panic!("presize (pid {pid}) did not exit within {secs} s");
        }
    }
}

/// Reservations in a state.
fn reservations(env: &Env, state: &str) -> i64 {
    env.conn()
        .query_row(
            "SELECT count(*) FROM reservation WHERE state = ?1",
            [state],
            |r| r.get(0),
        )
        .unwrap_or(0)
}

/// Cgroup directories made by the presize process `pid`.
fn cgroups_of(pid: u32) -> Vec<String> {
    cgroup_dirs_of(pid)
}

fn spawn(env: &Env, budget: &str, args: &[&str]) -> Child {
    env.cmd()
        .env("PRESIZE_HOST_BUDGET_MB", budget)
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn presize")
}

/// The row's outcome and signal column.
fn outcome_and_signal(env: &Env, id: i64) -> (Option<String>, Option<i64>, Option<String>) {
    env.conn()
        .query_row(
            "SELECT outcome, signal, settled_at FROM resource_prediction WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row")
}

#[test]
fn a_signal_while_running_reaches_the_job_as_itself_and_settles() {
    let cgroups = cgroup_tests_can_run();
    for (sig, name) in SIGNALS {
        let env = Env::with_config("[policy]\ngrace_period_s = 5\n");
        let marker = env.path("got");
        // The job's own handlers record which signal arrived, then it exits by itself.
        let script = format!(
            "for s in INT TERM HUP QUIT; do trap \"echo $s > {m}; exit 0\" $s; done; \
             sleep 60 & wait",
            m = marker.display()
        );
        let child = spawn(&env, "1000", &["-q", "--", "sh", "-c", &script]);
        let pid = child.id();
        wait_until("the job to start", 20, || env.first_started());
        std::thread::sleep(Duration::from_millis(200));
        kill(pid, sig);
        let o = finish(child, 20);
        assert_eq!(o.status.code(), Some(128 + sig), "{name}: {}", stderr(&o));
        let got = std::fs::read_to_string(&marker).unwrap_or_default();
        assert_eq!(got.trim(), name, "the job saw {got:?}, not SIG{name}");
        let rows = env.rows();
        assert_eq!(rows.len(), 1, "{name}: no retry after a signal");
        assert_eq!(rows[0].outcome.as_deref(), Some("failed"), "{name}");
        assert!(rows[0].settled_at.is_some());
        assert_eq!(env.reservations(), 0, "{name}: reservation held");
        if cgroups {
            assert_eq!(cgroups_of(pid), Vec::<String>::new(), "{name}: cgroup left");
        }
    }
}

#[test]
fn a_second_signal_kills_at_once_instead_of_waiting_for_the_grace_period() {
    let env = Env::with_config("[policy]\ngrace_period_s = 60\n");
    let child = spawn(
        &env,
        "1000",
        &["-q", "--", "sh", "-c", "trap '' TERM INT; sleep 120"],
    );
    let pid = child.id();
    wait_until("the job to start", 20, || env.first_started());
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    kill(pid, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    kill(pid, libc::SIGTERM);
    let o = finish(child, 20);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{}", stderr(&o));
    assert_eq!(env.rows()[0].outcome.as_deref(), Some("failed"));
}

#[test]
fn a_signal_while_waiting_for_admission_settles_and_frees_the_reservation() {
    let env = Env::new();
    let blocker = spawn(
        &env,
        "1000",
        &["-q", "--memory-mb", "800", "--", "sleep", "60"],
    );
    wait_until("the blocker to start", 20, || env.first_started());
    for (sig, name) in SIGNALS {
        let waiter = spawn(&env, "1000", &["-q", "--memory-mb", "500", "--", "true"]);
        let pid = waiter.id();
        wait_until("the waiter to queue", 20, || {
            reservations(&env, "waiting") == 1
        });
        let row = env.rows().last().expect("row").id;
        kill(pid, sig);
        let o = finish(waiter, 20);
        assert_eq!(o.status.code(), Some(128 + sig), "{name}: {}", stderr(&o));
        let (outcome, signal, settled) = outcome_and_signal(&env, row);
        assert_eq!(outcome.as_deref(), Some("failed"), "{name}");
        assert_eq!(signal, Some(i64::from(sig)), "{name}");
        assert!(settled.is_some(), "{name}");
        assert_eq!(reservations(&env, "waiting"), 0, "{name}: waiter kept");
        assert_eq!(reservations(&env, "running"), 1, "{name}");
        assert!(cgroups_of(pid).is_empty(), "{name}");
    }
    kill(blocker.id(), libc::SIGTERM);
    let o = finish(blocker, 30);
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(env.reservations(), 0);
}

#[test]
fn a_signal_while_waiting_to_retry_stops_the_retry() {
    if !cgroup_tests_can_run() {
        return;
    }
    let env = Env::new();
    let blocker = spawn(
        &env,
        "1000",
        &["-q", "--memory-mb", "500", "--", "sleep", "60"],
    );
    wait_until("the blocker to start", 20, || env.first_started());
    for (i, (sig, name)) in SIGNALS.into_iter().enumerate() {
        // Attempt 1 (300 MB) fits beside the blocker and is OOM-killed; the escalated retry
        // does not fit and waits for admission.
        let job = spawn(
            &env,
            "1000",
            &[
                "-q",
                "--memory-mb",
                "300",
                "--",
                "python3",
                "-c",
                "b = b'x' * (400 << 20)",
            ],
        );
        let pid = job.id();
        let n = 1 + 2 * (i + 1);
        wait_until("the retry to queue", 60, || {
            env.rows().len() == n && reservations(&env, "waiting") == 1
        });
        let rows = env.rows();
        assert_eq!(rows[n - 2].outcome.as_deref(), Some("oom_killed"), "{name}");
        kill(pid, sig);
        let o = finish(job, 20);
        assert_eq!(o.status.code(), Some(128 + sig), "{name}: {}", stderr(&o));
        let (outcome, signal, settled) = outcome_and_signal(&env, rows[n - 1].id);
        assert_eq!(outcome.as_deref(), Some("failed"), "{name}");
        assert_eq!(signal, Some(i64::from(sig)), "{name}");
        assert!(settled.is_some(), "{name}");
        assert!(
            env.rows()[n - 1].started_at.is_none(),
            "{name}: the retry was started"
        );
        assert_eq!(env.rows().len(), n, "{name}: another attempt");
        assert_eq!(reservations(&env, "waiting"), 0, "{name}");
        assert!(cgroups_of(pid).is_empty(), "{name}");
    }
    kill(blocker.id(), libc::SIGTERM);
    finish(blocker, 30);
    assert_eq!(env.reservations(), 0);
}

#[test]
fn nohup_keeps_sighup_ignored_for_presize_and_the_job() {
    let env = Env::new();
    let marker = env.path("done");
    let mut cmd = env.cmd();
    cmd.args(["run", "-q", "--", "sh", "-c"])
        .arg(format!("sleep 1; echo done > {}", marker.display()))
        .stderr(Stdio::piped());
    // SAFETY: signal(2) between fork and exec, as nohup does.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    wait_until("the job to start", 20, || env.first_started());
    kill(child.id(), libc::SIGHUP);
    let o = finish(child, 20);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(marker.exists(), "the job was hung up");
    assert_eq!(env.rows()[0].outcome.as_deref(), Some("ok"));
}

#[test]
fn a_closed_stderr_does_not_stop_the_job() {
    let env = Env::new();
    let marker = env.path("ran");
    let mut child = env
        .cmd()
        .args(["run", "--", "sh", "-c"])
        .arg(format!("echo ran > {}", marker.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -c 0`: the reader is gone before presize writes its first line.
    drop(child.stderr.take());
    let o = finish(child, 30);
    assert_eq!(o.status.code(), Some(0), "exit {:?}", o.status);
    assert!(marker.exists(), "the job never ran");
    let rows = env.rows();
    assert_eq!(rows[0].outcome.as_deref(), Some("ok"));
    assert!(rows[0].settled_at.is_some());
}

#[test]
fn a_job_that_reads_its_terminal_gets_it() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` not installed");
        return;
    }
    let env = Env::new();
    let marker = env.path("line");
    // `script` gives presize a terminal with presize in its foreground process group.
    let inner = format!(
        "{} run -q --timeout 15 -- sh -c 'read x; echo \"got:$x\" > {}'",
        env!("CARGO_BIN_EXE_presize"),
        marker.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &inner, "/dev/null"])
        .env("PRESIZE_DB", &env.db)
        .env("PRESIZE_MODEL_DIR", &env.models)
        .env("PRESIZE_CONFIG", &env.config)
        .env("HOME", env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = script.spawn().unwrap();
    wait_until("the job to start", 20, || env.first_started());
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    let o = finish(child, 30);
    drop(stdin);
    let got = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(got.trim(), "got:hello", "exit {:?}", o.status);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(env.rows()[0].outcome.as_deref(), Some("ok"));
}
