use std::io::Write;

/// Writes `$OUT_DIR/latest_migration.rs` with the highest version among `migrations/`
/// (file names `V<n>__<name>.sql` or `U<n>__<name>.sql`, as refinery reads them), so opening
/// an up-to-date store can skip refinery without a hand-kept constant.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let mut latest: i64 = 0;
    if let Ok(dir) = std::fs::read_dir("migrations") {
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Some(rest) = name.strip_prefix('V').or_else(|| name.strip_prefix('U')) else {
                continue;
            };
            let Some((num, _)) = rest.split_once("__") else {
                continue;
            };
            if let Ok(v) = num.parse::<i64>() {
                latest = latest.max(v);
            }
        }
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut f =
        std::fs::File::create(out.join("latest_migration.rs")).expect("OUT_DIR is writable");
    writeln!(
        f,
        "/// The highest migration version embedded in this binary (from `migrations/`).\npub const LATEST_MIGRATION: i64 = {latest};"
    )
    .expect("OUT_DIR is writable");
}
