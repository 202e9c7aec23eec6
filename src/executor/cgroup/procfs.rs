//! Where this process sits in the cgroup hierarchies: `/proc/self/cgroup` and
//! `/proc/self/mountinfo` parsed, and our own cgroup directory located under a mount.

use std::fs;
use std::path::{Component, Path, PathBuf};

pub(super) fn read_proc_self() -> Result<(String, String), String> {
    let read = |p: &str| fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
    Ok((read("/proc/self/cgroup")?, read("/proc/self/mountinfo")?))
}

/// This process's cgroup membership, from `/proc/self/cgroup`.
#[derive(Debug, Default)]
pub(crate) struct ProcCgroup {
    /// Path in the unified hierarchy (`0::/path`).
    v2: Option<String>,
    /// v1 hierarchies: controllers (e.g. `cpu,cpuacct` split) and path.
    v1: Vec<(Vec<String>, String)>,
}

impl ProcCgroup {
    pub(crate) fn parse(text: &str) -> ProcCgroup {
        let mut out = ProcCgroup::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                out.v2 = Some(path.to_string());
            } else if !ctrls.is_empty() {
                let list = ctrls.split(',').map(str::to_string).collect();
                out.v1.push((list, path.to_string()));
            }
        }
        out
    }

    pub(crate) fn v2_path(&self) -> Option<&str> {
        self.v2.as_deref()
    }

    pub(crate) fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == controller))
            .map(|(_, p)| p.as_str())
    }
}

/// One line of `/proc/self/mountinfo` (only what the backends need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Root of the mount within its filesystem (field 4).
    pub root: String,
    /// Mount point (field 5), unescaped.
    pub mount_point: String,
    /// Filesystem type, e.g. `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Superblock options, e.g. `rw`, `memory` or `cpu`, `cpuacct`.
    pub super_opts: Vec<String>,
    /// Mounted read-only (per-mount or superblock option `ro`).
    pub read_only: bool,
}

impl Mount {
    /// A cgroup v1 hierarchy that has `controller`.
    pub(crate) fn is_v1_with(&self, controller: &str) -> bool {
        self.fstype == "cgroup" && self.super_opts.iter().any(|o| o == controller)
    }
}

pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let mount_opts = fields[5];
    let super_opts: Vec<String> = fields[sep + 3].split(',').map(str::to_string).collect();
    let read_only =
        mount_opts.split(',').any(|o| o == "ro") || super_opts.iter().any(|o| o == "ro");
    Some(Mount {
        root: unescape_mount_field(fields[3]),
        mount_point: unescape_mount_field(fields[4]),
        fstype: fields[sep + 1].to_string(),
        super_opts,
        read_only,
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
pub(super) fn unescape_mount_field(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mount_point` (absolute, from mountinfo) under the test root `root`.
fn under_root(root: &Path, mount_point: &str) -> PathBuf {
    root.join(mount_point.trim_start_matches('/'))
}

/// Our cgroup path `own` relative to a mount whose root is `mount_root`, or `None` when the
/// cgroup is not visible through that mount (or the path tries to climb out of it).
pub(super) fn relative_to_mount(own: &str, mount_root: &str) -> Option<String> {
    let rel = if mount_root == "/" {
        own
    } else if own == mount_root {
        "/"
    } else {
        own.strip_prefix(mount_root)
            .filter(|rest| rest.starts_with('/'))?
    };
    let normal = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    (normal && rel.starts_with('/')).then(|| rel.to_string())
}

/// A located cgroup directory of this process in some hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// The mount directory (under the test root).
    pub mount_dir: PathBuf,
    /// Our cgroup path relative to the mount, starting with `/`.
    pub rel: String,
    /// `mount_dir` + `rel`.
    pub dir: PathBuf,
    /// The mount is read-only.
    pub read_only: bool,
}

/// Finds our cgroup `own` in the first mount accepted by `pick` that shows it as a directory.
pub(crate) fn locate(
    root: &Path,
    mounts: &[Mount],
    own: &str,
    pick: impl Fn(&Mount) -> bool,
    what: &str,
) -> Result<Located, String> {
    let mut seen = Vec::new();
    for m in mounts.iter().filter(|m| pick(m)) {
        let mount_dir = under_root(root, &m.mount_point);
        let Some(rel) = relative_to_mount(own, &m.root) else {
            seen.push(format!(
                "{own} is outside the mount {} (root {})",
                mount_dir.display(),
                m.root
            ));
            continue;
        };
        let inner = rel.trim_start_matches('/');
        let dir = if inner.is_empty() {
            mount_dir.clone()
        } else {
            mount_dir.join(inner)
        };
        if dir.is_dir() {
            return Ok(Located {
                mount_dir,
                rel,
                dir,
                read_only: m.read_only,
            });
        }
        seen.push(format!("{} does not exist", dir.display()));
    }
    if seen.is_empty() {
        Err(format!("no {what} mounted"))
    } else {
        Err(seen.join(", "))
    }
}
