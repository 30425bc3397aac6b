//! Acceptance 4: limits hold. Past memory.limit the process is OOM-killed; a fork loop stops
//! at the pids limit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::json;
use skiff_tests::{Bundle, TempDir, require_root_and, runtime, stderr, stdout};

#[test]
fn memory_limit_oom_kills() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "alloc", "256"]);
    b.edit(|c| c["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}}));
    let root = TempDir::new("oom");
    let o = runtime(
        root.path(),
        &["run", "--bundle", b.path().to_str().unwrap(), "oom"],
    );
    assert_eq!(
        o.status.code(),
        Some(137),
        "SIGKILLed by the OOM killer: {}",
        stderr(&o)
    );
    let out = stdout(&o);
    assert!(!out.contains("done"), "allocated past the limit");
    let last: u32 = out.lines().last().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!(
        (1..32).contains(&last),
        "got to {last} MiB of a 32 MiB limit"
    );
}

#[test]
fn fork_loop_stops_at_pids_limit() {
    if !require_root_and(&[]) {
        return;
    }
    let Some(b) = Bundle::unpack("busybox") else {
        return;
    };
    b.args(&["/probe", "forks", "200"]);
    b.edit(|c| c["linux"]["resources"] = json!({"pids": {"limit": 16}}));
    let root = TempDir::new("pids");
    let o = runtime(
        root.path(),
        &["run", "--bundle", b.path().to_str().unwrap(), "pids"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let n: u32 = stdout(&o).trim().parse().expect("fork count");
    assert_eq!(n, 15, "16 pids: the probe and 15 children");
}
