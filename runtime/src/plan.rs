//! Pure: a parsed `config.json` plus the host profile → a [`LaunchPlan`] the container's init
//! process applies step by step. Everything that can be refused without touching the system is
//! refused here, before any state dir, cgroup or process exists.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::caps::{CAP_SYS_RESOURCE, CapSet, ProcessCaps, UnknownCap};
use crate::host::HostProfile;
use crate::seccomp::{self, Arch, Filter, Profile, SeccompError};
use crate::spec::{self, Spec};

/// `RLIMIT_*` names and their resource numbers.
pub const RLIMITS: [(&str, u32); 16] = [
    ("RLIMIT_CPU", 0),
    ("RLIMIT_FSIZE", 1),
    ("RLIMIT_DATA", 2),
    ("RLIMIT_STACK", 3),
    ("RLIMIT_CORE", 4),
    ("RLIMIT_RSS", 5),
    ("RLIMIT_NPROC", 6),
    ("RLIMIT_NOFILE", 7),
    ("RLIMIT_MEMLOCK", 8),
    ("RLIMIT_AS", 9),
    ("RLIMIT_LOCKS", 10),
    ("RLIMIT_SIGPENDING", 11),
    ("RLIMIT_MSGQUEUE", 12),
    ("RLIMIT_NICE", 13),
    ("RLIMIT_RTPRIO", 14),
    ("RLIMIT_RTTIME", 15),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsKind {
    Mount,
    Pid,
    Uts,
    Ipc,
    Net,
    Cgroup,
    User,
    Time,
}

impl NsKind {
    pub fn parse(s: &str) -> Option<NsKind> {
        Some(match s {
            "mount" => NsKind::Mount,
            "pid" => NsKind::Pid,
            "uts" => NsKind::Uts,
            "ipc" => NsKind::Ipc,
            "network" => NsKind::Net,
            "cgroup" => NsKind::Cgroup,
            "user" => NsKind::User,
            "time" => NsKind::Time,
            _ => return None,
        })
    }

    pub fn clone_flag(self) -> i32 {
        match self {
            NsKind::Mount => libc::CLONE_NEWNS,
            NsKind::Pid => libc::CLONE_NEWPID,
            NsKind::Uts => libc::CLONE_NEWUTS,
            NsKind::Ipc => libc::CLONE_NEWIPC,
            NsKind::Net => libc::CLONE_NEWNET,
            NsKind::Cgroup => libc::CLONE_NEWCGROUP,
            NsKind::User => libc::CLONE_NEWUSER,
            NsKind::Time => 0x80,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    /// Namespaces created at clone time (cgroup is unshared later, after the cgroup join).
    pub new_namespaces: Vec<NsKind>,
    pub join_namespaces: Vec<(NsKind, PathBuf)>,
    /// Propagation applied to `/` in the new mount namespace before anything is mounted.
    pub root_propagation: u64,
    pub mounts: Vec<MountStep>,
    pub devices: Vec<DeviceNode>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub hostname: Option<String>,
    pub sysctl: Vec<(String, String)>,
    pub process: ProcessPlan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountStep {
    pub destination: PathBuf,
    pub source: Option<PathBuf>,
    pub fstype: String,
    pub kind: MountKind,
    /// `MS_*` flags for the mount itself.
    pub flags: u64,
    /// Propagation changes applied after the mount (`MS_SHARED|MS_REC`, …).
    pub propagation: Vec<u64>,
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    Bind,
    Filesystem,
    /// The cgroup hierarchy (or hierarchies on v1) as the container should see them.
    Cgroup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// `c`, `b` or `p`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPlan {
    /// A pseudo-terminal is wanted (sent over `--console-socket`).
    pub terminal: bool,
    /// `(rows, columns)` of that terminal.
    pub console_size: Option<(u16, u16)>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: u32,
    pub caps: ProcessCaps,
    pub no_new_privs: bool,
    pub rlimits: Vec<RlimitPlan>,
    pub oom_score_adj: Option<i32>,
    /// The compiled `linux.seccomp` filter, loaded last (or before dropping privileges when
    /// no_new_privs is off, since loading then needs CAP_SYS_ADMIN).
    pub seccomp: Option<Filter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlimitPlan {
    pub name: String,
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("config.json has no root.path")]
    NoRoot,
    #[error("config.json has no process")]
    NoProcess,
    #[error("config.json: process.args is empty")]
    NoArgs,
    #[error("config.json: process.cwd {0:?} is not absolute")]
    RelativeCwd(PathBuf),
    #[error("config.json: unknown namespace type {0:?}")]
    UnknownNamespace(String),
    #[error("config.json: namespace {0:?} listed twice")]
    DuplicateNamespace(String),
    #[error("config.json: process.capabilities: {0}")]
    UnknownCap(#[from] UnknownCap),
    #[error(
        "config.json asks for capabilities the runtime does not hold: {}",
        .0.join(", ")
    )]
    CapNotHeld(Vec<&'static str>),
    #[error("config.json: unknown rlimit type {0:?}")]
    UnknownRlimit(String),
    #[error("config.json: {name} soft limit {soft} is above its hard limit {hard}")]
    SoftAboveHard { name: String, soft: u64, hard: u64 },
    #[error(
        "config.json: {name} hard limit {asked} is above the runtime's own hard limit {held}, and raising it needs CAP_SYS_RESOURCE, which this runtime lacks"
    )]
    RlimitAboveHard { name: String, asked: u64, held: u64 },
    #[error("config.json: mount destination {0:?} is not absolute")]
    RelativeMount(PathBuf),
    #[error("config.json: {0} mount of {1:?} has no source")]
    MountWithoutSource(&'static str, PathBuf),
    #[error("config.json: device {path:?} has unknown type {kind:?}")]
    DeviceType { path: PathBuf, kind: String },
    #[error("config.json: device path {0:?} is not under /dev")]
    DevicePath(PathBuf),
    #[error("config.json: unknown rootfsPropagation {0:?}")]
    Propagation(String),
    #[error("config.json: linux.seccomp: {0}")]
    SeccompProfile(serde_json::Error),
    #[error("config.json: linux.seccomp: {0}")]
    Seccomp(#[from] SeccompError),
    #[error("config.json: a new user namespace needs linux.uidMappings and linux.gidMappings")]
    NoIdMappings,
}

/// Builds the plan for `spec`, whose relative paths are relative to `bundle`.
pub fn build(spec: &Spec, bundle: &Path, host: &HostProfile) -> Result<LaunchPlan, PlanError> {
    let root = spec.root.as_ref().ok_or(PlanError::NoRoot)?;
    let process = spec.process.as_ref().ok_or(PlanError::NoProcess)?;
    let linux = spec.linux.clone().unwrap_or_default();

    let mut new_namespaces = Vec::new();
    let mut join_namespaces = Vec::new();
    for ns in &linux.namespaces {
        let kind =
            NsKind::parse(&ns.kind).ok_or_else(|| PlanError::UnknownNamespace(ns.kind.clone()))?;
        if new_namespaces.contains(&kind) || join_namespaces.iter().any(|(k, _)| *k == kind) {
            return Err(PlanError::DuplicateNamespace(ns.kind.clone()));
        }
        match &ns.path {
            Some(p) if !p.as_os_str().is_empty() => join_namespaces.push((kind, p.clone())),
            _ => new_namespaces.push(kind),
        }
    }

    if new_namespaces.contains(&NsKind::User)
        && (linux.uid_mappings.is_empty() || linux.gid_mappings.is_empty())
    {
        return Err(PlanError::NoIdMappings);
    }

    let root_propagation = match linux.rootfs_propagation.as_deref() {
        None | Some("") => libc::MS_SLAVE | libc::MS_REC,
        Some(p) => propagation_flag(p).ok_or_else(|| PlanError::Propagation(p.to_string()))?,
    };

    let mut mounts = Vec::new();
    for m in &spec.mounts {
        mounts.push(mount_step(m)?);
    }

    Ok(LaunchPlan {
        rootfs: bundle.join(&root.path),
        readonly_root: root.readonly,
        new_namespaces,
        join_namespaces,
        root_propagation: root_propagation as u64,
        mounts,
        devices: devices(&linux.devices)?,
        masked_paths: linux.masked_paths.clone(),
        readonly_paths: linux.readonly_paths.clone(),
        hostname: spec.hostname.clone().filter(|h| !h.is_empty()),
        sysctl: linux.sysctl.clone().into_iter().collect(),
        process: ProcessPlan {
            seccomp: seccomp_filter(spec)?,
            ..process_plan(process, host)?
        },
    })
}

/// The container's seccomp filter, compiled for this machine.
pub fn seccomp_filter(spec: &Spec) -> Result<Option<Filter>, PlanError> {
    let Some(value) = spec.linux.as_ref().and_then(|l| l.seccomp.as_ref()) else {
        return Ok(None);
    };
    let profile: Profile =
        serde_json::from_value(value.clone()).map_err(PlanError::SeccompProfile)?;
    Ok(Some(seccomp::compile(&profile, Arch::native())?))
}

pub fn process_plan(p: &spec::Process, host: &HostProfile) -> Result<ProcessPlan, PlanError> {
    if p.args.is_empty() {
        return Err(PlanError::NoArgs);
    }
    if !p.cwd.is_absolute() {
        return Err(PlanError::RelativeCwd(p.cwd.clone()));
    }
    let caps = match &p.capabilities {
        Some(c) => ProcessCaps {
            bounding: CapSet::from_names(&c.bounding)?,
            effective: CapSet::from_names(&c.effective)?,
            inheritable: CapSet::from_names(&c.inheritable)?,
            permitted: CapSet::from_names(&c.permitted)?,
            ambient: CapSet::from_names(&c.ambient)?,
        },
        None => ProcessCaps::default(),
    };
    let asked = CapSet(caps.permitted.0 | caps.effective.0 | caps.ambient.0);
    let missing = asked.missing_from(host.held_caps);
    if missing.0 != 0 {
        return Err(PlanError::CapNotHeld(missing.names()));
    }
    let mut rlimits = Vec::new();
    for r in &p.rlimits {
        let (name, resource) = RLIMITS
            .iter()
            .find(|(n, _)| *n == r.kind)
            .copied()
            .ok_or_else(|| PlanError::UnknownRlimit(r.kind.clone()))?;
        if r.soft > r.hard {
            return Err(PlanError::SoftAboveHard {
                name: name.into(),
                soft: r.soft,
                hard: r.hard,
            });
        }
        if let Some(&held) = host.hard_limits.get(name)
            && r.hard > held
            && !host.has_cap(CAP_SYS_RESOURCE)
        {
            return Err(PlanError::RlimitAboveHard {
                name: name.into(),
                asked: r.hard,
                held,
            });
        }
        rlimits.push(RlimitPlan {
            name: name.into(),
            resource,
            soft: r.soft,
            hard: r.hard,
        });
    }
    Ok(ProcessPlan {
        terminal: p.terminal,
        console_size: p.console_size.map(|c| (c.height, c.width)),
        args: p.args.clone(),
        env: p.env.clone(),
        cwd: p.cwd.clone(),
        uid: p.user.uid,
        gid: p.user.gid,
        additional_gids: p.user.additional_gids.clone(),
        umask: p.user.umask.unwrap_or(0o022),
        caps,
        no_new_privs: p.no_new_privileges,
        rlimits,
        oom_score_adj: p.oom_score_adj,
        seccomp: None,
    })
}

fn propagation_flag(opt: &str) -> Option<libc::c_ulong> {
    Some(match opt {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// `(set, flag)` for mount options that are flags; anything else is filesystem data.
fn flag_option(opt: &str) -> Option<(bool, libc::c_ulong)> {
    Some(match opt {
        "ro" => (true, libc::MS_RDONLY),
        "rw" => (false, libc::MS_RDONLY),
        "nosuid" => (true, libc::MS_NOSUID),
        "suid" => (false, libc::MS_NOSUID),
        "nodev" => (true, libc::MS_NODEV),
        "dev" => (false, libc::MS_NODEV),
        "noexec" => (true, libc::MS_NOEXEC),
        "exec" => (false, libc::MS_NOEXEC),
        "sync" => (true, libc::MS_SYNCHRONOUS),
        "async" => (false, libc::MS_SYNCHRONOUS),
        "dirsync" => (true, libc::MS_DIRSYNC),
        "remount" => (true, libc::MS_REMOUNT),
        "mand" => (true, libc::MS_MANDLOCK),
        "nomand" => (false, libc::MS_MANDLOCK),
        "noatime" => (true, libc::MS_NOATIME),
        "atime" => (false, libc::MS_NOATIME),
        "nodiratime" => (true, libc::MS_NODIRATIME),
        "diratime" => (false, libc::MS_NODIRATIME),
        "relatime" => (true, libc::MS_RELATIME),
        "norelatime" => (false, libc::MS_RELATIME),
        "strictatime" => (true, libc::MS_STRICTATIME),
        "nostrictatime" => (false, libc::MS_STRICTATIME),
        "bind" => (true, libc::MS_BIND),
        "rbind" => (true, libc::MS_BIND | libc::MS_REC),
        _ => return None,
    })
}

fn mount_step(m: &spec::Mount) -> Result<MountStep, PlanError> {
    if !m.destination.is_absolute() {
        return Err(PlanError::RelativeMount(m.destination.clone()));
    }
    let mut flags: libc::c_ulong = 0;
    let mut propagation = Vec::new();
    let mut data = Vec::new();
    for opt in &m.options {
        if let Some((set, flag)) = flag_option(opt) {
            if set {
                flags |= flag;
            } else {
                flags &= !flag;
            }
        } else if let Some(p) = propagation_flag(opt) {
            propagation.push(p as u64);
        } else if matches!(
            opt.as_str(),
            "tmpcopyup" | "notmpcopyup" | "z" | "Z" | "U" | "copy-symlink"
        ) {
            // Engine-side hints (podman/crun extensions) with nothing to do at mount time.
        } else {
            data.push(opt.as_str());
        }
    }
    let fstype = m.kind.clone().unwrap_or_default();
    let kind = if flags & libc::MS_BIND != 0 || fstype == "bind" {
        flags |= libc::MS_BIND;
        if m.source.is_none() {
            return Err(PlanError::MountWithoutSource("bind", m.destination.clone()));
        }
        MountKind::Bind
    } else if fstype == "cgroup" || fstype == "cgroup2" {
        MountKind::Cgroup
    } else {
        MountKind::Filesystem
    };
    Ok(MountStep {
        destination: m.destination.clone(),
        source: m.source.clone(),
        fstype,
        kind,
        flags: flags as u64,
        propagation,
        data: data.join(","),
    })
}

/// The device cgroup rules: the config's, then access to every device node the container gets
/// (the defaults, `/dev/pts/*`, `/dev/ptmx`, the config's devices) and mknod of any node, as
/// runc and crun add them.
pub fn device_rules(config: &[spec::DeviceRule], nodes: &[DeviceNode]) -> Vec<spec::DeviceRule> {
    let allow =
        |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| spec::DeviceRule {
            allow: true,
            kind: Some(kind.to_string()),
            major,
            minor,
            access: Some(access.to_string()),
        };
    let mut rules = config.to_vec();
    if rules.is_empty() {
        return rules;
    }
    rules.push(allow("c", None, None, "m"));
    rules.push(allow("b", None, None, "m"));
    for n in nodes {
        let (major, minor) = (i64::try_from(n.major).ok(), i64::try_from(n.minor).ok());
        rules.push(allow(&n.kind.to_string(), major, minor, "rwm"));
    }
    rules.push(allow("c", Some(5), Some(2), "rwm")); // /dev/ptmx
    rules.push(allow("c", Some(136), None, "rwm")); // /dev/pts/*
    rules.push(allow("c", Some(5), Some(1), "rwm")); // /dev/console
    rules
}

/// The devices every container gets, then the config's (which win on the same path).
fn devices(extra: &[spec::Device]) -> Result<Vec<DeviceNode>, PlanError> {
    let default = |name: &str, major, minor| DeviceNode {
        path: PathBuf::from(format!("/dev/{name}")),
        kind: 'c',
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    };
    let mut out = vec![
        default("null", 1, 3),
        default("zero", 1, 5),
        default("full", 1, 7),
        default("random", 1, 8),
        default("urandom", 1, 9),
        default("tty", 5, 0),
    ];
    for d in extra {
        if !d.path.starts_with("/dev/") {
            return Err(PlanError::DevicePath(d.path.clone()));
        }
        let kind = match d.kind.as_str() {
            "c" | "u" => 'c',
            "b" => 'b',
            "p" => 'p',
            _ => {
                return Err(PlanError::DeviceType {
                    path: d.path.clone(),
                    kind: d.kind.clone(),
                });
            }
        };
        let node = DeviceNode {
            path: d.path.clone(),
            kind,
            major: d.major.max(0) as u64,
            minor: d.minor.max(0) as u64,
            mode: d.file_mode.unwrap_or(0o666) & 0o7777,
            uid: d.uid.unwrap_or(0),
            gid: d.gid.unwrap_or(0),
        };
        out.retain(|n| n.path != node.path);
        out.push(node);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn host() -> HostProfile {
        HostProfile {
            held_caps: CapSet(!(1 << CAP_SYS_RESOURCE) & ((1 << 41) - 1)),
            last_cap: 40,
            hard_limits: BTreeMap::from([("RLIMIT_NOFILE", 20_000)]),
        }
    }

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str = r#"{"root":{"path":"rootfs","readonly":true},
        "process":{"args":["/bin/true"],"cwd":"/","capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]},
          "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}]},
        "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/data","type":"bind","source":"/srv","options":["rbind","ro","nosuid","rprivate"]},
                  {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]}],
        "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"network","path":"/proc/1/ns/net"}]}}"#;

    #[test]
    fn plan_of_a_typical_bundle() {
        let plan = build(&spec(BASE), Path::new("/b"), &host()).unwrap();
        assert_eq!(plan.rootfs, PathBuf::from("/b/rootfs"));
        assert!(plan.readonly_root);
        assert_eq!(plan.new_namespaces, vec![NsKind::Pid, NsKind::Mount]);
        assert_eq!(
            plan.join_namespaces,
            vec![(NsKind::Net, PathBuf::from("/proc/1/ns/net"))]
        );
        let bind = &plan.mounts[1];
        assert_eq!(bind.kind, MountKind::Bind);
        assert_eq!(
            bind.flags,
            (libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NOSUID) as u64
        );
        assert_eq!(
            bind.propagation,
            vec![(libc::MS_PRIVATE | libc::MS_REC) as u64]
        );
        assert_eq!(plan.mounts[2].data, "mode=755,size=65536k");
        assert_eq!(plan.process.caps.bounding, CapSet(1 << 5));
        assert_eq!(plan.process.umask, 0o022);
        assert_eq!(plan.devices.len(), 6);
    }

    #[test]
    fn rlimit_above_the_held_hard_limit_names_the_limit() {
        let json = BASE.replace("\"hard\":1024", "\"hard\":1048576");
        let err = build(&spec(&json), Path::new("/b"), &host()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("RLIMIT_NOFILE") && msg.contains("20000"),
            "{msg}"
        );
    }

    #[test]
    fn caps_the_runtime_lacks_are_refused_by_name() {
        let json = BASE.replace(
            "\"permitted\":[\"CAP_KILL\"]",
            "\"permitted\":[\"CAP_SYS_RESOURCE\"]",
        );
        let err = build(&spec(&json), Path::new("/b"), &host()).unwrap_err();
        assert!(err.to_string().contains("CAP_SYS_RESOURCE"), "{err}");
    }

    #[test]
    fn bad_fields_are_refused() {
        for (from, to) in [
            ("\"type\":\"pid\"", "\"type\":\"pdi\""),
            ("\"destination\":\"/proc\"", "\"destination\":\"proc\""),
            ("\"args\":[\"/bin/true\"]", "\"args\":[]"),
            ("RLIMIT_NOFILE", "RLIMIT_FILES"),
        ] {
            let json = BASE.replace(from, to);
            assert!(
                build(&spec(&json), Path::new("/b"), &host()).is_err(),
                "{to}"
            );
        }
    }
}
