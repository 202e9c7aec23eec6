//! Language detection: from the runtime, the script's extension or its shebang,
//! plus script and runtime resolution from a job's command line.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The script language; anything unrecognised is `Other` and gets only the
/// language-neutral features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    R,
    Shell,
    Other,
}

impl Language {
    /// `"python"`, `"r"`, `"shell"` or `"other"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::R => "r",
            Language::Shell => "shell",
            Language::Other => "other",
        }
    }

    pub(crate) fn mask(self) -> u8 {
        match self {
            Language::Python => 1,
            Language::R => 2,
            Language::Shell => 4,
            Language::Other => 8,
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Container formats that need their code extracted before scanning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Container {
    Plain,
    Notebook,
    RMarkdown,
}

fn ext_lower(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext.len() > 8 {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

pub(crate) fn container_of(path: &Path) -> Container {
    match ext_lower(path).as_deref() {
        Some("ipynb") => Container::Notebook,
        Some("rmd") => Container::RMarkdown,
        _ => Container::Plain,
    }
}

/// The language a script extension implies (case-insensitive).
pub fn language_from_extension(path: &Path) -> Option<Language> {
    match ext_lower(path).as_deref()? {
        "py" | "ipynb" => Some(Language::Python),
        "r" | "rmd" => Some(Language::R),
        "sh" | "bash" => Some(Language::Shell),
        _ => None,
    }
}

/// The language a runtime or interpreter name implies: `python`, `python3`,
/// `python3.11`, `pypy3`, `ipython`, `jupyter`, `jupyter-nbconvert` → Python;
/// `r`, `Rscript` → R; `shell`, `bash`, `sh`, `dash`, `zsh`, `ksh` → Shell;
/// `other` → Other. Anything else → `None` (the name decides nothing).
pub fn runtime_language(runtime: &str) -> Option<Language> {
    let lower = runtime.trim().to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or("");
    // Strip a version suffix: python3.11 → python, pypy3 → pypy.
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    match stem {
        "python" | "pypy" | "ipython" | "jupyter" | "jupyter-nbconvert" | "jupyter-execute"
        | "papermill" => Some(Language::Python),
        "r" | "rscript" => Some(Language::R),
        "shell" | "bash" | "sh" | "dash" | "zsh" | "ksh" | "ash" | "mksh" => Some(Language::Shell),
        "other" => Some(Language::Other),
        _ => None,
    }
}

fn basename(w: &[u8]) -> &[u8] {
    match w.iter().rposition(|&b| b == b'/') {
        Some(p) => &w[p + 1..],
        None => w,
    }
}

/// The interpreter a shebang line names (`#!/usr/bin/env python3`,
/// `#!/bin/bash`, `#!/usr/bin/env -S Rscript --vanilla`), as its basename.
pub(crate) fn shebang_interpreter(first_line: &[u8]) -> Option<&[u8]> {
    let rest = first_line.strip_prefix(b"#!")?;
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..end.min(512)];
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    let prog = basename(first);
    if prog == b"env" {
        for w in words {
            if w.starts_with(b"-") || w.contains(&b'=') {
                continue;
            }
            return Some(basename(w));
        }
        return None;
    }
    Some(prog)
}

/// Detects the language: a recognised `runtime` wins, then the extension of
/// `path`, then a shebang in `first_line`; otherwise `Other`.
pub fn detect_language(runtime: Option<&str>, path: &Path, first_line: &[u8]) -> Language {
    if let Some(lang) = runtime.and_then(runtime_language) {
        return lang;
    }
    if let Some(lang) = language_from_extension(path) {
        return lang;
    }
    shebang_interpreter(first_line)
        .and_then(|i| std::str::from_utf8(i).ok())
        .and_then(runtime_language)
        .unwrap_or(Language::Other)
}

fn has_script_extension(arg: &OsString) -> bool {
    language_from_extension(Path::new(arg)).is_some()
}

/// The job's script: the first command element (argv\[0\] included) whose
/// extension is a known script extension (.py .ipynb .R .r .Rmd .rmd .sh .bash,
/// case-insensitive).
pub fn resolve_script(command: &[OsString]) -> Option<PathBuf> {
    command
        .iter()
        .find(|a| has_script_extension(a))
        .map(PathBuf::from)
}

fn sanitise_runtime(base: &str) -> Option<String> {
    let s: String = base
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        .take(32)
        .collect();
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Reads at most 256 bytes from the start of a regular file (never opens
/// FIFOs, devices or directories).
fn read_head(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut buf = Vec::with_capacity(256);
    File::open(path)
        .ok()?
        .take(256)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// The runtime of a command, from its program's basename: python, python3,
/// python3.11, ipython, jupyter → `"python"`; Rscript, R → `"r"`; bash, sh, dash,
/// zsh → `"shell"`. `env [-opts] [VAR=x] prog` looks through `env`. When argv\[0\]
/// is itself a script, its extension (or, for a readable regular file, its
/// shebang) decides. Otherwise the basename, lowercased, reduced to
/// `[a-z0-9._-]` and at most 32 characters; `None` for an empty command.
pub fn runtime_from_command(command: &[OsString]) -> Option<String> {
    let mut args = command.iter();
    let mut prog = args.next()?;
    // Look through `env`.
    let mut split_prog: Option<OsString> = None;
    if Path::new(prog).file_name().and_then(|b| b.to_str()) == Some("env") {
        let mut skip_value = false;
        for a in args.by_ref() {
            let s = a.to_string_lossy();
            if skip_value {
                skip_value = false;
                continue;
            }
            if s == "-S" || s == "--split-string" {
                // `env -S "python3 -u"`: the program is the first word of the next arg.
                split_prog = args.next().and_then(|n| {
                    n.to_string_lossy()
                        .split_whitespace()
                        .next()
                        .map(OsString::from)
                });
                break;
            }
            if matches!(s.as_ref(), "-u" | "--unset" | "-C" | "--chdir") {
                skip_value = true;
                continue;
            }
            if s.starts_with('-') || s.contains('=') {
                continue;
            }
            prog = a;
            break;
        }
    }
    if let Some(p) = split_prog.as_ref() {
        prog = p;
    }
    let path = Path::new(prog);
    let base = path.file_name()?.to_string_lossy().into_owned();
    if let Some(lang) = runtime_language(&base) {
        if lang != Language::Other {
            return Some(lang.as_str().to_string());
        }
    }
    if let Some(lang) = language_from_extension(path) {
        return Some(lang.as_str().to_string());
    }
    if prog.to_string_lossy().contains('/') {
        if let Some(head) = read_head(path) {
            if let Some(lang) = shebang_interpreter(&head)
                .and_then(|i| std::str::from_utf8(i).ok())
                .and_then(runtime_language)
            {
                return Some(lang.as_str().to_string());
            }
        }
    }
    sanitise_runtime(&base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn runtime_names() {
        for (c, want) in [
            (vec!["python3", "x.py"], Some("python")),
            (vec!["/usr/bin/python3.11", "x.py"], Some("python")),
            (vec!["ipython", "x.py"], Some("python")),
            (vec!["jupyter", "nbconvert", "x.ipynb"], Some("python")),
            (vec!["Rscript", "x.R"], Some("r")),
            (vec!["R", "-f", "x.R"], Some("r")),
            (vec!["bash", "x.sh"], Some("shell")),
            (vec!["zsh"], Some("shell")),
            (vec!["./run.sh"], Some("shell")),
            (vec!["./fit.py"], Some("python")),
            (
                vec!["/usr/bin/env", "-u", "X", "python3", "a.py"],
                Some("python"),
            ),
            (vec!["Nextflow!!", "run"], Some("nextflow")),
            (vec!["/opt/JAVA"], Some("java")),
            (vec!["%%%"], None),
        ] {
            assert_eq!(runtime_from_command(&cmd(&c)).as_deref(), want, "{c:?}");
        }
        assert_eq!(runtime_from_command(&[]), None);
        let long = "a".repeat(100);
        assert_eq!(
            runtime_from_command(&cmd(&[&long])).map(|s| s.len()),
            Some(32)
        );
    }

    #[test]
    fn runtime_from_shebang_of_extensionless_script() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job");
        std::fs::write(&p, "#!/usr/bin/env Rscript\nx <- 1\n").unwrap();
        let c = vec![p.clone().into_os_string()];
        assert_eq!(runtime_from_command(&c).as_deref(), Some("r"));
    }

    #[test]
    fn script_resolution() {
        assert_eq!(
            resolve_script(&cmd(&["python3", "-u", "analysis.py", "x.csv"])),
            Some(PathBuf::from("analysis.py"))
        );
        assert_eq!(
            resolve_script(&cmd(&["./run.sh", "a"])),
            Some(PathBuf::from("./run.sh"))
        );
        assert_eq!(
            resolve_script(&cmd(&["Rscript", "report.Rmd"])),
            Some(PathBuf::from("report.Rmd"))
        );
        assert_eq!(resolve_script(&cmd(&["java", "-jar", "x.jar"])), None);
    }

    #[test]
    fn detection_order() {
        let p = Path::new("x.py");
        assert_eq!(detect_language(Some("Rscript"), p, b""), Language::R);
        assert_eq!(detect_language(Some("java"), p, b""), Language::Python);
        assert_eq!(detect_language(None, Path::new("a.Rmd"), b""), Language::R);
        assert_eq!(
            detect_language(None, Path::new("a.BASH"), b""),
            Language::Shell
        );
        let np = Path::new("job");
        assert_eq!(
            detect_language(None, np, b"#!/usr/bin/env python3\n"),
            Language::Python
        );
        assert_eq!(
            detect_language(None, np, b"#!/bin/bash -e\n"),
            Language::Shell
        );
        assert_eq!(
            detect_language(None, np, b"#!/usr/bin/env -S Rscript --vanilla"),
            Language::R
        );
        assert_eq!(
            detect_language(None, np, b"#!/usr/bin/perl"),
            Language::Other
        );
        assert_eq!(detect_language(None, np, b""), Language::Other);
        assert_eq!(detect_language(None, np, b"#!"), Language::Other);
    }
}
