//! banger's OCI pull engine: registry image → ext4 root filesystem.
//!
//! [`pull_to_ext4`] pulls `REF` from any OCI/distribution registry
//! (anonymous, basic, bearer-token challenge; credentials from a docker
//! `config.json` the caller names; plain HTTP only for loopback registries),
//! picks the linux/amd64 manifest, streams every layer to a file in the
//! staging directory while hashing it (size caps, truncation and digest
//! checks), flattens the layers in a private in-memory tree (whiteouts,
//! opaque directories, hardlinks, symlinks kept verbatim, modes, ownership,
//! xattrs), and builds `rootfs.ext4` with `mkfs.ext4 -d` plus a `debugfs`
//! pass that applies the real ownership and modes inside the image.
//!
//! Safety properties (see `tree`, `layer`, `ext4`):
//! * nothing is written outside `staging_dir`: member paths with `..` are
//!   refused, a member below an image symlink is refused, the host copy is
//!   built with descriptor-relative calls on directories this crate made;
//! * host copies are `0600`/`0700` files of the calling user; setuid bits,
//!   foreign owners and device nodes exist only inside the ext4 image;
//! * every child process goes through `banger_host::runner`.
//!
//! The crate publishes nothing: the caller (bangerd's ImageService) renames
//! the result into place under its own lock. Independent pulls (separate
//! staging dirs) share no state and may run concurrently.
//!
//! The API is async (oci-client is); the CPU- and disk-bound flattening and
//! ext4 build run on tokio's blocking pool. [`pull_to_ext4_blocking`] wraps
//! it in a private current-thread runtime for synchronous callers.

mod boot;
mod error;
mod ext4;
mod layer;
mod registry;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use boot::{BootCheck, BootRequirement, INIT_PATHS, SSHD_PATHS};

/// The layer applier and its tree, for the fuzz targets only (`fuzz/`,
/// built with `--cfg fuzzing`): not part of this crate's API otherwise.
#[cfg(fuzzing)]
pub mod fuzzing {
    pub use crate::boot::check;
    pub use crate::layer::{Flattener, Limits, MAX_DEPTH};
    pub use crate::tree::{Kind, ROOT, Tree};
}
pub use error::OciError;
pub use ext4::fsck;

/// Explicit registry credentials (they take precedence over the docker
/// config file).
#[derive(Clone)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A ready registry bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Plain HTTP; refused unless the registry is on loopback.
    pub insecure: bool,
    /// A docker `config.json` to read credentials from (e.g. the owner's
    /// `~/.docker/config.json`); a missing file means anonymous.
    pub docker_config: Option<PathBuf>,
    /// Explicit credentials, used instead of `docker_config`.
    pub credentials: Option<Credentials>,
    /// Largest compressed layer accepted (manifest size and bytes received).
    pub max_layer_bytes: u64,
    /// Largest total of regular-file content after flattening.
    pub max_unpacked_bytes: u64,
    /// Most archive members over all layers.
    pub max_entries: u64,
    /// Free space added to the ext4 image beyond its content.
    pub headroom_bytes: u64,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            insecure: false,
            docker_config: None,
            credentials: None,
            max_layer_bytes: 8 << 30,
            max_unpacked_bytes: 32 << 30,
            max_entries: 2_000_000,
            headroom_bytes: 256 << 20,
        }
    }
}

/// Which step a progress report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Resolving the reference to a linux/amd64 manifest and its config.
    Manifest,
    /// Downloading one layer; bytes.
    Download { digest: String },
    /// Applying layers to the tree; `done`/`total` count layers.
    Flatten { digest: String },
    /// Building and checking the ext4 image; `total` is unknown.
    BuildExt4,
}

/// One progress report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    pub done: u64,
    pub total: Option<u64>,
}

/// Progress callback; called from the pulling task and the blocking pool.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// A no-op progress callback.
pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

/// What the image configuration says (summary; the guest ignores most).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSummary {
    pub architecture: String,
    pub os: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// A pulled image, ready for the caller to publish.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// `<staging_dir>/rootfs.ext4`.
    pub ext4_path: PathBuf,
    /// Digest of the linux/amd64 image manifest.
    pub manifest_digest: String,
    /// The layer digests, bottom first.
    pub layers: Vec<String>,
    pub config: ConfigSummary,
    /// Size of the ext4 image file.
    pub size_bytes: u64,
    /// Bytes of regular-file content in the image.
    pub content_bytes: u64,
    /// Things kept out of the image or approximated (dropped xattrs, ...).
    pub warnings: Vec<String>,
    pub boot: BootCheck,
}

const CONFIG_CAP: u64 = 4 << 20;

/// Pull `reference` and build `<staging_dir>/rootfs.ext4`.
///
/// `staging_dir` must exist, be empty and private to this pull (the caller
/// creates it, owner-only, under its image directory). Work files
/// (`blobs/`, `content/`, `rootfs/`, `work/`) are removed before returning,
/// on success and on error; the caller removes the directory itself.
pub async fn pull_to_ext4(
    reference: &str,
    opts: &PullOptions,
    staging_dir: &Path,
    progress: ProgressFn,
) -> Result<PulledImage, OciError> {
    let r = pull_inner(reference, opts, staging_dir, progress).await;
    for sub in ["blobs", "content", "rootfs", "work"] {
        let _ = std::fs::remove_dir_all(staging_dir.join(sub));
    }
    if r.is_err() {
        let _ = std::fs::remove_file(staging_dir.join("rootfs.ext4"));
    }
    r
}

/// [`pull_to_ext4`] on a private current-thread runtime.
pub fn pull_to_ext4_blocking(
    reference: &str,
    opts: &PullOptions,
    staging_dir: &Path,
    progress: ProgressFn,
) -> Result<PulledImage, OciError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OciError::Task(format!("starting a tokio runtime: {e}")))?;
    rt.block_on(pull_to_ext4(reference, opts, staging_dir, progress))
}

fn mkdir_private(p: &Path) -> Result<(), OciError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .map_err(OciError::staging("creating", p))
}

async fn pull_inner(
    reference: &str,
    opts: &PullOptions,
    staging_dir: &Path,
    progress: ProgressFn,
) -> Result<PulledImage, OciError> {
    let r = registry::parse_reference(reference)?;
    let client = registry::client(&r, opts)?;
    let auth = registry::credentials(&r, opts)?;
    progress(&Progress {
        stage: Stage::Manifest,
        done: 0,
        total: None,
    });
    let (manifest, manifest_digest) = registry::manifest(&client, &r, &auth, reference).await?;
    let config_raw = registry::small_blob(&client, &r, &manifest.config, CONFIG_CAP).await?;
    let config = summarize_config(&config_raw).map_err(|reason| OciError::BadConfig {
        reference: reference.into(),
        digest: manifest.config.digest.clone(),
        reason,
    })?;
    if config.os != "linux" || config.architecture != "amd64" {
        return Err(OciError::WrongArchitecture {
            reference: reference.into(),
            found: format!("{}/{}", config.os, config.architecture),
        });
    }
    if manifest.layers.is_empty() {
        return Err(OciError::NoLayers {
            reference: reference.into(),
        });
    }
    let blobs = staging_dir.join("blobs");
    mkdir_private(&blobs)?;
    let mut files = Vec::new();
    for (i, desc) in manifest.layers.iter().enumerate() {
        // Names are indices: a digest is never used as a host path.
        let dest = blobs.join(i.to_string());
        registry::download(&client, &r, desc, &dest, opts.max_layer_bytes, &progress).await?;
        files.push((dest, desc.digest.clone()));
    }
    let layers: Vec<String> = files.iter().map(|f| f.1.clone()).collect();
    let staging = staging_dir.to_path_buf();
    let limits = layer::Limits {
        max_unpacked_bytes: opts.max_unpacked_bytes,
        max_entries: opts.max_entries,
    };
    let headroom = opts.headroom_bytes;
    let built = tokio::task::spawn_blocking(move || {
        flatten_and_build(&staging, &files, limits, headroom, &progress)
    })
    .await
    .map_err(|e| OciError::Task(e.to_string()))??;
    Ok(PulledImage {
        ext4_path: staging_dir.join("rootfs.ext4"),
        manifest_digest,
        layers,
        config,
        size_bytes: built.0,
        content_bytes: built.1,
        warnings: built.2,
        boot: built.3,
    })
}

type Flattened = (u64, u64, Vec<String>, BootCheck);

fn flatten_and_build(
    staging: &Path,
    files: &[(PathBuf, String)],
    limits: layer::Limits,
    headroom: u64,
    progress: &ProgressFn,
) -> Result<Flattened, OciError> {
    let content = staging.join("content");
    mkdir_private(&content)?;
    let mut f = layer::Flattener::new(&content, limits)?;
    for (i, (path, digest)) in files.iter().enumerate() {
        progress(&Progress {
            stage: Stage::Flatten {
                digest: digest.clone(),
            },
            done: i as u64,
            total: Some(files.len() as u64),
        });
        f.apply(path, digest)?;
        // The compressed blob is no longer needed; free the space early.
        let _ = std::fs::remove_file(path);
    }
    let boot = boot::check(&f.tree);
    let mut warnings = f.warnings();
    if let Some(m) = boot.message() {
        warnings.push(m);
    }
    progress(&Progress {
        stage: Stage::BuildExt4,
        done: 0,
        total: None,
    });
    let work = staging.join("work");
    mkdir_private(&work)?;
    let image = staging.join("rootfs.ext4");
    let built = ext4::build(
        &f.tree,
        f.content_dir(),
        &staging.join("rootfs"),
        &work,
        &image,
        headroom,
    )?;
    tracing::debug!(
        inodes = built.inodes,
        size = built.size_bytes,
        "ext4 image built"
    );
    Ok((built.size_bytes, f.unpacked_bytes(), warnings, boot))
}

fn summarize_config(raw: &[u8]) -> Result<ConfigSummary, String> {
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let list = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(s).collect())
            .unwrap_or_default()
    };
    let c = v.get("config");
    let opt = |k: &str| {
        c.and_then(|c| c.get(k))
            .and_then(s)
            .filter(|x| !x.is_empty())
    };
    Ok(ConfigSummary {
        architecture: v.get("architecture").and_then(s).ok_or("no architecture")?,
        os: v.get("os").and_then(s).ok_or("no os")?,
        entrypoint: list(c.and_then(|c| c.get("Entrypoint"))),
        cmd: list(c.and_then(|c| c.get("Cmd"))),
        env: list(c.and_then(|c| c.get("Env"))),
        user: opt("User"),
        working_dir: opt("WorkingDir"),
    })
}
