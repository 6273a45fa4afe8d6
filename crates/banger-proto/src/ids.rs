//! What a store id and a guest MAC are, defined once (issue #14 item 2):
//! the daemon makes them, the executor checks every one it is sent (its
//! requests are the owner's, untrusted), and names derived from an id
//! (`banger-<id>` dm devices, `vm-<id>` cgroups) are recognised by the
//! same rule.

use std::net::Ipv4Addr;

/// Random bytes in a store id; its text is twice as many lowercase hex
/// digits.
pub const ID_BYTES: usize = 16;

/// What a store id is, in words (errors quote it).
pub const ID_RULE: &str = "expected 32 lowercase hex characters";

/// Whether `s` is a store id (of a VM, an image or a kernel): 32
/// lowercase hex characters.
pub fn is_id(s: &str) -> bool {
    s.len() == 2 * ID_BYTES && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The store id of `bytes` (the caller's randomness).
pub fn id_of(bytes: [u8; ID_BYTES]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a guest MAC is, in words (errors quote it).
pub const GUEST_MAC_RULE: &str = "expected 02:ba:xx:xx:xx:xx (lowercase hex)";

/// A guest's MAC: `02:ba:` + the four bytes of its address — locally
/// administered, unicast, and unique for every address. The daemon gives
/// it to the VM, and the executor's firewall drops every frame from the
/// guest's tap with any other source MAC.
pub fn guest_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:ba:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Whether `s` is a guest MAC as [`guest_mac`] writes them: `02:ba:` and
/// four more lowercase hex octets.
pub fn is_guest_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    let octet =
        |p: &&str| p.len() == 2 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    parts.len() == 6 && parts.iter().all(octet) && parts[0] == "02" && parts[1] == "ba"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex() {
        let id = id_of([0xab; ID_BYTES]);
        assert_eq!(id, "ab".repeat(16));
        assert!(is_id(&id));
        for bad in [
            "",
            &"a".repeat(31),
            &"a".repeat(33),
            &"A".repeat(32),
            &"g".repeat(32),
            &format!("{}/", "a".repeat(31)),
        ] {
            assert!(!is_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn guest_macs_are_what_guest_mac_writes() {
        let mac = guest_mac(Ipv4Addr::new(10, 0, 200, 5));
        assert_eq!(mac, "02:ba:0a:00:c8:05");
        assert!(is_guest_mac(&mac));
        for bad in [
            "02:ba:0a:00:c8",
            "02:ba:0a:00:c8:05:01",
            "02:BA:0a:00:c8:05",
            "03:ba:0a:00:c8:05",
            "02:ba:0a:00:c8:zz",
            "02:ba:0a:00:c8:5",
        ] {
            assert!(!is_guest_mac(bad), "{bad:?}");
        }
    }
}
