//! exec, pause/resume, ps, update and hooks through `skiff runtime` itself.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::{Value, json};
use skiff_tests::{Bundle, TempDir, ok, require_root_and, runtime, stderr};

fn status(root: &std::path::Path, id: &str) -> Value {
    let s: Value = serde_json::from_str(&ok(runtime(root, &["state", id]))).unwrap();
    s["status"].clone()
}

#[test]
fn exec_joins_the_container_and_keeps_its_limits() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "sleep"]);
    let seccomp = {
        let dir = TempDir::new("exec-spec");
        ok(skiff_tests::run_via_files(
            std::process::Command::new(skiff_tests::skiff_bin())
                .args(["runtime", "spec", "--seccomp", "--bundle"])
                .arg(dir.path()),
        ));
        let c: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        c["linux"]["seccomp"].clone()
    };
    b.edit(|c| {
        c["linux"]["seccomp"] = seccomp;
        c["hostname"] = json!("exec-host");
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 300, "soft": 200}]);
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("FROM_CONFIG=1"));
    });
    let root = TempDir::new("exec");
    let r = root.path();
    ok(runtime(
        r,
        &["run", "-d", "--bundle", b.path().to_str().unwrap(), "x1"],
    ));

    let report: Value = serde_json::from_str(&ok(runtime(
        r,
        &["exec", "--env", "EXTRA=2", "x1", "/probe"],
    )))
    .unwrap();
    assert_eq!(report["hostname"], "exec-host");
    assert_eq!(report["rlimits"]["RLIMIT_NOFILE"], json!([200, 300]));
    let env = report["env"].as_array().unwrap();
    assert!(
        env.contains(&json!("FROM_CONFIG=1")) && env.contains(&json!("EXTRA=2")),
        "{env:?}"
    );
    let again: Value = serde_json::from_str(&ok(runtime(r, &["exec", "x1", "/probe"]))).unwrap();
    assert_eq!(report["namespaces"]["pid"], again["namespaces"]["pid"]);
    // The same restrictions as the container's own process.
    let config = b.config();
    assert_eq!(report["seccomp"], "2", "the container's seccomp filter");
    assert_eq!(report["no_new_privs"], config["process"]["noNewPrivileges"]);
    let want_caps = |set: &str| {
        let names: Vec<String> =
            serde_json::from_value(config["process"]["capabilities"][set].clone()).unwrap();
        let bits = names.iter().fold(0u64, |acc, n| {
            let bit = [
                ("CAP_AUDIT_WRITE", 29),
                ("CAP_KILL", 5),
                ("CAP_NET_BIND_SERVICE", 10),
            ]
            .iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("unexpected cap {n}"))
            .1;
            acc | 1 << bit
        });
        format!("{bits:016x}")
    };
    assert_eq!(report["caps"]["bounding"], want_caps("bounding"));
    assert_eq!(report["caps"]["effective"], want_caps("effective"));
    let syscalls: Value =
        serde_json::from_str(&ok(runtime(r, &["exec", "x1", "/probe", "syscalls"]))).unwrap();
    assert_eq!(
        syscalls["keyctl"],
        libc::EPERM,
        "seccomp applies to exec'd processes"
    );
    assert_ne!(
        report["pid"], 1,
        "a second process in the container's pid namespace"
    );

    // --cap and --additional-gids on top of the container's process
    let extra: Value = serde_json::from_str(&ok(runtime(
        r,
        &[
            "exec",
            "--cap",
            "CAP_NET_RAW",
            "--additional-gids",
            "7,8",
            "x1",
            "/probe",
        ],
    )))
    .unwrap();
    let bounding = u64::from_str_radix(extra["caps"]["bounding"].as_str().unwrap(), 16).unwrap();
    assert_ne!(bounding & 1 << 13, 0, "CAP_NET_RAW added");
    assert_eq!(extra["groups"], json!([7, 8]));
    let lsm = runtime(r, &["exec", "--apparmor", "p", "x1", "true"]);
    assert!(skiff_tests::stderr(&lsm).contains("no LSM support"));

    // exit codes pass through; a missing program is named
    assert_eq!(
        runtime(r, &["exec", "x1", "sh", "-c", "exit 6"])
            .status
            .code(),
        Some(6)
    );
    let missing = runtime(r, &["exec", "x1", "no-such-tool"]);
    assert!(
        stderr(&missing).contains("no-such-tool"),
        "{}",
        stderr(&missing)
    );

    // --process FILE with a different user
    let pf = root.path().join("process.json");
    std::fs::write(
        &pf,
        json!({"args": ["/probe"], "cwd": "/tmp", "user": {"uid": 65534, "gid": 65534}})
            .to_string(),
    )
    .unwrap();
    let as_nobody: Value = serde_json::from_str(&ok(runtime(
        r,
        &["exec", "--process", pf.to_str().unwrap(), "x1"],
    )))
    .unwrap();
    assert_eq!(
        (as_nobody["uid"].clone(), as_nobody["cwd"].clone()),
        (json!(65534), json!("/tmp"))
    );

    // ps lists both processes while one exec runs detached
    ok(runtime(r, &["exec", "-d", "x1", "/probe", "sleep"]));
    let pids: Vec<i32> =
        serde_json::from_str(&ok(runtime(r, &["ps", "--format", "json", "x1"]))).unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");

    // pause / resume
    ok(runtime(r, &["pause", "x1"]));
    assert_eq!(status(r, "x1"), "paused");
    let e = runtime(r, &["exec", "x1", "true"]);
    assert!(stderr(&e).contains("paused"), "{}", stderr(&e));
    ok(runtime(r, &["resume", "x1"]));
    assert_eq!(status(r, "x1"), "running");

    // update
    ok(runtime(
        r,
        &["update", "--memory", "40m", "--pids-limit", "9", "x1"],
    ));
    let cg: Value = serde_json::from_str(&ok(runtime(r, &["exec", "x1", "/probe"]))).unwrap();
    assert_eq!(cg["cgroup"]["memory"], (40u64 << 20).to_string());
    assert_eq!(cg["cgroup"]["pids"], "9");
    ok(runtime(r, &["delete", "--force", "x1"]));
}

#[test]
fn hooks_run_in_order_with_their_state() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    let root = TempDir::new("hooks");
    let log_dir = TempDir::new("hooklog");
    let log = log_dir.path().join("hooks.log");
    std::fs::write(&log, "").unwrap();
    // Runtime-namespace hooks use the host's sh; startContainer runs inside the container, which
    // sees the log through a bind mount.
    let host = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("printf '{name} ' >> {0}; cat >> {0}; echo >> {0}", log.display())]});
    let inside = json!({"path": "/bin/sh", "args": ["sh", "-c", "printf 'startContainer ' >> /hooklog/hooks.log; cat >> /hooklog/hooks.log; echo >> /hooklog/hooks.log"]});
    b.args(&["/probe", "sleep"]);
    b.edit(|c| {
        c["hooks"] = json!({
            "prestart": [host("prestart")],
            "createRuntime": [host("createRuntime")],
            "createContainer": [host("createContainer")],
            "startContainer": [inside],
            "poststart": [host("poststart")],
            "poststop": [host("poststop")],
        });
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/hooklog", "type": "bind", "source": log_dir.path(), "options": ["rbind"]
        }));
    });
    let r = root.path();
    ok(runtime(
        r,
        &["create", "--bundle", b.path().to_str().unwrap(), "h1"],
    ));
    ok(runtime(r, &["start", "h1"]));
    ok(runtime(r, &["delete", "--force", "h1"]));

    let text = std::fs::read_to_string(&log).unwrap();
    let got: Vec<(String, Value)> = text
        .lines()
        .map(|l| {
            let (name, json) = l.split_once(' ').unwrap();
            (name.to_string(), serde_json::from_str(json).unwrap())
        })
        .collect();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    let statuses: Vec<&str> = got
        .iter()
        .map(|(_, s)| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "creating", "creating", "creating", "created", "running", "stopped"
        ]
    );
    for (_, s) in &got {
        assert_eq!(s["id"], "h1");
        assert_eq!(s["bundle"], b.path().to_str().unwrap());
    }
    assert!(got[0].1["pid"].as_i64().unwrap() > 0);
}

#[test]
fn a_failing_create_hook_fails_create_and_leaves_nothing() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.edit(|c| c["hooks"] = json!({"createRuntime": [{"path": "/bin/false", "args": ["false"]}]}));
    let root = TempDir::new("hookfail");
    let o = runtime(
        root.path(),
        &["create", "--bundle", b.path().to_str().unwrap(), "hf"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("createRuntime hook /bin/false"),
        "{}",
        stderr(&o)
    );
    assert!(!root.path().join("hf").exists());
    assert!(skiff_tests::cgroup_dirs_named("hf").is_empty());
}

#[test]
fn preserved_fds_reach_the_container_and_others_do_not() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["sh", "-c", "echo through-fd-3 >&3 || exit 9"]);
    let root = TempDir::new("fds");
    let out_dir = TempDir::new("fds-out");
    let target = out_dir.path().join("fd3");
    let run = |preserve: bool| {
        let file = std::fs::File::create(&target).unwrap();
        let mut cmd = std::process::Command::new(skiff_tests::skiff_bin());
        cmd.args(["runtime", "--root"]).arg(root.path()).arg("run");
        if preserve {
            cmd.args(["--preserve-fds", "1"]);
        }
        cmd.args(["--bundle", b.path().to_str().unwrap(), "fds"]);
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = file.as_raw_fd();
        // SAFETY: dup2 in the child between fork and exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself keeps close-on-exec: clear it explicitly.
                if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = skiff_tests::run_via_files(&mut cmd);
        (out, std::fs::read_to_string(&target).unwrap())
    };
    let (with, written) = run(true);
    assert!(with.status.success(), "{}", skiff_tests::stderr(&with));
    assert_eq!(written, "through-fd-3\n");

    let (without, written) = run(false);
    assert_eq!(
        without.status.code(),
        Some(9),
        "fd 3 must be closed without --preserve-fds"
    );
    assert_eq!(written, "");
}
