//! `SyncFirewall`: banger's nftables rule set, replaced as a whole.
//!
//! banger owns exactly two tables, `inet banger` and `bridge banger`, and
//! never reads, changes or deletes any other. Each sync sends ONE batch to
//! `nft -f -`, which the kernel applies as one transaction:
//!
//! ```text
//! add table inet banger        # make sure it exists, so that ...
//! delete table inet banger     # ... deleting it cannot fail
//! add table bridge banger
//! delete table bridge banger
//! table inet banger { ... }    # then the whole new rule set
//! table bridge banger { ... }
//! ```
//!
//! so the old rules are never gone before the new ones are in, and a failed
//! batch changes nothing. `EnsureBridge` installs the rule set for no guests
//! (the base) before the bridge exists and whenever the tables are gone;
//! `EnsureTap` and `LaunchVm` refuse while they are (gap 14: the owner may
//! never sync). With bridge `B` and its address `A` (from the executor's
//! journal, never from the request), NAT guests `N` (their addresses), and
//! every guest tap `T` with its address `ip(T)` and MAC `mac(T)`
//! ([`guest_mac`] of the address):
//!
//! `inet banger` (routed traffic, and traffic to the host itself):
//! * `input` (filter): what guests may send to the host. A packet a guest
//!   sends to any address of the host (`A`, another interface's address,
//!   the bridge's IPv6 link-local address, broadcast) arrives with
//!   `iifname B`: taps are bridge ports, so the host's IP stack sees the
//!   bridge, not the tap.
//!   1. `iifname "bangertap*" drop`: a banger tap that is not (or no longer)
//!      a bridge port would hand guest packets to the host stack directly;
//!      nothing of the host answers a tap;
//!   2. `iifname B meta nfproto ipv6 drop`: banger gives guests no IPv6 and
//!      switches it off on the bridge and taps; should something switch it
//!      back on, no IPv6 packet reaches the host — not even one riding a
//!      connection the host opened, since nothing pins a guest's IPv6
//!      source (rule 3 accepts only IPv4, whose sources `bridge banger`
//!      pins per tap);
//!   3. `iifname B ct state established,related accept`: replies to
//!      connections the host opened (SSH and rsync to guests, readiness);
//!   4. `iifname B ip daddr A meta l4proto { tcp, udp } th dport 53 accept`:
//!      the `.vm` DNS server, the one host service guests are given (banger
//!      configures guests statically: no DHCP);
//!   5. `iifname B drop`: everything else — other ports of `A`, every other
//!      host address, ICMP echo, broadcast and multicast.
//! * `postrouting` (nat, srcnat): `oifname != B ip saddr N masquerade`: NAT
//!   guests leave through any interface but the bridge under the host's
//!   address. Omitted when `N` is empty.
//! * `forward` (filter):
//!   1. `iifname "bangertap*" drop`, `oifname "bangertap*" drop`: a tap that
//!      is not a bridge port routes nothing, either way;
//!   2. `iifname B ct status dnat drop`: a guest's packet another table
//!      (Docker's published ports, kube-proxy) rewrote to a new destination
//!      would otherwise pass as the guest's own traffic; banger makes no
//!      DNAT;
//!   3. `iifname B oifname B accept|drop`: guest to guest (only seen here when
//!      `br_netfilter` passes bridged traffic to IP hooks); accept iff
//!      `allow_inter_vm`;
//!   4. `oifname B ct state established,related accept`: replies come back;
//!   5. `oifname B drop`: nothing else is routed to the guests (the host
//!      itself reaches them through `output`, which this does not touch);
//!   6. `iifname B meta nfproto ipv6 drop` and
//!      `iifname B ip daddr 169.254.0.0/16 drop`: no IPv6 (link-local
//!      included) and no IPv4 link-local destination (a cloud's metadata
//!      service at 169.254.169.254) for any guest, NAT or not;
//!   7. `iifname B ip saddr N accept`: NAT guests may go out (omitted when
//!      `N` is empty) — wherever the host's routes lead, every non-bridge
//!      link included (a VPN's too: egress is not narrowed to the default
//!      route's interface);
//!   8. `iifname B drop`: everyone else is an offline sandbox.
//!
//!   Traffic to the host's own addresses (the `.vm` DNS server included)
//!   is `input`, not `forward`: rule 8 does not cut offline guests off DNS,
//!   and the `input` chain above is what limits them to it.
//!
//! `bridge banger` (frames on the bridge, before L3 sees them and before
//! the bridge learns their source MAC — except frames to a link-local
//! group address, 01:80:c2:00:00:0X, whose source the bridge learns before
//! this hook, and for LLDP without passing it at all: `EnsureBridge` turns
//! that learning off on the bridge, `no_linklocal_learn`; this is what
//! makes "a guest's address arrives only from its own tap" hold, since L3
//! only sees the bridge):
//! * `prerouting` (filter):
//!   1. per guest: `iifname T ether type != { ip, arp } drop` and
//!      `iifname T meta protocol != { ip, arp } drop` (a guest speaks only
//!      IPv4 and ARP, untagged: the kernel moves an outer 802.1Q or
//!      802.1ad tag into metadata before the bridge, `ether type` still
//!      reads the tag's protocol there, so the pins below would not match a
//!      tagged frame, and the bridge hands a VLAN-0 frame to IPv4/ARP
//!      untagged; no IPv6 either, not even between guests: banger gives
//!      guests none), `iifname T ether saddr != mac(T) drop` and
//!      `iifname T ether type arp arp saddr ether != mac(T) drop` (no
//!      frame under another MAC: a guest cannot make the bridge send it
//!      another guest's traffic), `iifname T ip saddr != ip(T) drop` and
//!      `iifname T arp saddr ip != ip(T) drop` (no IPv4 or ARP spoofing);
//!   2. `iifname "bangertap*" iifname != {T...} drop`: a banger tap without
//!      a guest entry has no identity yet: nothing of it gets on the bridge.
//! * `forward` (filter): first `iifname "bangertap*" oifname "bangertap*"
//!   drop` unless `allow_inter_vm`: guests cannot reach each other even at
//!   L2 (flooded ARP still reaches the host, which is local delivery); then
//!   the rules below.
//! * `output` (filter; the host's own frames, NAT replies included, leave
//!   the bridge through this hook, once per port a flood reaches) and
//!   `forward`, the same rules (item 18):
//!   1. per guest: `oifname T ether daddr & 01:00:00:00:00:00 ==
//!      00:00:00:00:00:00 ether daddr != mac(T) drop`: unicast leaves a tap
//!      only for its guest's MAC. Whoever holds a tap's descriptor can set
//!      the tap's MAC (`SIOCSIFHWADDR`, no capability); the bridge then
//!      makes a local FDB entry for that MAC on the tap's port, replacing
//!      what it had learned, and no static entry outranks it — so a tap
//!      set to another guest's MAC would get that guest's unicast.
//!      Broadcast and multicast (the group bit set) still go everywhere;
//!   2. `oifname "bangertap*" oifname != {T...} <unicast> drop`: a tap
//!      with no guest entry has no MAC to receive unicast as.
//!
//!   The bridge's own MAC is set at `EnsureBridge`: otherwise it follows
//!   the lowest port MAC, which a tap's holder chooses.
//!
//! IPv6 from guests is dropped at L2 (prerouting rule 1), and would be
//! neither routed (forward rule 6) nor delivered to the host (input rule
//! 2) if it got past. Policies are `accept`: these chains only
//! add drops for banger's own traffic, and the host's other tables keep
//! their say (a `drop` policy elsewhere, e.g. Docker's, still applies).
//! The tables describe one bridge: a sync for another bridge replaces them.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use banger_proto::ids::guest_mac;
use banger_proto::net::{DNS_PORT, FirewallSpec, NFT_TABLE, TAP_PREFIX};

/// The table families banger owns, each holding one table named
/// [`NFT_TABLE`].
pub const FAMILIES: [&str; 2] = ["inet", "bridge"];

/// IPv4 link-local (RFC 3927): cloud metadata services (169.254.169.254)
/// and other hosts' link-local neighbours, never a guest's destination.
const LINK_LOCAL_V4: &str = "169.254.0.0/16";

/// Matches a unicast destination MAC (the group bit, the first octet's
/// lowest, clear): broadcast and multicast still reach every tap.
const UNICAST: &str = "ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00";

/// The NAT guests' addresses, sorted and unique.
pub fn nat_guests(spec: &FirewallSpec) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = spec.guests.iter().filter(|g| g.nat).map(|g| g.ip).collect();
    ips.sort();
    ips.dedup();
    ips
}

fn set<T: std::fmt::Display>(items: &[T], quote: bool) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|i| {
            if quote {
                format!("\"{i}\"")
            } else {
                i.to_string()
            }
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// The batch replacing banger's tables with exactly `spec`, for the bridge
/// holding `bridge_ip`. `spec` must have been validated: interface names are
/// quoted but never escaped.
pub fn ruleset(spec: &FirewallSpec, bridge_ip: Ipv4Addr) -> String {
    let b = &spec.bridge;
    let t = NFT_TABLE;
    let nat = nat_guests(spec);
    let mut guests: Vec<_> = spec.guests.iter().collect();
    guests.sort_by(|x, y| x.tap.cmp(&y.tap));
    let taps: Vec<&str> = guests.iter().map(|g| g.tap.as_str()).collect();
    let wildcard = format!("\"{TAP_PREFIX}*\"");
    let inter_vm = if spec.allow_inter_vm {
        "accept"
    } else {
        "drop"
    };

    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line(&format!(
        "# banger firewall for bridge {b}; generated, replaced as a whole"
    ));
    for family in FAMILIES {
        line(&format!("add table {family} {t}"));
        line(&format!("delete table {family} {t}"));
    }

    line(&format!("table inet {t} {{"));
    line("\tchain input {");
    line("\t\ttype filter hook input priority filter; policy accept;");
    line(&format!("\t\tiifname {wildcard} drop"));
    // Input rule 2: before the established accept, which pins no IPv6 source.
    line(&format!("\t\tiifname \"{b}\" meta nfproto ipv6 drop"));
    line(&format!(
        "\t\tiifname \"{b}\" ct state established,related accept"
    ));
    line(&format!(
        "\t\tiifname \"{b}\" ip daddr {bridge_ip} meta l4proto {{ tcp, udp }} th dport {DNS_PORT} accept"
    ));
    line(&format!("\t\tiifname \"{b}\" drop"));
    line("\t}");
    line("\tchain postrouting {");
    line("\t\ttype nat hook postrouting priority srcnat; policy accept;");
    if !nat.is_empty() {
        line(&format!(
            "\t\toifname != \"{b}\" ip saddr {} masquerade",
            set(&nat, false)
        ));
    }
    line("\t}");
    line("\tchain forward {");
    line("\t\ttype filter hook forward priority filter; policy accept;");
    // Forward rules 1-2 (module docs): non-port taps route nothing; another
    // table's DNAT does not launder a guest's packet.
    line(&format!("\t\tiifname {wildcard} drop"));
    line(&format!("\t\toifname {wildcard} drop"));
    line(&format!("\t\tiifname \"{b}\" ct status dnat drop"));
    line(&format!("\t\tiifname \"{b}\" oifname \"{b}\" {inter_vm}"));
    line(&format!(
        "\t\toifname \"{b}\" ct state established,related accept"
    ));
    line(&format!("\t\toifname \"{b}\" drop"));
    // Forward rule 6: no IPv6 and no link-local destination, NAT or not.
    line(&format!("\t\tiifname \"{b}\" meta nfproto ipv6 drop"));
    line(&format!(
        "\t\tiifname \"{b}\" ip daddr {LINK_LOCAL_V4} drop"
    ));
    if !nat.is_empty() {
        line(&format!(
            "\t\tiifname \"{b}\" ip saddr {} accept",
            set(&nat, false)
        ));
    }
    line(&format!("\t\tiifname \"{b}\" drop"));
    line("\t}");
    line("}");

    line(&format!("table bridge {t} {{"));
    line("\tchain prerouting {");
    line("\t\ttype filter hook prerouting priority filter; policy accept;");
    for g in &guests {
        // Prerouting rule 1: the tap speaks only IPv4 and ARP, as its
        // guest's MAC and address; dropped here, before the bridge learns
        // the MAC. The type allow-list comes first: the pins below match
        // `ether type ip`/`arp`, which a VLAN-tagged frame never is (the
        // kernel moves an outer tag into metadata before the bridge, yet
        // `ether type` still reads the tag's protocol, and the bridge later
        // hands a VLAN-0 frame to IPv4/ARP untagged). `meta protocol` is the
        // type the kernel will deliver as: both must be IPv4 or ARP, so a
        // frame gets through only if no tag is left to read either way.
        let mac = guest_mac(g.ip);
        line(&format!(
            "\t\tiifname \"{}\" ether type != {{ ip, arp }} drop",
            g.tap
        ));
        line(&format!(
            "\t\tiifname \"{}\" meta protocol != {{ ip, arp }} drop",
            g.tap
        ));
        line(&format!(
            "\t\tiifname \"{}\" ether saddr != {mac} drop",
            g.tap
        ));
        line(&format!(
            "\t\tiifname \"{}\" ether type arp arp saddr ether != {mac} drop",
            g.tap
        ));
        line(&format!(
            "\t\tiifname \"{}\" ether type ip ip saddr != {} drop",
            g.tap, g.ip
        ));
        line(&format!(
            "\t\tiifname \"{}\" ether type arp arp saddr ip != {} drop",
            g.tap, g.ip
        ));
    }
    let mut unknown = format!("\t\tiifname {wildcard}");
    if !taps.is_empty() {
        let _ = write!(unknown, " iifname != {}", set(&taps, true));
    }
    // Rule 2: every frame, not just IPv4 and ARP, or the tap could still
    // teach the bridge a guest's MAC.
    unknown.push_str(" drop");
    line(&unknown);
    line("\t}");
    for hook in ["output", "forward"] {
        line(&format!("\tchain {hook} {{"));
        line(&format!(
            "\t\ttype filter hook {hook} priority filter; policy accept;"
        ));
        if hook == "forward" && !spec.allow_inter_vm {
            line(&format!("\t\tiifname {wildcard} oifname {wildcard} drop"));
        }
        // Output/forward rule 1 (item 18): whoever holds a tap's descriptor
        // may set the tap's MAC to another guest's, and the bridge then
        // sends that guest's unicast out of the tap (a local FDB entry,
        // which nothing can pin). So unicast leaves a tap only when it is
        // for the tap's own guest's MAC; `output` sees the host's frames,
        // `forward` a guest's.
        for g in &guests {
            line(&format!(
                "\t\toifname \"{}\" {UNICAST} ether daddr != {} drop",
                g.tap,
                guest_mac(g.ip)
            ));
        }
        // Rule 2: a tap with no guest entry has no MAC to receive as.
        let mut unknown = format!("\t\toifname {wildcard}");
        if !taps.is_empty() {
            let _ = write!(unknown, " oifname != {}", set(&taps, true));
        }
        let _ = write!(unknown, " {UNICAST} drop");
        line(&unknown);
        line("\t}");
    }
    line("}");
    s
}

/// The batch deleting whichever of banger's tables `present` lists.
pub fn delete_tables<'a>(present: impl IntoIterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for family in present {
        let _ = writeln!(s, "delete table {family} {NFT_TABLE}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::net::GuestRule;

    fn spec(allow_inter_vm: bool) -> FirewallSpec {
        FirewallSpec {
            bridge: "banger0".into(),
            guests: vec![
                GuestRule {
                    tap: "bangertap1".into(),
                    ip: Ipv4Addr::new(10, 0, 0, 3),
                    nat: false,
                },
                GuestRule {
                    tap: "bangertap0".into(),
                    ip: Ipv4Addr::new(10, 0, 0, 2),
                    nat: true,
                },
            ],
            allow_inter_vm,
        }
    }

    #[test]
    fn ruleset_shape() {
        let r = ruleset(&spec(false), Ipv4Addr::new(10, 0, 0, 1));
        let expected = "\
# banger firewall for bridge banger0; generated, replaced as a whole
add table inet banger
delete table inet banger
add table bridge banger
delete table bridge banger
table inet banger {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tiifname \"bangertap*\" drop
\t\tiifname \"banger0\" meta nfproto ipv6 drop
\t\tiifname \"banger0\" ct state established,related accept
\t\tiifname \"banger0\" ip daddr 10.0.0.1 meta l4proto { tcp, udp } th dport 53 accept
\t\tiifname \"banger0\" drop
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\toifname != \"banger0\" ip saddr { 10.0.0.2 } masquerade
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname \"bangertap*\" drop
\t\toifname \"bangertap*\" drop
\t\tiifname \"banger0\" ct status dnat drop
\t\tiifname \"banger0\" oifname \"banger0\" drop
\t\toifname \"banger0\" ct state established,related accept
\t\toifname \"banger0\" drop
\t\tiifname \"banger0\" meta nfproto ipv6 drop
\t\tiifname \"banger0\" ip daddr 169.254.0.0/16 drop
\t\tiifname \"banger0\" ip saddr { 10.0.0.2 } accept
\t\tiifname \"banger0\" drop
\t}
}
table bridge banger {
\tchain prerouting {
\t\ttype filter hook prerouting priority filter; policy accept;
\t\tiifname \"bangertap0\" ether type != { ip, arp } drop
\t\tiifname \"bangertap0\" meta protocol != { ip, arp } drop
\t\tiifname \"bangertap0\" ether saddr != 02:ba:0a:00:00:02 drop
\t\tiifname \"bangertap0\" ether type arp arp saddr ether != 02:ba:0a:00:00:02 drop
\t\tiifname \"bangertap0\" ether type ip ip saddr != 10.0.0.2 drop
\t\tiifname \"bangertap0\" ether type arp arp saddr ip != 10.0.0.2 drop
\t\tiifname \"bangertap1\" ether type != { ip, arp } drop
\t\tiifname \"bangertap1\" meta protocol != { ip, arp } drop
\t\tiifname \"bangertap1\" ether saddr != 02:ba:0a:00:00:03 drop
\t\tiifname \"bangertap1\" ether type arp arp saddr ether != 02:ba:0a:00:00:03 drop
\t\tiifname \"bangertap1\" ether type ip ip saddr != 10.0.0.3 drop
\t\tiifname \"bangertap1\" ether type arp arp saddr ip != 10.0.0.3 drop
\t\tiifname \"bangertap*\" iifname != { \"bangertap0\", \"bangertap1\" } drop
\t}
\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\toifname \"bangertap0\" ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 ether daddr != 02:ba:0a:00:00:02 drop
\t\toifname \"bangertap1\" ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 ether daddr != 02:ba:0a:00:00:03 drop
\t\toifname \"bangertap*\" oifname != { \"bangertap0\", \"bangertap1\" } ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname \"bangertap*\" oifname \"bangertap*\" drop
\t\toifname \"bangertap0\" ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 ether daddr != 02:ba:0a:00:00:02 drop
\t\toifname \"bangertap1\" ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 ether daddr != 02:ba:0a:00:00:03 drop
\t\toifname \"bangertap*\" oifname != { \"bangertap0\", \"bangertap1\" } ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 drop
\t}
}
";
        assert_eq!(r, expected);
    }

    #[test]
    fn inter_vm_and_no_nat_variants() {
        let r = ruleset(&spec(true), Ipv4Addr::new(10, 0, 0, 1));
        assert!(r.contains("iifname \"banger0\" oifname \"banger0\" accept"));
        assert!(!r.contains("iifname \"bangertap*\" oifname \"bangertap*\" drop"));
        let none = FirewallSpec {
            bridge: "banger0".into(),
            guests: vec![],
            allow_inter_vm: false,
        };
        let r = ruleset(&none, Ipv4Addr::new(10, 0, 0, 1));
        assert!(!r.contains("masquerade"));
        assert!(!r.contains("saddr {"));
        assert!(r.contains("\t\tiifname \"bangertap*\" drop\n"));
        // Without guests the host is still closed to the bridge but for DNS.
        assert!(r.contains(
            "\t\tiifname \"banger0\" ip daddr 10.0.0.1 meta l4proto { tcp, udp } th dport 53 accept\n\t\tiifname \"banger0\" drop\n"
        ));
        // Only banger's own tables are named anywhere.
        for l in r.lines().filter(|l| l.contains("table")) {
            assert!(
                l.ends_with(" banger") || l.ends_with(" banger {") || l.starts_with('#'),
                "{l}"
            );
        }
    }

    #[test]
    fn deletes_only_present_tables() {
        assert_eq!(delete_tables(["bridge"]), "delete table bridge banger\n");
        assert_eq!(delete_tables([]), "");
    }
}
