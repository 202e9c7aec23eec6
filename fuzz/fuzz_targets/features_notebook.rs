//! Fuzz notebook (`.ipynb` JSON) and R Markdown (`.Rmd`) extraction through the public
//! entry point `features::extract` on a real temporary file.
//!
//! The first byte selects the case: bit 0 `.ipynb` or `.Rmd`; bit 1 read the whole file or
//! only a prefix (the truncated-notebook path); bits 2-3 the runtime (none, python, R,
//! bash); bit 4 keep NUL bytes (the binary check) or replace them by spaces.
#![no_main]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use presize::features::{extract, FeatureRequest, Language, PriorRuns, ScanOptions};

mod common;

fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("presize-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz work dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let notebook = sel & 1 == 0;
    let path = work_dir().join(if notebook { "job.ipynb" } else { "job.Rmd" });
    let mut bytes = body.to_vec();
    if sel & 16 == 0 {
        for b in &mut bytes {
            if *b == 0 {
                *b = b' ';
            }
        }
    }
    std::fs::write(&path, &bytes).expect("write fuzz input");
    let limit = if sel & 2 == 0 || bytes.len() < 2 {
        bytes.len() as u64 + 1
    } else {
        bytes.len() as u64 / 2
    };
    let runtime = match (sel >> 2) & 3 {
        0 => None,
        1 => Some("python3"),
        2 => Some("Rscript"),
        _ => Some("bash"),
    };
    let command: Vec<OsString> = vec!["python3".into(), path.clone().into(), "1e6".into()];
    let prior = PriorRuns::default();
    let req = FeatureRequest {
        script: Some(&path),
        runtime,
        inputs: &[],
        command: &command,
        prior: &prior,
    };
    let opts = ScanOptions {
        max_script_bytes: limit,
        ..ScanOptions::default()
    };
    match extract(&req, common::catalog(), &opts) {
        Ok(x) => {
            let v = &x.vector;
            assert_eq!(v.values.len(), v.schema.names.len());
            assert!(v.values.iter().all(|f| f.is_finite()), "non-finite feature");
            let scan = x.scan.expect("a script was given");
            assert!(scan.bytes_read <= limit);
            assert_eq!(scan.file_bytes, bytes.len() as u64);
            assert_eq!(scan.truncated, scan.file_bytes > limit);
            assert_eq!(scan.sha256.len(), 64);
            assert_eq!(scan.language, x.language);
            if !notebook {
                assert_eq!(scan.language, Language::R, "Rmd chunks are R");
            }
            // The script is never counted as an input.
            assert_eq!(x.inputs.count, 0);
            common::check_args(&command);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.contains('\n') && !msg.contains('\r'),
                "multi-line error: {msg:?}"
            );
            assert!(msg.contains("job."), "error does not name the file: {msg}");
            if sel & 16 == 0 {
                // NULs replaced: only a malformed notebook may fail.
                assert!(notebook, "Rmd failed: {msg}");
                assert!(msg.starts_with("notebook "), "{msg}");
            }
        }
    }
});
