//! Acceptance 2: create/start/state/kill/delete, including the state of a stopped container,
//! delete of a running one without --force (refused), and an id reused after `run` ends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::{Bundle, TempDir, cgroup_dirs_named, ok, require_root_and, runtime, stderr};

fn state(root: &std::path::Path, id: &str) -> Value {
    serde_json::from_str(&ok(runtime(root, &["state", id]))).expect("state JSON")
}

fn wait_status(root: &std::path::Path, id: &str, want: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let s = state(root, id);
        if s["status"] == want || t0.elapsed() > Duration::from_secs(10) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn create_start_state_kill_delete() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "sleep"]);
    let root = TempDir::new("lifecycle");
    let r = root.path();
    let pid_file = root.path().join("pid");
    let bundle = b.path();
    let bundle = bundle.to_str().expect("utf-8 path");

    ok(runtime(
        r,
        &[
            "create",
            "--bundle",
            bundle,
            "--pid-file",
            pid_file.to_str().unwrap(),
            "lc1",
        ],
    ));
    let s = state(r, "lc1");
    assert_eq!(s["status"], "created");
    assert_eq!(s["id"], "lc1");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(s["pid"], pid);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The created container has not exec'd the probe yet.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "probe");
    assert!(!cgroup_dirs_named("lc1").is_empty(), "cgroup created");

    ok(runtime(r, &["start", "lc1"]));
    let s = wait_status(r, "lc1", "running");
    assert_eq!(s["status"], "running");
    let t0 = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        != "probe"
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "probe never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Starting twice is refused.
    let again = runtime(r, &["start", "lc1"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not created"), "{}", stderr(&again));

    // A running container is not deleted without --force, and stays running.
    let del = runtime(r, &["delete", "lc1"]);
    assert!(!del.status.success());
    assert!(stderr(&del).contains("running"), "{}", stderr(&del));
    assert_eq!(state(r, "lc1")["status"], "running");

    // list shows it.
    assert!(ok(runtime(r, &["list"])).contains("lc1"));

    ok(runtime(r, &["kill", "lc1", "KILL"]));
    let s = wait_status(r, "lc1", "stopped");
    assert_eq!(s["status"], "stopped");
    assert_eq!(s["pid"], 0);
    let k = runtime(r, &["kill", "lc1"]);
    assert!(
        !k.status.success(),
        "killing a stopped container is an error"
    );

    ok(runtime(r, &["delete", "lc1"]));
    let gone = runtime(r, &["state", "lc1"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("does not exist"),
        "{}",
        stderr(&gone)
    );
    assert!(cgroup_dirs_named("lc1").is_empty(), "cgroup left behind");
    assert!(!r.join("lc1").exists());
}

#[test]
fn delete_force_kills_and_kill_all_reaches_every_process() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&[
        "sh",
        "-c",
        "/probe sleep & /probe sleep & exec /probe sleep",
    ]);
    let root = TempDir::new("force");
    let r = root.path();
    let bundle = b.path();
    ok(runtime(
        r,
        &[
            "run",
            "--detach",
            "--bundle",
            bundle.to_str().unwrap(),
            "f1",
        ],
    ));
    assert_eq!(wait_status(r, "f1", "running")["status"], "running");
    let procs =
        std::fs::read_to_string("/sys/fs/cgroup/pids/skiff/f1/cgroup.procs").unwrap_or_default();
    let t0 = Instant::now();
    let mut n = procs.lines().count();
    while n < 3 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        n = std::fs::read_to_string("/sys/fs/cgroup/pids/skiff/f1/cgroup.procs")
            .unwrap_or_default()
            .lines()
            .count();
    }
    assert_eq!(n, 3, "three probes in the cgroup");
    ok(runtime(r, &["kill", "--all", "f1", "9"]));
    assert_eq!(wait_status(r, "f1", "stopped")["status"], "stopped");
    ok(runtime(r, &["delete", "f1"]));

    // --force on a running one.
    ok(runtime(
        r,
        &["run", "-d", "--bundle", bundle.to_str().unwrap(), "f2"],
    ));
    ok(runtime(r, &["delete", "--force", "f2"]));
    assert!(!r.join("f2").exists());
    assert!(cgroup_dirs_named("f2").is_empty());
}

#[test]
fn run_passes_the_exit_code_and_frees_the_id() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    let root = TempDir::new("run");
    let r = root.path();
    let bundle = b.path();
    let bundle = bundle.to_str().unwrap();
    b.args(&["sh", "-c", "echo out; exit 7"]);
    for _ in 0..2 {
        let o = runtime(r, &["run", "--bundle", bundle, "same-id"]);
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
        assert!(!r.join("same-id").exists(), "state dir removed after run");
    }
    // Without a pid namespace the shell is not an init, so SIGKILL from itself takes effect.
    b.args(&["sh", "-c", "kill -9 $$"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let o = runtime(r, &["run", "--bundle", bundle, "same-id"]);
    assert_eq!(o.status.code(), Some(137));
}

#[test]
fn namespaces_joined_by_path_are_shared() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    let root = TempDir::new("join");
    let r = root.path();
    let bundle = b.path();
    let bs = bundle.to_str().unwrap();
    b.args(&["/probe", "sleep"]);
    ok(runtime(r, &["run", "-d", "--bundle", bs, "owner"]));
    let pid = state(r, "owner")["pid"].as_i64().unwrap();

    // A second container joins the first one's network and uts namespaces by path.
    b.args(&["/probe"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            if n["type"] == "network" || n["type"] == "uts" {
                let kind = if n["type"] == "network" { "net" } else { "uts" };
                n["path"] = format!("/proc/{pid}/ns/{kind}").into();
            }
        }
        c.as_object_mut().unwrap().remove("hostname");
    });
    let report: Value =
        serde_json::from_str(&ok(runtime(r, &["run", "--bundle", bs, "joiner"]))).unwrap();
    let link = |kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    assert_eq!(report["namespaces"]["net"], link("net").to_str().unwrap());
    assert_eq!(report["namespaces"]["uts"], link("uts").to_str().unwrap());
    assert_ne!(
        report["namespaces"]["ipc"],
        link("ipc").to_str().unwrap(),
        "ipc stays private"
    );
    ok(runtime(r, &["delete", "--force", "owner"]));
}
