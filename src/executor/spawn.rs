//! Starting the job process in its own process group, inside its cgroup(s) before it can run
//! or fork, holding the terminal if presize held it, as the `--user` if one was given.
//!
//! Where the job has a cgroup2 directory (v2, or the hybrid tree of a v1 host), the child is
//! created in it by `clone3(CLONE_INTO_CGROUP)` (Linux >= 5.7): the kernel places it at fork
//! time instead of migrating it afterwards through `cgroup.procs`. The child still writes
//! `"0"` to the `cgroup.procs` of any v1 directory. When `clone3` is refused (older kernel,
//! seccomp, a cgroup the kernel will not fork into), the job is spawned the usual way with
//! `std::process::Command` and every directory is joined through `cgroup.procs` in `pre_exec`.
//! The two paths do the same steps in the same order: `chdir`, `setpgid(0, 0)`, signal mask
//! and SIGPIPE reset, cgroup writes, terminal, `setgroups`/`setgid`/`setuid`, `execve`.
//! `PRESIZE_SPAWN_CLONE3=0` in the environment turns the `clone3` path off.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{getpid, pipe2, read, tcsetpgrp, Pid};

use super::user::RunAs;

/// Environment variable that turns the `clone3` path off when set to `0`.
const CLONE3_ENV: &str = "PRESIZE_SPAWN_CLONE3";
/// `CLONE_INTO_CGROUP` (linux/sched.h, Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of linux/sched.h up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What to start, prepared by the executor.
pub(crate) struct SpawnRequest<'a> {
    /// `argv[0]` as the user gave it.
    pub arg0: &'a OsStr,
    /// The program to execute (resolved before).
    pub program: &'a Path,
    pub args: &'a [OsString],
    pub cwd: Option<&'a Path>,
    pub run_as: Option<&'a RunAs>,
    /// Standard descriptor of the terminal to hand to the job's process group.
    pub tty: Option<RawFd>,
}

/// How the job was placed into its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// No cgroup (the none backend).
    None,
    /// `clone3(CLONE_INTO_CGROUP)` (plus `cgroup.procs` writes for v1 directories).
    Clone3,
    /// `cgroup.procs` writes in `pre_exec` only.
    ProcsWrite,
}

/// Starts the job; returns its pid and how it was placed. `clone_into` is
/// [`JobCgroup::clone_into`](super::cgroup::JobCgroup::clone_into), `procs_fds` every
/// `cgroup.procs` descriptor of the job.
pub(crate) fn spawn(
    req: &SpawnRequest<'_>,
    clone_into: Option<(RawFd, &[RawFd])>,
    procs_fds: &[RawFd],
) -> io::Result<(i32, Placement)> {
    let allowed = std::env::var_os(CLONE3_ENV).is_none_or(|v| v != "0");
    if let Some((dir, v1_fds)) = clone_into.filter(|_| allowed) {
        if let Some(pid) = spawn_clone3(req, dir, v1_fds)? {
            return Ok((pid, Placement::Clone3));
        }
    }
    let pid = spawn_command(req, procs_fds)?;
    let placement = match procs_fds.is_empty() {
        true => Placement::None,
        false => Placement::ProcsWrite,
    };
    Ok((pid, placement))
}

/// A signal set holding only SIGTTOU (built before a fork, used in the child).
fn sigttou_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTTOU);
    set
}

/// Make `pgrp` the foreground process group of `fd` with SIGTTOU blocked (a background group
/// calling `tcsetpgrp` is otherwise stopped). Async-signal-safe.
pub(crate) fn give_tty(fd: RawFd, pgrp: Pid, ttou: &SigSet) {
    let mut old = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(ttou), Some(&mut old));
    // SAFETY: `fd` is one of the standard descriptors, checked to be a terminal before the
    // job started; it stays open for the whole call.
    let tty = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = tcsetpgrp(tty, pgrp);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
}

/// Writes `"0"` (this process) into each `cgroup.procs` descriptor. Async-signal-safe.
fn join_cgroups(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: write(2) of a 1-byte static buffer to a descriptor the parent keeps open
        // until the child has exec'd.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The fallback: `std::process::Command` with the placement and the rest in `pre_exec`.
fn spawn_command(req: &SpawnRequest<'_>, procs_fds: &[RawFd]) -> io::Result<i32> {
    let mut cmd = std::process::Command::new(req.program);
    cmd.arg0(req.arg0).args(req.args).process_group(0);
    if let Some(dir) = req.cwd {
        cmd.current_dir(dir);
    }
    if let Some(who) = req.run_as {
        who.apply_env(&mut cmd);
    }
    let fds = procs_fds.to_vec();
    let run_as = req.run_as.cloned();
    let tty = req.tty;
    let ttou = sigttou_set();
    // SAFETY: the closure only calls write(2) on pre-opened descriptors, sigprocmask +
    // tcsetpgrp, and setgroups/setgid/setuid on data prepared before the fork
    // (async-signal-safe, no allocation), so the child joins its cgroups before exec and
    // before it can fork, takes the terminal if presize had it, and drops to the job's user
    // only after that.
    unsafe {
        cmd.pre_exec(move || {
            join_cgroups(&fds)?;
            if let Some(fd) = tty {
                give_tty(fd, getpid(), &ttou);
            }
            if let Some(who) = &run_as {
                who.apply_in_child()?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Dropping std's Child neither waits nor kills; the executor reaps with wait4 for rusage.
    Ok(child.id() as i32)
}

/// Everything the clone3 child needs, allocated before the clone.
struct ChildPlan<'a> {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    v1_fds: &'a [RawFd],
    tty: Option<RawFd>,
    ttou: SigSet,
    empty: SigSet,
    /// (uid, gid, supplementary groups) of `--user`.
    user: Option<(libc::uid_t, libc::gid_t, &'a [nix::unistd::Gid])>,
    /// Write end of the exec-error pipe (`O_CLOEXEC`: closed by a successful exec).
    err_fd: RawFd,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument, the program, the directory or an environment variable contains a NUL byte",
        )
    })
}

/// `clone3(CLONE_INTO_CGROUP)` into `dir`; `Ok(None)` when the kernel refuses (then the caller
/// falls back to [`spawn_command`]), `Err` when the job could not be started (e.g. exec failed).
fn spawn_clone3(req: &SpawnRequest<'_>, dir: RawFd, v1_fds: &[RawFd]) -> io::Result<Option<i32>> {
    // A program name without a slash would need execvp's PATH search: leave it to std.
    if !req.program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(None);
    }
    let program = cstring(req.program.as_os_str())?;
    let args: Vec<CString> = std::iter::once(req.arg0)
        .chain(req.args.iter().map(OsString::as_os_str))
        .map(cstring)
        .collect::<io::Result<_>>()?;
    let env_pairs: Vec<(OsString, OsString)> = match req.run_as {
        Some(who) => who.env(),
        None => std::env::vars_os().collect(),
    };
    let env: Vec<CString> = env_pairs
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect::<io::Result<_>>()?;
    let cwd = req.cwd.map(|d| cstring(d.as_os_str())).transpose()?;
    let (err_read, err_write): (OwnedFd, OwnedFd) = pipe2(OFlag::O_CLOEXEC)?;
    let plan = ChildPlan {
        program,
        argv: args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        envp: env
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
        cwd,
        v1_fds,
        tty: req.tty,
        ttou: sigttou_set(),
        empty: SigSet::empty(),
        user: req.run_as.map(|w| (w.uid, w.gid, w.groups.as_slice())),
        err_fd: err_write.as_raw_fd(),
    };
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM duplicates the process like fork(2): the child gets a
    // copy of this address space and of this thread's stack (stack = 0). `args` is a valid
    // `struct clone_args` of the size passed. The child only runs `exec_child`, which makes
    // raw system calls on data prepared above and never returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc == 0 {
        // SAFETY: this is the child of clone3; see `exec_child`.
        unsafe { exec_child(&plan) }
    }
    drop(err_write);
    if rc < 0 {
        // ENOSYS (Linux < 5.3 or seccomp), E2BIG/EINVAL (no CLONE_INTO_CGROUP, < 5.7), EBUSY,
        // EOPNOTSUPP, EACCES (a cgroup the kernel will not fork into): let the cgroup.procs
        // path try, which reports the real error if placement is impossible.
        return Ok(None);
    }
    let pid = rc as i32;
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        match read(&err_read, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if got == 0 {
        return Ok(Some(pid)); // exec succeeded: the pipe was closed by O_CLOEXEC
    }
    // The child failed before or at exec and exits 127; reap it.
    let _ = waitpid(Pid::from_raw(pid), None);
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

/// The clone3 child: the same steps as `std::process::Command` + the executor's `pre_exec`,
/// with raw system calls only. glibc does not know this is a new process (no `fork(3)`
/// bookkeeping ran), so nothing here may allocate, take a lock, or use a glibc wrapper that
/// acts on every thread (`setuid(3)` and friends do: the raw system calls are used instead).
///
/// # Safety
/// Call only in the child of `clone3` without `CLONE_VM`.
unsafe fn exec_child(p: &ChildPlan<'_>) -> ! {
    let fail = |err: i32| -> ! {
        let bytes = err.to_ne_bytes();
        // SAFETY: write(2) of a 4-byte local buffer; _exit(2) ends the child at once.
        unsafe {
            libc::write(p.err_fd, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        }
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY (whole block): system calls on pointers to NUL-terminated strings, arrays and
    // signal sets prepared by the parent before the clone, alive in this copy of its memory.
    unsafe {
        if let Some(cwd) = &p.cwd {
            if libc::chdir(cwd.as_ptr()) != 0 {
                fail(errno());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(errno());
        }
        // As std does: an empty signal mask and SIGPIPE back to its default.
        if pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&p.empty), None).is_err() {
            fail(libc::EINVAL);
        }
        if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
            fail(errno());
        }
        if let Err(e) = join_cgroups(p.v1_fds) {
            fail(e.raw_os_error().unwrap_or(libc::EIO));
        }
        if let Some(fd) = p.tty {
            give_tty(
                fd,
                Pid::from_raw(libc::syscall(libc::SYS_getpid) as i32),
                &p.ttou,
            );
        }
        if let Some((uid, gid, groups)) = p.user {
            if libc::syscall(libc::SYS_geteuid) == 0
                && libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
            {
                fail(errno());
            }
            if libc::syscall(libc::SYS_setgid, gid) != 0 {
                fail(errno());
            }
            if libc::syscall(libc::SYS_setuid, uid) != 0 {
                fail(errno());
            }
            // Paranoia: regaining root must be impossible now.
            if uid != 0 && libc::syscall(libc::SYS_setuid, 0) == 0 {
                fail(libc::EPERM);
            }
        }
        libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(errno())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;

    use super::*;
    use crate::executor::cgroup::{Backend, CgroupLimits, JobCgroup};

    fn backend() -> Option<Backend> {
        let b = Backend::detect_with(&crate::executor::cgroup::V2Options::default());
        if nix::unistd::geteuid().is_root() && b.why_none().is_none() {
            return Some(b);
        }
        if std::env::var_os("PRESIZE_REQUIRE_CGROUP_TESTS").is_some_and(|v| v == "1") {
            panic!(
                "spawn test needs root and a cgroup backend: {:?}",
                b.why_none()
            );
        }
        eprintln!("skipped: needs root and a cgroup backend");
        None
    }

    fn request<'a>(program: &'a Path, args: &'a [OsString]) -> SpawnRequest<'a> {
        SpawnRequest {
            arg0: program.as_os_str(),
            program,
            args,
            cwd: None,
            run_as: None,
            tty: None,
        }
    }

    /// The child is listed in every job directory's `cgroup.procs` and leads its own
    /// process group.
    fn assert_placed(job: &JobCgroup, pid: i32) {
        let dirs: Vec<PathBuf> = job.paths();
        assert!(!dirs.is_empty());
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            assert!(
                procs.split_whitespace().any(|p| p == pid.to_string()),
                "{pid} not in {}: {procs:?}",
                dir.display()
            );
        }
        assert_eq!(
            nix::unistd::getpgid(Some(Pid::from_raw(pid))),
            Ok(Pid::from_raw(pid))
        );
    }

    fn reap(pid: i32) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
    }

    #[test]
    fn clone3_places_the_child_in_every_directory() {
        let Some(b) = backend() else { return };
        let name = format!("presize-test-clone3-{}", std::process::id());
        let job = b.create(&name, &CgroupLimits::default()).expect("create");
        let Some(into) = job.clone_into() else {
            eprintln!("skipped: no cgroup2 directory for this job");
            return;
        };
        let args = [OsString::from("30")];
        let sleep = Path::new("/bin/sleep");
        let (pid, how) = spawn(&request(sleep, &args), Some(into), job.procs_fds()).expect("spawn");
        assert_eq!(how, Placement::Clone3);
        assert_placed(&job, pid);
        reap(pid);
        job.remove().expect("remove");
    }

    #[test]
    fn a_refused_clone3_falls_back_to_cgroup_procs() {
        let Some(b) = backend() else { return };
        let name = format!("presize-test-fallback-{}", std::process::id());
        let job = b.create(&name, &CgroupLimits::default()).expect("create");
        // Not a cgroup directory: the kernel refuses CLONE_INTO_CGROUP (EBADF).
        let file = tempfile::tempfile().expect("tempfile");
        let args = [OsString::from("30")];
        let sleep = Path::new("/bin/sleep");
        let (pid, how) = spawn(
            &request(sleep, &args),
            Some((file.as_raw_fd(), job.procs_fds())),
            job.procs_fds(),
        )
        .expect("spawn");
        assert_eq!(how, Placement::ProcsWrite);
        assert_placed(&job, pid);
        reap(pid);
        job.remove().expect("remove");
    }

    #[test]
    fn exec_failure_in_the_clone3_child_is_reported_and_reaped() {
        let Some(b) = backend() else { return };
        let name = format!("presize-test-noexec-{}", std::process::id());
        let job = b.create(&name, &CgroupLimits::default()).expect("create");
        let Some(into) = job.clone_into() else {
            eprintln!("skipped: no cgroup2 directory for this job");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let not_exec = dir.path().join("script");
        std::fs::write(&not_exec, "#!/bin/sh\n").expect("write");
        let err = match spawn(&request(&not_exec, &[]), Some(into), job.procs_fds()) {
            Ok((pid, _)) => panic!("exec of a non-executable file started pid {pid}"),
            Err(e) => e,
        };
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        // The failed child exited and was reaped: nothing is left in the job.
        assert!(job.is_empty());
        job.remove().expect("remove");
    }
}
