//! A network namespace of the test's own, for the tests that run a real VMM
//! with a tap: nothing they create touches the host's network.

use banger_host::runner::{Cmd, Runner};

/// Move this thread (and the children it spawns) into a fresh network
/// namespace and create `tap` there. The namespace goes when the thread
/// and its children are gone.
pub fn private_netns_with_tap(tap: &str) {
    private_netns_with_tap_of(tap, None)
}

/// [`private_netns_with_tap`], the tap's tun owner `owner` when given (a
/// jailed VMM's uid: only it may attach the tap).
#[allow(dead_code)] // each including test target uses its own subset
pub fn private_netns_with_tap_of(tap: &str, owner: Option<u32>) {
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
    let user = owner.map(|uid| uid.to_string());
    let owned = user.as_deref().map(|uid| ["user", uid]);
    Runner
        .run(
            &Cmd::new("ip")
                .args(["tuntap", "add", "dev", tap, "mode", "tap"])
                .args(owned.iter().flatten()),
        )
        .unwrap();
    Runner
        .run(&Cmd::new("ip").args(["link", "set", tap, "up"]))
        .unwrap();
}
