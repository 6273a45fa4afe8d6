//! Staging and publication (docs/images.md, "Publication"; `image_ops_mu` in
//! the lock order: ARCHITECTURE.md, "Locks").
//!
//! Every new kernel or image is assembled in a fresh staging directory
//! (`kernels/.staging/<random>/`, `images/.staging/<random>/`) with no lock
//! held. Publication is the only step under `image_ops_mu`: re-check the
//! name, rename the staging directory to `<kind>s/<id>/` (same filesystem,
//! so atomic), insert the row. A [`Staging`] that is dropped unpublished
//! removes its directory, so a failure anywhere leaves nothing behind; a
//! crash leaves a staging directory that [`ImageService::reconcile`] removes
//! at the next start, or (between rename and insert) an id directory with no
//! row, which it removes too.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::layout::{INITRD_FILE, KERNEL_FILE, ROOTFS_FILE, WORK_SEED_FILE};
use crate::store::{ImageRow, ImageSource, KernelRow, KernelSource, NewImage, NewKernel, new_id};

use super::ImageService;
use super::error::ImageError;
use super::files::sha256_file;
use super::names::validate_name;

/// A staging directory, removed on drop unless it was published.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    published: bool,
}

impl Staging {
    /// Create a fresh, empty staging directory (mode 0700) under `parent`.
    pub(crate) fn create(parent: &Path) -> Result<Staging, ImageError> {
        let create_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::CreateDir { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(create_err(parent))?;
        let id = new_id()?;
        let dir = parent.join(id);
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(create_err(&dir))?;
        Ok(Staging {
            dir,
            published: false,
        })
    }

    /// The directory; put the files to publish here under their final names
    /// (`kernel`/`initrd` for a kernel, `rootfs.ext4`, optional
    /// `work-seed.ext4` and `initrd` for an image).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `path()/name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "removing staging directory (reconcile retries at the next start)"
            ),
        }
    }
}

/// A kernel to publish from a [`Staging`] that holds `kernel` (and maybe
/// `initrd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishKernel {
    pub name: String,
    /// Guest architecture, e.g. `x86_64`.
    pub arch: String,
    /// Lowercase hex SHA-256 of the staged `kernel`; computed if `None`.
    pub sha256: Option<String>,
    pub source: KernelSource,
}

/// An image to publish from a [`Staging`] that holds `rootfs.ext4` (and
/// maybe `work-seed.ext4`, `initrd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishImage {
    pub name: String,
    /// Id of an existing kernel.
    pub kernel_id: String,
    pub source: ImageSource,
    /// OCI reference, bundle URL, VM name, ...
    pub source_ref: Option<String>,
}

fn staged_file(staging: &Staging, name: &str, what: &'static str) -> Result<u64, ImageError> {
    let path = staging.file(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(m.len()),
        _ => Err(ImageError::StagedFileMissing { what, path }),
    }
}

fn staged_optional(staging: &Staging, name: &str) -> bool {
    std::fs::symlink_metadata(staging.file(name)).is_ok_and(|m| m.is_file())
}

impl ImageService {
    /// A new staging directory for an image (`images/.staging/<random>/`).
    pub fn stage_image(&self) -> Result<Staging, ImageError> {
        Staging::create(&self.layout.images_staging_dir())
    }

    /// A new staging directory for a kernel (`kernels/.staging/<random>/`).
    pub fn stage_kernel(&self) -> Result<Staging, ImageError> {
        Staging::create(&self.layout.kernels_staging_dir())
    }

    /// Publish a staged kernel as `kernels/<id>/` and record it. Blocking
    /// (call from `spawn_blocking`); holds `image_ops_mu` only for the
    /// name re-check, the rename and the insert. On error the staging
    /// directory is gone and no row exists.
    pub fn publish_kernel(
        &self,
        mut staging: Staging,
        k: PublishKernel,
    ) -> Result<KernelRow, ImageError> {
        validate_name("kernel", &k.name)?;
        staged_file(&staging, KERNEL_FILE, "kernel")?;
        let has_initrd = staged_optional(&staging, INITRD_FILE);
        let sha256 = match k.sha256 {
            Some(s) => s,
            None => sha256_file(&staging.file(KERNEL_FILE)).map_err(|source| {
                ImageError::SourceRead {
                    what: "staged kernel",
                    path: staging.file(KERNEL_FILE),
                    source,
                }
            })?,
        };
        let id = new_id()?;
        let row = NewKernel {
            name: k.name.clone(),
            arch: k.arch,
            kernel_path: self.layout.kernel_file(&id),
            initrd_path: has_initrd.then(|| self.layout.kernel_initrd(&id)),
            sha256,
            source: k.source,
        };
        let target = self.layout.kernel_dir(&id);
        let _atom = self.ops_lock();
        if self.store.get_kernel_by_name(&k.name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "kernel",
                name: k.name,
            });
        }
        rename(&staging.dir, &target)?;
        staging.published = true;
        match self
            .store
            .transaction(|tx| tx.insert_kernel_with_id(id, &row))
        {
            Ok(row) => Ok(row),
            Err(e) => {
                remove_published(&target);
                Err(e.into())
            }
        }
    }

    /// Publish a staged image as `images/<id>/` and record it. Blocking;
    /// same locking and failure guarantees as [`Self::publish_kernel`].
    /// Every image gets a work seed: when the staging directory holds none,
    /// one is built there first (module `seed`), before the lock.
    pub fn publish_image(
        &self,
        mut staging: Staging,
        i: PublishImage,
    ) -> Result<ImageRow, ImageError> {
        validate_name("image", &i.name)?;
        let size_bytes = staged_file(&staging, ROOTFS_FILE, "rootfs")?;
        if !staged_optional(&staging, WORK_SEED_FILE) {
            self.build_seed_in(staging.path())?;
        }
        let has_seed = staged_optional(&staging, WORK_SEED_FILE);
        let id = new_id()?;
        let row = NewImage {
            name: i.name.clone(),
            rootfs_path: self.layout.image_rootfs(&id),
            kernel_id: i.kernel_id,
            size_bytes,
            source: i.source,
            source_ref: i.source_ref,
            work_seed_path: has_seed.then(|| self.layout.image_work_seed(&id)),
        };
        let target = self.layout.image_dir(&id);
        let _atom = self.ops_lock();
        if self.store.get_image_by_name(&i.name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "image",
                name: i.name,
            });
        }
        rename(&staging.dir, &target)?;
        staging.published = true;
        crate::crashpoint::hit("publish.renamed");
        match self
            .store
            .transaction(|tx| tx.insert_image_with_id(id, &row))
        {
            Ok(row) => Ok(row),
            Err(e) => {
                remove_published(&target);
                Err(e.into())
            }
        }
    }

    /// Delete a kernel's row (refused while an image uses it) and its
    /// directory. Blocking.
    pub fn remove_kernel(&self, name: &str) -> Result<KernelRow, ImageError> {
        let (row, trash) = {
            let _atom = self.ops_lock();
            let k = self
                .store
                .get_kernel_by_name(name)?
                .ok_or_else(|| ImageError::NoKernel { name: name.into() })?;
            let row = self.store.delete_kernel(&k.id)?;
            let trash = self.to_trash(
                &self.layout.kernel_dir(&k.id),
                &self.layout.kernels_staging_dir(),
            );
            (row, trash)
        };
        empty_trash(trash)?;
        Ok(row)
    }

    /// Delete an image's row (refused while a VM uses it, naming the VMs)
    /// and its directory. Blocking.
    pub fn remove_image(&self, name: &str) -> Result<ImageRow, ImageError> {
        let (row, trash) = {
            let _atom = self.ops_lock();
            let i = self
                .store
                .get_image_by_name(name)?
                .ok_or_else(|| ImageError::NoImage { name: name.into() })?;
            let row = self.store.delete_image(&i.id)?;
            let trash = self.to_trash(
                &self.layout.image_dir(&i.id),
                &self.layout.images_staging_dir(),
            );
            (row, trash)
        };
        empty_trash(trash)?;
        Ok(row)
    }

    /// Move a published directory whose row is gone into staging, so the
    /// slow recursive delete runs outside the lock (and a crash during it
    /// leaves only staging, which reconcile clears). If the move fails the
    /// directory itself is deleted in place.
    fn to_trash(&self, dir: &Path, staging_parent: &Path) -> PathBuf {
        let Some(id) = dir.file_name() else {
            return dir.to_path_buf();
        };
        let trash = staging_parent.join(format!("rm-{}", id.to_string_lossy()));
        let moved = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(staging_parent)
            .and_then(|()| std::fs::rename(dir, &trash));
        match moved {
            Ok(()) => trash,
            Err(_) => dir.to_path_buf(),
        }
    }

    /// Remove what earlier runs left behind: every staging directory from
    /// before `started` (a publication or removal that a crash interrupted)
    /// and every `<id>/` directory under `images/` or `kernels/` that has no
    /// row (a crash between rename and insert). Best effort: returns what it
    /// removed and logs what it could not.
    pub fn reconcile(&self, started: SystemTime) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for staging in [
            self.layout.images_staging_dir(),
            self.layout.kernels_staging_dir(),
        ] {
            for entry in read_dir_paths(&staging) {
                let stale = std::fs::symlink_metadata(&entry)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < started);
                if stale && remove_logged(&entry) {
                    removed.push(entry);
                }
            }
        }
        let known = |what: &str| -> Option<Vec<String>> {
            let ids = match what {
                "images" => self
                    .store
                    .list_images()
                    .map(|v| v.into_iter().map(|r| r.id).collect()),
                _ => self
                    .store
                    .list_kernels()
                    .map(|v| v.into_iter().map(|r| r.id).collect()),
            };
            ids.map_err(|e| tracing::warn!(error = %e, "reconcile: listing {what}"))
                .ok()
        };
        for (what, dir) in [
            ("images", &self.layout.images_dir),
            ("kernels", &self.layout.kernels_dir),
        ] {
            let Some(ids) = known(what) else { continue };
            for entry in read_dir_paths(dir) {
                let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let looks_like_id = banger_proto::ids::is_id(name);
                if looks_like_id && !ids.iter().any(|id| id == name) && remove_logged(&entry) {
                    removed.push(entry);
                }
            }
        }
        for p in &removed {
            tracing::info!(path = %p.display(), "reconcile: removed leftover image state");
        }
        removed
    }
}

pub(super) fn rename(from: &Path, to: &Path) -> Result<(), ImageError> {
    std::fs::rename(from, to).map_err(|source| ImageError::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

/// Undo a rename whose insert failed: the row does not exist, so the
/// directory must not either.
fn remove_published(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "removing unpublished directory");
    }
}

fn empty_trash(dir: PathBuf) -> Result<(), ImageError> {
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImageError::Remove { path: dir, source }),
    }
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    }
}

fn remove_logged(path: &Path) -> bool {
    let res = if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match res {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "reconcile: removing");
            false
        }
    }
}
