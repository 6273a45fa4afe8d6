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
            work_seed: row.work_seed_path,
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
