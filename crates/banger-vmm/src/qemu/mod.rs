//! QEMU driver: Debian's `qemu-system-x86_64`, `-M q35` with virtio-pci
//! block and net devices (docs/lab.md: `-M microvm` did not find its
//! virtio-mmio disk with the Debian kernel), KVM when the caller says it is
//! usable and TCG otherwise, the serial console to a file, and QMP on a Unix
//! socket root listens on (and passes to QEMU) for status, graceful
//! power-down, pause (`stop`) and resume (`cont`).
//!
//! QEMU always runs jailed (`banger_host::jail`, docs/jail.md): as its VM's
//! jail uid, in its own namespaces, seeing `/usr`, a minimal `/dev` and
//! copies of the kernel and initrd, and nothing it can write. Every other
//! file — the drives, the serial log, the tap, QMP's listening socket — it
//! gets as a descriptor the caller opened ([`QemuFiles`]), at the numbers
//! of [`fds`].

mod qmp;
mod snapshot;

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_host::jail::Jail;
use banger_host::runner::{Cmd, Runner, SpawnOptions, Spawned};

pub use qmp::{Qmp, QmpError, RootSocket};
pub use snapshot::{AGENT_TIMEOUT, Incoming, RESTORE_TIMEOUT};

use banger_proto::vmops::VmmKind;

use crate::driver::{RunningVmm, SaveTo, Vcpus, VmmControl, VmmDriver};
use crate::ready::{ConsoleWatch, Readiness};
use crate::{LaunchSpec, VmmError, vmm_limits};

const VMM: &str = "qemu";

/// The `-sandbox` value: every optional group of QEMU's filter denied.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// How long QEMU gets to open its QMP socket after it is spawned.
const QMP_APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct QemuDriver {
    /// `qemu-system-x86_64`, or a path.
    pub binary: PathBuf,
}

impl Default for QemuDriver {
    fn default() -> Self {
        QemuDriver {
            binary: PathBuf::from("qemu-system-x86_64"),
        }
    }
}

/// Descriptor numbers and paths inside a jailed QEMU (`banger_host::jail`).
pub mod fds {
    /// The tap, attached by the caller (`-netdev tap,fd=`).
    pub const TAP: i32 = 3;
    /// The serial log, opened for appending by the caller (fd set 1).
    pub const SERIAL: i32 = 4;
    /// The serial log's fd set.
    pub const SERIAL_SET: u32 = 1;
    /// Drive `i`'s descriptor as the drive is (read-write unless
    /// read-only) at `DRIVES + 2i`, its read-only one at `DRIVES + 2i + 1`
    /// (QEMU 7.2 opens a writable drive read-only first and then asks the
    /// set for a read-write one), both in fd set `2 + i`.
    pub const DRIVES: i32 = 5;
    /// How many drives the numbers below the jail's last have room for.
    pub const MAX_DRIVES: usize = 8;
    /// QMP's listening socket, root's (`-chardev socket,fd=`): after the
    /// last drive's.
    pub const QMP: i32 = DRIVES + 2 * MAX_DRIVES as i32;
    /// The guest agent's listening socket, root's (`-chardev socket,fd=`,
    /// behind the virtio-serial port `banger_proto::guest::AGENT_PORT`).
    pub const AGENT: i32 = QMP + 1;
    /// The kernel and initrd, copied into the jail's root.
    pub const KERNEL: &str = "kernel";
    pub const INITRD: &str = "initrd";
}

/// Extra address space a jailed QEMU may map besides guest memory: TCG's
/// translation buffer (up to 1 GiB), glibc's per-thread arenas (64 MiB of
/// reservation each), thread stacks, QEMU's own heap.
pub const MEMORY_OVERHEAD: u64 = 4 << 30;
/// `RLIMIT_NPROC` of a jailed QEMU besides one per vCPU: the kernel counts
/// its threads (main, RCU, I/O workers up to 64, call_rcu, ...).
pub const THREADS: u32 = 256;

/// One drive's descriptors, opened by the caller (checked, beneath the
/// state directory without symlinks, or the dm node by number).
#[derive(Debug)]
pub struct DriveFds {
    /// Opened as the drive is used: read-write unless `Drive::read_only`.
    pub main: OwnedFd,
    /// The same inode, read-only.
    pub read_only: OwnedFd,
}

/// Everything a jailed QEMU gets, each by descriptor: it opens no host
/// path of its own.
#[derive(Debug)]
pub struct QemuFiles {
    /// Copied into the jail's root (`/kernel`, `/initrd`).
    pub kernel: File,
    pub initrd: Option<File>,
    /// One per `LaunchSpec::drives`, in order.
    pub drives: Vec<DriveFds>,
    /// `/dev/net/tun` attached to `LaunchSpec::tap`: the executor's, from
    /// its checked hand-over (`HostNet::take_tap`); [`open_tap`] in tests.
    pub tap: OwnedFd,
    /// The serial log, for appending.
    pub serial: File,
    /// QEMU's stdout and stderr.
    pub log: File,
    /// QMP's socket in root's directory: bound and listened on at launch,
    /// the listening descriptor passed at [`fds::QMP`].
    pub qmp: RootSocket,
    /// The guest agent's socket in root's directory, like `qmp`: its
    /// listening descriptor is passed at [`fds::AGENT`].
    pub agent: RootSocket,
    /// `/dev/kvm` (`O_PATH` is enough: it is bound, and QEMU opens it),
    /// when `LaunchSpec::kvm`.
    pub kvm: Option<OwnedFd>,
    /// The VM's cgroup, opened by root: QEMU joins it from its jail
    /// (`Jail::cgroup`). `None`: no cgroup.
    pub cgroup: Option<CgroupFds>,
    /// Restore this saved state instead of booting ([`Incoming`]).
    pub incoming: Option<Incoming>,
}

pub use crate::CgroupFds;

/// `RLIMIT_AS`/`RLIMIT_DATA` of a jailed QEMU for `spec`, and its
/// cgroup's `memory.max`: [`crate::memory_limit`] with [`MEMORY_OVERHEAD`],
/// as [`QemuDriver::launch`]'s rlimits.
pub fn memory_limit(spec: &LaunchSpec) -> u64 {
    crate::memory_limit(spec, MEMORY_OVERHEAD)
}

/// `RLIMIT_NPROC` of a jailed QEMU for `spec`, and its cgroup's
/// `pids.max`: [`crate::process_limit`] with [`THREADS`], as
/// [`QemuDriver::launch`]'s rlimits.
pub fn process_limit(spec: &LaunchSpec) -> u32 {
    crate::process_limit(spec, THREADS)
}

impl QemuDriver {
    /// The complete argument vector (without the program) for `spec`, in
    /// the jail's terms: files by descriptor number ([`fds`]) or by their
    /// paths inside the jail, never a host path.
    pub fn argv(&self, spec: &LaunchSpec) -> Vec<OsString> {
        let id = short(&spec.vm_id);
        let (accel, cpu) = if spec.kvm {
            ("kvm", "host")
        } else {
            ("tcg", "max")
        };
        let mut a: Vec<String> = vec![
            "-name".into(),
            format!("banger-{id},process=banger-{id}"),
            "-M".into(),
            "q35".into(),
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-m".into(),
            format!("{}M", spec.memory_mib),
            // Nothing QEMU would add by itself (VGA, default NIC, monitor).
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            // A guest reboot ends the process too, so `restart` is always
            // banger's decision.
            "-no-reboot".into(),
            // QEMU's own seccomp filter (no_new_privs, then filter mode)
            // before the guest runs, on top of the jail's: no
            // execve/fork, no setuid-style privilege changes, no
            // scheduler/affinity changes, no obsolete system calls. Needs
            // QEMU built with libseccomp.
            "-sandbox".into(),
            SANDBOX.into(),
        ];
        // The serial log by descriptor, appended, so it keeps earlier
        // boots; readers track the offset at which this boot began.
        a.push("-add-fd".into());
        a.push(format!("fd={},set={}", fds::SERIAL, fds::SERIAL_SET));
        a.push("-chardev".into());
        a.push(format!(
            "file,id=serial0,append=on,path=/dev/fdset/{}",
            fds::SERIAL_SET
        ));
        a.push("-serial".into());
        a.push("chardev:serial0".into());
        // QMP on the socket root listens on: QEMU writes no file for it.
        a.push("-chardev".into());
        a.push(format!("socket,id=qmp,fd={},server=on,wait=off", fds::QMP));
        a.push("-mon".into());
        a.push("chardev=qmp,mode=control".into());
        a.push("-kernel".into());
        a.push(format!("/{}", fds::KERNEL));
        if spec.initrd.is_some() {
            a.push("-initrd".into());
            a.push(format!("/{}", fds::INITRD));
        }
        a.push("-append".into());
        a.push(spec.cmdline.clone());
        for (i, d) in spec.drives.iter().enumerate() {
            let set = 2 + i;
            let fd = fds::DRIVES + 2 * i as i32;
            a.push("-add-fd".into());
            a.push(format!("fd={fd},set={set}"));
            a.push("-add-fd".into());
            a.push(format!("fd={},set={set}", fd + 1));
            // No image locking (`file.locking=off`): QEMU locks each of a
            // drive's two descriptors as its own open file description, and
            // a `cont` after a snapshot was saved (which reactivates the
            // drives) failed with 'Failed to get "write" lock' against the
            // read-only one. One VMM per disk is the executor's rule (its
            // `flock` on the descriptor in the fd set, `lock_disk`), not
            // QEMU's.
            a.push("-drive".into());
            a.push(format!(
                "file=/dev/fdset/{set},if=none,id={},format=raw,cache=writeback,discard=unmap,file.locking=off{}",
                d.id,
                if d.read_only { ",readonly=on" } else { "" }
            ));
            a.push("-device".into());
            a.push(format!("virtio-blk-pci,drive={}", d.id));
        }
        a.push("-netdev".into());
        a.push(format!("tap,id=net0,fd={}", fds::TAP));
        a.push("-device".into());
        a.push(format!("virtio-net-pci,netdev=net0,mac={}", spec.mac));
        // Guest entropy early in boot (sshd, systemd).
        a.push("-device".into());
        a.push("virtio-rng-pci".into());
        // The guest agent's host-only channel, on root's listening socket.
        a.push("-device".into());
        a.push("virtio-serial-pci,id=vser0".into());
        a.push("-chardev".into());
        a.push(format!(
            "socket,id=agent,fd={},server=on,wait=off",
            fds::AGENT
        ));
        a.push("-device".into());
        a.push(format!(
            "virtserialport,bus=vser0.0,chardev=agent,name={}",
            banger_proto::guest::AGENT_PORT
        ));
        // A new generation id at every start, restores included: a guest
        // kernel with the vmgenid driver (Linux 5.18 on, when built in;
        // Debian 12's cloud kernel has none) reseeds its random number
        // generator when it changes, so clones of one snapshot do not
        // share its state.
        a.push("-device".into());
        a.push("vmgenid,guid=auto".into());
        a.into_iter().map(OsString::from).collect()
    }

    /// [`QemuDriver::argv`] for a launch that restores a snapshot: the
    /// same devices (a restore needs exactly the saved machine), waiting
    /// for its state (`-incoming defer`), paused once it is loaded (`-S`).
    pub fn restore_argv(&self, spec: &LaunchSpec) -> Vec<OsString> {
        let mut a = self.argv(spec);
        a.extend(["-incoming", "defer", "-S"].map(OsString::from));
        a
    }

    /// The jail QEMU runs in for `spec`: the uid and gid of
    /// `spec.run_as`, the files of `files` and QMP's listening socket
    /// `qmp` by descriptor, limits from the guest's size.
    fn jail(
        &self,
        spec: &LaunchSpec,
        files: &QemuFiles,
        qmp: BorrowedFd<'_>,
        agent: BorrowedFd<'_>,
    ) -> Result<Jail, VmmError> {
        let invalid = |what: String| VmmError::InvalidSpec { vmm: VMM, what };
        let (uid, gid) = spec
            .run_as
            .ok_or_else(|| invalid("run_as: a jailed QEMU needs its VM's jail uid".into()))?;
        if files.drives.len() != spec.drives.len() || spec.drives.len() > fds::MAX_DRIVES {
            return Err(invalid(format!(
                "drives: {} in the spec, {} descriptors, at most {}",
                spec.drives.len(),
                files.drives.len(),
                fds::MAX_DRIVES
            )));
        }
        if files.initrd.is_some() != spec.initrd.is_some() {
            return Err(invalid(
                "initrd: the spec and the descriptors disagree".into(),
            ));
        }
        let io = |what: &str| {
            let what = what.to_string();
            move |source| VmmError::Io {
                what: format!("jailing qemu: {what}"),
                source,
            }
        };
        let drives = spec.drives.iter().zip(&files.drives);
        let limits = vmm_limits(
            VMM,
            spec,
            MEMORY_OVERHEAD,
            THREADS,
            drives.map(|(d, f)| (d, f.main.as_fd())),
        )?;
        let mut jail = Jail::new(uid, gid)
            .long_lived(limits)
            .pass(files.tap.as_fd(), fds::TAP)
            .and_then(|j| j.pass(files.serial.as_fd(), fds::SERIAL))
            .and_then(|j| j.pass(qmp, fds::QMP))
            .and_then(|j| j.pass(agent, fds::AGENT))
            .and_then(|j| j.copy_in(files.kernel.as_fd(), fds::KERNEL))
            .map_err(io("its files"))?;
        if let Some(initrd) = &files.initrd {
            jail = jail
                .copy_in(initrd.as_fd(), fds::INITRD)
                .map_err(io("the initrd"))?;
        }
        for (i, d) in files.drives.iter().enumerate() {
            let fd = fds::DRIVES + 2 * i as i32;
            jail = jail
                .pass(d.main.as_fd(), fd)
                .and_then(|j| j.pass(d.read_only.as_fd(), fd + 1))
                .map_err(io("a drive"))?;
        }
        match (&files.kvm, spec.kvm) {
            (Some(kvm), true) => jail = jail.bind_kvm(kvm.as_fd()).map_err(io("/dev/kvm"))?,
            (None, false) => {}
            _ => return Err(invalid("kvm: the spec and the descriptors disagree".into())),
        }
        if let Some(cg) = &files.cgroup {
            jail = jail
                .cgroup(cg.dir.as_fd(), cg.procs.as_fd())
                .map_err(io("its cgroup"))?;
        }
        Ok(jail)
    }

    /// Spawn QEMU for `spec` in its jail and wait until its QMP socket
    /// answers. On failure nothing is left running.
    pub fn launch(&self, spec: &LaunchSpec, files: QemuFiles) -> Result<QemuVm, VmmError> {
        let program = banger_host::runner::resolve(self.binary.as_os_str()).ok_or_else(|| {
            VmmError::BinaryMissing {
                vmm: VMM,
                path: self.binary.display().to_string(),
            }
        })?;
        let listener = files.qmp.listen().map_err(|source| VmmError::Io {
            what: format!("listening on {}", files.qmp.path().display()),
            source,
        })?;
        let agent_listener = files.agent.listen().map_err(|source| VmmError::Io {
            what: format!("listening on {}", files.agent.path().display()),
            source,
        })?;
        let jail = self.jail(spec, &files, listener.as_fd(), agent_listener.as_fd())?;
        // The guest's ready line is looked for past the console's length
        // now, through a readable reopening of root's descriptor.
        let offset = crate::bound_serial_log(VMM, &files.serial)?;
        let console = crate::dir::reopen(files.serial.as_fd(), rustix::fs::OFlags::RDONLY)
            .map(File::from)
            .map_err(|e| VmmError::Io {
                what: "qemu: reopening the serial log for reading".into(),
                source: e.into(),
            })?;
        let argv = if files.incoming.is_some() {
            self.restore_argv(spec)
        } else {
            self.argv(spec)
        };
        let cmd = Cmd::new(&program).args(argv).jail(jail);
        let QemuFiles {
            log,
            qmp,
            agent,
            incoming,
            ..
        } = files;
        let child = Runner
            .spawn(
                &cmd,
                SpawnOptions {
                    output: Some(log),
                    run_as: None,
                },
            )
            .map_err(|e| {
                crate::spawn_failed(VMM, e, |e| VmmError::Spawn {
                    vmm: VMM,
                    source: std::io::Error::other(banger_proto_free_chain(&e)),
                })
            })?;
        // Only QEMU holds the listeners from here on.
        drop(listener);
        drop(agent_listener);
        // Read now, while it is our unreaped child: the pid names it.
        let started = banger_host::jail::start_time(child.pid()).ok();
        let watch = child
            .pidfd()
            .try_clone_to_owned()
            .map_err(|source| VmmError::Io {
                what: "qemu: duplicating its pidfd".into(),
                source,
            })
            .and_then(|pidfd| {
                ConsoleWatch::spawn(console, offset, pidfd, &spec.vm_id, Readiness::new())
            });
        let mut vm = QemuVm {
            child,
            qmp,
            agent,
            started,
            watch: None,
            offset,
        };
        match watch {
            Ok(w) => vm.watch = Some(w),
            Err(e) => return Err(vm.abandon(e)),
        }
        let deadline = Instant::now() + QMP_APPEAR_TIMEOUT;
        loop {
            let exited = match vm.child.try_wait() {
                Ok(exited) => exited,
                Err(source) => {
                    return Err(vm.abandon(VmmError::Io {
                        what: "waiting for qemu".into(),
                        source,
                    }));
                }
            };
            if let Some(status) = exited {
                return Err(VmmError::EarlyExit {
                    vmm: VMM,
                    status: status.to_string(),
                    tail: String::new(),
                });
            }
            // Bound, so the session ends before a restore opens its own:
            // QEMU serves one QMP client at a time.
            let session = vm.qmp();
            match session {
                Ok(session) => {
                    drop(session);
                    return match incoming {
                        None => Ok(vm),
                        Some(incoming) => match vm.restore(incoming) {
                            Ok(()) => Ok(vm),
                            Err(e) => Err(vm.abandon(e)),
                        },
                    };
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    let what = format!(
                        "QMP socket {} never answered: {}",
                        vm.qmp.path().display(),
                        banger_proto_free_chain(&e)
                    );
                    return Err(vm.abandon(VmmError::Api { vmm: VMM, what }));
                }
            }
        }
    }
}

/// `/dev/net/tun` attached to the persistent tap `name` (`TUNSETIFF`),
/// with the flags banger creates taps with (an attach must match them):
/// the descriptor QEMU gets as `-netdev tap,fd=`, so it needs neither
/// `/dev/net/tun` nor the host's network namespace. Opened in the
/// caller's network namespace, where the tap is.
///
/// By name only: when `name` is gone, root's attach makes a new tap (the
/// tun driver has no attach-only flag). The executor does not use it; it
/// passes the descriptor its hand-over attached to the journaled tap
/// (`HostNet::take_tap`, checked by interface index). Tests use it.
pub fn open_tap(name: &str) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("tap name {name:?}"),
        ));
    }
    let tun = rustix::fs::open(
        c"/dev/net/tun",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `tun` is an open /dev/net/tun descriptor for the whole call;
    // TUNSETIFF reads and writes one `struct ifreq`, which `req` is
    // (repr(C), the kernel's 40-byte layout: name, flags, padding) and
    // outlives the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("attaching to tap {name}: {e}"),
        ));
    }
    Ok(tun)
}

/// `struct ifreq` as `TUNSETIFF` reads it.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A running QEMU process the caller owns.
#[derive(Debug)]
pub struct QemuVm {
    child: Spawned,
    /// Root's QMP socket, served by this QEMU.
    qmp: RootSocket,
    /// Root's socket of the guest agent's channel, served by this QEMU.
    agent: RootSocket,
    /// Its start time, read right after the spawn.
    started: Option<u64>,
    /// The guest's readiness: its ready line on the console past `offset`.
    watch: Option<ConsoleWatch>,
    offset: u64,
}

impl QemuVm {
    /// The guest's readiness, settled when its ready line is on the
    /// console or QEMU exits.
    pub fn readiness(&self) -> Option<Arc<Readiness>> {
        self.watch.as_ref().map(ConsoleWatch::readiness)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// A QMP session with this QEMU.
    pub fn qmp(&self) -> Result<Qmp, QmpError> {
        Qmp::connect_socket(&self.qmp, QMP_TIMEOUT)
    }

    /// Whether the process still runs (reaps it if not). When waiting
    /// fails, its pidfd decides: it runs until that says it exited.
    pub fn running(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(exited) => exited.is_none(),
            Err(_) => self.child.pidfd_alive(),
        }
    }

    /// Ask the guest to power off (ACPI) and wait up to `timeout`; then kill.
    /// Returns true when the guest shut down by itself. Paused vCPUs are
    /// resumed first ([`powerdown`]).
    pub fn shutdown(&mut self, timeout: Duration) -> Result<bool, VmmError> {
        if !self.running() {
            return Ok(true);
        }
        if let Ok(mut q) = self.qmp() {
            powerdown(&mut q);
        }
        let exited = self
            .child
            .wait_timeout(timeout)
            .map_err(|source| VmmError::Io {
                what: "waiting for qemu to power off".into(),
                source,
            })?;
        if exited.is_some() {
            return Ok(true);
        }
        self.kill()?;
        Ok(false)
    }

    /// SIGKILL through the pidfd and reap. Killed but not reaped yet is
    /// done once the pidfd says it exited (a thread reaps it); while it
    /// does not, [`VmmError::StillRunning`].
    pub fn kill(&mut self) -> Result<(), VmmError> {
        match self.child.kill() {
            Ok(_) => Ok(()),
            Err(_) if !self.child.pidfd_alive() => Ok(()),
            Err(source) => Err(VmmError::StillRunning {
                vmm: VMM,
                pid: self.pid(),
                started: self.started,
                what: format!("killing it: {source}"),
            }),
        }
    }

    /// Pause (`stop`) or resume (`cont`) the guest's vCPUs over a new QMP
    /// session and confirm the state QEMU then reports ([`set_vcpus`]).
    /// An exited QEMU is [`VmmError::NotRunning`].
    pub fn set_vcpus(&mut self, to: Vcpus) -> Result<(), VmmError> {
        let not_running = VmmError::NotRunning {
            vmm: VMM,
            pid: self.pid(),
            what: to.verb(),
        };
        if !self.running() {
            return Err(not_running);
        }
        let done = self
            .qmp()
            .map_err(|e| qmp_failed(to, "connecting", &e))
            .and_then(|mut q| set_vcpus(&mut q, to));
        match done {
            Err(_)
                if crate::driver::pidfd_exited(self.child.pidfd(), crate::driver::GONE_GRACE) =>
            {
                // Reaped here.
                self.running();
                Err(not_running)
            }
            done => done,
        }
    }

    /// Kill this QEMU after its launch failed with `e`: `e`, or
    /// [`VmmError::StillRunning`] naming `e` when it may outlive the kill.
    fn abandon(&mut self, e: VmmError) -> VmmError {
        match self.kill() {
            Ok(()) => e,
            Err(VmmError::StillRunning {
                vmm,
                pid,
                started,
                what,
            }) => VmmError::StillRunning {
                vmm,
                pid,
                started,
                what: format!("{}; {what}", banger_proto_free_chain(&e)),
            },
            Err(other) => other,
        }
    }
}

impl RunningVmm for QemuVm {
    fn kind(&self) -> VmmKind {
        VmmKind::Qemu
    }
    fn pid(&self) -> u32 {
        QemuVm::pid(self)
    }
    fn pidfd(&self) -> BorrowedFd<'_> {
        self.child.pidfd()
    }
    fn adopted(&self) -> bool {
        false
    }
    fn running(&mut self) -> bool {
        QemuVm::running(self)
    }
    fn readiness(&self) -> Option<Arc<Readiness>> {
        QemuVm::readiness(self)
    }
    fn console_offset(&self) -> Option<u64> {
        Some(self.offset)
    }
    fn shutdown(&mut self, timeout: Duration) -> Result<bool, VmmError> {
        QemuVm::shutdown(self, timeout)
    }
    fn kill(&mut self) -> Result<(), VmmError> {
        QemuVm::kill(self)
    }
    fn pause(&mut self) -> Result<(), VmmError> {
        self.set_vcpus(Vcpus::Paused)
    }
    fn resume(&mut self) -> Result<(), VmmError> {
        self.set_vcpus(Vcpus::Running)
    }
    fn save_state(&mut self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError> {
        QemuVm::save_state(self, snapshot::one_stream(to)?, timeout)
    }
}

impl VmmDriver for QemuDriver {
    const KIND: VmmKind = VmmKind::Qemu;
    type Start<'a> = QemuFiles;
    type Control = RootSocket;

    fn start(&self, spec: &LaunchSpec, files: QemuFiles) -> Result<Box<dyn RunningVmm>, VmmError> {
        Ok(Box::new(self.launch(spec, files)?))
    }
}

/// An adopted QEMU is controlled through root's QMP socket: ACPI power
/// button, `stop` and `cont`.
impl VmmControl for RootSocket {
    fn power_off(&self) {
        if let Ok(mut q) = Qmp::connect_socket(self, QMP_TIMEOUT) {
            powerdown(&mut q);
        }
    }
    fn set_vcpus(&self, to: Vcpus) -> Result<(), VmmError> {
        let mut q =
            Qmp::connect_socket(self, QMP_TIMEOUT).map_err(|e| qmp_failed(to, "connecting", &e))?;
        set_vcpus(&mut q, to)
    }
    fn save_state(&self, to: SaveTo<'_>, timeout: Duration) -> Result<u64, VmmError> {
        let to = snapshot::one_stream(to)?;
        let mut q = Qmp::connect_socket(self, QMP_TIMEOUT).map_err(|e| VmmError::Snapshot {
            vmm: VMM,
            what: format!("connecting to QMP: {}", banger_proto_free_chain(&e)),
        })?;
        snapshot::save_state(&mut q, to, timeout)
    }
}

/// How long each QMP exchange may take (the greeting with the
/// capabilities, then each command).
const QMP_TIMEOUT: Duration = Duration::from_secs(2);

/// The ACPI power button, after `cont`: a paused guest would never see it,
/// and `cont` on a running one changes nothing. Best effort.
fn powerdown(q: &mut Qmp) {
    let _ = q.execute("cont");
    let _ = q.execute("system_powerdown");
}

/// `stop` (pause) or `cont` (resume), then `query-status`: QEMU must
/// report `paused` or `running`. Both commands succeed on a guest already
/// in that state.
fn set_vcpus(q: &mut Qmp, to: Vcpus) -> Result<(), VmmError> {
    let (command, expected) = match to {
        Vcpus::Paused => ("stop", "paused"),
        Vcpus::Running => ("cont", "running"),
    };
    q.execute(command)
        .map_err(|e| qmp_failed(to, command, &e))?;
    let reported = q.status().map_err(|e| qmp_failed(to, "query-status", &e))?;
    // After a snapshot was saved QEMU reports `postmigrate`: paused, its
    // disks inactive until a `cont`.
    let paused_after_save = to == Vcpus::Paused && reported == "postmigrate";
    if reported != expected && !paused_after_save {
        return Err(VmmError::RunState {
            vmm: VMM,
            request: command,
            expected,
            reported: crate::quoted(&reported),
        });
    }
    Ok(())
}

/// A QMP failure during a pause or resume, naming the step.
fn qmp_failed(to: Vcpus, step: &str, e: &QmpError) -> VmmError {
    VmmError::Api {
        vmm: VMM,
        what: format!("{}: {step}: {}", to.verb(), banger_proto_free_chain(e)),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn banger_proto_free_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
