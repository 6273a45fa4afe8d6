//! `banger system install` making the state directory while another
//! directory is swapped in and out of its name (`renameat2(RENAME_EXCHANGE)`
//! from a racing thread): the real binary, as root, into a temp root.
//! Only root can rename in the state directory's parent (the install checks
//! it is root's and not group- or world-writable), so this is root racing
//! itself; what it shows is that the install changes the directory it made
//! — through its descriptor — and nothing that took its name.
#![allow(clippy::disallowed_methods)] // these tests spawn the binary under test directly

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use banger_testkit::*;

/// Installs with the racer running.
const ROUNDS: u32 = 40;

fn install(root: &Path, owner: &str) -> std::process::Output {
    std::process::Command::new(bin("banger"))
        .env_remove("SUDO_USER")
        .env_remove("BANGER_SOCKET")
        .args(["system", "install", "--json", "--owner", owner, "--root"])
        .arg(root)
        .output()
        .expect("running banger")
}

fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// Swap `lib/banger` and `lib/victim` over and over until `stop`; counts
/// the swaps made. While `banger` is missing it only looks (a lookup
/// served from the dentry cache), so it is not queued on the directory's
/// lock when the install's `mkdir` releases it.
fn racer(lib: &Path, stop: Arc<AtomicBool>, swaps: Arc<AtomicU32>) -> std::thread::JoinHandle<()> {
    let lib = std::fs::File::open(lib).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let there = rustix::fs::statat(&lib, "banger", rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
            if there.is_ok()
                && rustix::fs::renameat_with(
                    &lib,
                    "banger",
                    &lib,
                    "victim",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .is_ok()
            {
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

#[test]
fn a_directory_swapped_in_while_the_state_dir_is_made_keeps_its_owner_and_mode() {
    require_root();
    let owner = TestUser::create(None);
    let dir = tempfile::Builder::new()
        .prefix("banger-install-")
        .tempdir()
        .unwrap();
    // A root deep down (about 2800 bytes of path, 1300 levels): each of
    // the install's by-path calls walks all of it, which widens the gap
    // between its `mkdir` and a call after it to where the racer, working
    // beneath a descriptor of `var/lib`, can land a swap in between.
    let deep: std::path::PathBuf = std::iter::repeat_n("d", 1300).collect();
    let root = dir.path().join(deep);
    std::fs::create_dir_all(&root).unwrap();
    let r = root.as_path();
    let first = install(r, &owner.name);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let lib = r.join("var/lib");
    let state = lib.join("banger");
    let victim = lib.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("marker"), b"not the state dir").unwrap();
    std::os::unix::fs::chown(&victim, Some(4242), Some(4242)).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o751)).unwrap();
    let swaps = Arc::new(AtomicU32::new(0));
    let mut refused = 0;
    for round in 0..ROUNDS {
        // The state directory is made anew each round.
        std::fs::remove_dir(&state).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = racer(&lib, stop.clone(), swaps.clone());
        let out = install(r, &owner.name);
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        if !out.status.success() {
            refused += 1;
        }
        // Wherever the victim is now, it is as it was.
        let (at, other) = if victim.join("marker").exists() {
            (&victim, &state)
        } else {
            (&state, &victim)
        };
        assert_eq!(
            mode_owner(at),
            (0o751, 4242, 4242),
            "round {round}: the install changed the directory swapped in ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        // The directory the install made is the owner's, private.
        if out.status.success() {
            assert_eq!(
                mode_owner(other),
                (0o700, owner.uid, owner.gid),
                "round {round}"
            );
        }
        // Put things back: the victim at its name, a state dir at its own.
        if at == &state {
            std::fs::rename(&state, lib.join("held")).unwrap();
            if other.exists() {
                std::fs::rename(other, &state).unwrap();
            }
            std::fs::rename(lib.join("held"), &victim).unwrap();
        }
        if !state.exists() {
            std::fs::create_dir(&state).unwrap();
        }
    }
    eprintln!(
        "{} swaps over {ROUNDS} installs, {refused} refused",
        swaps.load(Ordering::Relaxed)
    );
    assert!(
        swaps.load(Ordering::Relaxed) > 0,
        "the racer never swapped: nothing was exercised"
    );
}
