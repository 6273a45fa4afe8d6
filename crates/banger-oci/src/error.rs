//! The one error type of an OCI pull. Every variant names what failed: the
//! reference, the layer digest, the member path inside the layer, or the
//! staging path. Sources stay in `#[source]`.

use std::path::PathBuf;

use banger_host::runner::RunError;
use oci_client::errors::OciDistributionError;

/// Why a pull failed. Nothing is published by this crate; on any error the
/// staging directory holds at most partial work files, which the caller
/// removes with the directory.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "invalid image reference `{reference}` (expected [registry[:port]/]repository[:tag|@sha256:digest])"
    )]
    InvalidReference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error(
        "insecure (plain HTTP) pulls are only allowed from loopback registries, not `{registry}`"
    )]
    InsecureNotLoopback { registry: String },
    #[error("reading registry credentials from {}", path.display())]
    DockerConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching the manifest of `{reference}`")]
    Manifest {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error(
        "`{reference}` has no linux/amd64 image (it offers: {found}); banger runs x86_64 guests only"
    )]
    WrongArchitecture { reference: String, found: String },
    #[error("`{reference}`: image configuration {digest} is not valid: {reason}")]
    BadConfig {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error("`{reference}` has no layers")]
    NoLayers { reference: String },
    #[error("downloading blob {digest}")]
    BlobFetch {
        digest: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("downloading blob {digest}: the connection failed after {got} bytes")]
    BlobStream {
        digest: String,
        got: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {digest} is {size} bytes, over the limit of {limit} bytes")]
    LayerTooLarge {
        digest: String,
        size: u64,
        limit: u64,
    },
    #[error("layer {digest} is truncated: got {got} of {expected} bytes")]
    LayerTruncated {
        digest: String,
        got: u64,
        expected: u64,
    },
    #[error("layer {digest} is longer than its manifest says ({expected} bytes)")]
    LayerOversized { digest: String, expected: u64 },
    #[error("blob {digest} does not match its digest (content hashes to {actual})")]
    DigestMismatch { digest: String, actual: String },
    #[error("unsupported digest `{digest}` (only sha256 is accepted)")]
    UnsupportedDigest { digest: String },
    #[error("{what} {}", path.display())]
    Staging {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {digest}: unpacked content exceeds the limit of {limit} bytes")]
    UnpackedTooLarge { digest: String, limit: u64 },
    #[error("layer {digest}: more than {limit} entries in the image")]
    TooManyEntries { digest: String, limit: u64 },
    #[error("layer {digest}: reading the archive (corrupt or truncated)")]
    LayerRead {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {digest}: member `{member}` is truncated ({got} of {expected} bytes)")]
    MemberTruncated {
        digest: String,
        member: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "layer {digest}: member `{member}` has a `..` component, an unusable name or is too deep; refused"
    )]
    BadMemberPath { digest: String, member: String },
    #[error(
        "layer {digest}: member `{start}…` has a path of {len} bytes; more than {max} is refused (Linux's PATH_MAX is 4096)"
    )]
    MemberPathTooLong {
        digest: String,
        /// The path's first characters (the whole would flood the message).
        start: String,
        len: usize,
        max: usize,
    },
    #[error(
        "layer {digest}: member `{member}` would be written through the symlink `{symlink}`; refused"
    )]
    ThroughSymlink {
        digest: String,
        member: String,
        symlink: String,
    },
    #[error("layer {digest}: member `{member}`: parent `{parent}` is not a directory")]
    ParentNotDirectory {
        digest: String,
        member: String,
        parent: String,
    },
    #[error("layer {digest}: hardlink `{member}` points to `{target}`, which is outside the image")]
    HardlinkOutside {
        digest: String,
        member: String,
        target: String,
    },
    #[error(
        "layer {digest}: hardlink `{member}` points to `{target}`, which does not exist (yet) or is a directory"
    )]
    HardlinkMissing {
        digest: String,
        member: String,
        target: String,
    },
    #[error("building the ext4 image: {step}")]
    Ext4Tool {
        step: &'static str,
        #[source]
        source: RunError,
    },
    #[error("building the ext4 image: debugfs reported: {errors}")]
    Debugfs { errors: String },
    #[error("building the ext4 image: refusing the debugfs script line for `{what}`: {why}")]
    ScriptLine { what: String, why: &'static str },
    #[error("the built ext4 image {} does not pass `e2fsck -fn`: {output}", image.display())]
    Fsck { image: PathBuf, output: String },
    #[error("the pull task failed: {0}")]
    Task(String),
}

impl OciError {
    pub(crate) fn staging(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Staging { what, path, source }
    }
}
