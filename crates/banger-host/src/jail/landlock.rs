//! Landlock scoping for every jail: a jailed process may neither connect
//! to an abstract UNIX socket nor signal a process outside its own
//! Landlock domain (`LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`,
//! `LANDLOCK_SCOPE_SIGNAL`, Linux 6.12, Landlock ABI 6). Every jail has a
//! network namespace of its own, so it has no abstract socket of the
//! host's to reach; the scope keeps it from any other process's abstract
//! socket in that namespace (one root enters it with, for instance).
//!
//! The ruleset is made in the parent, before the clone; the child only
//! calls `landlock_restrict_self` on it, after `no_new_privs`. Where the
//! kernel has no such scope the step is skipped, and [`scope_support`]
//! says why (for the doctor).

use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

/// `LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL`.
const SCOPED: u64 = (1 << 0) | (1 << 1);

/// `struct landlock_ruleset_attr` as of ABI 6: nothing of the file system
/// or the network handled, only the scopes.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// A ruleset scoping abstract sockets and signals, or `None` when this
/// kernel cannot make one (no Landlock, or one older than ABI 6: the
/// reason is [`scope_support`]'s). Any other error is the caller's.
pub(super) fn scope_ruleset() -> std::io::Result<Option<OwnedFd>> {
    match create() {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if unsupported(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `Ok` where jails are scoped; else why not, in words (the doctor's
/// `jail_scope` row says what that leaves).
pub fn scope_support() -> Result<(), String> {
    match create() {
        Ok(_) => Ok(()),
        Err(e) if unsupported(&e) => Err(format!(
            "this process cannot make a Landlock ruleset scoping abstract UNIX sockets \
             and signals (it needs Linux 6.12 or later with Landlock enabled, ABI 6, and \
             no seccomp filter refusing landlock_create_ruleset): {e}"
        )),
        Err(e) => Err(format!("making a Landlock ruleset: {e}")),
    }
}

/// `EINVAL` or `E2BIG` (a kernel older than the scope: the attribute is
/// bigger than it knows, or the bits unknown), `ENOSYS` (no Landlock),
/// `EOPNOTSUPP` (built in, not enabled at boot), `EPERM` (a seccomp filter
/// around this process refuses the call: the helper unit's allows it, an
/// older unit's did not, and its jails must still start).
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::E2BIG | libc::ENOSYS | libc::EOPNOTSUPP | libc::EPERM)
    )
}

fn create() -> std::io::Result<OwnedFd> {
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: 0,
        scoped: SCOPED,
    };
    // SAFETY: landlock_create_ruleset reads `size_of::<RulesetAttr>()`
    // bytes from a valid, initialised struct of the kernel's layout; flags 0.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor (close-on-exec) that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// In the child, after `no_new_privs`: enter the ruleset's domain. Raw
/// system call, no allocation.
pub(super) fn restrict_self(ruleset: BorrowedFd<'_>) -> Result<(), i32> {
    // SAFETY: landlock_restrict_self on a ruleset descriptor this process
    // holds; flags 0. It changes this (single-threaded) child only.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    if r < 0 {
        // SAFETY: reads this thread's errno slot.
        return Err(unsafe { *libc::__errno_location() });
    }
    Ok(())
}
