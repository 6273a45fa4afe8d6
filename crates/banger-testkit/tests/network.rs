//! Host networking end to end: a real `bangerd --dev` inside a test network
//! namespace sets up the bridge, taps, nft tables and `.vm` DNS; the tests
//! check the kernel's view (`ip -j`, `nft -j`), prove NAT with traffic
//! between namespaces, resolve names with `dig`, and survive SIGKILL.
//!
//! Namespaces: `h` plays the host (bangerd runs there), `g1`/`g2` play guests
//! (a veth named like the VM's tap stands in for the tap), `u` plays the
//! upstream world. Addresses: 172.30.0.0/24 on the bridge, 198.18.0.0/30
//! between `h` and `u`. Nothing leaves these namespaces.
#![allow(clippy::disallowed_methods)] // the tests spawn ip, nft, dig and the daemon directly

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger_proto::rpc::HostStatus;
use banger_testkit::*;
use bangerd::store::{
    ImageSource, KernelSource, NewImage, NewKernel, NewLease, NewVm, Store, VmState, Vmm,
};
use serde_json::Value;

fn ip(ns: &NetNs, args: &str) -> String {
    let mut c = Command::new("ip");
    c.args(["-n", &ns.name]).args(args.split_whitespace());
    run_ok(c)
}

/// One fixture VM: name, address, NAT, running.
struct Fixture(&'static str, Ipv4Addr, bool, bool);

const VMS: [Fixture; 3] = [
    Fixture("dev", Ipv4Addr::new(172, 30, 0, 2), true, true),
    Fixture("offline", Ipv4Addr::new(172, 30, 0, 3), false, true),
    Fixture("parked", Ipv4Addr::new(172, 30, 0, 4), true, false),
];

/// Stand-in VMM processes for the fixture's running VMs: a `sleep` per VM,
/// recorded in the executor's journal (pid + start time) the way a launch
/// records a real VMM, so the daemon's startup reconcile re-adopts them as
/// live instead of marking the VMs stopped. Killed on drop.
struct StandInVmms(Vec<std::process::Child>);

impl Drop for StandInVmms {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(19).unwrap().parse().unwrap()
}

/// Write the fixture VMs into a fresh store, as VM creation would have.
fn seed_store(state: &Path) -> StandInVmms {
    let store = Store::open(&state.join("store.db")).unwrap();
    let mut vmms = StandInVmms(Vec::new());
    let mut journal = Vec::new();
    let k = store
        .insert_kernel(&NewKernel {
            name: "k".into(),
            arch: "x86_64".into(),
            kernel_path: "/var/lib/banger/kernels/k/vmlinuz".into(),
            initrd_path: None,
            sha256: "0".repeat(64),
            source: KernelSource::Import,
        })
        .unwrap();
    let img = store
        .insert_image(&NewImage {
            name: "img".into(),
            rootfs_path: "/var/lib/banger/images/img/rootfs.ext4".into(),
            kernel_id: k.id,
            size_bytes: 1 << 30,
            source: ImageSource::Register,
            source_ref: None,
            work_seed_path: None,
        })
        .unwrap();
    for Fixture(name, ip, nat, running) in VMS {
        let (vm, _) = store
            .create_vm_with_lease(
                &NewVm {
                    name: name.into(),
                    image_id: img.id.clone(),
                    vmm: Vmm::Qemu,
                    vcpus: 1,
                    memory_mib: 512,
                    disk_bytes: 1 << 30,
                    nat,
                },
                &NewLease {
                    ip,
                    mac: bangerd::network::leases::mac_for(ip),
                },
            )
            .unwrap();
        if running {
            store
                .set_vm_state(&vm.id, VmState::Created, VmState::Starting, None)
                .unwrap();
            store
                .set_vm_state(&vm.id, VmState::Starting, VmState::Running, None)
                .unwrap();
            let child = Command::new("sleep").arg("3600").spawn().unwrap();
            journal.push(serde_json::json!({
                "vm_id": vm.id, "pid": child.id(), "start_time": start_time(child.id()), "vmm": "qemu",
            }));
            vmms.0.push(child);
        }
    }
    let j = serde_json::json!({
        "version": 1, "bridges": [], "taps": [], "firewall": false, "nat_guests": [],
        "resolver_links": [], "vmms": journal,
    });
    std::fs::write(state.join("root-journal.json"), j.to_string()).unwrap();
    vmms
}

struct Daemon {
    proc: Proc,
    socket: PathBuf,
    /// Removed once `proc` has gone (declared after it).
    _cgroup: JailCgroup,
}

fn start_daemon(ns: &NetNs, dir: &Path, config: &str) -> Daemon {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = ns.exec(bin("bangerd"));
    cmd.arg("--dev")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .arg("--config")
        .arg(&cfg)
        // Owner material (banger's client key) goes to the test dir, not
        // the invoking user's home.
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NOTIFY_SOCKET");
    let (k, v) = dev_jail_env();
    let cgroup = JailCgroup::of_dev(&dir.join("state"));
    cmd.env(k, v);
    let mut proc = Proc::spawn("bangerd --dev (netns)", cmd);
    let socket = dir.join("run/bangerd.sock");
    wait_for_socket(&socket, &mut proc);
    Daemon {
        proc,
        socket,
        _cgroup: cgroup,
    }
}

fn banger_json(socket: &Path, args: &[&str]) -> Value {
    let out = Command::new(bin("banger"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "banger {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status(socket: &Path) -> HostStatus {
    serde_json::from_value(banger_json(socket, &["host", "status"])).unwrap()
}

/// banger's links as (name, kind, master, up), sorted.
fn banger_links(ns: &NetNs) -> Vec<(String, String, String, bool)> {
    let links: Value = serde_json::from_str(&ip(ns, "-j -d link show")).unwrap();
    let mut out: Vec<_> = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"].as_str().unwrap().starts_with("banger"))
        .map(|l| {
            let kind = l["linkinfo"]["info_kind"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let kind = if kind == "tun" {
                l["linkinfo"]["info_data"]["type"]
                    .as_str()
                    .unwrap_or("tun")
                    .to_string()
            } else {
                kind
            };
            let up = l["flags"].as_array().unwrap().iter().any(|f| f == "UP");
            (
                l["ifname"].as_str().unwrap().to_string(),
                kind,
                l["master"].as_str().unwrap_or("").to_string(),
                up,
            )
        })
        .collect();
    out.sort();
    out
}

/// The nft tables in `ns` as "family name".
fn nft_tables(ns: &NetNs) -> Vec<String> {
    let mut c = ns.exec("nft");
    c.args(["-j", "list", "tables"]);
    let v: Value = serde_json::from_str(&run_ok(c)).unwrap();
    let mut t: Vec<String> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("table"))
        .map(|t| {
            format!(
                "{} {}",
                t["family"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    t.sort();
    t
}

/// The ruleset without handles, for comparing two setups.
fn ruleset(ns: &NetNs) -> String {
    let mut c = ns.exec("nft");
    c.args(["list", "ruleset"]);
    run_ok(c)
}

fn dig(ns: &NetNs, args: &[&str]) -> String {
    let mut c = ns.exec("dig");
    c.args(["@172.30.0.1", "+time=2", "+tries=1"]).args(args);
    let out = c.output().expect("dig (package bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dig_short(ns: &NetNs, args: &[&str]) -> String {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    dig(ns, &all).trim().to_string()
}

const CONFIG: &str = "[network]\ntap_pool = 2\ndns_upstreams = [\"198.18.0.2\"]\n";

#[test]
fn setup_is_exact_idempotent_survives_sigkill_and_tears_down() {
    let h = NetNs::new();
    let dir = shared_tempdir();
    let _vmms = seed_store(&dir.path().join("state"));
    // Foreign objects with similar names that banger must never touch.
    ip(&h, "link add bangerx0 type veth peer name bangerx1");
    let mut c = h.exec("nft");
    c.args(["add", "table", "inet", "bangerx"]);
    run_ok(c);

    let mut d = start_daemon(&h, dir.path(), CONFIG);
    let s = status(&d.socket);
    assert!(s.ready, "{s:?}");
    assert_eq!(s.bridge_address, Ipv4Addr::new(172, 30, 0, 1));
    assert!(s.nat.firewall && s.nat.ip_forward, "{s:?}");
    assert_eq!(s.nat.nat_guests, vec![Ipv4Addr::new(172, 30, 0, 2)]);
    assert_eq!(s.dns_records, 3);
    let mut assigned: Vec<(String, Ipv4Addr, bool)> = s
        .tap_pool
        .assigned
        .iter()
        .map(|a| (a.vm.clone(), a.ip, a.nat))
        .collect();
    assigned.sort();
    assert_eq!(
        assigned,
        vec![
            ("dev".to_string(), Ipv4Addr::new(172, 30, 0, 2), true),
            ("offline".to_string(), Ipv4Addr::new(172, 30, 0, 3), false),
        ]
    );
    assert_eq!(s.tap_pool.free.len(), 2);

    // The kernel's view: one bridge with our address, four taps on it, up;
    // exactly banger's two tables next to the foreign one.
    let links = banger_links(&h);
    let bridges: Vec<_> = links.iter().filter(|l| l.1 == "bridge").collect();
    assert_eq!(bridges.len(), 1, "{links:?}");
    assert_eq!(bridges[0].0, "banger0");
    assert!(bridges[0].3);
    let taps: Vec<_> = links.iter().filter(|l| l.1 == "tap").collect();
    assert_eq!(taps.len(), 4, "{links:?}");
    assert!(taps.iter().all(|t| t.2 == "banger0" && t.3), "{taps:?}");
    let addr = ip(&h, "-j addr show dev banger0");
    assert!(
        addr.contains("\"local\":\"172.30.0.1\",\"prefixlen\":24"),
        "{addr}"
    );
    assert_eq!(
        nft_tables(&h),
        vec!["bridge banger", "inet banger", "inet bangerx"]
    );
    let rules = ruleset(&h);
    assert!(
        rules.contains("ip saddr { 172.30.0.2 } masquerade")
            || rules.contains("ip saddr 172.30.0.2 masquerade"),
        "{rules}"
    );
    assert!(!rules.contains("172.30.0.3 masquerade"), "{rules}");

    // DNS: leases resolve, unknown names are authoritative NXDOMAIN, PTR works.
    assert_eq!(dig_short(&h, &["dev.vm"]), "172.30.0.2");
    assert_eq!(dig_short(&h, &["parked.vm"]), "172.30.0.4");
    let nx = dig(&h, &["nope.vm"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains(" aa"),
        "{nx}"
    );
    assert_eq!(dig_short(&h, &["-x", "172.30.0.3"]), "offline.vm.");

    // SIGKILL, start again: the same bridge, taps, assignments, rules, answers.
    let before = (banger_links(&h), ruleset(&h), s.tap_pool.assigned.clone());
    let pid = rustix::process::Pid::from_raw(d.proc.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    d.proc.wait(Duration::from_secs(10));
    let d = start_daemon(&h, dir.path(), CONFIG);
    let s2 = status(&d.socket);
    let after = (banger_links(&h), ruleset(&h), s2.tap_pool.assigned.clone());
    assert_eq!(before, after, "state changed across SIGKILL + restart");
    assert_eq!(
        nft_tables(&h),
        vec!["bridge banger", "inet banger", "inet bangerx"]
    );
    assert_eq!(dig_short(&h, &["dev.vm"]), "172.30.0.2");

    // Teardown removes everything banger made and nothing else; twice is fine.
    let r = banger_json(&d.socket, &["host", "teardown"]);
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    assert!(
        banger_links(&h).iter().all(|l| l.0.starts_with("bangerx")),
        "{:?}",
        banger_links(&h)
    );
    assert_eq!(nft_tables(&h), vec!["inet bangerx"]);
    let r = banger_json(&d.socket, &["host", "teardown"]);
    assert!(
        r["removed"].as_array().unwrap().is_empty() && r["errors"].as_array().unwrap().is_empty(),
        "{r}"
    );
}

/// Replace the tap assigned to `vm` with a veth of the same name whose peer
/// is the "guest" interface in `guest`, configured with the VM's lease.
fn stand_in_guest(h: &NetNs, guest: &NetNs, s: &HostStatus, vm: &str) {
    let a = s.tap_pool.assigned.iter().find(|a| a.vm == vm).unwrap();
    ip(h, &format!("link del {}", a.tap));
    // The guest's end has the MAC banger gave the VM: the firewall drops
    // the tap's frames from any other.
    ip(
        h,
        &format!(
            "link add {} type veth peer name eth0 address {} netns {}",
            a.tap,
            bangerd::network::leases::mac_for(a.ip),
            guest.name
        ),
    );
    ip(h, &format!("link set {} master banger0 up", a.tap));
    ip(guest, &format!("addr add {}/24 dev eth0", a.ip));
    ip(guest, "link set eth0 up");
    ip(guest, "route add default via 172.30.0.1");
}

/// A veth from `h` (end `near`, holding `addr`) to `other` (end `far`),
/// both ends up.
fn veth(h: &NetNs, near: &str, addr: &str, other: &NetNs, far: &str) {
    ip(
        h,
        &format!(
            "link add {near} type veth peer name {far} netns {}",
            other.name
        ),
    );
    ip(h, &format!("addr add {addr} dev {near}"));
    ip(h, &format!("link set {near} up"));
    ip(other, &format!("link set {far} up"));
}

#[test]
fn nat_is_per_vm_and_proven_with_traffic_and_dns_forwards_upstream() {
    let (h, g1, g2, u) = (NetNs::new(), NetNs::new(), NetNs::new(), NetNs::new());
    let dir = shared_tempdir();
    let _vmms = seed_store(&dir.path().join("state"));

    // The "upstream world": a veth between h and u.
    veth(&h, "up0", "198.18.0.1/30", &u, "up1");
    ip(&u, "addr add 198.18.0.2/30 dev up1");
    // u can route back to the guest subnet, so un-NATed traffic *would* get
    // an answer: a blocked connection then shows the firewall at work, and
    // the upstream seeing 198.18.0.1 shows the masquerade.
    ip(&u, "route add 172.30.0.0/24 via 198.18.0.1");

    // In u: a TCP server that answers with the address it sees, and a DNS
    // server for `example` that bangerd forwards non-.vm names to.
    let listener: TcpListener = u.run(|| TcpListener::bind("198.18.0.2:8080").unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let peer = c
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (udp, tcp) = u.run(|| {
        (
            std::net::UdpSocket::bind("198.18.0.2:53").unwrap(),
            TcpListener::bind("198.18.0.2:53").unwrap(),
        )
    });
    let upstream = {
        let _g = rt.enter();
        let mut cfg = bangerd::dns::DnsConfig::new("198.18.0.0/30".parse().unwrap(), vec![]);
        cfg.zone = "example".into();
        let handle = bangerd::dns::DnsServer::start(udp, tcp, cfg).unwrap();
        handle.publish("up", Ipv4Addr::new(192, 0, 2, 7)).unwrap();
        handle
    };

    let d = start_daemon(&h, dir.path(), CONFIG);
    let s = status(&d.socket);
    assert!(s.ready, "{s:?}");
    stand_in_guest(&h, &g1, &s, "dev");
    stand_in_guest(&h, &g2, &s, "offline");

    let fetch = |ns: &NetNs| -> Result<String, String> {
        ns.run(|| {
            let addr: SocketAddr = "198.18.0.2:8080".parse().unwrap();
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut seen = String::new();
            c.read_to_string(&mut seen).map_err(|e| e.to_string())?;
            Ok(seen)
        })
    };
    // NAT on: the upstream sees the host side, not the guest.
    assert_eq!(fetch(&g1).as_deref(), Ok("198.18.0.1"));
    // NAT off: the offline guest cannot get out...
    let blocked = fetch(&g2);
    assert!(
        blocked.is_err(),
        "offline guest reached the upstream: {blocked:?}"
    );
    // ...but banger's DNS on the bridge still answers it.
    assert_eq!(dig_short(&g2, &["dev.vm"]), "172.30.0.2");
    // Non-.vm names are forwarded to the upstream the test runs in u.
    assert_eq!(dig_short(&g1, &["up.example"]), "192.0.2.7");
    let nx = dig(&g1, &["ghost.vm"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains(" aa"),
        "{nx}"
    );

    drop(d);
    drop(upstream);
}

/// Write a sysctl of `ns` (from a thread inside it: `/proc/sys/net` is the
/// opener's namespace's).
fn sysctl(ns: &NetNs, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("writing {path} in {}: {e}", ns.name));
}

/// `dev`'s index in `ns`.
fn ifindex(ns: &NetNs, dev: &str) -> u32 {
    let v: Value = serde_json::from_str(&ip(ns, &format!("-j link show dev {dev}"))).unwrap();
    v[0]["ifindex"].as_u64().unwrap() as u32
}

/// `dev`'s IPv6 link-local address once duplicate address detection has
/// finished with it (a tentative address can be neither bound nor used as
/// a source); fails after 15 s.
fn link_local(ns: &NetNs, dev: &str) -> Ipv6Addr {
    for _ in 0..150 {
        let v: Value =
            serde_json::from_str(&ip(ns, &format!("-j -6 addr show dev {dev} scope link")))
                .unwrap();
        let ready = v[0]["addr_info"].as_array().and_then(|addrs| {
            addrs
                .iter()
                .find(|a| a.get("tentative").is_none() && a.get("dadfailed").is_none())
                .and_then(|a| a["local"].as_str()?.parse().ok())
        });
        if let Some(addr) = ready {
            return addr;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{dev} in {} has no usable IPv6 link-local address", ns.name);
}

/// A TCP listener bound (inside `ns`) on `addr` that answers every
/// connection with `tag`.
fn answering_listener(ns: &NetNs, addr: SocketAddr, tag: &'static str) {
    let listener = ns
        .run(|| TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("binding {addr} in {}: {e}", ns.name));
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(tag.as_bytes());
        }
    });
}

/// Connect from `ns` to `addr` and read what it says, or why that failed.
fn fetch_from(ns: &NetNs, addr: SocketAddr) -> Result<String, String> {
    ns.run(|| {
        let mut c =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut seen = String::new();
        c.read_to_string(&mut seen).map_err(|e| e.to_string())?;
        Ok(seen)
    })
}

/// Issue #13 finding 6: a guest reaches the host's DNS on the bridge address
/// and nothing else of the host — not another port of the bridge address,
/// not another address of the host (a "LAN" address), not the bridge's IPv6
/// link-local address — whether it has NAT (`dev`) or not (`offline`). The
/// host's listeners answer the host itself, so a guest that gets nothing
/// is the firewall's doing; connections the host opens to a guest still
/// work (their replies come in on the bridge).
#[test]
fn guests_reach_only_dns_on_the_host() {
    let (h, g1, g2, lan) = (NetNs::new(), NetNs::new(), NetNs::new(), NetNs::new());
    let dir = shared_tempdir();
    let _vmms = seed_store(&dir.path().join("state"));
    // A second address of the host, on a link to a neighbour namespace.
    veth(&h, "lan0", "192.168.50.1/24", &lan, "lan1");

    let d = start_daemon(&h, dir.path(), CONFIG);
    let s = status(&d.socket);
    assert!(s.ready, "{s:?}");
    stand_in_guest(&h, &g1, &s, "dev");
    stand_in_guest(&h, &g2, &s, "offline");
    // IPv6 on, whatever a new namespace inherits from the machine — on the
    // bridge too, where the helper switched it off: the input chain must
    // hold even when something turns it back on.
    sysctl(&h, "net.ipv6.conf.banger0.disable_ipv6", "0");
    sysctl(&g1, "net.ipv6.conf.eth0.disable_ipv6", "0");
    sysctl(&g2, "net.ipv6.conf.eth0.disable_ipv6", "0");
    let bridge_ll = link_local(&h, "banger0");

    let bridge_port = SocketAddr::from((Ipv4Addr::new(172, 30, 0, 1), 8000));
    let lan_port = SocketAddr::from((Ipv4Addr::new(192, 168, 50, 1), 8000));
    let ll_port = |scope| SocketAddr::V6(SocketAddrV6::new(bridge_ll, 8000, 0, scope));
    answering_listener(&h, bridge_port, "bridge");
    answering_listener(&h, lan_port, "lan");
    answering_listener(&h, ll_port(ifindex(&h, "banger0")), "link-local");
    // The listeners work: the host reaches each of them.
    assert_eq!(fetch_from(&h, bridge_port).as_deref(), Ok("bridge"));
    assert_eq!(fetch_from(&h, lan_port).as_deref(), Ok("lan"));
    assert_eq!(
        fetch_from(&h, ll_port(ifindex(&h, "banger0"))).as_deref(),
        Ok("link-local")
    );

    let mut reached = Vec::new();
    for (guest, vm) in [(&g1, "dev"), (&g2, "offline")] {
        link_local(guest, "eth0");
        let scope = ifindex(guest, "eth0");
        for target in [bridge_port, lan_port, ll_port(scope)] {
            if let Ok(said) = fetch_from(guest, target) {
                reached.push(format!("{vm} -> {target}: {said}"));
            }
        }
        // DNS on the bridge address answers, over UDP and TCP.
        assert_eq!(dig_short(guest, &["dev.vm"]), "172.30.0.2", "{vm}");
        assert_eq!(
            dig_short(guest, &["+tcp", "offline.vm"]),
            "172.30.0.3",
            "{vm}"
        );
    }
    assert!(reached.is_empty(), "guests reached the host: {reached:#?}");

    // The host still opens connections to a guest (SSH, rsync): the replies
    // arrive on the bridge as established traffic.
    answering_listener(
        &g2,
        SocketAddr::from((Ipv4Addr::new(172, 30, 0, 3), 22)),
        "guest",
    );
    assert_eq!(
        fetch_from(&h, SocketAddr::from((Ipv4Addr::new(172, 30, 0, 3), 22))).as_deref(),
        Ok("guest")
    );
    drop(d);
}
