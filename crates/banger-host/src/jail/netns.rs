//! A jail's network namespace made by its cloner ([`super::Jail::net_handles`]):
//! the cloning thread enters a new network namespace J, opens J's
//! descriptor and a route netlink socket in J, clones the child (which
//! inherits J) and goes back to the namespace it came from.
//!
//! Why the cloner: the helper cannot get J later. Its lock-down filter
//! denies `setns`, and both `PIDFD_GET_NET_NAMESPACE` and
//! `/proc/<pid>/ns/net` make a ptrace-read access check that fails for a
//! jail child (another uid, or not dumpable) without `CAP_SYS_PTRACE`,
//! which the helper does not have. The cloner reads its own thread's
//! `/proc/thread-self/ns/net`, which needs no such check. And a link
//! leaves J only by a request on a route netlink socket made in J by a
//! process holding `CAP_NET_ADMIN` (the kernel checks the opener's
//! credentials as well as the sender's): the cloner opens it while in J.
//!
//! A network namespace belongs to a thread (`unshare` and `setns` of
//! `CLONE_NEWNET` change the calling thread only), so this works on the
//! spawner's one thread and on any thread of a multithreaded process
//! (dev mode, tests). The thread always goes back; if it cannot, the
//! process aborts rather than live on, and serve later requests, in J.

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// This thread's network namespace, as the proc file system names it
/// (the thread's own: no ptrace access check).
const THREAD_NET: &std::ffi::CStr = c"/proc/thread-self/ns/net";

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, `include/uapi/linux/nsfs.h`).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// A jail's network namespace J, as its cloner hands it back: a
/// descriptor of J (nsfs) and a `NETLINK_ROUTE` socket opened in J by a
/// process holding `CAP_NET_ADMIN`. Whoever holds either keeps J alive
/// after the jailed process has gone (and a link left in J with it):
/// drop them as soon as they have served.
#[derive(Debug)]
pub struct JailNet {
    ns: OwnedFd,
    rtnl: OwnedFd,
}

impl JailNet {
    /// J's descriptor: `IFLA_NET_NS_FD` of a link moved into J.
    pub fn ns(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }

    /// The route netlink socket opened in J: a request sent on it acts in
    /// J (moving a link from J back to the host's namespace).
    pub fn rtnl(&self) -> BorrowedFd<'_> {
        self.rtnl.as_fd()
    }

    /// The two descriptors as the spawner's answer carried them, refused
    /// unless `ns` is a network namespace other than the calling thread's
    /// and `rtnl` a route netlink socket.
    pub(super) fn checked(ns: OwnedFd, rtnl: OwnedFd) -> std::io::Result<JailNet> {
        let refused = |what: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("jail network namespace: {what}"),
            )
        };
        // SAFETY: an nsfs ioctl with no argument on a descriptor this
        // function owns; any other file answers an error.
        let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&ns), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(refused(format!("not a network namespace ({kind})")));
        }
        // Not the caller's own namespace (hostile read of the own-netns
        // jail, informational): a move "into" it would do nothing and the
        // tap would stay in the host's namespace.
        let own = rustix::fs::stat(THREAD_NET)?;
        let theirs = rustix::fs::fstat(&ns)?;
        if (theirs.st_dev, theirs.st_ino) == (own.st_dev, own.st_ino) {
            return Err(refused(format!(
                "the caller's own network namespace (/proc/thread-self/ns/net, inode {})",
                own.st_ino
            )));
        }
        let domain = rustix::net::sockopt::socket_domain(&rtnl)?;
        let protocol = rustix::net::sockopt::socket_protocol(&rtnl)?;
        if domain != AddressFamily::NETLINK || protocol.is_some() {
            return Err(refused(format!(
                "not a route netlink socket ({domain:?}, {protocol:?})"
            )));
        }
        Ok(JailNet { ns, rtnl })
    }

    /// The descriptors, for the spawner's answer.
    pub(super) fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.ns.as_fd(), self.rtnl.as_fd()]
    }
}

/// The calling thread in a new network namespace J until [`ThreadNet::leave`]
/// (or drop) puts it back in the one it came from.
pub(super) struct ThreadNet {
    /// The thread's namespace before, opened before the `unshare`.
    home: OwnedFd,
    /// J's handles; taken by `leave`.
    net: Option<JailNet>,
}

impl ThreadNet {
    /// Open this thread's namespace, `unshare(CLONE_NEWNET)`, open J's
    /// descriptor and a route netlink socket in J (both close-on-exec).
    /// On error the thread is back where it was.
    pub(super) fn enter_new() -> std::io::Result<ThreadNet> {
        let home = rustix::fs::open(THREAD_NET, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        // SAFETY: CLONE_NEWNET alone changes only this thread's network
        // namespace; no descriptor table or memory is unshared, which is
        // the hazard `unshare_unsafe` guards against.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
        let mut here = ThreadNet { home, net: None };
        let ns = rustix::fs::open(THREAD_NET, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        // Protocol 0: NETLINK_ROUTE.
        let rtnl = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        here.net = Some(JailNet { ns, rtnl });
        Ok(here)
    }

    /// Back in the thread's own namespace; J's handles.
    pub(super) fn leave(mut self) -> JailNet {
        let net = self.net.take();
        drop(self);
        net.unwrap_or_else(|| abort_in_jail_net("no handles"))
    }
}

impl Drop for ThreadNet {
    fn drop(&mut self) {
        if let Err(e) = rustix::thread::move_into_link_name_space(
            self.home.as_fd(),
            Some(LinkNameSpaceType::Network),
        ) {
            abort_in_jail_net(&e.to_string());
        }
    }
}

/// The cloning thread could not go back to its own network namespace:
/// end the process (the spawner dies and the helper treats it as dead;
/// in dev mode the daemon ends) rather than run on in a jail's.
fn abort_in_jail_net(why: &str) -> ! {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(
        format!("jail: cannot return to the cloner's network namespace ({why}); aborting\n")
            .as_bytes(),
    );
    std::process::abort()
}
