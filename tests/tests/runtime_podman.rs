//! Acceptance 3: a real engine drives skiff as its OCI runtime: podman run --rm, run -d, stop,
//! rm -f, with `--runtime <dir>/skiff-runc`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::PathBuf;
use std::process::Command;

use skiff_tests::{images_dir, ok, require, require_root_and, run_via_files, skiff_bin, stderr};

struct Podman {
    runtime: PathBuf,
    extra: Vec<String>,
    image: String,
    /// Containers this test made, removed on drop even when the test fails.
    made: std::cell::RefCell<Vec<String>>,
}

impl Drop for Podman {
    fn drop(&mut self) {
        for cid in self.made.borrow().iter() {
            let _ = run_via_files(&mut self.cmd(&["rm", "-f", "-t", "0", cid]));
        }
    }
}

impl Podman {
    fn new() -> Option<Podman> {
        if !require_root_and(&["podman"]) {
            return None;
        }
        let images = images_dir().join("images.json");
        if !require(
            images.exists(),
            "test images pushed to the registry (make-images.sh)",
        ) {
            return None;
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(images).unwrap()).unwrap();
        let registry = meta["registry"].as_str().unwrap().to_string();
        // A stable path: podman remembers it per container, so a container left by a failed
        // run stays removable.
        let runtime = skiff_tests::workspace().join("target/podman-runtime/skiff-runc");
        std::fs::create_dir_all(runtime.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&runtime);
        let _ = std::os::unix::fs::symlink(skiff_bin(), &runtime);
        let extra = skiff_tests::podman_args();
        Some(Podman {
            runtime,
            extra,
            image: format!("{registry}/busybox:latest"),
            made: Default::default(),
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--runtime").arg(&self.runtime).args(args);
        c
    }

    fn run(&self, flags: &[&str], cmd: &[&str]) -> std::process::Output {
        let mut c = self.cmd(&["run", "--network", "none", "--tls-verify=false"]);
        c.args(&self.extra).args(flags).arg(&self.image).args(cmd);
        run_via_files(&mut c)
    }

    /// `podman run -d …`: the container id, remembered for cleanup.
    fn detached(&self, cmd: &[&str]) -> String {
        let cid = ok(self.run(&["-d"], cmd)).trim().to_string();
        self.made.borrow_mut().push(cid.clone());
        cid
    }

    fn out(&self, args: &[&str]) -> String {
        ok(run_via_files(&mut self.cmd(args))).trim().to_string()
    }
}

#[test]
fn podman_run_rm_prints() {
    let Some(p) = Podman::new() else { return };
    let o = p.run(&["--rm"], &["echo", "hi"]);
    assert_eq!(ok(o), "hi\n");
}

#[test]
fn podman_detached_stop_and_rm() {
    let Some(p) = Podman::new() else { return };
    let cid = p.detached(&["sleep", "1000"]);
    assert_eq!(
        p.out(&["inspect", "--format", "{{.State.Running}}", &cid]),
        "true"
    );
    assert!(
        p.out(&["inspect", "--format", "{{.OCIRuntime}}", &cid])
            .contains("skiff-runc")
    );
    let pid: i32 = p
        .out(&["inspect", "--format", "{{.State.Pid}}", &cid])
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // sleep as pid 1 ignores SIGTERM: podman escalates to SIGKILL after the timeout.
    let stop = run_via_files(&mut p.cmd(&["stop", "-t", "1", &cid]));
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(
        p.out(&["inspect", "--format", "{{.State.Status}}", &cid]),
        "exited"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/exe")).exists(),
        "container process still alive"
    );
    p.out(&["rm", &cid]);

    let cid = p.detached(&["sleep", "1000"]);
    p.out(&["rm", "-f", "-t", "0", &cid]);
    let all = p.out(&["ps", "-a", "--format", "{{.ID}}"]);
    assert!(!all.contains(&cid[..12]), "container still listed: {all}");
}

#[test]
fn podman_exec_tty_pause_and_default_network() {
    let Some(p) = Podman::new() else { return };
    let cid = p.detached(&["sleep", "1000"]);

    let cmdline = p.out(&["exec", &cid, "cat", "/proc/1/cmdline"]);
    assert_eq!(
        cmdline, "sleep\x001000\x00",
        "exec joined the container's pid namespace"
    );

    // A terminal through --console-socket, for exec and for run.
    let tty = p.out(&["exec", "-t", &cid, "tty"]);
    assert!(tty.starts_with("/dev/pts/"), "{tty:?}");

    p.out(&["pause", &cid]);
    assert_eq!(
        p.out(&["inspect", "--format", "{{.State.Status}}", &cid]),
        "paused"
    );
    let pid = p.out(&["inspect", "--format", "{{.State.Pid}}", &cid]);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(
        stat.contains(") S ") || stat.contains(") D "),
        "frozen task: {stat}"
    );
    p.out(&["unpause", &cid]);
    assert_eq!(
        p.out(&["inspect", "--format", "{{.State.Status}}", &cid]),
        "running"
    );
    p.out(&["rm", "-f", "-t", "0", &cid]);

    let run_tty = ok(p.run(&["--rm", "-t"], &["tty"]));
    assert!(run_tty.trim().starts_with("/dev/pts/"), "{run_tty:?}");

    // podman's default network: a netns made by podman, joined by path.
    let mut c = p.cmd(&["run", "--rm", "--tls-verify=false"]);
    c.args(&p.extra)
        .arg(&p.image)
        .args(["ip", "-o", "-4", "addr", "show", "eth0"]);
    let addr = ok(run_via_files(&mut c));
    assert!(addr.contains("eth0") && addr.contains("inet "), "{addr}");
}
