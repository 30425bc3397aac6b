//! The copy storage driver, for hosts without overlayfs: a container's rootfs is a real copy
//! of its image's snapshots, lowest first, with the overlay whiteouts the snapshots hold
//! applied (a 0:0 character device deletes, `trusted.overlay.opaque=y` hides what is below).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn is_opaque(dir: &Path) -> bool {
    let (Ok(p), Ok(n)) = (cstr(dir), CString::new("trusted.overlay.opaque")) else {
        return false;
    };
    let mut v = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    len == 1 && v[0] == b'y'
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

// time_t and c_long are 32 bits on armv7: the conversions are not useless there.
#[allow(clippy::useless_conversion)]
fn meta(dst: &Path, m: &std::fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    if !m.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    let p = cstr(dst)?;
    let t = libc::timespec {
        tv_sec: m.mtime().try_into().unwrap_or(0),
        tv_nsec: m.mtime_nsec().try_into().unwrap_or(0),
    };
    // SAFETY: p is a valid C string; two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    Ok(())
}

/// Copies snapshot `src` over `dst`, applying its whiteouts.
pub fn apply(src: &Path, dst: &Path) -> io::Result<()> {
    let mut dirs = Vec::new();
    apply_dir(src, dst, &mut dirs)?;
    // Directory times last: their contents changed them.
    for (d, m) in dirs.iter().rev() {
        meta(d, m)?;
    }
    Ok(())
}

fn apply_dir(
    src: &Path,
    dst: &Path,
    dirs: &mut Vec<(std::path::PathBuf, std::fs::Metadata)>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let m = std::fs::symlink_metadata(&from)?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            remove(&to)?; // whiteout
            continue;
        }
        if ft.is_dir() {
            let existing = std::fs::symlink_metadata(&to).ok();
            if is_opaque(&from) || existing.as_ref().is_some_and(|e| !e.is_dir()) {
                remove(&to)?;
            }
            if std::fs::symlink_metadata(&to).is_err() {
                std::fs::create_dir(&to)?;
            }
            apply_dir(&from, &to, dirs)?;
            dirs.push((to, m));
            continue;
        }
        remove(&to)?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
        } else {
            let p = cstr(&to)?;
            // SAFETY: p is a valid C string; mode and rdev come from the source node.
            if unsafe {
                libc::mknod(
                    p.as_ptr(),
                    m.mode() as libc::mode_t,
                    m.rdev() as libc::dev_t,
                )
            } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        meta(&to, &m)?;
    }
    Ok(())
}
