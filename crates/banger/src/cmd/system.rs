//! `banger system install`: set this host up to run banger as two systemd
//! services, `bangerd.service` (the owner user) and `bangerd-root.service`
//! (the root helper). See docs/install.md.
//!
//! `status`, `restart` and `uninstall` are not built yet.
//!
//! JSON shape of `install`: `{"root","owner":{"name","uid","gid","home"},
//! "version","installed_at","paths":{...},"written":[{"path","target","kind",
//! "what","action","mode","uid","gid"}],"services":null|{"units","action",
//! "ready"},"warnings":[...]}`.

mod apply;
mod install;
mod plan;
mod systemd;
mod units;

use std::path::PathBuf;

use banger_host::runner::Runner;
use banger_proto::RpcError;
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
                      /usr/local/bin, writes /etc/banger/install.toml and the two units, \
                      creates /var/lib/banger (owner, 0700) and /var/lib/banger-root (root, \
                      0700), then reloads systemd, enables and (re)starts both services and \
                      waits until they are ready. Must run as root. Running it again changes \
                      nothing that is already right. If any step fails, what this run wrote \
                      is rolled back."
    )]
    Install(InstallArgs),
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
}

pub fn run(args: &SystemArgs, settings: &Settings) -> Result<Exit, CliError> {
    match &args.command {
        SystemCommand::Install(a) => run_install(a, settings),
    }
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
    match &r.services {
        Some(a) => out.push_str(&format!(
            "services   {} {}, enabled and ready\n",
            a.units.join(" "),
            a.action
        )),
        None => out.push_str(
            "services   not started (--root): on the target system run \
             `systemctl daemon-reload && systemctl enable --now bangerd-root.service bangerd.service`\n",
        ),
    }
    for w in &r.warnings {
        out.push_str(&format!("warning    {w}\n"));
    }
    out
}
