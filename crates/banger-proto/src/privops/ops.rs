//! The privileged operations, one request type each, grouped by domain.
//!
//! [`PrivOp`](super::PrivOp) is one of four domain enums (probes, network,
//! VM, image); each variant wraps the operation's own request type, and
//! that type names its answer through [`PrivCall`]. The wire form is the
//! flat `{"op": NAME, "args": ..}` of [`super::wire`], unchanged by the
//! grouping.

use std::net::Ipv4Addr;

use super::call::PrivCall;
use super::probe::{DeviceProbe, HostDevice, JailScopeProbe, KvmProbe, ToolProbe, VmmSupport};
use super::{BuiltImageFiles, PrivOp};
use crate::net::{
    BridgeOutcome, BridgeSpec, DnsSockets, FirewallSpec, NetStatus, ResolverSpec, TapOutcome,
    TapSpec, TeardownReport,
};
use crate::vmops::{
    GuestFilesSpec, LaunchVmSpec, SnapshotSaved, SnapshotVmSpec, VmDisksOutcome, VmDisksSpec,
    VmStopped, VmmState,
};

/// One domain enum: its variants (each wrapping the op's request type),
/// the op names, the conversions into [`PrivOp`] and each request type's
/// [`PrivCall`] (wire name and answer type), written once here.
macro_rules! domain {
    (
        $(#[$meta:meta])*
        $domain:ident in $outer:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident($req:ty) = $name:literal -> $answer:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $domain {
            $( $(#[$vmeta])* $variant($req), )*
        }

        impl $domain {
            /// The operation's wire name (the executor's lock key, the
            /// helper's audit trail).
            pub fn name(&self) -> &'static str {
                match self {
                    $( $domain::$variant(_) => $name, )*
                }
            }
        }

        impl From<$domain> for PrivOp {
            fn from(op: $domain) -> PrivOp {
                PrivOp::$outer(op)
            }
        }

        $(
            impl From<$req> for PrivOp {
                fn from(request: $req) -> PrivOp {
                    PrivOp::$outer($domain::$variant(request))
                }
            }

            impl PrivCall for $req {
                type Response = $answer;
                const NAME: &'static str = $name;
            }
        )*
    };
}

domain! {
    /// Read-only questions about the host.
    ProbeOp in Probe {
        /// Open `/dev/kvm`, write the advertised `IA32_ARCH_CAPABILITIES`
        /// to a vCPU and run a tiny real-mode guest to learn whether a
        /// stock (non-PVM) guest can run.
        /// Preconditions: none. Side effects: none that outlive the call.
        ProbeKvm(ProbeKvm) = "probe_kvm" -> KvmProbe,
        /// Report whether a host device node exists and can be opened
        /// read-write. Preconditions: none. The device path is derived
        /// from the enum, never supplied. Side effects: none (the fd is
        /// closed immediately).
        ProbeDevice(ProbeDevice) = "probe_device" -> DeviceProbe,
        /// Report whether `nft` is installed and can list tables in the
        /// helper's network namespace. Preconditions: none. Side effects:
        /// none.
        ProbeNftables(ProbeNftables) = "probe_nftables" -> ToolProbe,
        /// Report whether the jails the executor makes (disk tools, VMMs)
        /// enter the Landlock scope on abstract UNIX sockets and signals,
        /// and if not, why: tried in the executor's own process, under
        /// whatever seccomp filter surrounds it. Preconditions: none. Side
        /// effects: none (the ruleset made is closed at once).
        ProbeJailScope(ProbeJailScope) = "probe_jail_scope" -> JailScopeProbe,
        /// What this executor can run: its KVM verdict (the tiny-guest
        /// test, kept once it passes) and, for each VMM, the binary it
        /// would launch or why it has none. The daemon chooses a VM's VMM
        /// from this, never from facts of its own. Preconditions: none.
        /// Side effects: a passing KVM probe is kept for the executor's
        /// life (any other verdict for a minute), and every launch uses it.
        ProbeVmms(ProbeVmms) = "probe_vmms" -> VmmSupport,
    }
}

domain! {
    /// The host network: bridge, taps, firewall, `.vm` DNS and resolver.
    NetOp in Net {
        /// Create banger's bridge if missing (netlink), set its address,
        /// bring it up, enable IPv4 forwarding, and journal it. Idempotent.
        /// Preconditions: `name` starts with `banger` and is a valid
        /// interface name; the address is in a private range, the prefix
        /// is /16../29, and the subnet overlaps no route of another
        /// interface. A same-named interface that the journal does not
        /// list is refused, never adopted.
        EnsureBridge(BridgeSpec) = "ensure_bridge" -> BridgeOutcome,
        /// Create a persistent tap (tun ioctls) owned by `owner_uid`,
        /// attached to the bridge, up; journal it. Idempotent.
        /// Preconditions: `name` is `bangertap<N>`; the bridge is journaled.
        EnsureTap(TapSpec) = "ensure_tap" -> TapOutcome,
        /// Delete a tap. Preconditions: the journal lists it. Absent is
        /// success.
        DeleteTap(DeleteTap) = "delete_tap" -> (),
        /// Replace banger's nftables tables with exactly `spec`, in one
        /// batch. Preconditions: the bridge and every tap are journaled;
        /// every guest address lies inside the bridge subnet and is neither
        /// the network, broadcast nor bridge address; addresses and taps
        /// are unique.
        SyncFirewall(FirewallSpec) = "sync_firewall" -> (),
        /// Bind UDP and TCP sockets on `address`:53 and pass them back
        /// (SCM_RIGHTS). Preconditions: `address` is a journaled bridge's
        /// address.
        OpenDnsSockets(OpenDnsSockets) = "open_dns_sockets" -> DnsSockets,
        /// Route `~vm` to `dns` on the bridge link through
        /// systemd-resolved. Preconditions: the bridge is journaled; `dns`
        /// is its address.
        ApplyResolver(ResolverSpec) = "apply_resolver" -> (),
        /// Report the journaled objects as the kernel sees them. Read-only.
        NetStatus(QueryNetStatus) = "net_status" -> NetStatus,
        /// Remove every host object in the journal: taps, bridges, banger's
        /// nft tables, resolver link settings. Best-effort and idempotent.
        Teardown(Teardown) = "teardown" -> TeardownReport,
    }
}

domain! {
    /// One VM's disks and VMM. Every one names the VM by id; the executor
    /// derives every path from it.
    VmOp in Vm {
        /// Create the VM's root and work disks (see [`VmDisksSpec`]).
        CreateVmDisks(VmDisksSpec) = "create_vm_disks" -> VmDisksOutcome,
        /// Write files into the VM's root disk (ext4 mutation, VM stopped).
        /// Preconditions: every path is absolute and normal, every mode ≤
        /// 0o7777, no VMM of this VM runs.
        WriteGuestFiles(GuestFilesSpec) = "write_guest_files" -> (),
        /// Grow the VM's work disk (file and ext4) to `bytes`. Refused
        /// while its VMM runs, and when `bytes` is smaller than the disk.
        GrowWorkDisk(GrowWorkDisk) = "grow_work_disk" -> (),
        /// Delete the VM's disks and runtime files. Refused while its VMM
        /// runs. Absent is success.
        DeleteVmDisks(DeleteVmDisks) = "delete_vm_disks" -> (),
        /// Spawn the VMM and keep its process (pidfd) and journal entry.
        LaunchVm(LaunchVmSpec) = "launch_vm" -> VmmState,
        /// Graceful stop (guest power-off), killed after `timeout_secs`;
        /// answered within [`STOP_OVERHEAD_MAX_SECS`] more.
        StopVm(StopVm) = "stop_vm" -> VmStopped,
        /// Kill the VMM now. Not running is success.
        KillVm(KillVm) = "kill_vm" -> VmStopped,
        /// Whether the VM's VMM runs; re-adopts a journaled process that is
        /// still the same process (pid and start time) after an executor
        /// restart.
        VmmStatus(VmmStatus) = "vmm_status" -> VmmState,
        /// Wait up to `timeout_ms` (at most [`WAIT_READY_MAX_MS`]) for the
        /// VM's guest to report ready, or for its VMM to exit, as its
        /// driver observes it (an event, not a poll), then answer as
        /// `vmm_status` does. Takes no lock: a stop is never held up.
        WaitVmReady(WaitVmReady) = "wait_vm_ready" -> VmmState,
        /// Pause the VM's vCPUs; its VMM process keeps running (and keeps
        /// its journal entry, tap and cgroup), its guest stops where it is
        /// and writes nothing to its console meanwhile. Pausing a paused
        /// VM is success. Preconditions: `vm_id` is a VM id; a VMM of the
        /// VM runs (else refused as not running) and no stop of it is in
        /// flight (else refused as being stopped). Answers once the VMM
        /// reports itself paused; every exchange with it is bounded.
        PauseVm(PauseVm) = "pause_vm" -> (),
        /// Resume the vCPUs of a VM paused by [`VmOp::PauseVm`]. Resuming
        /// a VM that runs is success. Preconditions and refusals as
        /// [`VmOp::PauseVm`]'s. A `StopVm` of a paused VM resumes it before
        /// it asks the guest to power off.
        ResumeVm(ResumeVm) = "resume_vm" -> (),
        /// Save the VM's memory and device state and copy its disks into
        /// the snapshot's directory (see [`SnapshotVmSpec`]). QEMU only;
        /// Firecracker is refused. Preconditions: both ids are ids; a VMM
        /// of the VM runs and no stop or pause of it is in flight; the
        /// snapshot directory is the owner's and holds none of the files.
        /// On failure the files this call made are removed and a guest
        /// that ran runs again; a helper killed meanwhile leaves them
        /// (the daemon records a snapshot only once this answered, and
        /// removes directories it has no record of).
        SnapshotVm(SnapshotVmSpec) = "snapshot_vm" -> SnapshotSaved,
    }
}

domain! {
    /// Images root builds for the owner.
    ImageOp in Image {
        /// Build the default Debian image of `suite` (`banger-imagebuild
        /// debian`: mmdebstrap, the distribution's kernel, the guest
        /// contract) into root's image cache, or find it there, and pass
        /// back read-only descriptors of its root filesystem, kernel and
        /// initrd (SCM_RIGHTS). The build runs as root outside the helper's
        /// own sandbox (a transient systemd unit when systemd manages the
        /// host), from the mirror and package list root's
        /// `banger-imagebuild` defaults to; the request chooses nothing but
        /// the suite.
        /// Preconditions: `suite` is a Debian suite name (letters, digits,
        /// `-`, at most 32 bytes). Side effects: a cache entry under root's
        /// cache directory, shared with `sudo banger-imagebuild debian`.
        BuildDebianImage(BuildDebianImage) = "build_debian_image" -> BuiltImageFiles,
    }
}

/// The request of [`ProbeOp::ProbeKvm`]; it carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeKvm;

/// The request of [`ProbeOp::ProbeDevice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeDevice {
    pub device: HostDevice,
}

/// The request of [`ProbeOp::ProbeNftables`]; it carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeNftables;

/// The request of [`ProbeOp::ProbeJailScope`]; it carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeJailScope;

/// The request of [`ProbeOp::ProbeVmms`]; it carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeVmms;

/// The request of [`NetOp::DeleteTap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTap {
    pub name: String,
}

/// The request of [`NetOp::OpenDnsSockets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenDnsSockets {
    pub address: Ipv4Addr,
}

/// The request of [`NetOp::NetStatus`] (the answer is [`NetStatus`]); it
/// carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryNetStatus;

/// The request of [`NetOp::Teardown`]; it carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Teardown;

/// The request of [`VmOp::GrowWorkDisk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowWorkDisk {
    pub vm_id: String,
    pub bytes: u64,
}

/// The request of [`VmOp::DeleteVmDisks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteVmDisks {
    pub vm_id: String,
}

/// The request of [`VmOp::StopVm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopVm {
    pub vm_id: String,
    pub timeout_secs: u32,
}

/// The most a [`VmOp::StopVm`] takes beyond its own `timeout_secs`, in
/// seconds: a caller waits this long past the timeout for the answer.
/// The executor's bound on each step of the stop, whatever the VMM
/// answers or withholds:
/// - asking the guest to power off (after resuming its vCPUs): at most
///   10 s (Firecracker: `PATCH /vm` and `SendCtrlAltDel` within one API
///   deadline, 10 s, 2 s for an adopted one; QEMU: four QMP exchanges of
///   2 s), before the timeout starts;
/// - or, when a pause or resume of the VM is in flight: waiting for it
///   within the timeout; once that has run out, the VMM is killed and the
///   pause's call (which then ends on its closed connection, or by its
///   own deadlines: 20.2 s at most) waited for at most 30 s more;
/// - the kill: at most 5 s for the process to be seen gone;
/// - forgetting the VMM: at most 2 s for its cgroup to empty.
///
/// The longest path is 30 + 5 + 2 s; with 3 s for locks and the answer,
/// 40 s.
pub const STOP_OVERHEAD_MAX_SECS: u64 = 40;

/// The most a [`VmOp::SnapshotVm`] takes to answer, in seconds: the save
/// (at most 120 s) and the copies of both disks, which are sparse copies
/// of whole disks where the state file system has no reflink.
pub const SNAPSHOT_VM_MAX_SECS: u64 = 1800;

/// The most a [`VmOp::LaunchVm`] that restores a snapshot takes to
/// answer, in seconds: QEMU's start, loading the state and the guest
/// agent's identity, each within its own deadline (`banger_vmm::qemu`
/// checks that they fit).
pub const RESTORE_LAUNCH_MAX_SECS: u64 = 240;

/// The request of [`VmOp::KillVm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillVm {
    pub vm_id: String,
}

/// The request of [`VmOp::PauseVm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseVm {
    pub vm_id: String,
}

/// The request of [`VmOp::ResumeVm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeVm {
    pub vm_id: String,
}

/// The request of [`VmOp::VmmStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmStatus {
    pub vm_id: String,
}

/// The request of [`VmOp::WaitVmReady`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitVmReady {
    pub vm_id: String,
    pub timeout_ms: u32,
}

/// The longest [`WaitVmReady`] wait: the caller asks again (a heartbeat
/// for its own client in between).
pub const WAIT_READY_MAX_MS: u32 = 30_000;

/// The request of [`ImageOp::BuildDebianImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDebianImage {
    pub suite: String,
}

impl VmOp {
    /// The VM the operation is about.
    pub fn vm_id(&self) -> &str {
        match self {
            VmOp::CreateVmDisks(s) => &s.vm_id,
            VmOp::WriteGuestFiles(s) => &s.vm_id,
            VmOp::GrowWorkDisk(r) => &r.vm_id,
            VmOp::DeleteVmDisks(r) => &r.vm_id,
            VmOp::LaunchVm(s) => &s.vm_id,
            VmOp::StopVm(r) => &r.vm_id,
            VmOp::KillVm(r) => &r.vm_id,
            VmOp::VmmStatus(r) => &r.vm_id,
            VmOp::WaitVmReady(r) => &r.vm_id,
            VmOp::PauseVm(r) => &r.vm_id,
            VmOp::ResumeVm(r) => &r.vm_id,
            VmOp::SnapshotVm(r) => &r.vm_id,
        }
    }
}
