//! cgroups v1 and v2: where each controller lives (read from mountinfo), how `linux.resources`
//! translates into control files for each version, and creating, joining and removing a group.
//!
//! The translation is pure ([`translate`]); [`Cgroup`] applies it under whatever mount points the
//! [`Layout`] names, so tests run it against a fake cgroupfs directory.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::Resources;

/// The controllers skiff writes limits for.
const LIMITED: [&str; 4] = ["memory", "pids", "cpu", "cpuset"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// v1 hierarchies: mount point and the controllers (or `name=…`) it holds.
    pub v1: Vec<V1Hierarchy>,
    /// The cgroup2 mount, if any, with the controllers it offers at its root.
    pub v2: Option<V2Hierarchy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Hierarchy {
    pub mount: PathBuf,
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Hierarchy {
    pub mount: PathBuf,
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

impl Layout {
    /// Parses `/proc/self/mountinfo`; `v2_controllers` reads `cgroup.controllers` of a cgroup2
    /// mount point.
    pub fn parse(mountinfo: &str, v2_controllers: impl Fn(&Path) -> String) -> Layout {
        let mut layout = Layout::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = match left.split(' ').nth(4) {
                Some(m) => PathBuf::from(unescape(m)),
                None => continue,
            };
            let mut right = right.split(' ');
            let (fstype, _source, super_opts) = (right.next(), right.next(), right.next());
            match fstype {
                Some("cgroup") => {
                    let controllers = super_opts
                        .unwrap_or("")
                        .split(',')
                        .filter(|o| is_controller_option(o))
                        .map(str::to_string)
                        .collect();
                    layout.v1.push(V1Hierarchy { mount, controllers });
                }
                Some("cgroup2") if layout.v2.is_none() => {
                    let controllers = v2_controllers(&mount)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    layout.v2 = Some(V2Hierarchy { mount, controllers });
                }
                _ => {}
            }
        }
        layout
    }

    /// Reads this process's view of the host.
    pub fn detect() -> io::Result<Layout> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(Layout::parse(&mountinfo, |m| {
            std::fs::read_to_string(m.join("cgroup.controllers")).unwrap_or_default()
        }))
    }

    /// Which version holds `controller`: v1 wins where both mention it (a hybrid host).
    pub fn version_of(&self, controller: &str) -> Option<Version> {
        if self.v1_mount(controller).is_some() {
            Some(Version::V1)
        } else if self
            .v2
            .as_ref()
            .is_some_and(|v2| v2.controllers.iter().any(|c| c == controller))
        {
            Some(Version::V2)
        } else {
            None
        }
    }

    fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount.as_path())
    }

    /// True when no v1 hierarchy holds a resource controller (a pure v2 host).
    pub fn is_unified(&self) -> bool {
        self.v2.is_some() && LIMITED.iter().all(|c| self.v1_mount(c).is_none())
    }
}

fn is_controller_option(o: &str) -> bool {
    const NOT: [&str; 10] = [
        "rw",
        "ro",
        "nosuid",
        "nodev",
        "noexec",
        "relatime",
        "noatime",
        "xattr",
        "clone_children",
        "nsdelegate",
    ];
    !o.is_empty() && !NOT.contains(&o) && !o.starts_with("release_agent=")
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// One control-file write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub controller: String,
    pub version: Version,
    pub file: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "the {controller} controller is needed for linux.resources but no cgroup hierarchy offers it"
    )]
    MissingController { controller: String },
    #[error("linux.resources.unified needs cgroup v2, but {key} belongs to a v1 controller here")]
    UnifiedOnV1 { key: String },
    #[error("creating cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoHierarchy,
}

/// The writes `resources` needs, each for the version that holds its controller.
pub fn translate(resources: &Resources, layout: &Layout) -> Result<Vec<Write>, CgroupError> {
    let mut out = Vec::new();
    let mut push = |controller: &str, v1: (&str, String), v2: Option<(&str, String)>| {
        let version =
            layout
                .version_of(controller)
                .ok_or_else(|| CgroupError::MissingController {
                    controller: controller.to_string(),
                })?;
        let (file, value) = match version {
            Version::V1 => v1,
            Version::V2 => match v2 {
                Some(w) => w,
                None => return Ok(()),
            },
        };
        out.push(Write {
            controller: controller.to_string(),
            version,
            file: file.to_string(),
            value,
        });
        Ok::<(), CgroupError>(())
    };
    if let Some(m) = &resources.memory {
        if let Some(limit) = m.limit {
            push(
                "memory",
                ("memory.limit_in_bytes", limit.to_string()),
                Some(("memory.max", max_or(limit))),
            )?;
        }
        if let Some(res) = m.reservation {
            push(
                "memory",
                ("memory.soft_limit_in_bytes", res.to_string()),
                Some(("memory.low", max_or(res))),
            )?;
        }
        if let Some(swap) = m.swap {
            // v1 limits memory+swap together; v2 limits swap alone.
            let v2 = match (swap, m.limit) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                (s, _) => s.to_string(),
            };
            push(
                "memory",
                ("memory.memsw.limit_in_bytes", swap.to_string()),
                Some(("memory.swap.max", v2)),
            )?;
        }
        if let Some(sw) = m.swappiness {
            push("memory", ("memory.swappiness", sw.to_string()), None)?;
        }
        if m.disable_oom_killer == Some(true) {
            push("memory", ("memory.oom_control", "1".into()), None)?;
        }
    }
    if let Some(p) = &resources.pids {
        let v = if p.limit > 0 {
            p.limit.to_string()
        } else {
            "max".into()
        };
        push("pids", ("pids.max", v.clone()), Some(("pids.max", v)))?;
    }
    if let Some(c) = &resources.cpu {
        if let Some(shares) = c.shares {
            push(
                "cpu",
                ("cpu.shares", shares.to_string()),
                Some(("cpu.weight", shares_to_weight(shares).to_string())),
            )?;
        }
        if c.period.is_some() || c.quota.is_some() {
            let period = c.period.unwrap_or(100_000);
            if let Some(p) = c.period {
                push("cpu", ("cpu.cfs_period_us", p.to_string()), None)?;
            }
            let quota = c.quota.unwrap_or(-1);
            push(
                "cpu",
                ("cpu.cfs_quota_us", quota.to_string()),
                Some(("cpu.max", format!("{} {period}", max_or(quota)))),
            )?;
        }
        if let Some(cpus) = &c.cpus {
            push(
                "cpuset",
                ("cpuset.cpus", cpus.clone()),
                Some(("cpuset.cpus", cpus.clone())),
            )?;
        }
        if let Some(mems) = &c.mems {
            push(
                "cpuset",
                ("cpuset.mems", mems.clone()),
                Some(("cpuset.mems", mems.clone())),
            )?;
        }
    }
    if layout.version_of("devices") == Some(Version::V1) {
        for rule in &resources.devices {
            push(
                "devices",
                (
                    if rule.allow {
                        "devices.allow"
                    } else {
                        "devices.deny"
                    },
                    device_rule(rule),
                ),
                None,
            )?;
        }
    }
    for (key, value) in &resources.unified {
        let controller = key.split('.').next().unwrap_or_default();
        if layout.version_of(controller) == Some(Version::V1) {
            return Err(CgroupError::UnifiedOnV1 { key: key.clone() });
        }
        out.push(Write {
            controller: controller.to_string(),
            version: Version::V2,
            file: key.clone(),
            value: value.clone(),
        });
    }
    Ok(out)
}

fn max_or(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// cpu.shares (2..262144) → cpu.weight (1..10000), the mapping runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

fn device_rule(rule: &crate::spec::DeviceRule) -> String {
    let kind = rule.kind.as_deref().unwrap_or("a");
    if kind == "a" && rule.major.is_none() && rule.minor.is_none() {
        return "a".into();
    }
    let num = |n: Option<i64>| match n {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".into(),
    };
    format!(
        "{kind} {}:{} {}",
        num(rule.major),
        num(rule.minor),
        rule.access.as_deref().unwrap_or("rwm")
    )
}

/// The cgroup path for a container: `cgroupsPath` as given (relative paths are made absolute),
/// systemd's `slice:prefix:name` expanded, or `/skiff/<id>` when unset.
pub fn container_path(cgroups_path: Option<&str>, id: &str) -> PathBuf {
    match cgroups_path {
        None | Some("") => PathBuf::from(format!("/skiff/{id}")),
        Some(p) if p.contains(':') && !p.starts_with('/') => {
            let mut parts = p.splitn(3, ':');
            let (slice, prefix, name) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(id),
            );
            let mut path = PathBuf::from("/");
            path.push(expand_slice(if slice.is_empty() {
                "system.slice"
            } else {
                slice
            }));
            path.push(format!("{prefix}-{name}.scope"));
            path
        }
        Some(p) => Path::new("/").join(p.trim_start_matches('/')),
    }
}

/// systemd nests `a-b-c.slice` as `a.slice/a-b.slice/a-b-c.slice`.
fn expand_slice(slice: &str) -> PathBuf {
    let stem = slice.trim_end_matches(".slice");
    let mut path = PathBuf::new();
    let mut acc = String::new();
    for part in stem.split('-') {
        if !acc.is_empty() {
            acc.push('-');
        }
        acc.push_str(part);
        path.push(format!("{acc}.slice"));
    }
    path
}

/// A container's group in every hierarchy: created, limited, joined, removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// One directory per v1 hierarchy plus the v2 one, each paired with the version.
    pub dirs: Vec<(Version, Vec<String>, PathBuf)>,
}

impl Cgroup {
    /// Creates `path` in every hierarchy and applies `writes`. On error, what was created is
    /// removed again.
    pub fn create(layout: &Layout, path: &Path, writes: &[Write]) -> Result<Cgroup, CgroupError> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let mut cg = Cgroup { dirs: Vec::new() };
        for h in &layout.v1 {
            cg.dirs
                .push((Version::V1, h.controllers.clone(), h.mount.join(rel)));
        }
        if let Some(v2) = &layout.v2 {
            cg.dirs
                .push((Version::V2, v2.controllers.clone(), v2.mount.join(rel)));
        }
        if cg.dirs.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let result = cg.make(layout, rel, writes);
        if result.is_err() {
            cg.destroy();
        }
        result.map(|()| cg)
    }

    fn make(&self, layout: &Layout, rel: &Path, writes: &[Write]) -> Result<(), CgroupError> {
        for (version, controllers, dir) in &self.dirs {
            let create_err = |source| CgroupError::Create {
                path: dir.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(create_err)?;
            if *version == Version::V1 && controllers.iter().any(|c| c == "cpuset") {
                let mount = dir.ancestors().nth(rel.components().count()).unwrap_or(dir);
                inherit_cpuset(mount, rel)?;
            }
            if *version == Version::V2 && layout.is_unified() {
                let wanted: BTreeSet<&str> = writes
                    .iter()
                    .filter(|w| w.version == Version::V2)
                    .map(|w| w.controller.as_str())
                    .collect();
                let mount = dir.ancestors().nth(rel.components().count()).unwrap_or(dir);
                enable_subtree(mount, rel, &wanted)?;
            }
        }
        self.apply(writes)
    }

    /// Applies `writes` to an existing group (`update`).
    pub fn apply(&self, writes: &[Write]) -> Result<(), CgroupError> {
        for w in writes {
            let dir = self.dir_for(&w.controller, w.version).ok_or_else(|| {
                CgroupError::MissingController {
                    controller: w.controller.clone(),
                }
            })?;
            let path = dir.join(&w.file);
            if w.file == "memory.memsw.limit_in_bytes" && !path.exists() {
                continue;
            }
            write_file(&path, &w.value)?;
        }
        Ok(())
    }

    /// Freezes or thaws every process in the group and waits until the kernel reports it done.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let (path, value) = self
            .freezer_file(frozen)
            .ok_or(CgroupError::MissingController {
                controller: "freezer".into(),
            })?;
        write_file(&path, value)?;
        let t0 = std::time::Instant::now();
        while self.is_frozen() != frozen && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }

    fn freezer_file(&self, frozen: bool) -> Option<(PathBuf, &'static str)> {
        if let Some(dir) = self.dir_for("freezer", Version::V1) {
            return Some((
                dir.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ));
        }
        let (_, _, dir) = self.dirs.iter().find(|(v, _, _)| *v == Version::V2)?;
        Some((dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }))
    }

    pub fn is_frozen(&self) -> bool {
        if let Some(dir) = self.dir_for("freezer", Version::V1) {
            return std::fs::read_to_string(dir.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN");
        }
        self.dirs
            .iter()
            .filter(|(v, _, _)| *v == Version::V2)
            .any(|(_, _, d)| {
                std::fs::read_to_string(d.join("cgroup.events"))
                    .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
            })
    }

    fn dir_for(&self, controller: &str, version: Version) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(v, cs, _)| {
                *v == version && (version == Version::V2 || cs.iter().any(|c| c == controller))
            })
            .map(|(_, _, d)| d.as_path())
    }

    /// Moves `pid` into the group in every hierarchy.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, _, dir) in &self.dirs {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the group (from the first hierarchy that answers).
    pub fn pids(&self) -> Vec<i32> {
        for (_, _, dir) in &self.dirs {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
        Vec::new()
    }

    /// The directory of `controller`, for reading statistics.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.dir_for(controller, Version::V1)
            .or_else(|| self.dir_for(controller, Version::V2))
    }

    /// Removes the group everywhere. Groups still holding processes stay (rmdir fails with
    /// EBUSY); the caller kills first.
    pub fn destroy(&self) -> Vec<(PathBuf, io::Error)> {
        let mut failed = Vec::new();
        for (_, _, dir) in &self.dirs {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failed.push((dir.clone(), e)),
            }
        }
        failed
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// A new v1 cpuset group starts with empty `cpus`/`mems`, which refuses tasks: copy the
/// parent's values down the path.
fn inherit_cpuset(mount: &Path, rel: &Path) -> Result<(), CgroupError> {
    let mut dir = mount.to_path_buf();
    for comp in rel.components() {
        let parent = dir.clone();
        dir.push(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                let value = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                write_file(&dir.join(file), value.trim())?;
            }
        }
    }
    Ok(())
}

/// v2 only lets a child use a controller its parent enabled in `cgroup.subtree_control`.
fn enable_subtree(mount: &Path, rel: &Path, wanted: &BTreeSet<&str>) -> Result<(), CgroupError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let line = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut dir = mount.to_path_buf();
    for comp in rel.components() {
        write_file(&dir.join("cgroup.subtree_control"), &line)?;
        dir.push(comp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Cpu, Memory, Pids};

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    fn resources() -> Resources {
        Resources {
            memory: Some(Memory {
                limit: Some(64 << 20),
                swap: Some(128 << 20),
                ..Memory::default()
            }),
            pids: Some(Pids { limit: 32 }),
            cpu: Some(Cpu {
                shares: Some(512),
                quota: Some(50_000),
                period: Some(100_000),
                cpus: Some("0".into()),
                mems: None,
            }),
            ..Resources::default()
        }
    }

    #[test]
    fn hybrid_mountinfo_puts_controllers_in_v1() {
        let layout = Layout::parse(HYBRID, |_| String::new());
        assert_eq!(layout.v1.len(), 4);
        assert_eq!(layout.v1[3].controllers, vec!["name=systemd"]);
        assert_eq!(layout.version_of("memory"), Some(Version::V1));
        assert_eq!(layout.version_of("cpuset"), None);
        assert!(!layout.is_unified());
    }

    #[test]
    fn a_missing_controller_is_named() {
        let layout = Layout::parse(HYBRID, |_| String::new());
        let err = translate(&resources(), &layout).unwrap_err();
        assert!(err.to_string().contains("cpuset"), "{err}");
    }

    fn v2_layout(mount: &Path) -> Layout {
        let mi = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", mount.display());
        Layout::parse(&mi, |_| "cpuset cpu io memory hugetlb pids".into())
    }

    /// Golden: the v2 translation of a typical resources block.
    #[test]
    fn v2_translation_golden() {
        let layout = v2_layout(Path::new("/sys/fs/cgroup"));
        assert!(layout.is_unified());
        let got: Vec<String> = translate(&resources(), &layout)
            .unwrap()
            .iter()
            .map(|w| format!("{}={}", w.file, w.value))
            .collect();
        assert_eq!(
            got,
            [
                "memory.max=67108864",
                "memory.swap.max=67108864",
                "pids.max=32",
                "cpu.weight=20",
                "cpu.max=50000 100000",
                "cpuset.cpus=0",
            ]
        );
    }

    #[test]
    fn v2_group_on_a_fake_cgroupfs() {
        let root = std::env::temp_dir().join(format!("skiff-cg2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let layout = v2_layout(&root);
        let writes = translate(&resources(), &layout).unwrap();
        let cg = Cgroup::create(&layout, Path::new("/skiff/c1"), &writes).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("skiff/c1/memory.max"), "67108864");
        assert_eq!(read("skiff/c1/pids.max"), "32");
        assert_eq!(read("skiff/c1/cpu.max"), "50000 100000");
        assert_eq!(read("cgroup.subtree_control"), "+cpu +cpuset +memory +pids");
        assert_eq!(
            read("skiff/cgroup.subtree_control"),
            "+cpu +cpuset +memory +pids"
        );
        assert_eq!(cg.dirs.len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_translation() {
        let mut mi = HYBRID.to_string();
        mi.push_str("34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n");
        let layout = Layout::parse(&mi, |_| String::new());
        let got: Vec<String> = translate(&resources(), &layout)
            .unwrap()
            .iter()
            .map(|w| format!("{}={}", w.file, w.value))
            .collect();
        assert_eq!(
            got,
            [
                "memory.limit_in_bytes=67108864",
                "memory.memsw.limit_in_bytes=134217728",
                "pids.max=32",
                "cpu.shares=512",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=50000",
                "cpuset.cpus=0",
            ]
        );
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(container_path(None, "x"), PathBuf::from("/skiff/x"));
        assert_eq!(container_path(Some("a/b"), "x"), PathBuf::from("/a/b"));
        assert_eq!(
            container_path(Some("machine-libpod.slice:libpod:abc"), "x"),
            PathBuf::from("/machine.slice/machine-libpod.slice/libpod-abc.scope")
        );
        assert_eq!(shares_to_weight(1024), 39);
    }
}
