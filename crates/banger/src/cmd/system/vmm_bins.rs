//! Which VMM binaries an install records (`[vmm]` in the install metadata):
//! the helper launches exactly these and bangerd checks the same ones, so
//! neither looks a VMM up on its own `PATH`.
//!
//! Chosen by root at install time: `--qemu-bin`/`--firecracker-bin`, else
//! the program found on the runner's `PATH`
//! ([`banger_host::runner::CHILD_PATH`]); a VMM that is neither given nor
//! found is recorded as absent (a warning says so). A recorded binary must
//! be an absolute path to an executable regular file that only root can
//! change (root-owned, not group/other-writable, nor its directories), and
//! not below `/home`, `/root` or `/run/user`, which the helper's unit hides
//! (`ProtectHome=yes`), nor `/tmp` or `/var/tmp`, of which it sees a private
//! copy (`PrivateTmp=yes`) that the VMMs' uid could write. What is recorded
//! is the canonical path (symlinks resolved), the one whose directories
//! were checked: a symlink on the way, which someone else might be able to
//! repoint later, is never re-resolved by the helper.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use banger_proto::install::InstallVmm;

/// Directories the helper's unit cannot see, or sees a private copy of.
const HIDDEN: &[&str] = &["/home", "/root", "/run/user", "/tmp", "/var/tmp"];

/// The default program names looked up on `PATH` when no flag is given.
pub const QEMU: &str = "qemu-system-x86_64";
pub const FIRECRACKER: &str = "firecracker";

#[derive(Debug, thiserror::Error)]
pub enum VmmBinError {
    #[error("--{flag} {}: must be an absolute path", path.display())]
    Relative { flag: &'static str, path: PathBuf },
    #[error("--{flag} {}: cannot inspect it", path.display())]
    Inspect {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--{flag} {}: not an executable regular file", path.display())]
    NotExecutable { flag: &'static str, path: PathBuf },
    #[error(
        "--{flag} {}: {} is {why}; the VMM binary the root helper launches must be changeable by root only",
        path.display(), at.display()
    )]
    Unsafe {
        flag: &'static str,
        path: PathBuf,
        at: PathBuf,
        why: String,
    },
    #[error(
        "--{flag} {}: below {hidden}, which bangerd-root.service cannot see (ProtectHome=yes) or sees a private copy of (PrivateTmp=yes); install it elsewhere, e.g. /usr/local/bin",
        path.display()
    )]
    Hidden {
        flag: &'static str,
        path: PathBuf,
        hidden: &'static str,
    },
}

/// What the command line gave.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub qemu_bin: Option<PathBuf>,
    pub firecracker_bin: Option<PathBuf>,
}

/// The binaries to record, and a warning per VMM left out.
pub fn choose(
    given: &Given,
    lookup: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(InstallVmm, Vec<String>), VmmBinError> {
    let mut warnings = Vec::new();
    let mut pick = |flag: &'static str, given: &Option<PathBuf>, name: &str| {
        let path = match given {
            Some(p) => p.clone(),
            None => match lookup(name) {
                Some(p) => p,
                None => {
                    warnings.push(format!(
                        "{name} was not found on PATH ({}): VMs cannot use it until `banger system install --{flag} PATH` records one",
                        banger_host::runner::CHILD_PATH
                    ));
                    return Ok(None);
                }
            },
        };
        check(flag, &path).map(Some)
    };
    let qemu_bin = pick("qemu-bin", &given.qemu_bin, QEMU)?;
    let firecracker_bin = pick("firecracker-bin", &given.firecracker_bin, FIRECRACKER)?;
    Ok((
        InstallVmm {
            qemu_bin,
            firecracker_bin,
        },
        warnings,
    ))
}

/// The real lookup: the runner's `PATH`, made absolute.
pub fn on_path(name: &str) -> Option<PathBuf> {
    banger_host::runner::resolve(name.as_ref()).and_then(|p| std::path::absolute(p).ok())
}

/// `path` is fit to be launched by the root helper: its canonical form,
/// which is what gets recorded.
pub fn check(flag: &'static str, path: &Path) -> Result<PathBuf, VmmBinError> {
    if !path.is_absolute() {
        return Err(VmmBinError::Relative {
            flag,
            path: path.to_path_buf(),
        });
    }
    // Lexically: the helper sees the path as written.
    if let Some(hidden) = HIDDEN.iter().copied().find(|h| path.starts_with(h)) {
        return Err(VmmBinError::Hidden {
            flag,
            path: path.to_path_buf(),
            hidden,
        });
    }
    let inspect = |p: &Path| {
        std::fs::metadata(p).map_err(|source| VmmBinError::Inspect {
            flag,
            path: path.to_path_buf(),
            source,
        })
    };
    let m = inspect(path)?;
    if !m.is_file() || m.mode() & 0o111 == 0 {
        return Err(VmmBinError::NotExecutable {
            flag,
            path: path.to_path_buf(),
        });
    }
    // The file and every directory above it (symlinks resolved: what is
    // executed is the target).
    let real = std::fs::canonicalize(path).map_err(|source| VmmBinError::Inspect {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    // The target may lie where the lexical path did not.
    if let Some(hidden) = HIDDEN.iter().copied().find(|h| real.starts_with(h)) {
        return Err(VmmBinError::Hidden {
            flag,
            path: path.to_path_buf(),
            hidden,
        });
    }
    for at in real.ancestors() {
        let m = inspect(at)?;
        let why = if m.uid() != 0 {
            Some(format!("owned by uid {}", m.uid()))
        } else if m.mode() & 0o022 != 0 {
            Some(format!(
                "writable by group or others (mode {:04o})",
                m.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(VmmBinError::Unsafe {
                flag,
                path: path.to_path_buf(),
                at: at.to_path_buf(),
                why,
            });
        }
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_owned_exe(dir: &Path, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(name);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// A private root-owned directory under /run (the tests run as root;
    /// /tmp and /var/tmp are refused as the helper cannot use them).
    fn root_dir() -> tempfile::TempDir {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests need root (root-owned files)"
        );
        tempfile::tempdir_in("/run").unwrap()
    }

    #[test]
    fn flags_win_then_path_lookup_then_absent_with_a_warning() {
        let dir = root_dir();
        let fc = root_owned_exe(dir.path(), "fc", 0o755);
        let qemu = root_owned_exe(dir.path(), "q", 0o755);
        let given = Given {
            qemu_bin: None,
            firecracker_bin: Some(fc.clone()),
        };
        let q = qemu.clone();
        let lookup = move |name: &str| (name == QEMU).then(|| q.clone());
        let (vmm, warnings) = choose(&given, &lookup).unwrap();
        assert_eq!(vmm.firecracker_bin.as_deref(), Some(fc.as_path()));
        assert_eq!(vmm.qemu_bin.as_deref(), Some(qemu.as_path()));
        assert!(warnings.is_empty(), "{warnings:?}");

        let (vmm, warnings) = choose(&Given::default(), &|_| None).unwrap();
        assert_eq!(vmm, InstallVmm::default());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[1].contains("--firecracker-bin"), "{warnings:?}");
    }

    #[test]
    fn unfit_binaries_are_refused_naming_why() {
        let dir = root_dir();
        let ok = root_owned_exe(dir.path(), "ok", 0o755);
        assert_eq!(check("firecracker-bin", &ok).unwrap(), ok);
        // A symlink is recorded as its target, whose directories were checked.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(check("firecracker-bin", &link).unwrap(), ok);
        // The helper sees a private /tmp: never recorded there, lexically or
        // through a symlink.
        let in_tmp = tempfile::tempdir_in("/tmp").unwrap();
        let tmp_exe = root_owned_exe(in_tmp.path(), "fc", 0o755);
        let via = dir.path().join("via-tmp");
        std::os::unix::fs::symlink(&tmp_exe, &via).unwrap();
        let cases: Vec<(PathBuf, &str)> = vec![
            (tmp_exe.clone(), "PrivateTmp"),
            (via.clone(), "PrivateTmp"),
            (PathBuf::from("bin/firecracker"), "absolute"),
            (PathBuf::from("/home/dev/firecracker"), "ProtectHome"),
            (PathBuf::from("/root/firecracker"), "ProtectHome"),
            (dir.path().join("missing"), "cannot inspect"),
            (
                root_owned_exe(dir.path(), "noexec", 0o644),
                "not an executable",
            ),
            (dir.path().to_path_buf(), "not an executable"),
            (
                root_owned_exe(dir.path(), "open", 0o777),
                "writable by group or others",
            ),
        ];
        for (path, needle) in cases {
            let e = check("firecracker-bin", &path).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(needle), "{}: {msg}", path.display());
            assert!(msg.starts_with("--firecracker-bin"), "{msg}");
        }
        let foreign = root_owned_exe(dir.path(), "foreign", 0o755);
        std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
        let msg = check("qemu-bin", &foreign).unwrap_err().to_string();
        assert!(msg.contains("owned by uid 65534"), "{msg}");
    }
}
