//! A Debian build that cannot reach its mirror fails with mmdebstrap's and
//! apt's own reasons in the error — not a bare "exit status 25" — and
//! leaves nothing in the cache. (Before: `--quiet` swallowed the reason and
//! the runner kept one stderr line, "E: mmdebstrap failed to run".)
//!
//! The test moves its thread into a new, empty network namespace, so the
//! build has no route anywhere and no traffic leaves the host. Needs root
//! (unshare, mmdebstrap `--mode=root`); fails without it.

use banger_imagebuild::{DebianOptions, build_debian, error_chain};

#[test]
fn mmdebstrap_says_why_when_the_mirror_is_unreachable() {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers and changes only this
    // thread's network namespace; the children it spawns inherit it.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) needs root: {}",
        std::io::Error::last_os_error()
    );
    let cache = tempfile::tempdir().unwrap();
    let opts = DebianOptions::new(cache.path());
    let err = build_debian(&opts, &mut |_| {}).expect_err("no network, yet the build succeeded");
    let msg = error_chain(&err);
    assert!(msg.contains("mmdebstrap"), "{msg}");
    assert!(msg.contains("exit status: 25"), "{msg}");
    // apt's own reason, whatever words this host's resolver uses for it.
    assert!(
        msg.lines().any(|l| l.starts_with("E: Failed to fetch")),
        "apt's reason is missing:\n{msg}"
    );
    let left: Vec<_> = walk(cache.path());
    assert!(left.is_empty(), "left behind in the cache: {left:?}");
}

/// Every file (not directory) below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
