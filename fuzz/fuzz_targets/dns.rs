//! The `.vm` DNS server on raw packets: bangerd's own server
//! (`bangerd::dns::DnsServer`, hickory's decoder in front of banger's
//! handler and zone) on a loopback UDP socket, sent each input as one
//! datagram.
//!
//! The handler and zone are private to bangerd, so the target goes through
//! the public entry the daemon uses: a real server on a socket, here bound
//! to 127.0.0.1 with no upstreams (nothing is ever forwarded). After each
//! input a known query (`probe.vm A`) is sent, and its answer awaited: the
//! server must still answer it, correctly, within 10 s. Every datagram the
//! server sends back must decode as a DNS response. A panic on the server's
//! thread aborts the process (libfuzzer-sys's panic hook), so libFuzzer
//! reports it against the input that caused it.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bangerd::dns::{DnsConfig, DnsServer, Ipv4Cidr};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;

/// Largest datagram sent: what one UDP read of the server takes whole.
const MAX_DATAGRAM: usize = 4096;
const PROBE_ADDR: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 9);
/// How long the server gets to answer the probe before the input counts
/// as having hung or killed it.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

struct Harness {
    client: UdpSocket,
}

/// The server runs on a current-thread runtime of its own thread, which
/// runs tasks in the order they were spawned: the reply to an input is
/// sent before the probe's, so it is read (and checked) in the same run.
fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dns-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("starting the server's runtime");
                let (udp, tcp) = bind_pair();
                let reverse = Ipv4Cidr::new(Ipv4Addr::new(172, 30, 0, 0), 24).expect("a /24");
                let server = runtime.block_on(async {
                    DnsServer::start(udp, tcp, DnsConfig::new(reverse, Vec::new()))
                        .expect("starting the DNS server")
                });
                for (name, last) in [("probe", 9), ("alpha", 2), ("web-1", 3), ("db", 200)] {
                    server
                        .publish(name, Ipv4Addr::new(172, 30, 0, last))
                        .expect("publishing a seed name");
                }
                tx.send(server.local_addr())
                    .expect("handing over the address");
                // Serve for the process's life (the handle stops it on drop).
                runtime.block_on(std::future::pending::<()>());
                drop(server);
            })
            .expect("starting the server thread");
        let addr = rx.recv().expect("the server's address");
        let client = UdpSocket::bind("127.0.0.1:0").expect("binding the client socket");
        client.connect(addr).expect("connecting to the server");
        Harness { client }
    })
}

/// UDP and TCP on one free loopback port (the server takes both).
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("binding UDP on 127.0.0.1");
        let port = udp.local_addr().expect("a bound socket").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP after 50 tries");
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_DATAGRAM {
        return;
    }
    let h = harness();
    // The probe's id changes every input, so that an input that asks the
    // probe's question (with other flags, which get another answer) is not
    // taken for it.
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut probe = Message::new(id, MessageType::Query, OpCode::Query);
    probe.add_query(Query::query(
        Name::from_ascii("probe.vm.").expect("a name"),
        RecordType::A,
    ));
    // An empty datagram is a real one too.
    h.client.send(data).expect("sending the input");
    h.client
        .send(&probe.to_vec().expect("encoding the probe"))
        .expect("sending the probe");
    let deadline = Instant::now() + PROBE_DEADLINE;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the DNS server did not answer the probe within {PROBE_DEADLINE:?} after this input"
        );
        h.client
            .set_read_timeout(Some(left))
            .expect("setting the read timeout");
        let n = match h.client.recv(&mut buf) {
            Ok(n) => n,
            // Interrupted: libFuzzer's once-a-second SIGALRM (its -timeout
            // watchdog) lands in the wait, and a socket read with a timeout
            // set is never restarted (signal(7)): EINTR, which is the
            // harness's, not the server's. Read again until the deadline.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => panic!("receiving from the DNS server: {e}"),
        };
        let reply = match Message::from_vec(&buf[..n]) {
            Ok(reply) => reply,
            Err(e) => panic!(
                "the server sent a datagram that is not a DNS message ({e}): {:02x?}",
                &buf[..n]
            ),
        };
        assert_eq!(
            reply.metadata.message_type,
            MessageType::Response,
            "the server sent a query: {reply:?}"
        );
        if is_probe_answer(&reply, id) {
            break;
        }
    }
});

/// The answer to the probe, checked: `probe.vm A` is published.
fn is_probe_answer(reply: &Message, id: u16) -> bool {
    let is_probe = reply.metadata.id == id
        && reply.queries.len() == 1
        && reply.queries[0].query_type() == RecordType::A
        && reply.queries[0]
            .name()
            .to_ascii()
            .eq_ignore_ascii_case("probe.vm.");
    if is_probe {
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{reply:?}"
        );
        assert!(reply.metadata.authoritative, "{reply:?}");
        let addrs: Vec<_> = reply
            .answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect();
        assert_eq!(addrs, vec![IpAddr::V4(PROBE_ADDR)], "{reply:?}");
    }
    is_probe
}
