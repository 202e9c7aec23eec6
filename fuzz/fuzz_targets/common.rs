//! Invariants shared by the feature-extraction fuzz targets. Each target asserts more than
//! "no panic": the documented counting rules that are cheap to check on any input.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use presize::features::{
    arg_stats, build_vector, scan_source, ArgStats, Catalog, InputStats, Language, PriorRuns,
    ScriptScan, TokenCounts,
};

/// The builtin catalogue, built once per process.
pub fn catalog() -> &'static Catalog {
    static CAT: OnceLock<Catalog> = OnceLock::new();
    CAT.get_or_init(Catalog::builtin)
}

/// log10(f64::MAX): no literal can claim more.
const MAX_LOG10: f64 = 308.26;

/// Checks the counts of one scan of `src` in `lang`.
pub fn check_counts(src: &[u8], lang: Language, c: &TokenCounts) {
    let newlines = src.iter().filter(|&&b| b == b'\n').count() as u64;
    let partial = u64::from(!src.is_empty() && !src.ends_with(b"\n"));
    assert_eq!(c.lines, newlines + partial, "physical lines");
    assert!(
        c.code_lines + c.comment_lines <= c.lines,
        "code {} + comment {} lines > {} lines",
        c.code_lines,
        c.comment_lines,
        c.lines
    );
    assert!(
        c.max_numeric_log10.is_finite()
            && c.max_numeric_log10 >= 0.0
            && c.max_numeric_log10 <= MAX_LOG10,
        "max_numeric_log10 = {}",
        c.max_numeric_log10
    );
    if lang == Language::Other {
        assert_eq!(
            (c.tokens, c.code_lines, c.comment_lines, c.calls),
            (0, 0, 0, 0),
            "`Other` counts lines only"
        );
        return;
    }
    // A token marks its line as code.
    if c.tokens > 0 {
        assert!(c.code_lines > 0, "{} tokens on no code line", c.tokens);
    }
    // Loops, definitions and (Python/R) calls are each counted on a token.
    assert!(
        c.loops <= c.tokens,
        "loops {} > tokens {}",
        c.loops,
        c.tokens
    );
    assert!(
        c.func_defs <= c.tokens,
        "defs {} > tokens {}",
        c.func_defs,
        c.tokens
    );
    if lang != Language::Shell {
        assert!(
            c.calls <= c.tokens,
            "calls {} > tokens {}",
            c.calls,
            c.tokens
        );
    }
}

/// Scans `src` in `lang` and checks every invariant; returns the scan for further use.
pub fn scan_and_check(src: &[u8], lang: Language) -> ScriptScan {
    let cat = catalog();
    let (imports, counts, heavy) = scan_source(src, lang, cat);
    check_counts(src, lang, &counts);

    assert!(imports.len() <= 4096, "{} imports kept", imports.len());
    for name in &imports {
        assert!(!name.is_empty(), "empty import name");
        assert!(
            name.chars().count() <= 128,
            "import name too long: {name:?}"
        );
    }
    assert_eq!(heavy.len(), cat.len(), "one catalogue pair per entry");
    for ((name, imported, usage), entry) in heavy.iter().zip(cat.entries()) {
        assert_eq!(name, &entry.name, "catalogue order");
        if lang == Language::Shell || lang == Language::Other {
            assert_eq!(*usage, 0, "{lang} counts no usage ({name})");
        }
        // Usage is counted through names bound by an import of the package.
        assert!(
            *usage == 0 || *imported,
            "{name}: usage {usage} without an import"
        );
    }
    if lang == Language::Other {
        assert!(imports.is_empty() && heavy.iter().all(|h| !h.1));
    }

    ScriptScan {
        path: PathBuf::from("fuzz"),
        language: lang,
        sha256: String::new(),
        bytes_read: src.len() as u64,
        file_bytes: src.len() as u64,
        truncated: false,
        imports,
        counts,
        heavy,
        hints: Default::default(),
    }
}

/// The first line of the input as a command line (argv), for [`arg_stats`].
pub fn command_of(src: &[u8]) -> Vec<OsString> {
    let first = src.split(|&b| b == b'\n').next().unwrap_or(&[]);
    String::from_utf8_lossy(first)
        .split_ascii_whitespace()
        .map(OsString::from)
        .collect()
}

/// Checks the numeric-argument features of `command`.
pub fn check_args(command: &[OsString]) -> ArgStats {
    let a = arg_stats(command);
    assert!(a.count as usize <= command.len().saturating_sub(1));
    assert!(a.max_log10.is_finite() && a.max_log10 >= 0.0, "{a:?}");
    assert!(a.log10_sum.is_finite() && a.log10_sum >= 0.0, "{a:?}");
    assert!(a.log10_sum + 1e-9 >= a.max_log10, "{a:?}");
    a
}

/// Builds the feature vector from a scan and checks it: schema length, every value finite,
/// the one-hot language block.
pub fn check_vector(scan: Option<&ScriptScan>, lang: Language, args: &ArgStats) {
    let cat = catalog();
    let v = build_vector(
        cat,
        lang,
        scan,
        &InputStats::default(),
        args,
        &PriorRuns::default(),
        &presize::features::hints::ResourceHints::default(),
    );
    assert_eq!(v.values.len(), v.schema.names.len(), "vector length");
    assert!(v.values.iter().all(|x| x.is_finite()), "non-finite feature");
    assert_eq!(v.values[..4].iter().sum::<f64>(), 1.0, "one language");
}

/// Full feature path for one source in one language.
pub fn fuzz_source(data: &[u8], lang: Language) {
    let scan = scan_and_check(data, lang);
    // Same bytes as `Other`: the physical line count must agree.
    let (_, other, _) = scan_source(data, Language::Other, catalog());
    assert_eq!(other.lines, scan.counts.lines);
    let command = command_of(data);
    let args = check_args(&command);
    check_vector(Some(&scan), lang, &args);
}
