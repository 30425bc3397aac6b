//! Resolving a container path inside the rootfs on the host, without ever leaving it.
//!
//! Symlinks are followed by hand, relative to the rootfs: an absolute link target means the
//! rootfs root (as it will inside the container); a `..` that would climb above the rootfs is
//! refused rather than clamped, because a bundle that tries it is hostile or broken.

use std::io;
use std::path::{Component, Path, PathBuf};

const MAX_LINKS: u32 = 40;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path} escapes the rootfs {root}")]
    Escapes { root: PathBuf, path: PathBuf },
    #[error("{path}: too many levels of symbolic links inside the rootfs")]
    Loop { path: PathBuf },
    #[error("resolving {path} inside the rootfs")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Returns the host path of the container path `path` under `root`, following symlinks inside
/// `root`. Components that do not exist yet are taken literally.
pub fn resolve(root: &Path, path: &Path) -> Result<PathBuf, ResolveError> {
    let escapes = || ResolveError::Escapes {
        root: root.to_path_buf(),
        path: path.to_path_buf(),
    };
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut todo, path, &mut done).map_err(|()| escapes())?;
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if done.pop().is_none() {
                return Err(escapes());
            }
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&done);
        host.push(&name);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ResolveError::Loop {
                        path: path.to_path_buf(),
                    });
                }
                let target = std::fs::read_link(&host).map_err(|source| ResolveError::Io {
                    path: host.clone(),
                    source,
                })?;
                push_components(&mut todo, &target, &mut done).map_err(|()| escapes())?;
            }
            Ok(_) => done.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => done.push(name),
            Err(source) => return Err(ResolveError::Io { path: host, source }),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

/// Queues `path`'s components (reversed, so `pop` yields them in order). An absolute path
/// restarts at the root.
fn push_components(
    todo: &mut Vec<std::ffi::OsString>,
    path: &Path,
    done: &mut Vec<std::ffi::OsString>,
) -> Result<(), ()> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => done.clear(),
            Component::CurDir => {}
            Component::ParentDir => parts.push("..".into()),
            Component::Normal(n) => parts.push(n.to_os_string()),
            Component::Prefix(_) => return Err(()),
        }
    }
    todo.extend(parts.into_iter().rev());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skiff-rootfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        dir
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let root = tmp("abs");
        symlink("/etc", root.join("link")).unwrap();
        assert_eq!(
            resolve(&root, Path::new("/link/x")).unwrap(),
            root.join("etc/x")
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn dotdot_out_of_the_root_is_refused_directly_or_through_a_link() {
        let root = tmp("esc");
        symlink("../../../../tmp", root.join("evil")).unwrap();
        assert!(matches!(
            resolve(&root, Path::new("/evil/x")),
            Err(ResolveError::Escapes { .. })
        ));
        assert!(matches!(
            resolve(&root, Path::new("/../x")),
            Err(ResolveError::Escapes { .. })
        ));
        assert_eq!(
            resolve(&root, Path::new("/etc/../etc/y")).unwrap(),
            root.join("etc/y")
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn link_loops_are_an_error() {
        let root = tmp("loop");
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        assert!(matches!(
            resolve(&root, Path::new("/a")),
            Err(ResolveError::Loop { .. })
        ));
        std::fs::remove_dir_all(root).unwrap();
    }
}
