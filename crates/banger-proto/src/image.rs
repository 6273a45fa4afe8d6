//! Images and kernels over the public RPC: `banger image ...` and
//! `banger kernel ...`.
//!
//! Paths in requests are absolute paths on the daemon's host, resolved by the
//! CLI; the daemon opens them itself (as its own user) and refuses relative
//! ones. Names follow the rules in `docs/images.md`: 1-128 characters of
//! `[a-z0-9._-]`, starting with a letter or digit, without `..`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `banger image ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ImageRequest {
    /// Every image, by name.
    List,
    /// One image by name.
    Show { name: String },
    /// Copy (or reflink) a local ext4 root filesystem into the image store.
    /// Streams `copy` progress in bytes.
    Register(RegisterImage),
    /// Delete an image; refused while a VM uses it.
    Remove { name: String },
    /// Build a VM-ready image (`debian`): root filesystem, kernel and initrd,
    /// work seed. Streams progress; reuses the content-keyed build cache.
    Build(BuildImage),
    /// Pull an image: an OCI image from a registry (root filesystem only;
    /// it boots with `kernel`), or a bundle (docs/images.md) when the
    /// reference is an `http://`, `https://` or `file://` URL or an
    /// absolute path. Streams `download` progress in bytes.
    Pull(PullImage),
    /// A stopped VM's root disk becomes a new image.
    Promote { vm: String, name: String },
    /// Rebuild the image's work seed if its inputs (banger's public key,
    /// banger's version) changed since it was built.
    Refresh { name: String },
}

impl ImageRequest {
    /// Stable name for logs.
    pub fn method(&self) -> &'static str {
        match self {
            ImageRequest::List => "image_list",
            ImageRequest::Show { .. } => "image_show",
            ImageRequest::Register(_) => "image_register",
            ImageRequest::Remove { .. } => "image_remove",
            ImageRequest::Build(_) => "image_build",
            ImageRequest::Pull(_) => "image_pull",
            ImageRequest::Promote { .. } => "image_promote",
            ImageRequest::Refresh { .. } => "image_refresh",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterImage {
    pub name: String,
    /// Absolute path of an ext4 filesystem image.
    pub rootfs: PathBuf,
    /// Name of an imported kernel.
    pub kernel: String,
    /// Absolute path of an initrd that this image boots with instead of the
    /// kernel's own.
    pub initrd: Option<PathBuf>,
}

/// `banger image build DISTRO [--suite S] [--name N]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildImage {
    /// Only `debian` today.
    pub distro: String,
    /// Debian suite; `bookworm` when absent.
    pub suite: Option<String>,
    /// Image name; `debian` (or `debian-SUITE` for another suite) when absent.
    pub name: Option<String>,
}

/// `banger image pull REF [--name N] [--kernel K] [--insecure]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    /// `registry/repository[:tag|@digest]`, or a bundle: an `http://`,
    /// `https://` or `file://` URL, or an absolute path.
    pub reference: String,
    /// Image name; derived from the repository (OCI) or the bundle's
    /// manifest or file name when absent.
    pub name: Option<String>,
    /// Kernel to boot it with; for a bundle that carries a kernel, that
    /// one. Else the `debian` image's kernel when absent.
    pub kernel: Option<String>,
    /// Plain HTTP (only for registries on loopback).
    pub insecure: bool,
    /// Absolute path of a docker `config.json` with credentials.
    pub docker_config: Option<PathBuf>,
}

/// `banger kernel ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum KernelRequest {
    /// Every kernel, by name.
    List,
    /// Copy a kernel image (bzImage or ELF vmlinux) and optional initrd into
    /// the kernel store. Streams `copy` progress in bytes.
    Import(ImportKernel),
    /// Delete a kernel; refused while an image uses it.
    Remove { name: String },
    /// Download a kernel of the catalog, verify its sha256, publish it
    /// under the entry's name. Streams `download` progress in bytes.
    Pull(PullKernel),
}

impl KernelRequest {
    /// Stable name for logs.
    pub fn method(&self) -> &'static str {
        match self {
            KernelRequest::List => "kernel_list",
            KernelRequest::Import(_) => "kernel_import",
            KernelRequest::Remove { .. } => "kernel_remove",
            KernelRequest::Pull(_) => "kernel_pull",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportKernel {
    /// Absolute path of the kernel image.
    pub path: PathBuf,
    /// Absolute path of an initrd to keep with it.
    pub initrd: Option<PathBuf>,
    /// Defaults to the file's name, lowercased, without an alphabetic
    /// extension (`vmlinux.bin` → `vmlinux`).
    pub name: Option<String>,
}

/// `banger kernel pull NAME [--catalog FILE]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullKernel {
    /// Catalog entry; also the kernel's name.
    pub name: String,
    /// Absolute path of a catalog file whose entries replace (by name) or
    /// extend the catalog shipped with banger.
    pub catalog: Option<PathBuf>,
}

/// Result of `image refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshedImage {
    pub image: ImageInfo,
    /// False when the seed was up to date.
    pub rebuilt: bool,
    /// sha256 of the seed's inputs, as now recorded.
    pub seed_hash: String,
}

/// Result of an [`ImageRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ImageResponse {
    List(Vec<ImageInfo>),
    Show(ImageInfo),
    Registered(ImageInfo),
    Removed(ImageInfo),
    Built(ImageInfo),
    Pulled(ImageInfo),
    Promoted(ImageInfo),
    Refreshed(RefreshedImage),
}

/// Result of a [`KernelRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum KernelResponse {
    List(Vec<KernelInfo>),
    Imported(KernelInfo),
    Removed(KernelInfo),
    Pulled(KernelInfo),
}

/// Where an image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageOrigin {
    Register,
    Oci,
    Bundle,
    Build,
    Promote,
}

/// Where a kernel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelOrigin {
    Import,
    Pull,
    Bundle,
}

/// An image as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    pub kernel: String,
    pub kernel_id: String,
    /// `<state>/images/<id>/rootfs.ext4`.
    pub rootfs: PathBuf,
    /// The initrd a VM of this image boots with: the image's own
    /// (`<state>/images/<id>/initrd`) if it has one, else the kernel's.
    pub initrd: Option<PathBuf>,
    /// `<state>/images/<id>/work-seed.ext4`, once built.
    pub work_seed: Option<PathBuf>,
    /// Size of the root filesystem image (its apparent size).
    pub size_bytes: u64,
    pub source: ImageOrigin,
    /// Where the source lives (OCI reference, bundle URL, VM name, ...).
    pub source_ref: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Names of the VMs created from this image.
    pub used_by: Vec<String>,
}

/// A kernel as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    pub id: String,
    pub name: String,
    /// Guest architecture, e.g. `x86_64`.
    pub arch: String,
    /// `<state>/kernels/<id>/kernel`.
    pub kernel: PathBuf,
    /// `<state>/kernels/<id>/initrd`, when it has one.
    pub initrd: Option<PathBuf>,
    /// Lowercase hex SHA-256 of the kernel file.
    pub sha256: String,
    pub source: KernelOrigin,
    /// Unix seconds.
    pub created_at: i64,
    /// Names of the images that boot this kernel.
    pub used_by: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_shape_is_stable() {
        let r = ImageRequest::Register(RegisterImage {
            name: "deb".into(),
            rootfs: "/tmp/r.ext4".into(),
            kernel: "k".into(),
            initrd: None,
        });
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"register","args":{"name":"deb","rootfs":"/tmp/r.ext4","kernel":"k","initrd":null}}"#
        );
        assert_eq!(
            serde_json::to_string(&KernelRequest::List).unwrap(),
            r#"{"op":"list"}"#
        );
        let rm: KernelRequest =
            serde_json::from_str(r#"{"op":"remove","args":{"name":"k"}}"#).unwrap();
        assert_eq!(rm, KernelRequest::Remove { name: "k".into() });
        let pull = KernelRequest::Pull(PullKernel {
            name: "cloud".into(),
            catalog: Some("/etc/k.toml".into()),
        });
        assert_eq!(
            serde_json::to_string(&pull).unwrap(),
            r#"{"op":"pull","args":{"name":"cloud","catalog":"/etc/k.toml"}}"#
        );
        assert_eq!(
            serde_json::to_string(&ImageRequest::Refresh { name: "d".into() }).unwrap(),
            r#"{"op":"refresh","args":{"name":"d"}}"#
        );
    }

    #[test]
    fn unknown_ops_and_fields_are_refused() {
        assert!(serde_json::from_str::<ImageRequest>(r#"{"op":"format_disk"}"#).is_err());
        assert!(
            serde_json::from_str::<ImageRequest>(
                r#"{"op":"show","args":{"name":"a","force":true}}"#
            )
            .is_err()
        );
    }
}
