//! The jail a hostile-input tool runs in: a uid that owns nothing, its own
//! mount, pid, IPC, UTS and network namespaces (the network one made by
//! its cloner and handed back when asked: [`Jail::net_handles`]), a
//! read-only tmpfs root that
//! holds `/usr` (read-only), a minimal `/dev` and exactly the files bound
//! into it, no capabilities, `no_new_privs`, no descriptor but its stdio.
//!
//! Everything the child needs is prepared in the parent, before the
//! clone: the detached mounts (`fsopen`/`fsmount` for the root,
//! `open_tree(OPEN_TREE_CLONE)` for each bind — binding a descriptor from
//! inside the new namespace fails with `EINVAL`), the C strings of argv and
//! envp, the pipes. The child then makes raw system calls only, with no
//! allocation and no lock (the parent is multithreaded): attach the root,
//! attach the binds beneath it, `pivot_root`, drop the ids, `execve`. A
//! failing step writes its number and errno to a close-on-exec pipe; an
//! `execve` that works closes it.
//!
//! In `bangerd-root` the clone is made by the jail spawner
//! ([`spawner`]), forked before the helper had threads, because the
//! helper itself has locked itself out of mounts and namespaces
//! ([`lock_down`]); the child is still the helper's (`CLONE_PARENT`).
//!
//! The child is pid 1 of its pid namespace: when it exits, the kernel kills
//! whatever it left behind before its exit can be reaped, so nothing a tool
//! started outlives it holding a descriptor of a disk.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

/// Where the child attaches its root inside its own mount namespace before
/// `pivot_root`: any directory that exists and only root can replace.
/// Nothing is mounted there outside the child's namespace.
const STAGE: &CStr = c"/tmp";
/// Where the program itself is bound inside the jail.
pub const EXE: &str = "/exe";
/// Directories of a merged-`/usr` system that are symlinks into `/usr`;
/// where one is a real directory instead it is bound read-only too.
const USR_LINKS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Device nodes a tool may open, bound from the host's `/dev`.
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];
/// Each of [`DEVICES`]' (major, minor) (`Documentation/admin-guide/devices.txt`).
const DEVICE_IDS: [(u32, u32); 5] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)];

/// `RLIMIT_NPROC` of a jailed tool. The kernel counts it per real uid
/// across the host, so it bounds every concurrent tool of one jail uid
/// together: room for a few at once, none of which forks much.
pub const MAX_PROCESSES: u32 = 64;
/// `RLIMIT_NOFILE` of a jailed tool.
pub const MAX_OPEN_FILES: u64 = 256;
/// `RLIMIT_AS` and `RLIMIT_DATA` of a jailed tool: e2fsck on a large disk
/// needs a few hundred MiB; a parser made to allocate without end stops
/// here instead of at the host's memory.
pub const MAX_MEMORY: u64 = 4 << 30;

/// The descriptor number the child keeps its error pipe at until `execve`
/// closes it: above every pass-through number ([`MAX_PASSED_FD`]).
const ERR_FD: i32 = 64;
/// The highest number a descriptor can be passed through at.
pub const MAX_PASSED_FD: i32 = ERR_FD - 1;
/// Where the parent puts every descriptor the child moves (stdio, the
/// error pipe, pass-throughs): above every number the child moves one to.
const HIGH_FD: i32 = 100;

/// Resource limits of a long-lived jailed process (a VMM), in place of the
/// disk tools' defaults ([`MAX_PROCESSES`], [`MAX_OPEN_FILES`],
/// [`MAX_MEMORY`], `RLIMIT_FSIZE` from the writable binds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_AS` and `RLIMIT_DATA`.
    pub memory: u64,
    /// `RLIMIT_NPROC` (threads count: the kernel counts tasks of the uid).
    pub processes: u32,
    /// `RLIMIT_NOFILE` (at least 100: the child places descriptors up to
    /// number 64 after setting it).
    pub open_files: u64,
    /// `RLIMIT_FSIZE`.
    pub file_size: u64,
}

/// A descriptor the child keeps at a fixed number.
#[derive(Debug, Clone)]
struct Pass {
    fd: Arc<OwnedFd>,
    at: i32,
}

/// A regular file whose bytes are copied into the jail's own root.
#[derive(Debug, Clone)]
struct CopyIn {
    fd: Arc<OwnedFd>,
    at: String,
}

/// The most bytes [`Jail::copy_in`] puts into a jail's root in all.
pub const MAX_COPIED: u64 = 1 << 30;

/// One file or directory bound into the jail.
#[derive(Debug, Clone)]
struct Bind {
    /// A descriptor of the file or directory (any open mode, `O_PATH`
    /// included): the inode bound, never a path resolved again.
    fd: Arc<OwnedFd>,
    /// Path inside the jail relative to `/`: one component, or
    /// `dev/kvm` for the KVM device ([`Jail::bind_kvm`]), or `dev/net/tun`
    /// for the tun clone device ([`Jail::bind_tun`]).
    at: String,
    writable: bool,
}

/// Who a jailed tool runs as and what it sees besides `/usr` and `/dev`.
#[derive(Debug, Clone)]
pub struct Jail {
    uid: u32,
    gid: u32,
    binds: Vec<Bind>,
    passes: Vec<Pass>,
    copies: Vec<CopyIn>,
    /// `Some` for a long-lived process: these limits, no parent-death
    /// signal, its own session, not killed when its [`Child`] is dropped.
    long_lived: Option<Limits>,
    /// The cgroup the child joins ([`Jail::cgroup`]): it writes `0` to
    /// the `cgroup.procs` descriptor root opened.
    cgroup: Option<Arc<CgroupFds>>,
    /// Its network namespace is made by the cloner, which hands back a
    /// descriptor of it and a route netlink socket opened in it
    /// ([`Jail::net_handles`], [`JailNet`]).
    net_handles: bool,
}

impl Jail {
    /// A jail running as `uid`:`gid` with no supplementary groups. The
    /// caller guarantees the ids own nothing on the host (see
    /// `banger_proto::install::JailIds`); root (0) is refused at spawn.
    pub fn new(uid: u32, gid: u32) -> Jail {
        Jail {
            uid,
            gid,
            binds: Vec::new(),
            passes: Vec::new(),
            copies: Vec::new(),
            long_lived: None,
            cgroup: None,
            net_handles: false,
        }
    }

    /// Run the child in the cgroup `dir` (a cgroup2 directory) whose
    /// `cgroup.procs` `procs` is, opened for writing by this (root)
    /// process ([`check_cgroup`]). The child writes `0` to it before it
    /// drops its ids; the kernel checks the credentials of whoever opened
    /// the file, so the jail uid never needs any right on the cgroup.
    pub fn cgroup(mut self, dir: BorrowedFd<'_>, procs: BorrowedFd<'_>) -> std::io::Result<Jail> {
        check_cgroup(dir, procs)?;
        self.cgroup = Some(Arc::new(CgroupFds {
            dir: dir.try_clone_to_owned()?,
            procs: procs.try_clone_to_owned()?,
        }));
        Ok(self)
    }

    /// A network namespace of its own, as every jail has, but made by
    /// the cloner (`unshare(CLONE_NEWNET)` on the cloning thread, which
    /// then clones the child without `CLONE_NEWNET` and goes back to its
    /// own namespace), which hands back, with the child's pidfd, a
    /// descriptor of that namespace J and a `NETLINK_ROUTE` socket it
    /// opened in J with `CAP_NET_ADMIN` ([`JailNet`], from
    /// [`Child::take_net`] or `Spawned::take_jail_net`). Firecracker
    /// attaches its tap by name in its own namespace: root moves the tap
    /// into J by J's descriptor (from the host's side) and back through
    /// the socket (a link leaves a namespace only by a request sent in
    /// it, and the kernel checks the socket opener's capabilities).
    /// Nothing of the host's network is in J: only `lo`, down.
    pub fn net_handles(mut self) -> Jail {
        self.net_handles = true;
        self
    }

    /// A long-lived process (a VMM): `limits` instead of the tools'
    /// defaults; no parent-death signal (it outlives a restart of the
    /// daemon that started it); a session of its own (a signal to the
    /// daemon's process group does not reach it); dropping its [`Child`]
    /// leaves it running.
    pub fn long_lived(mut self, limits: Limits) -> Jail {
        self.long_lived = Some(limits);
        self
    }

    /// Give the child the descriptor `fd` (a duplicate: the same open file
    /// description) at number `at`, 3 to [`MAX_PASSED_FD`], each number
    /// once.
    pub fn pass(mut self, fd: BorrowedFd<'_>, at: i32) -> std::io::Result<Jail> {
        check_pass(&self.passes, at)?;
        self.passes.push(Pass {
            fd: Arc::new(fd.try_clone_to_owned()?),
            at,
        });
        Ok(self)
    }

    /// Copy the regular file behind `fd` (read from its start, whatever
    /// its permissions say about the jail's uid) into the jail's own root
    /// at `/<name>`, root's, mode 0444: the jailed process reads a copy
    /// made at spawn, never the caller's inode. At most [`MAX_COPIED`]
    /// bytes in all.
    pub fn copy_in(mut self, fd: BorrowedFd<'_>, name: &str) -> std::io::Result<Jail> {
        check_name(name, "copy")?;
        self.copies.push(CopyIn {
            fd: Arc::new(fd.try_clone_to_owned()?),
            at: name.to_string(),
        });
        Ok(self)
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Bind the file or directory behind `fd` at `/<name>` (one plain
    /// component), read-only unless `writable`. Never executable, never
    /// set-id, device nodes only when the source is one. A read-only bind
    /// keeps a file or directory from being written; it does **not** keep
    /// a device node (a block device) from being opened for writing: the
    /// kernel checks only the node's mode and ACL for that. A caller that
    /// binds a block device read-only relies on its permissions refusing
    /// the jail's uid writing (the disk tools' read-only grants), or must
    /// not bind it (a jailed Firecracker's read-only drive is refused).
    pub fn bind(mut self, fd: BorrowedFd<'_>, name: &str, writable: bool) -> std::io::Result<Jail> {
        check_name(name, "bind")?;
        let fd = fd.try_clone_to_owned()?;
        self.binds.push(Bind {
            fd: Arc::new(fd),
            at: name.to_string(),
            writable,
        });
        Ok(self)
    }

    /// Bind the host's `/dev/kvm` behind `fd` at `/dev/kvm` (a read-only
    /// mount: the node still opens read-write, see
    /// [`Jail::bind_device`]): QEMU opens that path and has no option
    /// naming another. One of the
    /// two character devices a jail takes ([`JAIL_DEVICES`]), and only as
    /// that device (10:232).
    pub fn bind_kvm(self, fd: BorrowedFd<'_>) -> std::io::Result<Jail> {
        self.bind_device(fd, KVM_AT)
    }

    /// Bind the host's `/dev/net/tun` behind `fd` at `/dev/net/tun` (a
    /// read-only mount, as for KVM): Firecracker opens that path to attach
    /// its tap by name, in its own network namespace (where root moves the
    /// tap for that: [`Jail::net_handles`]). Only as that device (10:200),
    /// opened `O_PATH|O_NOFOLLOW`, as for KVM. The clone device lets it
    /// attach only a tap of its namespace whose tun owner is its uid (or
    /// one with no owner and no group); making a new one needs
    /// `CAP_NET_ADMIN`, which it lacks.
    pub fn bind_tun(self, fd: BorrowedFd<'_>) -> std::io::Result<Jail> {
        self.bind_device(fd, TUN_AT)
    }

    /// Bind the device behind `fd` at `at`, one of [`JAIL_DEVICES`]'
    /// places, once [`check_device`] took it, as a read-only mount. A
    /// mount's read-only flag does not stop opening a device node for
    /// writing (the node's mode does), so the VMM still opens it
    /// read-write; it stops changing the host node's inode through the
    /// bind (its times, hostile read of the jailed driver, F4).
    fn bind_device(mut self, fd: BorrowedFd<'_>, at: &str) -> std::io::Result<Jail> {
        check_device(fd, at)?;
        self.binds.push(Bind {
            fd: Arc::new(fd.try_clone_to_owned()?),
            at: at.to_string(),
            writable: false,
        });
        Ok(self)
    }
}

/// A name in the jail's root (`what`: a bind or a copy): one plain token
/// of letters, digits, `.`, `_`, `-`, at most 64 bytes, not `.`, `..` or a
/// name the jail itself uses (`exe`, `usr`, `dev`, the merged-`/usr`
/// links).
fn check_name(name: &str, what: &str) -> std::io::Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let taken = ["exe", "usr", "dev"].contains(&name) || USR_LINKS.contains(&name);
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(plain)
        || matches!(name, "." | "..")
        || taken
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("jail {what} name {name:?}: one plain component, not one the jail uses"),
        ));
    }
    Ok(())
}

/// A pass-through number: 3 to [`MAX_PASSED_FD`], none of `passes`'.
fn check_pass(passes: &[Pass], at: i32) -> std::io::Result<()> {
    if !(3..=MAX_PASSED_FD).contains(&at) || passes.iter().any(|p| p.at == at) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("jail descriptor number {at}: 3 to {MAX_PASSED_FD}, each once"),
        ));
    }
    Ok(())
}

/// Everything the child reads, made before the clone.
struct Prepared {
    root: OwnedFd,
    /// (detached tree, path relative to the jail root) in attach order.
    mounts: Vec<(OwnedFd, CString)>,
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    uid: u32,
    gid: u32,
    /// `prlimit64` resources and limits, set before the uid changes.
    limits: [(libc::c_int, libc::rlimit64); 6],
    /// The seccomp filter, installed after `no_new_privs`.
    filter: Vec<filter::Insn>,
    /// Long-lived: no parent-death signal, a session of its own.
    long_lived: bool,
    /// The cgroup whose `cgroup.procs` the child writes `0` to
    /// ([`Jail::cgroup`]).
    cgroup: Option<std::sync::Arc<CgroupFds>>,
    /// The Landlock ruleset scoping abstract sockets and signals the child
    /// enters; `None` where the kernel has none ([`scope_support`]).
    scope: Option<OwnedFd>,
}

/// The child's standard descriptors, its error pipe and its pass-through
/// descriptors, all numbered [`HIGH_FD`] or above so that moving them to
/// their numbers never overwrites one not yet moved.
struct ChildFds {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    err: OwnedFd,
    /// (descriptor, the number it gets).
    passes: Vec<(OwnedFd, i32)>,
}

/// Where a jailed child's stdout and stderr go.
#[derive(Debug)]
pub enum Output {
    /// Pipes, read through [`Child::stdout`] and [`Child::stderr`].
    Piped,
    /// Both onto this file (a VMM's log).
    File(File),
}

/// A jailed child: pid 1 of its namespaces, held through a pidfd.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: OwnedFd,
    status: Option<std::process::ExitStatus>,
    /// Killed and reaped when dropped (not a long-lived one).
    kill_on_drop: bool,
    /// Its network namespace's handles ([`Jail::net_handles`]).
    net: Option<JailNet>,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl Child {
    /// The child's pid as the caller's pid namespace sees it.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Its pidfd: signals by it reach this child and no other.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.pidfd.as_fd()
    }

    /// Its network namespace's handles, once ([`Jail::net_handles`]).
    pub fn take_net(&mut self) -> Option<JailNet> {
        self.net.take()
    }

    /// Reap it if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.wait_flags(rustix::process::WaitIdOptions::NOHANG)
    }

    /// Wait for it to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.wait_flags(rustix::process::WaitIdOptions::empty())? {
                return Ok(s);
            }
        }
    }

    /// SIGKILL through the pidfd (the kernel then kills the rest of its
    /// pid namespace).
    pub fn kill(&mut self) -> std::io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reap it through its pidfd (`waitid(P_PIDFD)`), never by pid: a pid
    /// names this child only while it is unreaped (third read of F1,
    /// finding c). `NOHANG` in `options` for a poll.
    fn wait_flags(
        &mut self,
        options: rustix::process::WaitIdOptions,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let got = match rustix::process::waitid(
            rustix::process::WaitId::PidFd(self.pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED | options,
        ) {
            Ok(got) => got,
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(got) = got else { return Ok(None) };
        // The wait status `ExitStatus` holds: the code in bits 8-15, or
        // the signal in bits 0-6 (and 0x80 for a core dump).
        let raw = match (got.exit_status(), got.terminating_signal()) {
            (Some(code), _) if got.exited() => (code & 0xff) << 8,
            (_, Some(sig)) => sig | if got.dumped() { 0x80 } else { 0 },
            _ => return Ok(None),
        };
        spawner::disown(self.pid);
        let s = std::process::ExitStatus::from_raw(raw);
        self.status = Some(s);
        Ok(Some(s))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.kill_on_drop && self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}

/// Start `program` (a resolved absolute path) with `args` and `env` in
/// `jail`; stdin is piped when `piped_stdin`, else `/dev/null`; stdout and
/// stderr as `output` says.
pub fn spawn(
    jail: &Jail,
    program: &Path,
    argv0: &OsStr,
    args: &[std::ffi::OsString],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    piped_stdin: bool,
    output: Output,
) -> std::io::Result<Child> {
    if jail.uid == 0 || jail.gid == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a jail never runs as root",
        ));
    }
    let exe = rustix::fs::open(program, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    let (in_r, in_w) = if piped_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = rustix::fs::open(
            c"/dev/null",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        (null, None)
    };
    let (out_r, out_w, err_r, err_w) = match output {
        Output::Piped => {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            (Some(out_r), out_w, Some(err_r), err_w)
        }
        Output::File(f) => {
            let f = OwnedFd::from(f);
            let g = f.try_clone()?;
            (None, f, None, g)
        }
    };
    let request = spawner::Request {
        jail: jail.clone(),
        program: exe,
        argv0: argv0.to_os_string(),
        args: args.to_vec(),
        env: env.to_vec(),
        stdio: [in_r, out_w, err_w],
    };
    // In the locked-down helper the spawner clones; elsewhere (dev mode,
    // tests) this process does.
    let Cloned {
        pid,
        pidfd,
        report,
        net,
    } = match spawner::running() {
        Some(s) => s.spawn(request)?,
        None => {
            // This process is the child's parent.
            let me = rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            )?;
            let cloned = clone_jailed(&request, 0, me.as_fd())?;
            // The child's ends, so that its exit is the pipes' EOF.
            drop(request);
            cloned
        }
    };
    let mut child = Child {
        pid,
        pidfd,
        status: None,
        kill_on_drop: jail.long_lived.is_none(),
        net,
        stdin: in_w.map(File::from),
        stdout: out_r.map(File::from),
        stderr: err_r.map(File::from),
    };
    match report {
        None => Ok(child),
        Some((step, errno)) => {
            let _ = child.wait();
            Err(report_error(step, errno))
        }
    }
}

/// The error a child's (step, errno) report stands for.
fn report_error(step: u32, errno: i32) -> std::io::Error {
    let os = std::io::Error::from_raw_os_error(errno);
    std::io::Error::new(
        os.kind(),
        format!("jail: {}: {os}", child::Step::name(step)),
    )
}

/// A child just cloned: its pid, its pidfd, what it reported before
/// `execve` (`None`: it got there; else (step, errno), still to reap) and
/// its network namespace's handles when its jail asked for them.
#[derive(Debug)]
pub(super) struct Cloned {
    pid: i32,
    pidfd: OwnedFd,
    report: Option<(u32, i32)>,
    net: Option<JailNet>,
}

/// Prepare `r` and clone its child with `extra` clone flags
/// (`CLONE_PARENT` in the spawner): its pid, its pidfd and what it
/// reported before `execve` (`None`: it got there). `parent` is a pidfd
/// of the process that will be the child's parent (this one, or with
/// `CLONE_PARENT` the helper), taken before the clone: the child gives up
/// when that process has exited by the time its parent-death signal is
/// armed.
fn clone_jailed(
    r: &spawner::Request,
    extra: libc::c_int,
    parent: BorrowedFd<'_>,
) -> std::io::Result<Cloned> {
    let prepared = prepare(&r.jail, r.program.as_fd(), &r.argv0, &r.args, &r.env)?;
    let (status_r, status_w) = pipe()?;
    let [stdin, stdout, stderr] = &r.stdio;
    let mut passes = Vec::with_capacity(r.jail.passes.len());
    for p in &r.jail.passes {
        passes.push((high(p.fd.as_ref().try_clone()?)?, p.at));
    }
    let fds = ChildFds {
        stdin: high(stdin.try_clone()?)?,
        stdout: high(stdout.try_clone()?)?,
        stderr: high(stderr.try_clone()?)?,
        err: high(status_w)?,
        passes,
    };
    let argv_ptrs = ptrs(&prepared.argv);
    let envp_ptrs = ptrs(&prepared.envp);
    // A network namespace of its own: made here, on this thread, when the
    // jail wants its handles (the child then inherits it); else by the
    // clone.
    let own_net = if r.jail.net_handles {
        Some(netns::ThreadNet::enter_new()?)
    } else {
        None
    };
    let net = if own_net.is_some() {
        0
    } else {
        libc::CLONE_NEWNET
    };
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | net
        | libc::CLONE_PIDFD
        | extra;
    let mut pidfd: libc::c_int = -1;
    // Every signal blocked across the clone, as posix_spawn does: the
    // child must not run a handler of this process's before it resets
    // them all (its last step before execve, which also unblocks).
    let blocked = SignalsBlocked::all()?;
    // SAFETY: the raw clone system call without CLONE_VM is a fork: the
    // child gets a copy of this address space with only the calling
    // thread. It runs `child` only, which makes raw system calls on data
    // prepared above (no allocation, no lock another thread could hold)
    // and never returns. `pidfd` is a valid c_int the kernel writes the
    // pidfd into (CLONE_PIDFD uses the parent_tid argument); the null
    // stack means "the current stack, copied", as fork does.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            &mut pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        child::child(&prepared, &fds, parent, &argv_ptrs, &envp_ptrs);
    }
    let clone_error = std::io::Error::last_os_error();
    // Back in this thread's own network namespace, on every path (or the
    // process ends: see `ThreadNet::leave`).
    let net = own_net.map(netns::ThreadNet::leave);
    drop(blocked);
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: CLONE_PIDFD succeeded, so the kernel wrote a new descriptor
    // that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(fds);
    drop(prepared);
    // Whatever the child reports before execve (or EOF when it worked).
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match rustix::io::read(&status_r, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(lost_report(&pidfd, e)),
        }
    }
    let report = (got > 0).then(|| {
        let step = u32::from_ne_bytes(report[..4].try_into().unwrap_or_default());
        let errno = i32::from_ne_bytes(report[4..].try_into().unwrap_or_default());
        (step, errno)
    });
    Ok(Cloned {
        pid: pid as i32,
        pidfd,
        report,
        net,
    })
}

/// How long [`lost_report`] waits for the clone it killed to exit.
const LOST_CLONE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reading a clone's report failed (`e`): the clone is not left running
/// unheld once its pidfd goes (hostile read of the merged spawner, I2). It
/// is killed through its pidfd, and reaped where it is this process's
/// child (in the spawner it is the helper's: killed, it is then the
/// helper's zombie until the helper exits). The error says both. In the
/// spawner, a clone already on its jail uid cannot be killed (no
/// `CAP_KILL`: `EPERM`); docs/jail.md records that as open.
fn lost_report(pidfd: &OwnedFd, e: rustix::io::Errno) -> std::io::Error {
    let killed = match sweep::kill_and_reap(pidfd, LOST_CLONE_WAIT, "clone") {
        Ok(()) => "killed".to_owned(),
        Err(k) => format!("killing it failed: {k}"),
    };
    std::io::Error::new(
        std::io::Error::from(e).kind(),
        format!("reading the clone's report: {e} (the clone {killed})"),
    )
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// `fd` moved to a number of at least [`HIGH_FD`] (close-on-exec).
fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, HIGH_FD)?)
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn cstring(b: &[u8]) -> std::io::Result<CString> {
    CString::new(b).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a NUL byte in an argument",
        )
    })
}

mod acl;
mod caps;
mod cgroup;
mod child;
mod devices;
mod filter;
mod landlock;
mod lockdown;
mod netns;
mod prepare;
mod range;
mod signals;
pub mod spawner;
mod sweep;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_acl;
#[cfg(test)]
mod tests_hardening;
#[cfg(test)]
mod tests_long;

pub use acl::{
    ACL_XATTR, Grant, Prior, acl_with_user, grant, grant_recorded, read_acl, restore, revoke,
};
use cgroup::{CgroupFds, check_cgroup};
use devices::{KVM_AT, TUN_AT, check_device, is_device_place};
pub use landlock::scope_support;
pub use lockdown::{HELPER_CAPS, lock_down};
pub use netns::JailNet;
use prepare::prepare;
pub use range::{RangeInUse, check_unused};
use signals::SignalsBlocked;
pub use sweep::{Spare, gone_before_open, is_journaled, kill_range, start_time, uids_of};
