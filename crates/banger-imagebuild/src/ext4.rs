//! ext4 images from directory trees, with e2fsprogs only: `mkfs.ext4 -d`
//! packs a tree (ownership and modes as they are in the tree), `debugfs`
//! adjusts inodes, `e2fsck -fn` checks. No mounts, no loop devices.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, RunError, Runner};

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("measuring the tree {}", path.display())]
    Measure {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the image file {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("packing {} into {}", tree.display(), image.display())]
    Mkfs {
        tree: PathBuf,
        image: PathBuf,
        #[source]
        source: RunError,
    },
    #[error("checking {}", image.display())]
    Fsck {
        image: PathBuf,
        #[source]
        source: RunError,
    },
    #[error("editing {} with debugfs", image.display())]
    Debugfs {
        image: PathBuf,
        #[source]
        source: RunError,
    },
    #[error("debugfs reported errors editing {}: {errors}", image.display())]
    DebugfsErrors { image: PathBuf, errors: String },
}

/// Bytes the tree occupies on disk (allocated blocks, each inode counted
/// once per link) plus a small per-entry allowance for ext4 metadata.
pub fn tree_usage(dir: &Path) -> Result<u64, Ext4Error> {
    let err = |source| Ext4Error::Measure {
        path: dir.to_path_buf(),
        source,
    };
    let mut total = 0u64;
    for e in std::fs::read_dir(dir).map_err(err)? {
        let e = e.map_err(err)?;
        let md = std::fs::symlink_metadata(e.path()).map_err(err)?;
        total += md.blocks() * 512 + 256;
        if md.is_dir() {
            total += tree_usage(&e.path())?;
        }
    }
    Ok(total)
}

/// Image size for a tree: content plus a quarter plus `headroom`, rounded up
/// to 64 MiB.
pub fn image_size(usage: u64, headroom: u64) -> u64 {
    let raw = usage + usage / 4 + headroom;
    raw.div_ceil(64 * MIB) * 64 * MIB
}

/// Pack `tree` into a new sparse ext4 image of `size` bytes at `image`.
pub fn mkfs_from_tree(tree: &Path, image: &Path, label: &str, size: u64) -> Result<(), Ext4Error> {
    let create = |source| Ext4Error::Create {
        path: image.to_path_buf(),
        source,
    };
    let f = std::fs::File::create(image).map_err(create)?;
    f.set_len(size).map_err(create)?;
    drop(f);
    Runner
        .run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F", "-L", label, "-d"])
                .arg(tree)
                .arg(image)
                .timeout(Duration::from_secs(900)),
        )
        .map_err(|source| Ext4Error::Mkfs {
            tree: tree.to_path_buf(),
            image: image.to_path_buf(),
            source,
        })?;
    Ok(())
}

/// `e2fsck -fn`: a full read-only check; any finding is an error.
pub fn fsck(image: &Path) -> Result<(), Ext4Error> {
    Runner
        .run(
            &Cmd::new("e2fsck")
                .arg("-fn")
                .arg(image)
                .timeout(Duration::from_secs(600)),
        )
        .map(|_| ())
        .map_err(|source| Ext4Error::Fsck {
            image: image.to_path_buf(),
            source,
        })
}

/// Run debugfs requests (one per line) against `image`, writable. debugfs
/// exits 0 even when a request fails, so its stderr is checked too.
pub fn debugfs_write(image: &Path, requests: &str) -> Result<String, Ext4Error> {
    let out = Runner
        .run(
            &Cmd::new("debugfs")
                .args(["-w", "-f", "-"])
                .arg(image)
                .stdin(requests.as_bytes().to_vec())
                .timeout(Duration::from_secs(300)),
        )
        .map_err(|source| Ext4Error::Debugfs {
            image: image.to_path_buf(),
            source,
        })?;
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !errors.is_empty() {
        return Err(Ext4Error::DebugfsErrors {
            image: image.to_path_buf(),
            errors: errors.join("; "),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_with_headroom() {
        assert_eq!(image_size(0, 0), 0);
        assert_eq!(image_size(1, 0), 64 * MIB);
        assert_eq!(image_size(400 * MIB, 256 * MIB), 768 * MIB);
    }
}
