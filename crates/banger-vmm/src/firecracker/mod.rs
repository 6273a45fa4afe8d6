//! Firecracker driver: spawn `firecracker`, configure it over its HTTP API
//! (Unix socket), start the guest, stop it.
//!
//! Targets the API of Firecracker v1.16.1
//! (`third_party/firecracker/firecracker-v1.16.1.yaml`); every request body is
//! validated against that schema by the tests, against a recording fake
//! (`banger-fake-firecracker`). A real binary is exercised by the separate
//! `firecracker_real` test (the shared v1.16.1 build, or `BANGER_FIRECRACKER=...`).
//!
//! What the driver expects from the [`LaunchSpec`]:
//! * `kernel` is an **uncompressed ELF `vmlinux`** (x86_64) — Firecracker
//!   does not boot a `bzImage` — built with virtio-mmio, virtio-blk,
//!   virtio-net and vsock available to the guest before root is mounted
//!   (built in, or in `initrd`).
//! * `cmdline` is complete; Firecracker appends nothing but the virtio-mmio
//!   device list. [`RECOMMENDED_BOOT_ARGS`] are what it needs: the serial
//!   console on `ttyS0` (which is Firecracker's stdout, appended to
//!   `serial_log`), and `reboot=k` so a guest reboot — and therefore
//!   `SendCtrlAltDel` — ends the Firecracker process.
//! * `drives[0]` is the root device, the rest (the work disk) follow in
//!   order; the network interface is `eth0` on `tap` with `mac`; the vsock
//!   device has `vsock_cid` and its host side at `vsock_socket()`.
//! * `run_dir` exists and is writable by `run_as` (Firecracker creates its
//!   API socket there after dropping privileges).
//!
//! The launch ([`FirecrackerDriver::launch_jailed`], what the executor
//! uses): Firecracker in its jail (`banger_host::jail`, docs/jail.md) as
//! the VM's slot uid, every file a descriptor root opened
//! ([`FirecrackerFiles`]): `run/` bound at `/run`, drives bound at
//! `/drive-<id>`, kernel and initrd copied in, `/dev/kvm` and
//! `/dev/net/tun` bound, a network namespace of its own into which the
//! caller's [`JailTap`] moves the tap for `PUT /network-interfaces` and
//! out of which it moves it back right after ([`jail_tap`]), the VM's
//! cgroup joined when given; the configuration names the jail's paths
//! ([`paths::Paths::jailed`]). The unjailed `FirecrackerDriver::launch`
//! (host paths, `Paths::host`, `validate_spec`) is test support only.
//!
//! Launch order: check the binary, validate the spec, prepare `run_dir`
//! (stale sockets, the log file — all through a descriptor of the
//! directory, see [`crate::dir`]), spawn
//! `firecracker --api-sock <run_dir>/firecracker.sock --id <vm_id>` through
//! [`banger_host::runner::Runner::spawn`], wait for the API socket, send
//! [`config_plan`] (logger, machine config, boot source, drives,
//! network interface, vsock, `InstanceStart`; every connection to the
//! socket checked to be served by the spawned process). Any failure kills the process
//! through its pidfd before the error is returned, so a failed launch leaves
//! nothing running. Readiness is separate: see [`vsock`].

mod api;
mod jail;
use jail::slot_run_dir;
mod jail_tap;
mod models;
pub mod paths;
mod running;
pub mod snapshot;
mod spec;
pub mod vsock;

use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, RunError, Runner, SpawnOptions, Spawned};

pub use api::{ApiClient, ApiResponse, DEFAULT_REQUEST_TIMEOUT};
pub use jail_tap::JailTap;
pub use models::{
    ActionType, ApiRequest, BootSource, Drive, IFACE_ID, InstanceActionInfo, InstanceInfo,
    InstanceState, LogLevel, Logger, MachineConfiguration, NetworkInterface, Vm, VmRunState, Vsock,
    config_plan, restore_plan, snapshot_create,
};
use paths::Paths;
pub use running::Start;
#[cfg(any(test, feature = "test-support"))]
pub use spec::validate_spec;
pub use spec::{MAX_CMDLINE, MAX_VCPUS, log_path, validate_jailed};
#[cfg(any(test, feature = "test-support"))]
pub use vsock::wait_ready_vsock;
pub use vsock::{READY_MARKER, READY_PORT, ReadyListener};

use crate::dir::{OwnerDir, Peer, tail_lines};
use crate::{API_SOCKET, LaunchSpec, VSOCK_SOCKET, VmmError};

pub(crate) const VMM: &str = "firecracker";

/// Kernel arguments a Firecracker guest needs besides `root=` and banger's
/// own: serial console on Firecracker's stdout, reboot through the keyboard
/// controller (so `SendCtrlAltDel` ends the VMM), no reboot delay on panic.
pub const RECOMMENDED_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1";

/// Default time the process gets to open its API socket.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of output quoted in start-up errors.
const TAIL_LINES: usize = 15;

/// Address space a jailed Firecracker may map besides guest memory
/// (measured: `VmPeak` about 205 MiB over a 256 MiB guest with 2 vCPUs).
pub const MEMORY_OVERHEAD: u64 = 512 << 20;
/// `RLIMIT_NPROC` of a jailed Firecracker besides one per vCPU: the kernel
/// counts its threads (main, `fc_api`, `kvm-nx-lpage-recovery`, ...).
pub const THREADS: u32 = 32;

/// The descriptor number drive 0's locked descriptor is passed at
/// ([`FirecrackerFiles::drives`]); drive `i`'s at `DRIVE_LOCKS + i`.
pub const DRIVE_LOCKS: i32 = 3;

/// Everything a jailed Firecracker gets, each as a descriptor root opened
/// and checked: it resolves no host path of its own.
#[derive(Debug)]
pub struct FirecrackerFiles {
    /// Copied into the jail's root (`/kernel`, `/initrd`).
    pub kernel: File,
    pub initrd: Option<File>,
    /// One per `LaunchSpec::drives`, in order, opened as the drive is used
    /// (read-write unless read-only): bound at `/drive-<id>`, writable
    /// only when the drive is. Firecracker opens that path at `PUT
    /// /drives` as the slot uid, so the caller grants the uid access to
    /// the inode for the launch. Each is also passed to Firecracker at
    /// [`DRIVE_LOCKS`]` + i`, unused: the caller's `flock` on it (one VMM
    /// per disk) lasts as long as the open file description, so for as
    /// long as this Firecracker lives.
    pub drives: Vec<OwnedFd>,
    /// `/dev/net/tun`, opened `O_PATH|O_NOFOLLOW`: bound at
    /// `/dev/net/tun`, where Firecracker attaches `LaunchSpec::tap` by name
    /// in its own network namespace, while the tap is there ([`JailTap`];
    /// the tap's tun owner must be the slot uid).
    pub tun: OwnedFd,
    /// `/dev/kvm`, opened `O_PATH|O_NOFOLLOW`: bound at `/dev/kvm` (the
    /// slot uid has no groups: the node must be world read-write).
    pub kvm: OwnedFd,
    /// The serial log (the guest's console), root's descriptor: read for
    /// error tails, emptied when over [`crate::SERIAL_LOG_MAX`].
    /// Firecracker's stdout and stderr are a write-only appending reopen
    /// of its inode.
    pub serial: File,
    /// The VM's `run/`, the slot uid's (0700): bound read-write at `/run`,
    /// where Firecracker binds its API and vsock sockets; root reaches
    /// them only through this descriptor.
    pub run: crate::dir::OwnerDir,
    /// The VM's cgroup, opened by root: Firecracker joins it from its jail
    /// (`Jail::cgroup`), as QEMU does. `None`: no cgroup.
    pub cgroup: Option<crate::CgroupFds>,
    /// A restore's snapshot files, bound read-only in the jail: the launch
    /// loads them instead of booting ([`snapshot`]). `None`: a boot.
    pub restore: Option<snapshot::RestoreFiles>,
}

/// `RLIMIT_AS`/`RLIMIT_DATA` of a jailed Firecracker for `spec`, and its
/// cgroup's `memory.max`: guest memory plus [`MEMORY_OVERHEAD`] (the rule
/// the jail's limits use).
pub fn memory_limit(spec: &LaunchSpec) -> u64 {
    crate::memory_limit(spec, MEMORY_OVERHEAD)
}

/// `RLIMIT_NPROC` of a jailed Firecracker for `spec`, and its cgroup's
/// `pids.max`: [`THREADS`] plus one per vCPU.
pub fn process_limit(spec: &LaunchSpec) -> u32 {
    crate::process_limit(spec, THREADS)
}

/// Launches Firecracker VMs from one binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerDriver {
    /// The `firecracker` executable (configured; never looked up on PATH).
    pub binary: PathBuf,
    /// How long a new process gets to open its API socket.
    pub api_timeout: Duration,
    /// How long Firecracker gets to answer one API request.
    pub request_timeout: Duration,
}

impl FirecrackerDriver {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        FirecrackerDriver {
            binary: binary.into(),
            api_timeout: DEFAULT_API_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Start a VM: see the module docs for the order. On error nothing is
    /// left running (the process, if it started, is killed and reaped).
    ///
    /// Unjailed, as `spec.run_as`, naming the spec's host paths
    /// ([`paths::Paths::host`]). Opens `run_dir` and the serial log's
    /// directory itself, refusing any symlink on the way. Test support
    /// only: the executor launches Firecracker jailed
    /// ([`FirecrackerDriver::launch_jailed`]).
    #[cfg(any(test, feature = "test-support"))]
    pub fn launch(&self, spec: &LaunchSpec) -> Result<FirecrackerVm, VmmError> {
        self.check(spec)?;
        let run = OwnerDir::open(&spec.run_dir, "run directory")?;
        let (dir, name) = split(&spec.serial_log)?;
        let serial =
            OwnerDir::open(dir, "serial log's directory")?.open_append(name, 0o640, spec.run_as)?;
        self.start(spec, run, serial)
    }

    /// Start a VM jailed (module docs): as `spec.run_as` (the VM's slot
    /// ids), every file from `files`, the configuration naming the jail's
    /// paths, in a network namespace of its own into which `tap` moves
    /// the VM's tap for `PUT /network-interfaces` only ([`JailTap`]). On
    /// error nothing is left running, and the tap is back in the caller's
    /// namespace or (when moving it back failed) deleted with the jail's.
    pub fn launch_jailed(
        &self,
        spec: &LaunchSpec,
        files: FirecrackerFiles,
        tap: &mut dyn JailTap,
    ) -> Result<FirecrackerVm, VmmError> {
        self.check_binary()?;
        validate_jailed(spec)?;
        let _span = tracing::info_span!("firecracker", vm = %spec.vm_id, jailed = true).entered();
        let jail = self.jail(spec, &files)?;
        slot_run_dir(spec, &files.run)?;
        let log = spec::prepare_run_dir(&files.run, spec)?;
        let paths = Paths::jailed(spec);
        let cmd = Cmd::new(&self.binary)
            .arg("--api-sock")
            .arg(&paths.api_socket)
            .arg("--id")
            .arg(&spec.vm_id)
            .jail(jail);
        let restoring = files.restore.is_some();
        let FirecrackerFiles { run, serial, .. } = files;
        self.spawn_and_boot(
            spec,
            cmd,
            None,
            Launched {
                run,
                serial,
                log,
                restoring,
            },
            &paths,
            Some(tap),
        )
    }

    #[cfg(any(test, feature = "test-support"))]
    fn check(&self, spec: &LaunchSpec) -> Result<(), VmmError> {
        self.check_binary()?;
        validate_spec(spec)
    }

    fn check_binary(&self) -> Result<(), VmmError> {
        // Absolute only: a bare name would be looked up on PATH (or resolved
        // against the working directory) instead of being the configured file.
        if !self.binary.is_absolute() || !self.binary.is_file() {
            return Err(VmmError::BinaryMissing {
                vmm: VMM,
                path: self.binary.display().to_string(),
            });
        }
        Ok(())
    }

    /// The unjailed launch ([`FirecrackerDriver::launch`]), as
    /// `spec.run_as`, naming host paths: test support only (the executor
    /// launches Firecracker jailed).
    #[cfg(any(test, feature = "test-support"))]
    fn start(
        &self,
        spec: &LaunchSpec,
        run: OwnerDir,
        serial: File,
    ) -> Result<FirecrackerVm, VmmError> {
        let _span = tracing::info_span!("firecracker", vm = %spec.vm_id).entered();
        let log = spec::prepare_run_dir(&run, spec)?;
        let paths = Paths::host(spec);
        let cmd = Cmd::new(&self.binary)
            .arg("--api-sock")
            .arg(&paths.api_socket)
            .arg("--id")
            .arg(&spec.vm_id);
        self.spawn_and_boot(
            spec,
            cmd,
            spec.run_as,
            Launched {
                run,
                serial,
                log,
                restoring: false,
            },
            &paths,
            None,
        )
    }

    /// Spawn `cmd` (as `run_as` when it has no jail), connect to its API
    /// socket in `launched.run` — served by that very process, as
    /// `spec.vmm_uid()` — and send the configuration plan naming `paths`,
    /// with `tap` moving the tap in and out of the jail's network
    /// namespace around `PUT /network-interfaces` when given. On error the
    /// process is killed.
    fn spawn_and_boot(
        &self,
        spec: &LaunchSpec,
        cmd: Cmd,
        run_as: Option<(u32, u32)>,
        launched: Launched,
        paths: &Paths,
        tap: Option<&mut dyn JailTap>,
    ) -> Result<FirecrackerVm, VmmError> {
        let Launched {
            run,
            serial,
            log,
            restoring,
        } = launched;
        crate::bound_serial_log(VMM, &serial)?;
        // Firecracker's own descriptor of the log: write-only and
        // appending (root's, `serial`, also reads error tails), the inode
        // root checked, reopened through its descriptor.
        let output = crate::dir::reopen(
            serial.as_fd(),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::APPEND,
        )
        .map(File::from)
        .map_err(|e| VmmError::Io {
            what: format!("reopening {} to append", spec.serial_log.display()),
            source: e.into(),
        })?;
        let mut process = Runner
            .spawn(
                &cmd,
                SpawnOptions {
                    output: Some(output),
                    run_as,
                },
            )
            .map_err(|e| crate::spawn_failed(VMM, e, |e| self.spawn_error(e)))?;
        tracing::info!(vm = %spec.vm_id, pid = process.pid(), "firecracker spawned");
        // Read now, while it is our unreaped child: the pid names it.
        let started = banger_host::jail::start_time(process.pid()).ok();
        // The jail's network handles: held until the tap is back.
        let moves = match tap {
            None => None,
            Some(tap) => match process.take_jail_net() {
                Some(net) => Some(jail_tap::Moves { tap, net }),
                None => {
                    let e = VmmError::JailTap {
                        vmm: VMM,
                        what: "the jail handed back no network namespace".into(),
                    };
                    return Err(abandon(&mut process, started, e));
                }
            },
        };
        let peer = Peer {
            uid: spec.vmm_uid(),
            pid: process.pid(),
        };
        let api = match run
            .try_clone()
            .and_then(|dir| ApiClient::new(dir, API_SOCKET, peer, self.request_timeout))
        {
            Ok(api) => api,
            Err(e) => return Err(abandon(&mut process, started, e)),
        };
        let mut vm = FirecrackerVm {
            process,
            api,
            vm_id: spec.vm_id.clone(),
            run,
            serial,
            log,
            started,
            paths: paths.clone(),
        };
        let plan = if restoring {
            restore_plan(spec, paths)
        } else {
            config_plan(spec, paths)
        };
        match vm.boot(spec, plan, self.api_timeout, moves) {
            Ok(()) => {
                tracing::info!(vm = %spec.vm_id, "firecracker guest started");
                Ok(vm)
            }
            Err(e) => {
                let e = vm.explain(e);
                match vm.kill() {
                    Ok(_) => Err(e),
                    Err(still) => Err(still_running(still, e)),
                }
            }
        }
    }

    fn spawn_error(&self, e: RunError) -> VmmError {
        match e {
            RunError::NotFound { .. } => VmmError::BinaryMissing {
                vmm: VMM,
                path: self.binary.display().to_string(),
            },
            RunError::Spawn { source, .. } => VmmError::Spawn { vmm: VMM, source },
            other => VmmError::Spawn {
                vmm: VMM,
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// Kill `process` after its launch failed with `e`: `e`, or
/// [`VmmError::StillRunning`] naming `e` when its pidfd does not say it
/// exited (a jailed one's slot uid must not be given again while it may
/// run).
fn abandon(process: &mut Spawned, started: Option<u64>, e: VmmError) -> VmmError {
    match process.kill() {
        Ok(_) => e,
        Err(_) if !process.pidfd_alive() => e,
        Err(source) => still_running(
            VmmError::StillRunning {
                vmm: VMM,
                pid: process.pid(),
                started,
                what: format!("killing it: {source}"),
            },
            e,
        ),
    }
}

/// `still` (the error of a kill after a failed launch) with the launch's
/// error `e` in front when it is [`VmmError::StillRunning`]; any other
/// error of the kill is logged and `e` stands.
fn still_running(still: VmmError, e: VmmError) -> VmmError {
    match still {
        VmmError::StillRunning {
            vmm,
            pid,
            started,
            what,
        } => VmmError::StillRunning {
            vmm,
            pid,
            started,
            what: format!("{e}; {what}"),
        },
        other => {
            tracing::warn!(error = %other, "killing a failed firecracker");
            e
        }
    }
}

/// The directory and files a launch keeps: `run/`, the serial log, root's
/// descriptor of Firecracker's log.
struct Launched {
    run: OwnerDir,
    serial: File,
    log: File,
    /// Load a snapshot (`restore_plan`) instead of booting.
    restoring: bool,
}

/// How [`FirecrackerVm::shutdown`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shutdown {
    /// The process had already exited (its status).
    AlreadyExited(String),
    /// The guest shut down after `SendCtrlAltDel` (the process's status).
    Graceful(String),
    /// It did not stop in time (or the API failed) and was killed.
    Killed,
}

/// What [`FirecrackerVm::status`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    /// The process has exited (its status).
    Exited(String),
    /// The process answers its API.
    Live(InstanceInfo),
}

/// A launched Firecracker process. Dropping this does **not** stop the VM:
/// the VMM outlives the handle (the executor records its pid and re-adopts
/// it after a restart); stop it with [`FirecrackerVm::shutdown`] or
/// [`FirecrackerVm::kill`].
#[derive(Debug)]
pub struct FirecrackerVm {
    process: Spawned,
    api: ApiClient,
    vm_id: String,
    /// `run_dir`: its sockets are removed through this once Firecracker
    /// has exited.
    run: OwnerDir,
    /// Root's descriptors of the serial log and of Firecracker's log:
    /// error tails are read from these, never by path.
    serial: File,
    log: File,
    /// Its start time, read right after the spawn.
    started: Option<u64>,
    /// What it was told its files are (a save names its `run/` files).
    paths: Paths,
}

impl FirecrackerVm {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The child and its pidfd.
    pub fn process(&self) -> &Spawned {
        &self.process
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// Process state, then (if alive) the instance state from `GET /`.
    pub fn status(&mut self) -> Result<VmStatus, VmmError> {
        if let Some(s) = self.exited()? {
            return Ok(VmStatus::Exited(s));
        }
        match self.api.instance_info() {
            Ok(info) => Ok(VmStatus::Live(info)),
            Err(e) => match self.exited()? {
                Some(s) => Ok(VmStatus::Exited(s)),
                None => Err(e),
            },
        }
    }

    /// Ask the guest to shut down (`SendCtrlAltDel`; the guest reboots,
    /// which ends Firecracker given `reboot=k`), wait up to `timeout` for the
    /// process to exit, then kill it through its pidfd. Its vCPUs are
    /// resumed first (a paused guest never sees the keys), both requests
    /// within one API deadline ([`ApiClient::request_power_off`]).
    pub fn shutdown(&mut self, timeout: Duration) -> Result<Shutdown, VmmError> {
        if let Some(s) = self.exited()? {
            self.remove_sockets();
            return Ok(Shutdown::AlreadyExited(s));
        }
        if let Err(e) = self.api.request_power_off() {
            if let Some(s) = self.exited()? {
                self.remove_sockets();
                return Ok(Shutdown::AlreadyExited(s));
            }
            tracing::warn!(vm = %self.vm_id, error = %e, "SendCtrlAltDel failed; killing");
            self.kill()?;
            return Ok(Shutdown::Killed);
        }
        let waited = self
            .process
            .wait_timeout(timeout)
            .map_err(|source| self.io("waiting for", source))?;
        match waited {
            Some(status) => {
                self.remove_sockets();
                Ok(Shutdown::Graceful(status.to_string()))
            }
            None => {
                tracing::warn!(vm = %self.vm_id, secs = timeout.as_secs_f32(), "guest did not shut down; killing");
                self.kill()?;
                Ok(Shutdown::Killed)
            }
        }
    }

    /// SIGKILL through the pidfd, reap, remove the sockets. Returns the exit
    /// status; killing an exited process only reaps it. Killed but not
    /// reaped yet is done once the pidfd says it exited (a thread reaps
    /// it); while it does not, [`VmmError::StillRunning`] (a jailed one's
    /// slot uid must not be given to another VM meanwhile).
    pub fn kill(&mut self) -> Result<String, VmmError> {
        let status = match self.process.kill() {
            Ok(status) => status.to_string(),
            Err(source) if !self.process.pidfd_alive() => format!("killed ({source})"),
            Err(source) => {
                return Err(VmmError::StillRunning {
                    vmm: VMM,
                    pid: self.pid(),
                    started: self.started,
                    what: format!("killing it: {source}"),
                });
            }
        };
        self.remove_sockets();
        Ok(status)
    }

    /// Pause or resume the vCPUs (`PATCH /vm`) and confirm the state `GET
    /// /` reports ([`ApiClient::set_vcpus`]). An exited Firecracker is
    /// [`VmmError::NotRunning`].
    pub fn set_vcpus(&mut self, to: crate::driver::Vcpus) -> Result<(), VmmError> {
        let pid = self.pid();
        let not_running = || VmmError::NotRunning {
            vmm: VMM,
            pid,
            what: to.verb(),
        };
        if self.exited()?.is_some() {
            return Err(not_running());
        }
        match self.api.set_vcpus(to) {
            Err(_)
                if crate::driver::pidfd_exited(self.process.pidfd(), crate::driver::GONE_GRACE) =>
            {
                // Reaped here.
                self.exited()?;
                Err(not_running())
            }
            done => done,
        }
    }

    /// Wait for the guest's readiness line on `listener` (bound before
    /// launch), failing early with the log tail if Firecracker exits.
    pub fn wait_ready(
        &mut self,
        listener: &ReadyListener,
        timeout: Duration,
    ) -> Result<(), VmmError> {
        listener.wait_while(timeout, || match self.exited()? {
            Some(status) => Err(VmmError::EarlyExit {
                vmm: VMM,
                status,
                tail: self.tail(),
            }),
            None => Ok(()),
        })
    }

    /// Wait for the API, then send `plan` (a boot's, or a restore's);
    /// the call that attaches the tap (`PUT /network-interfaces`, `PUT
    /// /snapshot/load`) through `moves` when given (the jail's handles
    /// are closed as soon as the tap is back, or moving it back failed).
    fn boot(
        &mut self,
        spec: &LaunchSpec,
        plan: Vec<ApiRequest>,
        api_timeout: Duration,
        mut moves: Option<jail_tap::Moves<'_>>,
    ) -> Result<(), VmmError> {
        self.wait_for_api(api_timeout)?;
        for req in plan {
            let attaches =
                req.path.starts_with("/network-interfaces/") || req.path == "/snapshot/load";
            match moves.take() {
                Some(m) if attaches => {
                    m.around(spec, || self.api.send(&req).map(drop))?;
                }
                other => {
                    moves = other;
                    self.api.send(&req)?;
                }
            }
        }
        Ok(())
    }

    fn wait_for_api(&mut self, timeout: Duration) -> Result<(), VmmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Err(VmmError::EarlyExit {
                    vmm: VMM,
                    status,
                    tail: self.tail(),
                });
            }
            if self.api.probe().is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(VmmError::Timeout {
                    vmm: VMM,
                    what: "open its API socket",
                    secs: timeout.as_secs_f64().ceil() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A failed call during start-up is often a process that died; then the
    /// exit and its output say more than "connection refused".
    fn explain(&mut self, e: VmmError) -> VmmError {
        if matches!(e, VmmError::EarlyExit { .. }) {
            return e;
        }
        match self.process.wait_timeout(Duration::from_millis(100)) {
            Ok(Some(status)) => VmmError::EarlyExit {
                vmm: VMM,
                status: status.to_string(),
                tail: format!("{} (after: {e})", self.tail()),
            },
            _ => e,
        }
    }

    fn exited(&mut self) -> Result<Option<String>, VmmError> {
        match self.process.try_wait() {
            Ok(s) => Ok(s.map(|s| s.to_string())),
            Err(source) => Err(self.io("checking on", source)),
        }
    }

    /// The serial console's last lines (Firecracker's stdout and stderr),
    /// then its own log's once the logger is configured.
    fn tail(&self) -> String {
        let serial = tail_lines(&self.serial, TAIL_LINES);
        match tail_lines(&self.log, TAIL_LINES) {
            log if log == "(no output)" => serial,
            log => format!("{serial} | firecracker.log: {log}"),
        }
    }

    fn io(&self, doing: &str, source: std::io::Error) -> VmmError {
        VmmError::Io {
            what: format!(
                "{doing} firecracker (pid {}, vm {})",
                self.pid(),
                self.vm_id
            ),
            source,
        }
    }

    fn remove_sockets(&self) {
        for name in [API_SOCKET, VSOCK_SOCKET] {
            if let Err(e) = self.run.remove_stale_socket(name) {
                tracing::warn!(vm = %self.vm_id, error = %e, "removing a firecracker socket");
            }
        }
    }
}

/// `path` as (directory, file name), for a file opened beneath its
/// directory.
#[cfg(any(test, feature = "test-support"))]
fn split(path: &std::path::Path) -> Result<(&std::path::Path, &str), VmmError> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(VmmError::InvalidSpec {
            vmm: VMM,
            what: format!(
                "serial_log {}: need a file name in a directory",
                path.display()
            ),
        }),
    }
}
