//! Acceptance 5 of the second runtime issue: 1,000 back-to-back `run`s of /bin/true all
//! finish, and leave no state dir, mount, cgroup or zombie behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::{Bundle, TempDir, require_root_and, skiff_bin};

fn zombies() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')))
        .count()
}

#[test]
fn a_thousand_runs_leave_nothing_behind() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/bin/true"]);
    let root = TempDir::new("thousand");
    let zombies_before = zombies();
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let t0 = Instant::now();
    for i in 0..1000 {
        let mut child = Command::new(skiff_bin())
            .args(["runtime", "--root"])
            .arg(root.path())
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg(format!("t{}", i % 7))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // A hang is a failure, not a stuck test run.
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("run {i} hung");
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        assert!(status.success(), "run {i}: {status}");
    }
    eprintln!("1000 runs in {:?}", t0.elapsed());
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "state dirs left"
    );
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(mounts_before, mounts_after, "mounts leaked");
    for i in 0..7 {
        assert!(
            skiff_tests::cgroup_dirs_named(&format!("t{i}")).is_empty(),
            "cgroup t{i} left"
        );
    }
    assert!(
        zombies() <= zombies_before,
        "zombies left: {} before, {} after",
        zombies_before,
        zombies()
    );
}
