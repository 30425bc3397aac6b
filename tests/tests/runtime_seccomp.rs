//! Acceptance (runtime part two) 1 and 2: seccomp with the default profile and a killing rule;
//! a user namespace mapped 0 → 100000.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

use serde_json::{Value, json};
use skiff_tests::{Bundle, TempDir, ok, require_root_and, run_via_files, runtime, skiff_bin};

/// skiff's default profile (Docker's policy) as `skiff runtime spec --seccomp` writes it.
pub fn default_profile() -> Value {
    let dir = TempDir::new("spec-seccomp");
    ok(run_via_files(
        Command::new(skiff_bin())
            .args(["runtime", "spec", "--seccomp", "--bundle"])
            .arg(dir.path()),
    ));
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    config["linux"]["seccomp"].clone()
}

fn under_both(b: &Bundle, name: &str) -> (std::process::Output, std::process::Output) {
    let root = TempDir::new(name);
    let crun = run_via_files(
        Command::new("crun")
            .arg("--root")
            .arg(root.path().join("crun"))
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg(format!("{name}-crun")),
    );
    let ours = runtime(
        &root.path().join("skiff"),
        &[
            "run",
            "--bundle",
            b.path().to_str().unwrap(),
            &format!("{name}-skiff"),
        ],
    );
    (crun, ours)
}

#[test]
fn default_profile_refuses_keyctl_mount_and_userns_and_allows_ordinary_work() {
    if !require_root_and(&["crun"]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "syscalls"]);
    let profile = default_profile();
    b.edit(|c| c["linux"]["seccomp"] = profile);
    let (crun, ours) = under_both(&b, "sc");
    let (crun, ours): (Value, Value) = (
        serde_json::from_str(&ok(crun)).unwrap(),
        serde_json::from_str(&ok(ours)).unwrap(),
    );
    let eperm = libc::EPERM;
    assert_eq!(
        ours,
        json!({"keyctl": eperm, "mount": eperm, "unshare_user": eperm,
                            "getpid": 0, "write_file": 0, "fork": 0})
    );
    assert_eq!(crun, ours, "crun applies skiff's profile the same way");
}

#[test]
fn a_kill_rule_kills_the_process() {
    if !require_root_and(&["crun"]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "getpid"]);
    b.edit(|c| {
        c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_KILL"}]});
    });
    let (crun, ours) = under_both(&b, "kill");
    assert_eq!(
        ours.status.code(),
        Some(128 + libc::SIGSYS),
        "killed by SIGSYS"
    );
    assert_eq!(crun.status.code(), ours.status.code());
    assert!(ours.stdout.is_empty());
}

#[test]
fn a_bad_profile_is_refused_before_anything_runs() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.edit(|c| c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_SOMETIMES"}));
    let root = TempDir::new("badsc");
    let o = runtime(
        root.path(),
        &["run", "--bundle", b.path().to_str().unwrap(), "badsc"],
    );
    assert!(!o.status.success());
    assert!(
        skiff_tests::stderr(&o).contains("SCMP_ACT_SOMETIMES"),
        "{}",
        skiff_tests::stderr(&o)
    );
    assert!(!root.path().join("badsc").exists());
}

#[test]
fn user_namespace_maps_root_to_100000() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.user_namespace();
    std::fs::create_dir_all(b.path().join("rootfs/data")).unwrap();
    let data = TempDir::new("userns-data");
    std::os::unix::fs::chown(data.path(), Some(100_000), Some(100_000)).unwrap();
    b.args(&[
        "sh",
        "-c",
        "/probe > /data/report.json && echo written > /data/file",
    ]);
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": data.path(), "options": ["rbind"]
        }));
    });
    let root = TempDir::new("userns");
    ok(runtime(
        root.path(),
        &["run", "--bundle", b.path().to_str().unwrap(), "uns"],
    ));
    let report: Value =
        serde_json::from_slice(&std::fs::read(data.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(
        (report["uid"].clone(), report["gid"].clone()),
        (json!(0), json!(0))
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data.path().join("file")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (100_000, 100_000),
        "owned by the mapped ids on the host"
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("file")).unwrap(),
        "written\n"
    );
    assert_ne!(
        report["namespaces"]["user"],
        std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .to_str()
            .unwrap(),
        "a user namespace of its own"
    );
}

#[test]
fn joining_a_user_namespace_by_path_makes_the_new_namespaces_inside_it() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.user_namespace();
    let root = TempDir::new("userns-join");
    let r = root.path();
    let bs = b.path();
    let bs = bs.to_str().unwrap();
    b.args(&["/probe", "sleep"]);
    ok(runtime(r, &["run", "-d", "--bundle", bs, "owner"]));
    let state: Value = serde_json::from_str(&ok(runtime(r, &["state", "owner"]))).unwrap();
    let pid = state["pid"].as_i64().unwrap();
    let owner_userns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();

    // The second container joins that user namespace and gets its own pid, mount, … namespaces.
    b.args(&["/probe"]);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            if n["type"] == "user" {
                n["path"] = format!("/proc/{pid}/ns/user").into();
            }
        }
        let linux = c["linux"].as_object_mut().unwrap();
        linux.remove("uidMappings");
        linux.remove("gidMappings");
    });
    let report: Value =
        serde_json::from_str(&ok(runtime(r, &["run", "--bundle", bs, "joiner"]))).unwrap();
    assert_eq!(report["namespaces"]["user"], owner_userns.to_str().unwrap());
    assert_eq!(
        report["pid"], 1,
        "a pid namespace of its own, with /proc mounted from inside it"
    );
    assert_eq!(report["uid"], 0);
    let owner_pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(report["namespaces"]["pid"], owner_pidns.to_str().unwrap());
    ok(runtime(r, &["delete", "--force", "owner"]));
}
