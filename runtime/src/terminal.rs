//! `--console-socket`: the container's process gets a pseudo-terminal whose master end is sent
//! to the engine over a unix socket (SCM_RIGHTS), as runc does; the slave end becomes the
//! process's controlling terminal and stdio.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("connecting to the console socket {0}")]
    Connect(std::path::PathBuf, #[source] io::Error),
    #[error("opening a pseudo-terminal in the container (/dev/ptmx)")]
    Open(#[source] io::Error),
    #[error("sending the terminal to the console socket")]
    Send(#[source] io::Error),
    #[error("making the terminal the controlling terminal")]
    Controlling(#[source] io::Error),
}

/// Connects to the engine's socket; done before the container's root hides the host path.
pub fn connect(path: &Path) -> Result<UnixStream, TerminalError> {
    UnixStream::connect(path).map_err(|e| TerminalError::Connect(path.to_path_buf(), e))
}

fn last_error<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

/// Opens a pty inside the container, sends its master over `socket`, and makes its slave this
/// process's controlling terminal and stdin/stdout/stderr. Returns the slave's path.
pub fn attach(
    socket: &UnixStream,
    size: Option<(u16, u16)>,
) -> Result<std::path::PathBuf, TerminalError> {
    let master = open_master().map_err(TerminalError::Open)?;
    let (slave, path) = open_slave(&master).map_err(TerminalError::Open)?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize struct.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(b"/dev/ptmx")];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| TerminalError::Send(e.into()))?;
    drop(master);
    make_controlling(slave.as_raw_fd()).map_err(TerminalError::Controlling)?;
    Ok(path)
}

fn open_master() -> io::Result<OwnedFd> {
    // SAFETY: posix_openpt returns a new fd or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return last_error();
    }
    // SAFETY: fd is a fresh descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt/unlockpt take the master fd.
    if unsafe { libc::grantpt(fd) } < 0 || unsafe { libc::unlockpt(fd) } < 0 {
        return last_error();
    }
    Ok(master)
}

fn open_slave(master: &OwnedFd) -> io::Result<(OwnedFd, std::path::PathBuf)> {
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is writable for its length.
    if unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) } != 0 {
        return last_error();
    }
    // SAFETY: ptsname_r NUL-terminated the name.
    let fd = unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return last_error();
    }
    // SAFETY: ptsname_r NUL-terminated the name within the buffer.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes()));
    // SAFETY: fd is a fresh descriptor we own.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, path))
}

fn make_controlling(slave: RawFd) -> io::Result<()> {
    // SAFETY: setsid, ioctl(TIOCSCTTY) and dup2 take integers; slave is open.
    unsafe {
        libc::setsid();
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
            return last_error();
        }
        for target in 0..3 {
            if libc::dup2(slave, target) < 0 {
                return last_error();
            }
        }
    }
    Ok(())
}
