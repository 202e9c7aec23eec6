use std::io::Write;

/// Writes `$OUT_DIR/latest_migration.rs` with the highest version among `migrations/`
/// (file names `V<n>__<name>.sql` or `U<n>__<name>.sql`, as refinery reads them) and a
/// fingerprint of the whole set, so opening an up-to-date store can skip refinery without a
/// hand-kept constant.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let mut latest: i64 = 0;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("migrations") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix('V').or_else(|| name.strip_prefix('U')) else {
                continue;
            };
            let Some((num, _)) = rest.split_once("__") else {
                continue;
            };
            if let Ok(v) = num.parse::<i64>() {
                latest = latest.max(v);
                files.push((name.clone(), std::fs::read(e.path()).unwrap_or_default()));
            }
        }
    }
    // FNV-1a over every migration's name and text, in name order, folded to a positive
    // 31-bit value (`PRAGMA user_version` is a signed 32-bit integer): any added, removed or
    // edited migration changes it, whatever its number.
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in &files {
        for b in name
            .bytes()
            .chain([0u8])
            .chain(text.iter().copied())
            .chain([0u8])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let fingerprint = ((h ^ (h >> 31) ^ (h >> 62)) & 0x7fff_ffff).max(1);
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut f =
        std::fs::File::create(out.join("latest_migration.rs")).expect("OUT_DIR is writable");
    writeln!(
        f,
        "/// The highest migration version embedded in this binary (from `migrations/`).\npub const LATEST_MIGRATION: i64 = {latest};\n/// Fingerprint of the embedded migrations (names and text), stored as `PRAGMA user_version`\n/// once refinery has applied them all.\npub const MIGRATIONS_FINGERPRINT: i64 = {fingerprint};"
    )
    .expect("OUT_DIR is writable");
}
