//! Safe handling of Unix socket paths.
//!
//! A daemon binding its socket must not follow a symlink planted in its
//! runtime directory, must not delete a file that is not a stale socket of
//! its own, and must not steal the path from a live daemon. A client must not
//! talk to a socket that someone other than the expected owner created.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error("socket path {path} is a symlink; refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("socket {path} is owned by uid {found}, expected {}", expected_list(.expected))]
    ForeignOwner {
        path: PathBuf,
        found: u32,
        expected: Vec<u32>,
    },
    #[error("socket {path} is in use by a running server")]
    InUse { path: PathBuf },
    #[error("directory {path} of the socket is unsafe: {reason}")]
    UnsafeDir { path: PathBuf, reason: String },
    #[error("inspecting {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binding socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting mode of socket {path}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn expected_list(v: &[u32]) -> String {
    v.iter()
        .map(|u| format!("uid {u}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Check the directory that will hold a listening socket: it must exist, be a
/// real directory (not a symlink), be owned by `owner` or root, and not be
/// writable by group or others.
pub fn check_socket_dir(dir: &Path, owner: u32) -> Result<(), SocketPathError> {
    let md = std::fs::symlink_metadata(dir).map_err(|source| SocketPathError::Stat {
        path: dir.to_path_buf(),
        source,
    })?;
    let unsafe_dir = |reason: String| SocketPathError::UnsafeDir {
        path: dir.to_path_buf(),
        reason,
    };
    if md.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symlink".into()));
    }
    if !md.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if md.uid() != owner && md.uid() != 0 {
        return Err(unsafe_dir(format!(
            "owned by uid {}, expected uid {owner} or root",
            md.uid()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:o} lets group or others create files in it",
            md.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Bind a listening socket at `path` with `mode`, safely.
///
/// * the parent directory passes [`check_socket_dir`] for `owner`;
/// * an existing symlink or non-socket at `path` is refused, never removed;
/// * an existing socket owned by someone other than `owner` is refused;
/// * an existing socket that still accepts connections is refused (in use);
/// * otherwise a stale socket is removed and the new one bound.
pub fn bind_listener(path: &Path, owner: u32, mode: u32) -> Result<UnixListener, SocketPathError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    check_socket_dir(dir, owner)?;
    match std::fs::symlink_metadata(path) {
        Ok(md) => {
            let ft = md.file_type();
            if ft.is_symlink() {
                return Err(SocketPathError::Symlink {
                    path: path.to_path_buf(),
                });
            }
            if !ft.is_socket() {
                return Err(SocketPathError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            if md.uid() != owner {
                return Err(SocketPathError::ForeignOwner {
                    path: path.to_path_buf(),
                    found: md.uid(),
                    expected: vec![owner],
                });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(SocketPathError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(|source| SocketPathError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketPathError::Stat {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| SocketPathError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        SocketPathError::Chmod {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Check a socket before connecting to it: it must be a socket (not a
/// symlink) owned by one of `trusted_owners`.
pub fn check_connect_path(path: &Path, trusted_owners: &[u32]) -> Result<(), SocketPathError> {
    let md = std::fs::symlink_metadata(path).map_err(|source| SocketPathError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    let ft = md.file_type();
    if ft.is_symlink() {
        return Err(SocketPathError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !ft.is_socket() {
        return Err(SocketPathError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    if !trusted_owners.contains(&md.uid()) {
        return Err(SocketPathError::ForeignOwner {
            path: path.to_path_buf(),
            found: md.uid(),
            expected: trusted_owners.to_vec(),
        });
    }
    Ok(())
}

/// Remove our own socket at shutdown; "already gone" is fine.
pub fn remove_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn binds_and_replaces_a_stale_socket() {
        let d = private_dir();
        let p = d.path().join("s.sock");
        drop(bind_listener(&p, me(), 0o600).unwrap());
        // The listener is gone but its file remains: stale, so it is replaced.
        let l = bind_listener(&p, me(), 0o600).unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        drop(l);
    }

    #[test]
    fn refuses_a_live_socket() {
        let d = private_dir();
        let p = d.path().join("s.sock");
        let _live = bind_listener(&p, me(), 0o600).unwrap();
        assert!(matches!(
            bind_listener(&p, me(), 0o600),
            Err(SocketPathError::InUse { .. })
        ));
    }

    #[test]
    fn refuses_symlinks_and_regular_files_without_touching_them() {
        let d = private_dir();
        let target = d.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = d.path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            bind_listener(&link, me(), 0o600),
            Err(SocketPathError::Symlink { .. })
        ));
        assert!(matches!(
            check_connect_path(&link, &[me()]),
            Err(SocketPathError::Symlink { .. })
        ));
        assert!(matches!(
            bind_listener(&target, me(), 0o600),
            Err(SocketPathError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn refuses_world_writable_or_symlinked_directories() {
        let d = private_dir();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind_listener(&open.join("s.sock"), me(), 0o600).unwrap_err();
        assert!(matches!(err, SocketPathError::UnsafeDir { .. }), "{err}");
        let linkdir = d.path().join("linkdir");
        std::os::unix::fs::symlink(d.path(), &linkdir).unwrap();
        let err = bind_listener(&linkdir.join("s.sock"), me(), 0o600).unwrap_err();
        assert!(matches!(err, SocketPathError::UnsafeDir { .. }), "{err}");
    }

    #[test]
    fn refuses_to_replace_a_socket_owned_by_someone_else() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root to create a socket owned by another uid"
        );
        let d = private_dir();
        let p = d.path().join("s.sock");
        drop(bind_listener(&p, me(), 0o600).unwrap());
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let err = bind_listener(&p, me(), 0o600).unwrap_err();
        assert!(
            matches!(err, SocketPathError::ForeignOwner { found: 65534, .. }),
            "{err}"
        );
        assert!(p.exists(), "the foreign socket must be left in place");
    }

    #[test]
    fn connect_check_refuses_untrusted_owner() {
        let d = private_dir();
        let p = d.path().join("s.sock");
        let _l = bind_listener(&p, me(), 0o600).unwrap();
        check_connect_path(&p, &[me()]).unwrap();
        let err = check_connect_path(&p, &[me() + 4242]).unwrap_err();
        assert!(
            err.to_string().contains(&format!("owned by uid {}", me())),
            "{err}"
        );
    }
}
