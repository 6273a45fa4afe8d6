//! `banger host status | teardown`: the host objects banger manages.

use banger_proto::net::TeardownReport;
use banger_proto::rpc::{HostStatus, Request, Response};
use clap::{Args, Subcommand};

use crate::client::response_name;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Bridge, subnet, DNS address, NAT state and the tap pool
    Status,
    /// Remove every host object banger created (taps, bridge, nft tables,
    /// resolver routing); safe to run twice
    Teardown,
}

pub fn run(args: &HostArgs, settings: &Settings) -> Result<Exit, CliError> {
    let mut client = super::connect(settings)?;
    match args.command {
        HostCommand::Status => match client.call(&Request::HostStatus, |_| {})? {
            Response::HostStatus(s) => {
                if settings.json {
                    output::json(&s)?;
                } else {
                    output::stdout(status_text(&s).as_bytes())?;
                }
                Ok(Exit::Ok)
            }
            other => Err(client
                .unexpected("a host status", response_name(&other))
                .into()),
        },
        HostCommand::Teardown => match client.call(&Request::HostTeardown, |_| {})? {
            Response::HostTeardown(r) => {
                if settings.json {
                    output::json(&r)?;
                } else {
                    output::stdout(teardown_text(&r).as_bytes())?;
                }
                Ok(if r.errors.is_empty() {
                    Exit::Ok
                } else {
                    Exit::Failure
                })
            }
            other => Err(client
                .unexpected("a teardown report", response_name(&other))
                .into()),
        },
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn status_text(s: &HostStatus) -> String {
    let mut out = String::new();
    let state = if s.ready {
        "ready".to_string()
    } else {
        format!("NOT READY: {}", s.error.as_deref().unwrap_or("unknown"))
    };
    out.push_str(&format!("network     {state}\n"));
    out.push_str(&format!(
        "bridge      {} ({}present) {} gateway {}\n",
        s.bridge,
        if s.bridge_present { "" } else { "not " },
        s.subnet,
        s.bridge_address
    ));
    out.push_str(&format!(
        "dns         {} ({} records)\n",
        s.dns_address.as_deref().unwrap_or("not running"),
        s.dns_records
    ));
    out.push_str(&format!(
        "nat         firewall {}, ip_forward {}, {} guest(s) masqueraded\n",
        yes_no(s.nat.firewall),
        yes_no(s.nat.ip_forward),
        s.nat.nat_guests.len()
    ));
    out.push_str(&format!(
        "resolver    ~vm routed: {}\n",
        yes_no(s.resolver_routing)
    ));
    out.push_str(&format!(
        "disks       root disks by {}\n",
        s.snapshot_backend
    ));
    out.push_str(&format!(
        "tap pool    {} free of {} ({})\n",
        s.tap_pool.free.len(),
        s.tap_pool.target,
        if s.tap_pool.free.is_empty() {
            "-".to_string()
        } else {
            s.tap_pool.free.join(" ")
        }
    ));
    if !s.tap_pool.assigned.is_empty() {
        out.push_str("\nTAP          VM                IP               NAT\n");
        for a in &s.tap_pool.assigned {
            out.push_str(&format!(
                "{:<12} {:<17} {:<16} {}\n",
                a.tap,
                a.vm,
                a.ip,
                yes_no(a.nat)
            ));
        }
    }
    out
}

fn teardown_text(r: &TeardownReport) -> String {
    let mut out = String::new();
    if r.removed.is_empty() && r.errors.is_empty() {
        out.push_str("nothing to remove\n");
    }
    for item in &r.removed {
        out.push_str(&format!("removed  {item}\n"));
    }
    for e in &r.errors {
        out.push_str(&format!("FAILED   {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_text_lists_what_happened() {
        let r = TeardownReport {
            removed: vec!["tap bangertap0".into()],
            errors: vec!["bridge banger0: busy".into()],
        };
        assert_eq!(
            teardown_text(&r),
            "removed  tap bangertap0\nFAILED   bridge banger0: busy\n"
        );
        let empty = TeardownReport {
            removed: vec![],
            errors: vec![],
        };
        assert_eq!(teardown_text(&empty), "nothing to remove\n");
    }
}
