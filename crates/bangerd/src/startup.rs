//! Daemon startup and shutdown: mode checks, layout, store, socket, signals,
//! systemd readiness. This is the binary's edge, so it uses `anyhow`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use banger_executor::{Executor, VmHostConfig};
use banger_host::net::RealNet;
use banger_host::probe::RealHost;
use banger_host::socket::{bind_listener, remove_socket};
use banger_proto::BANGER_VERSION;
use banger_proto::install::InstallMeta;
use banger_proto::rpc::{DaemonMode, PROTOCOL_VERSION, ServerHello};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, ProcessEnv};
use crate::daemon::Daemon;
use crate::layout::Layout;
use crate::network::HostNetwork;
use crate::privileged::{HelperClient, InProcess, PrivilegedOps};
use crate::server::{self, PeerPolicy};
use crate::store::Store;

/// Resolved command line of `bangerd`.
#[derive(Debug, Clone)]
pub struct Options {
    pub dev: bool,
    pub state_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub install_file: PathBuf,
}

/// Log to stderr through `tracing`; `BANGER_LOG` takes an env-filter
/// directive (default `info`). Under systemd, stderr goes to the journal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // A log line that cannot be written (nobody reads stderr any more)
        // is dropped. The default reports it with `eprintln!`, which panics
        // on that same closed stderr and kills the logging thread — the
        // signal thread included, after which SIGTERM no longer stops us.
        .log_internal_errors(false)
        .init();
}

/// Dev mode's jail uids: banger's default range (or `BANGER_DEV_JAIL_UIDS`,
/// `BASE:COUNT`, for tests running several dev daemons at once), refused
/// while an account or a delegated sub-id uses one of its ids. Whatever
/// still runs with one of them is killed: a tool that outlived the daemon
/// before this one (docs/jail.md).
fn dev_jail(journal: &std::path::Path) -> anyhow::Result<banger_proto::install::InstallJail> {
    let jail = match std::env::var("BANGER_DEV_JAIL_UIDS") {
        Ok(text) => {
            banger_proto::install::InstallJail::parse(&text).context("BANGER_DEV_JAIL_UIDS")?
        }
        Err(_) => banger_proto::install::InstallJail::default(),
    };
    banger_host::jail::check_unused(jail.uid_base, jail.count, false).with_context(|| {
        format!(
            "banger's jail uids {}:{} are in use on this host",
            jail.uid_base, jail.count
        )
    })?;
    // Jailed VMMs this daemon's executor journaled are re-adopted, not
    // killed.
    let spare = banger_executor::jailed_vmms(journal)
        .context("reading the journaled VMMs the jail sweep spares")?;
    let killed = banger_host::jail::kill_range(jail.uid_base, jail.count, &spare)
        .context("killing what the jail uids left running")?;
    if !killed.is_empty() {
        tracing::warn!(?killed, "killed processes left running with the jail uids");
    }
    Ok(jail)
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let started = std::time::SystemTime::now();
    let euid = rustix::process::geteuid().as_raw();
    let egid = rustix::process::getegid().as_raw();
    let mut config = Config::load(opts.config.as_deref(), &ProcessEnv)?.0;
    let (mode, layout, policy, privileged): (_, _, _, Arc<dyn PrivilegedOps>) = if opts.dev {
        if euid != 0 {
            bail!(
                "bangerd --dev must run as root: it performs privileged host operations in-process \
                 (uid {euid}); for an unprivileged daemon, install the service with `sudo banger system install`"
            );
        }
        let layout = Layout::dev(opts.state_dir.clone(), opts.runtime_dir.clone())
            .context("resolving dev layout")?;
        let journal = layout.state_dir.join("root-journal.json");
        // Dev mode: banger's default range, checked to own nothing.
        let jail = dev_jail(&journal)?;
        let exec = Executor::new(
            Arc::new(RealHost::new()),
            Arc::new(RealNet::new()),
            journal.clone(),
        )
        .with_vms(VmHostConfig {
            state_dir: layout.state_dir.clone(),
            owner: (0, 0),
            qemu_binary: config.vmm.qemu_bin.clone(),
            firecracker_binary: config.vmm.firecracker_bin.clone(),
            jail,
        })
        // The daemon is root here: its configuration is root's choice of
        // bridge, held to as the helper holds to the install's.
        .with_bridge(banger_proto::net::BridgeSpec::for_subnet(
            &config.network.bridge,
            config.network.subnet,
        ))
        .context("the configured bridge (network.bridge, network.subnet)")?;
        // Per-VM cgroups beneath this daemon's own (`banger-<hash of the
        // journal's path>`), where it can make one; else VMMs keep their
        // rlimits only.
        let exec = match banger_executor::VmCgroups::delegated(
            &journal,
            banger_executor::VmCgroupHolder::Dev,
        ) {
            Ok(cgroups) => {
                if let Some(why) = cgroups.limits_unavailable() {
                    tracing::info!(cgroup = %cgroups.path().display(), "per-VM cgroups without limits: {why}");
                }
                exec.with_vm_cgroups(cgroups)
            }
            Err(e) => {
                tracing::info!(error = %banger_proto::error::chain(&e).join(": "), "no per-VM cgroups: VMMs are bounded by their rlimits only");
                exec
            }
        };
        (
            DaemonMode::Dev,
            layout,
            PeerPolicy::RootOnly,
            Arc::new(InProcess::new(exec)),
        )
    } else {
        if euid == 0 {
            bail!(
                "bangerd must not run as root in system mode; it runs as the owner user \
                 (bangerd.service), or use `bangerd --dev` for development"
            );
        }
        let meta = InstallMeta::load(&opts.install_file)
            .context("system mode needs install metadata; run `sudo banger system install`")?;
        if meta.owner.uid != euid {
            bail!(
                "bangerd runs as uid {euid}, but {} names {} (uid {}) as the owner",
                opts.install_file.display(),
                meta.owner.name,
                meta.owner.uid
            );
        }
        // The helper launches the VMM binaries the install recorded; check
        // and report those, not the owner's `[vmm]`.
        if config.vmm != Config::default().vmm {
            tracing::warn!(
                "the owner configuration's [vmm] is not used in system mode; the VMM binaries are the ones recorded in {}",
                opts.install_file.display()
            );
        }
        config.vmm = crate::config::VmmConfig::from_install(&meta.vmm);
        // Likewise the bridge and subnet: root chose them at install, and
        // the helper sets up that bridge and no other.
        let defaults = Config::default().network;
        if (config.network.bridge.as_str(), config.network.subnet)
            != (defaults.bridge.as_str(), defaults.subnet)
            && (config.network.bridge.as_str(), config.network.subnet)
                != (meta.network.bridge.as_str(), meta.network.subnet)
        {
            tracing::warn!(
                "the owner configuration's network.bridge and network.subnet are not used in system mode; \
                 the bridge is {} with subnet {}, as recorded in {} (`banger system install --bridge/--subnet`)",
                meta.network.bridge,
                meta.network.subnet,
                opts.install_file.display()
            );
        }
        config.network.bridge = meta.network.bridge.clone();
        config.network.subnet = meta.network.subnet;
        let layout = Layout::system(&meta);
        let root_socket = meta.paths.root_socket.clone();
        (
            DaemonMode::System,
            layout,
            PeerPolicy::OwnerAndRoot { owner: euid },
            Arc::new(HelperClient::new(root_socket)),
        )
    };

    // banger's client key is owner material (docs/vm.md, "What a VM
    // holds"): beside the owner's config, unless the owner has no home
    // directory (then a unit's tmpfs home would lose it) and it stays in
    // state.
    let home_exists = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .is_some_and(|h| h.is_absolute() && h.is_dir());
    let layout = layout.with_owner_config(
        home_exists
            .then(|| crate::config::default_path(&crate::config::ProcessEnv))
            .flatten()
            .as_deref(),
    );
    layout
        .ensure(euid, egid)
        .context("preparing state and runtime directories")?;
    let store = Arc::new(Store::open(&layout.store_path)?);
    // Taps belong to the uid that runs the VMMs: root in dev mode, the
    // owner in system mode.
    let network = Arc::new(HostNetwork::new(
        config.network.clone(),
        euid,
        Arc::clone(&privileged),
        Arc::clone(&store),
        layout.clone(),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bangerd")
        .build()
        .context("starting the async runtime")?;
    // Handlers before the socket exists: whoever sees the socket may stop
    // us, and a SIGTERM before they were in place would end the daemon
    // with the default action and leave the socket behind (the helper had
    // this race; seen in CI).
    let (mut term, mut int) = {
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        )
    };
    let std_listener = bind_listener(&layout.socket, euid, 0o600)?;
    std_listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;

    let socket = layout.socket.clone();
    let daemon = Arc::new(Daemon::new(
        mode, layout, config, store, privileged, network,
    ));
    let hello = ServerHello {
        protocol: PROTOCOL_VERSION,
        daemon_version: BANGER_VERSION.to_string(),
        mode,
    };

    let log_socket = socket.clone();
    let result = rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .context("registering the listener")?;
        daemon.images().reconcile_at_startup(started).await;
        daemon.reconcile_network().await;
        daemon.start_dns().await;
        daemon.vms().reconcile().await;
        let tickers = daemon.vms().spawn_tickers();
        let pool = daemon.vms().spawn_pool();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let daemon_for_stop = Arc::clone(&daemon);
        let serving = tokio::spawn(server::serve(listener, policy, hello, daemon, stop_rx));
        tracing::info!(socket = %log_socket.display(), %mode, version = BANGER_VERSION, "bangerd ready");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = sig, "shutting down");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
        serving.await.context("server task panicked")?;
        tickers.abort();
        pool.abort();
        daemon_for_stop.close_ssh_masters().await;
        daemon_for_stop.stop_dns().await;
        anyhow::Ok(())
    });
    if let Err(e) = remove_socket(&socket) {
        tracing::warn!(error = %e, socket = %socket.display(), "removing socket");
    }
    tracing::info!("bangerd stopped");
    result
}
