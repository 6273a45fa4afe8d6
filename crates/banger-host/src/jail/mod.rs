//! The jail a hostile-input tool runs in: a uid that owns nothing, its own
//! mount, pid, IPC, UTS and network namespaces, a read-only tmpfs root that
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
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, OpenTreeFlags};

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

/// One file or directory bound into the jail.
#[derive(Debug, Clone)]
struct Bind {
    /// A descriptor of the file or directory (any open mode, `O_PATH`
    /// included): the inode bound, never a path resolved again.
    fd: Arc<OwnedFd>,
    /// Absolute path inside the jail, one component below `/`.
    at: String,
    writable: bool,
}

/// Who a jailed tool runs as and what it sees besides `/usr` and `/dev`.
#[derive(Debug, Clone)]
pub struct Jail {
    uid: u32,
    gid: u32,
    binds: Vec<Bind>,
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
        }
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Bind the file or directory behind `fd` at `/<name>` (one plain
    /// component), read-only unless `writable`. Never executable, never
    /// set-id, device nodes only when the source is one.
    pub fn bind(mut self, fd: BorrowedFd<'_>, name: &str, writable: bool) -> std::io::Result<Jail> {
        check_bind_name(name)?;
        let fd = fd.try_clone_to_owned()?;
        self.binds.push(Bind {
            fd: Arc::new(fd),
            at: name.to_string(),
            writable,
        });
        Ok(self)
    }
}

/// A bind name is one plain token: letters, digits, `.`, `_`, `-`, not
/// `.`, `..` or `exe` (the program's own place).
fn check_bind_name(name: &str) -> std::io::Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(plain)
        || matches!(name, "." | ".." | "exe")
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("jail bind name {name:?}: one plain component, not `exe`"),
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
}

/// The child's standard descriptors and its error pipe, all numbered 10
/// or above so that wiring 0-3 never overwrites one not yet used.
struct ChildFds {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    err: OwnedFd,
}

/// A jailed child: pid 1 of its namespaces, held through a pidfd.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    pidfd: OwnedFd,
    status: Option<std::process::ExitStatus>,
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

    /// Reap it if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.wait_flags(libc::WNOHANG)
    }

    /// Wait for it to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.wait_flags(0)? {
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

    fn wait_flags(&mut self, flags: i32) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own unreaped child (the pidfd keeps the
        // pid from being recycled while we hold it unreaped) with a valid
        // pointer to a c_int.
        let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
        match r {
            0 => Ok(None),
            r if r == self.pid => {
                let s = std::process::ExitStatus::from_raw(raw);
                self.status = Some(s);
                Ok(Some(s))
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}

/// Start `program` (a resolved absolute path) with `args` and `env` in
/// `jail`; stdin is piped when `piped_stdin`, else `/dev/null`; stdout and
/// stderr are piped.
pub fn spawn(
    jail: &Jail,
    program: &Path,
    argv0: &OsStr,
    args: &[std::ffi::OsString],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    piped_stdin: bool,
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
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
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
    let Cloned { pid, pidfd, report } = match spawner::running() {
        Some(s) => s.spawn(request)?,
        None => {
            let cloned = clone_jailed(&request, 0)?;
            // The child's ends, so that its exit is the pipes' EOF.
            drop(request);
            cloned
        }
    };
    let mut child = Child {
        pid,
        pidfd,
        status: None,
        stdin: in_w.map(File::from),
        stdout: Some(File::from(out_r)),
        stderr: Some(File::from(err_r)),
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

/// A child just cloned: its pid, its pidfd and what it reported before
/// `execve` (`None`: it got there; else (step, errno), still to reap).
#[derive(Debug)]
pub(super) struct Cloned {
    pid: i32,
    pidfd: OwnedFd,
    report: Option<(u32, i32)>,
}

/// Prepare `r` and clone its child with `extra` clone flags
/// (`CLONE_PARENT` in the spawner): its pid, its pidfd and what it
/// reported before `execve` (`None`: it got there).
fn clone_jailed(r: &spawner::Request, extra: libc::c_int) -> std::io::Result<Cloned> {
    let prepared = prepare(&r.jail, r.program.as_fd(), &r.argv0, &r.args, &r.env)?;
    let (status_r, status_w) = pipe()?;
    let [stdin, stdout, stderr] = &r.stdio;
    let fds = ChildFds {
        stdin: high(stdin.try_clone()?)?,
        stdout: high(stdout.try_clone()?)?,
        stderr: high(stderr.try_clone()?)?,
        err: high(status_w)?,
    };
    let argv_ptrs = ptrs(&prepared.argv);
    let envp_ptrs = ptrs(&prepared.envp);
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET
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
        child::child(&prepared, &fds, &argv_ptrs, &envp_ptrs);
    }
    let clone_error = std::io::Error::last_os_error();
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
            Err(e) => return Err(e.into()),
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
    })
}

/// This thread's signal mask with every signal blocked (the kernel keeps
/// `SIGKILL` and `SIGSTOP` deliverable), until dropped, which puts the
/// mask it had back. Raw `rt_sigprocmask`, as the child uses.
pub(super) struct SignalsBlocked {
    old: u64,
}

impl SignalsBlocked {
    pub(super) fn all() -> std::io::Result<SignalsBlocked> {
        let all: u64 = !0;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask(SIG_SETMASK) from and into valid 8-byte
        // sets, the kernel's sigset size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all as *const u64,
                &mut old as *mut u64,
                8usize,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SignalsBlocked { old })
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: as in `all`; the set is the one saved there.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.old as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// `fd` moved to a number of at least 10 (close-on-exec).
fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 10)?)
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

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Set `attrs` on the detached mount `tree` (recursively when asked).
fn set_attrs(tree: BorrowedFd<'_>, attrs: MountAttrFlags, recursive: bool) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: u64::from(attrs.bits()),
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a
    // valid, initialised struct with the kernel's layout; the path is a
    // NUL-terminated empty string with AT_EMPTY_PATH, so `tree` itself is
    // changed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn tree_of(fd: BorrowedFd<'_>, path: &CStr, recursive: bool) -> std::io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if path.is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    Ok(rustix::mount::open_tree(fd, path, flags)?)
}

/// The jail's root (populated, then read-only) and its detached binds.
fn prepare(
    jail: &Jail,
    program: BorrowedFd<'_>,
    argv0: &OsStr,
    args: &[std::ffi::OsString],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> std::io::Result<Prepared> {
    let fs = rustix::mount::fsopen(c"tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (k, v) in [("size", "1m"), ("nr_inodes", "256"), ("mode", "0755")] {
        rustix::mount::fsconfig_set_string(&fs, k, v)?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    let root = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    let ro = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV;
    let mut mounts = Vec::new();
    // /usr, read-only, and the merged-/usr links (or directories).
    rustix::fs::mkdirat(&root, "usr", Mode::from_raw_mode(0o755))?;
    let usr = tree_of(CWD, c"/usr", true)?;
    set_attrs(usr.as_fd(), ro, true)?;
    mounts.push((usr, c"usr".to_owned()));
    for name in USR_LINKS {
        let host = format!("/{name}");
        match rustix::fs::readlinkat(CWD, host.as_str(), Vec::new()) {
            Ok(target) => rustix::fs::symlinkat(target.as_c_str(), &root, name)?,
            Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::INVAL) => {
                // A real directory on a system without merged /usr.
                rustix::fs::mkdirat(&root, name, Mode::from_raw_mode(0o755))?;
                let t = tree_of(CWD, &cstring(host.as_bytes())?, true)?;
                set_attrs(t.as_fd(), ro, true)?;
                mounts.push((t, cstring(name.as_bytes())?));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // A minimal /dev of bound host nodes.
    rustix::fs::mkdirat(&root, "dev", Mode::from_raw_mode(0o755))?;
    for (name, node) in DEVICES.iter().zip(device_nodes(Path::new("/dev"))?) {
        let at = format!("dev/{name}");
        touch(&root, &at)?;
        let t = tree_of(node.as_fd(), c"", false)?;
        set_attrs(
            t.as_fd(),
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
            false,
        )?;
        mounts.push((t, cstring(at.as_bytes())?));
    }
    // The program itself, read-only and executable.
    touch(&root, &EXE[1..])?;
    let t = tree_of(program, c"", false)?;
    set_attrs(t.as_fd(), ro, false)?;
    mounts.push((t, cstring(&EXE.as_bytes()[1..])?));
    // The caller's files and directories; the largest writable one sets
    // the file-size limit (the tools write their disk in place).
    let mut max_file = 0u64;
    for b in &jail.binds {
        let st = rustix::fs::fstat(b.fd.as_fd())?;
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        if b.writable {
            max_file = max_file.max(bind_size(b.fd.as_fd(), kind, st.st_size)?);
        }
        if kind == rustix::fs::FileType::Directory {
            rustix::fs::mkdirat(&root, b.at.as_str(), Mode::from_raw_mode(0o755))?;
        } else {
            touch(&root, &b.at)?;
        }
        let t = tree_of(b.fd.as_fd(), c"", false)?;
        let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        if !b.writable {
            attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
        }
        if !matches!(
            kind,
            rustix::fs::FileType::BlockDevice | rustix::fs::FileType::CharacterDevice
        ) {
            attrs |= MountAttrFlags::MOUNT_ATTR_NODEV;
        }
        set_attrs(t.as_fd(), attrs, false)?;
        mounts.push((t, cstring(b.at.as_bytes())?));
    }
    // Nothing in the jail's root is writable.
    set_attrs(root.as_fd(), MountAttrFlags::MOUNT_ATTR_RDONLY, false)?;
    let mut argv = vec![cstring(argv0.as_bytes())?];
    for a in args {
        argv.push(cstring(a.as_bytes())?);
    }
    let mut envp = Vec::new();
    for (k, v) in env {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(&kv)?);
    }
    let filter = filter::program().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no jail seccomp filter for this architecture",
        )
    })?;
    Ok(Prepared {
        root,
        mounts,
        exe: cstring(EXE.as_bytes())?,
        argv,
        envp,
        uid: jail.uid,
        gid: jail.gid,
        limits: limits(max_file),
        filter,
    })
}

/// The host nodes of the jail's minimal `/dev`, [`DEVICES`] in order,
/// beneath `dev` (`/dev`; a parameter for the tests), each opened
/// `O_PATH|O_NOFOLLOW` and refused unless it is the character device its
/// name says ([`DEVICE_IDS`]): a link, a file or another device planted
/// in its place is never bound (second read of F1, finding 6). The jail
/// clones each by this descriptor.
fn device_nodes(dev: &Path) -> std::io::Result<Vec<OwnedFd>> {
    let dir = rustix::fs::open(
        dev,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    DEVICES
        .iter()
        .zip(DEVICE_IDS)
        .map(|(name, (major, minor))| {
            let fd = rustix::fs::openat(
                &dir,
                *name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = rustix::fs::fstat(&fd)?;
            let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
            if kind != rustix::fs::FileType::CharacterDevice
                || st.st_rdev != rustix::fs::makedev(major, minor)
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "jail: {}/{name} is not the character device {major}:{minor} \
                         (a {kind:?}, {}:{})",
                        dev.display(),
                        rustix::fs::major(st.st_rdev),
                        rustix::fs::minor(st.st_rdev)
                    ),
                ));
            }
            Ok(fd)
        })
        .collect()
}

/// The resource limits of a jailed tool whose largest writable file holds
/// `max_file` bytes: no core dumps, no file grown past that, few
/// processes and descriptors, bounded memory.
fn limits(max_file: u64) -> [(libc::c_int, libc::rlimit64); 6] {
    let both = |v: u64| libc::rlimit64 {
        rlim_cur: v,
        rlim_max: v,
    };
    [
        (libc::RLIMIT_CORE as libc::c_int, both(0)),
        (libc::RLIMIT_FSIZE as libc::c_int, both(max_file)),
        (
            libc::RLIMIT_NPROC as libc::c_int,
            both(u64::from(MAX_PROCESSES)),
        ),
        (libc::RLIMIT_NOFILE as libc::c_int, both(MAX_OPEN_FILES)),
        (libc::RLIMIT_AS as libc::c_int, both(MAX_MEMORY)),
        (libc::RLIMIT_DATA as libc::c_int, both(MAX_MEMORY)),
    ]
}

/// The size of a writable bind: a regular file's length, a block device's
/// capacity (`BLKGETSIZE64`), 0 for anything else.
fn bind_size(fd: BorrowedFd<'_>, kind: rustix::fs::FileType, len: i64) -> std::io::Result<u64> {
    match kind {
        rustix::fs::FileType::RegularFile => Ok(u64::try_from(len).unwrap_or(0)),
        rustix::fs::FileType::BlockDevice => {
            let mut bytes = 0u64;
            // SAFETY: BLKGETSIZE64 writes one u64 through a valid pointer.
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64, &mut bytes as *mut u64) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(bytes)
        }
        _ => Ok(0),
    }
}

/// `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// An empty file at `rel` beneath `dir`, a mount point for a file.
fn touch(dir: &OwnedFd, rel: &str) -> std::io::Result<()> {
    rustix::fs::openat(
        dir,
        rel,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    Ok(())
}

mod acl;
mod caps;
mod child;
mod filter;
mod lockdown;
mod range;
pub mod spawner;
mod sweep;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_acl;
#[cfg(test)]
mod tests_hardening;

pub use acl::{
    ACL_XATTR, Grant, Prior, acl_with_user, grant, grant_recorded, read_acl, restore, revoke,
};
pub use lockdown::{HELPER_CAPS, lock_down};
pub use range::{RangeInUse, check_unused};
pub use sweep::kill_range;
