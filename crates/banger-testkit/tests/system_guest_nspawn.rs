//! A real guest under the installed services: scripts/system-scenario.sh
//! (the scenario `make smoke` runs on a real host with Firecracker) run as
//! root in the container of `nspawn/mod.rs`, with QEMU under TCG (no
//! `/dev/kvm` is passed in, so the guest boots the same way on every host).
//!
//! The owner gets the default image with `banger image build debian`: the
//! owner's daemon asks the installed helper, which runs the installed
//! `banger-imagebuild` as root in a transient systemd unit and passes the
//! files back as descriptors. The container has no network
//! (`--private-network`), so root's cache in the container holds the host's
//! cache entry for the default image (bound read-only at the same place) and
//! the build finds it there; the scenario checks that the helper, not the
//! owner, read it. Then, as the owner without sudo: a VM boots under the hardened
//! `bangerd-root.service`, its VMM running as the owner's uid with no
//! capabilities; `vm ssh`, a workspace prepare + guest commit + export round
//! trip, a guest listener in `vm ports`; `system restart` and a SIGKILL of
//! `bangerd-root` with the VM running keep the same QEMU process, which the
//! new helper re-adopts and stops; `vm rm`; `system uninstall` leaves no
//! unit, binary, socket, link, nft table, loop device or process.
//!
//! On the host afterwards: no `systemd-nspawn` or container process, no
//! mount or loop device of the container tree, and the tree is gone.
//!
//! Fails (never skips) without root, `systemd-nspawn`, `nsenter` or
//! `debugfs`.
#![allow(clippy::disallowed_methods)] // these tests spawn the binaries under test directly

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nspawn::{Container, text};

mod nspawn;

const OWNER: &str = "bangerowner";
/// Root's image cache in the container (the helper's default).
const CACHE_IN_CONTAINER: &str = "/var/cache/banger";
const SCENARIO_IN_CONTAINER: &str = "/opt/banger/system-scenario.sh";
/// `ok` lines the scenario prints when every step passed.
const SCENARIO_CHECKS: usize = 12;

fn scenario_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/system-scenario.sh")
}

/// Lines of `text` that mention `needle`.
fn mentions(text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn host(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    text(&out.stdout)
}

#[test]
fn a_guest_under_the_installed_services() {
    // The host's cache entry of the default image, built here (in the
    // host's namespace, where the mirror is reachable) when missing.
    let img = nspawn::guest_image();
    let entry_in_container = format!("{CACHE_IN_CONTAINER}/debian/{}", img.cache_key);
    let started = Instant::now();
    let c = Container::boot(
        &[
            (img.dir.clone(), entry_in_container.as_str()),
            (scenario_script(), SCENARIO_IN_CONTAINER),
        ],
        false,
    );
    let tree = c.tree.path().to_path_buf();
    let nspawn_pid = c.nspawn_pid();
    let leader = c.leader;
    println!("container up in {:?}", started.elapsed());
    c.ok(None, &format!("useradd -m -s /bin/sh {OWNER}"));

    let out = c.run(
        None,
        &format!(
            "SCENARIO_OWNER={OWNER} SCENARIO_BIN=/opt/banger SCENARIO_VMM=qemu \
             SCENARIO_IMAGE=build:bookworm {SCENARIO_IN_CONTAINER}"
        ),
    );
    let stdout = text(&out.stdout);
    println!("{stdout}");
    println!("scenario took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "the scenario failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr),
    );
    let oks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(oks, SCENARIO_CHECKS, "checks passed:\n{stdout}");
    assert!(stdout.contains("scenario: all checks passed"), "{stdout}");

    drop(c);
    // Nothing of the container is left on the host.
    for pid in [nspawn_pid, leader as u32] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "container process {pid} still running"
        );
    }
    let tree_s = tree.display().to_string();
    let mounts = mentions(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        &tree_s,
    );
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let loops = mentions(&host("losetup", &["-l", "-n"]), &tree_s);
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
    assert!(!tree.exists(), "container tree {tree_s} left");
}
