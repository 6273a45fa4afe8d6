//! `banger image pull REF`: an OCI image from a registry, flattened into an
//! ext4 root filesystem by `banger-oci` inside a private staging directory,
//! checked for what a banger guest needs to boot (an init and an SSH
//! server), then published like any other image. An interrupted pull leaves
//! only its staging directory, which startup reconcile removes. A reference
//! that is a URL or an absolute path is a bundle (module `bundle`).

use std::sync::Arc;

use banger_oci::{PullOptions, Stage, pull_to_ext4_blocking};
use banger_proto::image::{ImageInfo, PullImage};
use banger_proto::rpc::Progress;

use crate::layout::ROOTFS_FILE;
use crate::server::ProgressSink;
use crate::store::{ImageSource, KernelRow};

use super::ImageService;
use super::error::ImageError;
use super::names::validate_name;
use super::publish::PublishImage;

/// `ghcr.io/org/tool:1.2` → `tool`; `debian@sha256:…` → `debian`.
pub fn default_name(reference: &str) -> String {
    let path = reference.split('@').next().unwrap_or(reference);
    let last = path.rsplit('/').next().unwrap_or(path);
    last.split(':').next().unwrap_or(last).to_ascii_lowercase()
}

impl ImageService {
    pub fn pull(&self, r: &PullImage, progress: &ProgressSink) -> Result<ImageInfo, ImageError> {
        if super::bundle::is_bundle_ref(&r.reference) {
            return self.pull_bundle(r, progress);
        }
        let name = r.name.clone().unwrap_or_else(|| default_name(&r.reference));
        validate_name("image", &name)?;
        if self.store.get_image_by_name(&name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "image",
                name,
            });
        }
        let kernel = self.boot_kernel(r.kernel.as_deref())?;
        let staging = self.stage_image()?;
        let work = staging.path().join("oci");
        std::fs::create_dir(&work).map_err(|e| ImageError::Build {
            what: format!("creating {}", work.display()),
            detail: Some(e.to_string()),
        })?;
        let opts = PullOptions {
            insecure: r.insecure,
            docker_config: r.docker_config.clone(),
            ..PullOptions::default()
        };
        let sink = progress.clone();
        let report: banger_oci::ProgressFn = Arc::new(move |p: &banger_oci::Progress| {
            let (stage, message) = match &p.stage {
                Stage::Manifest => ("manifest", "resolving the manifest".to_string()),
                Stage::Download { digest } => ("download", format!("layer {}", short(digest))),
                Stage::Flatten { digest } => ("flatten", format!("applying {}", short(digest))),
                Stage::BuildExt4 => ("ext4", "building the root filesystem".to_string()),
            };
            sink.try_emit(Progress {
                stage: stage.into(),
                message,
                done: p.done,
                total: p.total,
            });
        });
        let pulled =
            pull_to_ext4_blocking(&r.reference, &opts, &work, report).map_err(|source| {
                ImageError::Pull {
                    reference: r.reference.clone(),
                    source,
                }
            })?;
        if !pulled.boot.is_bootable() {
            return Err(ImageError::NotBootable {
                reference: r.reference.clone(),
                missing: pulled.boot.message().unwrap_or_default(),
            });
        }
        std::fs::rename(&pulled.ext4_path, staging.file(ROOTFS_FILE)).map_err(|e| {
            ImageError::Build {
                what: "moving the pulled root filesystem into staging".into(),
                detail: Some(e.to_string()),
            }
        })?;
        let _ = std::fs::remove_dir_all(&work);
        crate::crashpoint::hit("pull.pulled");
        for w in &pulled.warnings {
            tracing::warn!(reference = %r.reference, "{w}");
        }
        let row = self.publish_image(
            staging,
            PublishImage {
                name,
                kernel_id: kernel.id.clone(),
                source: ImageSource::Oci,
                source_ref: Some(format!("{}@{}", r.reference, pulled.manifest_digest)),
            },
        )?;
        self.image_info(row, Some(&kernel))
    }
}

impl ImageService {
    /// The kernel a pulled image boots: `name`, else the `debian` image's.
    pub(super) fn boot_kernel(&self, name: Option<&str>) -> Result<KernelRow, ImageError> {
        match name {
            Some(k) => self
                .store
                .get_kernel_by_name(k)?
                .ok_or_else(|| ImageError::NoKernel { name: k.into() }),
            None => {
                let debian = self.store.get_image_by_name("debian")?;
                let id = debian.map(|i| i.kernel_id).ok_or_else(|| ImageError::Build {
                    what: "no kernel to boot the pulled image with".into(),
                    detail: Some(
                        "pass --kernel NAME (see `banger kernel ls`), or build the default image first \
                         (`banger image build debian`)"
                            .into(),
                    ),
                })?;
                self.store
                    .get_kernel(&id)?
                    .ok_or_else(|| ImageError::NoKernel { name: id })
            }
        }
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split(':').nth(1).unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::default_name;

    #[test]
    fn names_from_references() {
        assert_eq!(default_name("127.0.0.1:5000/tools/Box:1.2"), "box");
        assert_eq!(default_name("debian@sha256:abcd"), "debian");
        assert_eq!(default_name("alpine"), "alpine");
    }
}
