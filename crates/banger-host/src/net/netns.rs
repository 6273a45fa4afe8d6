//! Throwaway network namespaces for real-kernel tests.
//!
//! A network namespace belongs to a thread, not a process: [`in_fresh_netns`]
//! runs a closure on a new thread that has called
//! `unshare(CLONE_NEWNET)`. Sockets it opens, taps it creates and children it
//! spawns (through [`Runner`](crate::runner::Runner)) all live in that
//! namespace; nothing it does can reach the host's own network. When the
//! thread ends (normally or by panic) the namespace and every interface,
//! route and nft table in it disappear with it.
//!
//! Like `ip netns exec`, the thread also gets a mount namespace of its own,
//! in which the host's resolver files read empty: a fresh namespace has no
//! resolver, whatever the machine running the tests uses (the executor
//! refuses a bridge subnet holding the host's resolver).

/// Run `f` on a fresh thread in a new, empty network namespace with `lo` up
/// and no resolver configuration, and return its result. Panics (with the reason) if the namespace cannot
/// be created, e.g. without `CAP_SYS_ADMIN`; a panic inside `f` is passed on.
pub fn in_fresh_netns<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            use rustix::thread::UnshareFlags;
            // SAFETY: only CLONE_NEWNET and CLONE_NEWNS (which implies
            // CLONE_FS: this thread's cwd, root and umask become its own)
            // are unshared; the descriptor table (CLONE_FILES) stays shared,
            // so no thread can observe descriptors from an unshared table,
            // which is the hazard `unshare_unsafe` guards against. The new
            // namespaces are this thread's alone.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET | UnshareFlags::NEWNS) }
                .unwrap_or_else(|e| {
                    panic!(
                        "unshare(CLONE_NEWNET|CLONE_NEWNS) failed ({e}); real-kernel network tests need root"
                    )
                });
            hide_resolver_files();
            use super::HostNet;
            super::RealNet::new()
                .set_up("lo")
                .unwrap_or_else(|e| panic!("bringing lo up in the test namespace: {e}"));
            f()
        });
        match worker.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A namespace J as a jail's cloner hands it back, for tests: its
/// descriptor and a route netlink socket opened in it by a process with
/// `CAP_NET_ADMIN` (a root test), made on a thread of its own that then
/// ends. J lives while either descriptor does.
#[cfg(any(test, feature = "test-support"))]
pub fn jail_namespace() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    std::thread::spawn(|| {
        // SAFETY: CLONE_NEWNET alone, on this short-lived thread: no
        // descriptor table or memory is unshared.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET) for a jail's namespace: {e}"));
        let ns = rustix::fs::open(
            "/proc/thread-self/ns/net",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("opening the jail namespace's descriptor: {e}"));
        let rtnl = rustix::net::socket_with(
            rustix::net::AddressFamily::NETLINK,
            rustix::net::SocketType::RAW,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap_or_else(|e| panic!("a route socket in the jail's namespace: {e}"));
        (ns, rtnl)
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Attach to the tap `name`, in the calling thread's network namespace,
/// as a VMM does (`IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`), for tests. Panics on
/// failure.
#[cfg(any(test, feature = "test-support"))]
pub fn attach_tap(name: &str) -> std::fs::File {
    try_attach_tap(name).unwrap_or_else(|e| panic!("attaching to {name}: {e}"))
}

/// [`attach_tap`], its error returned: a tap still held after
/// [`super::BUSY_GRACE`] is `EBUSY` (a descriptor another test's forked
/// child copied lets go at its exec; see [`super::retry_while_busy`]).
#[cfg(any(test, feature = "test-support"))]
pub fn try_attach_tap(name: &str) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    super::retry_while_busy(
        |e: &std::io::Error| e.raw_os_error() == Some(libc::EBUSY),
        || {
            let tun = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(super::TUN_DEVICE)?;
            let mut req = [0u8; 40];
            req[..name.len()].copy_from_slice(name.as_bytes());
            let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
            req[16..18].copy_from_slice(&flags.to_ne_bytes());
            // SAFETY: TUNSETIFF reads and writes 40 bytes, the size of `req`,
            // on a live tun descriptor.
            let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(tun)
        },
    )
}

/// Set the link type of the tap `tun` is attached to (`TUNSETLINK`, an
/// `ARPHRD_*`; no capability needed, only while the tap is down), as a
/// hostile holder may, for tests.
#[cfg(any(test, feature = "test-support"))]
pub fn set_link_type(tun: &std::fs::File, link_type: u16) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: TUNSETLINK takes the type by value, on a live tun
    // descriptor.
    let rc = unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETLINK,
            libc::c_ulong::from(link_type),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// In the calling thread's own mount namespace: stop mount events from
/// propagating back to the host, then cover each resolver file that exists
/// with `/dev/null`.
fn hide_resolver_files() {
    use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
    mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .unwrap_or_else(|e| panic!("making the test mount namespace a downstream of the host's: {e}"));
    for file in [
        crate::probe::RESOLV_CONF,
        crate::probe::RESOLVED_UPSTREAM_CONF,
    ] {
        if std::path::Path::new(file).exists() {
            mount_bind("/dev/null", file)
                .unwrap_or_else(|e| panic!("covering {file} in the test namespace: {e}"));
        }
    }
}

/// Whether the calling thread is in the same network namespace as PID 1 —
/// the host's own, where host-wide services such as systemd-resolved live.
/// `None` when PID 1's namespace cannot be inspected (an unprivileged caller,
/// or a PID 1 that even root may not inspect, as in some containers).
pub fn in_init_netns() -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let mine = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
    let init = std::fs::metadata("/proc/1/ns/net").ok()?;
    Some(mine.ino() == init.ino() && mine.dev() == init.dev())
}

#[cfg(test)]
mod init_ns_tests {
    use super::*;

    #[test]
    fn a_fresh_namespace_is_never_taken_for_the_init_namespace() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root to unshare a network namespace"
        );
        // Wherever PID 1 can be inspected, the answer matches the links.
        if let (Ok(a), Ok(b)) = (
            std::fs::read_link("/proc/thread-self/ns/net"),
            std::fs::read_link("/proc/1/ns/net"),
        ) {
            assert_eq!(in_init_netns(), Some(a == b));
        }
        assert_ne!(in_fresh_netns(in_init_netns), Some(true));
    }

    #[test]
    fn a_fresh_namespace_has_no_resolver_and_the_host_keeps_its_own() {
        use crate::net::HostNet;
        let before = std::fs::read(crate::probe::RESOLV_CONF).ok();
        assert_eq!(
            in_fresh_netns(|| crate::net::RealNet::new().resolvers().unwrap()),
            Vec::<std::net::Ipv4Addr>::new()
        );
        assert_eq!(std::fs::read(crate::probe::RESOLV_CONF).ok(), before);
    }
}
