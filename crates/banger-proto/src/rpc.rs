//! Public RPC between `banger` (client) and `bangerd` (server).
//!
//! Conversation on one connection:
//! 1. The server checks the peer's uid (SO_PEERCRED) before reading anything.
//!    A refused peer receives one [`ServerMsg::Error`] with
//!    [`ErrorCode::PermissionDenied`](crate::ErrorCode) and the connection closes.
//! 2. The client sends [`ClientHello`]; the server answers [`ServerMsg::Hello`]
//!    or, on a version mismatch, [`ServerMsg::Error`] and closes.
//! 3. The client sends [`Request`]s one at a time. For each, the server streams
//!    zero or more [`ServerMsg::Progress`] and ends with exactly one
//!    [`ServerMsg::Done`] or [`ServerMsg::Error`].
//!
//! A malformed or oversized frame ends the connection after one error reply.

use serde::{Deserialize, Serialize};

use crate::RpcError;
use std::net::Ipv4Addr;

use crate::doctor::DoctorReport;
use crate::image::{ImageRequest, ImageResponse, KernelRequest, KernelResponse};
use crate::net::TeardownReport;
use crate::vm::{OpRequest, OpResponse, VmRequest, VmResponse};
use crate::vmops::SnapshotBackend;
use crate::workspace::{WorkspaceRequest, WorkspaceResponse};

/// Version of this RPC. Bump on any incompatible change to the types below.
pub const PROTOCOL_VERSION: u32 = 1;

/// First message from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientHello {
    pub protocol: u32,
    /// Version of the client binary, for the daemon's logs.
    pub client_version: String,
}

impl ClientHello {
    pub fn current() -> Self {
        ClientHello {
            protocol: PROTOCOL_VERSION,
            client_version: crate::BANGER_VERSION.to_string(),
        }
    }
}

/// How the daemon was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonMode {
    /// `bangerd --dev`: one root process, privileged ops in-process.
    Dev,
    /// Installed service: owner-user daemon plus the `bangerd-root` helper.
    System,
}

impl std::fmt::Display for DaemonMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DaemonMode::Dev => "dev",
            DaemonMode::System => "system",
        })
    }
}

/// The server's answer to a valid [`ClientHello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerHello {
    pub protocol: u32,
    pub daemon_version: String,
    pub mode: DaemonMode,
}

/// A request from the CLI. New capabilities add variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    content = "params",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Request {
    /// Liveness and identity of the daemon.
    Ping,
    /// Run the host checks; streams one progress event per check.
    Doctor,
    /// The host network banger manages: bridge, DNS, NAT, tap pool.
    HostStatus,
    /// Remove every host object banger created. Idempotent.
    HostTeardown,
    /// `banger image ...`.
    Image(ImageRequest),
    /// `banger kernel ...`.
    Kernel(KernelRequest),
    /// `banger vm ...`.
    Vm(VmRequest),
    /// `banger op ...`.
    Op(OpRequest),
    /// `banger workspace ...`.
    Workspace(WorkspaceRequest),
    /// `banger snapshot ...`.
    Snapshot(crate::snapshot::SnapshotRequest),
}

impl Request {
    /// Stable name for logs.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Doctor => "doctor",
            Request::HostStatus => "host_status",
            Request::HostTeardown => "host_teardown",
            Request::Image(r) => r.method(),
            Request::Kernel(r) => r.method(),
            Request::Vm(r) => r.method(),
            Request::Op(r) => r.method(),
            Request::Workspace(r) => r.method(),
            Request::Snapshot(r) => r.method(),
        }
    }
}

/// Successful result of a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "result",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Response {
    Pong(DaemonInfo),
    Doctor(DoctorReport),
    HostStatus(HostStatus),
    HostTeardown(TeardownReport),
    Image(ImageResponse),
    Kernel(KernelResponse),
    Vm(VmResponse),
    Op(OpResponse),
    Workspace(WorkspaceResponse),
    Snapshot(crate::snapshot::SnapshotResponse),
}

/// `banger host status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostStatus {
    /// Whether the network is set up; `error` says why not.
    pub ready: bool,
    pub error: Option<String>,
    pub bridge: String,
    pub bridge_present: bool,
    /// Guest network, e.g. `172.30.0.0/24`.
    pub subnet: String,
    /// The bridge's own address (gateway and DNS for guests).
    pub bridge_address: Ipv4Addr,
    /// Where the `.vm` DNS server listens, when it runs.
    pub dns_address: Option<String>,
    /// `.vm` records currently published.
    pub dns_records: usize,
    pub nat: NatStatus,
    pub tap_pool: TapPoolStatus,
    /// Whether `~vm` is routed to banger's DNS by systemd-resolved.
    pub resolver_routing: bool,
    /// How new VM root disks are made here: `dm_snapshot`, `reflink` or
    /// `sparse_copy` (`SnapshotBackend::select`).
    pub snapshot_backend: SnapshotBackend,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatStatus {
    /// banger's nft tables are in place.
    pub firewall: bool,
    pub ip_forward: bool,
    /// Guest addresses that get masquerade.
    pub nat_guests: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapPoolStatus {
    /// Free taps the pool keeps ready.
    pub target: u32,
    pub free: Vec<String>,
    pub assigned: Vec<TapAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapAssignment {
    pub tap: String,
    pub vm: String,
    pub ip: Ipv4Addr,
    pub nat: bool,
}

/// Identity of a running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonInfo {
    pub daemon_version: String,
    pub protocol: u32,
    pub mode: DaemonMode,
    pub pid: u32,
    /// Uid the daemon runs as.
    pub uid: u32,
    pub state_dir: String,
    pub socket: String,
}

/// One step of a long operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Short stable identifier of the current stage (`"kvm"`, `"download"`).
    pub stage: String,
    /// Human-readable description of what is happening.
    pub message: String,
    /// Units done so far (items or bytes).
    pub done: u64,
    /// Total units, when known.
    pub total: Option<u64>,
}

/// Every message the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "body",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ServerMsg {
    Hello(ServerHello),
    Progress(Progress),
    Done(Response),
    Error(RpcError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn request_wire_shape_is_stable() {
        assert_eq!(
            serde_json::to_string(&Request::Ping).unwrap(),
            r#"{"method":"ping"}"#
        );
        let r: Request = serde_json::from_str(r#"{"method":"doctor"}"#).unwrap();
        assert_eq!(r, Request::Doctor);
    }

    #[test]
    fn unknown_method_and_unknown_fields_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"method":"rm_rf"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"method":"ping","extra":1}"#).is_err());
        assert!(
            serde_json::from_str::<ClientHello>(
                r#"{"protocol":1,"client_version":"x","root":true}"#
            )
            .is_err()
        );
    }

    #[test]
    fn error_messages_round_trip() {
        let m = ServerMsg::Error(RpcError::new(ErrorCode::NotFound, "vm dev not found"));
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ServerMsg>(&s).unwrap(), m);
    }
}
