//! The privileged-ops seam as the daemon sees it, and its two adapters.
//!
//! * [`InProcess`] (dev mode): calls the shared executor directly; bangerd is
//!   root in this mode.
//! * [`HelperClient`] (system mode): sends the same [`PrivOp`] to
//!   `bangerd-root` over its socket; bangerd holds no privilege itself.
//!
//! Callers depend only on [`PrivilegedOps`], and ask through
//! [`PrivilegedOpsExt::request`]: one request type per operation, answered by
//! that operation's own answer type (`banger_proto::privops::PrivCall`), so no
//! caller matches a `PrivOutcome` by hand and an answer of the wrong kind is
//! one `internal` error made here. All calls are blocking; the daemon makes
//! them from `spawn_blocking`.
//!
//! Some operations hand back file descriptors (`OpenDnsSockets`: the bound
//! DNS sockets; `BuildDebianImage`: the image's files).
//! [`PrivilegedOps::call_with_fds`] returns them beside the outcome, in the
//! order the outcome's [`FdIndex`] values count; both adapters check that the
//! descriptors match those indices exactly, and close them all on any
//! mismatch. [`PrivilegedOpsExt::request_with_fds`] hands them over as
//! [`PassedFds`], taken by the answer's indices.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_executor::Executor;
use banger_host::socket::{SocketPathError, check_connect_path};
use banger_proto::frame::{FrameError, read_frame, read_frame_with_fds, write_frame};
use banger_proto::net::FdIndex;
use banger_proto::privops::{
    ImageOp, PRIV_PROTOCOL_VERSION, PrivCall, PrivOp, PrivOutcome, PrivReply, PrivRequest, StopVm,
    VmOp, answer_of,
};
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
    /// Perform one operation that passes no file descriptors back. An
    /// operation that unexpectedly does is an `internal` error (the
    /// descriptors are closed).
    fn call(&self, op: PrivOp) -> Result<PrivOutcome, RpcError> {
        let name = op.name();
        let (outcome, fds) = self.call_with_fds(op)?;
        if !fds.is_empty() {
            return Err(RpcError::new(
                ErrorCode::Internal,
                format!(
                    "privileged operation {name} passed back {} file descriptors (closed); \
                     it must be made with call_with_fds",
                    fds.len()
                ),
            ));
        }
        Ok(outcome)
    }
    /// Perform one operation and take the file descriptors it passes back, in
    /// the order the outcome's [`FdIndex`] values count.
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError>;
    /// Probe the channel itself.
    fn channel(&self) -> Channel;
}

/// Typed requests over any [`PrivilegedOps`]: the only way the daemon asks.
pub trait PrivilegedOpsExt: PrivilegedOps {
    /// Perform `request`, which passes no descriptors back, and return its
    /// typed answer. An answer of another kind is an `internal` error that
    /// names the operation and both kinds.
    fn request<R: PrivCall>(&self, request: R) -> Result<R::Response, RpcError> {
        let outcome = self.call(request.into())?;
        answer_of::<R>(outcome).map_err(|e| RpcError::from_error(ErrorCode::Internal, &e))
    }

    /// Perform `request` and take its typed answer with the descriptors
    /// that came beside it (already checked to be exactly the ones the
    /// answer names; closed if the answer is of the wrong kind).
    fn request_with_fds<R: PrivCall>(
        &self,
        request: R,
    ) -> Result<(R::Response, PassedFds), RpcError> {
        let (outcome, fds) = self.call_with_fds(request.into())?;
        let answer =
            answer_of::<R>(outcome).map_err(|e| RpcError::from_error(ErrorCode::Internal, &e))?;
        Ok((answer, PassedFds(fds.into_iter().map(Some).collect())))
    }
}

impl<T: PrivilegedOps + ?Sized> PrivilegedOpsExt for T {}

/// Descriptors passed beside an answer, taken by the answer's indices.
#[derive(Debug)]
pub struct PassedFds(Vec<Option<OwnedFd>>);

impl PassedFds {
    /// The descriptor at `index`. The seam checked that the answer's
    /// indices are exactly `0..n`, each once, so this fails only when a
    /// caller takes an index the answer does not name, or one twice.
    pub fn take(&mut self, index: FdIndex) -> Result<OwnedFd, RpcError> {
        usize::try_from(index.0)
            .ok()
            .and_then(|i| self.0.get_mut(i))
            .and_then(Option::take)
            .ok_or_else(|| {
                RpcError::new(
                    ErrorCode::Internal,
                    format!("descriptor {} was not passed, or was taken twice", index.0),
                )
            })
    }
}

/// Check that `received` descriptors are exactly the ones `outcome` names:
/// its indices are `0..received` with none missing or repeated. On a
/// mismatch every descriptor is closed and the error says what was expected.
fn check_fds(op: &str, outcome: &PrivOutcome, received: usize) -> Result<(), RpcError> {
    let mut indices: Vec<u32> = outcome.fd_indices().into_iter().map(|i| i.0).collect();
    indices.sort_unstable();
    let matches = indices.len() == received
        && indices
            .iter()
            .enumerate()
            .all(|(i, idx)| usize::try_from(*idx).is_ok_and(|idx| idx == i));
    if matches {
        return Ok(());
    }
    Err(RpcError::new(
        ErrorCode::Internal,
        format!(
            "privileged operation {op} passed back {received} file descriptors, \
             but its result refers to indices {indices:?}; all were closed"
        ),
    ))
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
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
        let name = op.name();
        let executed = self.exec.execute(op).map_err(|e| e.to_rpc())?;
        check_fds(name, &executed.outcome, executed.fds.len())?;
        Ok((executed.outcome, executed.fds))
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

/// How long `BuildDebianImage` may take (the helper's own limit is an hour).
const BUILD_TIMEOUT: Duration = Duration::from_secs(3700);
/// Beyond a `StopVm`'s own timeout: the executor's bounded overhead (its
/// power-off prelude, a pause in flight, the kill, the cgroup emptying;
/// `privops::STOP_OVERHEAD_MAX_SECS`, which carries its own slack).
const STOP_MARGIN: Duration = Duration::from_secs(banger_proto::privops::STOP_OVERHEAD_MAX_SECS);

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

    /// How long the helper may take to answer `op`: a default-image build
    /// runs mmdebstrap (minutes on first use, in silence); a graceful stop
    /// waits out its own timeout before it kills. Every other operation
    /// answers well inside the default.
    fn reply_timeout(&self, op: &PrivOp) -> Duration {
        match op {
            PrivOp::Image(ImageOp::BuildDebianImage(_)) => BUILD_TIMEOUT,
            PrivOp::Vm(VmOp::StopVm(StopVm { timeout_secs, .. })) => self
                .timeout
                .max(Duration::from_secs(u64::from(*timeout_secs)) + STOP_MARGIN),
            PrivOp::Vm(VmOp::SnapshotVm(_)) => self.timeout.max(Duration::from_secs(
                banger_proto::privops::SNAPSHOT_VM_MAX_SECS,
            )),
            PrivOp::Vm(VmOp::LaunchVm(spec)) if spec.restore.is_some() => self.timeout.max(
                Duration::from_secs(banger_proto::privops::RESTORE_LAUNCH_MAX_SECS),
            ),
            _ => self.timeout,
        }
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

    fn recv_with_fds(&self, s: &UnixStream) -> Result<(PrivReply, Vec<OwnedFd>), HelperError> {
        read_frame_with_fds(s).map_err(|source| HelperError::Frame {
            socket: self.socket.clone(),
            source,
        })
    }
}

impl PrivilegedOps for HelperClient {
    fn call_with_fds(&self, op: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
        let name = op.name();
        let (mut s, _) = match self.connect() {
            Ok(Ok(conn)) => conn,
            Ok(Err(refused)) => return Err(refused),
            Err(e) => return Err(e.into_rpc()),
        };
        let _ = s.set_read_timeout(Some(self.reply_timeout(&op)));
        self.send(&mut s, &PrivRequest::Op(op))
            .map_err(HelperError::into_rpc)?;
        // Descriptors arrive (close-on-exec) with the reply's first byte.
        let (reply, fds) = self.recv_with_fds(&s).map_err(HelperError::into_rpc)?;
        match reply {
            PrivReply::Ok(outcome) => {
                check_fds(name, &outcome, fds.len())
                    .map_err(|e| e.context(format!("root helper at {}", self.socket.display())))?;
                Ok((outcome, fds))
            }
            PrivReply::Error(e) if fds.is_empty() => {
                Err(e.context(format!("privileged operation {name}")))
            }
            PrivReply::Error(_) => Err(HelperError::Unexpected {
                socket: self.socket.clone(),
                got: "file descriptors with an error",
                expected: "an error alone",
            }
            .into_rpc()),
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use banger_proto::net::DnsSockets;
    use banger_proto::privops::{BuildDebianImage, OpenDnsSockets, QueryNetStatus, StopVm};

    use super::*;

    fn dns(udp: u32, tcp: u32) -> PrivOutcome {
        PrivOutcome::DnsSockets(DnsSockets {
            address: Ipv4Addr::new(10, 0, 0, 1),
            udp: FdIndex(udp),
            tcp: FdIndex(tcp),
        })
    }

    fn built(rootfs: u32, kernel: u32, initrd: u32) -> PrivOutcome {
        let file = |i| banger_proto::privops::BuiltImageFile {
            fd: FdIndex(i),
            path: format!("/var/cache/banger/debian/k/{i}"),
        };
        PrivOutcome::BuiltImage(banger_proto::privops::BuiltImageFiles {
            cache_key: "k".into(),
            kernel_version: "6.1.0".into(),
            entry: "/var/cache/banger/debian/k".into(),
            cached: true,
            rootfs: file(rootfs),
            kernel: file(kernel),
            initrd: file(initrd),
        })
    }

    #[test]
    fn descriptors_must_match_the_indices_exactly() {
        check_fds("open_dns_sockets", &dns(0, 1), 2).unwrap();
        check_fds("build_debian_image", &built(0, 1, 2), 3).unwrap();
        check_fds("build_debian_image", &built(2, 0, 1), 3).unwrap();
        check_fds("open_dns_sockets", &dns(1, 0), 2).unwrap();
        check_fds("net_status", &PrivOutcome::Done, 0).unwrap();
        for (outcome, received) in [
            (dns(0, 1), 1),
            (dns(0, 1), 3),
            (dns(0, 0), 2),
            (dns(0, 2), 2),
            (built(0, 1, 1), 3),
            (built(0, 1, 2), 2),
            (PrivOutcome::Done, 1),
        ] {
            let err = check_fds("op", &outcome, received).unwrap_err();
            assert_eq!(err.code, ErrorCode::Internal);
            assert!(
                err.render()
                    .contains(&format!("{received} file descriptors"))
            );
        }
    }

    /// Returns whatever it was built with, descriptors included.
    #[derive(Debug)]
    struct Canned(PrivOutcome, usize);

    impl PrivilegedOps for Canned {
        fn call_with_fds(&self, _: PrivOp) -> Result<(PrivOutcome, Vec<OwnedFd>), RpcError> {
            let fds = (0..self.1)
                .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
                .collect();
            Ok((self.0.clone(), fds))
        }
        fn channel(&self) -> Channel {
            Channel::InProcess
        }
    }

    #[test]
    fn call_refuses_an_operation_that_passes_descriptors() {
        let err = Canned(dns(0, 1), 2)
            .call(
                OpenDnsSockets {
                    address: Ipv4Addr::new(10, 0, 0, 1),
                }
                .into(),
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(err.render().contains("call_with_fds"), "{}", err.render());
        assert_eq!(
            Canned(PrivOutcome::Done, 0)
                .call(QueryNetStatus.into())
                .unwrap(),
            PrivOutcome::Done
        );
    }

    /// A typed request turns an answer of the wrong kind into one
    /// `internal` error naming the op and both kinds, whatever the caller.
    #[test]
    fn a_typed_request_refuses_an_answer_of_another_kind() {
        let err = Canned(PrivOutcome::Done, 0)
            .request(StopVm {
                vm_id: "0".repeat(32),
                timeout_secs: 1,
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(
            err.render()
                .contains("stop_vm was answered with `done`, where `vm_stopped` was expected"),
            "{}",
            err.render()
        );
        let err = Canned(dns(0, 1), 2)
            .request_with_fds(BuildDebianImage {
                suite: "bookworm".into(),
            })
            .unwrap_err();
        assert!(err.render().contains("`dns_sockets`"), "{}", err.render());
    }

    #[test]
    fn passed_descriptors_are_taken_by_the_answers_indices_once() {
        let (socks, mut fds) = Canned(dns(1, 0), 2)
            .request_with_fds(OpenDnsSockets {
                address: Ipv4Addr::new(10, 0, 0, 1),
            })
            .unwrap();
        fds.take(socks.udp).unwrap();
        fds.take(socks.tcp).unwrap();
        let twice = fds.take(socks.tcp).unwrap_err();
        assert!(twice.render().contains("taken twice"), "{}", twice.render());
        assert!(fds.take(FdIndex(7)).is_err());
    }

    #[test]
    fn a_stop_is_given_its_own_timeout_to_answer() {
        let c = HelperClient::new("/nonexistent/root.sock");
        let stop = |timeout_secs| {
            PrivOp::from(StopVm {
                vm_id: "0".repeat(32),
                timeout_secs,
            })
        };
        assert_eq!(c.reply_timeout(&stop(10)), c.timeout);
        assert_eq!(
            c.reply_timeout(&stop(300)),
            Duration::from_secs(300) + STOP_MARGIN
        );
        assert_eq!(
            c.reply_timeout(
                &BuildDebianImage {
                    suite: "bookworm".into()
                }
                .into()
            ),
            BUILD_TIMEOUT
        );
        assert_eq!(c.reply_timeout(&QueryNetStatus.into()), c.timeout);
    }
}
