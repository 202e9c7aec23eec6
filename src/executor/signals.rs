//! The signals `presize run` answers in every phase: SIGINT, SIGTERM, SIGHUP and SIGQUIT.
//!
//! [`install`] is called once, before anything is recorded. From then on the first of these
//! signals is remembered ([`pending`]): the admission wait, the executor and the retry loop all
//! look at it, so a signal in any phase settles the row, frees the reservation and ends with
//! 128 + the signal. While a job runs, the executor forwards the *same* signal to the job's
//! process group (a job's own SIGINT handler runs), then SIGKILLs after the grace period, or at
//! once on a second signal.
//!
//! A signal that was ignored when presize started (`nohup`, a shell's background job) stays
//! ignored, as it does for the job, which inherits the ignored disposition through `exec`.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;

/// The signals presize handles and forwards.
pub(crate) const HANDLED: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

static FIRST: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: two atomic operations, nothing else.
    let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Install the handlers (idempotent). Signals inherited as ignored are left ignored; returns
/// those.
pub fn install() -> io::Result<&'static [i32]> {
    static IGNORED: OnceLock<Result<Vec<i32>, i32>> = OnceLock::new();
    let r = IGNORED.get_or_init(|| {
        let mut ignored = Vec::new();
        for sig in HANDLED {
            // SAFETY: sigaction with a zeroed struct only reads the current disposition.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            if old.sa_sigaction == libc::SIG_IGN {
                ignored.push(sig);
                continue;
            }
            // SAFETY: the handler only touches atomics; SA_RESTART keeps blocking calls going.
            let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            act.sa_flags = libc::SA_RESTART;
            unsafe { libc::sigemptyset(&mut act.sa_mask) };
            if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(ignored)
    });
    match r {
        Ok(v) => Ok(v.as_slice()),
        Err(code) => Err(io::Error::from_raw_os_error(*code)),
    }
}

/// The first handled signal received since [`install`], if any.
pub fn pending() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// How many handled signals arrived so far (a second one during the grace period means
/// "kill now").
pub fn count() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

/// Sleep for `d`, waking early when a signal is pending; returns it.
pub(crate) fn sleep_unless_signalled(d: std::time::Duration) -> Option<i32> {
    let step = std::time::Duration::from_millis(20);
    let until = std::time::Instant::now() + d;
    loop {
        if let Some(s) = pending() {
            return Some(s);
        }
        let now = std::time::Instant::now();
        if now >= until {
            return None;
        }
        std::thread::sleep(step.min(until - now));
    }
}
