//! Public RPC for VMs and asynchronous operations (`banger vm …`, `banger op …`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::vmops::{SnapshotBackend, VmmKind};

/// `banger vm …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum VmRequest {
    Create(CreateVm),
    List,
    Show {
        name: String,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
        timeout_secs: Option<u32>,
        /// Suspend to disk (`vm stop --save`): the guest's memory and
        /// device state saved, then its VMM killed; the next `vm start`
        /// resumes it where it was.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        save: bool,
    },
    Restart {
        name: String,
    },
    Kill {
        name: String,
    },
    /// Pause the VM's vCPUs (it keeps its memory, address and VMM).
    Pause {
        name: String,
    },
    /// Resume a paused VM.
    Resume {
        name: String,
    },
    /// Save a running or paused QEMU VM as a snapshot named `snapshot`
    /// (`NAME-1`, `NAME-2`, ... when absent); it runs on (or stays paused).
    Snapshot {
        name: String,
        snapshot: Option<String>,
    },
    Remove {
        name: String,
    },
    Set(SetVm),
    /// Where and how to reach the guest over SSH (the CLI runs `ssh`).
    Ssh {
        name: String,
    },
    /// The serial console log: the last `lines` lines.
    Logs {
        name: String,
        lines: u32,
    },
    Ports {
        name: String,
    },
    Stats {
        name: String,
    },
    /// The warm pool: per image, its size and its clones (`vm pool`).
    Pool,
}

impl VmRequest {
    /// Stable name for logs.
    pub fn method(&self) -> &'static str {
        match self {
            VmRequest::Create(_) => "vm_create",
            VmRequest::List => "vm_list",
            VmRequest::Show { .. } => "vm_show",
            VmRequest::Start { .. } => "vm_start",
            VmRequest::Stop { .. } => "vm_stop",
            VmRequest::Restart { .. } => "vm_restart",
            VmRequest::Kill { .. } => "vm_kill",
            VmRequest::Pause { .. } => "vm_pause",
            VmRequest::Resume { .. } => "vm_resume",
            VmRequest::Snapshot { .. } => "vm_snapshot",
            VmRequest::Remove { .. } => "vm_remove",
            VmRequest::Set(_) => "vm_set",
            VmRequest::Ssh { .. } => "vm_ssh",
            VmRequest::Logs { .. } => "vm_logs",
            VmRequest::Ports { .. } => "vm_ports",
            VmRequest::Stats { .. } => "vm_stats",
            VmRequest::Pool => "vm_pool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    pub name: String,
    /// Image name; the configured default when absent. A reference (an OCI
    /// `registry/repository[:tag|@digest]`, or a bundle URL or absolute
    /// path) names the image pulled from it, pulled first when it is not
    /// here yet.
    pub image: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_bytes: Option<u64>,
    /// Per-VM NAT; the configured default when absent.
    pub nat: Option<bool>,
    pub vmm: Option<VmmKind>,
    /// Boot after creating (default true).
    pub start: bool,
    /// Stream progress until the VM runs (or fails) before answering.
    pub wait: bool,
    /// Absolute path in a git checkout to prepare as the VM's workspace once
    /// it runs (`banger workspace prepare`); checked before anything is
    /// allocated.
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Pull `image` over plain HTTP (a registry on loopback only), as
    /// `image pull --insecure`.
    #[serde(default)]
    pub insecure: bool,
    /// Restore this snapshot instead of booting: the image, VMM, vCPUs,
    /// memory and disk size are the snapshot's (others are refused), and
    /// the VM starts (`start` must be true).
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVm {
    pub name: String,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_bytes: Option<u64>,
    pub nat: Option<bool>,
}

word_enum! {
    /// Lifecycle state of a VM (the daemon's store records it in the same
    /// words). Which transitions are legal is the VM service's to decide.
    pub enum VmState ("VM state") {
        Created => "created",
        Starting => "starting",
        Running => "running",
        /// Its vCPUs are paused (`vm pause`); the VMM, tap, lease and
        /// memory stay.
        Paused => "paused",
        Stopping => "stopping",
        Stopped => "stopped",
        Failed => "failed",
    }
}

impl VmState {
    /// States in which the VM's VMM may run (a start or stop in flight
    /// included): its tap, its pid and its settling belong to these.
    pub fn vmm_may_run(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Paused | VmState::Stopping
        )
    }
}

/// A VM as `vm ls` / `vm show` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmInfo {
    pub id: String,
    pub name: String,
    pub state: VmState,
    pub state_reason: Option<String>,
    pub image: String,
    pub vmm: VmmKind,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub nat: bool,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
    /// `NAME.vm`.
    pub dns_name: String,
    pub tap: Option<String>,
    pub pid: Option<u32>,
    /// A stopped VM whose memory was saved (`vm stop --save`): `vm start`
    /// resumes it instead of booting.
    #[serde(default)]
    pub saved: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Answer to `vm create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmCreated {
    pub vm: VmInfo,
    /// The create operation (`banger op show ID`).
    pub operation: String,
    /// The VM is a warm clone taken from the pool (restored earlier and
    /// paused), not one built for this create.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_pool: bool,
}

/// One image's warm pool (`banger vm pool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEntry {
    pub image: String,
    /// How many clones the pool keeps of it (the owner's config).
    pub size: u32,
    /// Clones restored and paused, ready to be taken.
    pub ready: u32,
    /// Clones being made.
    pub filling: u32,
    /// The snapshot clones are restored from, once made.
    pub snapshot: Option<String>,
    /// Why the pool is not filling: the last fill's failure (and when the
    /// next try is), or why no clone would be taken here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// How to SSH into a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTarget {
    pub name: String,
    pub ip: Ipv4Addr,
    pub user: String,
    /// Private key the CLI passes with `-i`.
    pub identity: String,
    /// banger-managed known_hosts holding exactly this guest's host key.
    pub known_hosts: String,
    /// Host key alias used in `known_hosts` (`NAME.vm`).
    pub host_key_alias: String,
    /// The VM's SSH master socket (OpenSSH `ControlPath`), in a directory
    /// of the daemon's user: the CLI shares it only when that user is its
    /// own. Absent when the daemon keeps none for the VM.
    #[serde(default)]
    pub control_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmLogs {
    pub name: String,
    /// The serial log file (for `--follow`).
    pub path: String,
    pub text: String,
}

/// One listening socket in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestPort {
    /// `tcp` or `udp`.
    pub proto: String,
    pub address: String,
    pub port: u16,
    pub process: Option<String>,
    /// `NAME.vm:PORT`.
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPorts {
    pub name: String,
    pub ports: Vec<GuestPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStats {
    pub name: String,
    pub running: bool,
    /// CPU time of the VMM process (user + system), milliseconds.
    pub cpu_ms: Option<u64>,
    /// Resident memory of the VMM process, bytes.
    pub rss_bytes: Option<u64>,
    /// Space the disks take on the host, bytes.
    pub root_disk_allocated: Option<u64>,
    pub work_disk_allocated: Option<u64>,
    /// Counters of the VM's tap (host view: rx = from the guest).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
    /// Rates over the recent samples of this run of its VMM, when there
    /// are two or more.
    #[serde(default)]
    pub rates: Option<VmRates>,
    /// The daemon's samples of this VM, oldest first: one every few
    /// seconds while it runs, the last minutes of them kept.
    #[serde(default)]
    pub history: Vec<VmSample>,
}

/// One sample of a running VM's counters (`vm stats`' history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSample {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The VMM process sampled: rates never span two runs of a VM.
    pub pid: Option<u32>,
    pub cpu_ms: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub root_disk_allocated: Option<u64>,
    pub work_disk_allocated: Option<u64>,
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// Rates between the first and last samples of one run of a VM's VMM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRates {
    /// How long the samples span, milliseconds.
    pub window_ms: u64,
    /// CPU time the VMM used per second of wall time, milliseconds (1000:
    /// one host CPU busy).
    pub cpu_ms_per_s: Option<u64>,
    pub net_rx_bytes_per_s: Option<u64>,
    pub net_tx_bytes_per_s: Option<u64>,
}

/// Result of a [`VmRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum VmResponse {
    Created(VmCreated),
    List(Vec<VmInfo>),
    Vm(VmInfo),
    Removed { name: String },
    Ssh(SshTarget),
    Logs(VmLogs),
    Ports(VmPorts),
    Stats(VmStats),
    Snapshot(crate::snapshot::SnapshotInfo),
    Pool(Vec<PoolEntry>),
}

/// Result of an [`OpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum OpResponse {
    List(Vec<OpInfo>),
    Op(OpInfo),
}

/// `banger op …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpRequest {
    List,
    Show {
        id: String,
    },
    /// Stream progress until the operation finishes.
    Wait {
        id: String,
    },
}

impl OpRequest {
    pub fn method(&self) -> &'static str {
        match self {
            OpRequest::List => "op_list",
            OpRequest::Show { .. } => "op_show",
            OpRequest::Wait { .. } => "op_wait",
        }
    }
}

word_enum! {
    /// What an asynchronous operation does.
    pub enum OpKind ("operation kind") {
        /// `vm create`: the VM's disks, guest files and first boot.
        VmCreate => "vm.create",
        /// `vm start`.
        VmStart => "vm.start",
    }
}

word_enum! {
    /// State of an asynchronous operation.
    pub enum OpState ("operation state") {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpInfo {
    pub id: String,
    pub kind: OpKind,
    pub vm: Option<String>,
    pub state: OpState,
    pub stage: Option<String>,
    pub done: u64,
    pub total: Option<u64>,
    pub error: Option<Vec<String>>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vmm_may_run_while_starting_running_paused_or_stopping() {
        let may: Vec<&str> = VmState::ALL
            .iter()
            .filter(|s| s.vmm_may_run())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(may, ["starting", "running", "paused", "stopping"]);
    }

    #[test]
    fn wire_shape() {
        let r = VmRequest::Stop {
            name: "dev".into(),
            timeout_secs: None,
            save: false,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"verb":"stop","name":"dev","timeout_secs":null}"#
        );
        assert!(serde_json::from_str::<VmRequest>(r#"{"verb":"rm_rf","name":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<VmRequest>(r#"{"verb":"show","name":"x","path":"/"}"#).is_err()
        );
    }

    /// States and kinds cross as the words they were as strings: the JSON
    /// of `vm ls` and `op ls` is unchanged, and the words are the store's.
    #[test]
    fn states_and_kinds_are_their_words() {
        fn words<T: Serialize + std::fmt::Display + std::str::FromStr>(all: &[T]) -> String
        where
            T::Err: std::fmt::Debug,
        {
            all.iter()
                .map(|v| {
                    let json = serde_json::to_string(v).unwrap();
                    assert_eq!(json, format!("\"{v}\""));
                    assert_eq!(
                        v.to_string().parse::<T>().unwrap().to_string(),
                        v.to_string()
                    );
                    v.to_string()
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
        assert_eq!(
            words(VmState::ALL),
            "created starting running paused stopping stopped failed"
        );
        assert_eq!(words(OpState::ALL), "running succeeded failed");
        assert_eq!(words(OpKind::ALL), "vm.create vm.start");
        assert_eq!(words(VmmKind::ALL), "firecracker qemu");
        assert_eq!(
            words(SnapshotBackend::ALL),
            "dm_snapshot reflink sparse_copy"
        );
        assert_eq!(
            "frozen".parse::<VmState>().unwrap_err(),
            "unknown VM state \"frozen\", expected one of created, starting, running, \
             paused, stopping, stopped, failed"
        );
        assert!(serde_json::from_str::<VmState>(r#""frozen""#).is_err());
        assert_eq!(format!("[{:<9}]", VmState::Running), "[running  ]");
    }
}
