//! VM operations of the executor: disks, guest files, VMM processes.
//!
//! Paths are derived from ids under the configured state directory (see
//! `banger_proto::vmops`); VMM binaries come from the executor's own
//! configuration, never from a request.

mod disks;
mod error;
mod guestfs;
mod validate;
mod vmm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use banger_proto::vmops::VmmKind;

pub use disks::clone_file;
pub use error::VmOpError;
pub use vmm::KERNEL_CMDLINE;

use crate::journal::JournalFile;

/// Where VMs live and who owns them; set once when the executor is built.
#[derive(Debug, Clone)]
pub struct VmHostConfig {
    /// The owner daemon's state directory (`vms/`, `images/`, `kernels/`).
    pub state_dir: PathBuf,
    /// (uid, gid) of the owner: files the executor creates are theirs, and
    /// tools and VMMs run with their ids (root in dev mode: `(0, 0)`).
    pub owner: (u32, u32),
    pub qemu_binary: PathBuf,
    pub firecracker_binary: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct VmHost {
    state_dir: PathBuf,
    owner: (u32, u32),
    qemu_binary: PathBuf,
    firecracker_binary: Option<PathBuf>,
    journal: Arc<JournalFile>,
    procs: Mutex<HashMap<String, (VmmKind, vmm::Proc)>>,
}

impl VmHost {
    pub(crate) fn new(cfg: VmHostConfig, journal: Arc<JournalFile>) -> VmHost {
        VmHost {
            state_dir: cfg.state_dir,
            owner: cfg.owner,
            qemu_binary: cfg.qemu_binary,
            firecracker_binary: cfg.firecracker_binary,
            journal,
            procs: Mutex::new(HashMap::new()),
        }
    }

    /// Credentials for child tools: the owner's, unless that is root.
    fn tool_ids(&self) -> Option<(u32, u32)> {
        (self.owner != (0, 0)).then_some(self.owner)
    }
}
