//! IPv4 networks in CIDR notation: the owner config's `network.subnet` and
//! the install metadata's, which travel as text (`"172.30.0.0/24"`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network in CIDR notation, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `None` unless `prefix <= 32` and `addr` has no host bits set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        let cidr = Ipv4Cidr { addr, prefix };
        (prefix <= 32 && u32::from(addr) & !cidr.mask() == 0).then_some(cidr)
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    /// The first host address: the one banger's bridge takes.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(1))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a string is not an [`Ipv4Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not ADDRESS/PREFIX")]
    Syntax(String),
    #[error("{given} has host bits set; the network is {network}")]
    HostBits { given: String, network: String },
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32 && !prefix.starts_with('+'))
            .ok_or_else(syntax)?;
        Ipv4Cidr::new(addr, prefix).ok_or_else(|| {
            let mask = Ipv4Cidr { addr, prefix }.mask();
            CidrError::HostBits {
                given: s.to_owned(),
                network: format!("{}/{prefix}", Ipv4Addr::from(u32::from(addr) & mask)),
            }
        })
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, CidrError> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_travels_as_text() {
        let c: Ipv4Cidr = "172.30.0.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "172.30.0.0/24");
        assert_eq!(c.first_host(), Ipv4Addr::new(172, 30, 0, 1));
        assert!(c.contains(Ipv4Addr::new(172, 30, 0, 255)));
        assert!(!c.contains(Ipv4Addr::new(172, 30, 1, 0)));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"172.30.0.0/24\"");
        let back: Ipv4Cidr = serde_json::from_str("\"10.0.0.0/16\"").unwrap();
        assert_eq!(back, Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 16).unwrap());
        let e = serde_json::from_str::<Ipv4Cidr>("\"10.0.0.1/16\"").unwrap_err();
        assert!(e.to_string().contains("host bits set"), "{e}");
        assert!("10.0.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
    }
}
