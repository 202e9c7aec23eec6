//! Running a job as another user (`presize run --user NAME`): resolved before the fork,
//! applied in the child after it has joined its cgroup and before it execs.
//!
//! The job gets a reset environment, like `sudo`'s `env_reset` or systemd's `User=`: only
//! [`KEPT_VARS`] (and `LC_*`) pass from presize's environment; `HOME`, `USER`, `LOGNAME`,
//! `SHELL` come from the user database and `PATH` is [`USER_PATH`], which is also the path the
//! program is looked up in.

use std::ffi::{CStr, CString};
use std::io;

/// Errors of resolving `--user`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("--user {0:?}: no such user (give a name from /etc/passwd or a numeric uid)")]
    Unknown(String),
    #[error("--user {0:?}: only root can run a job as another user (presize runs as uid {1})")]
    NotRoot(String, u32),
    #[error("--user {0:?}: refusing to run the job as root through --user; omit --user instead")]
    Root(String),
    #[error("--user {name:?}: cannot read the user database: {source}")]
    Lookup { name: String, source: io::Error },
}

/// Who a job runs as: resolved from the user database before the fork, so the child
/// only makes async-signal-safe system calls (`setgroups`, `setgid`, `setuid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups of the user (from /etc/group), including `gid`.
    pub groups: Vec<libc::gid_t>,
    pub home: String,
    /// Login shell from the user database.
    pub shell: String,
}

/// `PATH` of a job run with `--user` (Debian's `ENV_PATH` for ordinary users).
pub const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Variables that pass from presize's environment to a `--user` job (plus every `LC_*`).
pub const KEPT_VARS: [&str; 5] = ["TERM", "LANG", "LANGUAGE", "TZ", "COLORTERM"];

impl RunAs {
    /// Resolve a user name or numeric uid. Only root may switch users; switching to root
    /// itself is refused (it would be a no-op that hides a configuration mistake).
    pub fn resolve(spec: &str) -> Result<RunAs, UserError> {
        // SAFETY: trivial libc call.
        let me = unsafe { libc::geteuid() };
        let who = lookup(spec)?.ok_or_else(|| UserError::Unknown(spec.to_owned()))?;
        if who.uid == 0 {
            return Err(UserError::Root(spec.to_owned()));
        }
        if me != 0 && me != who.uid {
            return Err(UserError::NotRoot(spec.to_owned(), me));
        }
        Ok(who)
    }

    /// Reset `cmd`'s environment to the safe set for this user (see the module docs).
    pub fn apply_env(&self, cmd: &mut std::process::Command) {
        cmd.env_clear();
        for (k, v) in std::env::vars_os() {
            let key = k.to_string_lossy();
            if KEPT_VARS.contains(&key.as_ref()) || key.starts_with("LC_") {
                cmd.env(&k, &v);
            }
        }
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("SHELL", &self.shell)
            .env("PATH", USER_PATH);
    }

    /// Drop to this user. Call in the child between fork and exec (async-signal-safe:
    /// only system calls on data prepared before the fork).
    pub fn apply_in_child(&self) -> io::Result<()> {
        // SAFETY: plain system calls; `groups` was allocated before the fork.
        unsafe {
            if libc::geteuid() == 0
                && libc::setgroups(self.groups.len() as _, self.groups.as_ptr()) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(self.gid) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setuid(self.uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Paranoia: regaining root must be impossible now.
            if self.uid != 0 && libc::setuid(0) == 0 {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        Ok(())
    }
}

/// Look a user up by name, or by number when the spec is all digits.
fn lookup(spec: &str) -> Result<Option<RunAs>, UserError> {
    let err = |source| UserError::Lookup {
        name: spec.to_owned(),
        source,
    };
    if spec.is_empty() || spec.contains('\0') {
        return Ok(None);
    }
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = spec.parse::<libc::uid_t>() {
        // SAFETY: buffers are valid for the given lengths.
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) }
    } else {
        let c = CString::new(spec).map_err(|_| UserError::Unknown(spec.to_owned()))?;
        // SAFETY: as above; `c` is NUL-terminated.
        unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        }
    };
    if rc != 0 && rc != libc::ENOENT && rc != libc::ESRCH {
        return Err(err(io::Error::from_raw_os_error(rc)));
    }
    if result.is_null() {
        return Ok(None);
    }
    // SAFETY: getpw*_r filled these with NUL-terminated strings inside `buf`.
    let (name, home, shell) = unsafe {
        (
            CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(pw.pw_dir).to_string_lossy().into_owned(),
            if pw.pw_shell.is_null() {
                String::from("/bin/sh")
            } else {
                CStr::from_ptr(pw.pw_shell).to_string_lossy().into_owned()
            },
        )
    };
    let groups = group_list(&name, pw.pw_gid).map_err(err)?;
    Ok(Some(RunAs {
        name,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        groups,
        home,
        shell,
    }))
}

/// The user's groups (`getgrouplist`), the primary group included.
fn group_list(name: &str, gid: libc::gid_t) -> io::Result<Vec<libc::gid_t>> {
    let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut n: libc::c_int = 32;
    for _ in 0..8 {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut got = n;
        // SAFETY: `groups` holds `got` entries.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut got) };
        if rc >= 0 {
            groups.truncate(got.max(0) as usize);
            return Ok(groups);
        }
        n = got.max(n.saturating_mul(2));
    }
    Ok(vec![gid])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_by_name_and_by_uid() {
        // `nobody` exists on every Debian system.
        let Ok(Some(by_name)) = lookup("nobody") else {
            panic!("nobody not found");
        };
        let by_uid = lookup(&by_name.uid.to_string()).unwrap().unwrap();
        assert_eq!(by_name, by_uid);
        assert!(by_name.groups.contains(&by_name.gid));
    }

    #[test]
    fn unknown_and_root_are_refused() {
        assert!(matches!(
            RunAs::resolve("no-such-user-xyz"),
            Err(UserError::Unknown(_))
        ));
        assert!(matches!(RunAs::resolve("\0"), Err(UserError::Unknown(_))));
        assert!(matches!(RunAs::resolve("root"), Err(UserError::Root(_))));
        assert!(matches!(RunAs::resolve("0"), Err(UserError::Root(_))));
    }
}
