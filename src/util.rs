//! Small helpers shared by every layer: owner-only files, timestamps, one-line messages.
//!
//! This is the bottom of the module graph: it imports nothing from the crate, so any module
//! may use it without creating an import cycle (see `tests/suite/layering.rs`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::SystemTime;

/// Create a directory (and parents) readable only by its owner.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Write a file readable only by its owner (atomically: temp file + rename).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Format a time the way every timestamp column is written (RFC 3339 UTC, milliseconds), so
/// that text comparison in SQL orders times correctly.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Current time as RFC 3339 UTC with milliseconds (see [`rfc3339`]).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Collapse a multi-line message (e.g. from the TOML parser) into one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_and_dirs_are_owner_only_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        create_private_dir(&sub).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let f = sub.join("x.json");
        write_private_file(&f, b"first").unwrap();
        write_private_file(&f, b"second").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"second");
        assert_eq!(mode(&f), 0o600);
        // No temp file is left beside it.
        assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 1);
    }

    #[test]
    fn timestamps_sort_as_text_and_messages_fit_one_line() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        let later = t + std::time::Duration::from_millis(1);
        assert!(rfc3339(t) < rfc3339(later));
        assert!(humantime::parse_rfc3339(&now_rfc3339()).is_ok());
        assert_eq!(one_line("a\n  b\tc \n"), "a b c");
    }
}
