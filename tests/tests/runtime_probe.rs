//! Acceptance 1: the probe reports the same from inside the same bundle under crun and under
//! skiff, and each field is what config.json asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

use serde_json::{Value, json};
use skiff_tests::{Bundle, TempDir, ok, require_root_and, runtime};

fn rich_config(b: &Bundle, data: &std::path::Path) {
    b.edit(|c| {
        c["process"]["args"] = json!(["/probe", "--sysctl", "net.ipv4.ip_forward"]);
        c["hostname"] = json!("probe-host");
        c["root"]["readonly"] = json!(true);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
        c["process"]["cwd"] = json!("/tmp");
        c["process"]["oomScoreAdj"] = json!(100);
        c["process"]["noNewPrivileges"] = json!(true);
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256},
            {"type": "RLIMIT_NPROC", "hard": 300, "soft": 200}
        ]);
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL", "CAP_CHOWN"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"]
        });
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "cgroup"}));
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        c["linux"]["resources"] = json!({
            "memory": {"limit": 67108864},
            "pids": {"limit": 32},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}
        });
        c["mounts"].as_array_mut().expect("mounts").push(json!({
            "destination": "/data", "type": "bind", "source": data, "options": ["rbind", "ro", "nosuid"]
        }));
    });
}

fn probe_under(cmd: &mut Command) -> Value {
    let out = ok(cmd.output().expect("running the runtime"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("probe output {out:?}: {e}"))
}

/// What the probe reports that both runtimes must agree on (the environment differs only by
/// what each runtime adds; mounts are compared separately).
const FIELDS: [&str; 16] = [
    "pid",
    "hostname",
    "uid",
    "gid",
    "euid",
    "egid",
    "groups",
    "umask",
    "cwd",
    "caps",
    "no_new_privs",
    "seccomp",
    "rlimits",
    "oom_score_adj",
    "cgroup",
    "sysctl",
];

fn assert_fields_match(crun: &Value, ours: &Value) {
    for field in FIELDS {
        assert_eq!(crun[field], ours[field], "field {field}: crun vs skiff");
    }
}

fn sorted_mounts(report: &Value) -> Vec<Value> {
    let mut m = report["mounts"].as_array().expect("mounts").clone();
    m.sort_by_key(|v| v["target"].as_str().unwrap_or_default().to_string());
    m
}

fn mount<'a>(mounts: &'a [Value], target: &str) -> &'a Value {
    mounts
        .iter()
        .find(|m| m["target"] == target)
        .unwrap_or_else(|| panic!("no mount at {target}"))
}

#[test]
fn probe_matches_crun_and_config() {
    if !require_root_and(&["crun"]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    let data = TempDir::new("probe-data");
    rich_config(&b, data.path());
    let root = TempDir::new("probe-root");

    let crun = probe_under(
        Command::new("crun")
            .arg("--root")
            .arg(root.path().join("crun"))
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg("probe-crun"),
    );
    let ours = probe_under(
        Command::new(skiff_tests::skiff_bin())
            .args(["runtime", "--root"])
            .arg(root.path().join("skiff"))
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg("probe-skiff"),
    );

    // Field by field, crun vs skiff (the environment differs only by what each runtime adds).
    assert_fields_match(&crun, &ours);
    let (cm, sm) = (sorted_mounts(&crun), sorted_mounts(&ours));
    let targets = |m: &[Value]| m.iter().map(|v| v["target"].clone()).collect::<Vec<_>>();
    assert_eq!(targets(&cm), targets(&sm), "mount points: crun vs skiff");
    for (c, s) in cm.iter().zip(&sm) {
        if c["target"] == "/sys/fs/cgroup" {
            // Known divergence: crun leaves the v1 tmpfs holder writable although the config
            // says ro; skiff (like runc) honours ro. Each sub-mount is ro under both.
            assert_eq!(s["options"], json!(["nodev", "noexec", "nosuid", "ro"]));
            continue;
        }
        assert_eq!(c, s, "mount {}", c["target"]);
    }

    // And each field is what config.json asked for.
    assert_eq!(ours["pid"], 1);
    assert_eq!(ours["hostname"], "probe-host");
    assert_eq!(
        (ours["uid"].clone(), ours["gid"].clone()),
        (json!(1000), json!(1000))
    );
    assert_eq!(ours["groups"], json!([10, 20]));
    assert_eq!(ours["umask"], "0077");
    assert_eq!(ours["cwd"], "/tmp");
    assert_eq!(ours["no_new_privs"], true);
    assert_eq!(ours["oom_score_adj"], "100");
    assert_eq!(ours["rlimits"]["RLIMIT_NOFILE"], json!([256, 512]));
    assert_eq!(ours["rlimits"]["RLIMIT_NPROC"], json!([200, 300]));
    // CHOWN=0, KILL=5, NET_RAW=13. A non-root process keeps across execve only its ambient set
    // in permitted and effective.
    assert_eq!(
        ours["caps"]["bounding"],
        format!("{:016x}", 1u64 | 1 << 5 | 1 << 13)
    );
    assert_eq!(ours["caps"]["inheritable"], format!("{:016x}", 1u64 << 5));
    assert_eq!(ours["caps"]["ambient"], format!("{:016x}", 1u64 << 5));
    assert_eq!(ours["caps"]["permitted"], format!("{:016x}", 1u64 << 5));
    assert_eq!(ours["caps"]["effective"], format!("{:016x}", 1u64 << 5));
    assert_eq!(ours["sysctl"]["net.ipv4.ip_forward"], "1");
    let cg = &ours["cgroup"];
    assert_eq!(cg["memory"], "67108864");
    assert_eq!(cg["pids"], "32");
    assert_eq!(cg["cpu_shares"], "512");
    assert_eq!(
        (cg["cpu_quota"].clone(), cg["cpu_period"].clone()),
        (json!("50000"), json!("100000"))
    );
    assert_eq!(cg["cpuset"], "0");
    assert_eq!(mount(&sm, "/")["options"], json!(["ro"]));
    assert_eq!(mount(&sm, "/data")["options"], json!(["nosuid", "ro"]));
    assert_eq!(
        mount(&sm, "/sys")["options"],
        json!(["nodev", "noexec", "nosuid", "ro"])
    );
    assert_eq!(mount(&sm, "/proc/sys")["options"], json!(["ro"]));
    assert!(
        sm.iter()
            .any(|m| m["target"] == "/proc/kcore" || m["target"] == "/proc/timer_list")
    );

    // Both cleaned up after themselves.
    assert!(
        ok(runtime(&root.path().join("skiff"), &["list", "-q"]))
            .trim()
            .is_empty()
    );
}

#[test]
fn configured_devices_are_created_with_their_mode_and_owner() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&[
        "sh",
        "-c",
        "stat -c '%F %t:%T %a %u:%g' /dev/mynull /dev/null && echo x > /dev/mynull",
    ]);
    b.edit(|c| {
        c["linux"]["devices"] = json!([{
            "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
            "fileMode": 416, "uid": 0, "gid": 5
        }]);
    });
    let root = TempDir::new("devices");
    let out = ok(runtime(
        root.path(),
        &["run", "--bundle", b.path().to_str().unwrap(), "dev"],
    ));
    assert_eq!(
        out,
        "character special file 1:3 640 0:5\ncharacter special file 1:3 666 0:0\n"
    );
}

/// Acceptance 6 of the second runtime issue: the comparison holds with seccomp, a user
/// namespace and a terminal in the bundle.
#[test]
fn probe_matches_crun_with_seccomp_userns_and_terminal() {
    if !require_root_and(&["crun"]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    let data = TempDir::new("probe-data-userns");
    rich_config(&b, data.path());
    b.user_namespace();
    std::fs::create_dir_all(b.path().join("rootfs/data")).unwrap();
    let spec = TempDir::new("probe-spec");
    ok(skiff_tests::run_via_files(
        Command::new(skiff_tests::skiff_bin())
            .args(["runtime", "spec", "--seccomp", "--bundle"])
            .arg(spec.path()),
    ));
    let profile: Value =
        serde_json::from_slice(&std::fs::read(spec.path().join("config.json")).unwrap()).unwrap();
    b.edit(|c| {
        c["linux"]["seccomp"] = profile["linux"]["seccomp"].clone();
        c["process"]["terminal"] = json!(true);
    });
    let root = TempDir::new("probe-root-userns");
    let run = |cmd: &mut Command, id: &str| -> Value {
        let console = skiff_tests::ConsoleSocket::new();
        cmd.arg("--console-socket")
            .arg(&console.path)
            .arg("--bundle")
            .arg(b.path())
            .arg(id);
        let status = skiff_tests::run_via_files(cmd);
        assert!(status.status.success(), "{}", skiff_tests::stderr(&status));
        let out = console.output();
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"))
    };
    let crun = run(
        Command::new("crun")
            .arg("--root")
            .arg(root.path().join("crun"))
            .arg("run"),
        "probe-crun-u",
    );
    let ours = run(
        Command::new(skiff_tests::skiff_bin())
            .args(["runtime", "--root"])
            .arg(root.path().join("skiff"))
            .arg("run"),
        "probe-skiff-u",
    );
    assert_fields_match(&crun, &ours);
    assert_eq!(ours["seccomp"], "2", "a seccomp filter is in place");
    assert_eq!(ours["uid"], 1000);
    assert!(
        ours["stdin_tty"]
            .as_str()
            .is_some_and(|t| t.starts_with("/dev/pts/")),
        "{}",
        ours["stdin_tty"]
    );
    assert!(
        crun["stdin_tty"]
            .as_str()
            .is_some_and(|t| t.starts_with("/dev/pts/"))
    );
    let (cm, sm) = (sorted_mounts(&crun), sorted_mounts(&ours));
    let targets = |m: &[Value]| m.iter().map(|v| v["target"].clone()).collect::<Vec<_>>();
    assert_eq!(targets(&cm), targets(&sm), "mount points: crun vs skiff");
}
