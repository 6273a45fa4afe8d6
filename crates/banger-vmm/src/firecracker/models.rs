//! Request and response bodies of the Firecracker API (v1.16.1), as typed
//! serde structs, and the configuration plan the driver sends.
//!
//! Field names and optionality follow the `definitions` section of
//! `third_party/firecracker/firecracker-v1.16.1.yaml`; the tests validate every
//! body [`config_plan`] produces against that schema. Optional fields the
//! driver does not set are omitted, so Firecracker applies its defaults.

use serde::{Deserialize, Serialize};

use super::paths::Paths;
use crate::LaunchSpec;

/// `Logger`: where Firecracker writes its own log (not the guest console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logger {
    pub log_path: String,
    pub level: LogLevel,
    pub show_level: bool,
    pub show_log_origin: bool,
}

/// `Logger.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// `MachineConfiguration`: vCPUs and memory. SMT, dirty-page tracking, CPU
/// templates and huge pages keep Firecracker's defaults (off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfiguration {
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
}

/// `BootSource`: an uncompressed ELF `vmlinux`, its command line, an
/// optional initrd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    pub boot_args: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// `Drive` (virtio-block variant): `PUT /drives/{drive_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `NetworkInterface`: `PUT /network-interfaces/{iface_id}` on a host tap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
}

/// `Vsock`: the guest's vsock device, proxied to host Unix sockets at
/// `uds_path` (host-initiated) and `<uds_path>_<port>` (guest-initiated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: String,
}

/// `InstanceActionInfo`: `PUT /actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// `InstanceActionInfo.action_type` (the driver never sends `FlushMetrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
}

/// `Vm`: `PATCH /vm`, the microVM's vCPUs paused or resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vm {
    pub state: VmRunState,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmRunState {
    Paused,
    Resumed,
}

/// `SnapshotCreateParams`: `PUT /snapshot/create` of a paused microVM, a
/// full snapshot (its memory whole; Firecracker's `Diff` needs dirty-page
/// tracking from boot, which banger does not turn on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotCreate {
    pub snapshot_type: SnapshotType,
    pub snapshot_path: String,
    pub mem_file_path: String,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SnapshotType {
    Full,
}

/// `SnapshotLoadParams`: `PUT /snapshot/load` into a Firecracker that
/// was configured with nothing else (a logger only), its memory from a
/// file (`mem_backend`), the guest left paused, its network interface on
/// the launch's tap. The vsock device keeps the `uds_path` it was saved
/// with: every jail binds `run/` at the same `/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotLoad {
    pub snapshot_path: String,
    pub mem_backend: MemoryBackend,
    pub resume_vm: bool,
    pub network_overrides: Vec<NetworkOverride>,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: String,
}

/// `MemoryBackend.backend_type`: a file Firecracker maps privately (it
/// opens it read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemoryBackendType {
    File,
}

/// `NetworkOverride`: the tap a restored interface is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `InstanceInfo`: the answer to `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

/// `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

impl InstanceState {
    /// Its word in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::NotStarted => "Not started",
            InstanceState::Running => "Running",
            InstanceState::Paused => "Paused",
        }
    }
}

/// One API call: method, path and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Option<serde_json::Value>,
}

impl ApiRequest {
    /// A `PUT` with `body` serialized. The bodies above have no maps with
    /// non-string keys and no non-finite floats, so serialization cannot fail.
    pub fn put<T: Serialize>(path: impl Into<String>, body: &T) -> Self {
        ApiRequest {
            method: "PUT",
            path: path.into(),
            body: Some(serde_json::to_value(body).expect("API bodies serialize to JSON")),
        }
    }

    /// A `PATCH` with `body` serialized (as [`ApiRequest::put`]).
    pub fn patch<T: Serialize>(path: impl Into<String>, body: &T) -> Self {
        ApiRequest {
            method: "PATCH",
            ..Self::put(path, body)
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        ApiRequest {
            method: "GET",
            path: path.into(),
            body: None,
        }
    }

    /// `PATCH /vm` with `state`: pause or resume the vCPUs.
    pub fn vm_state(state: VmRunState) -> Self {
        Self::patch("/vm", &Vm { state })
    }

    /// `PUT /actions` with `action`.
    pub fn action(action: ActionType) -> Self {
        Self::put(
            "/actions",
            &InstanceActionInfo {
                action_type: action,
            },
        )
    }
}

/// The guest network interface's id (`PUT /network-interfaces/eth0`).
pub const IFACE_ID: &str = "eth0";

/// `PUT /snapshot/create` of a full snapshot, the device state into
/// `state` and the memory into `memory` (Firecracker's paths: `Paths`'
/// `saved_state` and `saved_memory`, in `run/`).
pub fn snapshot_create(state: &str, memory: &str) -> ApiRequest {
    ApiRequest::put(
        "/snapshot/create",
        &SnapshotCreate {
            snapshot_type: SnapshotType::Full,
            snapshot_path: state.to_string(),
            mem_file_path: memory.to_string(),
        },
    )
}

/// Every call of a restore, in order: the logger (as a boot's), then
/// `PUT /snapshot/load` of `paths`' restored state and memory, paused,
/// the interface on `spec.tap`.
pub fn restore_plan(spec: &LaunchSpec, paths: &Paths) -> Vec<ApiRequest> {
    vec![
        logger(paths),
        ApiRequest::put(
            "/snapshot/load",
            &SnapshotLoad {
                snapshot_path: paths.restore_state.clone(),
                mem_backend: MemoryBackend {
                    backend_type: MemoryBackendType::File,
                    backend_path: paths.restore_memory.clone(),
                },
                resume_vm: false,
                network_overrides: vec![NetworkOverride {
                    iface_id: IFACE_ID.to_string(),
                    host_dev_name: spec.tap.clone(),
                }],
            },
        ),
    ]
}

/// `PUT /logger`, Firecracker's own log in `run/`.
fn logger(paths: &Paths) -> ApiRequest {
    ApiRequest::put(
        "/logger",
        &Logger {
            log_path: paths.log.clone(),
            level: LogLevel::Info,
            show_level: true,
            show_log_origin: false,
        },
    )
}

/// Every pre-boot call, in the order the driver sends them, ending with
/// `InstanceStart`. The logger comes first so a failure in a later call is
/// already in Firecracker's log. No `PUT /metrics`: banger reads no
/// metrics, and their file would only grow (a line a minute) towards the
/// VMM's `RLIMIT_FSIZE`. Every file is named as
/// Firecracker sees it (`paths`: the jail's fixed paths, or the spec's
/// host paths for an unjailed launch). The spec must have passed
/// [`super::validate_spec`] (or [`super::validate_jailed`]), and `paths`
/// be made from it.
pub fn config_plan(spec: &LaunchSpec, paths: &Paths) -> Vec<ApiRequest> {
    let mut plan = vec![
        logger(paths),
        ApiRequest::put(
            "/machine-config",
            &MachineConfiguration {
                vcpu_count: spec.vcpus,
                mem_size_mib: spec.memory_mib,
            },
        ),
        ApiRequest::put(
            "/boot-source",
            &BootSource {
                kernel_image_path: paths.kernel.clone(),
                boot_args: spec.cmdline.clone(),
                initrd_path: paths.initrd.clone(),
            },
        ),
    ];
    for (i, (d, path)) in spec.drives.iter().zip(&paths.drives).enumerate() {
        plan.push(ApiRequest::put(
            format!("/drives/{}", d.id),
            &Drive {
                drive_id: d.id.clone(),
                path_on_host: path.clone(),
                is_root_device: i == 0,
                is_read_only: d.read_only,
            },
        ));
    }
    plan.push(ApiRequest::put(
        format!("/network-interfaces/{IFACE_ID}"),
        &NetworkInterface {
            iface_id: IFACE_ID.to_string(),
            host_dev_name: spec.tap.clone(),
            guest_mac: spec.mac.clone(),
        },
    ));
    plan.push(ApiRequest::put(
        "/vsock",
        &Vsock {
            guest_cid: spec.vsock_cid,
            uds_path: paths.vsock.clone(),
        },
    ));
    plan.push(ApiRequest::action(ActionType::InstanceStart));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_info_parses_all_states() {
        for (text, want) in [
            ("Not started", InstanceState::NotStarted),
            ("Running", InstanceState::Running),
            ("Paused", InstanceState::Paused),
        ] {
            let body = serde_json::json!({
                "app_name": "Firecracker", "id": "vm", "state": text, "vmm_version": "1.16.1"
            });
            let info: InstanceInfo = serde_json::from_value(body).unwrap();
            assert_eq!(info.state, want);
        }
    }

    #[test]
    fn optional_initrd_is_omitted_not_null() {
        let b = ApiRequest::put(
            "/boot-source",
            &BootSource {
                kernel_image_path: "/k".into(),
                boot_args: "console=ttyS0".into(),
                initrd_path: None,
            },
        );
        let body = b.body.unwrap();
        assert!(body.get("initrd_path").is_none(), "{body}");
    }
}
