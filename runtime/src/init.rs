//! The container's first process: applies a [`LaunchPlan`] through [`Sys`], in two halves.
//! [`prepare`] runs at `create` (namespaces joined, filesystem built, root pivoted, limits set);
//! [`exec`] runs at `start` (identity, capabilities, no_new_privs, then execve).

use std::io;
use std::path::{Path, PathBuf};

use crate::cgroup::{Cgroup, Layout, Version};
use crate::plan::{LaunchPlan, MountKind, MountStep, NsKind, ProcessPlan};
use crate::rootfs::{self, ResolveError};
use crate::sys::Sys;

/// What the init needs besides the plan: the container's cgroup, for mounting it.
pub struct Context<'a> {
    pub layout: &'a Layout,
    pub cgroup: &'a Cgroup,
    pub last_cap: u32,
    /// The container has its own user namespace.
    pub user_ns: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("joining the {kind:?} namespace {path}")]
    Join {
        kind: NsKind,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating the cgroup namespace")]
    CgroupNs(#[source] io::Error),
    #[error("setting mount propagation of /")]
    RootPropagation(#[source] io::Error),
    #[error("bind-mounting the rootfs {0}")]
    RootBind(PathBuf, #[source] io::Error),
    #[error("mount destination: {0}")]
    Resolve(#[from] ResolveError),
    #[error("mounting {fstype} on {destination}")]
    Mount {
        fstype: String,
        destination: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating device {path}")]
    Device {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pivot_root to {0}")]
    PivotRoot(PathBuf, #[source] io::Error),
    #[error("masking {0}")]
    Mask(PathBuf, #[source] io::Error),
    #[error("making {0} read-only")]
    ReadOnly(PathBuf, #[source] io::Error),
    #[error("setting sysctl {key}={value}")]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("setting hostname {0:?}")]
    Hostname(String, #[source] io::Error),
    #[error("setting {name} to {soft}:{hard}")]
    Rlimit {
        name: String,
        soft: u64,
        hard: u64,
        #[source]
        source: io::Error,
    },
    #[error("setting oom_score_adj to {0}")]
    OomScoreAdj(i32, #[source] io::Error),
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("dropping the capability bounding set")]
    Bounding(#[source] io::Error),
    #[error("switching to uid {uid} gid {gid}")]
    Ids {
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("setting capabilities")]
    Caps(#[source] io::Error),
    #[error("setting no_new_privs")]
    NoNewPrivs(#[source] io::Error),
    #[error("loading the seccomp filter")]
    Seccomp(#[source] io::Error),
    #[error("changing to the working directory {0}")]
    Cwd(PathBuf, #[source] io::Error),
    #[error("exec {0}")]
    Exec(PathBuf, #[source] io::Error),
    #[error("{0}")]
    Hook(String),
}

/// Everything up to the point where the container is "created". Returns the resolved path of
/// the program to exec (looked up now, so a missing binary fails `create`, as runc does).
pub fn prepare(
    sys: &mut dyn Sys,
    plan: &LaunchPlan,
    ctx: &Context,
    before_pivot: &mut dyn FnMut() -> Result<(), String>,
) -> Result<PathBuf, InitError> {
    // The user namespace first (it grants the rights for the rest), the mount namespace last.
    let rank = |k: &NsKind| match k {
        NsKind::User => 0,
        NsKind::Mount => 2,
        _ => 1,
    };
    let mut joins: Vec<&(NsKind, PathBuf)> = plan.join_namespaces.iter().collect();
    joins.sort_by_key(|(k, _)| rank(k));
    for (kind, path) in joins {
        if *kind != NsKind::Pid {
            sys.setns(path, *kind).map_err(|source| InitError::Join {
                kind: *kind,
                path: path.clone(),
                source,
            })?;
        }
    }
    // Before any credential change: afterwards /proc/self may no longer be writable.
    if let Some(adj) = plan.process.oom_score_adj {
        sys.write_file(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
            .map_err(|e| InitError::OomScoreAdj(adj, e))?;
    }
    // In a new user namespace the init still has its host credentials (which map to nothing
    // there) until it takes the namespace's root: do that before creating any file.
    if ctx.user_ns {
        sys.set_ids(0, 0, &[]).map_err(|source| InitError::Ids {
            uid: 0,
            gid: 0,
            source,
        })?;
    }
    // The init was moved into its cgroup before this point, so the new namespace is rooted there.
    let cgroup_ns = plan.new_namespaces.contains(&NsKind::Cgroup);
    if cgroup_ns {
        sys.unshare(NsKind::Cgroup).map_err(InitError::CgroupNs)?;
    }
    if let Some(h) = &plan.hostname {
        sys.sethostname(h)
            .map_err(|e| InitError::Hostname(h.clone(), e))?;
    }
    sys.umask(0);
    let shared = plan.root_propagation & libc::MS_SHARED as u64 != 0;
    let pre = if shared {
        (libc::MS_SLAVE | libc::MS_REC) as u64
    } else {
        plan.root_propagation
    };
    sys.mount(None, Path::new("/"), None, pre, None)
        .map_err(InitError::RootPropagation)?;
    sys.mount(
        Some(&plan.rootfs),
        &plan.rootfs,
        None,
        (libc::MS_BIND | libc::MS_REC) as u64,
        None,
    )
    .map_err(|e| InitError::RootBind(plan.rootfs.clone(), e))?;
    for m in &plan.mounts {
        mount(sys, plan, ctx, m, cgroup_ns)?;
    }
    devices(sys, plan)?;
    for (key, value) in &plan.sysctl {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        let path = rootfs::resolve(&plan.rootfs, &path)?;
        sys.write_file(&path, value)
            .map_err(|source| InitError::Sysctl {
                key: key.clone(),
                value: value.clone(),
                source,
            })?;
    }
    // Masks and read-only paths go in before pivot_root, while the host's /dev/null is still
    // reachable (runc and crun mask with it too).
    for path in &plan.masked_paths {
        mask(sys, &rootfs::resolve(&plan.rootfs, path)?, path)?;
    }
    for path in &plan.readonly_paths {
        readonly(sys, &rootfs::resolve(&plan.rootfs, path)?, path)?;
    }
    // createRuntime, prestart and createContainer hooks run here: namespaces exist, the
    // filesystem is built, the root is not pivoted yet.
    before_pivot().map_err(InitError::Hook)?;
    sys.pivot_root(&plan.rootfs)
        .map_err(|e| InitError::PivotRoot(plan.rootfs.clone(), e))?;
    if shared {
        sys.mount(None, Path::new("/"), None, plan.root_propagation, None)
            .map_err(InitError::RootPropagation)?;
    }
    if plan.readonly_root {
        remount(sys, Path::new("/"), libc::MS_RDONLY as u64)
            .map_err(|e| InitError::ReadOnly(PathBuf::from("/"), e))?;
    }
    let p = &plan.process;
    for r in &p.rlimits {
        sys.setrlimit(r.resource, r.soft, r.hard)
            .map_err(|source| InitError::Rlimit {
                name: r.name.clone(),
                soft: r.soft,
                hard: r.hard,
                source,
            })?;
    }
    find_program(sys, &p.args[0], &p.env)
}

/// After `start`: become the configured user with the configured capabilities and exec.
pub fn exec(sys: &mut dyn Sys, p: &ProcessPlan, program: &Path, last_cap: u32) -> InitError {
    sys.umask(p.umask);
    if let Err(e) = sys.drop_bounding(&p.caps, last_cap) {
        return InitError::Bounding(e);
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it while we have it.
    if let Some(f) = p.seccomp.as_ref().filter(|_| !p.no_new_privs)
        && let Err(e) = sys.load_seccomp(f)
    {
        return InitError::Seccomp(e);
    }
    if let Err(source) = sys.set_ids(p.uid, p.gid, &p.additional_gids) {
        return InitError::Ids {
            uid: p.uid,
            gid: p.gid,
            source,
        };
    }
    if let Err(e) = sys.set_caps(&p.caps) {
        return InitError::Caps(e);
    }
    if p.no_new_privs
        && let Err(e) = sys.set_no_new_privs()
    {
        return InitError::NoNewPrivs(e);
    }
    if let Err(e) = sys.chdir(&p.cwd) {
        return InitError::Cwd(p.cwd.clone(), e);
    }
    // With no_new_privs the filter goes in last, so it only has to allow execve.
    if let Some(f) = p.seccomp.as_ref().filter(|_| p.no_new_privs)
        && let Err(e) = sys.load_seccomp(f)
    {
        return InitError::Seccomp(e);
    }
    InitError::Exec(program.to_path_buf(), sys.exec(program, &p.args, &p.env))
}

/// A bind remount with `flags` added to the mount's current (possibly locked) flags.
fn remount(sys: &mut dyn Sys, path: &Path, flags: u64) -> io::Result<()> {
    let current = sys.mount_flags(path)?;
    let flags = flags | current | (libc::MS_BIND | libc::MS_REMOUNT) as u64;
    sys.mount(None, path, None, flags, None)
}

pub fn find_program(sys: &mut dyn Sys, arg0: &str, env: &[String]) -> Result<PathBuf, InitError> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .find(|c| sys.is_executable(c))
        .ok_or_else(|| InitError::NotFound(arg0.to_string()))
}

fn mount_err(m: &MountStep, source: io::Error) -> InitError {
    InitError::Mount {
        fstype: m.fstype.clone(),
        destination: m.destination.clone(),
        source,
    }
}

fn mount(
    sys: &mut dyn Sys,
    plan: &LaunchPlan,
    ctx: &Context,
    m: &MountStep,
    cgroup_ns: bool,
) -> Result<(), InitError> {
    let dest = rootfs::resolve(&plan.rootfs, &m.destination)?;
    let err = |e| mount_err(m, e);
    match m.kind {
        MountKind::Bind => {
            let source = m.source.clone().unwrap_or_default();
            let is_dir = sys.is_dir(&source).map_err(err)?;
            if is_dir {
                sys.mkdir_all(&dest).map_err(err)?;
            } else {
                sys.create_file(&dest).map_err(err)?;
            }
            let rec = m.flags & libc::MS_REC as u64;
            sys.mount(Some(&source), &dest, None, libc::MS_BIND as u64 | rec, None)
                .map_err(err)?;
            let rest = m.flags & !(libc::MS_BIND | libc::MS_REC) as u64;
            if rest != 0 {
                remount(sys, &dest, rest).map_err(err)?;
            }
        }
        MountKind::Filesystem => {
            sys.mkdir_all(&dest).map_err(err)?;
            let fstype = (!m.fstype.is_empty()).then_some(m.fstype.as_str());
            sys.mount(m.source.as_deref(), &dest, fstype, m.flags, Some(&m.data))
                .map_err(err)?;
        }
        MountKind::Cgroup => mount_cgroup(sys, ctx, m, &dest, cgroup_ns)?,
    }
    for p in &m.propagation {
        sys.mount(None, &dest, None, *p, None).map_err(err)?;
    }
    Ok(())
}

/// On a v2 host: cgroup2 itself. On v1/hybrid: a tmpfs holding one mount per hierarchy, as runc
/// and crun lay it out. Inside a cgroup namespace the kernel shows the container's group as the
/// root; without one, the container's own directories are bind-mounted.
fn mount_cgroup(
    sys: &mut dyn Sys,
    ctx: &Context,
    m: &MountStep,
    dest: &Path,
    cgroup_ns: bool,
) -> Result<(), InitError> {
    let err = |e| mount_err(m, e);
    // v1 hierarchies cannot be mounted from inside a user namespace: bind them instead.
    let user_ns = ctx.user_ns;
    sys.mkdir_all(dest).map_err(err)?;
    let flags = m.flags & !(libc::MS_RDONLY as u64);
    let one = |sys: &mut dyn Sys, version: Version, opts: &str, dir: &Path, target: &Path| {
        sys.mkdir_all(target)?;
        if cgroup_ns && !(user_ns && version == Version::V1) {
            let fstype = if version == Version::V1 {
                "cgroup"
            } else {
                "cgroup2"
            };
            sys.mount(
                Some(Path::new(fstype)),
                target,
                Some(fstype),
                m.flags,
                Some(opts),
            )
        } else {
            sys.mount(
                Some(dir),
                target,
                None,
                (libc::MS_BIND | libc::MS_REC) as u64,
                None,
            )?;
            remount(sys, target, m.flags)
        }
    };
    if ctx.layout.is_unified() {
        let dir = ctx.cgroup.dirs.iter().find(|(v, _, _)| *v == Version::V2);
        let dir = dir.map(|(_, _, d)| d.clone()).unwrap_or_default();
        return one(sys, Version::V2, "", &dir, dest).map_err(err);
    }
    sys.mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        flags,
        Some("mode=755"),
    )
    .map_err(err)?;
    for (version, controllers, dir) in &ctx.cgroup.dirs {
        let Some(hier) = ctx.layout.v1.iter().find(|h| &h.controllers == controllers) else {
            continue;
        };
        let _ = version;
        let name = hier
            .mount
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        one(
            sys,
            Version::V1,
            &controllers.join(","),
            dir,
            &dest.join(name),
        )
        .map_err(err)?;
    }
    if m.flags & libc::MS_RDONLY as u64 != 0 {
        let f = flags | (libc::MS_REMOUNT | libc::MS_RDONLY) as u64;
        sys.mount(
            Some(Path::new("tmpfs")),
            dest,
            Some("tmpfs"),
            f,
            Some("mode=755"),
        )
        .map_err(err)?;
    }
    Ok(())
}

fn devices(sys: &mut dyn Sys, plan: &LaunchPlan) -> Result<(), InitError> {
    for d in &plan.devices {
        let dest = rootfs::resolve(&plan.rootfs, &d.path)?;
        let err = |source| InitError::Device {
            path: d.path.clone(),
            source,
        };
        if let Some(parent) = dest.parent() {
            sys.mkdir_all(parent).map_err(err)?;
        }
        match sys.mknod(&dest, d.kind, d.mode, d.major, d.minor) {
            Ok(()) => sys.chown(&dest, d.uid, d.gid).map_err(err)?,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // No mknod here (a user namespace): bind the host's node instead.
                sys.create_file(&dest).map_err(err)?;
                sys.mount(Some(&d.path), &dest, None, libc::MS_BIND as u64, None)
                    .map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
    }
    let dev = plan.rootfs.join("dev");
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    let pts = plan
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev/pts"));
    for (target, name) in links.iter().chain(pts.then_some(&("pts/ptmx", "ptmx"))) {
        match sys.symlink(Path::new(target), &dev.join(name)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(InitError::Device {
                    path: PathBuf::from("/dev").join(name),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Hides `host` (the resolved form of container path `path`): an empty read-only tmpfs over a
/// directory, the host's /dev/null (read-only) over anything else.
fn mask(sys: &mut dyn Sys, host: &Path, path: &Path) -> Result<(), InitError> {
    let err = |e| InitError::Mask(path.to_path_buf(), e);
    match sys.is_dir(host) {
        Ok(true) => sys
            .mount(
                Some(Path::new("tmpfs")),
                host,
                Some("tmpfs"),
                libc::MS_RDONLY as u64,
                None,
            )
            .map_err(err),
        Ok(false) => {
            sys.mount(
                Some(Path::new("/dev/null")),
                host,
                None,
                libc::MS_BIND as u64,
                None,
            )
            .map_err(err)?;
            remount(sys, host, libc::MS_RDONLY as u64).map_err(err)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

fn readonly(sys: &mut dyn Sys, host: &Path, path: &Path) -> Result<(), InitError> {
    let err = |e| InitError::ReadOnly(path.to_path_buf(), e);
    match sys.is_dir(host) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    }
    sys.mount(
        Some(host),
        host,
        None,
        (libc::MS_BIND | libc::MS_REC) as u64,
        None,
    )
    .map_err(err)?;
    remount(sys, host, (libc::MS_RDONLY | libc::MS_REC) as u64).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::ProcessCaps;
    use crate::host::HostProfile;

    /// Records calls; fails the ones a test names.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail_on: Option<&'static str>,
    }

    impl Recorder {
        fn record(&mut self, call: String) -> io::Result<()> {
            let fail = self.fail_on.is_some_and(|f| call.starts_with(f));
            self.calls.push(call);
            if fail {
                Err(io::Error::from_raw_os_error(libc::EPERM))
            } else {
                Ok(())
            }
        }
    }

    impl Sys for Recorder {
        fn mount(
            &mut self,
            s: Option<&Path>,
            t: &Path,
            f: Option<&str>,
            fl: u64,
            _: Option<&str>,
        ) -> io::Result<()> {
            self.record(format!("mount {s:?} {} {f:?} {fl:#x}", t.display()))
        }
        fn umount_detach(&mut self, t: &Path) -> io::Result<()> {
            self.record(format!("umount {}", t.display()))
        }
        fn pivot_root(&mut self, r: &Path) -> io::Result<()> {
            self.record(format!("pivot_root {}", r.display()))
        }
        fn mkdir_all(&mut self, p: &Path) -> io::Result<()> {
            self.record(format!("mkdir {}", p.display()))
        }
        fn create_file(&mut self, p: &Path) -> io::Result<()> {
            self.record(format!("touch {}", p.display()))
        }
        fn mknod(&mut self, p: &Path, k: char, _: u32, ma: u64, mi: u64) -> io::Result<()> {
            self.record(format!("mknod {} {k} {ma}:{mi}", p.display()))
        }
        fn chown(&mut self, p: &Path, u: u32, g: u32) -> io::Result<()> {
            self.record(format!("chown {} {u}:{g}", p.display()))
        }
        fn symlink(&mut self, t: &Path, l: &Path) -> io::Result<()> {
            self.record(format!("symlink {} {}", t.display(), l.display()))
        }
        fn sethostname(&mut self, n: &str) -> io::Result<()> {
            self.record(format!("sethostname {n}"))
        }
        fn write_file(&mut self, p: &Path, d: &str) -> io::Result<()> {
            self.record(format!("write {} {d}", p.display()))
        }
        fn setns(&mut self, p: &Path, k: NsKind) -> io::Result<()> {
            self.record(format!("setns {k:?} {}", p.display()))
        }
        fn unshare(&mut self, k: NsKind) -> io::Result<()> {
            self.record(format!("unshare {k:?}"))
        }
        fn setrlimit(&mut self, r: u32, s: u64, h: u64) -> io::Result<()> {
            self.record(format!("setrlimit {r} {s} {h}"))
        }
        fn umask(&mut self, m: u32) {
            self.calls.push(format!("umask {m:o}"));
        }
        fn set_ids(&mut self, u: u32, g: u32, gs: &[u32]) -> io::Result<()> {
            self.record(format!("set_ids {u} {g} {gs:?}"))
        }
        fn drop_bounding(&mut self, c: &ProcessCaps, _: u32) -> io::Result<()> {
            self.record(format!("drop_bounding {:#x}", c.bounding.0))
        }
        fn set_caps(&mut self, c: &ProcessCaps) -> io::Result<()> {
            self.record(format!("set_caps {:#x}", c.effective.0))
        }
        fn set_no_new_privs(&mut self) -> io::Result<()> {
            self.record("no_new_privs".into())
        }
        fn load_seccomp(&mut self, f: &crate::seccomp::Filter) -> io::Result<()> {
            self.record(format!("seccomp {}", f.program.len()))
        }
        fn chdir(&mut self, p: &Path) -> io::Result<()> {
            self.record(format!("chdir {}", p.display()))
        }
        fn is_dir(&mut self, p: &Path) -> io::Result<bool> {
            Ok(p.extension().is_none())
        }
        fn is_executable(&mut self, p: &Path) -> bool {
            p == Path::new("/bin/sh")
        }
        fn mount_flags(&mut self, _: &Path) -> io::Result<u64> {
            Ok(0)
        }
        fn exec(&mut self, p: &Path, _: &[String], _: &[String]) -> io::Error {
            self.calls.push(format!("exec {}", p.display()));
            io::Error::from_raw_os_error(libc::ENOENT)
        }
    }

    fn plan() -> LaunchPlan {
        let spec = serde_json::from_str(
            r#"{"root":{"path":"/nonexistent-root","readonly":true},"hostname":"h",
            "process":{"args":["sh"],"env":["PATH=/usr/bin:/bin"],"cwd":"/w","user":{"uid":1000,"gid":1000},
              "noNewPrivileges":true,"capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]}},
            "mounts":[{"destination":"/proc","type":"proc","source":"proc"}],
            "linux":{"namespaces":[{"type":"mount"},{"type":"cgroup"},{"type":"network","path":"/n"}],
              "maskedPaths":["/proc/kcore.x"],"readonlyPaths":["/proc/sys"],"sysctl":{"net.ipv4.ip_forward":"1"},
              "seccomp":{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO"}]}}}"#,
        )
        .unwrap();
        let host = HostProfile {
            held_caps: crate::caps::CapSet(u64::MAX),
            last_cap: 40,
            hard_limits: Default::default(),
        };
        crate::plan::build(&spec, Path::new("/"), &host).unwrap()
    }

    fn ctx_run(sys: &mut Recorder) -> Result<PathBuf, InitError> {
        let layout = Layout::default();
        let cgroup = Cgroup { dirs: vec![] };
        let ctx = Context {
            layout: &layout,
            cgroup: &cgroup,
            last_cap: 40,
            user_ns: false,
        };
        prepare(sys, &plan(), &ctx, &mut || Ok(()))
    }

    fn index(calls: &[String], prefix: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {calls:#?}"))
    }

    #[test]
    fn prepare_orders_steps_and_finds_the_program() {
        let mut sys = Recorder::default();
        assert_eq!(ctx_run(&mut sys).unwrap(), PathBuf::from("/bin/sh"));
        let c = &sys.calls;
        assert!(index(c, "setns Net") < index(c, "unshare Cgroup"));
        assert!(index(c, "mount Some(\"proc\")") < index(c, "mknod"));
        assert!(index(c, "mknod") < index(c, "pivot_root"));
        assert!(
            index(c, "write /nonexistent-root/proc/sys/net/ipv4/ip_forward 1")
                < index(c, "mount Some(\"/nonexistent-root/proc/sys\")")
        );
        assert!(
            index(
                c,
                "mount Some(\"/dev/null\") /nonexistent-root/proc/kcore.x"
            ) < index(c, "pivot_root")
        );
        assert!(c.iter().any(|x| x == "sethostname h"));
        // read-only root is the last filesystem change
        let ro = index(
            c,
            &format!(
                "mount None / None {:#x}",
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY
            ),
        );
        assert!(ro > index(c, "pivot_root"));
    }

    #[test]
    fn a_failing_step_is_named() {
        let mut sys = Recorder {
            fail_on: Some("sethostname"),
            ..Recorder::default()
        };
        let err = ctx_run(&mut sys).unwrap_err();
        assert!(
            matches!(err, InitError::Hostname(ref h, _) if h == "h"),
            "{err}"
        );
    }

    #[test]
    fn exec_drops_privileges_in_order() {
        let mut sys = Recorder::default();
        let err = exec(&mut sys, &plan().process, Path::new("/bin/sh"), 40);
        assert!(matches!(err, InitError::Exec(..)));
        let c = &sys.calls;
        let order = [
            "drop_bounding",
            "set_ids 1000 1000",
            "set_caps",
            "no_new_privs",
            "chdir /w",
            "exec /bin/sh",
        ];
        let idx: Vec<usize> = order.iter().map(|p| index(c, p)).collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "{c:#?}");

        // Without no_new_privs the filter must be in before privileges go.
        let mut plan = plan();
        plan.process.no_new_privs = false;
        let mut sys = Recorder::default();
        exec(&mut sys, &plan.process, Path::new("/bin/sh"), 40);
        let c = &sys.calls;
        assert!(index(c, "seccomp") < index(c, "set_ids"), "{c:#?}");
        assert!(!c.iter().any(|x| x == "no_new_privs"));
    }
}
