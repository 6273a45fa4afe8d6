//! A network namespace of the test's own, for the tests that run a real VMM
//! with a tap: nothing they create touches the host's network.

use banger_host::runner::{Cmd, Runner};

/// Move this thread (and the children it spawns) into a fresh network
/// namespace and create `tap` there. The namespace goes when the thread
/// and its children are gone.
pub fn private_netns_with_tap(tap: &str) {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it changes only the
    // calling thread's network namespace, which is what this test wants
    // (children spawned from this thread inherit it).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) (needs root): {}",
        std::io::Error::last_os_error()
    );
    Runner
        .run(&Cmd::new("ip").args(["tuntap", "add", "dev", tap, "mode", "tap"]))
        .unwrap();
    Runner
        .run(&Cmd::new("ip").args(["link", "set", tap, "up"]))
        .unwrap();
}
