//! The helper's socket server: one thread per connection, peer uid checked
//! before a single byte is read.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use banger_executor::image::ImageBuildConfig;
use banger_executor::{Executor, VmHostConfig};
use banger_host::net::RealNet;
use banger_host::peer::peer_cred;
use banger_host::probe::RealHost;
use banger_host::socket::{SocketPathError, bind_listener, remove_socket};
use banger_proto::frame::{FrameError, read_frame, write_frame, write_frame_with_fds};
use banger_proto::privops::{PRIV_PROTOCOL_VERSION, PrivReply, PrivRequest};
use banger_proto::{BANGER_VERSION, ErrorCode, RpcError};

/// Connections served at once; more are told to retry and closed. A
/// booting VM keeps one open (`wait_vm_ready`, up to 30 s at a time), so
/// this leaves room for that many boots beside everything else.
const MAX_CONNECTIONS: usize = 64;
/// How long a connected peer may stay silent before it is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Settings {
    pub socket: PathBuf,
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// The executor's journal; its directory is created 0700 if missing.
    pub journal: PathBuf,
    /// The owner daemon's state directory (VM disks, images, kernels).
    pub state_dir: PathBuf,
    /// The VMM binaries recorded in the install metadata (absolute; `None`:
    /// that VMM is not available to this install).
    pub qemu_bin: Option<PathBuf>,
    pub firecracker_bin: Option<PathBuf>,
    /// The install's jail uids, checked to own nothing before serving.
    pub jail: banger_proto::install::InstallJail,
    /// `BuildDebianImage`: the installed `banger-imagebuild` and root's
    /// image cache.
    pub image_builds: ImageBuildConfig,
    /// The bridge recorded in the install metadata: the only one the owner
    /// gets.
    pub bridge: banger_proto::net::BridgeSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("preparing helper socket")]
    Socket(#[source] SocketPathError),
    #[error("setting group of {path} to gid {gid}")]
    Chown {
        path: PathBuf,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("installing signal handlers")]
    Signals(#[source] io::Error),
    #[error(
        "the install's jail uids {}:{} are in use; reinstall with another --jail-uids",
        jail.uid_base,
        jail.count
    )]
    JailInUse {
        jail: banger_proto::install::InstallJail,
        #[source]
        source: banger_host::jail::RangeInUse,
    },
    #[error("killing what the jail uids left running")]
    JailSweep(#[source] io::Error),
    #[error("reading the journaled VMMs the jail sweep spares")]
    JailSpare(#[source] banger_executor::JournalError),
    #[error("the install's bridge")]
    Bridge(#[source] banger_executor::ExecError),
    #[error("the per-VM cgroups")]
    VmCgroups(#[source] banger_executor::VmCgroupError),
    #[error("creating the helper's state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub fn serve(settings: Settings) -> Result<(), ServeError> {
    if let Some(dir) = settings.journal.parent()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ServeError::StateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    // Handlers first: once the socket exists, whoever started us may stop
    // us, and a SIGTERM before they were in place would kill the helper with
    // the default action and leave the socket behind (seen once in CI).
    spawn_signal_thread(&settings.socket)?;
    // The socket is root:owner-gid 0660: the owner's group can connect, and
    // SO_PEERCRED then narrows that to the owner's uid alone.
    banger_host::jail::check_unused(settings.jail.uid_base, settings.jail.count, false).map_err(
        |source| ServeError::JailInUse {
            jail: settings.jail,
            source,
        },
    )?;
    // A jailed tool that cleared its parent-death signal outlives a
    // helper that crashed: nothing may run with the jail uids now.
    // Except the jailed VMMs the journal holds: they are re-adopted.
    let spare = banger_executor::jailed_vmms(&settings.journal).map_err(ServeError::JailSpare)?;
    let killed = banger_host::jail::kill_range(settings.jail.uid_base, settings.jail.count, &spare)
        .map_err(ServeError::JailSweep)?;
    if !killed.is_empty() {
        tracing::warn!(?killed, "killed processes left running with the jail uids");
    }
    let listener = bind_listener(&settings.socket, 0, 0o660).map_err(ServeError::Socket)?;
    std::os::unix::fs::chown(&settings.socket, Some(0), Some(settings.owner_gid)).map_err(
        |source| ServeError::Chown {
            path: settings.socket.clone(),
            gid: settings.owner_gid,
            source,
        },
    )?;
    debug_assert_eq!(
        std::fs::metadata(&settings.socket)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0),
        0o660
    );

    // VMM binaries and the bridge come from the install metadata (root's
    // choice at `banger system install`), never from the owner daemon or
    // this process's PATH.
    let exec = Executor::new(
        Arc::new(RealHost::new()),
        Arc::new(RealNet::new()),
        settings.journal.clone(),
    )
    .with_vms(VmHostConfig {
        state_dir: settings.state_dir.clone(),
        owner: (settings.owner_uid, settings.owner_gid),
        qemu_binary: settings.qemu_bin.clone(),
        firecracker_binary: settings.firecracker_bin.clone(),
        jail: settings.jail,
    })
    .with_image_builds(settings.image_builds.clone())
    .with_bridge(settings.bridge.clone())
    .map_err(ServeError::Bridge)?;
    // Per-VM cgroups: under the helper unit, the holder unit's cgroup
    // (`banger-vms.service`, beside this unit's, which stays a leaf).
    // Without cgroup2, VMMs keep their rlimits only; in the helper unit an
    // unusable holder is a start error (`Restart=on-failure` tries again).
    let exec = match banger_executor::VmCgroups::delegated(
        &settings.journal,
        banger_executor::VmCgroupHolder::Helper,
    ) {
        Ok(cgroups) => {
            match cgroups.limits_unavailable() {
                Some(why) => {
                    tracing::warn!(cgroup = %cgroups.path().display(), "per-VM cgroups without limits: {why}")
                }
                None => {
                    tracing::info!(cgroup = %cgroups.path().display(), "per-VM cgroups with limits")
                }
            }
            exec.with_vm_cgroups(cgroups)
        }
        Err(e) if e.is_holder() => return Err(ServeError::VmCgroups(e)),
        Err(e) => {
            tracing::warn!(error = %banger_proto::error::chain(&e).join(": "), "no per-VM cgroups: VMMs are bounded by their rlimits only");
            exec
        }
    };
    let active = Arc::new(AtomicUsize::new(0));
    tracing::info!(
        socket = %settings.socket.display(),
        owner_uid = settings.owner_uid,
        qemu = ?settings.qemu_bin,
        firecracker = ?settings.firecracker_bin,
        image_builds = ?settings.image_builds,
        version = BANGER_VERSION,
        "bangerd-root serving"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    accept_loop(&listener, settings.owner_uid, &exec, &active);
    Ok(())
}

fn spawn_signal_thread(socket: &Path) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(ServeError::Signals)?;
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "shutting down");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            if let Err(e) = remove_socket(&socket) {
                tracing::warn!(error = %e, "removing socket");
            }
            std::process::exit(0);
        }
    });
    Ok(())
}

fn accept_loop(
    listener: &UnixListener,
    owner_uid: u32,
    exec: &Executor,
    active: &Arc<AtomicUsize>,
) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let mut s = stream;
            let _ = write_frame(
                &mut s,
                &PrivReply::Error(RpcError::new(
                    ErrorCode::Unavailable,
                    format!("helper is serving {MAX_CONNECTIONS} connections; retry"),
                )),
            );
            continue;
        }
        let exec = exec.clone();
        let active = Arc::clone(active);
        std::thread::spawn(move || {
            handle(stream, owner_uid, &exec);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Serve one connection. The peer's uid is checked before anything is read.
fn handle(mut stream: UnixStream, owner_uid: u32, exec: &Executor) {
    let cred = match peer_cred(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading peer credentials; dropping connection");
            return;
        }
    };
    if cred.uid != owner_uid {
        tracing::warn!(
            uid = cred.uid,
            pid = cred.pid,
            "refused peer: not the installed owner"
        );
        let _ = write_frame(
            &mut stream,
            &PrivReply::Error(RpcError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "uid {} may not use the banger root helper; only the installed owner (uid {owner_uid}) may",
                    cred.uid
                ),
            )),
        );
        return;
    }
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let span = tracing::info_span!("conn", pid = cred.pid);
    let _guard = span.enter();

    // Handshake.
    match read_frame::<_, PrivRequest>(&mut stream) {
        Ok(PrivRequest::Hello { protocol }) if protocol == PRIV_PROTOCOL_VERSION => {
            let hello = PrivReply::Hello {
                protocol: PRIV_PROTOCOL_VERSION,
                helper_version: BANGER_VERSION.to_string(),
            };
            if write_frame(&mut stream, &hello).is_err() {
                return;
            }
        }
        Ok(PrivRequest::Hello { protocol }) => {
            reply_error(
                &mut stream,
                RpcError::new(
                    ErrorCode::ProtocolMismatch,
                    format!(
                        "client speaks privileged protocol {protocol}, helper speaks {PRIV_PROTOCOL_VERSION}"
                    ),
                ),
            );
            return;
        }
        Ok(PrivRequest::Op(_)) => {
            reply_error(
                &mut stream,
                RpcError::new(ErrorCode::BadRequest, "expected hello before any operation"),
            );
            return;
        }
        Err(e) => {
            frame_failure(&mut stream, e);
            return;
        }
    }

    loop {
        match read_frame::<_, PrivRequest>(&mut stream) {
            Ok(PrivRequest::Op(op)) => {
                let name = op.name();
                let (reply, fds) = match exec.execute(op) {
                    Ok(executed) => (PrivReply::Ok(executed.outcome), executed.fds),
                    Err(e) => (PrivReply::Error(e.to_rpc()), Vec::new()),
                };
                // Descriptors (OpenDnsSockets, BuildDebianImage) ride on the reply's first
                // sendmsg as SCM_RIGHTS; ours are closed once sent.
                let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
                let sent = write_frame_with_fds(&mut stream, &reply, &borrowed);
                drop(borrowed);
                drop(fds);
                exit_if_the_spawner_is_dead(name);
                if let Err(e) = sent {
                    tracing::warn!(
                        op = name,
                        error = %banger_proto::error::chain(&e).join(": "),
                        "sending reply failed; closing"
                    );
                    return;
                }
            }
            Ok(PrivRequest::Hello { .. }) => {
                reply_error(
                    &mut stream,
                    RpcError::new(ErrorCode::BadRequest, "hello sent twice"),
                );
                return;
            }
            Err(e) => {
                frame_failure(&mut stream, e);
                return;
            }
        }
    }
}

/// Once the jail spawner is dead (a failed exchange: it was killed with
/// whatever it cloned late) every jailed call fails until a new helper
/// starts one, so this helper exits with a failure status and the unit's
/// `Restart=on-failure` starts a new one; `KillMode=process` keeps the
/// VMs, which the next helper re-adopts, and the disk grants of
/// operations cut short are restored from the journal at its start.
/// Checked after the reply that carried the failure went out, so the
/// owner sees why and the failed operation's own clean-up (the grant
/// revoked, the journal updated) has run; exiting from inside the spawner
/// would skip both. Only on the thread whose exchange failed, after its
/// `Spawner::end` killed and reaped the spawner and the request's jail-uid
/// processes (`spawner::ended_here`): another connection's reply ended
/// the helper while that was still running, and a late clone not yet of
/// the jail uid survived (third read of F1, finding a).
fn exit_if_the_spawner_is_dead(op: &str) {
    if banger_host::jail::spawner::ended_here() {
        tracing::error!(
            op,
            "the jail spawner is dead after a failed exchange; exiting for the service manager to restart the helper"
        );
        std::process::exit(SPAWNER_DEAD);
    }
}

/// The helper's exit status once its jail spawner is dead.
const SPAWNER_DEAD: i32 = 3;

fn frame_failure(stream: &mut UnixStream, e: FrameError) {
    if e.is_closed() {
        return;
    }
    let code = match e {
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::BadRequest,
    };
    tracing::warn!(error = %banger_proto::error::chain(&e).join(": "), "bad frame; closing");
    reply_error(stream, RpcError::from_error(code, &e));
}

fn reply_error(stream: &mut UnixStream, err: RpcError) {
    let _ = write_frame(stream, &PrivReply::Error(err));
}
