//! Snapshots with QEMU (issue #15 item 1): the paused guest's state saved
//! through root's descriptor (QMP `getfd` + `migrate fd:`), and a launch
//! that restores it (`-incoming defer -S`, `migrate-incoming fd:`), then
//! has the guest agent apply the new VM's identity (`crate::agent`).

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{
    QMP_APPEAR_TIMEOUT, QMP_TIMEOUT, QemuVm, Qmp, QmpError, VMM, banger_proto_free_chain, set_vcpus,
};
use crate::VmmError;
use crate::driver::Vcpus;

/// A launch that restores a snapshot: QEMU starts with `-incoming defer
/// -S`, loads `state`, and the guest, resumed with its network port down
/// (the caller's tap is down until this returns), is given `identity`
/// by its agent before the launch returns.
#[derive(Debug)]
pub struct Incoming {
    /// The snapshot's memory and device state, read-only: root's checked
    /// descriptor, handed to QEMU over QMP (`getfd`).
    pub state: OwnedFd,
    pub identity: crate::agent::Identity,
    /// The agent's answer is matched to this (1-32 lowercase hex).
    pub nonce: String,
    /// How long the agent gets ([`AGENT_TIMEOUT`] in the executor).
    pub agent_timeout: Duration,
}

/// How long a restore may take to load its state (the memory of a
/// 512 MiB guest loads in about half a second here).
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the guest agent gets to apply an identity (a restored guest
/// runs its steps under TCG in about a second).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

// A restoring launch answers within what the protocol promises: QEMU's
// QMP, the state, the agent, and a minute for the jail, the QMP
// exchanges and the journal.
const _: () = assert!(
    QMP_APPEAR_TIMEOUT.as_secs() + RESTORE_TIMEOUT.as_secs() + AGENT_TIMEOUT.as_secs() + 60
        <= banger_proto::privops::RESTORE_LAUNCH_MAX_SECS
);

impl QemuVm {
    /// Load `incoming`'s saved state into this QEMU (started with
    /// [`QemuDriver::restore_argv`]), resume the guest, have its agent
    /// apply the new identity, and settle its readiness as ready: the
    /// guest booted long ago and will print no ready line again.
    pub(super) fn restore(&mut self, incoming: Incoming) -> Result<(), VmmError> {
        let snap = |what: String| VmmError::Snapshot { vmm: VMM, what };
        let began = Instant::now();
        let mut q = Qmp::connect_socket(&self.qmp, QMP_TIMEOUT).map_err(|e| {
            snap(format!(
                "connecting to QMP: {}",
                banger_proto_free_chain(&e)
            ))
        })?;
        q.pass_fd("state", incoming.state.as_fd())
            .and_then(|()| {
                q.execute_with("migrate-incoming", serde_json::json!({"uri": "fd:state"}))
            })
            .map_err(|e| {
                snap(format!(
                    "loading the state: {}",
                    banger_proto_free_chain(&e)
                ))
            })?;
        let deadline = Instant::now() + RESTORE_TIMEOUT;
        loop {
            // A state QEMU cannot load ends it ("load of migration
            // failed"): its log's tail says why.
            if !self.running() {
                return Err(VmmError::EarlyExit {
                    vmm: VMM,
                    status: "exited while loading the snapshot's state".into(),
                    tail: String::new(),
                });
            }
            let status = match q.status() {
                Ok(status) => status,
                Err(_)
                    if crate::driver::pidfd_exited(
                        self.child.pidfd(),
                        crate::driver::GONE_GRACE,
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(snap(format!(
                        "query-status: {}",
                        banger_proto_free_chain(&e)
                    )));
                }
            };
            match status.as_str() {
                "inmigrate" if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                "inmigrate" => {
                    return Err(VmmError::Timeout {
                        vmm: VMM,
                        what: "load the snapshot's state",
                        secs: RESTORE_TIMEOUT.as_secs(),
                    });
                }
                // `-S`: loaded and not started. A state saved from a VM
                // that was itself left `postmigrate` by an earlier save
                // comes back so; `cont` leaves either.
                "paused" | "postmigrate" => break,
                other => {
                    return Err(snap(format!(
                        "after loading the state QEMU reports {:?}, not \"paused\"",
                        crate::quoted(other)
                    )));
                }
            }
        }
        let loaded = began.elapsed();
        set_vcpus(&mut q, Vcpus::Running)?;
        let resumed = Instant::now();
        let mut stream = self
            .agent
            .connect()
            .and_then(|s| s.set_nonblocking(false).map(|()| s))
            .map_err(|e| VmmError::Agent {
                vmm: VMM,
                what: format!("connecting to {}: {e}", self.agent.path().display()),
            })?;
        crate::agent::apply_now(
            VMM,
            &mut stream,
            incoming.identity,
            &incoming.nonce,
            incoming.agent_timeout,
        )?;
        tracing::info!(
            pid = self.pid(),
            load_ms = loaded.as_millis() as u64,
            agent_ms = resumed.elapsed().as_millis() as u64,
            "snapshot restored"
        );
        if let Some(r) = self.readiness() {
            r.settle(crate::ready::Seen::Ready);
        }
        Ok(())
    }

    /// Save the paused guest's state to `to` ([`save_state`]).
    pub fn save_state(&mut self, to: BorrowedFd<'_>, timeout: Duration) -> Result<u64, VmmError> {
        if !self.running() {
            return Err(VmmError::NotRunning {
                vmm: VMM,
                pid: self.pid(),
                what: "snapshot",
            });
        }
        let mut q = self.qmp().map_err(|e| VmmError::Snapshot {
            vmm: VMM,
            what: format!("connecting to QMP: {}", banger_proto_free_chain(&e)),
        })?;
        save_state(&mut q, to, timeout)
    }
}

/// The one descriptor QEMU saves its whole stream to: a separate device
/// state file is Firecracker's, refused here.
pub(super) fn one_stream(to: crate::driver::SaveTo<'_>) -> Result<BorrowedFd<'_>, VmmError> {
    match to.state {
        None => Ok(to.memory),
        Some(_) => Err(VmmError::Snapshot {
            vmm: VMM,
            what: "QEMU saves its device state into the memory stream; no separate state \
                   file is written"
                .into(),
        }),
    }
}

/// Write the paused guest's memory and device state to `to` (QMP
/// `migrate` to the descriptor, passed with `getfd`), polling
/// `query-migrate` until it completes, fails or `timeout` passes (then
/// it is cancelled): the bytes written. The guest must be paused; QEMU
/// then reports `postmigrate`, which a `cont` leaves (reactivating its
/// disks) and which counts as paused.
pub(super) fn save_state(
    q: &mut Qmp,
    to: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<u64, VmmError> {
    let snap = |what: String| VmmError::Snapshot { vmm: VMM, what };
    let qmp = |step: &str, e: QmpError| snap(format!("{step}: {}", banger_proto_free_chain(&e)));
    let status = q.status().map_err(|e| qmp("query-status", e))?;
    match status.as_str() {
        "paused" => {}
        // Left so by an earlier save: QEMU refuses to migrate from there.
        // `cont` reactivates the disks and `stop` pauses again at once.
        "postmigrate" => {
            set_vcpus(q, Vcpus::Running).and_then(|()| set_vcpus(q, Vcpus::Paused))?;
        }
        other => {
            return Err(snap(format!(
                "the guest must be paused to be saved; QEMU reports {:?}",
                crate::quoted(other)
            )));
        }
    }
    // Not throttled: the guest is paused, so the copy is its downtime.
    q.execute_with(
        "migrate-set-parameters",
        serde_json::json!({ "max-bandwidth": 1u64 << 40 }),
    )
    .map_err(|e| qmp("migrate-set-parameters", e))?;
    q.pass_fd("snapshot", to).map_err(|e| qmp("getfd", e))?;
    if let Err(e) = q.execute_with("migrate", serde_json::json!({ "uri": "fd:snapshot" })) {
        // QEMU keeps a descriptor it was given until told otherwise.
        let _ = q.execute_with("closefd", serde_json::json!({ "fdname": "snapshot" }));
        return Err(qmp("migrate", e));
    }
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        let m = match q.execute("query-migrate") {
            Ok(m) => m,
            Err(e) => break Err(qmp("query-migrate", e)),
        };
        let status = m
            .get("status")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        match status {
            "completed" => {
                return Ok(m
                    .pointer("/ram/transferred")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0));
            }
            "failed" | "cancelled" => {
                let why = m
                    .get("error-desc")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("no reason given");
                return Err(snap(format!(
                    "saving the state {status}: {}",
                    crate::quoted(why)
                )));
            }
            _ if Instant::now() >= deadline => {
                break Err(VmmError::Timeout {
                    vmm: VMM,
                    what: "save the guest's state",
                    secs: timeout.as_secs(),
                });
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // The migration may still run: cancelled, and seen ended, before the
    // caller resumes the guest (its thread must not write on, nor freeze
    // the guest later by completing).
    let _ = q.execute("migrate_cancel");
    let until = Instant::now() + CANCEL_WAIT;
    while Instant::now() < until {
        let done = q
            .execute("query-migrate")
            .ok()
            .and_then(|m| m.get("status").and_then(|s| s.as_str().map(str::to_owned)));
        if matches!(done.as_deref(), Some("cancelled" | "failed" | "completed")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    outcome
}

/// How long a cancelled save is waited for to end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
