//! DNS sockets across the privileged seam: a real `bangerd-root`, running in a
//! throwaway network namespace, binds `bridge:53` and passes the sockets back
//! over its Unix socket (SCM_RIGHTS); the `.vm` server then answers on them.
//! Also: the client refuses descriptors that do not match the reply.
//!
//! Needs root, `ip` (iproute2) and `dig` (bind9-dnsutils).

use std::io::Read;
use std::mem::ManuallyDrop;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use banger_proto::ErrorCode;
use banger_proto::frame::{read_frame, write_frame, write_frame_with_fds};
use banger_proto::net::{BridgeSpec, DnsSockets, FdIndex};
use banger_proto::privops::{
    NetOp, OpenDnsSockets, PRIV_PROTOCOL_VERSION, PrivOp, PrivOutcome, PrivReply, PrivRequest,
    QueryNetStatus, Teardown,
};
use banger_testkit::*;
use bangerd::dns::{DnsConfig, DnsServer, Ipv4Cidr};
use bangerd::privileged::{HelperClient, PrivilegedOps};

const BRIDGE: &str = "bangerdns0";
const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);

/// The test process plays the owner daemon, so the helper is installed with
/// root as its owner (uid separation is covered in helper.rs). Not a created
/// user: never dropped, so nothing is deleted.
fn root_owner() -> ManuallyDrop<TestUser> {
    ManuallyDrop::new(TestUser {
        name: "root".into(),
        uid: 0,
        gid: 0,
    })
}

/// A helper in `ns` with a journaled bridge at [`BRIDGE_IP`]/24.
fn helper_with_bridge(ns: &NetNs, dir: &std::path::Path) -> (RootHelper, HelperClient) {
    let network = banger_proto::install::InstallNetwork {
        bridge: BRIDGE.into(),
        subnet: "10.213.0.0/24".parse().unwrap(),
    };
    let h = RootHelper::start_in_with(ns, dir, &root_owner(), network);
    let ops = HelperClient::new(&h.socket);
    let out = ops
        .call(PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
            name: BRIDGE.into(),
            address: BRIDGE_IP,
            prefix_len: 24,
        })))
        .unwrap_or_else(|e| panic!("ensure_bridge: {}", e.render()));
    assert!(matches!(out, PrivOutcome::Bridge(_)), "{out:?}");
    (h, ops)
}

fn open_dns_sockets(ops: &HelperClient) -> (UdpSocket, TcpListener) {
    let (outcome, mut fds) = ops
        .call_with_fds(PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
            address: BRIDGE_IP,
        })))
        .unwrap_or_else(|e| panic!("open_dns_sockets: {}", e.render()));
    assert_eq!(
        outcome,
        PrivOutcome::DnsSockets(DnsSockets {
            address: BRIDGE_IP,
            udp: FdIndex(0),
            tcp: FdIndex(1),
        })
    );
    assert_eq!(fds.len(), 2);
    for fd in &fds {
        let flags = rustix::io::fcntl_getfd(fd).unwrap();
        assert!(
            flags.contains(rustix::io::FdFlags::CLOEXEC),
            "received descriptors are close-on-exec"
        );
    }
    let tcp = TcpListener::from(fds.pop().unwrap());
    let udp = UdpSocket::from(fds.pop().unwrap());
    let at = SocketAddr::from((BRIDGE_IP, 53));
    assert_eq!(udp.local_addr().unwrap(), at);
    assert_eq!(tcp.local_addr().unwrap(), at);
    (udp, tcp)
}

#[test]
fn helper_passes_dns_sockets_bound_in_its_namespace() {
    require_root();
    let ns = NetNs::new();
    let dir = shared_tempdir();
    let (_helper, ops) = helper_with_bridge(&ns, dir.path());
    let (udp, tcp) = open_dns_sockets(&ops);

    // A datagram and a connection to bridge:53 from inside the namespace
    // arrive on the descriptors this process received.
    let client = ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"ping", (BRIDGE_IP, 53)).unwrap();
        TcpStream::connect_timeout(&(BRIDGE_IP, 53).into(), Duration::from_secs(5)).unwrap()
    });
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = udp
        .recv_from(&mut buf)
        .expect("datagram on the passed UDP socket");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from.ip(), BRIDGE_IP);
    let (_conn, peer) = tcp.accept().expect("connection on the passed TCP listener");
    assert_eq!(peer, client.local_addr().unwrap());

    // `call` is for operations without descriptors: the helper's sockets are
    // closed and the caller gets an internal error, not a silent leak.
    drop((udp, tcp));
    let err = ops
        .call(PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
            address: BRIDGE_IP,
        })))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal, "{}", err.render());
    // ...and they really were closed: the port can be bound again. The
    // kernel releases descriptors discarded in flight (SCM_RIGHTS the client
    // would not take) asynchronously, so under load the port may stay busy
    // for a moment: retry for a bounded time, then require success.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ops.call_with_fds(PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets {
            address: BRIDGE_IP,
        }))) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline && e.render().contains("in use") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the DNS port stayed taken: {}", e.render()),
        }
    }

    let _ = ops.call(PrivOp::Net(NetOp::Teardown(Teardown)));
}

#[test]
fn dns_server_answers_inside_the_namespace_on_passed_sockets() {
    require_root();
    let ns = NetNs::new();
    let dir = shared_tempdir();
    let (_helper, ops) = helper_with_bridge(&ns, dir.path());
    let (udp, tcp) = open_dns_sockets(&ops);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = {
        let _entered = rt.enter();
        let reverse = Ipv4Cidr::new(Ipv4Addr::new(10, 213, 0, 0), 24).unwrap();
        DnsServer::start(udp, tcp, DnsConfig::new(reverse, vec![])).unwrap()
    };
    handle
        .publish("web", Ipv4Addr::new(10, 213, 0, 10))
        .unwrap();

    let dig = |args: &[&str]| -> String {
        let mut cmd = ns.exec("dig");
        cmd.args([&format!("@{BRIDGE_IP}"), "+time=3", "+tries=1", "+short"])
            .args(args);
        let out = cmd
            .output()
            .expect("running ip netns exec ... dig; apt-get install iproute2 bind9-dnsutils");
        assert!(
            out.status.success(),
            "dig {args:?} failed (is dig installed? apt-get install bind9-dnsutils): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(dig(&["web.vm", "A"]), "10.213.0.10");
    assert_eq!(dig(&["+tcp", "web.vm", "A"]), "10.213.0.10");
    assert_eq!(dig(&["-x", "10.213.0.10"]), "web.vm.");

    rt.block_on(handle.shutdown()).unwrap();
    let _ = ops.call(PrivOp::Net(NetOp::Teardown(Teardown)));
}

/// A scripted stand-in for the helper: answers the handshake, then replies
/// to one op with `reply` and `fds` attached.
fn fake_helper(
    dir: &std::path::Path,
    reply: PrivReply,
    fds: Vec<OwnedFd>,
) -> (std::path::PathBuf, std::thread::JoinHandle<()>) {
    let socket = dir.join("root.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _: PrivRequest = read_frame(&mut s).unwrap();
        write_frame(
            &mut s,
            &PrivReply::Hello {
                protocol: PRIV_PROTOCOL_VERSION,
                helper_version: "fake".into(),
            },
        )
        .unwrap();
        let _: PrivRequest = read_frame(&mut s).unwrap();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        write_frame_with_fds(&mut s, &reply, &borrowed).unwrap();
        // `fds` (our copies) close here.
    });
    (socket, t)
}

/// A pipe whose write end is passed: once every copy of it is closed, the
/// read end sees end-of-file instead of "would block".
fn watched_fd() -> (std::io::PipeReader, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    rustix::io::ioctl_fionbio(&r, true).unwrap();
    (r, OwnedFd::from(w))
}

/// Other tests in this binary fork children concurrently, and a child holds
/// copies of every descriptor between fork and exec (close-on-exec or not),
/// so wait a little for end-of-file; a leak in the client never gets there.
fn assert_all_closed(mut r: std::io::PipeReader) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a passed descriptor is still open in the client"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!("unexpected read on the watch pipe: {other:?}"),
        }
    }
}

#[test]
fn helper_client_closes_descriptors_that_do_not_match_the_reply() {
    require_root();
    let op = || PrivOp::Net(NetOp::OpenDnsSockets(OpenDnsSockets { address: BRIDGE_IP }));
    let dns = PrivReply::Ok(PrivOutcome::DnsSockets(DnsSockets {
        address: BRIDGE_IP,
        udp: FdIndex(0),
        tcp: FdIndex(1),
    }));

    // One descriptor where the reply names two.
    let dir = shared_tempdir();
    let (r, w) = watched_fd();
    let (socket, t) = fake_helper(dir.path(), dns.clone(), vec![w]);
    let err = HelperClient::new(&socket).call_with_fds(op()).unwrap_err();
    t.join().unwrap();
    assert_eq!(err.code, ErrorCode::Internal, "{}", err.render());
    assert!(
        err.render().contains("1 file descriptors"),
        "{}",
        err.render()
    );
    assert_all_closed(r);

    // Descriptors beside an outcome that names none.
    let dir = shared_tempdir();
    let (r, w) = watched_fd();
    let (socket, t) = fake_helper(dir.path(), PrivReply::Ok(PrivOutcome::Done), vec![w]);
    let err = HelperClient::new(&socket)
        .call_with_fds(PrivOp::Net(NetOp::NetStatus(QueryNetStatus)))
        .unwrap_err();
    t.join().unwrap();
    assert_eq!(err.code, ErrorCode::Internal, "{}", err.render());
    assert_all_closed(r);

    // Descriptors beside an error.
    let dir = shared_tempdir();
    let (r, w) = watched_fd();
    let refusal = PrivReply::Error(banger_proto::RpcError::new(ErrorCode::BadRequest, "no"));
    let (socket, t) = fake_helper(dir.path(), refusal, vec![w]);
    assert!(HelperClient::new(&socket).call_with_fds(op()).is_err());
    t.join().unwrap();
    assert_all_closed(r);

    // The matching case, through the same client path.
    let dir = shared_tempdir();
    let (r1, w1) = watched_fd();
    let (r2, w2) = watched_fd();
    let (socket, t) = fake_helper(dir.path(), dns, vec![w1, w2]);
    let (_, fds) = HelperClient::new(&socket).call_with_fds(op()).unwrap();
    t.join().unwrap();
    assert_eq!(fds.len(), 2);
    drop(fds);
    assert_all_closed(r1);
    assert_all_closed(r2);
}
