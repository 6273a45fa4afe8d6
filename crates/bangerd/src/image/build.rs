//! `banger image build debian`: the default image, built by
//! `banger-imagebuild` (mmdebstrap, kernel + initramfs from the Debian
//! kernel package, the guest contract baked in) into its content-keyed cache,
//! then published like any other image: kernel first (reused when the same
//! build already published it), then the root filesystem; publication adds the work seed
//! holding banger's public key (module `seed`).
//!
//! mmdebstrap needs root: in system mode (unprivileged daemon) the build is
//! refused with that reason.

use std::path::PathBuf;

use banger_imagebuild::debian::{BuiltImage, DebianOptions, build_debian};
use banger_proto::image::{BuildImage, ImageInfo};
use banger_proto::rpc::Progress;

use crate::layout::{INITRD_FILE, KERNEL_FILE, Mode, ROOTFS_FILE};
use crate::server::ProgressSink;
use crate::store::{ImageSource, KernelSource};

use super::ImageService;
use super::error::ImageError;
use super::files::{copy_to, fsck, open_source, sniff_ext4, sniff_kernel};
use super::names::validate_name;
use super::publish::{PublishImage, PublishKernel};

/// The suite `image build debian` uses unless told otherwise.
pub const DEFAULT_SUITE: &str = "bookworm";

impl ImageService {
    /// Where built kernels and root filesystems are cached: `$BANGER_CACHE_DIR`,
    /// else `/var/cache/banger` in dev mode and `<state>/cache` in system mode.
    fn build_cache(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os("BANGER_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        match self.layout.mode {
            Mode::Dev => PathBuf::from("/var/cache/banger"),
            Mode::System => self.layout.state_dir.join("cache"),
        }
    }

    pub fn build(&self, b: &BuildImage, progress: &ProgressSink) -> Result<ImageInfo, ImageError> {
        if b.distro != "debian" {
            return Err(ImageError::Build {
                what: format!(
                    "unknown distribution {:?}; `banger image build` knows `debian`",
                    b.distro
                ),
                detail: None,
            });
        }
        let suite = b.suite.clone().unwrap_or_else(|| DEFAULT_SUITE.to_string());
        let name = b.name.clone().unwrap_or_else(|| {
            if suite == DEFAULT_SUITE {
                "debian".to_string()
            } else {
                format!("debian-{suite}")
            }
        });
        validate_name("image", &name)?;
        if self.store.get_image_by_name(&name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "image",
                name,
            });
        }
        let mut opts = DebianOptions::new(self.build_cache());
        opts.suite = suite.clone();
        let emit = |stage: &str, message: String, done: u64, total: Option<u64>| {
            progress.emit_blocking(Progress {
                stage: stage.into(),
                message,
                done,
                total,
            })
        };
        let built = build_debian(&opts, &mut |p| match p {
            banger_imagebuild::Progress::Step(s) => emit("build", s, 0, None),
            banger_imagebuild::Progress::Bytes { done, total } => {
                emit("download", "downloading".into(), done, total)
            }
        })
        .map_err(|e| ImageError::Build {
            what: format!("building the Debian {suite} image"),
            detail: Some(banger_proto::error::chain(&e).join(": ")),
        })?;
        let kernel_id = self.publish_built_kernel(&built, &suite, progress)?;

        emit("copy", "publishing the root filesystem".into(), 0, None);
        let mut rootfs = open_source("rootfs", &built.rootfs_ext4)?;
        sniff_ext4(&mut rootfs)?;
        let staging = self.stage_image()?;
        let staged = staging.file(ROOTFS_FILE);
        copy_to(&mut rootfs, &staged, false, "copy", progress)?;
        fsck(&self.runner, &staged, &built.rootfs_ext4)?;
        emit("seed", "building the work seed".into(), 0, None);
        let row = self.publish_image(
            staging,
            PublishImage {
                name,
                kernel_id,
                source: ImageSource::Build,
                source_ref: Some(format!("debian:{suite} ({})", built.cache_key)),
            },
        )?;
        self.image_info(row, None)
    }

    /// Publish the build's kernel + initrd as `debian-SUITE-VERSION`, or
    /// reuse the kernel of that name when it has the same content.
    fn publish_built_kernel(
        &self,
        built: &BuiltImage,
        suite: &str,
        progress: &ProgressSink,
    ) -> Result<String, ImageError> {
        let name = format!("debian-{suite}-{}", built.kernel_version);
        let sha = super::files::sha256_file(&built.kernel).map_err(|e| ImageError::Build {
            what: format!("hashing {}", built.kernel.display()),
            detail: Some(e.to_string()),
        })?;
        if let Some(k) = self.store.get_kernel_by_name(&name)? {
            if k.sha256 == sha {
                return Ok(k.id);
            }
            return Err(ImageError::NameTaken {
                kind: "kernel",
                name,
            });
        }
        let mut kernel = open_source("kernel", &built.kernel)?;
        let arch = sniff_kernel(&mut kernel)?;
        let mut initrd = open_source("initrd", &built.initrd)?;
        let staging = self.stage_kernel()?;
        copy_to(
            &mut kernel,
            &staging.file(KERNEL_FILE),
            false,
            "copy",
            progress,
        )?;
        copy_to(
            &mut initrd,
            &staging.file(INITRD_FILE),
            false,
            "copy",
            progress,
        )?;
        let row = self.publish_kernel(
            staging,
            PublishKernel {
                name,
                arch: arch.to_owned(),
                sha256: Some(sha),
                source: KernelSource::Import,
            },
        )?;
        Ok(row.id)
    }
}
