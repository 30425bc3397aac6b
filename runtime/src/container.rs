//! The container lifecycle over a state directory: create, start, state, kill, delete, run.
//!
//! `create` clones the init with its new namespaces (the calling process is single-threaded:
//! this code never runs inside an async runtime), moves it into its cgroup, lets it build the
//! filesystem, and returns once it is waiting on `exec.fifo`; `start` opens the fifo to release
//! it. `run` is create + start + wait in one process, with no fifo.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::{self, Cgroup, CgroupError, Layout};
use crate::device_filter;
use crate::hooks::{self, HookError};
use crate::host::HostProfile;
use crate::init::{self, Context};
use crate::launch::{self, Report};
use crate::plan::{self, LaunchPlan, NsKind, PlanError};
use crate::spec::{Hooks, LoadError, Resources, Spec};
use crate::state::{ContainerId, EXEC_FIFO, State, Status, proc_stat};
use crate::sys::{LinuxSys, Sys};
use crate::terminal;

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
    #[error("process.terminal is set: a --console-socket is needed to receive the terminal")]
    NoConsoleSocket,
    #[error("writing {0}")]
    IdMap(PathBuf, #[source] io::Error),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("linux.resources.devices: {0}")]
    DeviceRules(#[source] device_filter::DeviceRuleError),
    #[error("attaching the device filter (eBPF) to {0}")]
    DeviceFilter(PathBuf, #[source] io::Error),
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
    #[error(transparent)]
    Hook(#[from] HookError),
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
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("waiting for the container")]
    Wait(#[source] io::Error),
    #[error(transparent)]
    Delete(#[from] DeleteError),
}

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("container {0} is {1}: only a running container can be paused")]
    NotRunning(ContainerId, Status),
    #[error("container {0} is {1}, not paused")]
    NotPaused(ContainerId, Status),
    #[error("cgroup freezer: {0}")]
    Freezer(#[from] CgroupError),
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("container {0} is stopped")]
    Stopped(ContainerId),
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
}

#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub pid_file: Option<PathBuf>,
    /// Where to send the terminal's master fd when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// Extra fds (after stdio) passed into the container: `--preserve-fds` plus `LISTEN_FDS`.
    pub preserve_fds: u32,
}

/// A runtime state root (`--root`, default `/run/skiff/runtime`).
pub struct Runtime {
    pub root: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
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
    sync: launch::Parent,
    hooks: Hooks,
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
        let mut plan = plan::build(&spec, &bundle, &host)?;
        if !plan.rootfs.is_dir() {
            return Err(CreateError::Rootfs(plan.rootfs.clone()));
        }
        let console = match (plan.process.terminal, &opts.console_socket) {
            (true, Some(path)) => Some(path.clone()),
            // A foreground `run` keeps the caller's terminal (or pipes) as stdio.
            (true, None) if mode == Mode::Run => None,
            (true, None) => return Err(CreateError::NoConsoleSocket),
            (false, _) => None,
        };
        let preserve = opts.preserve_fds;
        if preserve > 0 {
            plan.process
                .env
                .retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
            if std::env::var_os("LISTEN_FDS").is_some() {
                plan.process.env.push(format!("LISTEN_FDS={preserve}"));
                plan.process.env.push("LISTEN_PID=1".into());
            }
        }
        let hooks = spec.hooks.clone().unwrap_or_default();
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
        let fifo = dir.join(EXEC_FIFO);
        if mode == Mode::Create {
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
                .map_err(|e| CreateError::Fifo(fifo.clone(), e.into()))?;
        }
        let cgroup = Cgroup::create(&layout, &cg_path, &writes)?;
        undo.cgroup = Some(cgroup.clone());
        filter_devices(&layout, &cgroup, &resources.devices)?;

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

        let (mut parent, child_end) = launch::pair().map_err(CreateError::Sync)?;
        let flags = plan
            .new_namespaces
            .iter()
            .filter(|k| **k != NsKind::Cgroup)
            .fold(0, |acc, k| acc | k.clone_flag());
        // Joining an existing user namespace: the new namespaces must belong to it, so they
        // are made after the join, by an intermediate process, and the pid namespace needs a
        // second fork (runc's nsexec does the same).
        let joined_user = plan
            .join_namespaces
            .iter()
            .find(|(k, _)| *k == NsKind::User)
            .map(|(_, p)| p.clone());
        let mut child_plan = plan.clone();
        child_plan
            .join_namespaces
            .retain(|(k, _)| *k != NsKind::User);
        let (clone_flags, two_step) = match &joined_user {
            None => (flags, None),
            Some(path) => {
                // The grandchild is reparented to us when the intermediate exits.
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
                (0, Some((path.as_path(), flags)))
            }
        };
        let child = ChildSide {
            plan: &child_plan,
            layout: &layout,
            cgroup: &cgroup,
            last_cap: host.last_cap,
            mode,
            fifo: &fifo,
            console: console.as_deref(),
            preserve,
            hooks: &hooks,
            two_step,
        };
        let pid = launch::clone_child(clone_flags, || child.main(child_end))
            .map_err(CreateError::Clone)?;
        undo.pid = Some(pid);
        let pid = if two_step.is_some() {
            let init = match parent.wait_pid().map_err(CreateError::Sync)? {
                Ok(p) => p,
                Err(msg) => return Err(CreateError::Init(msg)),
            };
            // The intermediate has done its part.
            let _ = launch::wait_exit(pid);
            undo.pid = Some(init);
            init
        } else {
            pid
        };

        cgroup.add(pid)?;
        write_id_maps(pid, &linux)?;
        parent.go().map_err(CreateError::Sync)?;
        let mut state = State {
            oci_version: if spec.oci_version.is_empty() {
                "1.2.0".into()
            } else {
                spec.oci_version.clone()
            },
            id: id.clone(),
            pid,
            pid_start: 0,
            bundle: bundle.clone(),
            rootfs: plan.rootfs.clone(),
            created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            owner: String::new(),
            annotations: spec.annotations.clone(),
            cgroup,
        };
        let wants_runtime_hooks = !hooks.prestart.is_empty() || !hooks.create_runtime.is_empty();
        loop {
            match parent.wait_ready().map_err(CreateError::Sync)? {
                Report::Ready => break,
                Report::Failed(msg) => return Err(CreateError::Init(msg)),
                Report::Died => return Err(CreateError::InitDied),
                Report::Hooks => {
                    // The init stopped before pivot_root: run the runtime-namespace hooks, then
                    // tell it to go on (it runs createContainer itself) with the state it needs.
                    let template = state.to_runc_json(Status::Created);
                    if wants_runtime_hooks {
                        let json = hooks::state_json(&template, "creating");
                        hooks::run("prestart", &hooks.prestart, &json)?;
                        hooks::run("createRuntime", &hooks.create_runtime, &json)?;
                    }
                    parent
                        .proceed(&template.to_string())
                        .map_err(CreateError::Sync)?;
                }
            }
        }
        state.pid_start = proc_stat(pid)
            .map(|(_, s)| s)
            .ok_or(CreateError::InitDied)?;
        state
            .save(&dir)
            .map_err(|e| CreateError::SaveState(id.clone(), e))?;
        if let Some(pf) = &opts.pid_file {
            launch::write_pid_file(pf, pid).map_err(|e| CreateError::PidFile(pf.clone(), e))?;
        }
        undo.disarm();
        Ok(Spawned {
            state,
            dir,
            sync: parent,
            hooks,
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

    /// The hooks of the container's bundle (read again: the bundle is the source of truth).
    fn hooks(state: &State) -> Hooks {
        Spec::load(&state.bundle)
            .ok()
            .and_then(|s| s.hooks)
            .unwrap_or_default()
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
        // The init writes one byte once its startContainer hooks are done, and its end closes
        // when it execs: wait for both (or for it to die).
        let mut got_byte = false;
        loop {
            let mut pfd = libc::pollfd {
                fd: file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own.
            let n = unsafe { libc::poll(&mut pfd, 1, 100) };
            if n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                let mut byte = [0u8; 1];
                match (&file).read(&mut byte) {
                    Ok(1) => got_byte = true,
                    Ok(_) if got_byte => break,
                    Ok(_) => {
                        let _ = std::fs::remove_file(&fifo);
                        return Err(StartError::Exited(id.clone()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(StartError::Fifo(fifo.clone(), e)),
                }
            } else if !state.init_alive() {
                return Err(StartError::Exited(id.clone()));
            }
        }
        let _ = std::fs::remove_file(&fifo);
        let hooks = Self::hooks(&state);
        let json = state.to_runc_json(Status::Running).to_string();
        hooks::run("poststart", &hooks.poststart, &json)?;
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
            Status::Running | Status::Paused if !force => {
                return Err(DeleteError::Running(id.clone()));
            }
            Status::Created | Status::Running | Status::Paused => {
                signal_container(&state, libc::SIGKILL, true)?;
                // A frozen group cannot die: thaw it so SIGKILL is delivered.
                let _ = state.cgroup.freeze(false);
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
        destroy(&state, &dir, &Self::hooks(&state))
    }

    pub fn pause(&self, id: &ContainerId) -> Result<(), PauseError> {
        let (state, dir) = self.load(id)?;
        match state.status(&dir) {
            Status::Running => Ok(state.cgroup.freeze(true)?),
            other => Err(PauseError::NotRunning(id.clone(), other)),
        }
    }

    pub fn resume(&self, id: &ContainerId) -> Result<(), PauseError> {
        let (state, dir) = self.load(id)?;
        match state.status(&dir) {
            Status::Paused => Ok(state.cgroup.freeze(false)?),
            other => Err(PauseError::NotPaused(id.clone(), other)),
        }
    }

    /// Host pids of every process in the container.
    pub fn pids(&self, id: &ContainerId) -> Result<Vec<i32>, LookupError> {
        let (state, _) = self.load(id)?;
        Ok(state.cgroup.pids())
    }

    /// Applies new resource limits to a running container.
    pub fn update(&self, id: &ContainerId, resources: &Resources) -> Result<(), UpdateError> {
        let (state, dir) = self.load(id)?;
        if state.status(&dir) == Status::Stopped {
            return Err(UpdateError::Stopped(id.clone()));
        }
        let layout = Layout::detect().map_err(|e| CgroupError::Create {
            path: PathBuf::from("/proc/self/mountinfo"),
            source: e,
        })?;
        let writes = cgroup::translate(resources, &layout)?;
        Ok(state.cgroup.apply(&writes)?)
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
            launch::forward_signals(pid);
        }
        spawned.sync.start().map_err(RunError::Start)?;
        // The socket closes when the init execs (close-on-exec), after startContainer.
        spawned.sync.wait_closed().map_err(RunError::Start)?;
        let json = spawned.state.to_runc_json(Status::Running).to_string();
        hooks::run("poststart", &spawned.hooks.poststart, &json)?;
        if detach {
            return Ok(0);
        }
        let code = launch::wait_exit(pid).map_err(RunError::Wait)?;
        // Whatever the init left behind in its cgroup (no pid namespace) goes with it.
        let _ = signal_container(&spawned.state, libc::SIGKILL, true);
        destroy(&spawned.state, &spawned.dir, &spawned.hooks)?;
        Ok(code)
    }
}

/// On cgroup v2, device rules are an eBPF program on the group. Where a v1 devices controller
/// enforces them too (a hybrid host), a kernel that refuses the program only earns a warning.
fn filter_devices(
    layout: &Layout,
    cgroup: &Cgroup,
    rules: &[crate::spec::DeviceRule],
) -> Result<(), CreateError> {
    let Some((_, _, dir)) = cgroup
        .dirs
        .iter()
        .find(|(v, _, _)| *v == cgroup::Version::V2)
    else {
        return Ok(());
    };
    let Some(prog) = device_filter::compile(rules).map_err(CreateError::DeviceRules)? else {
        return Ok(());
    };
    match device_filter::attach(dir, &prog) {
        Ok(()) => Ok(()),
        Err(e) if layout.version_of("devices") == Some(cgroup::Version::V1) => {
            eprintln!(
                "skiff runtime: warning: device filter on {} not attached ({e}); the v1 devices controller enforces the rules",
                dir.display()
            );
            Ok(())
        }
        Err(e) => Err(CreateError::DeviceFilter(dir.clone(), e)),
    }
}

/// Writes the user namespace's uid and gid maps (as root: no newuidmap needed).
fn write_id_maps(pid: i32, linux: &crate::spec::Linux) -> Result<(), CreateError> {
    for (file, maps) in [
        ("uid_map", &linux.uid_mappings),
        ("gid_map", &linux.gid_mappings),
    ] {
        if maps.is_empty() {
            continue;
        }
        let text: String = maps
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
            .collect();
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, text).map_err(|e| CreateError::IdMap(path, e))?;
    }
    Ok(())
}

pub(crate) fn signal_container(state: &State, signal: i32, all: bool) -> Result<(), KillError> {
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

fn destroy(state: &State, dir: &Path, hooks: &Hooks) -> Result<(), DeleteError> {
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
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DeleteError::StateDir(dir.to_path_buf(), e)),
    }
    // poststop failures are reported but never keep a container from being deleted.
    let json = state.to_runc_json(Status::Stopped).to_string();
    if let Err(e) = hooks::run("poststop", &hooks.poststop, &json) {
        eprintln!("skiff runtime: warning: {}", error_chain(&e));
    }
    Ok(())
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

/// Everything the cloned init needs, borrowed from the parent's (copied) memory.
struct ChildSide<'a> {
    plan: &'a LaunchPlan,
    layout: &'a Layout,
    cgroup: &'a Cgroup,
    last_cap: u32,
    mode: Mode,
    fifo: &'a Path,
    console: Option<&'a Path>,
    preserve: u32,
    hooks: &'a Hooks,
    /// Join this user namespace, then create these namespaces (clone flags) inside it.
    two_step: Option<(&'a Path, i32)>,
}

impl ChildSide<'_> {
    /// The cloned process: either the init itself, or (when joining a user namespace) the
    /// intermediate that joins it, makes the new namespaces and forks the init.
    fn main(&self, mut sync: launch::Child) -> i32 {
        launch::die_with_parent(true);
        let Some((user_ns, flags)) = self.two_step else {
            return self.init(sync);
        };
        let joined = std::fs::File::open(user_ns).and_then(|f| {
            // SAFETY: setns on an fd we hold; this process is single-threaded.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWUSER) };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
        if let Err(e) = joined {
            return sync.fail(&format!(
                "joining the user namespace {}: {e}",
                user_ns.display()
            ));
        }
        // SAFETY: unshare takes only flags.
        if unsafe { libc::unshare(flags) } < 0 {
            let e = io::Error::last_os_error();
            return sync.fail(&format!(
                "creating namespaces in the joined user namespace: {e}"
            ));
        }
        let mut report = match sync.try_clone() {
            Ok(r) => r,
            Err(e) => return sync.fail(&format!("{e}")),
        };
        match launch::clone_child(0, || self.init(sync)) {
            Ok(init) => {
                report.send_pid(init);
                0
            }
            Err(e) => report.fail(&format!("forking the init: {e}")),
        }
    }

    /// Set up, report, wait for start, exec. Returns an exit code only when something failed.
    fn init(&self, mut sync: launch::Child) -> i32 {
        // Not after the second fork: its parent, the intermediate, exits at once. There a
        // runtime that dies shows as EOF on the socket instead.
        launch::die_with_parent(self.two_step.is_none());
        if !sync.wait_byte() {
            return 1;
        }
        // Host paths are opened before pivot_root hides them.
        let fifo_fd = match self.mode {
            Mode::Create => match nix::fcntl::open(
                self.fifo,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            ) {
                Ok(fd) => Some(fd),
                Err(e) => return sync.fail(&format!("opening {}: {e}", self.fifo.display())),
            },
            Mode::Run => None,
        };
        let console = match self.console.map(terminal::connect).transpose() {
            Ok(c) => c,
            Err(e) => return sync.fail(&error_chain(&e)),
        };
        let mut sys = LinuxSys;
        let ctx = Context {
            layout: self.layout,
            cgroup: self.cgroup,
            last_cap: self.last_cap,
            user_ns: self.plan.new_namespaces.contains(&NsKind::User) || self.two_step.is_some(),
        };
        let mut state_template = String::new();
        let mut before_pivot = || {
            state_template = sync.pause_for_hooks()?;
            let json = serde_json::from_str(&state_template).map_err(|e| e.to_string())?;
            let json = hooks::state_json(&json, "creating");
            hooks::run("createContainer", &self.hooks.create_container, &json)
                .map_err(|e| error_chain(&e))
        };
        let program = match init::prepare(&mut sys, self.plan, &ctx, &mut before_pivot) {
            Ok(p) => p,
            Err(e) => return sync.fail(&error_chain(&e)),
        };
        if let Some(socket) = &console {
            let slave = match terminal::attach(socket, self.plan.process.console_size) {
                Ok(p) => p,
                Err(e) => return sync.fail(&error_chain(&e)),
            };
            // The container's /dev/console is its terminal, as runc and crun set it up.
            let console_path = Path::new("/dev/console");
            let bound = sys.create_file(console_path).and_then(|()| {
                sys.mount(Some(&slave), console_path, None, libc::MS_BIND as u64, None)
            });
            if let Err(e) = bound {
                return sync.fail(&format!("binding {} to /dev/console: {e}", slave.display()));
            }
        }
        drop(console);
        // From here the init outlives `create` (and a detached `run`), which exit once it is
        // ready; before `start` it only waits.
        launch::die_with_parent(false);
        if !sync.ready() {
            return 1;
        }
        // The write end of the exec fifo (create) or the sync socket (run) stays open until
        // execve closes it (both are close-on-exec): the runtime reads that EOF as "the
        // process has started", after the startContainer hooks.
        let mut _started_signal = None;
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
                    Ok(f) => _started_signal = Some(f),
                    Err(e) => {
                        eprintln!(
                            "skiff: container init: opening the exec fifo via {proc_path} (is /proc mounted?): {e}"
                        );
                        return 1;
                    }
                }
            }
            // A parent that dies before sending the start byte closes the socket: EOF here.
            None if !sync.wait_byte() => return 1,
            None => {}
        }
        if !self.hooks.start_container.is_empty() {
            let json = serde_json::from_str(&state_template)
                .map(|t| hooks::state_json(&t, "created"))
                .unwrap_or_default();
            if let Err(e) = hooks::run("startContainer", &self.hooks.start_container, &json) {
                eprintln!("skiff: container init: {}", error_chain(&e));
                return 1;
            }
        }
        if let Some(f) = &mut _started_signal
            && f.write_all(b"0").is_err()
        {
            return 1;
        }
        launch::close_extra_fds(self.preserve);
        let err = init::exec(&mut sys, &self.plan.process, &program, self.last_cap);
        eprintln!("skiff: container init: {}", error_chain(&err));
        127
    }
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
