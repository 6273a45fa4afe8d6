//! Throwaway network namespaces for real-kernel tests.
//!
//! A network namespace belongs to a thread, not a process: [`in_fresh_netns`]
//! runs a closure on a new thread that has called
//! `unshare(CLONE_NEWNET)`. Sockets it opens, taps it creates and children it
//! spawns (through [`Runner`](crate::runner::Runner)) all live in that
//! namespace; nothing it does can reach the host's own network. When the
//! thread ends (normally or by panic) the namespace and every interface,
//! route and nft table in it disappear with it.

/// Run `f` on a fresh thread in a new, empty network namespace with `lo` up,
/// and return its result. Panics (with the reason) if the namespace cannot
/// be created, e.g. without `CAP_SYS_ADMIN`; a panic inside `f` is passed on.
pub fn in_fresh_netns<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            // SAFETY: only CLONE_NEWNET is unshared; the descriptor table
            // (CLONE_FILES) stays shared, so no thread can observe descriptors
            // from an unshared table, which is the hazard `unshare_unsafe`
            // guards against. The new namespace is this thread's alone.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
                .unwrap_or_else(|e| {
                    panic!(
                        "unshare(CLONE_NEWNET) failed ({e}); real-kernel network tests need root"
                    )
                });
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
}
