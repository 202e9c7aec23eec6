//! Fuzz the Python scanner: `scan_source` + `arg_stats` + `build_vector`, with invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presize::features::Language;

mod common;

fuzz_target!(|data: &[u8]| {
    common::fuzz_source(data, Language::Python);
});
