//! The `.vm` DNS server: answers for the VMs' names, forwards everything else.
//!
//! Guests use the bridge address as their resolver, and the host reaches
//! `NAME.vm` through systemd-resolved routing `~vm` to the same address. The
//! server runs inside `bangerd` on sockets the privileged side bound on
//! `bridge:53` (`NetOp::OpenDnsSockets`), so bangerd never needs the
//! capability to bind a low port.
//!
//! * `NAME.vm A` → the published address, authoritative (AA).
//! * Unknown `*.vm` → NXDOMAIN, authoritative, with the zone SOA in the
//!   authority section (so resolvers cache the negative answer for one TTL).
//! * `d.c.b.a.in-addr.arpa PTR` for addresses in the configured network →
//!   `NAME.vm.`; unknown addresses there → NXDOMAIN, authoritative.
//! * Every other name is forwarded to the configured upstreams (recursion
//!   available). Without upstreams such queries are REFUSED.
//!
//! Names are published and withdrawn through [`DnsHandle`] as VMs come and go;
//! [`DnsHandle::replace_all`] is for reconciling with the store at startup.

mod handler;
mod upstream;
mod zone;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;
use hickory_server::Server;

pub use crate::config::Ipv4Cidr;

pub use upstream::{RESOLV_CONF, RESOLVED_STUBS, RESOLVED_UPSTREAM_CONF, system_upstreams};
pub use zone::validate_label;

/// The zone VMs are published under.
pub const DEFAULT_ZONE: &str = "vm";
/// TTL of every answer, and the negative-caching TTL. Short: VMs are
/// disposable and a name may point elsewhere a few seconds later.
pub const DEFAULT_TTL: u32 = 5;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "invalid VM name `{name}`: {reason}; a name is 1 to 63 letters, digits and '-', \
         not starting or ending with '-'"
    )]
    InvalidName { name: String, reason: &'static str },
    #[error("VM name `{name}` is listed twice, with {first} and with {second}")]
    ConflictingName {
        name: String,
        first: Ipv4Addr,
        second: Ipv4Addr,
    },
    #[error("invalid DNS zone `{zone}`; expected a domain name such as `vm`")]
    InvalidZone {
        zone: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("reverse network {network} covers all of IPv4; its prefix must be 1 to 32")]
    InvalidNetwork { network: Ipv4Cidr },
    #[error("the DNS server must be started from inside a tokio runtime")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    #[error("preparing the DNS {proto} socket")]
    Socket {
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up forwarding to {upstreams}")]
    Upstream {
        upstreams: String,
        #[source]
        source: hickory_resolver::net::NetError,
    },
    #[error("DNS server on {addr} stopped with an error")]
    Stopped {
        addr: SocketAddr,
        #[source]
        source: hickory_resolver::net::NetError,
    },
}

/// What the server serves and where it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Zone VMs are published under (`vm`).
    pub zone: String,
    /// Network whose reverse (`in-addr.arpa`) names are answered: the bridge
    /// subnet. Its prefix must be 1 to 32.
    pub reverse: Ipv4Cidr,
    /// Where names outside the zones are forwarded, in order of preference.
    /// Empty: such queries are refused.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of answers and of negative answers, in seconds.
    pub ttl: u32,
}

impl DnsConfig {
    /// The `vm` zone with the default TTL.
    pub fn new(reverse: Ipv4Cidr, upstreams: Vec<SocketAddr>) -> Self {
        DnsConfig {
            zone: DEFAULT_ZONE.to_string(),
            reverse,
            upstreams,
            ttl: DEFAULT_TTL,
        }
    }
}

/// Starts the server.
#[derive(Debug)]
pub struct DnsServer;

impl DnsServer {
    /// Serve on `udp` and `tcp` (already bound; typically received from the
    /// privileged side) on the current tokio runtime, until the handle is
    /// shut down or dropped.
    pub fn start(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        config: DnsConfig,
    ) -> Result<DnsHandle, DnsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(DnsError::NoRuntime)?;
        let _entered = runtime.enter();

        let origin = Name::from_ascii(&config.zone)
            .map(|n| {
                let mut n = n.to_lowercase();
                n.set_fqdn(true);
                n
            })
            .map_err(|source| DnsError::InvalidZone {
                zone: config.zone.clone(),
                source,
            })?;
        if config.reverse.prefix() == 0 {
            return Err(DnsError::InvalidNetwork {
                network: config.reverse,
            });
        }
        if origin.is_root() {
            return Err(DnsError::InvalidZone {
                zone: config.zone.clone(),
                source: hickory_proto::ProtoError::from("the root zone cannot be served"),
            });
        }

        let socket_err = |proto| move |source| DnsError::Socket { proto, source };
        let local = udp.local_addr().map_err(socket_err("UDP"))?;
        udp.set_nonblocking(true).map_err(socket_err("UDP"))?;
        tcp.set_nonblocking(true).map_err(socket_err("TCP"))?;
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(socket_err("UDP"))?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(socket_err("TCP"))?;

        let upstreams: Vec<SocketAddr> = config
            .upstreams
            .iter()
            .copied()
            .filter(|u| {
                let own = is_own_address(*u, local);
                if own {
                    tracing::warn!(upstream = %u, "not forwarding to the DNS server's own address");
                }
                !own
            })
            .collect();
        let forwarder = if upstreams.is_empty() {
            tracing::warn!(
                listen = %local,
                "no upstream DNS servers: names outside .{} will be refused",
                config.zone
            );
            None
        } else {
            Some(upstream::Forwarder::new(&upstreams)?)
        };

        let ns_addr = match local.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let zone = Arc::new(zone::Zone::new(origin, config.reverse, config.ttl, ns_addr));
        let handler = handler::Handler::new(Arc::clone(&zone), forwarder);
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(
            listen = %local,
            zone = %zone.origin(),
            reverse = %config.reverse,
            upstreams = ?upstreams,
            "DNS server started"
        );
        Ok(DnsHandle {
            zone,
            server,
            local,
        })
    }
}

/// Whether forwarding to `upstream` would send queries back to ourselves.
fn is_own_address(upstream: SocketAddr, local: SocketAddr) -> bool {
    upstream.port() == local.port()
        && (upstream.ip() == local.ip()
            || (local.ip().is_unspecified() && upstream.ip().is_loopback()))
}

/// A running server. Dropping it stops the server (its tasks are aborted);
/// [`DnsHandle::shutdown`] stops it and waits.
pub struct DnsHandle {
    zone: Arc<zone::Zone>,
    server: Server<handler::Handler>,
    local: SocketAddr,
}

impl fmt::Debug for DnsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsHandle")
            .field("local", &self.local)
            .field("zone", &self.zone.origin())
            .finish_non_exhaustive()
    }
}

impl DnsHandle {
    /// The UDP address the server answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Answer `NAME.<zone>` with `ip` (and its PTR, when `ip` is in the
    /// reverse network). Replaces an earlier address for the same name.
    pub fn publish(&self, name: &str, ip: Ipv4Addr) -> Result<(), DnsError> {
        self.zone.publish(name, ip)?;
        tracing::debug!(name, %ip, "DNS name published");
        Ok(())
    }

    /// Stop answering for `name`. Returns whether it was published.
    pub fn withdraw(&self, name: &str) -> bool {
        let removed = self.zone.withdraw(name);
        if removed {
            tracing::debug!(name, "DNS name withdrawn");
        }
        removed
    }

    /// Make the published set exactly `records` (reconcile). Every entry is
    /// validated first; on an error nothing changes.
    pub fn replace_all(&self, records: Vec<(String, Ipv4Addr)>) -> Result<(), DnsError> {
        self.zone.replace_all(records)
    }

    /// The published names (lowercase) and addresses, sorted by name.
    pub fn records(&self) -> Vec<(String, Ipv4Addr)> {
        self.zone.records()
    }

    /// Stop accepting queries and wait for the server's tasks to finish.
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        let addr = self.local;
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|source| DnsError::Stopped { addr, source })?;
        tracing::info!(listen = %addr, "DNS server stopped");
        Ok(())
    }
}

/// Lets one log line through per interval and counts the rest, for events a
/// guest can cause at will (failed forwards, refused queries).
#[derive(Debug)]
pub(crate) struct RateLimit {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        RateLimit {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last one)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}
