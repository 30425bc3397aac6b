//! Image config + run options → an OCI runtime `config.json` with Docker's defaults: its
//! capabilities, masked and read-only paths, devices, mounts, and skiff's default seccomp
//! profile (Docker's policy).

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};
use skiff_runtime::caps::CapSet;
use skiff_runtime::seccomp::{self, Arch};

/// The capabilities Docker gives a container by default.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The parts of an image config a container is made from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageJson {
    #[serde(default)]
    pub config: ImageConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The host's network (Docker's default bridge maps here until bridges exist).
    Host,
    /// A network namespace with loopback only.
    None,
}

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub hostname: String,
    /// `CMD…` after the image name: replaces the image's Cmd.
    pub cmd: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub network: Network,
    pub tty: bool,
    /// A directory holding the container's `hostname`, `hosts` and `resolv.conf`, bound over
    /// the image's (as Docker does); see [`write_etc_files`].
    pub etc_files: Option<std::path::PathBuf>,
}

/// Writes `hostname`, `hosts` and `resolv.conf` for a container into `dir`: the host's
/// resolver configuration (the container shares the host's network, or has none), loopback
/// names and the container's own hostname.
pub fn write_etc_files(dir: &Path, hostname: &str, network: Network) -> std::io::Result<()> {
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    std::fs::write(dir.join("hosts"), hosts)?;
    let resolv = match network {
        Network::Host => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        Network::None => String::new(),
    };
    std::fs::write(dir.join("resolv.conf"), resolv)
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the image has no command to run (no Entrypoint or Cmd) and none was given")]
    NoCommand,
    #[error("user {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
    #[error("reading {0}")]
    Read(String, #[source] std::io::Error),
}

/// Looks `name` up in an `/etc/passwd`- or `/etc/group`-style file: (id, gid for passwd).
fn lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| {
            let id = f[2].parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
            Some((id, gid))
        })?
    })
}

fn read_in_root(rootfs: &Path, path: &str) -> String {
    skiff_runtime::rootfs::resolve(rootfs, Path::new(path))
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// `USER[:GROUP]` (names or numbers) → uid, gid, supplementary gids, via the image's files.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), BundleError> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let passwd = read_in_root(rootfs, "/etc/passwd");
    let group = read_in_root(rootfs, "/etc/group");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_by_id(&passwd, n).unwrap_or(n)),
        Err(_) => lookup(&passwd, u).ok_or_else(|| BundleError::UnknownUser(u.to_string()))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup(&group, g)
                    .ok_or_else(|| BundleError::UnknownGroup(g.to_string()))?
                    .0
            }
        },
    };
    // Supplementary groups: every group listing the user by name.
    let name = passwd
        .lines()
        .find(|l| l.split(':').nth(2).and_then(|x| x.parse::<u32>().ok()) == Some(uid))
        .and_then(|l| l.split(':').next())
        .unwrap_or(u)
        .to_string();
    let extra = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == name)).then(|| f[2].parse().ok())?
        })
        .filter(|g| *g != gid)
        .collect();
    Ok((uid, gid, extra))
}

fn lookup_by_id(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[3].parse().ok())?
    })
}

/// The runtime config for running `image` with `run` on the (mounted) `rootfs`.
pub fn config(image: &ImageConfig, run: &RunSpec, rootfs: &Path) -> Result<Value, BundleError> {
    let entrypoint = run
        .entrypoint
        .clone()
        .or_else(|| image.entrypoint.clone())
        .unwrap_or_default();
    let cmd = if run.cmd.is_empty() {
        // An overridden entrypoint drops the image's Cmd, as Docker does.
        if run.entrypoint.is_some() {
            Vec::new()
        } else {
            image.cmd.clone().unwrap_or_default()
        }
    } else {
        run.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.to_string());
    };
    set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    set(&format!("HOSTNAME={}", run.hostname));
    for kv in &image.env {
        set(kv);
    }
    if run.tty {
        set("TERM=xterm");
    }
    for kv in &run.env {
        set(kv);
    }
    let user = run
        .user
        .clone()
        .or_else(|| image.user.clone())
        .unwrap_or_default();
    let (uid, gid, extra) = resolve_user(rootfs, &user)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let passwd = read_in_root(rootfs, "/etc/passwd");
        let home = passwd
            .lines()
            .find(|l| l.split(':').nth(2).and_then(|x| x.parse::<u32>().ok()) == Some(uid))
            .and_then(|l| l.split(':').nth(5))
            .filter(|h| !h.is_empty())
            .unwrap_or("/")
            .to_string();
        env.push(format!("HOME={home}"));
    }
    let cwd = run
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let capset = CapSet::from_names(&caps).unwrap_or_default();
    let seccomp = serde_json::to_value(seccomp::default::profile(capset, Arch::native()))
        .unwrap_or(Value::Null);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if run.network == Network::None {
        namespaces.push(json!({"type": "network"}));
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": run.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": extra},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false,
            "oomScoreAdj": 0,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": run.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "seccomp": seccomp,
        },
        "annotations": image.labels,
    });
    if let (Some(dir), Some(mounts)) = (&run.etc_files, config["mounts"].as_array_mut()) {
        for name in ["hostname", "hosts", "resolv.conf"] {
            mounts.push(json!({
                "destination": format!("/etc/{name}"),
                "type": "bind",
                "source": dir.join(name),
                "options": ["rbind", "rprivate"],
            }));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-bundle-{name}-{}", std::process::id()));
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(
            d.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.join("etc/group"),
            "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\n",
        )
        .unwrap();
        d
    }

    fn run() -> RunSpec {
        RunSpec {
            hostname: "abc".into(),
            cmd: Vec::new(),
            entrypoint: None,
            env: vec!["X=2".into()],
            user: None,
            workdir: None,
            network: Network::Host,
            tty: false,
            etc_files: None,
        }
    }

    #[test]
    fn users_resolve_through_the_image_files() {
        let r = root("users");
        assert_eq!(resolve_user(&r, "app").unwrap(), (1000, 1001, vec![2000]));
        assert_eq!(resolve_user(&r, "app:root").unwrap(), (1000, 0, vec![2000]));
        assert_eq!(resolve_user(&r, "1000").unwrap(), (1000, 1001, vec![2000]));
        assert_eq!(resolve_user(&r, "4242:4343").unwrap(), (4242, 4343, vec![]));
        assert!(matches!(
            resolve_user(&r, "nobody-here"),
            Err(BundleError::UnknownUser(_))
        ));
        std::fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn entrypoint_cmd_env_and_defaults() {
        let r = root("defaults");
        let img = ImageConfig {
            env: vec!["X=1".into(), "Y=1".into()],
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["default".into()]),
            working_dir: Some("/app".into()),
            user: Some("app".into()),
            ..ImageConfig::default()
        };
        let c = config(&img, &run(), &r).unwrap();
        assert_eq!(c["process"]["args"], json!(["/entry", "default"]));
        assert_eq!(c["process"]["cwd"], "/app");
        assert_eq!(c["process"]["user"]["uid"], 1000);
        let env = c["process"]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!("X=2"))
                && env.contains(&json!("Y=1"))
                && env.contains(&json!("HOME=/home/app"))
        );
        assert_eq!(
            c["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert!(c["linux"]["seccomp"]["syscalls"].is_array());
        let mut over = run();
        over.cmd = vec!["echo".into(), "hi".into()];
        assert_eq!(
            config(&img, &over, &r).unwrap()["process"]["args"],
            json!(["/entry", "echo", "hi"])
        );
        over.entrypoint = Some(vec![]);
        assert_eq!(
            config(&img, &over, &r).unwrap()["process"]["args"],
            json!(["echo", "hi"])
        );
        std::fs::remove_dir_all(r).unwrap();
    }
}
