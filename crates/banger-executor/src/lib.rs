//! The one executor of privileged operations.
//!
//! Both adapters end here: `bangerd --dev` calls [`Executor::execute`]
//! in-process, and `bangerd-root` calls it for each request read from its
//! socket. Validation and behaviour are therefore identical in both modes.
//!
//! Every operation is validated before anything is touched; every host path
//! the executor uses is derived here or in `banger-host`, never taken from the
//! request. Each call is logged at info level with the op name (the helper's
//! audit trail).

use std::sync::Arc;

use banger_host::probe::HostProbes;
use banger_proto::privops::{PrivOp, PrivOutcome};
use banger_proto::{ErrorCode, RpcError};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The arguments failed validation; nothing was done.
    #[error("invalid arguments for {op}: {reason}")]
    Invalid { op: &'static str, reason: String },
}

impl ExecError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ExecError::Invalid { .. } => ErrorCode::BadRequest,
        }
    }

    pub fn to_rpc(&self) -> RpcError {
        RpcError::from_error(self.code(), self)
    }
}

/// Performs privileged operations against an injected host.
#[derive(Clone)]
pub struct Executor {
    host: Arc<dyn HostProbes>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    pub fn new(host: Arc<dyn HostProbes>) -> Self {
        Executor { host }
    }

    /// Validate and perform one operation. Blocking.
    pub fn execute(&self, op: PrivOp) -> Result<PrivOutcome, ExecError> {
        validate(&op)?;
        tracing::info!(op = op.name(), args = ?op, "privileged op");
        let outcome = match op {
            PrivOp::ProbeKvm => PrivOutcome::Kvm(self.host.probe_kvm()),
            PrivOp::ProbeDevice { device } => PrivOutcome::Device(self.host.probe_device(device)),
            PrivOp::ProbeNftables => PrivOutcome::Nftables(self.host.probe_nft()),
        };
        Ok(outcome)
    }
}

/// Argument validation, separate from execution so it can be tested without a
/// host. The probe ops carry only closed enums, so there is nothing to reject
/// yet; ops that carry names, addresses or sizes validate them here.
fn validate(op: &PrivOp) -> Result<(), ExecError> {
    match op {
        PrivOp::ProbeKvm | PrivOp::ProbeDevice { .. } | PrivOp::ProbeNftables => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::probe::fake::FakeHost;
    use banger_proto::privops::HostDevice;

    #[test]
    fn dispatches_each_op_to_the_matching_probe() {
        let fake = Arc::new(FakeHost::lab_host());
        let exec = Executor::new(fake.clone());
        let out = exec
            .execute(PrivOp::ProbeDevice {
                device: HostDevice::MapperControl,
            })
            .unwrap();
        assert!(matches!(out, PrivOutcome::Device(ref d) if d.device == HostDevice::MapperControl));
        assert!(matches!(
            exec.execute(PrivOp::ProbeKvm).unwrap(),
            PrivOutcome::Kvm(_)
        ));
        assert!(matches!(
            exec.execute(PrivOp::ProbeNftables).unwrap(),
            PrivOutcome::Nftables(_)
        ));
        assert_eq!(
            fake.calls(),
            vec!["probe_device(mapper_control)", "probe_kvm", "probe_nft"]
        );
    }
}
