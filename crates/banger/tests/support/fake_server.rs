//! A recording fake of `bangerd`'s public socket, for testing client logic.
//!
//! It binds a socket in a private temp dir, accepts one connection on a
//! thread, follows a script, and records what the client sent. It speaks the
//! protocol with the real `banger_proto` types and framing. Shared by the
//! client's unit tests (`src/client.rs`) and the CLI tests (`tests/cli.rs`).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;

use banger_proto::RpcError;
use banger_proto::doctor::{Accel, BackendSupport, Check, CheckStatus, DoctorReport, VmmKind};
use banger_proto::frame::{read_frame, write_frame};
use banger_proto::rpc::{
    ClientHello, DaemonInfo, DaemonMode, PROTOCOL_VERSION, Progress, Request, Response,
    ServerHello, ServerMsg,
};

/// What the fake does with its one connection.
#[derive(Debug)]
pub enum Behavior {
    /// Send this error before reading anything, then close (refused peer).
    RefuseBeforeHello(RpcError),
    /// Read the client's hello, answer with this error, then close.
    RejectHello(RpcError),
    /// Answer the hello claiming another protocol version, then close.
    HelloWithProtocol(u32),
    /// Answer the hello, then each request in turn with one [`Reply`].
    Serve(Vec<Reply>),
}

/// The fake's answer to one request.
#[derive(Debug)]
pub struct Reply {
    pub progress: Vec<Progress>,
    pub outcome: Result<Response, RpcError>,
}

/// What the client sent.
#[derive(Debug, Default)]
pub struct Recorded {
    pub hello: Option<ClientHello>,
    pub requests: Vec<Request>,
}

#[derive(Debug)]
pub struct FakeServer {
    pub socket: PathBuf,
    thread: JoinHandle<Recorded>,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    pub fn start(behavior: Behavior) -> FakeServer {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod temp dir");
        let socket = dir.path().join("bangerd.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake socket");
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            serve(stream, behavior)
        });
        FakeServer {
            socket,
            thread,
            _dir: dir,
        }
    }

    /// Wait for the conversation to end and return what the client sent.
    pub fn finish(self) -> Recorded {
        self.thread.join().expect("fake server thread panicked")
    }
}

fn hello() -> ServerMsg {
    ServerMsg::Hello(ServerHello {
        protocol: PROTOCOL_VERSION,
        daemon_version: "9.9.9".into(),
        mode: DaemonMode::Dev,
    })
}

/// Follow `behavior` on one accepted connection.
pub fn serve(mut stream: UnixStream, behavior: Behavior) -> Recorded {
    let mut rec = Recorded::default();
    let send = |s: &mut UnixStream, m: &ServerMsg| {
        // The client may already have gone; that is its business.
        let _ = write_frame(s, m);
    };
    if let Behavior::RefuseBeforeHello(e) = behavior {
        send(&mut stream, &ServerMsg::Error(e));
        return rec;
    }
    rec.hello = read_frame(&mut stream).ok();
    match behavior {
        Behavior::RefuseBeforeHello(_) => unreachable!("handled above"),
        Behavior::RejectHello(e) => send(&mut stream, &ServerMsg::Error(e)),
        Behavior::HelloWithProtocol(p) => {
            let ServerMsg::Hello(mut h) = hello() else {
                unreachable!("hello() is a hello")
            };
            h.protocol = p;
            send(&mut stream, &ServerMsg::Hello(h));
        }
        Behavior::Serve(replies) => {
            send(&mut stream, &hello());
            for reply in replies {
                match read_frame::<_, Request>(&mut stream) {
                    Ok(req) => rec.requests.push(req),
                    Err(_) => break,
                }
                for p in reply.progress {
                    send(&mut stream, &ServerMsg::Progress(p));
                }
                let last = match reply.outcome {
                    Ok(resp) => ServerMsg::Done(resp),
                    Err(e) => ServerMsg::Error(e),
                };
                send(&mut stream, &last);
            }
            // Record anything further until the client hangs up.
            while let Ok(req) = read_frame::<_, Request>(&mut stream) {
                rec.requests.push(req);
            }
        }
    }
    rec
}

pub fn progress(stage: &str, done: u64, total: u64) -> Progress {
    Progress {
        stage: stage.into(),
        message: format!("checking {stage}"),
        done,
        total: Some(total),
    }
}

pub fn daemon_info(socket: &str) -> DaemonInfo {
    DaemonInfo {
        daemon_version: "9.9.9".into(),
        protocol: PROTOCOL_VERSION,
        mode: DaemonMode::Dev,
        pid: 4242,
        uid: 0,
        state_dir: "/var/lib/banger-dev".into(),
        socket: socket.into(),
    }
}

fn check(id: &str, status: CheckStatus, summary: &str, hint: Option<&str>) -> Check {
    Check {
        id: id.into(),
        status,
        state: "test".into(),
        summary: summary.into(),
        hint: hint.map(Into::into),
    }
}

/// A report with one pass, one warning and one failure.
pub fn report_with_failure() -> DoctorReport {
    DoctorReport {
        checks: vec![
            check("kvm", CheckStatus::Pass, "/dev/kvm is usable", None),
            check(
                "resolved",
                CheckStatus::Warn,
                "systemd-resolved is not running",
                Some("start systemd-resolved to resolve NAME.vm"),
            ),
            check(
                "nft",
                CheckStatus::Fail,
                "nft binary not found",
                Some("apt-get install nftables"),
            ),
        ],
        backends: vec![
            BackendSupport {
                vmm: VmmKind::Firecracker,
                usable: false,
                accel: None,
                reason: "firecracker binary not found".into(),
            },
            BackendSupport {
                vmm: VmmKind::Qemu,
                usable: true,
                accel: Some(Accel::Kvm),
                reason: "qemu-system-x86_64 with KVM".into(),
            },
        ],
    }
}

/// A report where nothing failed (a warning only).
pub fn report_with_warning_only() -> DoctorReport {
    let mut r = report_with_failure();
    r.checks.retain(|c| c.status != CheckStatus::Fail);
    r
}
