//! `banger vm …`: create, list, inspect, start/stop, ssh, logs, ports, stats, pool.

use std::path::PathBuf;
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};
use banger_proto::rpc::{Request, Response};
use banger_proto::vm::{CreateVm, SetVm, VmInfo, VmRequest, VmResponse, VmState, VmmKind};
use clap::{Args, Subcommand, ValueEnum};

use super::image::{call_with_progress, human_bytes};
use crate::client::response_name;
use crate::error::CliError;
use crate::exit::Exit;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct VmArgs {
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VmmArg {
    Firecracker,
    Qemu,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM (and boot it, unless --no-start)
    Create {
        name: String,
        /// Image to boot (default: `debian`): a name, or a reference
        /// (`registry/repository[:tag]`, a bundle URL or path) pulled first
        /// unless an image pulled from it is here
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory in MiB
        #[arg(long)]
        memory: Option<u32>,
        /// Work disk size, e.g. `8G`, `512M`
        #[arg(long, value_parser = parse_size)]
        disk: Option<u64>,
        /// Give the VM outbound NAT (default from config)
        #[arg(long, overrides_with = "no_nat")]
        nat: bool,
        /// Offline sandbox: only banger's DNS (and other VMs if allowed)
        #[arg(long)]
        no_nat: bool,
        /// Hypervisor (default from config; QEMU where Firecracker cannot run)
        #[arg(long, value_enum)]
        vmm: Option<VmmArg>,
        /// Create the disks but do not boot
        #[arg(long)]
        no_start: bool,
        /// Wait until the guest is ready, showing progress
        #[arg(long)]
        wait: bool,
        /// Copy this git checkout into the VM once it runs (`workspace prepare`)
        #[arg(long, conflicts_with = "no_start")]
        workspace: Option<PathBuf>,
        /// Pull --image over plain HTTP, for a registry on loopback
        #[arg(long)]
        insecure: bool,
        /// Restore this snapshot (`vm snapshot`) instead of booting: its
        /// image, VMM and sizes, a new address, MAC, host key and name
        #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["image", "no_start"])]
        from: Option<String>,
    },
    /// List VMs
    Ls,
    /// Show one VM
    Show { name: String },
    /// Boot a stopped VM
    Start { name: String },
    /// Power a VM off (guest shutdown, killed after the timeout), or suspend it to disk
    Stop {
        name: String,
        /// Seconds to wait for the guest to power off
        #[arg(long, conflicts_with = "save")]
        timeout: Option<u32>,
        /// Suspend to disk instead (QEMU): save its memory and devices,
        /// then end its VMM; the next `vm start` resumes it where it was
        #[arg(long)]
        save: bool,
    },
    /// Stop, then start
    Restart { name: String },
    /// Kill the VMM immediately
    Kill { name: String },
    /// Freeze a running VM's vCPUs; memory, address and name stay (`vm resume` continues it)
    Pause { name: String },
    /// Continue a paused VM
    Resume { name: String },
    /// Save a running or paused VM (memory, devices and disks) as a snapshot
    #[command(
        long_about = "Save a running or paused QEMU VM as snapshot SNAPSHOT (NAME-1, NAME-2, ...                       by default): its memory and device state and a copy of its disks. The VM                       is paused while it is saved and runs on afterwards (a paused one stays                       paused). `banger vm create NEW --from SNAPSHOT` restores it as a new VM."
    )]
    Snapshot {
        name: String,
        snapshot: Option<String>,
    },
    /// Remove a VM: stops it, frees its address, tap, disks and DNS name
    Rm { name: String },
    /// Change a stopped VM's resources or NAT
    Set {
        name: String,
        #[arg(long)]
        vcpus: Option<u32>,
        #[arg(long)]
        memory: Option<u32>,
        #[arg(long, value_parser = parse_size)]
        disk: Option<u64>,
        #[arg(long, overrides_with = "no_nat")]
        nat: bool,
        #[arg(long)]
        no_nat: bool,
    },
    /// Open a shell (or run CMD) in the guest over SSH
    Ssh {
        name: String,
        /// Command to run instead of a shell
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List the guest's listening ports
    Ports { name: String },
    /// CPU, memory, disk and network counters
    Stats { name: String },
    /// The warm pool: per image, the clones kept restored and paused
    /// for `vm create` (sizes are the `[pool]` config's)
    Pool,
    /// The serial console; the guest's control characters are shown
    /// escaped (`\x1b`), never sent to the terminal (`--json`: as written)
    Logs {
        name: String,
        /// Lines from the end
        #[arg(long, short = 'n', default_value_t = 200)]
        lines: u32,
        /// Keep printing new output
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

fn nat_flag(nat: bool, no_nat: bool) -> Option<bool> {
    match (nat, no_nat) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

/// `512M`, `8G`, `1T`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {s:?} (e.g. 512M, 8G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

pub fn run(args: &VmArgs, settings: &Settings) -> Result<Exit, CliError> {
    let req = match &args.command {
        VmCommand::Create {
            name,
            image,
            vcpus,
            memory,
            disk,
            nat,
            no_nat,
            vmm,
            no_start,
            wait,
            workspace,
            insecure,
            from,
        } => VmRequest::Create(CreateVm {
            name: name.clone(),
            image: image.as_deref().map(super::image::pull_reference),
            vcpus: *vcpus,
            memory_mib: *memory,
            disk_bytes: *disk,
            nat: nat_flag(*nat, *no_nat),
            vmm: vmm.map(|v| match v {
                VmmArg::Firecracker => VmmKind::Firecracker,
                VmmArg::Qemu => VmmKind::Qemu,
            }),
            start: !no_start,
            wait: *wait,
            workspace: workspace.as_deref().map(super::image::absolute),
            insecure: *insecure,
            from: from.clone(),
        }),
        VmCommand::Ls => VmRequest::List,
        VmCommand::Show { name } => VmRequest::Show { name: name.clone() },
        VmCommand::Start { name } => VmRequest::Start { name: name.clone() },
        VmCommand::Stop {
            name,
            timeout,
            save,
        } => VmRequest::Stop {
            name: name.clone(),
            timeout_secs: *timeout,
            save: *save,
        },
        VmCommand::Restart { name } => VmRequest::Restart { name: name.clone() },
        VmCommand::Kill { name } => VmRequest::Kill { name: name.clone() },
        VmCommand::Pause { name } => VmRequest::Pause { name: name.clone() },
        VmCommand::Resume { name } => VmRequest::Resume { name: name.clone() },
        VmCommand::Snapshot { name, snapshot } => VmRequest::Snapshot {
            name: name.clone(),
            snapshot: snapshot.clone(),
        },
        VmCommand::Rm { name } => VmRequest::Remove { name: name.clone() },
        VmCommand::Set {
            name,
            vcpus,
            memory,
            disk,
            nat,
            no_nat,
        } => VmRequest::Set(SetVm {
            name: name.clone(),
            vcpus: *vcpus,
            memory_mib: *memory,
            disk_bytes: *disk,
            nat: nat_flag(*nat, *no_nat),
        }),
        VmCommand::Ssh { name, .. } => VmRequest::Ssh { name: name.clone() },
        VmCommand::Ports { name } => VmRequest::Ports { name: name.clone() },
        VmCommand::Stats { name } => VmRequest::Stats { name: name.clone() },
        VmCommand::Pool => VmRequest::Pool,
        VmCommand::Logs { name, lines, .. } => VmRequest::Logs {
            name: name.clone(),
            lines: *lines,
        },
    };
    let mut client = super::connect(settings)?;
    let resp = match call_with_progress(&mut client, &Request::Vm(req))? {
        Response::Vm(r) => r,
        other => {
            return Err(client
                .unexpected("a VM result", response_name(&other))
                .into());
        }
    };
    if let (VmCommand::Ssh { command, .. }, VmResponse::Ssh(t)) = (&args.command, &resp)
        && !settings.json
    {
        check_ssh_target(t)?;
        let mut cmd = Cmd::new("ssh");
        if let Some(path) = shared_master(t, client.daemon_uid()) {
            cmd = cmd
                .args(["-o", "ControlMaster=auto", "-o"])
                .arg(format!("ControlPath={path}"))
                .arg("-o")
                .arg(format!("ControlPersist={SSH_MASTER_KEEP_SECS}"));
        }
        let cmd = cmd
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", t.known_hosts))
            .arg("-o")
            .arg(format!("HostKeyAlias={}", t.host_key_alias))
            .args(["-o", "LogLevel=ERROR", "-i"])
            .arg(&t.identity)
            // Options end here: nothing after is read as one.
            .arg("--")
            .arg(format!("{}@{}", t.user, t.ip))
            .args(command);
        let err = Runner.exec_replace(&cmd);
        return Err(CliError::Exec {
            program: "ssh".into(),
            source: err,
        });
    }
    if settings.json {
        // The payload itself, not the protocol's envelope.
        match &resp {
            VmResponse::Created(c) => output::json(c)?,
            VmResponse::List(v) => output::json(v)?,
            VmResponse::Vm(v) => output::json(v)?,
            VmResponse::Removed { name } => output::json(&serde_json::json!({ "removed": name }))?,
            VmResponse::Ssh(t) => output::json(t)?,
            VmResponse::Logs(l) => output::json(l)?,
            VmResponse::Ports(p) => output::json(p)?,
            VmResponse::Stats(s) => output::json(s)?,
            VmResponse::Snapshot(s) => output::json(s)?,
            VmResponse::Pool(p) => output::json(p)?,
        }
        return Ok(Exit::Ok);
    }
    match resp {
        VmResponse::Created(c) => output::stdout(
            format!(
                "{} {} ({}, {}) — operation {}\n",
                if c.from_pool {
                    "took a warm clone for"
                } else if c.vm.state == VmState::Running {
                    "created and started"
                } else {
                    "created"
                },
                c.vm.name,
                c.vm.ip.map(|i| i.to_string()).unwrap_or_default(),
                c.vm.dns_name,
                c.operation
            )
            .as_bytes(),
        )?,
        VmResponse::List(vms) => output::stdout(table(&vms).as_bytes())?,
        VmResponse::Vm(v) => output::stdout(show(&v).as_bytes())?,
        VmResponse::Removed { name } => output::stdout(format!("removed {name}\n").as_bytes())?,
        VmResponse::Ssh(t) => output::stdout(format!("{}@{}\n", t.user, t.ip).as_bytes())?,
        VmResponse::Logs(l) => {
            // The console is the guest's: escape its control bytes (the JSON
            // form carries the text as it is).
            let mut filter = output::ConsoleFilter::default();
            output::stdout(filter.push(l.text.as_bytes()).as_bytes())?;
            if let VmCommand::Logs { follow: true, .. } = &args.command {
                follow(&l.path, filter)?;
            } else {
                output::stdout(filter.finish().as_bytes())?;
            }
        }
        VmResponse::Ports(p) => output::stdout(ports_text(&p).as_bytes())?,
        VmResponse::Stats(s) => output::stdout(stats_text(&s).as_bytes())?,
        VmResponse::Pool(p) => output::stdout(pool_text(&p).as_bytes())?,
        VmResponse::Snapshot(s) => output::stdout(
            format!(
                "saved snapshot {}
{}",
                s.name,
                super::snapshot::show(&s)
            )
            .as_bytes(),
        )?,
    }
    Ok(Exit::Ok)
}

/// `vm stats` for a person: the counters now, then the rates over the
/// daemon's recent samples when there are any.
fn stats_text(s: &banger_proto::vm::VmStats) -> String {
    let opt = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or_else(|| "-".into(), f);
    let mut out = format!(
        "vm        {} ({})\ncpu       {}\nmemory    {}\nroot disk {}\nwork disk {}\nnet rx    {}\nnet tx    {}\n",
        s.name,
        if s.running { "running" } else { "not running" },
        opt(s.cpu_ms, &|ms| format!("{:.1}s", ms as f64 / 1000.0)),
        opt(s.rss_bytes, &human_bytes),
        opt(s.root_disk_allocated, &human_bytes),
        opt(s.work_disk_allocated, &human_bytes),
        opt(s.net_rx_bytes, &human_bytes),
        opt(s.net_tx_bytes, &human_bytes),
    );
    if let Some(r) = &s.rates {
        out.push_str(&format!(
            "over the last {}s ({} samples): cpu {}, net rx {}, net tx {}\n",
            r.window_ms / 1000,
            s.history.len() + 1,
            opt(r.cpu_ms_per_s, &|ms| format!(
                "{:.0}% of a CPU",
                ms as f64 / 10.0
            )),
            opt(r.net_rx_bytes_per_s, &|b| format!("{}/s", human_bytes(b))),
            opt(r.net_tx_bytes_per_s, &|b| format!("{}/s", human_bytes(b))),
        ));
    }
    out
}

/// `vm pool` for a person: one line per image.
fn pool_text(p: &[banger_proto::vm::PoolEntry]) -> String {
    if p.is_empty() {
        return "no warm pool: set `[pool] size` (or `[pool.images] NAME`) in the config\n".into();
    }
    let mut out = format!(
        "{:<16} {:<5} {:<6} {:<8} {}\n",
        "IMAGE", "SIZE", "READY", "FILLING", "SNAPSHOT"
    );
    for e in p {
        out.push_str(&format!(
            "{:<16} {:<5} {:<6} {:<8} {}\n",
            e.image,
            e.size,
            e.ready,
            e.filling,
            e.snapshot.as_deref().unwrap_or("-")
        ));
    }
    for e in p {
        if let Some(problem) = &e.problem {
            out.push_str(&format!("{}: {problem}\n", e.image));
        }
    }
    out
}

fn table(vms: &[VmInfo]) -> String {
    let mut out = format!(
        "{:<16} {:<9} {:<15} {:<12} {:<6} {:<6} {}\n",
        "NAME", "STATE", "IP", "IMAGE", "VCPUS", "MEM", "VMM"
    );
    for v in vms {
        out.push_str(&format!(
            "{:<16} {:<9} {:<15} {:<12} {:<6} {:<6} {}\n",
            v.name,
            v.state,
            v.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            v.image,
            v.vcpus,
            format!("{}M", v.memory_mib),
            v.vmm
        ));
    }
    out
}

fn show(v: &VmInfo) -> String {
    let mut out = format!(
        "name      {}\nid        {}\nstate     {}\n",
        v.name, v.id, v.state
    );
    if let Some(r) = &v.state_reason {
        out.push_str(&format!("reason    {r}\n"));
    }
    if v.saved {
        out.push_str("saved     yes (`vm start` resumes it)\n");
    }
    out.push_str(&format!(
        "image     {}\nvmm       {}\nvcpus     {}\nmemory    {} MiB\ndisk      {}\nnat       {}\nip        {}\nmac       {}\ndns       {}\ntap       {}\n",
        v.image,
        v.vmm,
        v.vcpus,
        v.memory_mib,
        human_bytes(v.disk_bytes),
        if v.nat { "yes" } else { "no" },
        v.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        v.mac.as_deref().unwrap_or("-"),
        v.dns_name,
        v.tap.as_deref().unwrap_or("-"),
    ));
    out
}

/// `vm logs -f`: print what the console gains, every 250 ms, until
/// interrupted. A console that is not there yet (`vm logs -f` right after
/// `vm create`) is waited for and then printed from its start; one that
/// shrank (emptied before a new boot) is read again from its start.
fn follow(path: &str, mut filter: output::ConsoleFilter) -> Result<(), CliError> {
    use std::io::{Read as _, Seek as _};
    let read_err = |source| CliError::ReadFile {
        path: path.into(),
        source,
    };
    let open = || match std::fs::File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(e)),
    };
    // What the daemon's answer printed is the file's tail up to now.
    let mut console = open()?;
    let mut pos = match &mut console {
        Some(f) => f.seek(std::io::SeekFrom::End(0)).map_err(read_err)?,
        None => 0,
    };
    let mut buf = Vec::new();
    loop {
        if console.is_none() {
            console = open()?;
        }
        if let Some(f) = &mut console {
            let len = f.metadata().map_err(read_err)?.len();
            if len < pos {
                pos = f.seek(std::io::SeekFrom::Start(0)).map_err(read_err)?;
            }
            buf.clear();
            f.read_to_end(&mut buf).map_err(read_err)?;
            pos += buf.len() as u64;
            if !buf.is_empty() {
                output::stdout(filter.push(&buf).as_bytes())?;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}

/// The daemon's `vm ssh` answer becomes ssh's argv, possibly under sudo: a
/// daemon (the owner, in system mode) must not be able to slip in an option
/// (`-oProxyCommand=…` as the user) or a second configuration line (a line
/// break inside an `-o` value). User names and the host key alias are
/// allow-listed; the two paths must be absolute, without control
/// characters.
fn check_ssh_target(t: &banger_proto::vm::SshTarget) -> Result<(), CliError> {
    let bad = |field, value: &str| {
        Err(CliError::UnsafeSshTarget {
            field,
            value: value.to_string(),
        })
    };
    let user_ok = t
        .user
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && t.user.len() <= 32
        && t.user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !user_ok {
        return bad("user", &t.user);
    }
    let alias_ok = t
        .host_key_alias
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && t.host_key_alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !alias_ok {
        return bad("host key alias", &t.host_key_alias);
    }
    for (field, path) in [("identity", &t.identity), ("known_hosts", &t.known_hosts)] {
        if !path.starts_with('/') || path.chars().any(|c| c.is_control()) {
            return bad(field, path);
        }
    }
    Ok(())
}

/// How long a master `vm ssh` opens outlives its last session (the
/// daemon's own masters keep the same time, `bangerd::ssh_masters`).
const SSH_MASTER_KEEP_SECS: u32 = 300;

/// The daemon's SSH master socket for this VM, when `vm ssh` may share it:
/// only when the daemon (the kernel's word for the socket's peer,
/// `daemon_uid`) runs as this process's own user — OpenSSH hands a mux
/// client's terminal to the master, so `sudo banger vm ssh` (root) must
/// never ride a master the owner's daemon names (review s11-2 F1, F2);
/// then only through a plain path (no `%` expansions, spaces or quotes ssh
/// would parse; no symlink in any component) in a directory of this user
/// closed to everyone else.
fn shared_master(t: &banger_proto::vm::SshTarget, daemon_uid: Option<u32>) -> Option<&str> {
    use std::os::unix::fs::MetadataExt as _;
    let me = rustix::process::geteuid().as_raw();
    if daemon_uid != Some(me) {
        return None;
    }
    let path = t.control_path.as_deref()?;
    let plain = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
        && !path.split('/').any(|c| c == "..");
    let dir = std::path::Path::new(path).parent()?;
    let no_links = dir
        .ancestors()
        .all(|a| std::fs::symlink_metadata(a).is_ok_and(|m| !m.file_type().is_symlink()));
    let own = std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o077 == 0);
    (plain && no_links && own).then_some(path)
}

/// `vm ports` as a table. Every field but the port comes from the guest
/// (its `ss` output): its control characters are shown escaped, never
/// sent to the terminal (`--json`: as the guest wrote them).
fn ports_text(p: &banger_proto::vm::VmPorts) -> String {
    let mut out = format!(
        "{:<5} {:<6} {:<22} {}\n",
        "PROTO", "PORT", "PROCESS", "ENDPOINT"
    );
    for x in &p.ports {
        out.push_str(&format!(
            "{:<5} {:<6} {:<22} {}\n",
            output::escape_controls(&x.proto),
            x.port,
            output::escape_controls(x.process.as_deref().unwrap_or("-")),
            output::escape_controls(&x.endpoint)
        ));
    }
    out
}

#[cfg(test)]
mod ports_tests {
    use banger_proto::vm::{GuestPort, VmPorts};

    /// Found by the `ss` fuzz target's author: a guest's process name
    /// reached the owner's terminal as it was, escapes included.
    #[test]
    fn a_guests_process_name_never_reaches_the_terminal_raw() {
        let p = VmPorts {
            name: "dev".into(),
            ports: vec![GuestPort {
                proto: "tcp".into(),
                address: "0.0.0.0".into(),
                port: 80,
                process: Some("evil\u{1b}]0;owned\u{7}\u{1b}[2J".into()),
                endpoint: "dev.vm:80".into(),
            }],
        };
        let text = super::ports_text(&p);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("evil"), "{text}");
    }
}

#[cfg(test)]
mod ssh_target_tests {
    use super::*;
    use banger_proto::vm::SshTarget;

    fn target() -> SshTarget {
        SshTarget {
            name: "dev".into(),
            ip: "172.30.0.2".parse().unwrap(),
            user: "banger".into(),
            identity: "/home/dev/.config/banger/ssh/id_ed25519".into(),
            known_hosts: "/var/lib/banger/ssh/known_hosts".into(),
            host_key_alias: "dev.vm".into(),
            control_path: None,
        }
    }

    /// The CLI shares the daemon's SSH master only in a directory of its
    /// own user closed to others, and only through a plain path.
    #[test]
    fn a_master_is_shared_only_in_the_callers_own_closed_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ssh");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let me = Some(rustix::process::geteuid().as_raw());
        let mut t = target();
        let path = dir.join("0123456789abcdef.42").display().to_string();
        t.control_path = Some(path.clone());
        assert_eq!(shared_master(&t, me), Some(path.as_str()));
        // A daemon of another user (or one whose uid is unknown): never
        // shared, whatever the path (`sudo banger vm ssh` against the
        // owner's daemon).
        let other = me.map(|u| u.wrapping_add(1));
        assert_eq!(shared_master(&t, other), None);
        assert_eq!(shared_master(&t, None), None);
        // Open to others: not shared.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(shared_master(&t, me), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A symlink in the directory itself or in any component above it
        // (review s11-2 F1: `l -> /` made `l/root` pass): not shared.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        t.control_path = Some(link.join("0123456789abcdef.42").display().to_string());
        assert_eq!(shared_master(&t, me), None);
        let up = tmp.path().join("up");
        std::os::unix::fs::symlink(tmp.path(), &up).unwrap();
        t.control_path = Some(up.join("ssh/0123456789abcdef.42").display().to_string());
        assert_eq!(shared_master(&t, me), None);
        // ssh would expand `%` and split on spaces: not shared.
        for odd in ["%h", "a b", "..", "x'y"] {
            t.control_path = Some(format!("{}/{odd}", dir.display()));
            assert_eq!(shared_master(&t, me), None, "{odd}");
        }
        t.control_path = None;
        assert_eq!(shared_master(&t, me), None);
    }

    /// Issue #13 finding 12: a daemon-supplied user name like
    /// `-oProxyCommand=…` became an ssh option under `sudo banger vm ssh`.
    #[test]
    fn a_daemon_cannot_smuggle_ssh_options() {
        assert!(check_ssh_target(&target()).is_ok());
        type Spoil = fn(&mut SshTarget);
        let cases: [(&str, Spoil); 7] = [
            ("user", |t| t.user = "-oProxyCommand=touch /tmp/x".into()),
            ("user", |t| t.user = "a b".into()),
            ("user", |t| t.user = String::new()),
            ("host key alias", |t| t.host_key_alias = "-x".into()),
            ("host key alias", |t| {
                t.host_key_alias = "dev.vm\nProxyCommand x".into()
            }),
            ("identity", |t| t.identity = "relative/key".into()),
            ("known_hosts", |t| {
                t.known_hosts = "/k\nProxyCommand=x".into()
            }),
        ];
        for (field, spoil) in cases {
            let mut t = target();
            spoil(&mut t);
            let e = check_ssh_target(&t).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
