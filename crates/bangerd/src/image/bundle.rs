//! `banger image pull BUNDLE`: an image bundle (format in
//! `banger-imagebuild::bundle` and docs/images.md) from an `http(s)://`
//! URL, a `file://` URL or an absolute path.
//!
//! The bundle is streamed (never downloaded whole first) through
//! [`banger_imagebuild::read_bundle`] into a fresh image staging directory,
//! which checks every member against the manifest. The root filesystem is
//! then checked like a registered one (superblock magic, `e2fsck -fn`).
//! A bundle kernel (with the bundle's initrd) is published first — or an
//! existing kernel with the same kernel and initrd content is reused — as
//! `<image>-kernel`; then the image. If the image cannot be published, a
//! kernel published for it is removed again. Without a kernel in the
//! bundle, `--kernel` or the `debian` image's kernel boots it, and a bundle
//! initrd becomes the image's own. `--kernel` with a bundle that has a
//! kernel wins: the bundle's kernel and initrd are dropped.

use std::path::{Path, PathBuf};

use banger_imagebuild::bundle::{INITRD, KERNEL};
use banger_proto::image::{ImageInfo, PullImage};
use banger_proto::rpc::Progress;

use crate::layout::{INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use crate::server::ProgressSink;
use crate::store::{ImageSource, KernelRow, KernelSource};

use super::ImageService;
use super::error::ImageError;
use super::files::{fsck, open_source, sha256_file, sniff_ext4, sniff_kernel};
use super::names::validate_name;
use super::publish::{PublishImage, PublishKernel, Staging, rename};

/// True when `image pull REF` means a bundle rather than an OCI reference.
pub fn is_bundle_ref(reference: &str) -> bool {
    ["http://", "https://", "file://", "/"]
        .iter()
        .any(|p| reference.starts_with(p))
}

/// The image name a bundle file suggests: its last path component without
/// `.zst`, `.tzst`, `.tar` and `.bundle` suffixes, lowercased.
pub fn name_from_location(reference: &str) -> String {
    let path = reference.split(['?', '#']).next().unwrap_or(reference);
    let mut last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    loop {
        let before = last.len();
        for ext in [".zst", ".tzst", ".tar", ".bundle"] {
            if let Some(s) = last.strip_suffix(ext) {
                last = s.to_string();
            }
        }
        if last.len() == before {
            return last;
        }
    }
}

/// Where the bytes come from.
fn open_bundle(
    reference: &str,
) -> Result<(Box<dyn std::io::Read + Send>, Option<u64>), ImageError> {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return banger_imagebuild::fetch::open_url(reference).map_err(|source| {
            ImageError::BundleFetch {
                reference: reference.to_string(),
                source: Box::new(source),
            }
        });
    }
    let path = PathBuf::from(reference.strip_prefix("file://").unwrap_or(reference));
    let src = open_source("bundle", &path)?;
    Ok((Box::new(src.file), Some(src.len)))
}

impl ImageService {
    pub(super) fn pull_bundle(
        &self,
        r: &PullImage,
        progress: &ProgressSink,
    ) -> Result<ImageInfo, ImageError> {
        // What can be refused before reading a byte.
        if let Some(name) = &r.name {
            self.check_free_image_name(name)?;
        }
        let chosen_kernel = match &r.kernel {
            Some(k) => Some(
                self.store
                    .get_kernel_by_name(k)?
                    .ok_or_else(|| ImageError::NoKernel { name: k.clone() })?,
            ),
            None => None,
        };
        let bundle_err = |source| ImageError::Bundle {
            reference: r.reference.clone(),
            source: Box::new(source),
        };
        let (input, total) = open_bundle(&r.reference)?;
        let staging = self.stage_image()?;
        let bundle = banger_imagebuild::read_bundle(
            input,
            total,
            staging.path(),
            &mut super::forward_progress(progress, "bundle", "reading the bundle"),
        )
        .map_err(bundle_err)?;

        let name = match &r.name {
            Some(n) => n.clone(),
            None => bundle
                .manifest
                .name
                .clone()
                .unwrap_or_else(|| name_from_location(&r.reference)),
        };
        self.check_free_image_name(&name)?;

        let shown = PathBuf::from(format!("{} (member rootfs.ext4)", r.reference));
        let mut rootfs = open_source("rootfs", &bundle.rootfs)?;
        if sniff_ext4(&mut rootfs).is_err() {
            return Err(ImageError::NotExt4 { path: shown });
        }
        progress.emit_blocking(Progress {
            stage: "fsck".into(),
            message: "checking the root filesystem (e2fsck -fn)".into(),
            done: 0,
            total: None,
        });
        fsck(&self.runner, &staging.file(ROOTFS_FILE), &shown)?;

        let (kernel, published_kernel) = match (chosen_kernel, &bundle.kernel) {
            (Some(k), Some(_)) => {
                remove_staged(&staging, KERNEL)?;
                if bundle.initrd.is_some() {
                    remove_staged(&staging, INITRD)?;
                }
                (k, None)
            }
            (Some(k), None) => (k, None),
            (None, Some(_)) => {
                let kernel_sha = &bundle.manifest.members[KERNEL].sha256;
                let initrd_sha = bundle.manifest.members.get(INITRD).map(|d| &d.sha256);
                match self.same_kernel(kernel_sha, initrd_sha.map(String::as_str))? {
                    Some(k) => {
                        remove_staged(&staging, KERNEL)?;
                        if bundle.initrd.is_some() {
                            remove_staged(&staging, INITRD)?;
                        }
                        (k, None)
                    }
                    None => {
                        let k = self.publish_bundle_kernel(&staging, &name, kernel_sha)?;
                        let id = k.id.clone();
                        (k, Some(id))
                    }
                }
            }
            (None, None) => (self.boot_kernel(None)?, None),
        };
        let published = self.publish_image(
            staging,
            PublishImage {
                name,
                kernel_id: kernel.id.clone(),
                source: ImageSource::Bundle,
                source_ref: Some(r.reference.clone()),
            },
        );
        match published {
            Ok(row) => self.image_info(row, Some(&kernel)),
            Err(e) => {
                if published_kernel.is_some()
                    && let Err(rm) = self.remove_kernel(&kernel.name)
                {
                    tracing::warn!(kernel = %kernel.name, error = %rm,
                        "removing the kernel published for a bundle whose image failed");
                }
                Err(e)
            }
        }
    }

    fn check_free_image_name(&self, name: &str) -> Result<(), ImageError> {
        validate_name("image", name)?;
        if self.store.get_image_by_name(name)?.is_some() {
            return Err(ImageError::NameTaken {
                kind: "image",
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// An existing kernel with this kernel sha256 and the same initrd
    /// (none, or one with this sha256).
    fn same_kernel(
        &self,
        kernel_sha: &str,
        initrd_sha: Option<&str>,
    ) -> Result<Option<KernelRow>, ImageError> {
        for k in self.store.list_kernels()? {
            if !k.sha256.eq_ignore_ascii_case(kernel_sha) {
                continue;
            }
            let same_initrd = match (&k.initrd_path, initrd_sha) {
                (None, None) => true,
                (Some(p), Some(want)) => {
                    sha256_file(p).is_ok_and(|have| have.eq_ignore_ascii_case(want))
                }
                _ => false,
            };
            if same_initrd {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Move the bundle's kernel (and initrd) from the image staging
    /// directory into a kernel staging directory and publish it as
    /// `<image>-kernel`.
    fn publish_bundle_kernel(
        &self,
        image_staging: &Staging,
        image: &str,
        sha256: &str,
    ) -> Result<KernelRow, ImageError> {
        let name = format!("{image}-kernel");
        let mut src = open_source("kernel", &image_staging.file(KERNEL))?;
        let arch = sniff_kernel(&mut src)?;
        drop(src);
        let staging = self.stage_kernel()?;
        rename(&image_staging.file(KERNEL), &staging.file(KERNEL_FILE))?;
        let initrd = image_staging.file(INITRD);
        if initrd.is_file() {
            rename(&initrd, &staging.file(INITRD_FILE))?;
        }
        self.publish_kernel(
            staging,
            PublishKernel {
                name,
                arch: arch.to_owned(),
                sha256: Some(sha256.to_ascii_lowercase()),
                source: KernelSource::Bundle,
            },
        )
    }
}

fn remove_staged(staging: &Staging, name: &str) -> Result<(), ImageError> {
    let path: &Path = &staging.file(name);
    std::fs::remove_file(path).map_err(|source| ImageError::Remove {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_references_and_names() {
        for r in [
            "http://127.0.0.1/b",
            "https://x/y",
            "file:///b",
            "/srv/b.tar",
        ] {
            assert!(is_bundle_ref(r), "{r}");
        }
        for r in ["debian", "127.0.0.1:5000/t/box:1", "ghcr.io/a/b@sha256:00"] {
            assert!(!is_bundle_ref(r), "{r}");
        }
        assert_eq!(name_from_location("/srv/Web.bundle.tar.zst"), "web");
        assert_eq!(name_from_location("http://h/x/alpine.tar?sig=1"), "alpine");
        assert_eq!(name_from_location("file:///b/tools.tzst"), "tools");
    }
}
