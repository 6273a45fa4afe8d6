//! Public RPC for VM snapshots (`banger snapshot …`; a snapshot is made by
//! `banger vm snapshot` and restored by `banger vm create NEW --from`).

use serde::{Deserialize, Serialize};

use crate::vmops::VmmKind;

/// `banger snapshot …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum SnapshotRequest {
    List,
    Show { name: String },
    Remove { name: String },
}

impl SnapshotRequest {
    /// Stable name for logs.
    pub fn method(&self) -> &'static str {
        match self {
            SnapshotRequest::List => "snapshot_list",
            SnapshotRequest::Show { .. } => "snapshot_show",
            SnapshotRequest::Remove { .. } => "snapshot_remove",
        }
    }
}

/// A saved VM: its memory and device state and a copy of its disks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    /// The VM it was taken of (its name then; that VM may be gone).
    pub source_vm: String,
    /// Image and kernel names: a clone boots nothing, but its VMM is
    /// given the same machine (and the image's kernel and initrd).
    pub image: String,
    pub kernel: String,
    pub vmm: VmmKind,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The work disk's size (a clone's is the same).
    pub disk_bytes: u64,
    /// Bytes of memory and device state saved.
    pub memory_bytes: u64,
    /// Bytes the snapshot's files hold on the host (allocated).
    pub size_bytes: u64,
    pub created_at: i64,
}

/// Result of a [`SnapshotRequest`] (and of `vm snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum SnapshotResponse {
    List(Vec<SnapshotInfo>),
    Snapshot(SnapshotInfo),
    Removed { name: String },
}
