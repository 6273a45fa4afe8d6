//! IP lease allocation and MAC derivation.
//!
//! A VM's address is allocated once, when it is created, and kept in the
//! store until the VM is deleted, so it is stable across restarts. The MAC is
//! a pure function of the address, so it is stable too and never collides
//! within banger's subnet.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::config::Ipv4Cidr;

/// The bridge (gateway and DNS) takes the first host address.
pub fn bridge_address(subnet: Ipv4Cidr) -> Ipv4Addr {
    subnet.first_host()
}

/// The broadcast address of `subnet`.
pub fn broadcast(subnet: Ipv4Cidr) -> Ipv4Addr {
    let host_bits = 32 - u32::from(subnet.prefix());
    let span = if host_bits == 32 {
        u32::MAX
    } else {
        (1u32 << host_bits) - 1
    };
    Ipv4Addr::from(u32::from(subnet.addr()) | span)
}

/// The lowest address of `subnet` that is not the network, the bridge, the
/// broadcast address or already leased. `None` when the subnet is full.
pub fn next_free(subnet: Ipv4Cidr, leased: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let taken: HashSet<Ipv4Addr> = leased.iter().copied().collect();
    let first = u32::from(bridge_address(subnet)) + 1;
    let last = u32::from(broadcast(subnet)).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
}

/// The MAC of the guest at `ip` ([`banger_proto::ids::guest_mac`]: the
/// firewall pins the guest's tap to it).
pub fn mac_for(ip: Ipv4Addr) -> String {
    banger_proto::ids::guest_mac(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn bridge_takes_dot_one_and_leases_start_after_it() {
        let n = net("172.30.0.0/24");
        assert_eq!(bridge_address(n), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(next_free(n, &[]), Some(Ipv4Addr::new(172, 30, 0, 2)));
        let taken = [Ipv4Addr::new(172, 30, 0, 2), Ipv4Addr::new(172, 30, 0, 4)];
        assert_eq!(next_free(n, &taken), Some(Ipv4Addr::new(172, 30, 0, 3)));
    }

    #[test]
    fn a_full_subnet_has_no_free_address_and_never_hands_out_broadcast() {
        let n = net("10.0.0.0/29"); // .1 bridge, .2-.6 guests, .7 broadcast
        let taken: Vec<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        assert_eq!(next_free(n, &taken), None);
        assert_eq!(broadcast(n), Ipv4Addr::new(10, 0, 0, 7));
    }

    #[test]
    fn macs_are_deterministic_local_unicast_and_distinct() {
        let a = mac_for(Ipv4Addr::new(172, 30, 0, 2));
        assert_eq!(a, "02:ba:ac:1e:00:02");
        assert_eq!(a, mac_for(Ipv4Addr::new(172, 30, 0, 2)));
        assert_ne!(a, mac_for(Ipv4Addr::new(172, 30, 0, 3)));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "locally administered, unicast");
    }
}
