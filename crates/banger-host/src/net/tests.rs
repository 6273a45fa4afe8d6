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
        let mac = [0x02, 0xba, 10, 77, 0, 1];
        assert_ne!(net.link_mac("tbr0").unwrap(), Some(mac));
        net.set_mac("tbr0", mac).unwrap();
        assert_eq!(net.link_mac("tbr0").unwrap(), Some(mac));
        assert!(
            ip_json(&["link", "show", "tbr0"]).contains(r#""address":"02:ba:0a:4d:00:01""#),
            "{}",
            ip_json(&["link", "show", "tbr0"])
        );
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
        let err = net.link_mac("tbr0").unwrap_err();
        assert!(matches!(err, NetError::NoSuchLink { .. }), "{err}");
    });
}

/// The index-based requests act on the link that has the index, never on
/// one that took the name since: a bridge replaced under its name is not
/// deleted, nor made a master, by its predecessor's index.
#[test]
fn real_requests_by_index_leave_a_link_that_took_the_name() {
    require_root();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_bridge("tbr1").unwrap();
        let old = net.link("tbr1").unwrap().expect("bridge listed").index;
        assert!(net.delete_link("tbr1").unwrap());
        net.create_bridge("tbr1").unwrap();
        let new = net.link("tbr1").unwrap().expect("bridge listed").index;
        assert_ne!(old, new);
        net.create_tap("ttap1", 4242).unwrap();
        let tap = net.link("ttap1").unwrap().expect("tap listed").index;

        assert!(net.set_master_index(tap, old).is_err());
        assert_eq!(net.link("ttap1").unwrap().unwrap().master, None);
        assert!(!net.delete_link_index(old).unwrap());
        assert!(net.link("tbr1").unwrap().is_some());

        net.set_master_index(tap, new).unwrap();
        assert_eq!(
            net.link("ttap1").unwrap().unwrap().master.as_deref(),
            Some("tbr1")
        );
        assert!(net.delete_link_index(tap).unwrap());
        assert!(net.delete_link_index(new).unwrap());
        assert!(net.link("tbr1").unwrap().is_none());
        assert!(net.link("ttap1").unwrap().is_none());
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

#[test]
fn resolvers_are_the_nameservers_and_resolveds_upstreams_behind_its_stub() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, upstream) = (dir.path().join("resolv.conf"), dir.path().join("up.conf"));
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    // Neither file: no resolvers.
    assert!(resolvers_in(&conf, &upstream).unwrap().is_empty());
    std::fs::write(&upstream, "nameserver 10.0.0.2\n").unwrap();
    std::fs::write(
        &conf,
        "# comment\nsearch example\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\n\
         nameserver\nnameserver 10.1.1.1 # trailing\n",
    )
    .unwrap();
    // No stub: the upstream file is not resolved's concern here.
    assert_eq!(
        resolvers_in(&conf, &upstream).unwrap(),
        [ip("192.168.1.1"), ip("10.1.1.1")]
    );
    std::fs::write(&conf, "nameserver 127.0.0.53\noptions edns0\n").unwrap();
    assert_eq!(
        resolvers_in(&conf, &upstream).unwrap(),
        [ip("127.0.0.53"), ip("10.0.0.2")]
    );
    std::fs::remove_file(&upstream).unwrap();
    assert_eq!(resolvers_in(&conf, &upstream).unwrap(), [ip("127.0.0.53")]);
    // A file that cannot be read is an error naming it, not "no resolvers".
    let err = resolvers_in(dir.path(), &upstream).unwrap_err();
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn real_routes_carry_their_gateways() {
    require_root();
    in_fresh_netns(|| {
        for cmd in [
            "link add tgw0 type veth peer name tgw1",
            "link set tgw0 up",
            "link set tgw1 up",
            "addr add 192.168.61.2/24 dev tgw0",
            "route add default via 10.200.0.1 dev tgw0 onlink",
            "route add 10.70.0.0/16 nexthop via 10.200.0.2 dev tgw0 onlink nexthop via 192.168.61.9 dev tgw0",
        ] {
            Runner
                .run(&Cmd::new("ip").args(cmd.split_whitespace()))
                .unwrap_or_else(|e| panic!("ip {cmd}: {e}"));
        }
        let routes = RealNet::new().routes_v4().unwrap();
        let find = |dst: &str| {
            routes
                .iter()
                .find(|r| r.destination == cidr(dst) && r.table == 254)
                .unwrap_or_else(|| panic!("no route to {dst}: {routes:?}"))
        };
        let default = find("0.0.0.0/0");
        assert_eq!(
            default.gateways,
            ["10.200.0.1".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(default.interface.as_deref(), Some("tgw0"));
        assert_eq!(
            find("10.70.0.0/16").gateways,
            [
                "10.200.0.2".parse::<Ipv4Addr>().unwrap(),
                "192.168.61.9".parse().unwrap()
            ]
        );
        assert!(find("192.168.61.0/24").gateways.is_empty());
    });
}

/// `hand_tap` changes the tun owner and group of the tap with the
/// journaled index and no other: a tap that took the name (another
/// index), a missing name (no tap made in its place), a tap a process
/// holds (`EBUSY`, its owner unchanged under it) are refused; after the
/// holder lets go it works, and the tap stays persistent.
#[test]
fn real_hand_tap_changes_only_an_idle_tap_of_the_journaled_index() {
    require_root();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_tap("ttap2", 0).unwrap();
        let index = net.link("ttap2").unwrap().expect("tap listed").index;
        let ids = || {
            let tap = net.link("ttap2").unwrap().expect("still there");
            (tap.tap_owner, tap.tap_group)
        };
        assert_eq!(ids(), (Some(0), None));
        idle(|| net.hand_tap("ttap2", index, 4243, 4244)).unwrap();
        assert_eq!(ids(), (Some(4243), Some(4244)));
        idle(|| net.hand_tap("ttap2", index, 0, 0)).unwrap();
        assert_eq!(ids(), (Some(0), Some(0)));
        // Another index: refused, owner kept.
        let err = net.hand_tap("ttap2", index + 100, 4243, 4243).unwrap_err();
        assert!(matches!(err, NetError::HandTap { .. }), "{err}");
        assert_eq!(ids(), (Some(0), Some(0)));
        // A missing name: refused, and no tap left under it.
        let err = net.hand_tap("ttap3", index, 4243, 4243).unwrap_err();
        assert!(matches!(err, NetError::HandTap { .. }), "{err}");
        assert!(net.link("ttap3").unwrap().is_none());
        // Held by a process (here this one, as a VMM would): EBUSY.
        let held = attach("ttap2");
        let err = net.hand_tap("ttap2", index, 4243, 4243).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
        assert_eq!(ids(), (Some(0), Some(0)));
        drop(held);
        idle(|| net.hand_tap("ttap2", index, 4243, 4243)).unwrap();
        let tap = net.link("ttap2").unwrap().expect("still there");
        assert_eq!(
            (tap.index, tap.tap_owner, tap.tap_group),
            (index, Some(4243), Some(4243))
        );
        assert!(net.delete_link_index(index).unwrap());
    });
}

/// `take_tap` hands the tap of the journaled index to root, sets its MAC
/// and returns root's descriptor attached to it (held: the next attach is
/// `EBUSY`; closed: the tap stays, persistent); another index, a missing
/// name (no tap made) and a held tap are refused, the MAC unchanged.
#[test]
fn real_take_tap_gives_root_the_journaled_tap_with_a_mac() {
    require_root();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_tap("ttap4", 0).unwrap();
        let index = net.link("ttap4").unwrap().expect("tap listed").index;
        idle(|| net.hand_tap("ttap4", index, 4243, 4244)).unwrap();
        let mac = [0x06, 0xba, 0, 0, 0, 7];
        let tun = idle(|| net.take_tap("ttap4", index, mac)).unwrap();
        let tap = net.link("ttap4").unwrap().expect("still there");
        assert_eq!((tap.tap_owner, tap.tap_group), (Some(0), Some(0)));
        assert_eq!(net.link_mac("ttap4").unwrap(), Some(mac));
        let err = net.hand_tap("ttap4", index, 0, 0).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBUSY), "root's descriptor: {err}");
        drop(tun);
        let other = [0x06, 0xba, 0, 0, 0, 8];
        let err = net.take_tap("ttap4", index + 100, other).unwrap_err();
        assert!(matches!(err, NetError::HandTap { .. }), "{err}");
        let err = net.take_tap("ttap5", index, other).unwrap_err();
        assert!(matches!(err, NetError::HandTap { .. }), "{err}");
        assert!(net.link("ttap5").unwrap().is_none());
        let held = attach("ttap4");
        let err = net.take_tap("ttap4", index, other).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
        drop(held);
        assert_eq!(net.link_mac("ttap4").unwrap(), Some(mac));
        assert!(net.delete_link_index(index).unwrap());
    });
}

/// Hostile read of the own-netns jail, F2: the holder of a tap that is
/// down (in a jail's namespace; off its bridge after a failed launch) can
/// change its link type (`TUNSETLINK`, no capability needed); a tap of
/// another type gets no MAC (`EINVAL`) and is no bridge port. Root's
/// take-back makes it Ethernet again.
#[test]
fn real_take_tap_makes_a_tap_its_holder_retyped_ethernet_again() {
    require_root();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_bridge("ttbr6").unwrap();
        net.create_tap("ttap6", 4243).unwrap();
        let index = net.link("ttap6").unwrap().expect("tap listed").index;
        let held = attach("ttap6");
        super::netns::set_link_type(&held, 0xfffe).unwrap();
        drop(held);
        let retyped = net.link("ttap6").unwrap().expect("still there");
        assert_eq!(retyped.link_type, 0xfffe);
        let mac = [0x06, 0xba, 0, 0, 0, 9];
        let tun = net.take_tap("ttap6", index, mac);
        let tap = net.link("ttap6").unwrap().expect("still there");
        assert!(
            tun.is_ok() && tap.link_type == libc::ARPHRD_ETHER,
            "take_tap: {:?}; the tap after: {tap:?}",
            tun.map(drop)
        );
        assert_eq!(net.link_mac("ttap6").unwrap(), Some(mac));
        net.set_master("ttap6", "ttbr6").unwrap();
        assert!(net.delete_link_index(index).unwrap());
        assert!(net.delete_link("ttbr6").unwrap());
    });
}

/// Review of the root-side fixes, L2: a tap that is a bridge's port and
/// down (a restore that enslaved it but failed to set it up; a helper
/// that died between `EnsureTap`'s enslave and its up) is taken back. The
/// bridge vetoes every `TUNSETLINK` on its ports, even to the type the
/// tap already has (`EPERM`), so the take-back sets the type only when
/// it changed.
#[test]
fn real_take_tap_takes_back_a_down_tap_on_a_bridge() {
    require_root();
    in_fresh_netns(|| {
        let net = RealNet::new();
        net.create_bridge("ttbr7").unwrap();
        net.create_tap("ttap7", 4243).unwrap();
        let index = net.link("ttap7").unwrap().expect("tap listed").index;
        net.set_master("ttap7", "ttbr7").unwrap();
        let before = net.link("ttap7").unwrap().expect("still there");
        assert_eq!(
            (before.master.as_deref(), before.up, before.link_type),
            (Some("ttbr7"), false, libc::ARPHRD_ETHER)
        );
        let mac = [0x06, 0xba, 0, 0, 0, 10];
        let tun = net.take_tap("ttap7", index, mac);
        let tap = net.link("ttap7").unwrap().expect("still there");
        assert!(
            tun.is_ok(),
            "take_tap: {:?}; the tap after: {tap:?}",
            tun.map(drop)
        );
        assert_eq!(
            (tap.tap_owner, tap.tap_group, tap.master.as_deref()),
            (Some(0), Some(0), Some("ttbr7"))
        );
        assert_eq!(net.link_mac("ttap7").unwrap(), Some(mac));
        drop(tun);
        assert!(net.delete_link_index(index).unwrap());
        assert!(net.delete_link("ttbr7").unwrap());
    });
}

/// `attempt` (a hand-over of a tap the test expects idle), waiting out a
/// transient `EBUSY`: another test's forked child can hold a copy of a
/// descriptor just closed until its exec ([`BUSY_GRACE`]).
pub(super) fn idle<T>(attempt: impl FnMut() -> Result<T, NetError>) -> Result<T, NetError> {
    retry_while_busy(|e: &NetError| e.errno() == Some(libc::EBUSY), attempt)
}

/// Attach to the tap `name` as a VMM does (`IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`).
pub(super) fn attach(name: &str) -> std::fs::File {
    super::netns::attach_tap(name)
}
