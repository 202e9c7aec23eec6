//! Who owns a row, a reservation or a cgroup: more than a pid.
//!
//! A pid alone names nothing outside its PID namespace and boot: two presize instances in
//! different PID namespaces (containers, `unshare -p`) that share a cgroup hierarchy or a
//! database would each see the other's pid as "not running" and kill the other's jobs. Every
//! executor therefore carries an [`Identity`]: boot id, the inode of its PID namespace, its pid
//! and the pid's start time, and a random per-process token. Something it left behind is only
//! treated as orphaned when that is *proven* ([`Liveness::Dead`]); otherwise it is left alone.

use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// Prefix of every cgroup presize creates.
pub const CGROUP_PREFIX: &str = "presize-";

/// The identity of this executor process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `/proc/sys/kernel/random/boot_id`, if readable.
    pub boot_id: Option<String>,
    /// Inode of `/proc/self/ns/pid`, if readable.
    pub pidns: Option<u64>,
    /// Our pid (in our own PID namespace).
    pub pid: u32,
    /// Start time of our pid in clock ticks since boot (`/proc/self/stat` field 22).
    pub start_ticks: Option<u64>,
    /// 8 random hex digits, fresh for every process.
    pub token: String,
}

/// Whether the owner of something is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Proven alive (same namespace, same pid and start time).
    Alive,
    /// Proven gone: another boot, or our namespace and no such process.
    Dead,
    /// Cannot be decided from here (another PID namespace, or no identity recorded).
    Unknown,
}

/// The boot id of the running kernel.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The inode of this process's PID namespace (`/proc/self/ns/pid`).
pub(crate) fn pidns_inode() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

fn random_token() -> String {
    let mut buf = [0u8; 4];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut buf)
    });
    if read.is_err() {
        // No entropy source: fall back to time and pid, still distinct per process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        buf = (nanos ^ std::process::id().rotate_left(16)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Identity {
    /// This process's identity (computed once).
    pub fn current() -> &'static Identity {
        static ID: OnceLock<Identity> = OnceLock::new();
        ID.get_or_init(|| {
            let pid = std::process::id();
            Identity {
                boot_id: boot_id(),
                pidns: pidns_inode(),
                pid,
                start_ticks: super::proc_start_ticks(pid),
                token: random_token(),
            }
        })
    }

    /// Cgroup name of one attempt: `presize-<pid>-<start>-<pidns hex>-<token>-<row>`.
    ///
    /// The pid comes first because presize versions before the owner identity read the
    /// first field as the owner's pid and kill the cgroup when that does not parse or is not
    /// running: with our pid there, they leave our live jobs alone.
    pub fn cgroup_name(&self, row: i64) -> String {
        format!(
            "{CGROUP_PREFIX}{}-{}-{:x}-{}-{row}",
            self.pid,
            self.start_ticks.unwrap_or(0),
            self.pidns.unwrap_or(0),
            self.token
        )
    }
}

/// The owner encoded in a cgroup name made by [`Identity::cgroup_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupOwner {
    pub pidns: u64,
    pub pid: u32,
    pub start_ticks: u64,
    pub token: String,
    pub row: i64,
}

/// Parse a cgroup name made by [`Identity::cgroup_name`]; `None` for anything else (older
/// `presize-<pid>-<row>` names included: they carry no proof of ownership).
pub(crate) fn parse_cgroup_name(name: &str) -> Option<CgroupOwner> {
    let rest = name.strip_prefix(CGROUP_PREFIX)?;
    let parts: Vec<&str> = rest.split('-').collect();
    let [pid, start, ns, token, row] = parts.as_slice() else {
        return None;
    };
    if token.len() != 8 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(CgroupOwner {
        pidns: u64::from_str_radix(ns, 16).ok()?,
        pid: pid.parse().ok()?,
        start_ticks: start.parse().ok()?,
        token: (*token).to_string(),
        row: row.parse().ok()?,
    })
}

/// Decide whether an owner recorded as (boot id, PID namespace, pid, start time) still runs,
/// as seen from `me`. `None` fields were not recorded (rows of older versions).
pub fn liveness(
    me: &Identity,
    boot: Option<&str>,
    pidns: Option<u64>,
    pid: i64,
    start: Option<i64>,
) -> Liveness {
    if let (Some(theirs), Some(ours)) = (boot, me.boot_id.as_deref()) {
        if theirs != ours {
            // Nothing survives a reboot: not the process, not its cgroups.
            return Liveness::Dead;
        }
    }
    match (pidns, me.pidns) {
        (Some(theirs), Some(ours)) if theirs != ours => return Liveness::Unknown,
        (Some(_), None) => return Liveness::Unknown,
        _ => {}
    }
    if super::process_alive(pid, start) {
        Liveness::Alive
    } else {
        Liveness::Dead
    }
}

/// Liveness of the executor that created the cgroup `name` (see `parse_cgroup_name`).
pub fn cgroup_liveness(me: &Identity, name: &str) -> Liveness {
    match parse_cgroup_name(name) {
        None => Liveness::Unknown,
        Some(o) if o.pidns == 0 || o.start_ticks == 0 => Liveness::Unknown,
        Some(o) => liveness(
            me,
            None,
            Some(o.pidns),
            i64::from(o.pid),
            i64::try_from(o.start_ticks).ok(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_old_names_prove_nothing() {
        let me = Identity::current();
        let name = me.cgroup_name(42);
        assert!(name.len() <= 64, "{name}");
        let o = parse_cgroup_name(&name).expect("parse");
        assert_eq!(o.pid, me.pid);
        assert_eq!(o.row, 42);
        assert_eq!(Some(o.pidns), me.pidns);
        assert_eq!(cgroup_liveness(me, &name), Liveness::Alive);
        assert_eq!(parse_cgroup_name("presize-123-4"), None);
        assert_eq!(cgroup_liveness(me, "presize-999999-4"), Liveness::Unknown);
        assert_eq!(
            cgroup_liveness(me, "presize-1-2-3-zzzzzzzz-4"),
            Liveness::Unknown
        );
    }

    #[test]
    fn liveness_needs_proof() {
        let me = Identity::current();
        let ns = me.pidns;
        let start = me.start_ticks.map(|s| s as i64);
        let pid = i64::from(me.pid);
        assert_eq!(liveness(me, None, ns, pid, start), Liveness::Alive);
        // Same pid, other start time: a reused pid, so the owner is gone.
        assert_eq!(
            liveness(me, None, ns, pid, start.map(|s| s + 1)),
            Liveness::Dead
        );
        // Another PID namespace: pid numbers mean nothing here.
        let other = ns.map(|n| n + 1);
        assert_eq!(
            liveness(me, None, other, 999_999_999, None),
            Liveness::Unknown
        );
        // Another boot: dead whatever the pid.
        assert_eq!(
            liveness(me, Some("another-boot"), other, pid, start),
            Liveness::Dead
        );
        // Rows of older versions (no namespace recorded) keep the pid + start time rule.
        assert_eq!(liveness(me, None, None, 999_999_999, None), Liveness::Dead);
    }
}
