//! The local operations: `kernel import|ls`, `image register|ls|show`, and
//! the mapping of rows to what the RPC reports.

use banger_proto::image::{
    ImageInfo, ImageOrigin, ImportKernel, KernelInfo, KernelOrigin, RegisterImage,
};

use crate::layout::{INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use crate::server::ProgressSink;
use crate::store::{ImageRow, ImageSource, KernelRow, KernelSource};

use super::ImageService;
use super::error::ImageError;
use super::files::{copy_to, fsck, open_source, sniff_ext4, sniff_kernel};
use super::names::{default_kernel_name, validate_name};
use super::publish::{PublishImage, PublishKernel};

impl ImageService {
    /// `banger kernel import PATH [--initrd I] [--name N]`: check that PATH
    /// looks like a kernel, copy it (hashing as it goes) and the initrd into
    /// staging, publish.
    pub fn import_kernel(
        &self,
        r: &ImportKernel,
        progress: &ProgressSink,
    ) -> Result<KernelInfo, ImageError> {
        if r.path.extension().is_some_and(|e| e == "deb") {
            return self.import_kernel_deb(r, progress);
        }
        let name = match &r.name {
            Some(n) => n.clone(),
            None => default_kernel_name(&r.path).ok_or_else(|| ImageError::NoDefaultName {
                path: r.path.clone(),
            })?,
        };
        validate_name("kernel", &name)?;
        // Early refusal of a taken name saves the copy; publication checks
        // again under the lock.
        if self.store.get_kernel_by_name(&name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "kernel",
                name,
            });
        }
        let mut kernel = open_source("kernel", &r.path)?;
        let arch = sniff_kernel(&mut kernel)?;
        let mut initrd = r
            .initrd
            .as_deref()
            .map(|p| open_source("initrd", p))
            .transpose()?;

        let staging = self.stage_kernel()?;
        let copied = copy_to(
            &mut kernel,
            &staging.file(KERNEL_FILE),
            true,
            "copy",
            progress,
        )?;
        if let Some(initrd) = initrd.as_mut() {
            copy_to(initrd, &staging.file(INITRD_FILE), false, "copy", progress)?;
        }
        let row = self.publish_kernel(
            staging,
            PublishKernel {
                name,
                arch: arch.to_owned(),
                sha256: copied.sha256,
                source: KernelSource::Import,
            },
        )?;
        Ok(kernel_info(row, Vec::new()))
    }

    /// `banger kernel import linux-image-….deb`: take the kernel out of the
    /// Debian package and build an initramfs that loads the virtio modules
    /// it lacks built in (`banger-imagebuild`), then import both. The name
    /// defaults to the kernel release (`6.1.0-56-cloud-amd64`).
    fn import_kernel_deb(
        &self,
        r: &ImportKernel,
        progress: &ProgressSink,
    ) -> Result<KernelInfo, ImageError> {
        if r.initrd.is_some() {
            return Err(ImageError::Build {
                what: format!(
                    "{}: a .deb brings its own initramfs; drop --initrd",
                    r.path.display()
                ),
                detail: None,
            });
        }
        // Opening first gives the usual not-found / permission errors.
        drop(open_source("kernel package", &r.path)?);
        progress.emit_blocking(banger_proto::rpc::Progress {
            stage: "deb".into(),
            message: format!("unpacking {} and building its initramfs", r.path.display()),
            done: 0,
            total: None,
        });
        let scratch = self.layout.kernels_staging_dir();
        std::fs::create_dir_all(&scratch).map_err(|e| ImageError::Build {
            what: format!("creating {}", scratch.display()),
            detail: Some(e.to_string()),
        })?;
        let tmp = tempfile::Builder::new()
            .prefix(".deb-")
            .tempdir_in(&scratch)
            .map_err(|e| ImageError::Build {
                what: "creating a scratch directory for the package".into(),
                detail: Some(e.to_string()),
            })?;
        let built = banger_imagebuild::kernel_from_deb(&r.path, tmp.path()).map_err(|e| {
            ImageError::Build {
                what: format!("taking the kernel out of {}", r.path.display()),
                detail: Some(banger_proto::error::chain(&e).join(": ")),
            }
        })?;
        let inner = ImportKernel {
            path: built.kernel.clone(),
            initrd: Some(built.initrd.clone()),
            name: Some(r.name.clone().unwrap_or_else(|| built.version.clone())),
        };
        self.import_kernel(&inner, progress)
    }

    /// `banger image register NAME --rootfs F --kernel K [--initrd I]`:
    /// copy (or reflink) the rootfs into staging, `e2fsck -fn` the copy,
    /// publish.
    pub fn register(
        &self,
        r: &RegisterImage,
        progress: &ProgressSink,
    ) -> Result<ImageInfo, ImageError> {
        validate_name("image", &r.name)?;
        if self.store.get_image_by_name(&r.name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "image",
                name: r.name.clone(),
            });
        }
        let kernel =
            self.store
                .get_kernel_by_name(&r.kernel)?
                .ok_or_else(|| ImageError::NoKernel {
                    name: r.kernel.clone(),
                })?;
        let mut rootfs = open_source("rootfs", &r.rootfs)?;
        sniff_ext4(&mut rootfs)?;
        let mut initrd = r
            .initrd
            .as_deref()
            .map(|p| open_source("initrd", p))
            .transpose()?;

        let staging = self.stage_image()?;
        let staged_rootfs = staging.file(ROOTFS_FILE);
        copy_to(&mut rootfs, &staged_rootfs, false, "copy", progress)?;
        progress.emit_blocking(banger_proto::rpc::Progress {
            stage: "fsck".into(),
            message: format!("checking {} (e2fsck -fn)", r.rootfs.display()),
            done: 0,
            total: None,
        });
        fsck(&self.runner, &staged_rootfs, &r.rootfs)?;
        if let Some(initrd) = initrd.as_mut() {
            copy_to(initrd, &staging.file(INITRD_FILE), false, "copy", progress)?;
        }
        let row = self.publish_image(
            staging,
            PublishImage {
                name: r.name.clone(),
                kernel_id: kernel.id.clone(),
                source: ImageSource::Register,
                source_ref: Some(r.rootfs.display().to_string()),
            },
        )?;
        self.image_info(row, Some(&kernel))
    }

    pub fn list_kernels(&self) -> Result<Vec<KernelInfo>, ImageError> {
        let images = self.store.list_images()?;
        Ok(self
            .store
            .list_kernels()?
            .into_iter()
            .map(|k| {
                let users = images
                    .iter()
                    .filter(|i| i.kernel_id == k.id)
                    .map(|i| i.name.clone())
                    .collect();
                kernel_info(k, users)
            })
            .collect())
    }

    pub fn list_images(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let kernels = self.store.list_kernels()?;
        let vms = self.store.list_vms()?;
        self.store
            .list_images()?
            .into_iter()
            .map(|i| {
                let kernel = kernels.iter().find(|k| k.id == i.kernel_id);
                let users = vms
                    .iter()
                    .filter(|v| v.image_id == i.id)
                    .map(|v| v.name.clone())
                    .collect();
                Ok(self.info_with(i, kernel, users))
            })
            .collect()
    }

    pub fn show_image(&self, name: &str) -> Result<ImageInfo, ImageError> {
        let row = self
            .store
            .get_image_by_name(name)?
            .ok_or_else(|| ImageError::NoImage { name: name.into() })?;
        self.image_info(row, None)
    }

    /// The report of one image; `kernel` saves a lookup when the caller has
    /// it.
    pub(super) fn image_info(
        &self,
        row: ImageRow,
        kernel: Option<&KernelRow>,
    ) -> Result<ImageInfo, ImageError> {
        let looked_up;
        let kernel = match kernel {
            Some(k) => Some(k),
            None => {
                looked_up = self.store.get_kernel(&row.kernel_id)?;
                looked_up.as_ref()
            }
        };
        let users = self
            .store
            .list_vms()?
            .into_iter()
            .filter(|v| v.image_id == row.id)
            .map(|v| v.name)
            .collect();
        Ok(self.info_with(row, kernel, users))
    }

    fn info_with(
        &self,
        row: ImageRow,
        kernel: Option<&KernelRow>,
        users: Vec<String>,
    ) -> ImageInfo {
        let own_initrd = self.layout.image_initrd(&row.id);
        let initrd = if own_initrd.is_file() {
            Some(own_initrd)
        } else {
            kernel.and_then(|k| k.initrd_path.clone())
        };
        ImageInfo {
            kernel: kernel.map_or_else(|| "?".to_owned(), |k| k.name.clone()),
            kernel_id: row.kernel_id,
            rootfs: row.rootfs_path,
            initrd,
            // Refresh can give an image recorded without one a seed.
            work_seed: row.work_seed_path.or_else(|| {
                let seed = self.layout.image_work_seed(&row.id);
                seed.is_file().then_some(seed)
            }),
            size_bytes: row.size_bytes,
            source: image_origin(row.source),
            source_ref: row.source_ref,
            created_at: row.created_at,
            used_by: users,
            id: row.id,
            name: row.name,
        }
    }
}

pub(super) fn kernel_info(k: KernelRow, users: Vec<String>) -> KernelInfo {
    KernelInfo {
        id: k.id,
        name: k.name,
        arch: k.arch,
        kernel: k.kernel_path,
        initrd: k.initrd_path,
        sha256: k.sha256,
        source: match k.source {
            KernelSource::Import => KernelOrigin::Import,
            KernelSource::Pull => KernelOrigin::Pull,
            KernelSource::Bundle => KernelOrigin::Bundle,
        },
        created_at: k.created_at,
        used_by: users,
    }
}

fn image_origin(s: ImageSource) -> ImageOrigin {
    match s {
        ImageSource::Register => ImageOrigin::Register,
        ImageSource::Oci => ImageOrigin::Oci,
        ImageSource::Bundle => ImageOrigin::Bundle,
        ImageSource::Build => ImageOrigin::Build,
        ImageSource::Promote => ImageOrigin::Promote,
    }
}

impl ImageService {
    /// `banger image promote VM NAME`: a stopped VM's root disk becomes an
    /// image booting the same kernel (and keeping its image's work seed).
    /// The caller (VmService) holds the VM's lock and checked its state.
    pub fn promote(
        &self,
        vm_name: &str,
        root_disk: &std::path::Path,
        from_image: &ImageRow,
        name: &str,
        progress: &ProgressSink,
    ) -> Result<ImageInfo, ImageError> {
        validate_name("image", name)?;
        if self.store.get_image_by_name(name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "image",
                name: name.to_string(),
            });
        }
        let mut rootfs = open_source("root disk", root_disk)?;
        sniff_ext4(&mut rootfs)?;
        let staging = self.stage_image()?;
        let staged = staging.file(ROOTFS_FILE);
        copy_to(&mut rootfs, &staged, false, "copy", progress)?;
        fsck(&self.runner, &staged, root_disk)?;
        // The source image's seed and its input hash come along; without
        // a seed, publication builds one.
        let seed = self.layout.image_work_seed(&from_image.id);
        if seed.is_file() {
            let mut src = open_source("work seed", &seed)?;
            copy_to(
                &mut src,
                &staging.file(crate::layout::WORK_SEED_FILE),
                false,
                "copy",
                progress,
            )?;
            let hash = self
                .layout
                .image_dir(&from_image.id)
                .join(super::seed::WORK_SEED_HASH_FILE);
            if let Ok(mut src) = open_source("work seed hash", &hash) {
                copy_to(
                    &mut src,
                    &staging.file(super::seed::WORK_SEED_HASH_FILE),
                    false,
                    "copy",
                    progress,
                )?;
            }
        }
        let row = self.publish_image(
            staging,
            PublishImage {
                name: name.to_string(),
                kernel_id: from_image.kernel_id.clone(),
                source: ImageSource::Promote,
                source_ref: Some(vm_name.to_string()),
            },
        )?;
        self.image_info(row, None)
    }
}
