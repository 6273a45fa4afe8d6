//! The public RPC server: accepts on the daemon socket, authenticates each
//! peer with SO_PEERCRED before reading a byte, shakes hands, then serves
//! requests one at a time per connection, streaming progress.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use banger_proto::frame::{self, FrameError, HEADER_LEN};
use banger_proto::rpc::{
    ClientHello, PROTOCOL_VERSION, Progress, Request, Response, ServerHello, ServerMsg,
};
use banger_proto::{ErrorCode, RpcError};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How long a new connection may take to send its hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which peers may talk to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Dev mode: root only.
    RootOnly,
    /// System mode: the installed owner, and root.
    OwnerAndRoot { owner: u32 },
}

impl PeerPolicy {
    pub fn allows(self, uid: u32) -> bool {
        match self {
            PeerPolicy::RootOnly => uid == 0,
            PeerPolicy::OwnerAndRoot { owner } => uid == owner || uid == 0,
        }
    }

    fn describe(self) -> String {
        match self {
            PeerPolicy::RootOnly => "this dev-mode daemon serves root only".to_string(),
            PeerPolicy::OwnerAndRoot { owner } => {
                format!("this daemon serves its owner (uid {owner}) and root only")
            }
        }
    }
}

/// Sends progress events for the request being served.
#[derive(Debug, Clone)]
pub struct ProgressSink(mpsc::Sender<Progress>);

impl ProgressSink {
    /// A sink whose events go nowhere (for internal callers).
    pub fn discard() -> Self {
        let (tx, _rx) = mpsc::channel(1);
        ProgressSink(tx)
    }

    pub async fn emit(&self, p: Progress) {
        let _ = self.0.send(p).await;
    }

    /// For code running on a blocking thread.
    pub fn emit_blocking(&self, p: Progress) {
        let _ = self.0.blocking_send(p);
    }

    /// From any context (callbacks that may run inside another runtime):
    /// dropped when the client is slow. Progress is decoration.
    pub fn try_emit(&self, p: Progress) {
        let _ = self.0.try_send(p);
    }
}

/// Serves requests; implemented by the daemon.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request,
        progress: ProgressSink,
    ) -> impl Future<Output = Result<Response, RpcError>> + Send;
}

/// Run the accept loop until `shutdown` becomes true, then drain.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    policy: PeerPolicy,
    hello: ServerHello,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = Arc::clone(&handler);
                    let hello = hello.clone();
                    conns.spawn(async move { connection(stream, policy, hello, handler).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "aborting connections still busy at shutdown"
        );
        conns.abort_all();
    }
}

async fn connection<H: Handler>(
    mut stream: UnixStream,
    policy: PeerPolicy,
    hello: ServerHello,
    handler: Arc<H>,
) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading peer credentials; dropping connection");
            return;
        }
    };
    let uid = cred.uid();
    if !policy.allows(uid) {
        tracing::warn!(uid, pid = ?cred.pid(), "refused peer");
        let err = RpcError::new(
            ErrorCode::PermissionDenied,
            format!(
                "uid {uid} may not use this banger daemon; {}",
                policy.describe()
            ),
        );
        let _ = send(&mut stream, &ServerMsg::Error(err)).await;
        return;
    }
    match recv::<ClientHello>(&mut stream, HANDSHAKE_TIMEOUT).await {
        Ok(h) if h.protocol == PROTOCOL_VERSION => {
            tracing::debug!(client = %h.client_version, "hello");
            if send(&mut stream, &ServerMsg::Hello(hello)).await.is_err() {
                return;
            }
        }
        Ok(h) => {
            let err = RpcError::new(
                ErrorCode::ProtocolMismatch,
                format!(
                    "client speaks protocol {} (banger {}), daemon speaks {PROTOCOL_VERSION} (bangerd {}); use matching versions",
                    h.protocol, h.client_version, hello.daemon_version
                ),
            );
            let _ = send(&mut stream, &ServerMsg::Error(err)).await;
            return;
        }
        Err(RecvError::Closed) => return,
        Err(e) => {
            let _ = send(&mut stream, &ServerMsg::Error(e.into_rpc("hello"))).await;
            return;
        }
    }

    loop {
        let req = match recv::<Request>(&mut stream, IDLE_TIMEOUT).await {
            Ok(r) => r,
            Err(RecvError::Closed) | Err(RecvError::Idle) => return,
            Err(e) => {
                let _ = send(&mut stream, &ServerMsg::Error(e.into_rpc("request"))).await;
                return;
            }
        };
        let method = req.method();
        tracing::info!(method, uid, "request");
        if serve_one(&mut stream, handler.as_ref(), req).await.is_err() {
            tracing::debug!(method, "peer went away mid-reply");
            return;
        }
    }
}

/// Longest silence on a connection while a request runs (clients time out
/// reads after two minutes).
pub const KEEPALIVE: Duration = Duration::from_secs(20);

/// Run one request, forwarding its progress events as they come.
async fn serve_one<H: Handler>(
    stream: &mut UnixStream,
    handler: &H,
    req: Request,
) -> std::io::Result<()> {
    let method = req.method();
    let (tx, mut rx) = mpsc::channel::<Progress>(64);
    let fut = handler.handle(req, ProgressSink(tx));
    tokio::pin!(fut);
    // A long step that reports nothing (an mmdebstrap run, a guest power-off)
    // must not look like a dead daemon to a client waiting on its read
    // timeout: after KEEPALIVE of silence, the last event is repeated (or a
    // generic one sent).
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut last: Option<Progress> = None;
    let mut quiet = true;
    let result = loop {
        tokio::select! {
            biased;
            Some(p) = rx.recv() => {
                send(stream, &ServerMsg::Progress(p.clone())).await?;
                last = Some(p);
                quiet = false;
            }
            res = &mut fut => break res,
            _ = keepalive.tick() => {
                if quiet {
                    let p = last.clone().unwrap_or_else(|| Progress {
                        stage: "working".into(),
                        message: format!("{method} in progress"),
                        done: 0,
                        total: None,
                    });
                    send(stream, &ServerMsg::Progress(p)).await?;
                }
                quiet = true;
            }
        }
    };
    while let Ok(p) = rx.try_recv() {
        send(stream, &ServerMsg::Progress(p)).await?;
    }
    let msg = match result {
        Ok(resp) => ServerMsg::Done(resp),
        Err(e) => ServerMsg::Error(e),
    };
    send(stream, &msg).await
}

#[derive(Debug, thiserror::Error)]
enum RecvError {
    #[error("peer closed the connection")]
    Closed,
    #[error("peer was idle too long")]
    Idle,
    #[error("no {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("invalid frame")]
    Frame(#[source] FrameError),
}

impl RecvError {
    fn into_rpc(self, what: &str) -> RpcError {
        let code = match &self {
            RecvError::Frame(FrameError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
            _ => ErrorCode::BadRequest,
        };
        RpcError::from_error(code, &self).context(format!("reading {what}"))
    }
}

async fn recv<T: DeserializeOwned>(
    stream: &mut UnixStream,
    timeout: Duration,
) -> Result<T, RecvError> {
    let mut header = [0u8; HEADER_LEN];
    // Wait for the first byte under the (possibly long) timeout, the rest of
    // the frame under the handshake timeout: a peer may idle between
    // requests, not in the middle of one.
    let first = match tokio::time::timeout(timeout, stream.read(&mut header[..1])).await {
        Err(_) if timeout == IDLE_TIMEOUT => return Err(RecvError::Idle),
        Err(_) => return Err(RecvError::Timeout("message", timeout)),
        Ok(Ok(0)) => return Err(RecvError::Closed),
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(RecvError::Frame(FrameError::Read(e))),
    };
    debug_assert_eq!(first, 1);
    let rest = async {
        stream
            .read_exact(&mut header[1..])
            .await
            .map_err(FrameError::Read)?;
        let len = frame::decode_header(header)?;
        let mut body = vec![0u8; len];
        stream
            .read_exact(&mut body)
            .await
            .map_err(FrameError::Read)?;
        Ok::<_, FrameError>(body)
    };
    let body = match tokio::time::timeout(HANDSHAKE_TIMEOUT, rest).await {
        Err(_) => return Err(RecvError::Timeout("complete frame", HANDSHAKE_TIMEOUT)),
        Ok(Err(e)) => return Err(RecvError::Frame(e)),
        Ok(Ok(b)) => b,
    };
    frame::decode_body(&body).map_err(RecvError::Frame)
}

async fn send(stream: &mut UnixStream, msg: &ServerMsg) -> std::io::Result<()> {
    let bytes = frame::encode(msg).map_err(std::io::Error::other)?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}
