//! The container lifecycle over a state directory: create, start, state, kill, delete, run.
//!
//! `create` clones the init with its new namespaces (the calling process is single-threaded:
//! this code never runs inside an async runtime), moves it into its cgroup, lets it build the
//! filesystem, and returns once it is waiting on `exec.fifo`; `start` opens the fifo to release
//! it. `run` is create + start + wait in one process, with no fifo.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::cgroup::{self, Cgroup, CgroupError, Layout};
use crate::host::HostProfile;
use crate::init::{self, Context};
use crate::plan::{self, LaunchPlan, NsKind, PlanError};
use crate::spec::{LoadError, Spec};
use crate::state::{ContainerId, EXEC_FIFO, State, Status, proc_stat};
use crate::sys::LinuxSys;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("creating the runtime root {0}")]
    Root(PathBuf, #[source] io::Error),
    #[error("bundle {0}")]
    Bundle(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error("rootfs {0} does not exist or is not a directory")]
    Rootfs(PathBuf),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("container {0} already exists")]
    Exists(ContainerId),
    #[error("creating the state directory {0}")]
    StateDir(PathBuf, #[source] io::Error),
    #[error("creating {0}")]
    Fifo(PathBuf, #[source] io::Error),
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("joining the pid namespace {0}")]
    JoinPid(PathBuf, #[source] io::Error),
    #[error("cloning the container init")]
    Clone(#[source] io::Error),
    #[error("talking to the container init")]
    Sync(#[source] io::Error),
    #[error("container init: {0}")]
    Init(String),
    #[error("the container init exited during setup")]
    InitDied,
    #[error("writing the state of {0}")]
    SaveState(ContainerId, #[source] io::Error),
    #[error("writing the pid file {0}")]
    PidFile(PathBuf, #[source] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("container {0} does not exist")]
    NotFound(ContainerId),
    #[error("reading the state of {0}")]
    Read(ContainerId, #[source] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("container {0} is {1}, not created")]
    NotCreated(ContainerId, Status),
    #[error("opening {0}")]
    Fifo(PathBuf, #[source] io::Error),
    #[error("container {0} exited before it could start")]
    Exited(ContainerId),
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("container {0} is not running")]
    NotRunning(ContainerId),
    #[error("sending signal {signal} to pid {pid}")]
    Signal {
        signal: i32,
        pid: i32,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("cannot delete container {0}: it is running (stop it first, or use --force)")]
    Running(ContainerId),
    #[error(transparent)]
    Kill(#[from] KillError),
    #[error("container {0} did not exit within {1:?} of SIGKILL")]
    StillAlive(ContainerId, Duration),
    #[error("removing cgroup {0}")]
    Cgroup(PathBuf, #[source] io::Error),
    #[error("removing the state directory {0}")]
    StateDir(PathBuf, #[source] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error("starting the container")]
    Start(#[source] io::Error),
    #[error("waiting for the container")]
    Wait(#[source] io::Error),
    #[error(transparent)]
    Delete(#[from] DeleteError),
}

#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub pid_file: Option<PathBuf>,
}

/// A runtime state root (`--root`, default `/run/skiff/runtime`).
pub struct Runtime {
    pub root: PathBuf,
}

enum Mode {
    /// Wait on the exec fifo for `start`.
    Create,
    /// Wait for a byte on the sync socket.
    Run,
}

/// A created init, still connected to us in `Run` mode.
struct Spawned {
    state: State,
    dir: PathBuf,
    sync: UnixStream,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    fn dir(&self, id: &ContainerId) -> PathBuf {
        self.root.join(id)
    }

    pub fn create(
        &self,
        id: &ContainerId,
        bundle: &Path,
        opts: &CreateOptions,
    ) -> Result<(), CreateError> {
        self.spawn(id, bundle, opts, Mode::Create).map(drop)
    }

    fn spawn(
        &self,
        id: &ContainerId,
        bundle: &Path,
        opts: &CreateOptions,
        mode: Mode,
    ) -> Result<Spawned, CreateError> {
        std::fs::create_dir_all(&self.root).map_err(|e| CreateError::Root(self.root.clone(), e))?;
        let bundle = std::fs::canonicalize(bundle)
            .map_err(|e| CreateError::Bundle(bundle.to_path_buf(), e))?;
        let spec = Spec::load(&bundle)?;
        let host = HostProfile::detect();
        let plan = plan::build(&spec, &bundle, &host)?;
        if !plan.rootfs.is_dir() {
            return Err(CreateError::Rootfs(plan.rootfs.clone()));
        }
        let linux = spec.linux.clone().unwrap_or_default();
        let layout = Layout::detect()
            .map_err(|e| CreateError::Root(PathBuf::from("/proc/self/mountinfo"), e))?;
        let mut resources = linux.resources.clone().unwrap_or_default();
        resources.devices = plan::device_rules(&resources.devices, &plan.devices);
        let writes = cgroup::translate(&resources, &layout)?;
        let cg_path = cgroup::container_path(linux.cgroups_path.as_deref(), &id.to_string());

        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(CreateError::Exists(id.clone()));
            }
            Err(e) => return Err(CreateError::StateDir(dir, e)),
        }
        let mut undo = Undo {
            dir: Some(dir.clone()),
            cgroup: None,
            pid: None,
        };
        if let Mode::Create = mode {
            let fifo = dir.join(EXEC_FIFO);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
                .map_err(|e| CreateError::Fifo(fifo.clone(), e.into()))?;
        }
        let cgroup = Cgroup::create(&layout, &cg_path, &writes)?;
        undo.cgroup = Some(cgroup.clone());

        for (kind, path) in &plan.join_namespaces {
            if *kind == NsKind::Pid {
                let f =
                    std::fs::File::open(path).map_err(|e| CreateError::JoinPid(path.clone(), e))?;
                // SAFETY: setns on an fd we hold open; affects only children cloned after this.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
                    return Err(CreateError::JoinPid(
                        path.clone(),
                        io::Error::last_os_error(),
                    ));
                }
            }
        }

        let (mut parent_end, child_end) = UnixStream::pair().map_err(CreateError::Sync)?;
        let fifo_path = dir.join(EXEC_FIFO);
        let flags = plan
            .new_namespaces
            .iter()
            .filter(|k| **k != NsKind::Cgroup)
            .fold(0, |acc, k| acc | k.clone_flag());
        // SAFETY: a raw clone without CLONE_VM behaves as fork with namespace flags. This process
        // is single-threaded (the runtime CLI never starts threads), so the child may keep running
        // Rust code until it execs.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid < 0 {
            return Err(CreateError::Clone(io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(parent_end);
            let code = child_main(
                child_end,
                &plan,
                &layout,
                &cgroup,
                host.last_cap,
                &mode,
                &fifo_path,
            );
            // SAFETY: leave without running the parent's atexit handlers or destructors.
            unsafe { libc::_exit(code) };
        }
        let pid = i32::try_from(pid)
            .map_err(|_| CreateError::Clone(io::Error::other("pid out of range")))?;
        undo.pid = Some(pid);
        drop(child_end);

        cgroup.add(pid)?;
        parent_end.write_all(b"g").map_err(CreateError::Sync)?;
        let mut msg = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = parent_end.read(&mut buf).map_err(CreateError::Sync)?;
            if n == 0 {
                break;
            }
            msg.extend_from_slice(&buf[..n]);
            if msg.first() == Some(&b'r') {
                break;
            }
        }
        match msg.split_first() {
            Some((b'r', _)) => {}
            Some((b'e', text)) => {
                return Err(CreateError::Init(
                    String::from_utf8_lossy(text).into_owned(),
                ));
            }
            _ => return Err(CreateError::InitDied),
        }
        let pid_start = proc_stat(pid)
            .map(|(_, s)| s)
            .ok_or(CreateError::InitDied)?;
        let state = State {
            oci_version: if spec.oci_version.is_empty() {
                "1.2.0".into()
            } else {
                spec.oci_version.clone()
            },
            id: id.clone(),
            pid,
            pid_start,
            bundle: bundle.clone(),
            rootfs: plan.rootfs.clone(),
            created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            owner: String::new(),
            annotations: spec.annotations.clone(),
            cgroup,
        };
        state
            .save(&dir)
            .map_err(|e| CreateError::SaveState(id.clone(), e))?;
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, pid).map_err(|e| CreateError::PidFile(pf.clone(), e))?;
        }
        undo.disarm();
        Ok(Spawned {
            state,
            dir,
            sync: parent_end,
        })
    }

    pub fn load(&self, id: &ContainerId) -> Result<(State, PathBuf), LookupError> {
        let dir = self.dir(id);
        match State::load(&dir) {
            Ok(s) => Ok((s, dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LookupError::NotFound(id.clone())),
            Err(e) => Err(LookupError::Read(id.clone(), e)),
        }
    }

    pub fn start(&self, id: &ContainerId) -> Result<(), StartError> {
        let (state, dir) = self.load(id)?;
        let status = state.status(&dir);
        if status != Status::Created {
            return Err(StartError::NotCreated(id.clone(), status));
        }
        let fifo = dir.join(EXEC_FIFO);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo)
            .map_err(|e| StartError::Fifo(fifo.clone(), e))?;
        loop {
            let mut pfd = libc::pollfd {
                fd: file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own.
            let n = unsafe { libc::poll(&mut pfd, 1, 100) };
            if n > 0 && pfd.revents & libc::POLLIN != 0 {
                break;
            }
            if !state.init_alive() {
                return Err(StartError::Exited(id.clone()));
            }
        }
        let mut byte = [0u8; 1];
        let _ = (&file).read(&mut byte);
        let _ = std::fs::remove_file(&fifo);
        Ok(())
    }

    pub fn state(&self, id: &ContainerId) -> Result<serde_json::Value, LookupError> {
        let (state, dir) = self.load(id)?;
        Ok(state.to_runc_json(state.status(&dir)))
    }

    pub fn list(&self) -> Vec<(State, Status)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for entry in entries.flatten() {
            if let Ok(state) = State::load(&entry.path()) {
                let status = state.status(&entry.path());
                out.push((state, status));
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    pub fn kill(&self, id: &ContainerId, signal: i32, all: bool) -> Result<(), KillError> {
        let (state, dir) = self.load(id)?;
        if state.status(&dir) == Status::Stopped {
            return Err(KillError::NotRunning(id.clone()));
        }
        signal_container(&state, signal, all)
    }

    pub fn delete(&self, id: &ContainerId, force: bool) -> Result<(), DeleteError> {
        let (state, dir) = self.load(id)?;
        match state.status(&dir) {
            Status::Stopped => {}
            Status::Running if !force => return Err(DeleteError::Running(id.clone())),
            Status::Created | Status::Running => {
                signal_container(&state, libc::SIGKILL, true)?;
                let limit = Duration::from_secs(10);
                let t0 = Instant::now();
                while state.init_alive() {
                    if t0.elapsed() > limit {
                        return Err(DeleteError::StillAlive(id.clone(), limit));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        destroy(&state, &dir)
    }

    /// Creates, starts and (unless `detach`) waits for the container, then deletes it.
    /// Returns the exit code as a shell reports it (128 + signal when killed).
    pub fn run(
        &self,
        id: &ContainerId,
        bundle: &Path,
        opts: &CreateOptions,
        detach: bool,
    ) -> Result<i32, RunError> {
        let mut spawned = self.spawn(id, bundle, opts, Mode::Run)?;
        let pid = spawned.state.pid;
        if !detach {
            forward_signals(pid);
        }
        spawned.sync.write_all(b"s").map_err(RunError::Start)?;
        if detach {
            return Ok(0);
        }
        let code = loop {
            let mut status = 0;
            // SAFETY: waits for our own child; status is a valid out pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(RunError::Wait(e));
            }
            if libc::WIFEXITED(status) {
                break libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                break 128 + libc::WTERMSIG(status);
            }
        };
        // Whatever the init left behind in its cgroup (no pid namespace) goes with it.
        let _ = signal_container(&spawned.state, libc::SIGKILL, true);
        destroy(&spawned.state, &spawned.dir)?;
        Ok(code)
    }
}

use std::os::unix::fs::OpenOptionsExt;

fn signal_container(state: &State, signal: i32, all: bool) -> Result<(), KillError> {
    let send = |pid: i32| {
        // SAFETY: kill takes integers only.
        if unsafe { libc::kill(pid, signal) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(KillError::Signal {
                    signal,
                    pid,
                    source: e,
                });
            }
        }
        Ok(())
    };
    if all {
        for pid in state.cgroup.pids() {
            send(pid)?;
        }
    }
    if state.init_alive() {
        send(state.pid)?;
    }
    Ok(())
}

fn destroy(state: &State, dir: &Path) -> Result<(), DeleteError> {
    // A killed group empties asynchronously: rmdir is EBUSY until the last task has exited.
    let t0 = Instant::now();
    loop {
        let failed = state.cgroup.destroy();
        match failed.into_iter().next() {
            None => break,
            Some((path, e)) if t0.elapsed() > Duration::from_secs(5) => {
                return Err(DeleteError::Cgroup(path, e));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DeleteError::StateDir(dir.to_path_buf(), e)),
    }
}

fn write_pid_file(path: &Path, pid: i32) -> io::Result<()> {
    let tmp = path.with_extension("skiff-tmp");
    std::fs::write(&tmp, pid.to_string())?;
    std::fs::rename(tmp, path)
}

/// Removes what a failed create made, in reverse order.
struct Undo {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
}

impl Undo {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill and waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            let t0 = Instant::now();
            while !cg.destroy().is_empty() && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The child side of clone: set up, report, wait for start, exec. Returns an exit code only
/// when something failed.
fn child_main(
    mut sync: UnixStream,
    plan: &LaunchPlan,
    layout: &Layout,
    cgroup: &Cgroup,
    last_cap: u32,
    mode: &Mode,
    fifo: &Path,
) -> i32 {
    // SAFETY: prctl with integer arguments: die with the creating process while in setup.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut go = [0u8; 1];
    if !matches!(sync.read(&mut go), Ok(1)) {
        return 1;
    }
    let fail = |sync: &mut UnixStream, msg: String| {
        let _ = sync.write_all(format!("e{msg}").as_bytes());
        1
    };
    // The fifo is opened by path before pivot_root hides the state dir.
    let fifo_fd = match mode {
        Mode::Create => match nix::fcntl::open(
            fifo,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(e) => return fail(&mut sync, format!("opening {}: {e}", fifo.display())),
        },
        Mode::Run => None,
    };
    let mut sys = LinuxSys;
    let ctx = Context {
        layout,
        cgroup,
        last_cap,
    };
    let program = match init::prepare(&mut sys, plan, &ctx) {
        Ok(p) => p,
        Err(e) => return fail(&mut sync, error_chain(&e)),
    };
    // From here the init outlives `create` (and a detached `run`), which exit once it is ready.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    if sync.write_all(b"r").is_err() {
        return 1;
    }
    match fifo_fd {
        Some(fd) => {
            drop(sync);
            let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&proc_path);
            drop(fd);
            match opened {
                Ok(mut f) => {
                    let _ = f.write_all(b"0");
                }
                Err(e) => {
                    eprintln!(
                        "skiff: container init: opening the exec fifo via {proc_path} (is /proc mounted?): {e}"
                    );
                    return 1;
                }
            }
        }
        None => {
            // A parent that dies before sending the start byte closes the socket: EOF here.
            if !matches!(sync.read(&mut go), Ok(1)) {
                return 1;
            }
        }
    }
    let err = init::exec(&mut sys, plan, &program, last_cap);
    eprintln!("skiff: container init: {}", error_chain(&err));
    127
}

/// An error and its sources, joined as `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While `run` waits in the foreground, the signals a terminal or supervisor sends go to the
/// container instead.
fn forward_signals(pid: i32) {
    CHILD.store(pid, Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        // SAFETY: installs an async-signal-safe handler; the sigaction struct is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
