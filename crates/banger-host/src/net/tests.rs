//! Unit tests of the pure helpers, and real-kernel tests of [`RealNet`], each
//! in its own throwaway network namespace.

use super::netns::in_fresh_netns;
use super::*;

fn cidr(s: &str) -> Ipv4Cidr {
    let (a, p) = s.split_once('/').unwrap();
    Ipv4Cidr::new(a.parse().unwrap(), p.parse().unwrap())
}

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "real-kernel network tests must run as root (they create namespaces, links and nft \
         tables inside a private network namespace); run the suite as root"
    );
}

/// `ip -j ARGS` in the calling thread's namespace, parsed loosely: these
/// tests only look for substrings of the JSON.
fn ip_json(args: &[&str]) -> String {
    Runner
        .run(&Cmd::new("ip").arg("-j").args(args))
        .unwrap_or_else(|e| panic!("ip -j {args:?}: {e}"))
        .stdout
}

#[test]
fn cidr_arithmetic() {
    let c = cidr("10.20.30.1/24");
    assert_eq!(c.network(), Ipv4Addr::new(10, 20, 30, 0));
    assert_eq!(c.broadcast(), Ipv4Addr::new(10, 20, 30, 255));
    assert!(c.contains(Ipv4Addr::new(10, 20, 30, 200)));
    assert!(!c.contains(Ipv4Addr::new(10, 20, 31, 1)));
    assert!(c.overlaps(cidr("10.0.0.0/8")));
    assert!(cidr("10.0.0.0/8").overlaps(c));
    assert!(!c.overlaps(cidr("10.20.31.0/24")));
    assert!(cidr("0.0.0.0/0").overlaps(c));
    assert_eq!(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 40).prefix_len, 32);
    assert_eq!(c.to_string(), "10.20.30.1/24");
}

#[test]
fn nft_table_listing_is_parsed() {
    let out = "table inet filter\ntable bridge banger\n\ngarbage line here now\n";
    assert_eq!(
        parse_nft_tables(out),
        [
            NftTable {
                family: "inet".into(),
                name: "filter".into()
            },
            NftTable {
                family: "bridge".into(),
                name: "banger".into()
            },
        ]
    );
}

#[test]
fn real_bridge_tap_address_and_delete() {
    require_root();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_bridge("tbr0").unwrap();
        let err = net.create_bridge("tbr0").unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        net.add_address("tbr0", cidr("10.77.0.1/24")).unwrap();
        net.set_up("tbr0").unwrap();
        net.create_tap("ttap0", 4242).unwrap();
        // IFF_TUN_EXCL: an existing tap is never attached to.
        let err = net.create_tap("ttap0", 4242).unwrap_err();
        assert!(
            matches!(
                err,
                NetError::Tun {
                    step: "TUNSETIFF",
                    ..
                }
            ),
            "{err}"
        );
        net.set_master("ttap0", "tbr0").unwrap();
        net.set_up("ttap0").unwrap();

        let br = net.link("tbr0").unwrap().expect("bridge listed");
        assert_eq!(br.kind, LinkKind::Bridge);
        assert!(br.up);
        assert_eq!(br.addresses, [cidr("10.77.0.1/24")]);
        let tap = net.link("ttap0").unwrap().expect("tap listed");
        assert_eq!(tap.kind, LinkKind::Tap);
        assert_eq!(tap.master.as_deref(), Some("tbr0"));
        assert_eq!(tap.tap_owner, Some(4242));
        assert!(tap.up);

        // Cross-check with iproute2.
        let detail = ip_json(&["-d", "link", "show", "ttap0"]);
        assert!(detail.contains(r#""type":"tap""#), "{detail}");
        assert!(detail.contains(r#""user":4242"#), "{detail}");
        assert!(detail.contains(r#""persist":true"#), "{detail}");
        assert!(detail.contains(r#""vnet_hdr":true"#), "{detail}");
        assert!(detail.contains(r#""master":"tbr0""#), "{detail}");

        let routes = net.routes_v4().unwrap();
        assert!(
            routes
                .iter()
                .any(|r| r.destination == cidr("10.77.0.0/24")
                    && r.interface.as_deref() == Some("tbr0")),
            "{routes:?}"
        );

        net.del_address("tbr0", cidr("10.77.0.1/24")).unwrap();
        assert!(net.link("tbr0").unwrap().unwrap().addresses.is_empty());

        assert!(net.delete_link("ttap0").unwrap());
        assert!(!net.delete_link("ttap0").unwrap());
        assert!(net.delete_link("tbr0").unwrap());
        assert!(net.link("tbr0").unwrap().is_none());
        let err = net.set_up("tbr0").unwrap_err();
        assert!(matches!(err, NetError::NoSuchLink { .. }), "{err}");
    });
}

#[test]
fn real_forwarding_and_nft_stay_in_the_namespace() {
    require_root();
    let host_forward = std::fs::read_to_string(IP_FORWARD).unwrap();
    in_fresh_netns(|| {
        let net = RealNet::new();
        // A new namespace starts with whatever the kernel copies into it
        // (by default the host's value: 1 on many hosts, 0 on others), so
        // the test sets both values itself and reads each back twice, once
        // through RealNet and once with a plain sysctl read.
        let sysctl = || std::fs::read_to_string(IP_FORWARD).unwrap();
        for on in [false, true] {
            net.set_ip_forward(on).unwrap();
            assert_eq!(net.ip_forward().unwrap(), on);
            assert_eq!(sysctl(), if on { "1\n" } else { "0\n" });
        }
        assert!(net.nft_tables().unwrap().is_empty());
        net.apply_nft(
            "table inet tst {\n  chain c {\n    type filter hook forward priority 0;\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(
            net.nft_tables().unwrap(),
            [NftTable {
                family: "inet".into(),
                name: "tst".into()
            }]
        );
        let err = net.apply_nft("this is not nft\n").unwrap_err();
        assert!(matches!(err, NetError::Tool { tool: "nft", .. }), "{err}");
    });
    assert_eq!(
        std::fs::read_to_string(IP_FORWARD).unwrap(),
        host_forward,
        "the host's forwarding setting must be untouched"
    );
}

#[test]
fn fresh_namespaces_are_separate() {
    require_root();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_bridge("tsep0").unwrap();
        in_fresh_netns(|| assert!(RealNet::new().link("tsep0").unwrap().is_none()));
        let names: Vec<String> = net.links().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["lo", "tsep0"]);
    });
}
