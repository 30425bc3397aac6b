//! The multi-call binary: `--version`, `skiff runtime`, the same file as `skiff-runc`,
//! `features` and `spec`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

use skiff_tests::{TempDir, ok, run_via_files, skiff_bin, stderr};

#[test]
fn version_names_target_and_commit() {
    let out = ok(run_via_files(Command::new(skiff_bin()).arg("--version")));
    let line = out.trim();
    assert!(line.starts_with("skiff 0."), "{line}");
    assert!(line.contains("x86_64-unknown-linux"), "{line}");
    assert!(line.contains("commit "), "{line}");
}

#[test]
fn argv0_skiff_runc_is_the_runtime() {
    let dir = TempDir::new("argv0");
    let runc = dir.path().join("skiff-runc");
    std::os::unix::fs::symlink(skiff_bin(), &runc).unwrap();
    let via_argv0 = ok(run_via_files(Command::new(&runc).arg("features")));
    let via_verb = ok(run_via_files(
        Command::new(skiff_bin()).args(["runtime", "features"]),
    ));
    assert_eq!(via_argv0, via_verb);
    let f: serde_json::Value = serde_json::from_str(&via_argv0).unwrap();
    assert!(
        f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&"pid".into())
    );
    assert_eq!(f["linux"]["cgroup"]["v1"], true);
    let v = ok(run_via_files(Command::new(&runc).arg("--version")));
    assert!(v.starts_with("skiff-runc version"), "{v}");
}

#[test]
fn spec_writes_a_config_once() {
    let dir = TempDir::new("spec");
    let b = dir.path().to_str().unwrap();
    ok(run_via_files(
        Command::new(skiff_bin()).args(["runtime", "spec", "--bundle", b]),
    ));
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(c["root"]["path"], "rootfs");
    let again = run_via_files(Command::new(skiff_bin()).args(["runtime", "spec", "--bundle", b]));
    assert!(!again.status.success(), "spec must not overwrite");
    assert!(stderr(&again).contains("config.json"), "{}", stderr(&again));
}

#[test]
fn unknown_commands_and_flags_are_usage_errors() {
    let o = run_via_files(Command::new(skiff_bin()).args(["runtime", "frobnicate"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown command"), "{}", stderr(&o));
    let o = run_via_files(Command::new(skiff_bin()).args(["runtime", "create", "--bogus", "x"]));
    assert!(
        stderr(&o).contains("unknown flag --bogus"),
        "{}",
        stderr(&o)
    );
    let o = run_via_files(Command::new(skiff_bin()).arg("nonsense"));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn errors_go_to_the_log_file_as_json_lines() {
    let dir = TempDir::new("log");
    let log = dir.path().join("log.json");
    let o = run_via_files(Command::new(skiff_bin()).args([
        "runtime",
        "--root",
        dir.path().to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "missing",
    ]));
    assert!(!o.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .contains("missing does not exist")
    );
}
