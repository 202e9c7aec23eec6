//! The shipped systemd units verify clean (`systemd-analyze verify` exits 0 on unknown
//! keys, so stderr must be empty too).

use std::process::Command;

use crate::helper::repo;

fn verify(unit: &str) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo(&format!("systemd/{unit}"))).unwrap();
    let bin = env!("CARGO_BIN_EXE_presize");
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
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{unit}: {err}");
    assert!(err.trim().is_empty(), "{unit}: {err}");
}

#[test]
fn executor_unit_verifies() {
    verify("presize-executor.service");
}
