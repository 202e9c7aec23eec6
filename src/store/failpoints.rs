//! Crash-test hooks of the store's write transactions.

/// Crash-test hook, compiled into debug builds only: with `PRESIZE_FAILPOINT=<name>:<ms>`,
/// a write transaction named `<name>` announces itself on stderr and sleeps `<ms>` before
/// it commits, so a test can `kill -9` the process inside an open write transaction.
#[cfg(debug_assertions)]
pub(super) fn failpoint(name: &str) {
    let Some(spec) = std::env::var_os("PRESIZE_FAILPOINT") else {
        return;
    };
    let spec = spec.to_string_lossy();
    if let Some((n, ms)) = spec.split_once(':') {
        if n == name {
            let ms: u64 = ms.parse().unwrap_or(0);
            eprintln!("presize: failpoint {name}: in transaction");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(super) fn failpoint(_name: &str) {}
