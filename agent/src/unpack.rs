//! Unpacking one image layer (a tar stream, gzip/zstd/uncompressed) into its own snapshot
//! directory, as an overlayfs lower layer: whiteouts become 0:0 character devices, opaque
//! directories get `trusted.overlay.opaque=y`.
//!
//! Hostile input is refused, never followed: `..` components, entries that pass through a
//! symlink (or a non-directory) inside the layer, hard links to anything outside the layer,
//! and decompression bombs (more than [`Limits::max_ratio`] × the compressed size).

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Compressed size of the layer, from its descriptor.
    pub compressed: u64,
    /// Uncompressed bytes allowed per compressed byte.
    pub max_ratio: u64,
    /// Uncompressed bytes always allowed (tiny layers compress very well).
    pub floor: u64,
}

impl Limits {
    pub fn for_size(compressed: u64) -> Limits {
        Limits {
            compressed,
            max_ratio: 100,
            floor: 64 << 20,
        }
    }
    fn max(&self) -> u64 {
        self.compressed
            .saturating_mul(self.max_ratio)
            .max(self.floor)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the layer")]
    Read(#[source] io::Error),
    #[error("hostile layer: {0}")]
    Hostile(String),
    #[error(
        "layer expands past {limit} bytes ({ratio}× its compressed size): refused as a decompression bomb"
    )]
    Bomb { limit: u64, ratio: u64 },
    #[error("writing {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("unsupported tar entry type {kind:?} at {path}")]
    EntryType { kind: String, path: String },
}

/// Counts and hashes what the tar reader consumes (the uncompressed layer: its diff_id).
struct Hashing<R> {
    inner: R,
    ctx: ring::digest::Context,
    bytes: u64,
    limit: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(io::Error::other(BombMarker));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct BombMarker;
impl std::fmt::Display for BombMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompression limit")
    }
}
impl std::error::Error for BombMarker {}

fn is_bomb(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<BombMarker>())
}

/// The uncompressed stream of a layer, by its magic bytes (media types lie).
fn decompress<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::new(r);
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = ruzstd::decoding::StreamingDecoder::new(r).map_err(io::Error::other)?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(r))
    }
}

/// Unpacks `layer` into `dest` (an empty directory). Returns the diff_id (`sha256:…`).
pub fn unpack(layer: impl Read, dest: &Path, limits: Limits) -> Result<String, UnpackError> {
    let stream = decompress(layer).map_err(UnpackError::Read)?;
    let mut hashing = Hashing {
        inner: stream,
        ctx: ring::digest::Context::new(&ring::digest::SHA256),
        bytes: 0,
        limit: limits.max(),
    };
    let bomb = |e: &io::Error| {
        is_bomb(e).then_some(UnpackError::Bomb {
            limit: limits.max(),
            ratio: limits.max_ratio,
        })
    };
    // SAFETY: geteuid/getegid cannot fail.
    let me = unsafe { (u64::from(libc::geteuid()), u64::from(libc::getegid())) };
    let mut st = LayerState {
        dirs: Vec::new(),
        known: HashSet::new(),
        me,
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(UnpackError::Read)?;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => return Err(bomb(&e).unwrap_or(UnpackError::Read(e))),
            };
            if let Err(e) = apply(&mut entry, dest, &mut st) {
                return Err(match e {
                    UnpackError::Read(io) => bomb(&io).unwrap_or(UnpackError::Read(io)),
                    other => other,
                });
            }
        }
    }
    // The tar reader stops at the end-of-archive blocks; the diff_id covers the whole stream.
    if let Err(e) = io::copy(&mut hashing, &mut io::sink()) {
        return Err(bomb(&e).unwrap_or(UnpackError::Read(e)));
    }
    // Directory modes and times last: their contents changed them.
    for (dir, mode, mtime) in st.dirs.iter().rev() {
        set_mode_time(dir, *mode, *mtime).map_err(|e| UnpackError::Write(dir.clone(), e))?;
    }
    Ok(format!(
        "sha256:{}",
        crate::registry::hex(hashing.ctx.finish().as_ref())
    ))
}

/// The entry's path as relative components, refusing `..`.
fn clean(raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Hostile(format!(
                    "{} climbs out with ..",
                    raw.display()
                )));
            }
            Component::Prefix(_) => {
                return Err(UnpackError::Hostile(format!(
                    "{} has a path prefix",
                    raw.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Makes every parent of `rel` a real directory under `dest`, refusing symlinks on the way.
/// `known` holds directories already checked in this layer (dropped when replaced).
fn parents(dest: &Path, rel: &Path, known: &mut HashSet<PathBuf>) -> Result<PathBuf, UnpackError> {
    let mut cur = dest.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        cur.push(c);
        if known.contains(&cur) {
            continue;
        }
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Hostile(format!(
                    "{} goes through the symlink {}",
                    rel.display(),
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                )));
            }
            Ok(_) => {
                return Err(UnpackError::Hostile(format!(
                    "{} goes through the non-directory {}",
                    rel.display(),
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur).map_err(|e| UnpackError::Write(cur.clone(), e))?;
            }
            Err(e) => return Err(UnpackError::Write(cur.clone(), e)),
        }
        known.insert(cur.clone());
    }
    Ok(dest.join(rel))
}

/// Removes whatever is at `path`, forgetting it (and below) as a known directory.
fn replace(path: &Path, known: &mut HashSet<PathBuf>) -> io::Result<()> {
    if clear(path)? {
        known.retain(|k| !k.starts_with(path));
    }
    Ok(())
}

/// Removes whatever is at `path` (not following symlinks); true when it was a directory.
fn clear(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => std::fs::remove_dir_all(path).map(|()| true),
        Ok(_) => std::fs::remove_file(path).map(|()| false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: p is a valid C string; makedev is a pure computation.
    check(unsafe {
        libc::mknod(
            p.as_ptr(),
            kind | mode as libc::mode_t,
            libc::makedev(major, minor),
        )
    })
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cstr(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

fn set_mode_time(path: &Path, mode: u32, mtime: u64) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    set_mtime(path, mtime)
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let p = cstr(path)?;
    let t = libc::timespec {
        tv_sec: mtime.try_into().unwrap_or(0),
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: p is a valid C string; times holds two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// What unpacking one layer keeps between entries.
struct LayerState {
    /// Directories to give their mode and mtime at the end.
    dirs: Vec<(PathBuf, u32, u64)>,
    /// Directories already checked or made (not symlinks) in this layer.
    known: HashSet<PathBuf>,
    /// Our own uid/gid: new files already have them, so no chown is needed.
    me: (u64, u64),
}

fn apply<R: Read>(
    entry: &mut tar::Entry<R>,
    dest: &Path,
    st: &mut LayerState,
) -> Result<(), UnpackError> {
    let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
    let rel = clean(&raw)?;
    if rel.as_os_str().is_empty() {
        return Ok(()); // "./" itself
    }
    let header = entry.header().clone();
    let mode = header.mode().map_err(UnpackError::Read)?;
    let uid = header.uid().map_err(UnpackError::Read)?;
    let gid = header.gid().map_err(UnpackError::Read)?;
    let mtime = header.mtime().unwrap_or(0);
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |e| UnpackError::Write(p, e)
    };

    // Whiteouts, in overlayfs form.
    if let Some(hidden) = name.strip_prefix(".wh.") {
        let target = parents(dest, &rel, &mut st.known)?;
        let dir = target.parent().unwrap_or(dest).to_path_buf();
        if hidden == ".wh..opq" {
            set_xattr(&dir, "trusted.overlay.opaque", b"y").map_err(werr(&dir))?;
        } else {
            let path = dir.join(hidden);
            replace(&path, &mut st.known).map_err(werr(&path))?;
            mknod(&path, libc::S_IFCHR, 0, 0, 0).map_err(werr(&path))?;
        }
        return Ok(());
    }

    let path = parents(dest, &rel, &mut st.known)?;
    let kind = header.entry_type();
    match kind {
        tar::EntryType::Directory => {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    replace(&path, &mut st.known).map_err(werr(&path))?;
                    std::fs::create_dir(&path).map_err(werr(&path))?;
                }
                Err(_) => std::fs::create_dir(&path).map_err(werr(&path))?,
            }
            st.known.insert(path.clone());
            st.dirs.push((path.clone(), mode, mtime));
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            replace(&path, &mut st.known).map_err(werr(&path))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(werr(&path))?;
            io::copy(entry, &mut f).map_err(|e| {
                if is_bomb(&e) {
                    UnpackError::Read(e)
                } else {
                    UnpackError::Write(path.clone(), e)
                }
            })?;
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| {
                    UnpackError::Hostile(format!("symlink {} without a target", rel.display()))
                })?;
            replace(&path, &mut st.known).map_err(werr(&path))?;
            std::os::unix::fs::symlink(&target, &path).map_err(werr(&path))?;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or_else(|| {
                    UnpackError::Hostile(format!("hard link {} without a target", rel.display()))
                })?;
            let target_rel = clean(&target)?;
            let source = parents(dest, &target_rel, &mut st.known)?;
            match std::fs::symlink_metadata(&source) {
                Ok(m) if m.file_type().is_file() => {}
                _ => {
                    return Err(UnpackError::Hostile(format!(
                        "hard link {} points at {}, which is not a file of this layer",
                        rel.display(),
                        target_rel.display()
                    )));
                }
            }
            replace(&path, &mut st.known).map_err(werr(&path))?;
            std::fs::hard_link(&source, &path).map_err(werr(&path))?;
            return Ok(()); // the link shares the target's inode: mode and owner are its
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let fmt = match kind {
                tar::EntryType::Char => libc::S_IFCHR,
                tar::EntryType::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            replace(&path, &mut st.known).map_err(werr(&path))?;
            mknod(&path, fmt, mode & 0o7777, major, minor).map_err(werr(&path))?;
        }
        tar::EntryType::XGlobalHeader
        | tar::EntryType::XHeader
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink => return Ok(()),
        other => {
            return Err(UnpackError::EntryType {
                kind: format!("{other:?}"),
                path: rel.display().to_string(),
            });
        }
    }
    let id = |n: u64| {
        u32::try_from(n).map_err(|_| {
            UnpackError::Hostile(format!("{}: owner id {n} out of range", rel.display()))
        })
    };
    // New entries already belong to us; a directory that existed may not.
    if (uid, gid) != st.me || kind == tar::EntryType::Directory {
        std::os::unix::fs::lchown(&path, Some(id(uid)?), Some(id(gid)?)).map_err(werr(&path))?;
    }
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let (Ok(key), value) = (ext.key(), ext.value_bytes())
                && let Some(attr) = key.strip_prefix("SCHILY.xattr.")
            {
                // Best effort: a filesystem without user/security xattrs still runs the image.
                let _ = set_xattr(&path, attr, value);
            }
        }
    }
    if kind != tar::EntryType::Symlink && kind != tar::EntryType::Directory {
        set_mode_time(&path, mode, mtime).map_err(werr(&path))?;
    } else if kind == tar::EntryType::Symlink {
        let _ = set_mtime(&path, mtime);
    }
    Ok(())
}
