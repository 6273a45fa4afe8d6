//! The authoritative data: the `.vm` names, their addresses, and the answers
//! they give. Pure logic with no sockets, so every answer shape is unit-tested.
//!
//! Two zones are served from one table:
//! * the forward zone (`vm.`): `NAME.vm A` for each published name, the apex
//!   `SOA`/`NS`, and an `A` for the apex itself (the server's own address,
//!   the glue for `vm. NS vm.`);
//! * the reverse names of the configured network (`d.c.b.a.in-addr.arpa`):
//!   `PTR` to every published name with that address. The zone apex is the
//!   octet-aligned name covering the network (`c.b.a.in-addr.arpa` for a /24;
//!   for a /20, one apex per /24 inside it), so nothing outside the network is
//!   ever answered authoritatively.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, NS, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{DnsError, Ipv4Cidr};

/// SOA timers (seconds). Nothing transfers this zone; they are only there so
/// the SOA is well-formed. The negative-caching TTL is the record TTL.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

/// What the authoritative side says about a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    fn new(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// Check that `name` is a single DNS label a VM may be published under:
/// 1 to 63 characters, ASCII letters, digits and `-`, not starting or ending
/// with `-`. Case does not matter (names are stored lowercase).
pub fn validate_label(name: &str) -> Result<(), DnsError> {
    let invalid = |reason: &'static str| DnsError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 63 {
        return Err(invalid("it is longer than 63 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(invalid(
            "it contains a character other than a-z, 0-9 and '-'",
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(invalid("it starts or ends with '-'"));
    }
    Ok(())
}

#[derive(Debug)]
struct Table {
    /// Lowercase label → address.
    names: BTreeMap<String, Ipv4Addr>,
    serial: u32,
}

impl Table {
    fn bump(&mut self) {
        self.serial = self.serial.wrapping_add(1);
    }
}

/// The zone data and the answers it gives. Shared between the handle (which
/// publishes) and the request handler (which reads).
#[derive(Debug)]
pub(crate) struct Zone {
    /// Forward zone apex, fully qualified and lowercase (`vm.`).
    origin: Name,
    hostmaster: Name,
    reverse: Ipv4Cidr,
    ttl: u32,
    /// The server's own address, answered for the apex and used as NS glue.
    ns_addr: Option<Ipv4Addr>,
    table: RwLock<Table>,
}

impl Zone {
    pub fn new(origin: Name, reverse: Ipv4Cidr, ttl: u32, ns_addr: Option<Ipv4Addr>) -> Self {
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&origin))
            .unwrap_or_else(|_| origin.clone());
        // Serial starts at the current time so a restarted server never goes
        // backwards for a secondary that might be watching (none is, today).
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Zone {
            origin,
            hostmaster,
            reverse,
            ttl,
            ns_addr,
            table: RwLock::new(Table {
                names: BTreeMap::new(),
                serial,
            }),
        }
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn publish(&self, name: &str, ip: Ipv4Addr) -> Result<(), DnsError> {
        validate_label(name)?;
        let mut t = self.write();
        if t.names.insert(name.to_ascii_lowercase(), ip) != Some(ip) {
            t.bump();
        }
        Ok(())
    }

    pub fn withdraw(&self, name: &str) -> bool {
        let mut t = self.write();
        let removed = t.names.remove(&name.to_ascii_lowercase()).is_some();
        if removed {
            t.bump();
        }
        removed
    }

    /// Validate every entry first; change nothing unless all are valid.
    pub fn replace_all(&self, records: Vec<(String, Ipv4Addr)>) -> Result<(), DnsError> {
        let mut names = BTreeMap::new();
        for (name, ip) in records {
            validate_label(&name)?;
            let key = name.to_ascii_lowercase();
            if let Some(&first) = names.get(&key)
                && first != ip
            {
                return Err(DnsError::ConflictingName {
                    name,
                    first,
                    second: ip,
                });
            }
            names.insert(key, ip);
        }
        let mut t = self.write();
        if t.names != names {
            t.names = names;
            t.bump();
        }
        Ok(())
    }

    pub fn records(&self) -> Vec<(String, Ipv4Addr)> {
        self.read()
            .names
            .iter()
            .map(|(n, ip)| (n.clone(), *ip))
            .collect()
    }

    /// The authoritative answer for `qname`/`qtype`, or `None` when the name
    /// is in neither zone (the caller forwards it).
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        if self.origin.zone_of(qname) {
            return Some(self.forward_answer(qname, qtype));
        }
        self.reverse_answer(qname, qtype)
    }

    fn soa(&self, owner: &Name, serial: u32) -> Record {
        Record::from_rdata(
            owner.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                self.origin.clone(),
                self.hostmaster.clone(),
                serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                self.ttl,
            )),
        )
    }

    fn ns(&self, owner: &Name) -> Record {
        Record::from_rdata(owner.clone(), self.ttl, RData::NS(NS(self.origin.clone())))
    }

    fn glue(&self) -> Vec<Record> {
        self.ns_addr
            .map(|ip| Record::from_rdata(self.origin.clone(), self.ttl, RData::A(A(ip))))
            .into_iter()
            .collect()
    }

    /// The apex's own records (`SOA`, `NS`, or both for `ANY`), with the NS
    /// glue as additional data.
    fn apex_records(&self, apex: &Name, qtype: RecordType, serial: u32, out: &mut Answer) {
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            out.answers.push(self.soa(apex, serial));
        }
        if matches!(qtype, RecordType::NS | RecordType::ANY) {
            out.answers.push(self.ns(apex));
            out.additionals.extend(self.glue());
        }
    }

    fn forward_answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let t = self.read();
        let mut out = Answer::new(ResponseCode::NoError);
        let depth = qname.num_labels() - self.origin.num_labels();
        match depth {
            0 => {
                self.apex_records(&self.origin, qtype, t.serial, &mut out);
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    out.answers.extend(self.glue());
                }
            }
            1 => {
                let label = qname.iter().next().unwrap_or_default();
                let label = String::from_utf8_lossy(label).to_ascii_lowercase();
                match t.names.get(&label) {
                    Some(&ip) if matches!(qtype, RecordType::A | RecordType::ANY) => out
                        .answers
                        .push(Record::from_rdata(qname.clone(), self.ttl, RData::A(A(ip)))),
                    Some(_) => {}
                    None => out.rcode = ResponseCode::NXDomain,
                }
            }
            _ => out.rcode = ResponseCode::NXDomain,
        }
        if out.answers.is_empty() {
            out.authorities.push(self.soa(&self.origin, t.serial));
        }
        out
    }

    fn reverse_answer(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        let arpa = Name::from_ascii("in-addr.arpa.").ok()?;
        if !arpa.zone_of(qname) {
            return None;
        }
        // Labels left of in-addr.arpa, most significant octet first.
        let labels: Vec<&[u8]> = qname.iter().collect();
        let rel = &labels[..labels.len() - 2];
        let mut octets = Vec::new();
        for label in rel.iter().rev() {
            match parse_octet(label) {
                Some(o) if octets.len() < 4 => octets.push(o),
                _ => break,
            }
        }
        let extra = rel.len() - octets.len();

        let apex_len = apex_octets(self.reverse);
        if octets.len() < apex_len {
            return None;
        }
        let mut first = [0u8; 4];
        first[..octets.len()].copy_from_slice(&octets);
        let block_start = Ipv4Addr::from(first);
        if !self.reverse.contains(block_start) {
            return None;
        }

        let t = self.read();
        let apex = reverse_name(&octets[..apex_len]);
        let mut out = Answer::new(ResponseCode::NoError);
        if extra > 0 {
            out.rcode = ResponseCode::NXDomain;
        } else {
            let at_apex = octets.len() == apex_len;
            if at_apex {
                self.apex_records(&apex, qtype, t.serial, &mut out);
            }
            if octets.len() == 4 {
                let names: Vec<&String> = t
                    .names
                    .iter()
                    .filter(|(_, ip)| **ip == block_start)
                    .map(|(n, _)| n)
                    .collect();
                if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    for n in &names {
                        let target = Name::from_ascii(n.as_str())
                            .and_then(|n| n.append_domain(&self.origin));
                        if let Ok(target) = target {
                            out.answers.push(Record::from_rdata(
                                qname.clone(),
                                self.ttl,
                                RData::PTR(PTR(target)),
                            ));
                        }
                    }
                }
                if names.is_empty() && !at_apex {
                    out.rcode = ResponseCode::NXDomain;
                }
            } else if !at_apex {
                // An empty non-terminal exists when something is published below it.
                // At most 4 octets, so a prefix of at most 32: checked, not cast.
                let block = u8::try_from(octets.len() * 8)
                    .ok()
                    .and_then(|prefix| Ipv4Cidr::new(block_start, prefix));
                let below = |ip: &Ipv4Addr| block.is_some_and(|b| b.contains(*ip));
                if !t.names.values().any(below) {
                    out.rcode = ResponseCode::NXDomain;
                }
            }
        }
        if out.answers.is_empty() {
            out.authorities.push(self.soa(&apex, t.serial));
        }
        Some(out)
    }
}

/// Octets in the name of a reverse-zone apex: the prefix rounded up to whole
/// octets, so an apex never covers addresses outside the network.
fn apex_octets(net: Ipv4Cidr) -> usize {
    usize::from(net.prefix()).div_ceil(8)
}

/// A decimal octet label as written in reverse names (`0`..`255`, no sign,
/// no leading zeros).
fn parse_octet(label: &[u8]) -> Option<u8> {
    if label.is_empty()
        || label.len() > 3
        || !label.iter().all(u8::is_ascii_digit)
        || (label.len() > 1 && label[0] == b'0')
    {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

/// `c.b.a.in-addr.arpa.` for octets `[a, b, c]`.
fn reverse_name(octets: &[u8]) -> Name {
    let mut s = String::new();
    for o in octets.iter().rev() {
        s.push_str(&o.to_string());
        s.push('.');
    }
    s.push_str("in-addr.arpa.");
    Name::from_ascii(s).expect("numeric labels form a valid name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let z = Zone::new(
            Name::from_ascii("vm.").unwrap(),
            Ipv4Cidr::new(Ipv4Addr::new(172, 30, 0, 0), 24).unwrap(),
            5,
            Some(Ipv4Addr::new(172, 30, 0, 1)),
        );
        z.publish("web", Ipv4Addr::new(172, 30, 0, 10)).unwrap();
        z.publish("DB", Ipv4Addr::new(172, 30, 0, 11)).unwrap();
        z
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn check(z: &Zone, q: &str, t: RecordType) -> (ResponseCode, Vec<String>, Vec<RecordType>) {
        let a = z
            .lookup(&name(q), t)
            .unwrap_or_else(|| panic!("{q} not ours"));
        let answers = a.answers.iter().map(|r| r.data.to_string()).collect();
        let auth = a.authorities.iter().map(|r| r.record_type()).collect();
        (a.rcode, answers, auth)
    }

    #[test]
    fn labels_are_validated_and_named_in_the_error() {
        for ok in ["a", "web-1", "X9", &"a".repeat(63)] {
            validate_label(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "a.b", "a_b", "ü", &"a".repeat(64)] {
            let err = validate_label(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn forward_answers() {
        let z = zone();
        assert_eq!(
            check(&z, "web.vm.", RecordType::A),
            (ResponseCode::NoError, vec!["172.30.0.10".into()], vec![])
        );
        // Case-insensitive both ways.
        assert_eq!(
            check(&z, "db.VM.", RecordType::A).1,
            vec!["172.30.0.11".to_string()]
        );
        // The name exists but has no AAAA: NODATA, not NXDOMAIN.
        assert_eq!(
            check(&z, "web.vm.", RecordType::AAAA),
            (ResponseCode::NoError, vec![], vec![RecordType::SOA])
        );
        assert_eq!(
            check(&z, "nope.vm.", RecordType::A),
            (ResponseCode::NXDomain, vec![], vec![RecordType::SOA])
        );
        assert_eq!(
            check(&z, "a.web.vm.", RecordType::A).0,
            ResponseCode::NXDomain
        );
        let (rc, ans, _) = check(&z, "vm.", RecordType::SOA);
        assert_eq!(rc, ResponseCode::NoError);
        assert!(ans[0].starts_with("vm. hostmaster.vm."), "{ans:?}");
        assert_eq!(check(&z, "vm.", RecordType::NS).1, vec!["vm.".to_string()]);
        assert_eq!(
            check(&z, "vm.", RecordType::A).1,
            vec!["172.30.0.1".to_string()]
        );
    }

    #[test]
    fn reverse_answers() {
        let z = zone();
        assert_eq!(
            check(&z, "10.0.30.172.in-addr.arpa.", RecordType::PTR),
            (ResponseCode::NoError, vec!["web.vm.".into()], vec![])
        );
        assert_eq!(
            check(&z, "99.0.30.172.in-addr.arpa.", RecordType::PTR),
            (ResponseCode::NXDomain, vec![], vec![RecordType::SOA])
        );
        // The apex of the /24.
        let (rc, ans, _) = check(&z, "0.30.172.in-addr.arpa.", RecordType::SOA);
        assert_eq!((rc, ans.len()), (ResponseCode::NoError, 1));
        // Junk below an address is ours and does not exist.
        assert_eq!(
            check(&z, "x.10.0.30.172.in-addr.arpa.", RecordType::PTR).0,
            ResponseCode::NXDomain
        );
        // Outside the network, or above its apex: not ours.
        assert!(
            z.lookup(&name("10.1.30.172.in-addr.arpa."), RecordType::PTR)
                .is_none()
        );
        assert!(
            z.lookup(&name("30.172.in-addr.arpa."), RecordType::SOA)
                .is_none()
        );
        assert!(z.lookup(&name("example.com."), RecordType::A).is_none());
    }

    /// A zone for 10.64.0.0/`prefix` with `a.vm` at 10.64.3.4.
    fn wide_zone(prefix: u8) -> Zone {
        let z = Zone::new(
            name("vm."),
            Ipv4Cidr::new(Ipv4Addr::new(10, 64, 0, 0), prefix).unwrap(),
            5,
            None,
        );
        z.publish("a", Ipv4Addr::new(10, 64, 3, 4)).unwrap();
        z
    }

    #[test]
    fn reverse_apex_for_a_network_wider_than_a_slash_24() {
        let z = wide_zone(20);
        assert_eq!(
            check(&z, "4.3.64.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["a.vm.".to_string()]
        );
        // 10.64.16.0/24 is outside the /20.
        assert!(
            z.lookup(&name("4.16.64.10.in-addr.arpa."), RecordType::PTR)
                .is_none()
        );
        let a = z
            .lookup(&name("5.3.64.10.in-addr.arpa."), RecordType::PTR)
            .unwrap();
        assert_eq!(a.authorities[0].name, name("3.64.10.in-addr.arpa."));
    }

    /// Between a /12's two-octet apex and its addresses, a three-octet name
    /// exists (an empty non-terminal) only when an address below it is
    /// published.
    #[test]
    fn reverse_empty_non_terminals_exist_only_above_an_address() {
        let z = wide_zone(12);
        assert_eq!(
            check(&z, "3.64.10.in-addr.arpa.", RecordType::PTR),
            (ResponseCode::NoError, vec![], vec![RecordType::SOA])
        );
        assert_eq!(
            check(&z, "5.64.10.in-addr.arpa.", RecordType::PTR).0,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn replace_all_is_all_or_nothing() {
        let z = zone();
        let err = z
            .replace_all(vec![
                ("ok".into(), Ipv4Addr::new(172, 30, 0, 20)),
                ("bad_name".into(), Ipv4Addr::new(172, 30, 0, 21)),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("`bad_name`"), "{err}");
        assert_eq!(z.records().len(), 2);
        let err = z
            .replace_all(vec![
                ("x".into(), Ipv4Addr::new(172, 30, 0, 20)),
                ("X".into(), Ipv4Addr::new(172, 30, 0, 21)),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("`X`"), "{err}");
        z.replace_all(vec![("new".into(), Ipv4Addr::new(172, 30, 0, 22))])
            .unwrap();
        assert_eq!(
            z.records(),
            vec![("new".to_string(), Ipv4Addr::new(172, 30, 0, 22))]
        );
        assert!(z.withdraw("NEW"));
        assert!(!z.withdraw("new"));
    }
}
