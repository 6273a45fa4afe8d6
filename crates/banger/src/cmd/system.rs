//! `banger system install | status | restart | uninstall`: run banger as two
//! systemd services, `bangerd.service` (the owner user) and
//! `bangerd-root.service` (the root helper), and manage them. See
//! docs/system.md.
//!
//! JSON shape of `install`: `{"root","owner":{"name","uid","gid","home"},
//! "version","installed_at","paths":{...},"vmm":{"qemu_bin"?,
//! "firecracker_bin"?},"network":{"bridge","subnet"},"jail":{"uid_base","count"},"written":[{"path","target","kind",
//! "what","action","mode","uid","gid"}],"services":null|{"units","action",
//! "ready"},"warnings":[...]}`.

mod apply;
mod guard;
mod install;
mod plan;
mod probe;
mod restart;
mod status;
mod systemd;
mod uninstall;
mod units;
mod vmm_bins;

use std::path::PathBuf;

use banger_host::runner::Runner;
use banger_proto::{ErrorCode, RpcError};
use clap::{Args, Subcommand};

use crate::client::ClientError;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

use self::install::{InstallError, Report, Request};

#[derive(Debug, Args)]
pub struct SystemArgs {
    #[command(subcommand)]
    pub command: SystemCommand,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Install banger's binaries, metadata and systemd units, and start them
    #[command(
        long_about = "Install banger as two systemd services: bangerd.service, running as the \
                      owner user with no privileges, and bangerd-root.service, the root helper \
                      with only the capabilities its operations need. Copies bangerd, \
                      bangerd-root and banger from the directory of this banger to \
                      /usr/local/bin, writes /etc/banger/install.toml and the units (with \
                      banger-vms.service, which runs nothing and holds the VMs' cgroups), \
                      creates /var/lib/banger (owner, 0700) and /var/lib/banger-root (root, \
                      0700), then reloads systemd, enables and starts banger-vms.service \
                      (never restarted: that would kill every VM), enables and (re)starts \
                      both services and waits until they are ready. Must run as root. Running it again changes \
                      nothing that is already right. If any step fails, what this run wrote \
                      is rolled back."
    )]
    Install(InstallArgs),
    /// Show both services, the installed and running versions, socket
    /// health and a doctor summary
    #[command(
        long_about = "Show the install: its metadata, the installed binaries and their \
                      versions, the units as systemd sees them, whether each daemon answers \
                      on its socket and which version runs, and a summary of the doctor \
                      report. Exits 0 when healthy, 1 when something is wrong (each problem \
                      is printed with what to do), 5 when banger is not installed. Any user \
                      may run it; the helper answers only its owner, so for others it shows \
                      as `refused`, which still means alive."
    )]
    Status(StatusArgs),
    /// Restart both services; running VMs keep running
    #[command(
        long_about = "Restart bangerd-root.service and bangerd.service and wait until both are \
                      active. VMs keep running: the helper's unit leaves its VMM children \
                      alone when it stops (KillMode=process), they stay in their cgroups \
                      beneath banger-vms.service (left alone), the new helper re-adopts them \
                      and bangerd reconciles them at start. Must run as root."
    )]
    Restart,
    /// Stop and remove banger's services, binaries and host objects
    #[command(
        long_about = "Undo `system install`: ask bangerd to remove every host object banger \
                      created (taps, bridge, nft tables, resolver routing, loop and dm \
                      devices), stop and disable both units and banger-vms.service, kill \
                      anything left in their cgroups, and remove the units, the binaries and \
                      the install metadata. Refuses while VMs run unless --force, which stops them \
                      first. Images, kernels and VM data in /var/lib/banger (and the helper's \
                      journal) are kept unless --purge. Must run as root."
    )]
    Uninstall(UninstallArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Look only at the files installed under DIR (no systemctl, no sockets)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Skip the doctor summary
    #[arg(long)]
    pub no_doctor: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Also remove images, kernels, VM data and the helper's journal
    #[arg(long)]
    pub purge: bool,
    /// Stop running VMs first, and carry on past an unreachable daemon or a
    /// partial host teardown (what was left is reported)
    #[arg(long)]
    pub force: bool,
    /// Remove the files installed under DIR and leave the running system
    /// alone
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The user who owns banger and its VMs [default: $SUDO_USER]
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Write the same files under DIR and leave the running system alone
    /// (no systemctl); for packagers and tests
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Replace an install that belongs to another owner
    #[arg(long)]
    pub force: bool,
    /// The QEMU binary the root helper launches (absolute) [default:
    /// qemu-system-x86_64 found on PATH now]
    #[arg(long, value_name = "PATH")]
    pub qemu_bin: Option<PathBuf>,
    /// The Firecracker binary the root helper launches (absolute)
    /// [default: firecracker found on PATH now]
    #[arg(long, value_name = "PATH")]
    pub firecracker_bin: Option<PathBuf>,
    /// The bridge the root helper sets up for guests [default: the one
    /// installed, else banger0]
    #[arg(long, value_name = "NAME", value_parser = bridge_arg)]
    pub bridge: Option<String>,
    /// The guests' private IPv4 subnet, /16 to /29; the bridge takes its
    /// first address [default: the one installed, else 172.30.0.0/24]
    #[arg(long, value_name = "CIDR", value_parser = subnet_arg)]
    pub subnet: Option<banger_proto::cidr::Ipv4Cidr>,
    /// The uids (gid = uid) the root helper runs disk tools (and later
    /// VMMs) as: a range that owns nothing on this host, checked at
    /// install [default: the one installed, else 1990000000:1024]
    #[arg(long, value_name = "BASE:COUNT", value_parser = jail_arg)]
    pub jail_uids: Option<banger_proto::install::InstallJail>,
}

/// `--jail-uids`: `BASE:COUNT` of an accepted range.
fn jail_arg(s: &str) -> Result<banger_proto::install::InstallJail, String> {
    banger_proto::install::InstallJail::parse(s).map_err(|e| e.to_string())
}

/// `--bridge`: a name banger may give its bridge.
fn bridge_arg(s: &str) -> Result<String, String> {
    let network = banger_proto::install::InstallNetwork {
        bridge: s.to_string(),
        ..Default::default()
    };
    network
        .check()
        .map(|()| network.bridge)
        .map_err(|e| e.to_string())
}

/// `--subnet`: a private network of an accepted size.
fn subnet_arg(s: &str) -> Result<banger_proto::cidr::Ipv4Cidr, String> {
    let subnet: banger_proto::cidr::Ipv4Cidr = s.parse().map_err(|e| format!("{e}"))?;
    match banger_proto::net::subnet_problem(subnet) {
        Some(reason) => Err(reason),
        None => Ok(subnet),
    }
}

pub fn run(args: &SystemArgs, settings: &Settings) -> Result<Exit, CliError> {
    match &args.command {
        SystemCommand::Install(a) => run_install(a, settings),
        SystemCommand::Status(a) => run_status(a, settings),
        SystemCommand::Restart => run_restart(settings),
        SystemCommand::Uninstall(a) => run_uninstall(a, settings),
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `--root DIR` made absolute, or `/`; `None` when DIR is not a directory.
fn resolve_root(root: Option<&PathBuf>) -> Result<PathBuf, PathBuf> {
    match root {
        None => Ok(PathBuf::from("/")),
        Some(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            if dir.is_dir() { Ok(dir) } else { Err(dir) }
        }
    }
}

fn run_status(args: &StatusArgs, settings: &Settings) -> Result<Exit, CliError> {
    let root = resolve_root(args.root.as_ref()).map_err(|path| {
        error(
            ErrorCode::NotFound,
            &install::InstallError::RootMissing { path },
        )
    })?;
    let req = status::StatusRequest {
        live: args.root.is_none(),
        root,
        doctor: !args.no_doctor,
        euid: euid(),
    };
    let found = status::gather(&req, &Runner, &systemd::Systemctl::default());
    let problems = status::problems(&found);
    if settings.json {
        output::json(&status::to_json(&found, &problems))?;
    } else {
        output::stdout(status::to_text(&found, &problems).as_bytes())?;
    }
    Ok(if !found.installed() {
        Exit::NotFound
    } else if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    })
}

fn run_restart(settings: &Settings) -> Result<Exit, CliError> {
    let fail = |e: restart::RestartError| error(e.code(), &e);
    if euid() != 0 {
        return Err(fail(restart::RestartError::NotRoot));
    }
    systemd::check_available().map_err(|e| fail(restart::RestartError::Systemd(e)))?;
    let report = restart::restart(&systemd::Systemctl::default()).map_err(fail)?;
    if settings.json {
        output::json(&restart::to_json(&report))?;
    } else {
        output::stdout(restart::to_text(&report).as_bytes())?;
    }
    Ok(Exit::Ok)
}

fn run_uninstall(args: &UninstallArgs, settings: &Settings) -> Result<Exit, CliError> {
    use uninstall::UninstallError as E;
    let fail = |e: E| error(e.code(), &e);
    if euid() != 0 {
        return Err(fail(E::NotRoot));
    }
    let root = resolve_root(args.root.as_ref()).map_err(|path| fail(E::RootMissing { path }))?;
    let live = args.root.is_none();
    if live {
        systemd::check_available().map_err(|e| fail(E::Systemd(e)))?;
    }
    let req = uninstall::UninstallRequest {
        root,
        live,
        purge: args.purge,
        force: args.force,
    };
    let mut connect = |paths: &banger_proto::install::InstallPaths| {
        let socket = paths.runtime_dir.join("bangerd.sock");
        crate::client::Client::connect(&socket).map(|c| Box::new(c) as Box<dyn uninstall::Daemon>)
    };
    match uninstall::uninstall(&req, &systemd::Systemctl::default(), &mut connect) {
        Ok(report) => {
            if settings.json {
                output::json(&uninstall::to_json(&report))?;
            } else {
                output::stdout(uninstall::to_text(&report).as_bytes())?;
            }
            Ok(Exit::Ok)
        }
        Err(E::Incomplete { errors, report }) => {
            // Say what was done before the error that stops the command.
            if !settings.json {
                output::stdout(uninstall::to_text(&report).as_bytes())?;
            }
            Err(fail(E::Incomplete { errors, report }))
        }
        Err(e) => Err(fail(e)),
    }
}

/// An error as the CLI reports it: its class (hence exit status and
/// `--json` code) and its message chain.
fn error(code: ErrorCode, e: &(dyn std::error::Error + 'static)) -> CliError {
    CliError::Client(ClientError::Remote(RpcError::from_error(code, e)))
}

fn run_install(args: &InstallArgs, settings: &Settings) -> Result<Exit, CliError> {
    let bin_source = plan::own_bin_dir().map_err(|e| to_cli(InstallError::Plan(e)))?;
    let req = Request {
        owner: args.owner.clone(),
        sudo_user: std::env::var("SUDO_USER").ok(),
        root: args.root.clone(),
        force: args.force,
        bin_source,
        euid: rustix::process::geteuid().as_raw(),
        vmm: vmm_bins::Given {
            qemu_bin: args.qemu_bin.clone(),
            firecracker_bin: args.firecracker_bin.clone(),
        },
        bridge: args.bridge.clone(),
        subnet: args.subnet,
        jail: args.jail_uids,
    };
    let report = install::install(&req, &Runner, &systemd::Systemctl::default()).map_err(to_cli)?;
    if settings.json {
        output::json(&report_json(&report))?;
    } else {
        output::stdout(report_text(&report).as_bytes())?;
    }
    Ok(Exit::Ok)
}

/// An install error as the CLI reports it: its class (hence exit status and
/// `--json` code) and its message chain. It rides on the daemon-error
/// variant because that is the one carrying a code and messages.
fn to_cli(e: InstallError) -> CliError {
    CliError::Client(ClientError::Remote(RpcError::from_error(e.code(), &e)))
}

fn report_json(r: &Report) -> serde_json::Value {
    let written: Vec<_> = r
        .written
        .iter()
        .map(|w| {
            serde_json::json!({
                "path": w.path,
                "target": w.target,
                "kind": w.kind,
                "what": w.what,
                "action": w.action.as_str(),
                "mode": format!("{:04o}", w.mode),
                "uid": w.uid,
                "gid": w.gid,
            })
        })
        .collect();
    let services = r
        .services
        .as_ref()
        .map(|a| serde_json::json!({ "units": a.units, "action": a.action, "ready": true }));
    serde_json::json!({
        "root": r.root,
        "owner": {
            "name": r.owner.name,
            "uid": r.owner.uid,
            "gid": r.owner.gid,
            "home": r.owner.home,
        },
        "version": r.meta.version,
        "installed_at": r.meta.installed_at,
        "paths": r.meta.paths,
        "vmm": r.meta.vmm,
        "network": r.meta.network,
        "jail": r.meta.jail,
        "written": written,
        "services": services,
        "warnings": r.warnings,
    })
}

fn report_text(r: &Report) -> String {
    let mut out = format!(
        "banger {} installed for {} (uid {})",
        r.meta.version, r.owner.name, r.owner.uid
    );
    if r.root != std::path::Path::new("/") {
        out.push_str(&format!(" under {}", r.root.display()));
    }
    out.push('\n');
    for w in &r.written {
        out.push_str(&format!(
            "{:<10} {:<4} {:04o} {:>5}:{:<5} {}\n",
            w.action.as_str(),
            w.kind,
            w.mode,
            w.uid,
            w.gid,
            w.path.display()
        ));
    }
    out.push_str(&format!(
        "network    bridge {} subnet {}\n",
        r.meta.network.bridge, r.meta.network.subnet
    ));
    match &r.services {
        Some(a) => out.push_str(&format!(
            "services   {} {}, enabled and ready\n",
            a.units.join(" "),
            a.action
        )),
        None => out.push_str(
            "services   not started (--root): on the target system run \
             `systemctl daemon-reload && systemctl enable --now banger-vms.service bangerd-root.service bangerd.service`\n",
        ),
    }
    for w in &r.warnings {
        out.push_str(&format!("warning    {w}\n"));
    }
    out
}
