//! Preparing a delegated cgroup2 subtree: presize moves itself (and, where allowed, the other
//! processes of `<base>`) into `<base>/supervisor`, then enables the controllers on `<base>`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use nix::unistd::geteuid;

use super::super::fs::{read_pids, read_words, Fs};
use super::super::{CgroupError, SUPERVISOR_DIR};
use super::MovePeers;

/// Controllers enabled for job cgroups; `memory` is required, the others are used if delegated.
const WANTED: [&str; 3] = ["memory", "pids", "cpu"];
/// Attempts to enable `memory` while other processes (e.g. concurrent presize instances still
/// moving into `supervisor`, or children a moved peer forked meanwhile) keep `<base>` busy.
const ENABLE_TRIES: u32 = 50;
const ENABLE_PAUSE: Duration = Duration::from_millis(10);
/// Rounds of "read `<base>/cgroup.procs`, move every pid into `supervisor`" before giving up
/// on peers that keep forking.
const MOVE_ROUNDS: u32 = 100;
/// Extended attributes systemd sets to `1` on the cgroup of a unit with `Delegate=yes`
/// (`user.delegate` also from the user manager, systemd ≥ 251 according to its NEWS).
const DELEGATE_XATTRS: [&str; 2] = ["trusted.delegate", "user.delegate"];

/// Creates `<base>/supervisor` (fine if it exists) and moves this process into it.
pub(super) fn move_self_to_supervisor(fs: &Fs, base: &Path) -> Result<(), String> {
    let sup = base.join(SUPERVISOR_DIR);
    match fs.mkdir(&sup) {
        Ok(()) | Err(CgroupError::AlreadyExists { .. }) => {}
        Err(e) => return Err(format!("cannot create the supervisor cgroup: {e}")),
    }
    fs.write_file(&sup.join("cgroup.procs"), &std::process::id().to_string())
        .map_err(|e| format!("cannot move this process into {}: {e}", sup.display()))
}

/// Best effort: move back into `base` and remove `supervisor` if no other process uses it.
pub(super) fn undo_move(fs: &Fs, base: &Path) {
    let _ = fs.write_file(&base.join("cgroup.procs"), &std::process::id().to_string());
    let sup = base.join(SUPERVISOR_DIR);
    if matches!(read_pids(&sup), Ok(p) if p.is_empty()) {
        let _ = fs.rmdir_retry(&sup);
    }
}

/// Whether every process still in `base` runs our own executable, i.e. is a concurrent
/// presize about to move itself into `supervisor`, so that waiting can help.
fn only_presize_left(base: &Path) -> bool {
    let Ok(me) = std::fs::read_link("/proc/self/exe") else {
        return false;
    };
    read_pids(base).is_ok_and(|pids| {
        pids.iter()
            .all(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == me))
    })
}

/// Other processes in `<base>`: whether they may be moved, and which were.
pub(super) struct Peers {
    /// `Err(why not)` when presize must not move them.
    pub(super) allowed: Result<(), String>,
    pub(super) moved: Vec<i32>,
}

impl Peers {
    /// Moves every process still in `base` into `base/supervisor`, repeating until `base` is
    /// empty (a peer may fork between the read of `cgroup.procs` and its move; the child
    /// then stays behind and is caught by the next round).
    fn move_all(&mut self, fs: &Fs, base: &Path) -> Result<(), String> {
        let target = base.join(SUPERVISOR_DIR).join("cgroup.procs");
        let mut left = Vec::new();
        for round in 0..MOVE_ROUNDS {
            left = read_pids(base).map_err(|e| e.to_string())?;
            if left.is_empty() {
                return Ok(());
            }
            for &pid in &left {
                match fs.write_file(&target, &pid.to_string()) {
                    Ok(()) => self.moved.push(pid),
                    // Exited between the read and the move.
                    Err(CgroupError::Io { ref source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        return Err(format!(
                            "cannot move process {pid} into {}: {e}",
                            target.display()
                        ))
                    }
                }
            }
            if round >= 10 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Err(format!(
            "processes keep appearing in {} ({left:?} after {MOVE_ROUNDS} rounds of moving)",
            base.display()
        ))
    }

    /// Best effort after a failed detection: put the moved processes back into `base`.
    pub(super) fn move_back(&mut self, fs: &Fs, base: &Path) {
        let procs = base.join("cgroup.procs");
        for pid in self.moved.drain(..) {
            let _ = fs.write_file(&procs, &pid.to_string());
        }
    }
}

/// Whether presize may move other processes out of `base` under `mode`; `Err` says why not.
pub(super) fn peer_move_allowed(base: &Path, mode: MovePeers) -> Result<(), String> {
    if mode == MovePeers::Never {
        return Err("[executor] v2_move_peers = \"never\"".into());
    }
    let meta = std::fs::metadata(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let procs_uid = std::fs::metadata(base.join("cgroup.procs"))
        .map(|m| m.uid())
        .map_err(|e| format!("{}/cgroup.procs: {e}", base.display()))?;
    let euid = geteuid().as_raw();
    decide_peer_move(
        mode,
        euid,
        meta.uid(),
        procs_uid,
        delegation_marked(base),
        base,
    )
}

/// The rule behind [`peer_move_allowed`], without file-system access (unit-tested).
pub(super) fn decide_peer_move(
    mode: MovePeers,
    euid: u32,
    dir_uid: u32,
    procs_uid: u32,
    marked: bool,
    base: &Path,
) -> Result<(), String> {
    if mode == MovePeers::Never {
        return Err("[executor] v2_move_peers = \"never\"".into());
    }
    if dir_uid != euid || procs_uid != euid {
        return Err(format!(
            "{} is owned by uid {dir_uid} (cgroup.procs by uid {procs_uid}), not by this \
             user (uid {euid}): presize moves no process out of a cgroup it does not own",
            base.display()
        ));
    }
    if euid == 0 && mode == MovePeers::Auto && !marked {
        return Err(format!(
            "{} is not marked delegated (no trusted.delegate or user.delegate xattr, which \
             systemd sets for Delegate=yes); set [executor] v2_move_peers = \"always\" to move \
             them anyway",
            base.display()
        ));
    }
    Ok(())
}

/// systemd's delegation mark on `dir`: a `trusted.delegate` or `user.delegate` xattr of `1`.
fn delegation_marked(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    DELEGATE_XATTRS.iter().any(|name| {
        let Ok(name) = CString::new(*name) else {
            return false;
        };
        let mut buf = [0u8; 8];
        // SAFETY: `path` and `name` are NUL-terminated and outlive the call; `buf` is a
        // writable buffer of the length passed.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        usize::try_from(n).is_ok_and(|n| buf.get(..n) == Some(b"1".as_slice()))
    })
}

/// For a user without a usable cgroup: the command that gets them one, when systemd's user
/// manager has a subtree delegated to them (`user.slice/user-UID.slice/user@UID.service`).
pub(super) fn user_hint(mount_dir: &Path) -> String {
    let euid = geteuid().as_raw();
    if euid == 0 {
        return String::new();
    }
    let manager = mount_dir
        .join("user.slice")
        .join(format!("user-{euid}.slice"))
        .join(format!("user@{euid}.service"));
    match std::fs::metadata(&manager) {
        Ok(m) if m.is_dir() && m.uid() == euid => format!(
            "; your systemd user manager has a delegated subtree ({}): run presize as \
             `systemd-run --user --scope -p Delegate=yes presize run ...`",
            manager.display()
        ),
        _ => String::new(),
    }
}

/// Enables `memory` (required) then `pids`/`cpu` (if available) on `base`; checks that `memory` is on.
///
/// `memory` goes first: enabling a threaded controller (`cpu`, `pids`) alone while `base` still
/// has processes would turn it into a thread root and break every child. While other processes
/// keep `base` busy, they are moved into `supervisor` if `peers` allows it, else waited for if
/// they are all presize (concurrent instances about to move themselves).
pub(super) fn enable_controllers(
    fs: &Fs,
    base: &Path,
    available: &[String],
    peers: &mut Peers,
) -> Result<(), String> {
    let subtree = base.join("cgroup.subtree_control");
    let current = read_words(&subtree).map_err(|e| e.to_string())?;
    if !current.iter().any(|c| c == "memory") {
        let mut attempt = 1;
        loop {
            let err = match fs.write_file(&subtree, "+memory") {
                Ok(()) => break,
                Err(e) => e,
            };
            let busy = matches!(err, CgroupError::Io { ref source, .. }
                if source.raw_os_error() == Some(libc::EBUSY));
            if busy && attempt < ENABLE_TRIES {
                if peers.allowed.is_ok() {
                    peers.move_all(fs, base).map_err(|why| {
                        format!("cannot enable the memory controller: {err}; {why}")
                    })?;
                    attempt += 1;
                    continue;
                }
                if only_presize_left(base) {
                    attempt += 1;
                    std::thread::sleep(ENABLE_PAUSE);
                    continue;
                }
            }
            let others = read_pids(base).unwrap_or_default();
            let hint = match (&peers.allowed, others.is_empty()) {
                (_, true) => String::new(),
                (Ok(()), false) => format!(
                    "; processes {others:?} are still in {} after moving them {} times",
                    base.display(),
                    attempt - 1
                ),
                (Err(why), false) => format!(
                    "; processes {others:?} are still in {} and were not moved ({why}): \
                     presize must be the only process in its delegated cgroup (or use systemd \
                     DelegateSubgroup=supervisor, systemd >= 254)",
                    base.display()
                ),
            };
            return Err(format!("cannot enable the memory controller: {err}{hint}"));
        }
    }
    for ctrl in WANTED.iter().skip(1) {
        let have = current.iter().any(|c| c == ctrl);
        if !have && available.iter().any(|c| c == ctrl) {
            // Optional: a job still runs capped without pids/cpu.
            let _ = fs.write_file(&subtree, &format!("+{ctrl}"));
        }
    }
    let enabled = read_words(&subtree).map_err(|e| e.to_string())?;
    if enabled.iter().any(|c| c == "memory") {
        Ok(())
    } else {
        Err(format!(
            "memory is not enabled in {} after writing +memory",
            subtree.display()
        ))
    }
}
