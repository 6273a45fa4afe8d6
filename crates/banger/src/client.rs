//! Blocking client for the public RPC of `bangerd` (see `banger_proto::rpc`).
//!
//! One [`Client`] is one connection: [`Client::connect`] checks the socket
//! path, connects and exchanges hellos; [`Client::call`] sends one request and
//! reads progress events until the final answer.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::socket::{SocketPathError, check_connect_path};
use banger_proto::RpcError;
use banger_proto::frame::{FrameError, read_frame, write_frame};
use banger_proto::install::{DEFAULT_INSTALL_FILE, InstallMeta};
use banger_proto::rpc::{
    ClientHello, PROTOCOL_VERSION, Progress, Request, Response, ServerHello, ServerMsg,
};

/// Read and write timeout on the connection. Generous: `doctor` runs every
/// host check before answering.
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach bangerd at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing to use the daemon socket")]
    UnsafeSocket(#[source] SocketPathError),
    /// The daemon answered with an error.
    #[error(transparent)]
    Remote(RpcError),
    #[error("bangerd at {} speaks protocol {theirs}, this banger speaks {ours}", socket.display())]
    ProtocolMismatch {
        socket: PathBuf,
        ours: u32,
        theirs: u32,
    },
    #[error("bangerd at {} sent {got} where {expected} was expected", socket.display())]
    Protocol {
        socket: PathBuf,
        expected: &'static str,
        got: &'static str,
    },
    #[error("talking to bangerd at {}", socket.display())]
    Frame {
        socket: PathBuf,
        #[source]
        source: FrameError,
    },
}

impl ClientError {
    /// One line telling the user what to do next, where there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ClientError::Connect { .. } => Some(
                "is the daemon running? start it with `sudo bangerd --dev` \
                 or install it with `sudo banger system install`",
            ),
            ClientError::UnsafeSocket(_) => Some(
                "point --socket or BANGER_SOCKET at the socket bangerd created; \
                 it must be owned by you, root or the installed owner",
            ),
            ClientError::ProtocolMismatch { .. } => {
                Some("banger and bangerd come from different releases; install matching versions")
            }
            ClientError::Remote(e) if e.code == banger_proto::ErrorCode::ProtocolMismatch => {
                Some("banger and bangerd come from different releases; install matching versions")
            }
            _ => None,
        }
    }
}

/// Uids whose socket the client will talk to: its own effective uid, root,
/// and the owner recorded in the install metadata (system mode).
pub fn trusted_owners() -> Vec<u32> {
    trusted_owners_from(Path::new(DEFAULT_INSTALL_FILE))
}

fn trusted_owners_from(install_file: &Path) -> Vec<u32> {
    let mut owners = vec![rustix::process::geteuid().as_raw(), 0];
    // A missing or unreadable install file just means "not installed": the
    // set then stays at self and root, which is the safe direction.
    if let Ok(meta) = InstallMeta::load(install_file) {
        owners.push(meta.owner.uid);
    }
    owners.dedup();
    owners.sort_unstable();
    owners.dedup();
    owners
}

/// A connection to `bangerd` that has completed the hello exchange.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    socket: PathBuf,
    server: ServerHello,
}

impl Client {
    /// Connect to the daemon at `socket`, trusting [`trusted_owners`].
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        Client::connect_trusting(socket, &trusted_owners())
    }

    /// Connect to the daemon at `socket` if the socket is owned by one of
    /// `trusted`, and exchange hellos.
    pub fn connect_trusting(socket: &Path, trusted: &[u32]) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        };
        match check_connect_path(socket, trusted) {
            Ok(()) => {}
            // Nothing there (or no way to look): the daemon is not reachable,
            // which is not the same as an unsafe socket.
            Err(SocketPathError::Stat { source, .. }) => return Err(connect_err(source)),
            Err(e) => return Err(ClientError::UnsafeSocket(e)),
        }
        let mut stream = UnixStream::connect(socket).map_err(connect_err)?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(connect_err)?;
        let server = hello(&mut stream, socket)?;
        Ok(Client {
            stream,
            socket: socket.to_path_buf(),
            server,
        })
    }

    /// The daemon's uid, as the kernel reports the socket's peer
    /// (`SO_PEERCRED`), not as the daemon says.
    pub fn daemon_uid(&self) -> Option<u32> {
        rustix::net::sockopt::socket_peercred(&self.stream)
            .ok()
            .map(|c| c.uid.as_raw())
    }

    /// What the daemon said about itself when the connection opened.
    pub fn server(&self) -> &ServerHello {
        &self.server
    }

    /// Send `req` and wait for its answer, handing every progress event the
    /// daemon streams meanwhile to `on_progress`.
    pub fn call(
        &mut self,
        req: &Request,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, req).map_err(|e| self.frame_err(e))?;
        loop {
            match self.read()? {
                ServerMsg::Progress(p) => on_progress(&p),
                ServerMsg::Done(resp) => return Ok(resp),
                ServerMsg::Error(e) => return Err(ClientError::Remote(e)),
                ServerMsg::Hello(_) => {
                    return Err(self.unexpected("a progress event or an answer", "a hello"));
                }
            }
        }
    }

    /// An answer of the wrong kind for the request that was sent.
    pub fn unexpected(&self, expected: &'static str, got: &'static str) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            expected,
            got,
        }
    }

    fn read(&mut self) -> Result<ServerMsg, ClientError> {
        read_msg(&mut self.stream, &self.socket)
    }

    fn frame_err(&self, source: FrameError) -> ClientError {
        frame_err(&self.socket, source)
    }
}

/// Send our hello and read the server's.
fn hello(stream: &mut UnixStream, socket: &Path) -> Result<ServerHello, ClientError> {
    // A server that refuses this peer answers before reading anything and
    // closes, so the write may fail while its error is still waiting to be
    // read: read first, and report the write failure only if nothing came.
    let sent = write_frame(stream, &ClientHello::current());
    let reply = read_msg(stream, socket);
    let unexpected = |got| ClientError::Protocol {
        socket: socket.to_path_buf(),
        expected: "a hello",
        got,
    };
    match (reply, sent) {
        (Ok(ServerMsg::Error(e)), _) => Err(ClientError::Remote(e)),
        (_, Err(w)) => Err(frame_err(socket, w)),
        (Ok(ServerMsg::Hello(h)), Ok(())) if h.protocol == PROTOCOL_VERSION => Ok(h),
        (Ok(ServerMsg::Hello(h)), Ok(())) => Err(ClientError::ProtocolMismatch {
            socket: socket.to_path_buf(),
            ours: PROTOCOL_VERSION,
            theirs: h.protocol,
        }),
        (Ok(other), Ok(())) => Err(unexpected(msg_name(&other))),
        (Err(r), Ok(())) => Err(r),
    }
}

fn read_msg(stream: &mut UnixStream, socket: &Path) -> Result<ServerMsg, ClientError> {
    read_frame(stream).map_err(|e| frame_err(socket, e))
}

fn frame_err(socket: &Path, source: FrameError) -> ClientError {
    ClientError::Frame {
        socket: socket.to_path_buf(),
        source,
    }
}

fn msg_name(msg: &ServerMsg) -> &'static str {
    match msg {
        ServerMsg::Hello(_) => "a hello",
        ServerMsg::Progress(_) => "a progress event",
        ServerMsg::Done(_) => "an answer",
        ServerMsg::Error(_) => "an error",
    }
}

/// Name of a response kind, for protocol errors.
pub fn response_name(resp: &Response) -> &'static str {
    match resp {
        Response::Pong(_) => "a pong",
        Response::Doctor(_) => "a doctor report",
        Response::HostStatus(_) => "a host status",
        Response::HostTeardown(_) => "a teardown report",
        Response::Image(_) => "an image result",
        Response::Kernel(_) => "a kernel result",
        Response::Vm(_) => "a VM result",
        Response::Op(_) => "an operation result",
        Response::Workspace(_) => "a workspace result",
        Response::Snapshot(_) => "a snapshot result",
    }
}

#[cfg(test)]
#[path = "../tests/support/fake_server.rs"]
mod fake_server;

#[cfg(test)]
mod tests {
    use super::fake_server::{Behavior, FakeServer, Reply, daemon_info, progress};
    use super::*;
    use banger_proto::ErrorCode;

    fn me() -> Vec<u32> {
        vec![rustix::process::geteuid().as_raw()]
    }

    #[test]
    fn hello_then_call_streams_progress_in_order() {
        let fake = FakeServer::start(Behavior::Serve(vec![Reply {
            progress: vec![progress("kvm", 1, 2), progress("tun", 2, 2)],
            outcome: Ok(Response::Pong(daemon_info("/x.sock"))),
        }]));
        let mut c = Client::connect_trusting(&fake.socket, &me()).unwrap();
        assert_eq!(c.server().daemon_version, "9.9.9");
        let mut seen = Vec::new();
        let resp = c
            .call(&Request::Ping, |p| seen.push(p.stage.clone()))
            .unwrap();
        assert_eq!(resp, Response::Pong(daemon_info("/x.sock")));
        assert_eq!(seen, ["kvm", "tun"]);
        drop(c);
        let rec = fake.finish();
        assert_eq!(rec.hello, Some(ClientHello::current()));
        assert_eq!(rec.requests, [Request::Ping]);
    }

    #[test]
    fn refusal_before_hello_is_the_servers_error_not_a_broken_pipe() {
        let denied = RpcError::new(ErrorCode::PermissionDenied, "uid 1234 may not use bangerd");
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        // The server has answered and closed before our hello is written, so
        // the write fails with EPIPE; the refusal must still be what we see.
        super::fake_server::serve(theirs, Behavior::RefuseBeforeHello(denied.clone()));
        let err = hello(&mut ours, Path::new("/x.sock")).unwrap_err();
        assert!(
            matches!(&err, ClientError::Remote(e) if *e == denied),
            "{err:?}"
        );
    }

    #[test]
    fn refusal_after_connect_is_reported() {
        let denied = RpcError::new(ErrorCode::PermissionDenied, "uid 1234 may not use bangerd");
        let fake = FakeServer::start(Behavior::RefuseBeforeHello(denied.clone()));
        let err = Client::connect_trusting(&fake.socket, &me()).unwrap_err();
        assert!(
            matches!(&err, ClientError::Remote(e) if *e == denied),
            "{err:?}"
        );
    }

    #[test]
    fn hello_with_another_protocol_is_a_mismatch() {
        let fake = FakeServer::start(Behavior::HelloWithProtocol(PROTOCOL_VERSION + 1));
        let err = Client::connect_trusting(&fake.socket, &me()).unwrap_err();
        assert!(
            matches!(err, ClientError::ProtocolMismatch { theirs, .. } if theirs == PROTOCOL_VERSION + 1)
        );
    }

    #[test]
    fn missing_socket_is_unreachable_and_untrusted_owner_is_unsafe() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("none.sock");
        let err = Client::connect_trusting(&missing, &me()).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert!(err.hint().is_some());

        let fake = FakeServer::start(Behavior::Serve(vec![]));
        let stranger = [me()[0].wrapping_add(4242)];
        let err = Client::connect_trusting(&fake.socket, &stranger).unwrap_err();
        assert!(
            matches!(
                &err,
                ClientError::UnsafeSocket(SocketPathError::ForeignOwner { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn install_owner_is_trusted_when_the_metadata_parses() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("install.toml");
        assert_eq!(trusted_owners_from(&file), {
            let mut v = vec![rustix::process::geteuid().as_raw(), 0];
            v.sort_unstable();
            v.dedup();
            v
        });
        std::fs::write(&file, "not toml [").unwrap();
        assert!(!trusted_owners_from(&file).contains(&4321));
        let meta = r#"
            version = "0.1.0"
            installed_at = "2025-01-01T00:00:00Z"
            [owner]
            name = "dev"
            uid = 4321
            gid = 4321
            [paths]
            bin_dir = "/usr/local/bin"
            state_dir = "/var/lib/banger"
            runtime_dir = "/run/banger"
            root_socket = "/run/banger/root.sock"
            root_state_dir = "/var/lib/banger-root"
        "#;
        std::fs::write(&file, meta).unwrap();
        assert!(trusted_owners_from(&file).contains(&4321));
    }
}
