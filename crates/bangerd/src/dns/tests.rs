//! Real-socket tests: servers on 127.0.0.1 ephemeral ports in the test
//! process, queried with `dig` (package bind9-dnsutils) over UDP and TCP.
//! The upstream for forwarding is a second in-process server.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use banger_host::runner::{Cmd, RunError, Runner};

use super::*;

/// Bind UDP and TCP on the same free loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("binding UDP on 127.0.0.1");
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP after 50 tries");
}

fn reverse() -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::new(172, 30, 0, 0), 24).unwrap()
}

fn start(upstreams: Vec<SocketAddr>) -> DnsHandle {
    let (udp, tcp) = bind_pair();
    DnsServer::start(udp, tcp, DnsConfig::new(reverse(), upstreams)).unwrap()
}

/// A second server standing in for the host's upstream resolver: it is
/// authoritative for `test.` and serves `example.test A 192.0.2.7`.
fn start_upstream() -> DnsHandle {
    let (udp, tcp) = bind_pair();
    let mut config = DnsConfig::new(
        Ipv4Cidr::new(Ipv4Addr::new(192, 0, 2, 0), 24).unwrap(),
        vec![],
    );
    config.zone = "test".into();
    let h = DnsServer::start(udp, tcp, config).unwrap();
    h.publish("example", Ipv4Addr::new(192, 0, 2, 7)).unwrap();
    h
}

/// What `dig` reported.
#[derive(Debug, Default)]
struct Dig {
    status: String,
    flags: Vec<String>,
    /// `TYPE RDATA` of each answer record.
    answers: Vec<String>,
    /// Record types in the authority section.
    authority: Vec<String>,
}

impl Dig {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let mut cmd = Cmd::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args([
            "+time=3",
            "+tries=1",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
        ])
        .timeout(Duration::from_secs(20));
    cmd = cmd.args(args);
    let display = cmd.display();
    let out = tokio::task::spawn_blocking(move || Runner.run(&cmd))
        .await
        .unwrap();
    let out = match out {
        Ok(o) => o,
        Err(RunError::NotFound { .. }) => {
            panic!("dig is not installed; apt-get install bind9-dnsutils")
        }
        Err(e) => panic!("{display}: {}", banger_proto::error::chain(&e).join(": ")),
    };
    parse_dig(&out.stdout)
}

fn parse_dig(text: &str) -> Dig {
    let mut d = Dig::default();
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or_default().to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or_default();
            d.flags = flags.split_whitespace().map(String::from).collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(';') || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else {
            // NAME TTL CLASS TYPE RDATA...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 {
                match section {
                    "answer" => d.answers.push(fields[3..].join(" ")),
                    "authority" => d.authority.push(fields[3].to_string()),
                    _ => {}
                }
            }
        }
    }
    assert!(!d.status.is_empty(), "no header in dig output:\n{text}");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_names_resolve_authoritatively_over_udp_and_tcp() {
    let h = start(vec![]);
    let at = h.local_addr();
    h.publish("web", Ipv4Addr::new(172, 30, 0, 10)).unwrap();

    for transport in ["+notcp", "+tcp"] {
        let d = dig(at, &[transport, "web.vm", "A"]).await;
        assert_eq!(d.status, "NOERROR", "{transport}: {d:?}");
        assert!(d.has("aa"), "{transport}: {d:?}");
        assert_eq!(d.answers, vec!["A 172.30.0.10"], "{transport}");

        let d = dig(at, &[transport, "WEB.Vm", "A"]).await;
        assert_eq!(d.answers, vec!["A 172.30.0.10"], "{transport}: case");

        let d = dig(at, &[transport, "unknown.vm", "A"]).await;
        assert_eq!(d.status, "NXDOMAIN", "{transport}: {d:?}");
        assert!(d.has("aa"), "{transport}: {d:?}");
        assert_eq!(d.authority, vec!["SOA"], "{transport}");

        let d = dig(at, &[transport, "-x", "172.30.0.10"]).await;
        assert_eq!(d.status, "NOERROR", "{transport}: {d:?}");
        assert!(d.has("aa"));
        assert_eq!(d.answers, vec!["PTR web.vm."], "{transport}");
    }

    // An existing name without the asked type: NODATA, not NXDOMAIN.
    let d = dig(at, &["web.vm", "AAAA"]).await;
    assert_eq!((d.status.as_str(), d.answers.len()), ("NOERROR", 0));
    assert_eq!(d.authority, vec!["SOA"]);

    let d = dig(at, &["vm", "SOA"]).await;
    assert!(d.has("aa"));
    assert!(d.answers[0].starts_with("SOA vm. hostmaster.vm."), "{d:?}");
    let d = dig(at, &["vm", "NS"]).await;
    assert_eq!(d.answers, vec!["NS vm."]);

    // An address in the network that nothing uses.
    let d = dig(at, &["-x", "172.30.0.99"]).await;
    assert_eq!(d.status, "NXDOMAIN");
    assert!(d.has("aa"));

    assert!(h.withdraw("web"));
    let d = dig(at, &["web.vm", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "after withdraw: {d:?}");
    let d = dig(at, &["-x", "172.30.0.10"]).await;
    assert_eq!(d.status, "NXDOMAIN", "PTR after withdraw: {d:?}");

    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_forwarded_to_the_upstreams() {
    let upstream = start_upstream();
    let h = start(vec![upstream.local_addr()]);
    let at = h.local_addr();

    for transport in ["+notcp", "+tcp"] {
        let d = dig(at, &[transport, "example.test", "A"]).await;
        assert_eq!(d.status, "NOERROR", "{transport}: {d:?}");
        assert!(d.has("ra"), "{transport}: recursion available: {d:?}");
        assert!(
            !d.has("aa"),
            "{transport}: a forwarded answer is not ours: {d:?}"
        );
        assert_eq!(d.answers, vec!["A 192.0.2.7"], "{transport}");
    }
    let d = dig(at, &["missing.test", "A"]).await;
    assert_eq!(d.status, "NXDOMAIN", "{d:?}");
    assert!(!d.has("aa"));
    assert_eq!(d.authority, vec!["SOA"], "upstream's SOA passed on");

    // .vm is still answered here, never forwarded.
    h.publish("db", Ipv4Addr::new(172, 30, 0, 11)).unwrap();
    let d = dig(at, &["db.vm", "A"]).await;
    assert!(d.has("aa") && d.has("ra"), "{d:?}");
    assert_eq!(d.answers, vec!["A 172.30.0.11"]);

    h.shutdown().await.unwrap();
    upstream.shutdown().await.unwrap();
}

/// Found by the `dns` fuzz target (fuzz/crashes/dns/): a query whose
/// question name is a compression pointer into its own header was
/// answered with that question copied as it came, so the pointer named the
/// reply's header and the reply did not decode. It is now FORMERR with no
/// question, a reply that decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_compressed_into_the_header_is_formerr_and_decodes() {
    let h = start(vec![]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let query = b"\x00\x05\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x02vm\x00\x00\x0a\x00\x01";
    // The query itself decodes (a pointer backwards is legal DNS).
    hickory_proto::op::Message::from_vec(query).expect("the query decodes");
    sock.send_to(query, h.local_addr()).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let reply = hickory_proto::op::Message::from_vec(&buf[..n])
        .unwrap_or_else(|e| panic!("the reply does not decode ({e}): {:02x?}", &buf[..n]));
    assert_eq!(reply.metadata.id, 5);
    assert_eq!(
        reply.metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
    assert!(reply.queries.is_empty(), "{reply:?}");
    // A plain query still works.
    let d = dig(h.local_addr(), &["vm", "A"]).await;
    assert_ne!(d.status, "FORMERR", "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_upstreams_other_names_are_refused() {
    let h = start(vec![]);
    let d = dig(h.local_addr(), &["example.test", "A"]).await;
    assert_eq!(d.status, "REFUSED", "{d:?}");
    assert!(!d.has("ra"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_servfail() {
    // A bound socket that never answers: queries to it time out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let h = start(vec![silent.local_addr().unwrap()]);
    let d = dig(h.local_addr(), &["+time=10", "example.test", "A"]).await;
    assert_eq!(d.status, "SERVFAIL", "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_labels_are_rejected_and_change_nothing() {
    let h = start(vec![]);
    h.publish("ok", Ipv4Addr::new(172, 30, 0, 5)).unwrap();
    for bad in ["bad_name", "-lead", "trail-", "", "a.b", &"x".repeat(64)] {
        let err = h
            .publish(bad, Ipv4Addr::new(172, 30, 0, 6))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{bad}`")), "{err}");
    }
    let err = h
        .replace_all(vec![
            ("fine".into(), Ipv4Addr::new(172, 30, 0, 7)),
            ("no way".into(), Ipv4Addr::new(172, 30, 0, 8)),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("`no way`"), "{err}");
    assert_eq!(
        h.records(),
        vec![("ok".to_string(), Ipv4Addr::new(172, 30, 0, 5))]
    );
    h.replace_all(vec![("Fine".into(), Ipv4Addr::new(172, 30, 0, 7))])
        .unwrap();
    assert_eq!(
        h.records(),
        vec![("fine".to_string(), Ipv4Addr::new(172, 30, 0, 7))]
    );
    let d = dig(h.local_addr(), &["fine.vm", "A"]).await;
    assert_eq!(d.answers, vec!["A 172.30.0.7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_sockets() {
    let h = start(vec![]);
    let addr = h.local_addr();
    h.shutdown().await.unwrap();
    UdpSocket::bind(addr).expect("UDP port free after shutdown");
    TcpListener::bind(addr).expect("TCP port free after shutdown");
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let (udp, tcp) = bind_pair();
    let err = DnsServer::start(udp, tcp, DnsConfig::new(reverse(), vec![])).unwrap_err();
    assert!(matches!(err, DnsError::NoRuntime(_)), "{err}");
}

#[tokio::test]
async fn a_reverse_network_of_everything_is_refused() {
    let (udp, tcp) = bind_pair();
    let all = Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap();
    let err = DnsServer::start(udp, tcp, DnsConfig::new(all, vec![])).unwrap_err();
    assert!(err.to_string().contains("0.0.0.0/0"), "{err}");
}

#[test]
fn own_address_is_never_an_upstream() {
    let local: SocketAddr = "10.0.0.1:53".parse().unwrap();
    assert!(is_own_address(local, local));
    assert!(!is_own_address("10.0.0.2:53".parse().unwrap(), local));
    let any: SocketAddr = "0.0.0.0:53".parse().unwrap();
    assert!(is_own_address("127.0.0.1:53".parse().unwrap(), any));
}
