//! Where each file a Firecracker configuration names is, as Firecracker
//! sees it (QEMU's twin is `qemu::fds`).
//!
//! Jailed ([`Paths::jailed`], docs/jail.md), Firecracker sees fixed paths
//! in its jail's root: the VM's `run/` bound at `/run` (its API socket,
//! vsock socket and log inside), each drive bound at
//! `/drive-<id>`, the kernel and initrd copied to `/kernel` and
//! `/initrd`. No host path reaches it.
//!
//! Unjailed (`Paths::host`, test support only), the spec's host paths,
//! for the driver's tests of an unjailed Firecracker; the executor
//! launches it jailed ([`super::FirecrackerDriver::launch_jailed`]).

use crate::{API_SOCKET, LaunchSpec, VSOCK_SOCKET};

/// The VM's `run/`, bound read-write at `/run` in the jail.
pub const RUN: &str = "run";
/// The kernel's and initrd's copies in the jail's root.
pub const KERNEL: &str = "kernel";
pub const INITRD: &str = "initrd";
/// Firecracker's own log file, in `run/`.
pub const LOG: &str = "firecracker.log";
/// What a drive's bind is called in the jail's root: this and its id.
pub const DRIVE_PREFIX: &str = "drive-";
/// The longest name a bind in the jail's root may have
/// (`banger_host::jail`'s rule): a drive id is at most this less
/// [`DRIVE_PREFIX`].
pub const MAX_BIND_NAME: usize = 64;

/// Where `PUT /snapshot/create` writes, in `run/` (the slot's, the only
/// directory Firecracker can write): the device state and the memory.
/// Root copies both into the snapshot's own files and removes them.
pub const SAVED_STATE: &str = "saved.vmstate";
pub const SAVED_MEMORY: &str = "saved.memory";
/// A restore's state and memory files, bound read-only in the jail's root.
pub const RESTORE_STATE: &str = "restore-vmstate";
pub const RESTORE_MEMORY: &str = "restore-memory";

/// The name of drive `id`'s bind in the jail's root (`drive-<id>`).
pub fn drive(id: &str) -> String {
    format!("{DRIVE_PREFIX}{id}")
}

/// Every path Firecracker is given, each as Firecracker opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `--api-sock`.
    pub api_socket: String,
    pub kernel: String,
    pub initrd: Option<String>,
    /// One per `LaunchSpec::drives`, in order.
    pub drives: Vec<String>,
    pub log: String,
    /// The vsock device's `uds_path` (guest connections to port N go to
    /// `<vsock>_N`).
    pub vsock: String,
    /// Where a snapshot is saved ([`SAVED_STATE`], [`SAVED_MEMORY`]).
    pub saved_state: String,
    pub saved_memory: String,
    /// What a restore loads ([`RESTORE_STATE`], [`RESTORE_MEMORY`]).
    pub restore_state: String,
    pub restore_memory: String,
}

impl Paths {
    /// The jail's fixed paths for `spec`.
    pub fn jailed(spec: &LaunchSpec) -> Paths {
        let run = |name: &str| format!("/{RUN}/{name}");
        Paths {
            api_socket: run(API_SOCKET),
            kernel: format!("/{KERNEL}"),
            initrd: spec.initrd.as_ref().map(|_| format!("/{INITRD}")),
            drives: spec
                .drives
                .iter()
                .map(|d| format!("/{}", drive(&d.id)))
                .collect(),
            log: run(LOG),
            vsock: run(VSOCK_SOCKET),
            saved_state: run(SAVED_STATE),
            saved_memory: run(SAVED_MEMORY),
            restore_state: format!("/{RESTORE_STATE}"),
            restore_memory: format!("/{RESTORE_MEMORY}"),
        }
    }

    /// The spec's host paths, for Firecracker launched unjailed (the
    /// driver's test-support `launch`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn host(spec: &LaunchSpec) -> Paths {
        let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
        Paths {
            api_socket: text(&spec.api_socket()),
            kernel: text(&spec.kernel),
            initrd: spec.initrd.as_deref().map(text),
            drives: spec.drives.iter().map(|d| text(&d.path)).collect(),
            log: text(&spec.run_dir.join(LOG)),
            vsock: text(&spec.vsock_socket()),
            saved_state: text(&spec.run_dir.join(SAVED_STATE)),
            saved_memory: text(&spec.run_dir.join(SAVED_MEMORY)),
            restore_state: text(&spec.run_dir.join(RESTORE_STATE)),
            restore_memory: text(&spec.run_dir.join(RESTORE_MEMORY)),
        }
    }
}
