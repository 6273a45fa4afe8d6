//! Errors of the VM operations.

use banger_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum VmOpError {
    // ---- refusals ----
    #[error(
        "this executor was started without a VM state directory; VM operations are unavailable"
    )]
    NotConfigured,
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("refusing the state directory {path}: {reason}")]
    StateDirRefused { path: String, reason: String },
    #[error("{what} {path} does not exist")]
    Missing { what: &'static str, path: String },
    #[error("{what} {path} already exists; refusing to overwrite it")]
    Exists { what: &'static str, path: String },
    #[error("VM {vm_id} has a running VMM (pid {pid}); stop it first")]
    Running { vm_id: String, pid: u32 },
    /// A pause or resume of a VM no VMM of which runs.
    #[error("VM {vm_id} has no running VMM")]
    NotRunning { vm_id: String },
    /// Another operation has the VM's VMM out of the table: `doing` is
    /// "stopped" (a stop or kill) or "paused, resumed or snapshotted".
    #[error("the VMM of VM {vm_id} (pid {pid}) is being {doing}; ask again once that is done")]
    Busy {
        vm_id: String,
        pid: u32,
        doing: &'static str,
    },
    /// A disk another open file description has locked (`lock_disk`).
    #[error(
        "VM disk {path} is in use: another process holds its lock (another VM's VMM, a disk \
         tool, or a process of its owner's); one VMM or tool per disk at a time"
    )]
    DiskLocked { path: String },
    #[error("{vmm} is not usable here: {reason}")]
    VmmUnavailable { vmm: &'static str, reason: String },
    #[error(
        "no free VM jail uid: the install's jail range {base}:{count} has {running} VMMs \
         running or launching{} in its {slots} VM slots (slot 0 is the disk tools'); stop a VM, \
         or reinstall with a larger range (`banger system install --jail-uids BASE:COUNT`)",
        if *passed > 0 { format!(" and {passed} slots passed over (a held tap of its uid)") } else { String::new() }
    )]
    NoJailSlot {
        base: u32,
        count: u32,
        running: usize,
        passed: usize,
        slots: u32,
    },
    #[error("the {backend} snapshot backend cannot be used here: {reason}")]
    SnapshotUnsupported {
        backend: &'static str,
        reason: String,
    },

    // ---- host failures ----
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Tool {
        what: String,
        #[source]
        source: banger_host::runner::RunError,
    },
    #[error("writing guest files into {disk}: {detail}")]
    GuestFs { disk: String, detail: String },
    #[error("starting the VMM of VM {vm_id}")]
    Launch {
        vm_id: String,
        #[source]
        source: banger_vmm::VmmError,
    },
    #[error(
        "the VMM of VM {vm_id} (pid {pid}) started, but its start time cannot be read \
         from /proc/{pid}/stat, so it could not be re-adopted after a restart of the \
         executor; it was killed (is /proc hiding the VMM from the executor?)"
    )]
    StartTimeUnreadable { vm_id: String, pid: u32 },
    #[error("removing the root-disk devices of VM {vm_id}: {}", errors.join("; "))]
    SnapshotTeardown { vm_id: String, errors: Vec<String> },
    #[error("the cgroup of VM {vm_id}")]
    Cgroup {
        vm_id: String,
        #[source]
        source: super::cgroup::CgroupError,
    },
    /// A tap's tun owner not changed (`name`: the tap, or every
    /// journaled tap when listing the links failed).
    #[error("the VM tap hand-over ({name} to uid {uid})")]
    HandTap {
        name: String,
        uid: u32,
        #[source]
        source: banger_host::net::NetError,
    },
    #[error("the executor no longer watches VM {vm_id}'s guest for readiness: {reason}")]
    Unwatched { vm_id: String, reason: String },
    #[error("stopping the VMM of VM {vm_id}")]
    Stop {
        vm_id: String,
        #[source]
        source: banger_vmm::VmmError,
    },
    /// A pause or resume the VMM failed or did not confirm (`what`:
    /// "pausing" or "resuming").
    #[error("{what} the VMM of VM {vm_id}")]
    Vcpus {
        vm_id: String,
        what: &'static str,
        #[source]
        source: banger_vmm::VmmError,
    },
}

impl VmOpError {
    pub fn code(&self) -> ErrorCode {
        use VmOpError::*;
        match self {
            Invalid { .. } => ErrorCode::BadRequest,
            StateDirRefused { .. } => ErrorCode::PermissionDenied,
            Missing { .. } => ErrorCode::NotFound,
            Exists { .. } => ErrorCode::AlreadyExists,
            Running { .. } | NotRunning { .. } | Busy { .. } | DiskLocked { .. } => {
                ErrorCode::InvalidState
            }
            // Adopted without a control connection: nothing to ask.
            Vcpus {
                source: banger_vmm::VmmError::NoControl { .. },
                ..
            } => ErrorCode::Unavailable,
            // A process holds the tap (another VMM's, or one left over).
            HandTap { source, .. } if super::taps::busy(source) => ErrorCode::InvalidState,
            NotConfigured
            | VmmUnavailable { .. }
            | SnapshotUnsupported { .. }
            | NoJailSlot { .. }
            | Unwatched { .. } => ErrorCode::Unavailable,
            Io { .. }
            | Tool { .. }
            | GuestFs { .. }
            | Launch { .. }
            | StartTimeUnreadable { .. }
            | Stop { .. }
            | Vcpus { .. }
            | Cgroup { .. }
            | HandTap { .. }
            | SnapshotTeardown { .. } => ErrorCode::Internal,
        }
    }
}

pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> VmOpError {
    let path = path.display().to_string();
    move |source| VmOpError::Io { what, path, source }
}

pub(crate) fn journal_err(e: crate::journal::JournalError) -> VmOpError {
    VmOpError::Io {
        what: "updating the executor journal",
        path: String::new(),
        source: std::io::Error::other(banger_proto::error::chain(&e).join(": ")),
    }
}
