//! Workspaces over the public RPC: `banger workspace prepare|export`.
//!
//! A workspace is a host git checkout copied into a VM's work disk (see
//! `docs/workspaces.md`). Paths are absolute paths on the daemon's host,
//! resolved by the CLI; the daemon refuses relative ones.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `banger workspace ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum WorkspaceRequest {
    /// Copy the checkout at `path` into the VM (only what changed since the
    /// last prepare), then sync auth keys, git identity and file_sync.
    Prepare(PrepareWorkspace),
    /// Bring the guest's work back as a branch or a patch file.
    Export(ExportWorkspace),
}

impl WorkspaceRequest {
    /// Stable name for logs.
    pub fn method(&self) -> &'static str {
        match self {
            WorkspaceRequest::Prepare(_) => "workspace_prepare",
            WorkspaceRequest::Export(_) => "workspace_export",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareWorkspace {
    pub vm: String,
    /// Absolute path inside a git working tree (any directory of it).
    pub path: PathBuf,
    /// Overwrite guest commits made since the last prepare that were never
    /// exported (refused otherwise).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportWorkspace {
    pub vm: String,
    pub target: ExportTarget,
    /// Replace an existing branch or patch file.
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportTarget {
    /// A new branch in the host repository; `banger/VM` when absent.
    Branch { name: Option<String> },
    /// A `git format-patch` mbox written to this absolute path.
    Patch { path: PathBuf },
}

/// Result of a [`WorkspaceRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum WorkspaceResponse {
    Prepared(PrepareReport),
    Exported(ExportReport),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareReport {
    pub vm: String,
    /// Root of the host working tree.
    pub repo: PathBuf,
    /// Where it lives in the guest.
    pub guest_path: String,
    /// Host `HEAD` at prepare time (absent in a repository without commits).
    pub head: Option<String>,
    /// Host branch, absent for a detached `HEAD`.
    pub branch: Option<String>,
    /// Working-tree files copied (tracked and untracked-not-ignored).
    pub files: u64,
    /// Tracked files with uncommitted changes, plus untracked files.
    pub dirty: u64,
    pub submodules: u64,
    /// Size of what was synchronised (working tree + `.git`).
    pub total_bytes: u64,
    /// Bytes that actually crossed the wire (rsync's count).
    pub sent_bytes: u64,
    /// Whether an earlier prepare of this repository was reused.
    pub incremental: bool,
    /// Whether the copy rode the SSH connection an earlier prepare or
    /// export of this boot of the VM opened (no new handshake).
    #[serde(default)]
    pub ssh_reused: bool,
    /// Public keys added to the guest user's `authorized_keys`.
    pub auth_keys: u32,
    /// `user.name` / `user.email` copied into the guest's git config.
    pub git_identity: Option<String>,
    /// file_sync entries copied.
    pub file_sync: u32,
    pub duration_ms: u64,
    /// Things that did not stop the prepare (e.g. files that vanished on
    /// the host while they were being copied).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportReport {
    pub vm: String,
    pub repo: PathBuf,
    /// The branch created (or replaced with `force`).
    pub branch: Option<String>,
    /// The patch file written.
    pub patch: Option<PathBuf>,
    /// The prepared commit the export starts from.
    pub base: Option<String>,
    /// The exported commit (the branch tip).
    pub tip: String,
    /// Commits on top of `base`, including the uncommitted-changes commit.
    pub commits: u32,
    /// Whether uncommitted guest changes were included as a final commit.
    pub uncommitted: bool,
}
