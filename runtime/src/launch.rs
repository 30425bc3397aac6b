//! Starting a process in new or existing namespaces from the single-threaded runtime CLI, and
//! the small protocol between the runtime (parent) and that process (child) over a socketpair:
//!
//! ```text
//! parent                          child
//!   clone ───────────────────────►  (waits)
//!   cgroup, id maps; "g" ────────►  setup …
//!                 ◄──────────────── "r" ready  |  "e<message>" failed step
//!   (run/exec) "s" ──────────────►  exec
//! ```
//!
//! Exits are collected with a blocking `waitpid` on the known pid, never from a SIGCHLD
//! handler, so a process that exits at once cannot be missed.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

/// `clone(2)` with namespace `flags`, fork-like (no shared memory). The child runs `child`
/// and exits with its return value.
pub fn clone_child(flags: i32, child: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: a raw clone without CLONE_VM behaves as fork with namespace flags. The runtime
    // CLI is single-threaded, so the child may keep running Rust code until it execs or exits.
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
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: leave without running destructors or atexit handlers copied from the parent.
        unsafe { libc::_exit(code) };
    }
    i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))
}

/// The parent's end of the socketpair.
pub struct Parent(pub UnixStream);

/// What the child reported.
pub enum Report {
    Ready,
    /// Stopped before pivot_root for the runtime-namespace hooks; answer with `proceed`.
    Hooks,
    Failed(String),
    /// The child closed the socket without a word: it died.
    Died,
}

impl Parent {
    pub fn go(&mut self) -> io::Result<()> {
        self.0.write_all(b"g")
    }

    pub fn start(&mut self) -> io::Result<()> {
        self.0.write_all(b"s")
    }

    /// The init's pid from the intermediate process, or the step that failed.
    pub fn wait_pid(&mut self) -> io::Result<Result<i32, String>> {
        let mut msg = Vec::new();
        let mut buf = [0u8; 1];
        // Byte by byte: what follows the newline belongs to the init.
        while self.0.read(&mut buf)? == 1 {
            msg.push(buf[0]);
            if buf[0] == b'\n' && msg.first() == Some(&b'p') {
                break;
            }
        }
        Ok(match msg.split_first() {
            Some((b'p', rest)) => String::from_utf8_lossy(rest)
                .trim()
                .parse()
                .map_err(|_| "bad pid from the intermediate process".to_string()),
            Some((b'e', rest)) => Err(String::from_utf8_lossy(rest).into_owned()),
            _ => Err("the intermediate process died".to_string()),
        })
    }

    /// Waits until the child's end is closed (it exec'd or died).
    pub fn wait_closed(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64];
        while self.0.read(&mut buf)? > 0 {}
        Ok(())
    }

    /// Lets a child paused in `pause_for_hooks` go on, handing it the state document.
    pub fn proceed(&mut self, state: &str) -> io::Result<()> {
        self.0.write_all(format!("c{state}\n").as_bytes())
    }

    pub fn wait_ready(&mut self) -> io::Result<Report> {
        let mut msg = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = self.0.read(&mut buf)?;
            if n == 0 {
                break;
            }
            msg.extend_from_slice(&buf[..n]);
            if matches!(msg.first(), Some(b'r' | b'h')) {
                break;
            }
        }
        Ok(match msg.split_first() {
            Some((b'r', _)) => Report::Ready,
            Some((b'h', _)) => Report::Hooks,
            Some((b'e', text)) => Report::Failed(String::from_utf8_lossy(text).into_owned()),
            _ => Report::Died,
        })
    }
}

/// The child's end.
pub struct Child(pub UnixStream);

impl Child {
    /// Blocks for one byte; false when the parent went away.
    pub fn wait_byte(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(1))
    }

    /// Asks the parent to run its hooks; returns the state document it answers with.
    pub fn pause_for_hooks(&mut self) -> Result<String, String> {
        self.0.write_all(b"h").map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"\n") {
            let n = self.0.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the runtime went away during the hooks".into());
            }
            answer.extend_from_slice(&buf[..n]);
        }
        match answer.split_first() {
            Some((b'c', rest)) => Ok(String::from_utf8_lossy(rest).trim_end().to_string()),
            _ => Err("unexpected answer from the runtime".into()),
        }
    }

    pub fn try_clone(&self) -> io::Result<Child> {
        self.0.try_clone().map(Child)
    }

    /// The intermediate process reports the init's pid (as the runtime sees it).
    pub fn send_pid(&mut self, pid: i32) {
        let _ = self.0.write_all(format!("p{pid}\n").as_bytes());
    }

    pub fn ready(&mut self) -> bool {
        self.0.write_all(b"r").is_ok()
    }

    /// Reports a failed step and returns the exit code to leave with.
    pub fn fail(&mut self, msg: &str) -> i32 {
        let _ = self.0.write_all(format!("e{msg}").as_bytes());
        1
    }
}

pub fn pair() -> io::Result<(Parent, Child)> {
    let (a, b) = UnixStream::pair()?;
    Ok((Parent(a), Child(b)))
}

/// Kill the child if the runtime dies before the child is ready (`true`), or stop doing so.
pub fn die_with_parent(on: bool) {
    let sig = if on { libc::SIGKILL } else { 0 };
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
}

/// Waits for `pid` (our child) and returns its status as a shell reports it.
pub fn wait_exit(pid: i32) -> io::Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if libc::WIFEXITED(status) {
            return Ok(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(128 + libc::WTERMSIG(status));
        }
    }
}

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While the runtime waits in the foreground, the signals a terminal or supervisor sends go
/// to the container's process instead.
pub fn forward_signals(pid: i32) {
    FORWARD_TO.store(pid, Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        // SAFETY: installs an async-signal-safe handler; the sigaction struct is fully
        // initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Marks every fd from `3 + preserve` up close-on-exec, so the container gets stdio plus the
/// `preserve` fds the engine passed (`--preserve-fds`, `LISTEN_FDS`) and nothing else.
pub fn close_extra_fds(preserve: u32) {
    let first = 3 + preserve;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Older kernels: walk /proc/self/fd.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    for fd in fds {
        if fd >= first as i32 {
            // SAFETY: fcntl on an fd number; an already-closed one just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Writes `pid` to `path` atomically.
pub fn write_pid_file(path: &std::path::Path, pid: i32) -> io::Result<()> {
    let tmp = path.with_extension("skiff-tmp");
    std::fs::write(&tmp, pid.to_string())?;
    std::fs::rename(tmp, path)
}
