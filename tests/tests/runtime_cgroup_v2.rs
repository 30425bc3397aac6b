//! cgroup v2 on this hybrid host's unified hierarchy, where v1 controllers cannot interfere:
//! the eBPF device filter alone denies what the rules deny (and containers get one on their v2
//! group), and the v2 freezer freezes and thaws.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::PathBuf;
use std::process::Command;

use skiff_runtime::device_filter;
use skiff_runtime::spec::DeviceRule;
use skiff_tests::{Bundle, TempDir, ok, require, require_root_and, run_via_files, runtime};

fn unified() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mount = left.split(' ').nth(4)?;
        right.starts_with("cgroup2 ").then(|| PathBuf::from(mount))
    })
}

fn rule(allow: bool, kind: &str, major: Option<i64>, minor: Option<i64>) -> DeviceRule {
    DeviceRule {
        allow,
        kind: Some(kind.into()),
        major,
        minor,
        access: Some("rwm".into()),
    }
}

#[test]
fn the_ebpf_filter_alone_denies_what_the_rules_deny() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(v2) = unified() else {
        require(false, "a cgroup2 mount");
        return;
    };
    let dir = v2.join(format!("skiff-test-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = device_filter::compile(&[
        rule(false, "a", None, None),
        rule(true, "c", Some(1), Some(5)),
    ])
    .unwrap()
    .unwrap();
    device_filter::attach(&dir, &prog).unwrap();
    assert_eq!(device_filter::attached(&dir).unwrap(), 1);
    // A shell joins the group, then tries /dev/zero (allowed) and /dev/null (denied).
    let script = format!(
        "echo $$ > {}/cgroup.procs && head -c 3 /dev/zero | wc -c && cat /dev/null",
        dir.display()
    );
    let out = run_via_files(Command::new("sh").args(["-c", &script]));
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3",
        "reading /dev/zero is allowed"
    );
    assert!(!out.status.success(), "reading /dev/null must be denied");
    assert!(
        skiff_tests::stderr(&out).contains("Operation not permitted"),
        "{}",
        skiff_tests::stderr(&out)
    );
}

#[test]
fn containers_get_the_filter_on_their_v2_group() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(v2) = unified() else {
        require(false, "a cgroup2 mount");
        return;
    };
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "sleep"]);
    let root = TempDir::new("devices-v2");
    ok(runtime(
        root.path(),
        &["run", "-d", "--bundle", b.path().to_str().unwrap(), "dv2"],
    ));
    let attached = device_filter::attached(&v2.join("skiff/dv2"));
    ok(runtime(root.path(), &["delete", "--force", "dv2"]));
    assert_eq!(
        attached.unwrap(),
        1,
        "one device program on the container's v2 group"
    );
}

/// The v2 freezer (cgroup.freeze / cgroup.events) on the real unified hierarchy: a sleeping
/// process is frozen and thawed through skiff's `Cgroup`, as `pause`/`resume` do on v2 hosts.
#[test]
fn the_v2_freezer_freezes_and_thaws() {
    use skiff_runtime::cgroup::{Cgroup, Version};
    if !require_root_and(&[]) {
        return;
    }
    let Some(v2) = unified() else {
        require(false, "a cgroup2 mount");
        return;
    };
    let dir = v2.join(format!("skiff-test-freeze-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cg = Cgroup {
        dirs: vec![(Version::V2, Vec::new(), dir.clone())],
    };
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    cg.add(pid).unwrap();
    cg.freeze(true).unwrap();
    let frozen = cg.is_frozen();
    let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap();
    cg.freeze(false).unwrap();
    let thawed = !cg.is_frozen();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir(&dir);
    assert!(frozen, "frozen after freeze(true)");
    assert!(events.lines().any(|l| l == "frozen 1"), "{events}");
    assert!(thawed, "thawed after freeze(false)");
}
