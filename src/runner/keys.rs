//! Job keys (which runs are "the same job") and job ids.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::job::JobSpec;

/// The first `n` bytes of a digest, in lower-case hex.
fn short_hex(digest: &[u8], n: usize) -> String {
    hex::encode(&digest[..n.min(digest.len())])
}

/// The job key presize used before readable keys: `k-` + a hash of the script's canonical
/// path (or of the program). Still looked up, so history recorded under it is found.
pub fn legacy_job_key(script: Option<&Path>, command: &[OsString]) -> String {
    let digest = Sha256::digest(key_basis(script, command).as_os_str().as_encoded_bytes());
    format!("k-{}", short_hex(&digest, 8))
}

fn key_basis(script: Option<&Path>, command: &[OsString]) -> PathBuf {
    match script {
        Some(s) => std::fs::canonicalize(s).unwrap_or_else(|_| s.to_owned()),
        None => command
            .first()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("?")),
    }
}

/// A name fit for a key: ASCII letters, digits, `.`, `_`, `-`, at most 40 characters.
fn key_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() {
        "job".into()
    } else {
        s
    }
}

/// The inline program of `python3 -c CODE`, `Rscript -e CODE`, `sh -c CODE`, `perl -e CODE`
/// … (the argument after the first `-c` / `-e` that precedes any script), with the flag.
fn inline_code(command: &[OsString]) -> Option<(&'static str, &OsString)> {
    let mut it = command.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-c") => return it.next().map(|c| ("c", c)),
            Some("-e") => return it.next().map(|c| ("e", c)),
            Some(s) if s.starts_with('-') => continue,
            _ => return None,
        }
    }
    None
}

/// Default job key, readable and stable: the script's file name plus a short hash of its
/// canonical path (`alloc.py-1a2b3c4d`); for an inline program (`python3 -c CODE`) the
/// program name, the flag and a hash of the code (`python3-c-5e6f7a8b`), so different
/// programs get different keys; otherwise the program name and a hash of it as given.
pub(crate) fn default_job_key(script: Option<&Path>, command: &[OsString]) -> String {
    let program = command
        .first()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| key_name(&n.to_string_lossy()))
        .unwrap_or_else(|| "job".into());
    if script.is_none() {
        if let Some((flag, code)) = inline_code(command) {
            let digest = Sha256::digest(code.as_encoded_bytes());
            return format!("{program}-{flag}-{}", short_hex(&digest, 4));
        }
    }
    let basis = key_basis(script, command);
    let name = match script {
        Some(s) => s
            .file_name()
            .map(|n| key_name(&n.to_string_lossy()))
            .unwrap_or_else(|| "script".into()),
        None => program,
    };
    let digest = Sha256::digest(basis.as_os_str().as_encoded_bytes());
    format!("{name}-{}", short_hex(&digest, 4))
}

/// The job key of `spec` and, for a default key, the key the same job had before readable
/// keys (absent for inline programs, whose old key was shared by every program).
pub(crate) fn job_keys(spec: &JobSpec, script: Option<&Path>) -> (String, Option<String>) {
    match &spec.job_key {
        Some(k) => (k.clone(), None),
        None => {
            let legacy = (script.is_some() || inline_code(&spec.command).is_none())
                .then(|| legacy_job_key(script, &spec.command));
            (default_job_key(script, &spec.command), legacy)
        }
    }
}

/// The name of this host, as recorded with each row.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A fresh job id: 16 hex digits from the time, this process and this host.
pub(crate) fn new_job_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(hostname().as_bytes());
    short_hex(&h.finalize(), 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hex crate writes what the hand-written helper wrote: lower case, two digits a
    /// byte, the first `n` bytes.
    #[test]
    fn short_hex_is_the_first_bytes_in_lower_case() {
        assert_eq!(short_hex(&[0x0a, 0xff, 0x00, 0x7b, 0x99], 4), "0aff007b");
        assert_eq!(short_hex(&[0xab], 8), "ab");
        let id = new_job_id();
        assert_eq!(id.len(), 16);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn keys_are_stable_and_readable() {
        let cmd: Vec<OsString> = ["python3", "-c", "print(1)"].map(OsString::from).into();
        let k = default_job_key(None, &cmd);
        assert!(
            k.starts_with("python3-c-") && k.len() == "python3-c-".len() + 8,
            "{k}"
        );
        assert_eq!(k, default_job_key(None, &cmd));
        let other: Vec<OsString> = ["python3", "-c", "print(2)"].map(OsString::from).into();
        assert_ne!(k, default_job_key(None, &other));
        let l = legacy_job_key(None, &cmd);
        assert!(l.starts_with("k-") && l.len() == 18, "{l}");
    }
}
