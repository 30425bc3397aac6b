//! skiff-tests: system tests that drive the real `skiff` binary against real peers
//! (crun, podman, umoci-built images, the registry, the broker).
//!
//! Requirements (root, a peer command, the test images, binfmt) go through [`require`]: with
//! `SKIFF_STRICT=1` (as `scripts/test` and CI set it) a missing one fails the test; otherwise the
//! test is skipped and counted in `target/skipped.txt`, which `scripts/test` reports.

// Test support: a failed expectation here is a failed test, which is what a panic reports.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub mod proxy;
pub mod secure_registry;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Returns false (and records a skip) when `ok` is false outside strict mode; panics in
/// strict mode.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("SKIFF_STRICT").is_ok_and(|v| v == "1") {
        panic!("missing requirement (SKIFF_STRICT=1 forbids skipping): {what}");
    }
    eprintln!("SKIPPED: {what}");
    let log = workspace().join("target/skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write;
        let _ = writeln!(f, "{what}");
    }
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Root plus every command named.
pub fn require_root_and(cmds: &[&str]) -> bool {
    if !require(is_root(), "root") {
        return false;
    }
    cmds.iter().all(|c| {
        require(
            have(c),
            &format!("command {c} (../shared/peers/install.sh)"),
        )
    })
}

/// The `skiff` binary built for the host (`cargo build` puts it there; scripts/test builds it).
pub fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/skiff"))
}

/// The static probe (`cargo build -p skiff-probe --target x86_64-unknown-linux-musl`).
pub fn probe_bin() -> PathBuf {
    std::env::var_os("SKIFF_PROBE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/x86_64-unknown-linux-musl/debug/skiff-probe"))
}

pub fn peers_dir() -> PathBuf {
    std::env::var_os("PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/peers"))
}

/// `$PEERS_STATE_DIR/images` as make-images.sh writes it.
pub fn images_dir() -> PathBuf {
    let state = std::env::var_os("PEERS_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join("peers-harness")
        });
    state.join("images")
}

/// A fresh directory under the target dir, removed again on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("skiff-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A runtime root left by a failed test: kill what it still runs.
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if entry.path().join("state.json").exists() {
                let _ = Command::new(skiff_bin())
                    .arg("runtime")
                    .arg("--root")
                    .arg(&self.0)
                    .args(["delete", "--force"])
                    .arg(entry.file_name())
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An OCI bundle unpacked by umoci from the test images, with the probe copied in.
pub struct Bundle {
    pub dir: TempDir,
}

impl Bundle {
    /// `umoci unpack` of `tag` from make-images.sh's OCI layout. None (after `require`) when the
    /// images or umoci are missing.
    pub fn unpack(tag: &str) -> Option<Bundle> {
        let layout = images_dir().join("oci");
        if !require(
            layout.join("index.json").exists(),
            "test images (../shared/peers/make-images.sh)",
        ) || !require_root_and(&["umoci"])
        {
            return None;
        }
        let dir = TempDir::new(&format!("bundle-{tag}"));
        let bundle = dir.path().join("b");
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle)
            .output()
            .expect("running umoci");
        assert!(
            out.status.success(),
            "umoci unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe = probe_bin();
        assert!(
            probe.exists(),
            "{} missing: cargo build -p skiff-probe --target x86_64-unknown-linux-musl",
            probe.display()
        );
        std::fs::copy(&probe, bundle.join("rootfs/probe")).expect("copying the probe");
        let b = Bundle { dir };
        b.edit(|c| c["process"]["terminal"] = Value::Bool(false));
        Some(b)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("b")
    }

    pub fn config(&self) -> Value {
        let text = std::fs::read(self.path().join("config.json")).expect("reading config.json");
        serde_json::from_slice(&text).expect("parsing config.json")
    }

    /// Edits config.json in place.
    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut c = self.config();
        f(&mut c);
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&c).expect("json"),
        )
        .expect("writing config.json");
    }

    /// Gives the bundle a new user namespace mapping 0 → 100000 (65536 ids), and lets the mapped
    /// root reach the bundle (umoci makes its directory 0700). The rootfs stays owned by host
    /// root: mount points the mapped root cannot create must exist already.
    pub fn user_namespace(&self) {
        use std::os::unix::fs::PermissionsExt;
        for dir in [self.path(), self.dir.path().to_path_buf()] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the bundle");
        }
        self.edit(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces")
                .push(serde_json::json!({"type": "user"}));
            let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["uidMappings"] = map.clone();
            c["linux"]["gidMappings"] = map;
        });
    }

    /// Sets process.args.
    pub fn args(&self, args: &[&str]) {
        self.edit(|c| c["process"]["args"] = serde_json::json!(args));
    }
}

/// `skiff runtime --root ROOT ARGS…` run to completion. Output goes through files, not pipes:
/// a detached container inherits them, and a pipe would keep `output()` waiting for it.
pub fn runtime(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(skiff_bin());
    cmd.arg("runtime").arg("--root").arg(root).args(args);
    run_via_files(&mut cmd)
}

/// Runs `cmd` with stdout and stderr in temp files; returns them as an `Output`.
pub fn run_via_files(cmd: &mut Command) -> Output {
    let dir = TempDir::new("out");
    let (o, e) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&o).expect("stdout file"))
        .stderr(std::fs::File::create(&e).expect("stderr file"))
        .status()
        .expect("running a command");
    Output {
        status,
        stdout: std::fs::read(&o).unwrap_or_default(),
        stderr: std::fs::read(&e).unwrap_or_default(),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Every cgroup directory named `name` below the v1/v2 mounts (for leak checks).
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path().join("skiff").join(name);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

/// The engine side of `--console-socket`: receives the pty master a runtime sends and collects
/// everything the container writes to its terminal.
pub struct ConsoleSocket {
    pub path: PathBuf,
    thread: Option<std::thread::JoinHandle<Vec<u8>>>,
    _dir: TempDir,
}

impl ConsoleSocket {
    pub fn new() -> ConsoleSocket {
        use std::os::fd::{AsRawFd, FromRawFd};
        let dir = TempDir::new("console");
        let path = dir.path().join("console.sock");
        let listener =
            std::os::unix::net::UnixListener::bind(&path).expect("binding the console socket");
        let thread = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accepting the runtime");
            let mut buf = [0u8; 256];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = nix::sys::socket::recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                nix::sys::socket::MsgFlags::empty(),
            )
            .expect("receiving the terminal");
            let fd = msg
                .cmsgs()
                .expect("control messages")
                .find_map(|c| match c {
                    nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                })
                .expect("an fd in SCM_RIGHTS");
            // SAFETY: the fd was just received and is ours.
            let mut master = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut out = Vec::new();
            // Reading ends with EIO once the last slave fd closes.
            let mut chunk = [0u8; 4096];
            loop {
                match std::io::Read::read(&mut master, &mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                }
            }
            out
        });
        ConsoleSocket {
            path,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Everything written to the terminal (CRLF line ends as a tty makes them).
    pub fn output(mut self) -> String {
        let out = self
            .thread
            .take()
            .map(|t| t.join().expect("console thread"))
            .unwrap_or_default();
        String::from_utf8_lossy(&out).replace("\r\n", "\n")
    }
}

impl Default for ConsoleSocket {
    fn default() -> Self {
        Self::new()
    }
}

/// The `podman run` flags this host needs (`host-prep.sh podman-args`: ulimits without
/// CAP_SYS_RESOURCE).
pub fn podman_args() -> Vec<String> {
    let out = Command::new(peers_dir().join("host-prep.sh"))
        .arg("podman-args")
        .output()
        .expect("running host-prep.sh podman-args");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The registry from `images.json` (make-images.sh), e.g. `127.0.0.1:5000`.
pub fn registry() -> Option<String> {
    let path = images_dir().join("images.json");
    if !require(
        path.exists(),
        "test images pushed to the registry (../shared/peers/make-images.sh)",
    ) {
        return None;
    }
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["registry"].as_str().map(str::to_string)
}

/// `(ref, digest)` of every image in images.json.
pub fn images() -> Vec<(String, String)> {
    let path = images_dir().join("images.json");
    let v: Value =
        serde_json::from_slice(&std::fs::read(path).expect("images.json")).expect("images.json");
    v["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| {
            (
                i["ref"].as_str().unwrap_or_default().to_string(),
                i["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `skiff --root ROOT ARGS…` run to completion.
pub fn skiff(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(skiff_bin());
    cmd.arg("--root").arg(root).args(args);
    run_via_files(&mut cmd)
}

/// Builds one image of `tests/hostile/make-layout.py MODE` (`--big`, `--zeros`) and pushes it
/// to `registry` as `skiff-TAG-PID:latest`; returns that reference.
pub fn push_generated_image(registry: &str, mode: &str, tag: &str) -> String {
    let layout = TempDir::new(&format!("{tag}-layout"));
    ok(run_via_files(
        Command::new("python3")
            .arg(workspace().join("tests/hostile/make-layout.py"))
            .arg(layout.path())
            .arg("/nonexistent")
            .arg(mode),
    ));
    let image = format!("{registry}/skiff-{tag}-{}:latest", std::process::id());
    ok(run_via_files(
        Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.path().display()))
            .arg(format!("docker://{image}")),
    ));
    image
}

/// A small tmpfs (a tiny disk), unmounted on drop even when the test fails.
pub struct SmallDisk(pub TempDir);

impl SmallDisk {
    pub fn new(name: &str, size: &str) -> SmallDisk {
        let dir = TempDir::new(name);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a {size} tmpfs");
        SmallDisk(dir)
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}
