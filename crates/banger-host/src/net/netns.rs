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
