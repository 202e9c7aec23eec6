//! Progress bars: drawn on stderr when it is a terminal (a pty made by `script`), absent
//! when it is a pipe.

use std::process::Command;

use presize::store::Store;

use crate::helper::history::{at, plus_h, Attempt};
use crate::helper::{repo, stderr, Env};

/// Run presize with `args` on a pseudo-terminal (util-linux `script`); stdout goes to a
/// file. Returns the exit status and what the terminal showed.
fn on_a_terminal(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(env!("CARGO_BIN_EXE_presize"));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line.push_str(" > ");
    line.push_str(&quote(env.path("stdout.txt").to_str().unwrap()));
    let base = env.cmd();
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().expect("util-linux script");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn replay_shows_a_bar_on_a_terminal_only() {
    let env = Env::new();
    let trace = repo("tests/data/nfcore-traces/trace_rnaseq.csv");
    let t = trace.to_str().unwrap();
    let (code, screen) = on_a_terminal(&env, &["replay", "--json", t]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("presize:") && screen.contains("/1 replaying trace_rnaseq.csv"),
        "no bar on the terminal: {screen:?}"
    );
    let o = env.run(&["replay", "--json", t]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stderr(&o), "", "progress in a pipe");
}

#[test]
fn retrain_shows_a_bar_on_a_terminal_only() {
    let env = Env::new();
    let mut store = Store::open(&env.db).unwrap();
    let t0 = at("2026-01-01T00:00:00Z");
    for i in 0..40u32 {
        let mut a = Attempt::new(&format!("j{i}"), "k", plus_h(t0, f64::from(i)));
        let x = 1.0 + f64::from(i % 7);
        a.actual = Some((x, 50.0 * x, 2.0 * x));
        a.import(&mut store);
    }
    drop(store);
    let (code, screen) = on_a_terminal(&env, &["retrain", "--min-rows", "20", "--json"]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("presize:") && screen.contains("training"),
        "no bar on the terminal: {screen:?}"
    );
    let o = env.run(&["retrain", "--min-rows", "20", "--force", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "progress in a pipe");
}
