//! Admission: the host memory budget shared by concurrent `presize run` processes.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::helper::{stderr, Env};

fn ts(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).expect("RFC 3339 timestamp")
}

fn spawn(env: &Env, key: &str, prio: &str, secs: &str) -> Child {
    env.cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "300")
        .args(["run", "-q", "--memory-mb", "200", "--priority", prio])
        .args(["--job-key", key, "--", "sleep", secs])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(env: &Env, what: &str, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = if env.db.exists() {
            env.conn().query_row(sql, [], |r| r.get(0)).unwrap_or(0)
        } else {
            0
        };
        if n >= want {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// (job_key, started_at, settled_at) of every settled row.
fn intervals(env: &Env) -> Vec<(String, SystemTime, SystemTime)> {
    let conn = env.conn();
    let mut st = conn
        .prepare(
            "SELECT job_key, started_at, settled_at FROM resource_prediction
             WHERE outcome = 'ok' ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })
    .unwrap()
    .map(|r| {
        let (k, a, b) = r.unwrap();
        (k, ts(&a), ts(&b))
    })
    .collect()
}

#[test]
fn jobs_over_budget_never_overlap() {
    let env = Env::new();
    let kids: Vec<Child> = (0..3)
        .map(|i| spawn(&env, &format!("j{i}"), "normal", "0.6"))
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let iv = intervals(&env);
    assert_eq!(iv.len(), 3);
    for (i, a) in iv.iter().enumerate() {
        for b in &iv[i + 1..] {
            let overlap = a.1 < b.2 && b.1 < a.2;
            assert!(!overlap, "{} and {} overlapped", a.0, b.0);
        }
    }
    let left = env.reservations();
    assert_eq!(left, 0, "reservations left behind");
}

#[test]
fn high_priority_submitted_last_runs_before_waiting_normal_ones() {
    let env = Env::new();
    let a = spawn(&env, "a", "normal", "1.5");
    wait_for(
        &env,
        "a to start",
        "SELECT count(*) FROM reservation WHERE state = 'running'",
        1,
    );
    let b = spawn(&env, "b", "normal", "0.3");
    wait_for(
        &env,
        "b to queue",
        "SELECT count(*) FROM reservation WHERE state = 'waiting'",
        1,
    );
    let c = spawn(&env, "c", "normal", "0.3");
    wait_for(
        &env,
        "b and c to queue",
        "SELECT count(*) FROM reservation WHERE state = 'waiting'",
        2,
    );
    let d = spawn(&env, "d", "high", "0.3");
    for k in [a, b, c, d] {
        let o = k.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let iv = intervals(&env);
    let start = |k: &str| iv.iter().find(|x| x.0 == k).unwrap().1;
    assert!(start("d") < start("b"), "high priority did not go first");
    assert!(start("d") < start("c"), "high priority did not go first");
    assert!(start("b") < start("c"), "FIFO within a priority broken");
}

#[test]
fn killed_waiters_reservation_is_reclaimed() {
    let env = Env::new();
    let a = spawn(&env, "a", "normal", "1");
    wait_for(
        &env,
        "a to start",
        "SELECT count(*) FROM reservation WHERE state = 'running'",
        1,
    );
    let mut w = spawn(&env, "w", "high", "30");
    wait_for(
        &env,
        "w to queue",
        "SELECT count(*) FROM reservation WHERE state = 'waiting'",
        1,
    );
    w.kill().unwrap();
    w.wait().unwrap();
    let t0 = Instant::now();
    let e = spawn(&env, "e", "normal", "0.1");
    let o = e.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "the dead waiter blocked the queue"
    );
    a.wait_with_output().unwrap();
    let left = env.reservations();
    assert_eq!(left, 0);
}

#[test]
fn queue_timeout_exits_3_and_records_a_queue_timeout() {
    let env = Env::new();
    let a = spawn(&env, "a", "normal", "3");
    wait_for(
        &env,
        "a to start",
        "SELECT count(*) FROM reservation WHERE state = 'running'",
        1,
    );
    let o = env
        .cmd()
        .env("PRESIZE_HOST_BUDGET_MB", "300")
        .args([
            "run",
            "--memory-mb",
            "200",
            "--queue-timeout",
            "1",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("waiting for memory"));
    a.wait_with_output().unwrap();
    let n: i64 = env
        .conn()
        .query_row(
            "SELECT count(*) FROM resource_prediction WHERE outcome = 'queue_timeout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}
