use super::fs::{keyed_value, Fs};
use super::procfs::{relative_to_mount, unescape_mount_field};
use super::*;

#[test]
fn kind_serialises_lowercase() {
    for (k, s) in [
        (CgroupKind::V2, "v2"),
        (CgroupKind::V1, "v1"),
        (CgroupKind::None, "none"),
    ] {
        assert_eq!(k.to_string(), s);
        assert_eq!(k.as_str(), s);
    }
    // serde attribute check without a JSON dependency: the derive uses these names.
    let t: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        serde::de::IntoDeserializer::into_deserializer("v1");
    assert_eq!(CgroupKind::deserialize(t).ok(), Some(CgroupKind::V1));
}

#[test]
fn autotraits() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Backend>();
    send_sync::<JobCgroup>();
    send_sync::<CgroupError>();
}

#[test]
fn names() {
    for ok in ["a", "job-1", "presize-abc_DEF.1", &"x".repeat(64), "..."] {
        assert!(validate_name(ok).is_ok(), "{ok:?}");
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "/a",
        "a b",
        "a\n",
        &"x".repeat(65),
        "supervisor",
    ] {
        assert!(
            matches!(validate_name(bad), Err(CgroupError::InvalidName(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn mountinfo_lines() {
    let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,relatime shared:16 master:3 - cgroup cgroup rw,memory
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct ro,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 /docker/x /mnt/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate
garbage line
";
    let m = parse_mountinfo(text);
    assert_eq!(m.len(), 3);
    assert!(m[0].is_v1_with("memory"));
    assert!(!m[0].read_only);
    assert!(m[1].is_v1_with("cpuacct") && m[1].is_v1_with("cpu"));
    assert!(m[1].read_only);
    assert_eq!(m[2].fstype, "cgroup2");
    assert_eq!(m[2].mount_point, "/mnt/with space");
    assert_eq!(m[2].root, "/docker/x");
    assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
    assert_eq!(unescape_mount_field("trailing\\04"), "trailing\\04");
}

#[test]
fn proc_self_cgroup() {
    let p = ProcCgroup::parse(
        "9:name=systemd:/\n4:memory:/process_api/e3\n2:cpu,cpuacct:/a:b\n0::/x/y\n",
    );
    assert_eq!(p.v1_path("memory"), Some("/process_api/e3"));
    assert_eq!(p.v1_path("cpuacct"), Some("/a:b"));
    assert_eq!(p.v1_path("pids"), None);
    assert_eq!(p.v2_path(), Some("/x/y"));
    assert_eq!(ProcCgroup::parse("").v2_path(), None);
}

#[test]
fn paths_relative_to_mounts() {
    assert_eq!(relative_to_mount("/a/b", "/").as_deref(), Some("/a/b"));
    assert_eq!(relative_to_mount("/a/b", "/a").as_deref(), Some("/b"));
    assert_eq!(relative_to_mount("/a", "/a").as_deref(), Some("/"));
    assert_eq!(relative_to_mount("/ab", "/a"), None);
    assert_eq!(relative_to_mount("/../../x", "/"), None);
    assert_eq!(relative_to_mount("/a/./b", "/"), Some("/a/./b".to_string()));
    assert_eq!(relative_to_mount("relative", "/"), None);
}

#[test]
fn keyed_files() {
    let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(keyed_value(t, "oom_kill"), Some(3));
    assert_eq!(keyed_value(t, "oom"), None);
    assert_eq!(keyed_value("usage_usec x\n", "usage_usec"), None);
}

#[test]
fn detect_never_panics_on_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Backend::detect_in(
        &Fs::kernel(),
        dir.path(),
        "garbage\n::\n0::\n",
        "x\n- - -\n",
        &V2Options::default(),
    );
    assert_eq!(b.kind(), CgroupKind::None);
    assert!(b
        .why_none()
        .unwrap_or_default()
        .starts_with("no writable memory controller"));
}

#[test]
fn errors_name_the_path() {
    let fs = Fs::kernel();
    let e = fs.rmdir_retry(Path::new("/proc/self/definitely-not-a-dir/x"));
    assert!(e.is_ok(), "ENOENT counts as removed");
    let e = fs.write_file(Path::new("/nonexistent-presize/memory.max"), "1");
    let msg = e
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.starts_with("/nonexistent-presize/memory.max: "),
        "{msg}"
    );
}
