//! The lab: a real helper in a host namespace with an upstream, and the
//! frames the tests write into its taps.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_proto::install::InstallNetwork;
use banger_proto::net::{BridgeSpec, FirewallSpec, GuestRule, TapSpec};
use banger_proto::privops::{NetOp, PrivOp, Teardown};
use banger_testkit::*;
use serde_json::Value;

pub const BRIDGE: &str = "bangerhost0";
pub const TAP: &str = "bangertap0";
/// A second tap, for a second guest (or an attacker beside the guest).
pub const TAP1: &str = "bangertap1";
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 1);
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 2);
pub const GUEST_MAC: [u8; 6] = [0x02, 0xba, 0x0a, 0xd5, 0x07, 0x02];
/// The second guest's address and the MAC banger gives it.
pub const GUEST1_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 3);
pub const GUEST1_MAC: [u8; 6] = [0x02, 0xba, 0x0a, 0xd5, 0x07, 0x03];
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The prefix the rogue router advertises.
pub const RA_PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0);

/// The helper in `h`, the upstream namespace `u`, the owner. Fields drop
/// in order: the helper stops before its namespaces and user go.
pub struct Lab {
    pub helper: RootHelper,
    pub h: NetNs,
    pub u: NetNs,
    pub owner: TestUser,
    pub _tmp: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        require_root();
        let tmp = shared_tempdir();
        let owner = TestUser::create(None);
        let h = NetNs::new();
        let u = NetNs::new();
        // What the kernel does with a rogue RA or a spoofed packet depends
        // on these; a new namespace inherits some of them from the host, so
        // each is set here, to the values that let the attacks work.
        for ns in [&h, &u] {
            for (key, value) in [
                ("ipv4/ip_forward", "1"),
                ("ipv4/conf/all/rp_filter", "0"),
                ("ipv4/conf/default/rp_filter", "0"),
                ("ipv6/conf/all/forwarding", "0"),
                ("ipv6/conf/all/disable_ipv6", "0"),
                ("ipv6/conf/default/disable_ipv6", "0"),
                ("ipv6/conf/default/accept_ra", "1"),
                ("ipv6/conf/default/accept_ra_defrtr", "1"),
                ("ipv6/conf/default/accept_ra_pinfo", "1"),
                ("ipv6/conf/default/autoconf", "1"),
            ] {
                sysctl(ns, key, value);
            }
        }
        run_ok(ip(
            &h,
            &format!("link add vh type veth peer name vu netns {}", u.name),
        ));
        run_ok(ip(&h, "addr add 192.0.2.1/24 dev vh"));
        run_ok(ip(&h, "link set vh up"));
        run_ok(ip(&u, "addr add 192.0.2.2/24 dev vu"));
        run_ok(ip(&u, "link set vu up"));
        let network = InstallNetwork {
            bridge: BRIDGE.into(),
            subnet: "10.213.7.0/24".parse().unwrap(),
        };
        let helper = RootHelper::start_in_with(&h, tmp.path(), &owner, network);
        Lab {
            helper,
            h,
            u,
            owner,
            _tmp: tmp,
        }
    }

    pub fn call(&self, op: PrivOp) -> Result<Value, String> {
        self.helper.call_as(&self.owner, op)
    }

    pub fn ensure_bridge(&self) {
        self.try_ensure_bridge().expect("EnsureBridge");
    }

    pub fn try_ensure_bridge(&self) -> Result<Value, String> {
        self.call(PrivOp::Net(NetOp::EnsureBridge(BridgeSpec {
            name: BRIDGE.into(),
            address: BRIDGE_IP,
            prefix_len: 24,
        })))
    }

    pub fn ensure_tap(&self, owner_uid: u32) -> Result<Value, String> {
        self.ensure_tap_named(TAP, owner_uid)
    }

    pub fn ensure_tap_named(&self, name: &str, owner_uid: u32) -> Result<Value, String> {
        self.call(PrivOp::Net(NetOp::EnsureTap(TapSpec {
            name: name.into(),
            bridge: BRIDGE.into(),
            owner_uid,
        })))
    }

    /// A lab whose owner has ensured the bridge and `TAP`, and synced the
    /// firewall with one guest on it.
    pub fn with_guest(nat: bool) -> Lab {
        let lab = Lab::new();
        lab.ensure_bridge();
        lab.ensure_tap(lab.owner.uid).expect("EnsureTap");
        lab.sync_guest(nat);
        lab
    }

    /// A lab with two guests synced: `GUEST_IP` (NAT) on `TAP` and
    /// `GUEST1_IP` (no NAT) on `TAP1`.
    pub fn with_two_guests() -> Lab {
        let lab = Lab::new();
        lab.ensure_bridge();
        lab.ensure_tap(lab.owner.uid).expect("EnsureTap");
        lab.ensure_tap_named(TAP1, lab.owner.uid)
            .expect("EnsureTap 1");
        lab.sync(vec![
            GuestRule {
                tap: TAP.into(),
                ip: GUEST_IP,
                nat: true,
            },
            GuestRule {
                tap: TAP1.into(),
                ip: GUEST1_IP,
                nat: false,
            },
        ]);
        lab
    }

    /// The firewall with one guest, `GUEST_IP` on `TAP`.
    pub fn sync_guest(&self, nat: bool) {
        self.sync(vec![GuestRule {
            tap: TAP.into(),
            ip: GUEST_IP,
            nat,
        }]);
    }

    pub fn sync(&self, guests: Vec<GuestRule>) {
        self.call(PrivOp::Net(NetOp::SyncFirewall(FirewallSpec {
            bridge: BRIDGE.into(),
            guests,
            allow_inter_vm: false,
        })))
        .expect("SyncFirewall");
    }

    /// The guest on `tap` (`GUEST_IP`, `GUEST_MAC`) sends the bridge a
    /// datagram, so the bridge learns its MAC there.
    pub fn guest_speaks(&self, tap: &mut File) {
        let frame = ether(
            self.bridge_mac(),
            GUEST_MAC,
            0x0800,
            &udp4(GUEST_IP, BRIDGE_IP, 9, b"hello"),
        );
        send(tap, &frame);
    }

    /// A UDP socket of the host's on the bridge address, with the host's
    /// neighbour entry for `GUEST_IP` pinned to `GUEST_MAC` (no guest
    /// answers ARP here).
    pub fn host_socket_to_guest(&self) -> UdpSocket {
        run_ok(ip(
            &self.h,
            &format!(
                "neigh replace {GUEST_IP} lladdr 02:ba:0a:d5:07:02 dev {BRIDGE} nud permanent"
            ),
        ));
        self.h.run(|| UdpSocket::bind((BRIDGE_IP, 0)).unwrap())
    }

    pub fn link(&self, name: &str) -> Option<Value> {
        let out = ip(&self.h, &format!("-j -s link show {name}"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone())
    }

    /// Packets `link` received so far: for the bridge, those it handed to
    /// the host's own stack; for a tap, the frames written into it.
    pub fn rx(&self, link: &str) -> u64 {
        self.link(link).expect("the link exists")["stats64"]["rx"]["packets"]
            .as_u64()
            .unwrap()
    }

    pub fn bridge_mac(&self) -> [u8; 6] {
        mac(self.link(BRIDGE).expect("the bridge exists")["address"]
            .as_str()
            .unwrap())
    }

    /// The tap, opened the way a VMM opens it (this brings its carrier up).
    pub fn open_tap(&self) -> File {
        self.open_tap_named(TAP)
    }

    pub fn open_tap_named(&self, name: &str) -> File {
        let tap = self.h.run(|| open_tap(name));
        // Without STP a bridge forwards on a port as soon as its carrier is
        // up; wait for the bridge to say so.
        wait_until("the bridge's carrier", || {
            self.link(BRIDGE).unwrap()["operstate"] == "UP"
        });
        tap
    }

    /// Make `uid` the tun owner of the idle tap `name`, as the helper
    /// hands a tap to the uid of a VMM it launches (the owner's, for a
    /// Firecracker of the owner's): the attacks below come from whoever
    /// then holds the tap.
    pub fn hand_tap(&self, name: &str, uid: u32) {
        self.h.run(|| {
            let tap = open_tap(name);
            // SAFETY: `tap` is an open tun descriptor attached to the tap;
            // TUNSETOWNER takes a uid by value.
            let rc = unsafe {
                libc::ioctl(tap.as_raw_fd(), libc::TUNSETOWNER, libc::c_ulong::from(uid))
            };
            assert_eq!(rc, 0, "TUNSETOWNER: {}", std::io::Error::last_os_error());
        });
    }

    /// A UDP socket bound in `u` (or `h`) on `addr:port`, reading with a
    /// short timeout.
    pub fn listen(ns: &NetNs, addr: Ipv4Addr, port: u16) -> UdpSocket {
        let s = ns.run(|| UdpSocket::bind((addr, port)).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    }

    /// The host's IPv6 routes and addresses when they hold anything from
    /// the rogue RA (its prefix, a default route).
    pub fn ipv6_taken(&self) -> Option<String> {
        let routes = run_ok(ip(&self.h, "-6 route show table all"));
        let addrs = run_ok(ip(&self.h, "-6 addr show"));
        let state = format!("{routes}{addrs}");
        (state.contains("2001:db8:77") || state.contains("default")).then_some(state)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.call(PrivOp::Net(NetOp::Teardown(Teardown)));
    }
}

pub fn ip(ns: &NetNs, args: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["-n", &ns.name]).args(args.split_whitespace());
    c
}

pub fn sysctl(ns: &NetNs, key: &str, value: &str) {
    let path = PathBuf::from("/proc/sys/net").join(key);
    ns.run(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("setting {} in {}: {e}", path.display(), ns.name));
}

pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn mac(text: &str) -> [u8; 6] {
    let b: Vec<u8> = text
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

/// The calling thread alone becomes `uid`:`gid` with no supplementary
/// groups (the raw syscalls change one thread's credentials; libc's
/// wrappers would change them all). Call it on a short-lived thread.
pub fn become_user(uid: u32, gid: u32) {
    // SAFETY: plain syscalls with integer arguments; only the calling
    // thread's credentials change.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
    }
}

/// `struct ifreq` for TUNSETIFF (name, flags, padding to 40 bytes).
#[repr(C)]
pub struct IfReq {
    pub name: [u8; libc::IFNAMSIZ],
    pub flags: libc::c_short,
    pub _pad: [u8; 22],
}

/// Attach to the persistent tap `name` with the flags banger creates taps
/// with (a tap only accepts an attach with matching flags).
pub fn open_tap(name: &str) -> File {
    try_open_tap(name).unwrap_or_else(|e| panic!("TUNSETIFF {name}: {e}"))
}

/// [`open_tap`], or the error of the attach (`EPERM`: the calling thread
/// may not attach to that tap).
pub fn try_open_tap(name: &str) -> std::io::Result<File> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `tun` is an open /dev/net/tun descriptor for the whole call;
    // TUNSETIFF reads and writes one `struct ifreq`, which `req` is
    // (repr(C), the kernel's size and layout) and outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun)
}

/// Write one Ethernet frame into the tap, behind the (empty) virtio-net
/// header the tap expects with `IFF_VNET_HDR`.
pub fn send(tap: &mut File, frame: &[u8]) {
    let mut buf = vec![0u8; 10];
    buf.extend_from_slice(frame);
    tap.write_all(&buf).unwrap();
}

pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 UDP datagram (no UDP checksum, which IPv4 allows).
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&40000u16.to_be_bytes());
    ip.extend_from_slice(&port.to_be_bytes());
    ip.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ip
}

/// An IPv6 header and UDP datagram `src:sport -> dst:dport` (with the
/// checksum IPv6 requires).
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let sum = checksum(&[
        &src.octets(),
        &dst.octets(),
        &u32::from(len).to_be_bytes(),
        &[0, 0, 0, 17],
        &udp,
    ]);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&[17, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&udp);
    ip
}

/// A router advertisement from `router` (link-local, its MAC `mac`) to all
/// nodes: a default router for 30 minutes, and `prefix`/64 on-link and for
/// address autoconfiguration.
pub fn router_advertisement(mac: [u8; 6], router: Ipv6Addr, prefix: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    // Type 134, code 0, checksum, hop limit 64, flags 0, router lifetime
    // 1800 s, reachable time, retransmit timer.
    let mut icmp = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    // Source link-layer address option.
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&mac);
    // Prefix information: /64, on-link + autonomous, valid and preferred
    // lifetimes of a day.
    icmp.extend_from_slice(&[3, 4, 64, 0xc0]);
    icmp.extend_from_slice(&86400u32.to_be_bytes());
    icmp.extend_from_slice(&86400u32.to_be_bytes());
    icmp.extend_from_slice(&[0; 4]);
    icmp.extend_from_slice(&prefix.octets());
    let len = icmp.len() as u32;
    let sum = checksum(&[
        &router.octets(),
        &all_nodes.octets(),
        &len.to_be_bytes(),
        &[0, 0, 0, 58],
        &icmp,
    ]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(len as u16).to_be_bytes());
    ip.extend_from_slice(&[58, 255]);
    ip.extend_from_slice(&router.octets());
    ip.extend_from_slice(&all_nodes.octets());
    ip.extend_from_slice(&icmp);
    ether([0x33, 0x33, 0, 0, 0, 1], mac, 0x86dd, &ip)
}

/// Whether a datagram reaches `socket` within about a second.
pub fn received(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}
