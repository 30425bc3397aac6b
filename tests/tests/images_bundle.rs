//! Image → bundle: skiff's config.json for busybox-app against the one podman makes for the
//! same image (golden: the differences are listed in tests/golden/, and must not drift), and
//! the exported bundle runs under crun.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};
use skiff_tests::{TempDir, ok, registry, require_root_and, run_via_files, skiff, workspace};

fn sorted(v: &Value) -> Value {
    let mut items: Vec<String> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect();
    items.sort();
    items.dedup();
    json!(items)
}

/// The fields of a runtime config that an image and Docker's defaults decide.
fn view(c: &Value) -> Value {
    let env: BTreeSet<String> = c["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .filter(|e| !e.starts_with("HOSTNAME="))
        .collect();
    let ns: BTreeSet<String> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_string())
        .collect();
    let mounts: BTreeSet<String> = c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect();
    json!({
        "args": c["process"]["args"],
        "cwd": c["process"]["cwd"],
        "uid": c["process"]["user"]["uid"],
        "gid": c["process"]["user"]["gid"],
        "env": env,
        "namespaces": ns,
        "mounts": mounts,
        "capabilities": sorted(&c["process"]["capabilities"]["bounding"]),
        "maskedPaths": sorted(&c["linux"]["maskedPaths"]),
        "readonlyPaths": sorted(&c["linux"]["readonlyPaths"]),
        "seccomp": c["linux"]["seccomp"].is_object(),
    })
}

#[test]
fn busybox_app_config_against_podmans() {
    if !require_root_and(&["podman", "crun"]) {
        return;
    }
    let Some(reg) = registry() else { return };
    let image = format!("{reg}/busybox-app:latest");
    let root = TempDir::new("bundle");
    let out = root.path().join("bundle");
    ok(skiff(
        root.path(),
        &[
            "bundle",
            "-o",
            out.to_str().unwrap(),
            "--network",
            "none",
            &image,
        ],
    ));
    let ours: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();

    // podman writes its config for the same image; skiff-runc (a stable path, as in the
    // podman tests) consumes it.
    let extra = skiff_tests::podman_args();
    let runtime = workspace().join("target/podman-runtime/skiff-runc");
    std::fs::create_dir_all(runtime.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&runtime);
    let _ = std::os::unix::fs::symlink(skiff_tests::skiff_bin(), &runtime);
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--runtime").arg(&runtime);
        c
    };
    let cid = ok(run_via_files(
        podman()
            .args(["create", "--tls-verify=false", "--network", "none"])
            .args(&extra)
            .arg(&image),
    ))
    .trim()
    .to_string();
    let made = run_via_files(podman().args(["init", &cid]));
    let dir = ok(run_via_files(podman().args([
        "inspect",
        "--format",
        "{{.StaticDir}}",
        &cid,
    ])))
    .trim()
    .to_string();
    let theirs: Option<Value> = std::fs::read(format!("{dir}/config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = run_via_files(podman().args(["rm", "-f", "-t", "0", &cid]));
    assert!(
        made.status.success(),
        "podman init: {}",
        skiff_tests::stderr(&made)
    );
    let theirs = theirs.expect("podman's config.json");

    let (a, b) = (view(&ours), view(&theirs));
    let mut diff = serde_json::Map::new();
    for (k, v) in a.as_object().unwrap() {
        if b[k] != *v {
            diff.insert(k.clone(), json!({"skiff": v, "podman": b[k]}));
        }
    }
    let golden_path = workspace().join("tests/golden/busybox-app-vs-podman.json");
    let got = serde_json::to_string_pretty(&Value::Object(diff)).unwrap();
    if std::env::var_os("SKIFF_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, format!("{got}\n")).unwrap();
    }
    let want = std::fs::read_to_string(&golden_path).unwrap_or_default();
    assert_eq!(
        got.trim(),
        want.trim(),
        "differences from podman changed (SKIFF_UPDATE_GOLDEN=1 rewrites the golden file after review)"
    );
    // What must agree, agrees.
    for k in ["args", "cwd", "uid", "gid", "seccomp"] {
        assert_eq!(a[k], b[k], "{k}");
    }

    // And the bundle is a real OCI bundle: crun runs it.
    let ran = ok(run_via_files(
        Command::new("crun")
            .arg("--root")
            .arg(root.path().join("crun"))
            .args(["run", "--bundle"])
            .arg(&out)
            .arg("skiff-bundle-crun"),
    ));
    assert!(ran.contains("hello from layer 2"), "{ran}");
}
