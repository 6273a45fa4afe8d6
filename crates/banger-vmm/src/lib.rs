//! VMM drivers: how a typed [`LaunchSpec`] becomes a running Firecracker or
//! QEMU process, and how that process is asked to stop.
//!
//! This crate runs on the privileged side of the seam only (the executor).
//! Every path in a [`LaunchSpec`] was derived by the executor from ids it
//! validated; nothing here accepts a path from `bangerd`.
//!
//! Process ownership: a driver spawns the VMM through
//! [`banger_host::runner`], and the caller keeps the returned process,
//! whose pidfd is the only handle used to signal it.
//!
//! Root runs this, inside directories the VM's owner can write (`vms/<id>/`
//! and its `run/`): it does no path-based operation there. It works through
//! descriptors of those directories ([`dir::OwnerDir`]) — files created
//! `O_EXCL`, reused ones checked by `fstat`, sockets connected by inode and
//! checked by `SO_PEERCRED`, error tails read from its own descriptors.
//! Paths only go to the VMM, which runs as the owner.

use std::path::PathBuf;
use std::time::Duration;

pub mod agent;
pub mod dir;
pub mod driver;
pub mod firecracker;
pub mod qemu;
pub mod ready;
#[cfg(test)]
mod stand_in;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

/// Longest text of a VMM's (a QMP error, a Firecracker fault) quoted in an
/// error: a hostile VMM chooses it, and errors travel to logs and users.
const QUOTED_MAX: usize = 2048;

/// Whether an I/O error on a socket with a read or write timeout is that
/// timeout running out.
pub(crate) fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// `text` cut to [`QUOTED_MAX`] characters, marked with `…` when cut.
pub(crate) fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod quoted_tests {
    #[test]
    fn long_vmm_text_is_cut_and_marked() {
        let long = "é".repeat(super::QUOTED_MAX + 10);
        let q = super::quoted(&long);
        assert_eq!(q.chars().count(), super::QUOTED_MAX + 1);
        assert!(q.ends_with('…'));
        assert_eq!(super::quoted("short"), "short");
    }
}

#[cfg(test)]
mod spawn_failed_tests {
    use banger_host::runner::RunError;

    use crate::VmmError;

    /// Hostile read of the jailed driver, the pidfd gap: a VMM that
    /// started but whose kill (after no pidfd could be opened) is not
    /// confirmed ends the launch in `StillRunning`, its start time kept,
    /// so its slot uid is not given again; any other spawn error is the
    /// driver's own.
    #[test]
    fn an_unconfirmed_kill_after_the_spawn_is_still_running() {
        let e = RunError::StillRunning {
            argv: "firecracker --id x".into(),
            pid: 4242,
            started: Some(77),
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        };
        let got = super::spawn_failed("firecracker", e, |_| unreachable!());
        match got {
            VmmError::StillRunning {
                vmm,
                pid,
                started,
                what,
            } => {
                assert_eq!((vmm, pid, started), ("firecracker", 4242, Some(77)));
                assert!(
                    what.contains("no pidfd") && what.contains("os error 24"),
                    "{what}"
                );
            }
            other => panic!("{other}"),
        }
        let e = RunError::NotFound {
            program: "qemu".into(),
        };
        let got = super::spawn_failed("qemu", e, |e| VmmError::Spawn {
            vmm: "qemu",
            source: std::io::Error::other(e.to_string()),
        });
        assert!(matches!(got, VmmError::Spawn { .. }), "{got}");
    }
}

/// `RLIMIT_NOFILE` of a jailed VMM (QEMU, Firecracker).
pub const VMM_OPEN_FILES: u64 = 1024;
/// `RLIMIT_FSIZE` floor of a jailed VMM: its logs (the serial log,
/// appended across boots; Firecracker's log, made anew each launch) grow
/// to this even beside small drives. Past it a write fails with `EFBIG`
/// and raises `SIGXFSZ`, whose handler ends Firecracker.
pub const VMM_MIN_FILE_SIZE: u64 = 1 << 30;
/// The most a serial log may hold when a VMM is launched on it: one over
/// this is emptied first ([`bound_serial_log`]), so every boot has at
/// least half of [`VMM_MIN_FILE_SIZE`] to write before its limit.
pub const SERIAL_LOG_MAX: u64 = VMM_MIN_FILE_SIZE / 2;

/// Empty the serial log behind `serial` (the caller's descriptor of the
/// owner's checked file, open for writing) when it holds more than
/// [`SERIAL_LOG_MAX`], and say so in it: it is appended across boots and
/// never rotated, and once past the VMM's `RLIMIT_FSIZE` every later boot
/// would stop at its first console byte. Only through the descriptor
/// (`fstat`, `ftruncate`, an appended line): never the file's name, which
/// its owner can change. Returns the log's length then: where this boot's
/// console begins (its readiness is watched from there).
pub(crate) fn bound_serial_log(vmm: &'static str, serial: &std::fs::File) -> Result<u64, VmmError> {
    let io = |doing: &str| {
        let what = format!("{vmm}: {doing} the serial log");
        move |source| VmmError::Io { what, source }
    };
    let size = rustix::fs::fstat(serial)
        .map_err(std::io::Error::from)
        .map_err(io("inspecting"))?
        .st_size;
    let size = u64::try_from(size).unwrap_or(0);
    if size <= SERIAL_LOG_MAX {
        return Ok(size);
    }
    tracing::warn!(vmm, size, max = SERIAL_LOG_MAX, "emptying the serial log");
    rustix::fs::ftruncate(serial, 0)
        .map_err(std::io::Error::from)
        .map_err(io("emptying"))?;
    let note = format!("banger: the serial log held {size} bytes; emptied at this launch\n");
    // Appended: the descriptor is O_APPEND, so this lands at the new end.
    std::io::Write::write_all(&mut &*serial, note.as_bytes()).map_err(io("writing to"))?;
    Ok(note.len() as u64)
}

/// A VMM's memory for `spec`, the one rule for its rlimits
/// (`RLIMIT_AS`/`RLIMIT_DATA`, [`vmm_limits`]) and its cgroup's
/// `memory.max`: the guest's memory plus the driver's `overhead`.
pub fn memory_limit(spec: &LaunchSpec, overhead: u64) -> u64 {
    u64::from(spec.memory_mib) * (1 << 20) + overhead
}

/// A VMM's tasks for `spec`, the one rule for its `RLIMIT_NPROC`
/// ([`vmm_limits`]) and its cgroup's `pids.max`: the driver's `threads`
/// plus one per vCPU.
pub fn process_limit(spec: &LaunchSpec, threads: u32) -> u32 {
    threads + u32::from(spec.vcpus)
}

/// The limits of a jailed VMM for `spec` (one rule for both drivers):
/// [`memory_limit`] and [`process_limit`] with the driver's `overhead`
/// and `threads`, [`VMM_OPEN_FILES`], and files up
/// to the largest of the writable drives (`drives`: each of the spec's
/// with the descriptor the VMM uses) or [`VMM_MIN_FILE_SIZE`]. An error
/// names the drive whose size could not be read.
pub(crate) fn vmm_limits<'a>(
    vmm: &'static str,
    spec: &LaunchSpec,
    overhead: u64,
    threads: u32,
    drives: impl Iterator<Item = (&'a Drive, std::os::fd::BorrowedFd<'a>)>,
) -> Result<banger_host::jail::Limits, VmmError> {
    let mut file_size = VMM_MIN_FILE_SIZE;
    for (d, fd) in drives {
        if !d.read_only {
            let size = drive_size(fd).map_err(|source| VmmError::Io {
                what: format!("jailing {vmm}: the size of drive {}", d.id),
                source,
            })?;
            file_size = file_size.max(size);
        }
    }
    Ok(banger_host::jail::Limits {
        memory: memory_limit(spec, overhead),
        processes: process_limit(spec, threads),
        open_files: VMM_OPEN_FILES,
        file_size,
    })
}

/// A VM's cgroup as root opened it: the cgroup2 directory and its own
/// `cgroup.procs`, for writing (`Jail::cgroup` checks that they match).
/// The jailed VMM (QEMU, Firecracker) joins it from its jail.
#[derive(Debug)]
pub struct CgroupFds {
    pub dir: std::os::fd::OwnedFd,
    pub procs: std::os::fd::OwnedFd,
}

/// The size of a drive: a regular file's length, a block device's
/// capacity.
fn drive_size(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<u64> {
    let st = rustix::fs::fstat(fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::BlockDevice {
        // SEEK_END of a block device is its capacity; pread/pwrite, which
        // the VMMs use, never move this shared offset.
        let end = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))?;
        rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0))?;
        return Ok(end);
    }
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// The [`VmmError`] of a spawn of `vmm` that failed with `e`:
/// [`VmmError::StillRunning`] when the VMM started and its kill is not
/// confirmed (no pidfd could be opened: its jail uid must not be given
/// again while it may run), else `other(e)`.
pub(crate) fn spawn_failed(
    vmm: &'static str,
    e: banger_host::runner::RunError,
    other: impl FnOnce(banger_host::runner::RunError) -> VmmError,
) -> VmmError {
    match e {
        banger_host::runner::RunError::StillRunning {
            pid,
            started,
            ref source,
            ..
        } => VmmError::StillRunning {
            vmm,
            pid,
            started,
            what: format!("{e}: {source}"),
        },
        e => other(e),
    }
}

/// A virtio block device given to the guest, in order (`vda`, `vdb`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Stable id (`root`, `work`): Firecracker's `drive_id`, QEMU's node name.
    pub id: String,
    /// Disk image file (or block device) on the host.
    pub path: PathBuf,
    pub read_only: bool,
}

/// Everything a driver needs to boot one VM. Built by the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The VM's id (32 lowercase hex characters): process naming, logs.
    pub vm_id: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Uncompressed `vmlinux` (Firecracker) or `bzImage`/`vmlinux` (QEMU).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Kernel command line, complete (console, root=, banger's markers).
    pub cmdline: String,
    /// Root disk first, then the work disk.
    pub drives: Vec<Drive>,
    /// The VM's tap (already created, attached, owned by `run_as`).
    pub tap: String,
    /// Guest MAC, `02:ba:..`.
    pub mac: String,
    /// Per-VM runtime directory: API/QMP/vsock sockets live here.
    pub run_dir: PathBuf,
    /// Serial console output is appended here.
    pub serial_log: PathBuf,
    /// Guest vsock context id (Firecracker; ≥ 3).
    pub vsock_cid: u32,
    /// Credentials the VMM process drops to (uid, gid): the VM slot's
    /// jail ids for every launch the executor makes (QEMU and
    /// Firecracker); `None` (keeps this process's) only for the driver's
    /// unjailed test launches.
    pub run_as: Option<(u32, u32)>,
    /// Use KVM acceleration (QEMU falls back to TCG when false).
    pub kvm: bool,
}

/// Names of the sockets in `run_dir` (`banger_proto::layout`'s).
pub use banger_proto::layout::{API_SOCKET, QMP_SOCKET, VSOCK_SOCKET};

impl LaunchSpec {
    /// Firecracker's API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.run_dir.join(API_SOCKET)
    }
    /// QEMU's QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join(QMP_SOCKET)
    }
    /// Host side of the guest's vsock (Firecracker: an AF_UNIX socket).
    pub fn vsock_socket(&self) -> PathBuf {
        self.run_dir.join(VSOCK_SOCKET)
    }

    /// The uid the VMM runs as: `run_as`, else this process's.
    pub fn vmm_uid(&self) -> u32 {
        self.run_as
            .map_or_else(|| rustix::process::geteuid().as_raw(), |(uid, _)| uid)
    }
}

/// Graceful-stop defaults.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{vmm} binary {path} not found; install it or set its path in the config")]
    BinaryMissing { vmm: &'static str, path: String },
    #[error("starting {vmm}")]
    Spawn {
        vmm: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{vmm} exited during start-up ({status}); last output: {tail}")]
    EarlyExit {
        vmm: &'static str,
        status: String,
        tail: String,
    },
    #[error("{vmm} API: {what}")]
    Api { vmm: &'static str, what: String },
    /// Moving a jailed VMM's tap into its network namespace or back
    /// ([`firecracker::JailTap`]) failed; `what` says which and where the
    /// tap is.
    #[error("{vmm} tap: {what}")]
    JailTap { vmm: &'static str, what: String },
    /// A [`LaunchSpec`] field the driver cannot pass on; `what` names the
    /// field, its value and what would be accepted.
    #[error("{vmm} launch spec: {what}")]
    InvalidSpec { vmm: &'static str, what: String },
    /// The guest reported something other than readiness.
    #[error("{vmm} guest readiness: {what}")]
    Readiness { vmm: &'static str, what: String },
    #[error("{vmm} did not {what} within {secs}s")]
    Timeout {
        vmm: &'static str,
        what: &'static str,
        secs: u64,
    },
    /// A file or socket in a directory another uid can write is not one
    /// root may use (a symlink, a hard link, another uid's, not a regular
    /// file, not the VMM's); `path` names it.
    #[error("{path}: {reason}; refusing it")]
    Refused { path: String, reason: String },
    /// A VMM that was killed but whose pidfd does not say it exited (it
    /// may be stuck in the kernel): its jail uid must not be given to
    /// another VM, nor its journal entry dropped, until it has.
    #[error(
        "{vmm} pid {pid} may still be running ({what}): its journal entry and jail uid are kept"
    )]
    StillRunning {
        vmm: &'static str,
        pid: u32,
        /// Its start time (`/proc/<pid>/stat` field 22), read right after
        /// the spawn while it was this process's unreaped child, so it
        /// names that process and no later one with its pid; `None` when
        /// unknown (it could not be read then, or an adopted VMM).
        started: Option<u64>,
        what: String,
    },
    /// A pause or resume (`what`) asked of a VMM whose process has
    /// exited.
    #[error("{vmm} pid {pid} is not running; cannot {what} it")]
    NotRunning {
        vmm: &'static str,
        pid: u32,
        what: &'static str,
    },
    /// A pause or resume (`what`) asked of a VMM adopted without a control
    /// connection (root's QMP socket, Firecracker's API socket: missing or
    /// refused when it was adopted).
    #[error(
        "{vmm} pid {pid} was adopted without a control connection (QMP or API socket); \
         cannot {what} it"
    )]
    NoControl {
        vmm: &'static str,
        pid: u32,
        what: &'static str,
    },
    /// After `request` the VMM reports a run state other than `expected`;
    /// `reported` is its word, quoted cut.
    #[error("{vmm} reports its state as {reported:?} after {request}, not {expected:?}")]
    RunState {
        vmm: &'static str,
        request: &'static str,
        expected: &'static str,
        reported: String,
    },
    /// The guest agent (guest contract 4) could not be told, or did not
    /// apply, what the host asked: `what` says which and why.
    #[error("{vmm} guest agent: {what}")]
    Agent { vmm: &'static str, what: String },
    /// Saving or restoring a VM's state (a snapshot) failed: `what` says
    /// at which step, with the VMM's own words.
    #[error("{vmm} snapshot: {what}")]
    Snapshot { vmm: &'static str, what: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
