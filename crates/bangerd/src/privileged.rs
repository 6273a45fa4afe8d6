//! The privileged-ops seam as the daemon sees it, and its two adapters.
//!
//! * [`InProcess`] (dev mode): calls the shared executor directly; bangerd is
//!   root in this mode.
//! * [`HelperClient`] (system mode): sends the same [`PrivOp`] to
//!   `bangerd-root` over its socket; bangerd holds no privilege itself.
//!
//! Callers depend only on [`PrivilegedOps`]. All calls are blocking; the daemon
//! makes them from `spawn_blocking`.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_executor::Executor;
use banger_host::socket::{SocketPathError, check_connect_path};
use banger_proto::frame::{FrameError, read_frame, write_frame};
use banger_proto::privops::{PRIV_PROTOCOL_VERSION, PrivOp, PrivOutcome, PrivReply, PrivRequest};
use banger_proto::{ErrorCode, RpcError};

/// What sits behind the seam, for doctor and `system status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Dev mode: the executor runs inside bangerd.
    InProcess,
    /// System mode: the helper answered its handshake.
    Helper { socket: PathBuf, version: String },
    /// System mode: the helper could not be reached.
    HelperUnreachable { socket: PathBuf, error: String },
}

/// The seam. Implementations must be safe to call from many threads.
pub trait PrivilegedOps: Send + Sync + std::fmt::Debug {
    /// Perform one operation.
    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError>;
    /// Probe the channel itself.
    fn channel(&self) -> Channel;
}

/// Dev-mode adapter.
#[derive(Debug, Clone)]
pub struct InProcess {
    exec: Executor,
}

impl InProcess {
    pub fn new(exec: Executor) -> Self {
        InProcess { exec }
    }
}

impl PrivilegedOps for InProcess {
    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError> {
        self.exec.execute(op).map_err(|e| e.to_rpc())
    }

    fn channel(&self) -> Channel {
        Channel::InProcess
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("helper socket {socket} is not trustworthy")]
    UnsafeSocket {
        socket: PathBuf,
        #[source]
        source: SocketPathError,
    },
    #[error("cannot reach the root helper at {socket}; is bangerd-root.service running?")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the root helper at {socket}")]
    Frame {
        socket: PathBuf,
        #[source]
        source: FrameError,
    },
    #[error("root helper at {socket} sent {got} where {expected} was expected")]
    Unexpected {
        socket: PathBuf,
        got: &'static str,
        expected: &'static str,
    },
}

impl HelperError {
    fn into_rpc(self) -> RpcError {
        RpcError::from_error(ErrorCode::Unavailable, &self)
    }
}

/// System-mode adapter: one short connection per operation, so a restarted
/// helper is picked up without any reconnect logic.
#[derive(Debug, Clone)]
pub struct HelperClient {
    socket: PathBuf,
    timeout: Duration,
}

impl HelperClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        HelperClient {
            socket: socket.into(),
            timeout: Duration::from_secs(120),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connect, check the socket belongs to root, and shake hands.
    /// Returns the connection and the helper's version.
    fn connect(&self) -> Result<Result<(UnixStream, String), RpcError>, HelperError> {
        check_connect_path(&self.socket, &[0]).map_err(|source| HelperError::UnsafeSocket {
            socket: self.socket.clone(),
            source,
        })?;
        let mut s = UnixStream::connect(&self.socket).map_err(|source| HelperError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let _ = s.set_read_timeout(Some(self.timeout));
        let _ = s.set_write_timeout(Some(self.timeout));
        self.send(
            &mut s,
            &PrivRequest::Hello {
                protocol: PRIV_PROTOCOL_VERSION,
            },
        )?;
        match self.recv(&mut s)? {
            PrivReply::Hello { helper_version, .. } => Ok(Ok((s, helper_version))),
            PrivReply::Error(e) => Ok(Err(e.context(format!(
                "root helper at {} refused the connection",
                self.socket.display()
            )))),
            PrivReply::Ok(_) => Err(HelperError::Unexpected {
                socket: self.socket.clone(),
                got: "a result",
                expected: "hello",
            }),
        }
    }

    fn send(&self, s: &mut UnixStream, req: &PrivRequest) -> Result<(), HelperError> {
        write_frame(s, req).map_err(|source| HelperError::Frame {
            socket: self.socket.clone(),
            source,
        })
    }

    fn recv(&self, s: &mut UnixStream) -> Result<PrivReply, HelperError> {
        read_frame(s).map_err(|source| HelperError::Frame {
            socket: self.socket.clone(),
            source,
        })
    }
}

impl PrivilegedOps for HelperClient {
    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError> {
        let name = op.name();
        let (mut s, _) = match self.connect() {
            Ok(Ok(conn)) => conn,
            Ok(Err(refused)) => return Err(refused),
            Err(e) => return Err(e.into_rpc()),
        };
        self.send(&mut s, &PrivRequest::Op(op))
            .map_err(HelperError::into_rpc)?;
        match self.recv(&mut s).map_err(HelperError::into_rpc)? {
            PrivReply::Ok(outcome) => Ok(outcome),
            PrivReply::Error(e) => Err(e.context(format!("privileged operation {name}"))),
            PrivReply::Hello { .. } => Err(HelperError::Unexpected {
                socket: self.socket.clone(),
                got: "hello",
                expected: "a result",
            }
            .into_rpc()),
        }
    }

    fn channel(&self) -> Channel {
        match self.connect() {
            Ok(Ok((_, version))) => Channel::Helper {
                socket: self.socket.clone(),
                version,
            },
            Ok(Err(e)) => Channel::HelperUnreachable {
                socket: self.socket.clone(),
                error: e.render(),
            },
            Err(e) => Channel::HelperUnreachable {
                socket: self.socket.clone(),
                error: banger_proto::error::chain(&e).join(": "),
            },
        }
    }
}
