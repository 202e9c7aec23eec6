//! The shipped systemd units verify clean (`systemd-analyze verify` exits 0 on unknown
//! keys, so stderr must be empty too).

use std::process::Command;

use crate::helper::repo;

fn verify(units: &[&str]) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_presize");
    let mut paths = Vec::new();
    for unit in units {
        let text = std::fs::read_to_string(repo(&format!("systemd/{unit}"))).unwrap();
        // ExecStart must name an existing executable: point it at the built binary.
        let text: String = text
            .lines()
            .map(|l| {
                if let Some(rest) = l.strip_prefix("ExecStart=") {
                    let args = rest.split_once(' ').map(|(_, a)| a).unwrap_or("");
                    format!("ExecStart={bin} {args}").trim_end().to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.path().join(unit);
        std::fs::write(&path, text + "\n").unwrap();
        paths.push(path);
    }
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{units:?}: {err}");
    assert!(err.trim().is_empty(), "{units:?}: {err}");
}

#[test]
fn retrain_service_and_timer_verify() {
    verify(&["presize-retrain.service", "presize-retrain.timer"]);
}

#[test]
fn a_broken_unit_is_caught() {
    // The check is real: an unknown key only warns (exit 0), so stderr must be empty.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.service");
    std::fs::write(
        &p,
        "[Service]\nType=oneshot\nExecStart=/bin/true\nFrobnicate=yes\n",
    )
    .unwrap();
    let Ok(o) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&p)
        .output()
    else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(!String::from_utf8_lossy(&o.stderr).trim().is_empty());
}

#[test]
fn executor_unit_verifies() {
    verify(&["presize-executor.service"]);
}

#[test]
fn forecast_service_and_timer_verify() {
    verify(&["presize-forecast.service", "presize-forecast.timer"]);
}

#[test]
fn the_forecast_service_command_records_silently() {
    // The unit's ExecStart arguments, run against a test store: nothing on stdout, one
    // recorded forecast per horizon, marked as the timer's.
    let text = std::fs::read_to_string(repo("systemd/presize-forecast.service")).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let env = crate::helper::Env::new();
    let o = env.cmd().args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(o.stdout.is_empty());
    let n: i64 = env
        .conn()
        .query_row(
            "SELECT count(*) FROM forecast_record WHERE trigger = 'timer'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 3);
}
