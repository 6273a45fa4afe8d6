//! `banger kernel pull NAME`: download a catalog entry with verification and
//! turn it into files a VM boots.

use std::path::{Path, PathBuf};

use crate::Progress;
use crate::catalog::{CatalogEntry, KernelKind};
use crate::fetch::{FetchError, fetch_verified};
use crate::kernel::{KernelError, kernel_from_deb};

/// A pulled kernel, in the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledKernel {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub kind: KernelKind,
    /// Kernel release for `deb` entries (from the package).
    pub version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("downloading kernel {name}")]
    Fetch {
        name: String,
        #[source]
        source: FetchError,
    },
    #[error("building kernel {name} from its package")]
    Build {
        name: String,
        #[source]
        source: Box<KernelError>,
    },
    #[error("preparing {}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Download `entry` into `out_dir` and make it bootable: a `deb` becomes
/// `vmlinuz-<version>` + `initrd.img-<version>` (the package itself is
/// discarded), a `bzimage`/`vmlinux` is stored as `kernel` (+ `initrd`).
/// Every file appears only verified and complete.
pub fn pull_kernel(
    entry: &CatalogEntry,
    out_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PulledKernel, PullError> {
    let fetch_err = |source| PullError::Fetch {
        name: entry.name.clone(),
        source,
    };
    progress(Progress::Step(format!("downloading {}", entry.url)));
    match entry.kind {
        KernelKind::Deb => {
            let tmp = tempfile::Builder::new()
                .prefix(".banger-pull-")
                .tempdir_in(out_dir)
                .map_err(|source| PullError::Dir {
                    dir: out_dir.to_path_buf(),
                    source,
                })?;
            let deb = tmp.path().join("kernel.deb");
            fetch_verified(&entry.url, &entry.sha256, &deb, progress).map_err(fetch_err)?;
            progress(Progress::Step("building the initramfs".into()));
            let built = kernel_from_deb(&deb, out_dir).map_err(|source| PullError::Build {
                name: entry.name.clone(),
                source: Box::new(source),
            })?;
            Ok(PulledKernel {
                kernel: built.kernel,
                initrd: Some(built.initrd),
                kind: entry.kind,
                version: Some(built.version),
            })
        }
        KernelKind::Bzimage | KernelKind::Vmlinux => {
            let kernel = out_dir.join("kernel");
            fetch_verified(&entry.url, &entry.sha256, &kernel, progress).map_err(fetch_err)?;
            let initrd = match &entry.initrd {
                Some(i) => {
                    progress(Progress::Step(format!("downloading {}", i.url)));
                    let p = out_dir.join("initrd");
                    Some(fetch_verified(&i.url, &i.sha256, &p, progress).map_err(fetch_err)?)
                }
                None => None,
            };
            Ok(PulledKernel {
                kernel,
                initrd,
                kind: entry.kind,
                version: None,
            })
        }
    }
}
