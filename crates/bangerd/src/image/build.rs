//! `banger image build debian`: the default image, built by
//! `banger-imagebuild` (mmdebstrap, kernel + initramfs from the Debian
//! kernel package, the guest contract baked in) into its content-keyed cache,
//! then published like any other image: kernel first (reused when the same
//! build already published it), then the root filesystem; publication adds the work seed
//! holding banger's public key (module `seed`).
//!
//! mmdebstrap needs root. In dev mode the daemon is root and builds here,
//! reporting each step; in system mode it asks the root helper
//! (`ImageOp::BuildDebianImage`), which builds into root's cache with the
//! installed `banger-imagebuild` and passes back read-only descriptors of
//! the three files. Either way the daemon copies them into its own staging
//! and checks the copy (`e2fsck -fn`, as itself) before anything is
//! published.

use std::path::PathBuf;

use banger_imagebuild::debian::{DebianOptions, build_debian};
use banger_proto::image::{BuildImage, ImageInfo};
use banger_proto::privops::{BuildDebianImage, BuiltImageFile};

use crate::privileged::PrivilegedOpsExt;
use banger_proto::rpc::Progress;

use crate::layout::{INITRD_FILE, KERNEL_FILE, Mode, ROOTFS_FILE};
use crate::server::ProgressSink;
use crate::store::{ImageSource, KernelSource};

use super::ImageService;
use super::error::ImageError;
use super::files::{Source, copy_to, fsck, open_source, sniff_ext4, sniff_kernel};
use super::names::validate_name;
use super::publish::{PublishImage, PublishKernel};

/// Progress as (stage, message, done, total).
type Emit<'a> = dyn Fn(&str, String, u64, Option<u64>) + 'a;

/// The three files of a built image, open for reading, however they came.
struct Built {
    rootfs: Source,
    kernel: Source,
    initrd: Source,
    kernel_version: String,
    cache_key: String,
}

/// The suite `image build debian` uses unless told otherwise.
pub const DEFAULT_SUITE: &str = "bookworm";

impl ImageService {
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
        let emit = |stage: &str, message: String, done: u64, total: Option<u64>| {
            progress.emit_blocking(Progress {
                stage: stage.into(),
                message,
                done,
                total,
            })
        };
        let mut built = match self.layout.mode {
            Mode::Dev => self.build_here(&suite, &emit)?,
            Mode::System => self.build_in_helper(&suite, &emit)?,
        };
        let kernel_id = self.publish_built_kernel(&mut built, &suite, progress)?;

        emit("copy", "publishing the root filesystem".into(), 0, None);
        sniff_ext4(&mut built.rootfs)?;
        let staging = self.stage_image()?;
        let staged = staging.file(ROOTFS_FILE);
        copy_to(&mut built.rootfs, &staged, false, "copy", progress)?;
        fsck(&self.runner, &staged, &built.rootfs.path)?;
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

    /// Dev mode: build (or find) the image in this process, as root.
    fn build_here(&self, suite: &str, emit: &Emit<'_>) -> Result<Built, ImageError> {
        // `$BANGER_CACHE_DIR`, else /var/cache/banger: root's cache, which
        // `banger-imagebuild` and the helper use too.
        let mut opts = DebianOptions::new(banger_imagebuild::default_cache_dir());
        opts.suite = suite.to_string();
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
        Ok(Built {
            rootfs: open_source("rootfs", &built.rootfs_ext4)?,
            kernel: open_source("kernel", &built.kernel)?,
            initrd: open_source("initrd", &built.initrd)?,
            kernel_version: built.kernel_version,
            cache_key: built.cache_key,
        })
    }

    /// System mode: the root helper builds (or finds) it in root's cache and
    /// passes the three files back as read-only descriptors.
    fn build_in_helper(&self, suite: &str, emit: &Emit<'_>) -> Result<Built, ImageError> {
        let privileged = self.privileged.as_ref().ok_or_else(|| ImageError::Build {
            what: format!("building the Debian {suite} image"),
            detail: Some("this daemon has no root helper to build with".into()),
        })?;
        emit(
            "build",
            format!(
                "the root helper builds the Debian {suite} image (mmdebstrap: a few minutes \
                 unless root's cache has it)"
            ),
            0,
            None,
        );
        let (files, mut fds) = privileged
            .request_with_fds(BuildDebianImage {
                suite: suite.to_string(),
            })
            .map_err(|e| ImageError::Build {
                what: format!("building the Debian {suite} image in the root helper"),
                detail: Some(e.render()),
            })?;
        emit(
            "build",
            format!(
                "{} {}",
                if files.cached {
                    "found in root's cache:"
                } else {
                    "built into root's cache:"
                },
                files.entry
            ),
            0,
            None,
        );
        // The seam checked that the indices are exactly 0..3.
        let mut take = |what: &'static str, file: &BuiltImageFile| {
            let fd = fds.take(file.fd).map_err(|e| ImageError::Build {
                what: format!("receiving the {what} from the root helper"),
                detail: Some(e.render()),
            })?;
            Source::from_descriptor(what, PathBuf::from(&file.path), fd)
        };
        Ok(Built {
            rootfs: take("rootfs", &files.rootfs)?,
            kernel: take("kernel", &files.kernel)?,
            initrd: take("initrd", &files.initrd)?,
            kernel_version: files.kernel_version,
            cache_key: files.cache_key,
        })
    }

    /// Publish the build's kernel + initrd as `debian-SUITE-VERSION`, or
    /// reuse the kernel of that name when it has the same content.
    fn publish_built_kernel(
        &self,
        built: &mut Built,
        suite: &str,
        progress: &ProgressSink,
    ) -> Result<String, ImageError> {
        let name = format!("debian-{suite}-{}", built.kernel_version);
        let sha = built.kernel.sha256()?;
        if let Some(k) = self.store.get_kernel_by_name(&name)? {
            if k.sha256 == sha {
                return Ok(k.id);
            }
            return Err(ImageError::NameTaken {
                kind: "kernel",
                name,
            });
        }
        let arch = sniff_kernel(&mut built.kernel)?;
        let staging = self.stage_kernel()?;
        copy_to(
            &mut built.kernel,
            &staging.file(KERNEL_FILE),
            false,
            "copy",
            progress,
        )?;
        copy_to(
            &mut built.initrd,
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
