//! `exec`: a new process inside a running container. It joins the init's namespaces (the pid
//! namespace through the parent, since setns(pid) only affects children) and cgroup, then gets
//! the configured user, capabilities, no_new_privs, rlimits, env and cwd, as the init did.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::container::{LookupError, Runtime, error_chain};
use crate::host::HostProfile;
use crate::init;
use crate::launch::{self, Report};
use crate::plan::{self, NsKind, PlanError, ProcessPlan};
use crate::spec::{LoadError, Process, Spec};
use crate::state::{ContainerId, Status};
use crate::sys::{LinuxSys, Sys};
use crate::terminal;

#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    /// `--process FILE`: a runtime-spec `process` object.
    pub process: Option<PathBuf>,
    /// `exec ID CMD…` form, with the container's process as the base.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, u32)>,
    pub tty: bool,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
    /// `--cap`: added to every capability set of the container's process.
    pub caps: Vec<String>,
    /// `--no-new-privs`: set it even if the container's process does not.
    pub no_new_privs: bool,
    /// `--additional-gids`.
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("container {0} is {1}: exec needs a running container")]
    NotRunning(ContainerId, Status),
    #[error("reading the process file {0}")]
    ReadProcess(PathBuf, #[source] std::io::Error),
    #[error("invalid process file {0}: {1}")]
    ParseProcess(PathBuf, serde_json::Error),
    #[error("exec needs a command or --process")]
    NoCommand,
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("opening the container's {0} namespace")]
    OpenNs(PathBuf, #[source] std::io::Error),
    #[error("joining the container's pid namespace")]
    JoinPid(#[source] std::io::Error),
    #[error("starting the process")]
    Clone(#[source] std::io::Error),
    #[error("talking to the new process")]
    Sync(#[source] std::io::Error),
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("exec: {0}")]
    Child(String),
    #[error("the new process died during setup")]
    Died,
    #[error("process.terminal is set: a --console-socket is needed to receive the terminal")]
    NoConsoleSocket,
    #[error("writing the pid file {0}")]
    PidFile(PathBuf, #[source] std::io::Error),
    #[error("waiting for the process")]
    Wait(#[source] std::io::Error),
}

fn ns_file(kind: NsKind) -> &'static str {
    match kind {
        NsKind::Mount => "mnt",
        NsKind::Pid => "pid",
        NsKind::Uts => "uts",
        NsKind::Ipc => "ipc",
        NsKind::Net => "net",
        NsKind::Cgroup => "cgroup",
        NsKind::User => "user",
        NsKind::Time => "time",
    }
}

/// The order namespaces are joined in: the user namespace first (it grants the rights for the
/// rest), the mount namespace last (it changes what paths mean).
const JOIN_ORDER: [NsKind; 7] = [
    NsKind::User,
    NsKind::Ipc,
    NsKind::Uts,
    NsKind::Net,
    NsKind::Cgroup,
    NsKind::Time,
    NsKind::Mount,
];

impl Runtime {
    /// Runs a process in container `id`; returns its exit code (0 at once with `detach`).
    pub fn exec(&self, id: &ContainerId, opts: &ExecOptions) -> Result<i32, ExecError> {
        let (state, dir) = self.load(id)?;
        let status = state.status(&dir);
        if status != Status::Running {
            return Err(ExecError::NotRunning(id.clone(), status));
        }
        let spec = Spec::load(&state.bundle)?;
        let process = exec_process(&spec, opts)?;
        let host = HostProfile::detect();
        let mut plan = plan::process_plan(&process, &host)?;
        plan.seccomp = plan::seccomp_filter(&spec)?;
        if plan.terminal && opts.console_socket.is_none() && opts.detach {
            return Err(ExecError::NoConsoleSocket);
        }
        let console = opts.console_socket.clone().filter(|_| plan.terminal);
        plan.terminal = console.is_some();

        let kinds: Vec<NsKind> = spec
            .linux
            .as_ref()
            .map(|l| {
                l.namespaces
                    .iter()
                    .filter_map(|n| NsKind::parse(&n.kind))
                    .collect()
            })
            .unwrap_or_default();
        let open = |kind: NsKind| -> Result<(NsKind, OwnedFd), ExecError> {
            let path = PathBuf::from(format!("/proc/{}/ns/{}", state.pid, ns_file(kind)));
            let f = std::fs::File::open(&path).map_err(|e| ExecError::OpenNs(path, e))?;
            Ok((kind, f.into()))
        };
        let joins: Vec<(NsKind, OwnedFd)> = JOIN_ORDER
            .iter()
            .filter(|k| kinds.contains(k))
            .map(|k| open(*k))
            .collect::<Result<_, _>>()?;
        if kinds.contains(&NsKind::Pid) {
            let (_, fd) = open(NsKind::Pid)?;
            // SAFETY: setns on an fd we hold; affects only children created after this.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
                return Err(ExecError::JoinPid(std::io::Error::last_os_error()));
            }
        }

        let (mut parent, child_end) = launch::pair().map_err(ExecError::Sync)?;
        let child = ExecChild {
            plan: &plan,
            joins: &joins,
            console: console.as_deref(),
            last_cap: host.last_cap,
            preserve: opts.preserve_fds,
        };
        let pid = launch::clone_child(0, || child.main(child_end)).map_err(ExecError::Clone)?;
        let kill = || {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        };
        if let Err(e) = state.cgroup.add(pid) {
            kill();
            return Err(e.into());
        }
        parent.go().map_err(ExecError::Sync)?;
        match parent.wait_ready().map_err(ExecError::Sync)? {
            Report::Ready => {}
            Report::Failed(msg) => {
                kill();
                return Err(ExecError::Child(msg));
            }
            Report::Died | Report::Hooks => {
                kill();
                return Err(ExecError::Died);
            }
        }
        if let Some(pf) = &opts.pid_file {
            launch::write_pid_file(pf, pid).map_err(|e| ExecError::PidFile(pf.clone(), e))?;
        }
        if opts.detach {
            return Ok(0);
        }
        launch::forward_signals(pid);
        launch::wait_exit(pid).map_err(ExecError::Wait)
    }
}

/// The process to run: the `--process` file, or the container's process with the command line's
/// args, env, cwd, user and tty on top (as `runc exec ID CMD…` does).
fn exec_process(spec: &Spec, opts: &ExecOptions) -> Result<Process, ExecError> {
    if let Some(path) = &opts.process {
        let bytes = std::fs::read(path).map_err(|e| ExecError::ReadProcess(path.clone(), e))?;
        return serde_json::from_slice(&bytes)
            .map_err(|e| ExecError::ParseProcess(path.clone(), e));
    }
    if opts.args.is_empty() {
        return Err(ExecError::NoCommand);
    }
    let mut p = spec.process.clone().unwrap_or_default();
    p.args = opts.args.clone();
    p.terminal = opts.tty;
    for kv in &opts.env {
        let key = kv.split('=').next().unwrap_or_default();
        p.env.retain(|e| e.split('=').next() != Some(key));
        p.env.push(kv.clone());
    }
    if let Some(cwd) = &opts.cwd {
        p.cwd = cwd.clone();
    }
    if let Some((uid, gid)) = opts.user {
        p.user.uid = uid;
        p.user.gid = gid;
    }
    if !opts.additional_gids.is_empty() {
        p.user.additional_gids = opts.additional_gids.clone();
    }
    if opts.no_new_privs {
        p.no_new_privileges = true;
    }
    if !opts.caps.is_empty() {
        let c = p.capabilities.get_or_insert_with(Default::default);
        for set in [
            &mut c.bounding,
            &mut c.effective,
            &mut c.permitted,
            &mut c.inheritable,
        ] {
            for cap in &opts.caps {
                if !set.contains(cap) {
                    set.push(cap.clone());
                }
            }
        }
    }
    Ok(p)
}

struct ExecChild<'a> {
    plan: &'a ProcessPlan,
    joins: &'a [(NsKind, OwnedFd)],
    console: Option<&'a Path>,
    last_cap: u32,
    preserve: u32,
}

impl ExecChild<'_> {
    fn main(&self, mut sync: launch::Child) -> i32 {
        launch::die_with_parent(true);
        if !sync.wait_byte() {
            return 1;
        }
        let console = match self.console.map(terminal::connect).transpose() {
            Ok(c) => c,
            Err(e) => return sync.fail(&error_chain(&e)),
        };
        for (kind, fd) in self.joins {
            // SAFETY: setns on an fd we hold; this process is single-threaded.
            if unsafe { libc::setns(fd.as_raw_fd(), kind.clone_flag()) } < 0 {
                let e = std::io::Error::last_os_error();
                return sync.fail(&format!("joining the {kind:?} namespace: {e}"));
            }
        }
        let mut sys = LinuxSys;
        if let Some(socket) = &console
            && let Err(e) = terminal::attach(socket, self.plan.console_size)
        {
            return sync.fail(&error_chain(&e));
        }
        drop(console);
        if let Some(adj) = self.plan.oom_score_adj
            && let Err(e) = sys.write_file(Path::new("/proc/self/oom_score_adj"), &adj.to_string())
        {
            return sync.fail(&format!("setting oom_score_adj to {adj}: {e}"));
        }
        for r in &self.plan.rlimits {
            if let Err(e) = sys.setrlimit(r.resource, r.soft, r.hard) {
                return sync.fail(&format!("setting {} to {}:{}: {e}", r.name, r.soft, r.hard));
            }
        }
        let program = match init::find_program(&mut sys, &self.plan.args[0], &self.plan.env) {
            Ok(p) => p,
            Err(e) => return sync.fail(&error_chain(&e)),
        };
        launch::die_with_parent(false);
        if !sync.ready() {
            return 1;
        }
        drop(sync);
        launch::close_extra_fds(self.preserve);
        let err = init::exec(&mut sys, self.plan, &program, self.last_cap);
        eprintln!("skiff: exec: {}", error_chain(&err));
        127
    }
}
