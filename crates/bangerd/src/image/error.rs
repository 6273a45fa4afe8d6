//! The image service's errors, and how they cross the socket.

use std::path::PathBuf;

use banger_host::runner::RunError;
use banger_proto::{ErrorCode, RpcError};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Build {
        what: String,
        detail: Option<String>,
    },
    #[error("pulling {reference}")]
    Pull {
        reference: String,
        #[source]
        source: banger_oci::OciError,
    },
    #[error("kernel catalog")]
    Catalog(#[source] Box<banger_imagebuild::catalog::CatalogError>),
    #[error("no kernel {name:?} in the kernel catalog; it has: {}", known.join(", "))]
    NotInCatalog { name: String, known: Vec<String> },
    #[error("pulling kernel {name}")]
    KernelPull {
        name: String,
        #[source]
        source: Box<banger_imagebuild::pull::PullError>,
    },
    #[error("downloading bundle {reference}")]
    BundleFetch {
        reference: String,
        #[source]
        source: Box<banger_imagebuild::fetch::FetchError>,
    },
    #[error("pulling bundle {reference}")]
    Bundle {
        reference: String,
        #[source]
        source: Box<banger_imagebuild::BundleError>,
    },
    #[error("{reference} cannot boot as a banger VM: {missing}")]
    NotBootable { reference: String, missing: String },
    #[error(
        "invalid {kind} name {name:?}: {reason}; use 1-128 characters of a-z, 0-9, '.', '_' \
         and '-', starting with a letter or digit"
    )]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("cannot derive a kernel name from {path}; give one with --name")]
    NoDefaultName { path: PathBuf },
    #[error("{what} path {path} is not absolute")]
    RelativePath { what: &'static str, path: PathBuf },
    #[error("{what} {path} does not exist")]
    SourceMissing { what: &'static str, path: PathBuf },
    #[error(
        "bangerd (uid {uid}) may not read {what} {path}; make it readable by the daemon's user"
    )]
    SourceDenied {
        what: &'static str,
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {what} {path}")]
    SourceOpen {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {what} {path}")]
    SourceRead {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("{what} {path} is empty")]
    EmptyFile { what: &'static str, path: PathBuf },
    #[error(
        "{path} does not look like a kernel image: no bzImage header (\"HdrS\" at offset 0x202) \
         and no ELF magic"
    )]
    NotAKernel { path: PathBuf },
    #[error(
        "kernel {path} is an ELF file for machine {machine:#x}; banger boots x86_64 and aarch64"
    )]
    UnsupportedElf { path: PathBuf, machine: u16 },
    #[error(
        "rootfs {path} is not an ext4 filesystem (no ext2/3/4 superblock magic at offset 1080)"
    )]
    NotExt4 { path: PathBuf },
    #[error("rootfs {path} fails its filesystem check (`e2fsck -fn` exit {status}): {detail}")]
    Fsck {
        path: PathBuf,
        status: String,
        detail: String,
    },
    #[error("checking rootfs {path} with e2fsck")]
    FsckRun {
        path: PathBuf,
        #[source]
        source: RunError,
    },
    #[error("no kernel named {name:?}; see `banger kernel ls`")]
    NoKernel { name: String },
    #[error("no image named {name:?}; see `banger image ls`")]
    NoImage { name: String },
    #[error("{kind} name {name:?} is already taken; pick another name or remove that {kind} first")]
    NameTaken { kind: &'static str, name: String },
    #[error("{kind} {name:?} is still used by {users_kind} {}; remove {} first", users.join(", "), if users.len() == 1 { "it" } else { "them" })]
    InUse {
        kind: &'static str,
        name: String,
        /// "VM", "images", ...: already in the right number.
        users_kind: String,
        users: Vec<String>,
    },
    #[error("staging {what}: {path} is missing from the staging directory")]
    StagedFileMissing { what: &'static str, path: PathBuf },
    #[error("creating directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying {what} {from} to {to}")]
    Copy {
        what: &'static str,
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("moving {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image store")]
    Store(#[source] StoreError),
}

impl ImageError {
    /// The stable code this error crosses the socket with.
    pub fn code(&self) -> ErrorCode {
        use ImageError::*;
        match self {
            InvalidName { .. }
            | NoDefaultName { .. }
            | RelativePath { .. }
            | NotAFile { .. }
            | EmptyFile { .. }
            | NotAKernel { .. }
            | UnsupportedElf { .. }
            | NotExt4 { .. }
            | Fsck { .. } => ErrorCode::BadRequest,
            SourceMissing { .. } | NoKernel { .. } | NoImage { .. } => ErrorCode::NotFound,
            Build { .. } => ErrorCode::Unavailable,
            NotBootable { .. } => ErrorCode::BadRequest,
            Pull { source, .. } => pull_code(source),
            Catalog(_) => ErrorCode::BadRequest,
            NotInCatalog { .. } => ErrorCode::NotFound,
            KernelPull { source, .. } => kernel_pull_code(source),
            BundleFetch { source, .. } => fetch_code(source),
            Bundle { source, .. } if source.is_bad_content() => ErrorCode::BadRequest,
            Bundle { .. } => ErrorCode::Internal,
            SourceDenied { .. } => ErrorCode::PermissionDenied,
            NameTaken { .. } => ErrorCode::AlreadyExists,
            InUse { .. } => ErrorCode::InvalidState,
            FsckRun {
                source: RunError::NotFound { .. },
                ..
            } => ErrorCode::Unavailable,
            Store(StoreError::NameTaken { .. }) => ErrorCode::AlreadyExists,
            Store(StoreError::InUse { .. }) => ErrorCode::InvalidState,
            Store(StoreError::NotFound { .. } | StoreError::MissingReference { .. }) => {
                ErrorCode::NotFound
            }
            SourceOpen { .. }
            | SourceRead { .. }
            | FsckRun { .. }
            | StagedFileMissing { .. }
            | CreateDir { .. }
            | Copy { .. }
            | Rename { .. }
            | Remove { .. }
            | Store(_) => ErrorCode::Internal,
        }
    }

    pub fn to_rpc(&self) -> RpcError {
        RpcError::from_error(self.code(), self)
    }
}

impl From<StoreError> for ImageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken { kind, name } => ImageError::NameTaken { kind, name },
            StoreError::InUse {
                kind,
                name,
                used_by_kind,
                used_by,
            } => ImageError::InUse {
                kind,
                name,
                users_kind: users_label(used_by_kind, used_by.len()),
                users: used_by,
            },
            other => ImageError::Store(other),
        }
    }
}

/// "VM"/"VMs", "image"/"images".
pub(crate) fn users_label(kind: &str, n: usize) -> String {
    let kind = if kind == "vm" { "VM" } else { kind };
    if n == 1 {
        kind.to_owned()
    } else {
        format!("{kind}s")
    }
}

/// A download that arrived but is not what the catalog says is bad input;
/// one that could not be made is the network's.
fn fetch_code(e: &banger_imagebuild::fetch::FetchError) -> ErrorCode {
    use banger_imagebuild::fetch::FetchError as F;
    match e {
        F::Mismatch { .. } | F::BadDigest(_) => ErrorCode::BadRequest,
        F::Request { .. } | F::Body { .. } | F::CaBundle { .. } => ErrorCode::Unavailable,
        F::Temp { .. } | F::Write { .. } => ErrorCode::Internal,
    }
}

fn kernel_pull_code(e: &banger_imagebuild::pull::PullError) -> ErrorCode {
    use banger_imagebuild::pull::PullError as P;
    match e {
        P::Fetch { source, .. } => fetch_code(source),
        P::Build { .. } => ErrorCode::BadRequest,
        P::Dir { .. } => ErrorCode::Internal,
    }
}

/// Content problems are the caller's input; reaching the registry is not.
fn pull_code(e: &banger_oci::OciError) -> ErrorCode {
    use banger_oci::OciError as O;
    match e {
        O::Manifest { .. } | O::BlobFetch { .. } | O::BlobStream { .. } | O::Task(_) => {
            ErrorCode::Unavailable
        }
        O::Staging { .. } | O::Debugfs { .. } | O::Fsck { .. } => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_use_names_the_users() {
        let e = ImageError::from(StoreError::InUse {
            kind: "image",
            name: "deb".into(),
            used_by_kind: "vm",
            used_by: vec!["dev".into(), "web".into()],
        });
        assert_eq!(
            e.to_string(),
            "image \"deb\" is still used by VMs dev, web; remove them first"
        );
        assert_eq!(e.code(), ErrorCode::InvalidState);
        let e = ImageError::from(StoreError::InUse {
            kind: "kernel",
            name: "k".into(),
            used_by_kind: "image",
            used_by: vec!["deb".into()],
        });
        assert_eq!(
            e.to_string(),
            "kernel \"k\" is still used by image deb; remove it first"
        );
    }
}
