//! `banger kernel pull NAME [--catalog FILE]`: a kernel of the catalog
//! (`banger-imagebuild::catalog`: the one shipped with banger, with the
//! entries of `--catalog FILE` replacing same-named ones or adding to it),
//! downloaded into a kernel staging directory while its sha256 is checked
//! (`banger-imagebuild::pull`), then published under the entry's name like
//! any imported kernel. A mismatch, an unknown entry or a taken name ends
//! with nothing published and the staging directory gone.

use std::io::Read as _;

use banger_imagebuild::Catalog;
use banger_proto::image::{KernelInfo, PullKernel};

use crate::layout::{INITRD_FILE, KERNEL_FILE};
use crate::server::ProgressSink;
use crate::store::KernelSource;

use super::ImageService;
use super::error::ImageError;
use super::files::{open_source, sniff_kernel};
use super::names::validate_name;
use super::publish::{PublishKernel, rename};

/// Largest catalog file read.
const MAX_CATALOG: u64 = 1 << 20;

impl ImageService {
    /// The shipped catalog, overridden by `path` when given.
    fn catalog(&self, path: Option<&std::path::Path>) -> Result<Catalog, ImageError> {
        let builtin = Catalog::builtin();
        let Some(path) = path else {
            return Ok(builtin);
        };
        let src = open_source("kernel catalog", path)?;
        let mut text = String::new();
        src.file
            .take(MAX_CATALOG)
            .read_to_string(&mut text)
            .map_err(|source| ImageError::SourceRead {
                what: "kernel catalog",
                path: path.to_path_buf(),
                source,
            })?;
        let over = Catalog::parse(&text, &path.display().to_string())
            .map_err(|e| ImageError::Catalog(Box::new(e)))?;
        Ok(builtin.overridden_by(over))
    }

    pub fn pull_catalog_kernel(
        &self,
        r: &PullKernel,
        progress: &ProgressSink,
    ) -> Result<KernelInfo, ImageError> {
        let catalog = self.catalog(r.catalog.as_deref())?;
        let entry = catalog
            .get(&r.name)
            .cloned()
            .ok_or_else(|| ImageError::NotInCatalog {
                name: r.name.clone(),
                known: catalog.entries.iter().map(|e| e.name.clone()).collect(),
            })?;
        validate_name("kernel", &entry.name)?;
        if self.store.get_kernel_by_name(&entry.name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "kernel",
                name: entry.name,
            });
        }
        let staging = self.stage_kernel()?;
        let scratch = staging.path().join("download");
        std::fs::create_dir(&scratch).map_err(|source| ImageError::CreateDir {
            path: scratch.clone(),
            source,
        })?;
        let pulled = banger_imagebuild::pull_kernel(
            &entry,
            &scratch,
            &mut super::forward_progress(progress, "pull", ""),
        )
        .map_err(|source| ImageError::KernelPull {
            name: entry.name.clone(),
            source: Box::new(source),
        })?;
        rename(&pulled.kernel, &staging.file(KERNEL_FILE))?;
        if let Some(initrd) = &pulled.initrd {
            rename(initrd, &staging.file(INITRD_FILE))?;
        }
        std::fs::remove_dir_all(&scratch).map_err(|source| ImageError::Remove {
            path: scratch.clone(),
            source,
        })?;
        let mut kernel = open_source("kernel", &staging.file(KERNEL_FILE))?;
        let arch = sniff_kernel(&mut kernel)?;
        if arch != entry.arch {
            return Err(ImageError::Build {
                what: format!(
                    "kernel {}: the catalog says {}, but the downloaded kernel is {arch}",
                    entry.name, entry.arch
                ),
                detail: None,
            });
        }
        let row = self.publish_kernel(
            staging,
            PublishKernel {
                name: entry.name,
                arch: arch.to_owned(),
                sha256: None,
                source: KernelSource::Pull,
            },
        )?;
        Ok(super::ops::kernel_info(row, Vec::new()))
    }
}
