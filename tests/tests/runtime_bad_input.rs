//! Acceptance 5: bad input gives a clear error and leaves nothing behind (no state dir, cgroup,
//! mount or process).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use skiff_tests::{Bundle, TempDir, cgroup_dirs_named, ok, require_root_and, runtime, stderr};

/// Fails with a message containing `needle`; afterwards nothing of `id` exists.
#[track_caller]
fn refused(root: &std::path::Path, args: &[&str], id: &str, needle: &str) {
    let o = runtime(root, args);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(
        stderr(&o).contains(needle),
        "{args:?}: expected {needle:?} in {}",
        stderr(&o)
    );
    left_nothing(root, id);
}

#[track_caller]
fn left_nothing(root: &std::path::Path, id: &str) {
    assert!(!root.join(id).exists(), "state dir of {id} left behind");
    assert!(
        cgroup_dirs_named(id).is_empty(),
        "cgroup of {id} left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("skiff-test-bundle"),
        "a bundle mount leaked to the host"
    );
    let marker = b"sleep\0probe-sleep-marker";
    let survivors = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c.windows(marker.len()).any(|w| w == marker))
        .count();
    assert_eq!(survivors, 0, "a container process survived");
}

#[test]
fn bad_bundles_are_refused_cleanly() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    let root = TempDir::new("bad");
    let r = root.path();
    let bundle = b.path();
    let bs = bundle.to_str().unwrap();
    let original = b.config();

    // Missing rootfs.
    b.edit(|c| c["root"]["path"] = "no-such-rootfs".into());
    refused(
        r,
        &["create", "--bundle", bs, "bad1"],
        "bad1",
        "no-such-rootfs",
    );

    // Invalid config.json: not JSON, then a wrongly typed field.
    std::fs::write(bundle.join("config.json"), "{ not json").unwrap();
    refused(
        r,
        &["create", "--bundle", bs, "bad2"],
        "bad2",
        "config.json",
    );
    std::fs::write(
        bundle.join("config.json"),
        r#"{"root":{"path":"rootfs"},"process":{"args":"sh"}}"#,
    )
    .unwrap();
    refused(r, &["run", "--bundle", bs, "bad2"], "bad2", "invalid type");
    b.edit(|c| *c = original.clone());

    // A program that does not exist fails create, not start.
    b.args(&["no-such-program"]);
    refused(
        r,
        &["create", "--bundle", bs, "bad3"],
        "bad3",
        "executable file not found",
    );
    b.edit(|c| *c = original.clone());

    // An rlimit above what the runtime holds names the limit.
    b.edit(|c| {
        c["process"]["rlimits"] =
            serde_json::json!([{"type":"RLIMIT_NOFILE","hard":1048576,"soft":1048576}])
    });
    let hard = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard: u64 = String::from_utf8_lossy(&hard.stdout)
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    if hard < 1048576 {
        refused(
            r,
            &["create", "--bundle", bs, "bad4"],
            "bad4",
            "RLIMIT_NOFILE",
        );
    }
    b.edit(|c| *c = original.clone());

    // Invalid and unknown ids.
    refused(
        r,
        &["create", "--bundle", bs, "../x"],
        "x",
        "invalid container id",
    );
    for cmd in ["state", "start", "kill", "delete"] {
        refused(r, &[cmd, "nope"], "nope", "does not exist");
    }
}

#[test]
fn duplicate_id_leaves_the_first_intact() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "sleep", "probe-sleep-marker"]);
    let root = TempDir::new("dup");
    let r = root.path();
    let bundle = b.path();
    let bs = bundle.to_str().unwrap();
    ok(runtime(r, &["create", "--bundle", bs, "dup"]));
    let o = runtime(r, &["create", "--bundle", bs, "dup"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_str(&ok(runtime(r, &["state", "dup"]))).unwrap();
    assert_eq!(s["status"], "created");
    ok(runtime(r, &["delete", "dup"]));
    left_nothing(r, "dup");
}

#[test]
fn a_mount_escaping_through_a_symlink_is_refused() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    let root = TempDir::new("escape");
    let outside = TempDir::new("escape-target");
    let bundle = b.path();
    let rootfs = bundle.join("rootfs");
    // ../../… from /evil climbs out of the rootfs into the host's filesystem.
    let up = "../".repeat(rootfs.components().count() + 2);
    let target = format!(
        "{up}{}",
        outside.path().display().to_string().trim_start_matches('/')
    );
    std::os::unix::fs::symlink(&target, rootfs.join("evil")).unwrap();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"
        }))
    });
    let before: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    refused(
        root.path(),
        &["run", "--bundle", bundle.to_str().unwrap(), "esc"],
        "esc",
        "escapes the rootfs",
    );
    let after: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(before, after, "the host directory was touched");
}
