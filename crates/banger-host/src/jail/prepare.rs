//! What the parent prepares before the clone: the jail's root (a tmpfs
//! made with `fsopen`/`fsmount`, populated through its descriptor, then
//! read-only), the detached bind mounts (`open_tree(OPEN_TREE_CLONE)`),
//! argv and envp as C strings, the resource limits and the seccomp filter.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, OpenTreeFlags};

use super::{
    CopyIn, DEVICE_IDS, DEVICES, EXE, HIGH_FD, Jail, Limits, MAX_COPIED, MAX_MEMORY,
    MAX_OPEN_FILES, MAX_PROCESSES, Prepared, TUN_AT, USR_LINKS, cstring, filter,
};

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
pub(super) fn prepare(
    jail: &Jail,
    program: BorrowedFd<'_>,
    argv0: &OsStr,
    args: &[std::ffi::OsString],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> std::io::Result<Prepared> {
    let mut copied = 0u64;
    // Each copy's length, taken once: the tmpfs is sized for it and
    // exactly that many bytes are copied.
    let mut lengths = Vec::with_capacity(jail.copies.len());
    for c in &jail.copies {
        let st = rustix::fs::fstat(c.fd.as_fd())?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("jail copy /{}: not a regular file", c.at),
            ));
        }
        let len = u64::try_from(st.st_size).unwrap_or(0);
        lengths.push(len);
        copied += len;
    }
    if copied > MAX_COPIED {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("jail copies: {copied} bytes, more than {MAX_COPIED}"),
        ));
    }
    // 1 MiB for the mount points and links, plus the copies page-rounded.
    let size = (1 << 20) + copied + 4096 * jail.copies.len() as u64;
    let fs = rustix::mount::fsopen(c"tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    let size = size.to_string();
    for (k, v) in [
        ("size", size.as_str()),
        ("nr_inodes", "256"),
        ("mode", "0755"),
    ] {
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
    searchable_dir(&root, "dev")?;
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
    // `/dev/net`, where a tun bind goes.
    if jail.binds.iter().any(|b| b.at == TUN_AT) {
        searchable_dir(&root, "dev/net")?;
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
        let device = matches!(
            kind,
            rustix::fs::FileType::BlockDevice | rustix::fs::FileType::CharacterDevice
        );
        if b.at.starts_with("dev/") && !device {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("jail device /{}: not a device node", b.at),
            ));
        }
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
        if !device {
            attrs |= MountAttrFlags::MOUNT_ATTR_NODEV;
        }
        set_attrs(t.as_fd(), attrs, false)?;
        mounts.push((t, cstring(b.at.as_bytes())?));
    }
    for (c, len) in jail.copies.iter().zip(lengths) {
        copy_into(&root, c, len)?;
    }
    // Nothing in the jail's root is writable.
    read_only_root(root.as_fd())?;
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
        limits: match jail.long_lived {
            None => limits(max_file),
            Some(l) => limits_of(l),
        },
        filter,
        long_lived: jail.long_lived.is_some(),
        cgroup: jail.cgroup.clone(),
        scope: super::landlock::scope_ruleset()?,
    })
}

/// Make the jail's root read-only. The kernel refuses (`EBUSY`) while
/// any descriptor of a file on it is open for writing — and a jail cloned
/// meanwhile by another thread holds a copy of each descriptor this one
/// had open (the mount points and copies written above) until its own
/// `close_range`. Retried for up to two seconds (seen: two QEMUs launched
/// at once, one failing with `Device or resource busy`).
fn read_only_root(root: BorrowedFd<'_>) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match set_attrs(root, MountAttrFlags::MOUNT_ATTR_RDONLY, false) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// Copy exactly `len` bytes (the length taken when the jail was sized)
/// of `c`'s file, from its start, into a new 0444 file of the jail's
/// root; a file that shrank below it or grew past it since is refused,
/// never copied to its end.
fn copy_into(root: &OwnedFd, c: &CopyIn, len: u64) -> std::io::Result<()> {
    let to = rustix::fs::openat(
        root,
        c.at.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o444),
    )?;
    // Exactly 0444 whatever the umask: the jail uid reads it.
    rustix::fs::fchmod(&to, Mode::from_raw_mode(0o444))?;
    let to = File::from(to);
    // By offset: the caller's descriptor keeps its own position.
    let changed = |how: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "jail copy /{}: the file {how} its {len} bytes while it was copied",
                c.at
            ),
        )
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from(len - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = rustix::io::pread(c.fd.as_fd(), &mut buf[..want], at)?;
        if n == 0 {
            return Err(changed("shrank below"));
        }
        std::io::Write::write_all(&mut &to, &buf[..n])?;
        at += n as u64;
    }
    if rustix::io::pread(c.fd.as_fd(), &mut buf[..1], len)? > 0 {
        return Err(changed("grew past"));
    }
    Ok(())
}

/// The host nodes of the jail's minimal `/dev`, [`DEVICES`] in order,
/// beneath `dev` (`/dev`; a parameter for the tests), each opened
/// `O_PATH|O_NOFOLLOW` and refused unless it is the character device its
/// name says ([`DEVICE_IDS`]): a link, a file or another device planted
/// in its place is never bound (second read of F1, finding 6). The jail
/// clones each by this descriptor.
pub(super) fn device_nodes(dev: &Path) -> std::io::Result<Vec<OwnedFd>> {
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

/// The resource limits of a long-lived jailed process.
fn limits_of(l: Limits) -> [(libc::c_int, libc::rlimit64); 6] {
    let both = |v: u64| libc::rlimit64 {
        rlim_cur: v,
        rlim_max: v,
    };
    [
        (libc::RLIMIT_CORE as libc::c_int, both(0)),
        (libc::RLIMIT_FSIZE as libc::c_int, both(l.file_size)),
        (
            libc::RLIMIT_NPROC as libc::c_int,
            both(u64::from(l.processes)),
        ),
        // The child moves descriptors up to ERR_FD after the limits are set.
        (
            libc::RLIMIT_NOFILE as libc::c_int,
            both(l.open_files.max(HIGH_FD as u64)),
        ),
        (libc::RLIMIT_AS as libc::c_int, both(l.memory)),
        (libc::RLIMIT_DATA as libc::c_int, both(l.memory)),
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

/// A new directory at `rel` beneath `dir`, exactly 0755 whatever this
/// process's umask (the installed helper's unit has UMask=0077): the jail
/// uid must reach the device nodes in it.
fn searchable_dir(dir: &OwnedFd, rel: &str) -> std::io::Result<()> {
    rustix::fs::mkdirat(dir, rel, Mode::from_raw_mode(0o755))?;
    rustix::fs::chmodat(
        dir,
        rel,
        Mode::from_raw_mode(0o755),
        rustix::fs::AtFlags::empty(),
    )?;
    Ok(())
}

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
