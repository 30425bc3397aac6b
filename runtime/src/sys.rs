//! The syscall seam: every system-changing call the container's init makes goes through [`Sys`],
//! so the order of steps is unit-tested with a recording fake and the real [`LinuxSys`] stays a
//! thin, obvious wrapper.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::caps::ProcessCaps;
use crate::plan::NsKind;
use crate::seccomp::Filter;

pub trait Sys {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: u64,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount_detach(&mut self, target: &Path) -> io::Result<()>;
    /// Makes `new_root` the root and detaches the old one.
    fn pivot_root(&mut self, new_root: &Path) -> io::Result<()>;
    fn mkdir_all(&mut self, path: &Path) -> io::Result<()>;
    /// Creates an empty file (and its parents) if nothing exists at `path`.
    fn create_file(&mut self, path: &Path) -> io::Result<()>;
    fn mknod(
        &mut self,
        path: &Path,
        kind: char,
        mode: u32,
        major: u64,
        minor: u64,
    ) -> io::Result<()>;
    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()>;
    fn sethostname(&mut self, name: &str) -> io::Result<()>;
    fn write_file(&mut self, path: &Path, data: &str) -> io::Result<()>;
    fn setns(&mut self, path: &Path, kind: NsKind) -> io::Result<()>;
    fn unshare(&mut self, kind: NsKind) -> io::Result<()>;
    fn setrlimit(&mut self, resource: u32, soft: u64, hard: u64) -> io::Result<()>;
    fn umask(&mut self, mask: u32);
    /// setgroups, setresgid, setresuid, keeping capabilities across the uid change.
    fn set_ids(&mut self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()>;
    /// Drops every capability up to `last_cap` that `caps.bounding` lacks from the bounding set.
    fn drop_bounding(&mut self, caps: &ProcessCaps, last_cap: u32) -> io::Result<()>;
    /// Sets the effective, permitted, inheritable and ambient sets.
    fn set_caps(&mut self, caps: &ProcessCaps) -> io::Result<()>;
    fn set_no_new_privs(&mut self) -> io::Result<()>;
    fn load_seccomp(&mut self, filter: &Filter) -> io::Result<()>;
    fn chdir(&mut self, path: &Path) -> io::Result<()>;
    /// Whether `path` is a directory; `NotFound` when it does not exist.
    fn is_dir(&mut self, path: &Path) -> io::Result<bool>;
    fn is_executable(&mut self, path: &Path) -> bool;
    /// The per-mount flags (`MS_NOSUID`, `MS_NODEV`, `MS_NOEXEC`, atime flags) `path`'s mount
    /// has now. A bind remount must repeat them: in a user namespace they are locked.
    fn mount_flags(&mut self, path: &Path) -> io::Result<u64>;
    /// Replaces the process image; returns only on failure.
    fn exec(&mut self, path: &Path, args: &[String], env: &[String]) -> io::Error;
}

/// `ST_RELATIME` from linux/statfs.h (musl's libc bindings do not export it).
const ST_RELATIME: libc::c_ulong = 0x1000;

/// Device numbers are 32-bit in the kernel ABI.
fn dev_part(n: u64) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The real thing.
pub struct LinuxSys;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    check_long(rc.into())
}

/// For `syscall(2)`, which returns a `c_long`.
fn check_long(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Sys for LinuxSys {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: u64,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cstr).transpose()?;
        let target = cstr(target)?;
        let fstype = fstype
            .map(|f| CString::new(f).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
            .transpose()?;
        let data = data
            .filter(|d| !d.is_empty())
            .map(|d| CString::new(d).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
            .transpose()?;
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
        check(unsafe {
            libc::mount(
                ptr(&source),
                target.as_ptr(),
                ptr(&fstype),
                flags as libc::c_ulong,
                ptr(&data).cast(),
            )
        })
    }

    fn umount_detach(&mut self, target: &Path) -> io::Result<()> {
        let target = cstr(target)?;
        // SAFETY: target is a valid C string.
        check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
    }

    fn pivot_root(&mut self, new_root: &Path) -> io::Result<()> {
        self.chdir(new_root)?;
        let dot = c".";
        // SAFETY: pivot_root(".", ".") stacks the old root on top of the new one; both are
        // valid C strings.
        check_long(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })?;
        // The old root must not propagate its detach back to the host.
        self.mount(
            None,
            Path::new("."),
            None,
            (libc::MS_SLAVE | libc::MS_REC) as u64,
            None,
        )?;
        self.umount_detach(Path::new("."))?;
        self.chdir(Path::new("/"))
    }

    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_file(&mut self, path: &Path) -> io::Result<()> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
    }

    fn mknod(
        &mut self,
        path: &Path,
        kind: char,
        mode: u32,
        major: u64,
        minor: u64,
    ) -> io::Result<()> {
        let fmt = match kind {
            'b' => libc::S_IFBLK,
            'p' => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let p = cstr(path)?;
        // SAFETY: p is a valid C string; makedev is a pure computation.
        check(unsafe {
            libc::mknod(
                p.as_ptr(),
                fmt | mode,
                libc::makedev(dev_part(major)?, dev_part(minor)?),
            )
        })
    }

    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }

    fn write_file(&mut self, path: &Path, data: &str) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn setns(&mut self, path: &Path, kind: NsKind) -> io::Result<()> {
        let file = std::fs::File::open(path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the duration of the call.
        check(unsafe { libc::setns(file.as_raw_fd(), kind.clone_flag()) })
    }

    fn unshare(&mut self, kind: NsKind) -> io::Result<()> {
        // SAFETY: unshare takes only flags.
        check(unsafe { libc::unshare(kind.clone_flag()) })
    }

    fn setrlimit(&mut self, resource: u32, soft: u64, hard: u64) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft as _,
            rlim_max: hard as _,
        };
        // SAFETY: lim is a valid rlimit struct.
        check(unsafe { libc::setrlimit(resource as _, &lim) })
    }

    fn umask(&mut self, mask: u32) {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }

    fn set_ids(&mut self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })?;
        let groups: Vec<libc::gid_t> = groups.to_vec();
        // SAFETY: the pointer and length describe `groups`.
        check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::setresgid(gid, gid, gid) })?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::setresuid(uid, uid, uid) })?;
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) })?;
        // A credential change clears "dumpable", which hands /proc/self to host root; the
        // container's own process must keep it.
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) })
    }

    fn drop_bounding(&mut self, caps: &ProcessCaps, last_cap: u32) -> io::Result<()> {
        for cap in 0..=last_cap {
            if !caps.bounding.contains(cap) {
                // SAFETY: prctl with integer arguments only.
                let rc =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if rc < 0 {
                    let err = io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::EINVAL) {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    fn set_caps(&mut self, caps: &ProcessCaps) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let split = |set: u64| [(set & 0xffff_ffff) as u32, (set >> 32) as u32];
        let (e, p, i) = (
            split(caps.effective.0),
            split(caps.permitted.0),
            split(caps.inheritable.0),
        );
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [0, 1].map(|k| Data {
            effective: e[k],
            permitted: p[k],
            inheritable: i[k],
        });
        // SAFETY: capset reads one header and two data structs, laid out as the kernel expects.
        check_long(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) })?;
        // SAFETY: prctl with integer arguments only.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        })?;
        for cap in 0..64u32 {
            if caps.ambient.contains(cap) {
                // SAFETY: prctl with integer arguments only.
                check(unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                })?;
            }
        }
        Ok(())
    }

    fn set_no_new_privs(&mut self) -> io::Result<()> {
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }

    fn load_seccomp(&mut self, filter: &Filter) -> io::Result<()> {
        #[repr(C)]
        struct SockFprog {
            len: libc::c_ushort,
            filter: *const crate::seccomp::bpf::Insn,
        }
        let len = libc::c_ushort::try_from(filter.program.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let prog = SockFprog {
            len,
            filter: filter.program.0.as_ptr(),
        };
        // SAFETY: the kernel reads `len` instructions (each laid out as struct sock_filter)
        // from a buffer that outlives the call.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                1 as libc::c_ulong, // SECCOMP_SET_MODE_FILTER
                filter.flags as libc::c_ulong,
                &prog as *const SockFprog,
            )
        })
    }

    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn is_dir(&mut self, path: &Path) -> io::Result<bool> {
        std::fs::metadata(path).map(|m| m.is_dir())
    }

    fn is_executable(&mut self, path: &Path) -> bool {
        let Ok(p) = cstr(path) else { return false };
        // SAFETY: p is a valid C string.
        let ok = unsafe { libc::access(p.as_ptr(), libc::X_OK) } == 0;
        ok && std::fs::metadata(path).is_ok_and(|m| m.is_file())
    }

    fn mount_flags(&mut self, path: &Path) -> io::Result<u64> {
        let p = cstr(path)?;
        // SAFETY: statvfs fills the struct we pass; p is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
        let map = [
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (ST_RELATIME, libc::MS_RELATIME),
            (libc::ST_RDONLY, libc::MS_RDONLY),
        ];
        Ok(map
            .iter()
            .filter(|(st_flag, _)| st.f_flag & *st_flag != 0)
            .fold(0u64, |acc, (_, ms)| acc | *ms as u64))
    }

    fn exec(&mut self, path: &Path, args: &[String], env: &[String]) -> io::Error {
        let to_c = |v: &[String]| -> io::Result<Vec<CString>> {
            v.iter()
                .map(|s| {
                    CString::new(s.as_str())
                        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
                })
                .collect()
        };
        let (path, args, env) = match (cstr(path), to_c(args), to_c(env)) {
            (Ok(p), Ok(a), Ok(e)) => (p, a, e),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
        };
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that outlive the
        // call; execve only returns on failure.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        io::Error::last_os_error()
    }
}
