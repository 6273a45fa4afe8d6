//! Forwarding names outside banger's zones, and finding the host's upstreams.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as WireError, NetError};

use super::zone::Answer;
use super::{DnsError, RateLimit};

pub use banger_host::probe::{RESOLV_CONF, RESOLVED_STUBS, RESOLVED_UPSTREAM_CONF};

/// Upstream servers from the `nameserver` lines of a resolv.conf, port 53.
///
/// systemd-resolved's stub addresses are skipped: banger points resolved at
/// this server for `~vm` on the bridge link, so the stub forwards queries back
/// here (`.vm` names, and any name at all once the bridge link counts as a
/// default route); a query forwarded to the stub can then come straight back
/// and loop until it times out. On such hosts read [`RESOLVED_UPSTREAM_CONF`],
/// which lists resolved's own upstreams.
/// Addresses with an interface scope (`fe80::1%eth0`) are skipped too: a
/// socket address cannot carry the interface name. A missing or unreadable
/// file gives no upstreams (logged).
pub fn system_upstreams(resolv_conf: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(resolv_conf) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::warn!(
                path = %resolv_conf.display(),
                error = %e,
                "cannot read resolver configuration; no upstream DNS servers"
            );
            Vec::new()
        }
    }
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            continue;
        };
        if matches!(ip, IpAddr::V4(v4) if RESOLVED_STUBS.contains(&v4)) {
            continue;
        }
        let sa = SocketAddr::new(ip, 53);
        if !out.contains(&sa) {
            out.push(sa);
        }
    }
    out
}

/// Sends queries to the upstreams through hickory's resolver (retries, server
/// selection, TCP on truncation, a response cache honouring TTLs).
pub(crate) struct Forwarder {
    resolver: TokioResolver,
    failure_log: RateLimit,
}

impl Forwarder {
    pub fn new(upstreams: &[SocketAddr]) -> Result<Self, DnsError> {
        let servers = upstreams
            .iter()
            .map(|u| {
                let conns = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = u.port();
                        c
                    })
                    .collect();
                NameServerConfig::new(u.ip(), true, conns)
            })
            .collect();
        let mut opts = ResolverOpts::default();
        // Forward what was asked; never answer from the host's /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        opts.ndots = 0;
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        *builder.options_mut() = opts;
        let resolver = builder.build().map_err(|source| DnsError::Upstream {
            upstreams: upstreams
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
        Ok(Forwarder {
            resolver,
            failure_log: RateLimit::new(Duration::from_secs(30)),
        })
    }

    pub async fn forward(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut name = qname.clone();
        name.set_fqdn(true);
        let mut out = Answer {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };
        match self.resolver.lookup(name, qtype).await {
            Ok(lookup) => out.answers = lookup.answers().to_vec(),
            Err(NetError::Dns(WireError::NoRecordsFound(nr))) => {
                out.rcode = nr.response_code;
                out.authorities
                    .extend(nr.soa.map(|soa| soa.into_record_of_rdata()));
            }
            // The upstream's own refusal or failure, passed on as is.
            Err(NetError::Dns(WireError::ResponseCode(code))) => out.rcode = code,
            Err(e) => {
                if let Some(suppressed) = self.failure_log.allow() {
                    tracing::warn!(
                        name = %qname,
                        %qtype,
                        error = %e,
                        suppressed,
                        "forwarding a DNS query failed; answering SERVFAIL"
                    );
                }
                out.rcode = ResponseCode::ServFail;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_skips_the_resolved_stub_and_scoped_addresses() {
        let text = "\
# generated
nameserver 127.0.0.53
nameserver 127.0.0.54
options edns0 trust-ad
search example.net
nameserver 192.0.2.1
nameserver   2001:db8::1
nameserver fe80::1%eth0
nameserver 192.0.2.1
nameserver
nameserver not-an-ip
";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[2001:db8::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn unreadable_resolv_conf_gives_no_upstreams() {
        assert!(system_upstreams(Path::new("/nonexistent/resolv.conf")).is_empty());
    }
}
