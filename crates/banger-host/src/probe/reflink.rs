//! Reflink (`FICLONE`): can the filesystem under a directory share extents?
//!
//! Snapshot backends use it as the cheap copy-on-write path where
//! device-mapper is missing; without it they fall back to a sparse copy.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::{fs_magic, fs_type_name};

/// Bytes written to the source file: two 4 KiB blocks.
const PROBE_BYTES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReflinkSupport {
    /// `FICLONE` worked and the clone reads back identical.
    Supported,
    /// The filesystem refused: `EOPNOTSUPP`, `EXDEV`, `EINVAL` or `ENOTTY`.
    Unsupported { error: String },
    /// The probe itself failed (`stage`: "create", "write", "ficlone",
    /// "verify"); nothing is known about reflink.
    Failed { stage: String, error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflinkProbe {
    pub dir: PathBuf,
    /// Filesystem type of `dir` from `statfs` (`xfs`, `btrfs`, `ext4`, ...).
    pub fs_type: Option<String>,
    pub support: ReflinkSupport,
}

/// Create two scratch files in `dir`, fill one, `FICLONE` it into the other,
/// and read the clone back. Both files are removed whatever happens.
pub fn probe_reflink(dir: &Path) -> ReflinkProbe {
    ReflinkProbe {
        dir: dir.to_path_buf(),
        fs_type: fs_magic(dir).ok().map(fs_type_name),
        support: try_clone(dir),
    }
}

fn failed(stage: &str, error: impl std::fmt::Display) -> ReflinkSupport {
    ReflinkSupport::Failed {
        stage: stage.to_string(),
        error: error.to_string(),
    }
}

fn try_clone(dir: &Path) -> ReflinkSupport {
    let scratch = |role: &str| {
        tempfile::Builder::new()
            .prefix(&format!(".banger-reflink-{role}-"))
            .tempfile_in(dir)
    };
    // NamedTempFile deletes its file on drop, on every path out of here.
    let mut src = match scratch("src") {
        Ok(f) => f,
        Err(e) => {
            return failed(
                "create",
                format!("creating a file in {}: {e}", dir.display()),
            );
        }
    };
    let mut dst = match scratch("dst") {
        Ok(f) => f,
        Err(e) => {
            return failed(
                "create",
                format!("creating a file in {}: {e}", dir.display()),
            );
        }
    };
    // 0, 1, ..., 250, 0, 1, ...: a period no power of two divides.
    let pattern: Vec<u8> = (0..=250u8).cycle().take(PROBE_BYTES).collect();
    if let Err(e) = src.write_all(&pattern).and_then(|()| src.flush()) {
        return failed("write", format!("writing {}: {e}", src.path().display()));
    }
    match rustix::fs::ioctl_ficlone(dst.as_file(), src.as_file()) {
        Ok(()) => {}
        Err(e @ (Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY)) => {
            return ReflinkSupport::Unsupported {
                error: format!("FICLONE: {}", std::io::Error::from(e)),
            };
        }
        Err(e) => return failed("ficlone", format!("FICLONE: {}", std::io::Error::from(e))),
    }
    let mut back = Vec::with_capacity(PROBE_BYTES);
    let read = dst
        .seek(SeekFrom::Start(0))
        .and_then(|_| dst.read_to_end(&mut back));
    match read {
        Err(e) => failed("verify", format!("reading the clone back: {e}")),
        Ok(_) if back != pattern => failed(
            "verify",
            format!(
                "the clone read back {} bytes that differ from the source",
                back.len()
            ),
        ),
        Ok(_) => ReflinkSupport::Supported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Cmd, Runner, resolve};
    use std::ffi::OsStr;

    fn scratch_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".banger-reflink-"))
            .collect()
    }

    /// ext4, tmpfs and overlayfs have no FICLONE; xfs and btrfs do.
    fn expect_for(fs_type: &str) -> Option<bool> {
        match fs_type {
            "ext4" | "tmpfs" | "overlayfs" => Some(false),
            "xfs" | "btrfs" => Some(true),
            _ => None,
        }
    }

    fn assert_definite(p: &ReflinkProbe) {
        let fs = p.fs_type.as_deref().expect("statfs worked");
        let supported = match &p.support {
            ReflinkSupport::Supported => true,
            ReflinkSupport::Unsupported { error } => {
                assert!(error.starts_with("FICLONE: "), "{error}");
                false
            }
            ReflinkSupport::Failed { stage, error } => panic!("probe failed at {stage}: {error}"),
        };
        if let Some(expected) = expect_for(fs) {
            assert_eq!(supported, expected, "reflink on {fs}: {p:?}");
        }
    }

    #[test]
    fn definite_answer_in_tmp_and_in_target_dir() {
        let tmp = tempfile::tempdir().unwrap();
        // The test binary lives in the target dir: a local, persistent filesystem.
        let exe = std::env::current_exe().unwrap();
        let here = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        for dir in [tmp.path(), here.path()] {
            let p = probe_reflink(dir);
            eprintln!("{p:?}");
            assert_eq!(p.dir, dir);
            assert_definite(&p);
            assert!(
                scratch_files(dir).is_empty(),
                "scratch files left in {}",
                dir.display()
            );
        }
    }

    #[test]
    fn tmpfs_has_no_reflink() {
        let p = probe_reflink(Path::new("/dev/shm"));
        assert_eq!(
            p.fs_type.as_deref(),
            Some("tmpfs"),
            "/dev/shm is expected to be tmpfs"
        );
        assert!(
            matches!(p.support, ReflinkSupport::Unsupported { .. }),
            "{p:?}"
        );
        assert!(scratch_files(Path::new("/dev/shm")).is_empty());
    }

    #[test]
    fn missing_dir_fails_at_create() {
        let p = probe_reflink(Path::new("/nonexistent-banger-dir"));
        assert_eq!(p.fs_type, None);
        match p.support {
            ReflinkSupport::Failed { stage, error } => {
                assert_eq!(stage, "create");
                assert!(error.contains("No such file or directory"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A loop-mounted filesystem image, unmounted and detached on drop.
    struct LoopMount {
        _dir: tempfile::TempDir,
        mountpoint: PathBuf,
        mounted: bool,
    }

    impl LoopMount {
        fn new(mkfs: &str, package: &str, mkfs_args: &[&str]) -> LoopMount {
            assert!(
                rustix::process::geteuid().is_root(),
                "this test needs root (mount)"
            );
            assert!(
                resolve(OsStr::new(mkfs)).is_some(),
                "this test needs `{mkfs}`: apt-get install {package}"
            );
            let dir = tempfile::tempdir().unwrap();
            let image = dir.path().join("fs.img");
            let mountpoint = dir.path().join("mnt");
            std::fs::create_dir(&mountpoint).unwrap();
            // 300 MiB: mkfs.xfs refuses filesystems below that.
            std::fs::File::create(&image)
                .unwrap()
                .set_len(300 << 20)
                .unwrap();
            Runner
                .run(&Cmd::new(mkfs).args(mkfs_args).arg(&image))
                .unwrap_or_else(|e| panic!("{mkfs}: {}", super::super::tools::chain(&e)));
            let mut guard = LoopMount {
                _dir: dir,
                mountpoint,
                mounted: false,
            };
            // `mount -o loop` attaches a loop device and auto-detaches it on umount.
            Runner
                .run(
                    &Cmd::new("mount")
                        .args(["-o", "loop"])
                        .arg(&image)
                        .arg(&guard.mountpoint),
                )
                .unwrap_or_else(|e| panic!("mount: {}", super::super::tools::chain(&e)));
            guard.mounted = true;
            guard
        }
    }

    impl Drop for LoopMount {
        fn drop(&mut self) {
            if !self.mounted {
                return;
            }
            // Other tests in this process fork children; between fork and
            // exec a child briefly holds copies of our descriptors, so the
            // mount can be busy for a moment. Retry, then detach it lazily
            // (the loop device is released with the last reference), so a
            // parallel test run never leaves the mount behind.
            for _ in 0..50 {
                if Runner
                    .run(&Cmd::new("umount").arg(&self.mountpoint))
                    .is_ok()
                {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if let Err(e) = Runner.run(&Cmd::new("umount").arg("--lazy").arg(&self.mountpoint)) {
                eprintln!("cleanup: {e}");
            }
        }
    }

    #[test]
    fn xfs_image_supports_reflink() {
        let m = LoopMount::new("mkfs.xfs", "xfsprogs", &["-q", "-m", "reflink=1"]);
        let p = probe_reflink(&m.mountpoint);
        assert_eq!(p.fs_type.as_deref(), Some("xfs"));
        assert_eq!(p.support, ReflinkSupport::Supported);
        assert!(scratch_files(&m.mountpoint).is_empty());
    }

    #[test]
    fn btrfs_image_supports_reflink() {
        let m = LoopMount::new("mkfs.btrfs", "btrfs-progs", &["-q"]);
        let p = probe_reflink(&m.mountpoint);
        assert_eq!(p.fs_type.as_deref(), Some("btrfs"));
        assert_eq!(p.support, ReflinkSupport::Supported);
        assert!(scratch_files(&m.mountpoint).is_empty());
    }

    #[test]
    fn ext4_image_has_no_reflink() {
        let m = LoopMount::new("mkfs.ext4", "e2fsprogs", &["-q"]);
        let p = probe_reflink(&m.mountpoint);
        assert_eq!(p.fs_type.as_deref(), Some("ext4"));
        match p.support {
            ReflinkSupport::Unsupported { error } => {
                assert!(error.contains("not supported"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }
}
