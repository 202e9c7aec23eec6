//! Running a job as another user (`presize run --user NAME`): resolved before the fork,
//! applied in the child after it has joined its cgroup and before it execs.
//!
//! The job gets a reset environment, like `sudo`'s `env_reset` or systemd's `User=`: only
//! `TERM`, `LANG`, `LANGUAGE`, `TZ`, `COLORTERM` and `LC_*` pass from presize's environment;
//! `HOME`, `USER`, `LOGNAME`, `SHELL` come from the user database and `PATH` is
//! `/usr/local/bin:/usr/bin:/bin`, which is also the path the program is looked up in.

use std::ffi::{CString, OsString};
use std::io;

use nix::errno::Errno;
use nix::unistd::{geteuid, getgrouplist, setgid, setgroups, setuid, Gid, Uid, User};

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
    pub groups: Vec<Gid>,
    pub home: String,
    /// Login shell from the user database.
    pub shell: String,
}

/// `PATH` of a job run with `--user` (Debian's `ENV_PATH` for ordinary users).
pub(crate) const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Variables that pass from presize's environment to a `--user` job (plus every `LC_*`).
pub(crate) const KEPT_VARS: [&str; 5] = ["TERM", "LANG", "LANGUAGE", "TZ", "COLORTERM"];

impl RunAs {
    /// Resolve a user name or numeric uid. Only root may switch users; switching to root
    /// itself is refused (it would be a no-op that hides a configuration mistake).
    pub fn resolve(spec: &str) -> Result<RunAs, UserError> {
        let me = geteuid().as_raw();
        let who = lookup(spec)?.ok_or_else(|| UserError::Unknown(spec.to_owned()))?;
        if who.uid == 0 {
            return Err(UserError::Root(spec.to_owned()));
        }
        if me != 0 && me != who.uid {
            return Err(UserError::NotRoot(spec.to_owned(), me));
        }
        Ok(who)
    }

    /// The job's environment: the safe set for this user (see the module docs).
    pub(crate) fn env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                let key = k.to_string_lossy();
                KEPT_VARS.contains(&key.as_ref()) || key.starts_with("LC_")
            })
            .collect();
        for (k, v) in [
            ("HOME", self.home.as_str()),
            ("USER", &self.name),
            ("LOGNAME", &self.name),
            ("SHELL", &self.shell),
            ("PATH", USER_PATH),
        ] {
            env.push((k.into(), v.into()));
        }
        env
    }

    /// Reset `cmd`'s environment to the safe set for this user (see the module docs).
    pub(crate) fn apply_env(&self, cmd: &mut std::process::Command) {
        cmd.env_clear().envs(self.env());
    }

    /// Drop to this user. Call in the child between `fork(3)` and exec (async-signal-safe:
    /// only system calls on data prepared before the fork).
    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        if geteuid().is_root() {
            setgroups(&self.groups)?;
        }
        setgid(Gid::from_raw(self.gid))?;
        setuid(Uid::from_raw(self.uid))?;
        // Paranoia: regaining root must be impossible now.
        if self.uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}

/// Look a user up by name, or by number when the spec is all digits.
fn lookup(spec: &str) -> Result<Option<RunAs>, UserError> {
    let err = |source: nix::Error| UserError::Lookup {
        name: spec.to_owned(),
        source: source.into(),
    };
    if spec.is_empty() || spec.contains('\0') {
        return Ok(None);
    }
    let found = match spec.parse::<libc::uid_t>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(spec),
    };
    let user = match found {
        Ok(Some(u)) => u,
        Ok(None) | Err(Errno::ENOENT | Errno::ESRCH) => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let groups = group_list(&user.name, user.gid).map_err(err)?;
    Ok(Some(RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        home: user.dir.to_string_lossy().into_owned(),
        shell: match user.shell.as_os_str().is_empty() {
            true => String::from("/bin/sh"),
            false => user.shell.to_string_lossy().into_owned(),
        },
        name: user.name,
    }))
}

/// The user's groups (`getgrouplist`), the primary group included.
fn group_list(name: &str, gid: Gid) -> nix::Result<Vec<Gid>> {
    let c = CString::new(name).map_err(|_| Errno::EINVAL)?;
    getgrouplist(&c, gid)
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
        assert!(by_name.groups.contains(&Gid::from_raw(by_name.gid)));
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
