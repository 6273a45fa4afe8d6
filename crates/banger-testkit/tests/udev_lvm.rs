//! Issue #13 finding 8: the host's udev, blkid and LVM must leave the block
//! devices banger attaches over guest-written disks alone. A guest that
//! writes an LVM signature must not get a volume group scanned, activated
//! or linked under `/dev/disk/by-*` on the host.
//!
//! The host has neither udev nor lvm2 installed (installing udev would
//! start a udevd acting on every block device of a host whose PID 1 is not
//! systemd), so `scripts/install-deps.sh test` unpacks their packages into
//! `$BANGER_CACHE_DIR/unpacked/` (scripts/packages.list, scope `unpacked`)
//! and the test runs `udevadm test` and `lvm` from there, with the
//! distro's rules, in a private mount namespace with its own `/dev`, `/run`
//! and `/var/lib` (`udev_lvm/probe.sh`). The loop device is real, its
//! backing file is where the dm driver attaches from (root's link in its
//! `root-loops/` in the state directory), and the PV and VG
//! on it are made by the real `pvcreate` and `vgcreate`.
//!
//! Needs root, util-linux, and the unpacked udev, lvm2, dmsetup and
//! libdevmapper-event1.02.1.
#![allow(clippy::disallowed_methods)] // the test runs the tools under test directly

use std::path::{Path, PathBuf};
use std::process::Command;

use banger_testkit::*;

const PROBE: &str = include_str!("udev_lvm/probe.sh");

/// The unpacked packages; a missing one fails the test, naming the fix.
fn tools() -> PathBuf {
    let dir = Path::new(
        &std::env::var_os("BANGER_CACHE_DIR").unwrap_or_else(|| "/var/cache/banger".into()),
    )
    .join("unpacked");
    for need in [
        "udev/bin/udevadm",
        "udev/lib/udev/rules.d/60-persistent-storage.rules",
        "lvm2/sbin/lvm",
        "lvm2/lib/udev/rules.d/69-lvm.rules",
        "lvm2/etc/lvm/lvm.conf",
        "dmsetup/lib/udev/rules.d/55-dm.rules",
        "libdevmapper-event1.02.1/lib/x86_64-linux-gnu",
    ] {
        assert!(
            dir.join(need).exists(),
            "{} is missing: run `scripts/install-deps.sh test` (it unpacks udev and lvm2 \
             there; they are never installed)",
            dir.join(need).display()
        );
    }
    dir
}

/// Detaches the test's loop device if the probe could not (its backing
/// file carries the test's token).
struct LoopGuard(String);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/sys/block") else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let backing =
                std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            if name.starts_with("loop") && backing.contains(&self.0) {
                let _ = Command::new("losetup")
                    .args(["-d", &format!("/dev/{name}")])
                    .status();
            }
        }
    }
}

/// Run `udev_lvm/probe.sh` in a private mount namespace.
fn probe(
    mode: &str,
    tools: &Path,
    owner: &TestUser,
    root: &Path,
    out: &Path,
    id: &str,
) -> std::process::ExitStatus {
    Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            PROBE,
            "probe.sh",
        ])
        .env("MODE", mode)
        .env("TOOLS", tools)
        .env("OUT", out)
        .env("ROOT", root)
        .env("BANGER", bin("banger"))
        .env("OWNER", &owner.name)
        .env("ID", id)
        .env_remove("SUDO_USER")
        .stderr(std::fs::File::create(out.join("probe.stderr")).unwrap())
        .status()
        .expect("unshare")
}

fn read(out: &Path, name: &str) -> String {
    std::fs::read_to_string(out.join(name)).unwrap_or_default()
}

/// A temp dir with `root/` (the install's `--root`, with lvm2's own
/// configuration in `etc/lvm`, as on a host with lvm2) and `out/`.
fn lab(tools: &Path) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = shared_tempdir();
    let (root, out) = (tmp.path().join("root"), tmp.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    copy_dir(&tools.join("lvm2/etc/lvm"), &root.join("etc/lvm"));
    (tmp, root, out)
}

/// Append `text` to `file`; returns the new contents.
fn append(file: &Path, text: &str) -> String {
    let mut all = std::fs::read_to_string(file).unwrap();
    all.push_str(text);
    std::fs::write(file, &all).unwrap();
    all
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// After `banger system install` on a host with udev and lvm2, a loop
/// device over a VM disk carrying an LVM PV is invisible to the host's
/// udev rules (no blkid probe, no `/dev/disk` link, no `lvm pvscan`, not
/// ready for systemd) and to `pvs`/`vgs`, which do see it with lvm2's own
/// configuration.
#[test]
fn host_udev_and_lvm_leave_a_guest_written_pv_alone() {
    require_root();
    let tools = tools();
    let (_tmp, root, out) = lab(&tools);
    let owner = TestUser::create(None);
    // A pristine copy of lvm2's configuration for the "without banger"
    // view.
    copy_dir(&tools.join("lvm2/etc/lvm"), &out.join("pristine-lvm"));
    let id = format!("{:08x}", std::process::id());
    let _guard = LoopGuard(id.clone());
    let status = probe("pv", &tools, &owner, &root, &out, &id);
    let udev = read(&out, "udev");
    assert!(
        status.success(),
        "probe failed ({status}): {}\nudevadm: {udev}\npvcreate: {}\nvgcreate: {}",
        read(&out, "probe.stderr"),
        read(&out, "pvcreate"),
        read(&out, "vgcreate")
    );
    let vg = format!("bangert{id}");

    // Without banger's configuration LVM sees the guest's volume group:
    // the signature is real, so what follows is not vacuous.
    assert!(
        read(&out, "pvs-pristine").contains(&vg),
        "{}",
        read(&out, "pvs-pristine")
    );
    assert!(
        read(&out, "vgs-pristine").contains(&vg),
        "{}",
        read(&out, "vgs-pristine")
    );

    // udev: banger's rule matched, the host's rules stayed away.
    let props: Vec<&str> = udev
        .lines()
        .filter(|l| {
            l.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            })
        })
        .collect();
    let prop = |k: &str| props.iter().find_map(|l| l.strip_prefix(&format!("{k}=")));
    assert_eq!(
        prop("ID_FS_TYPE"),
        None,
        "blkid probed the guest's disk:\n{udev}"
    );
    assert_eq!(
        prop("ID_FS_UUID"),
        None,
        "blkid probed the guest's disk:\n{udev}"
    );
    assert_eq!(prop("SYSTEMD_READY"), Some("0"), "{udev}");
    assert_eq!(prop("BANGER_DEVICE"), Some("1"), "{udev}");
    let lvm_calls = read(&out, "lvm-calls");
    assert!(
        lvm_calls.is_empty(),
        "udev ran lvm on the guest's disk: {lvm_calls}"
    );
    let runs: Vec<&str> = udev.lines().filter(|l| l.starts_with("run:")).collect();
    assert!(
        runs.iter().all(|l| !l.contains("lvm")),
        "udev would run lvm: {runs:?}"
    );
    let devtree = read(&out, "devtree");
    let disk_links: Vec<&str> = devtree
        .lines()
        .filter(|l| l.starts_with("/dev/disk/"))
        .collect();
    assert!(
        disk_links.is_empty(),
        "links under /dev/disk: {disk_links:?}"
    );

    // LVM's command-line scans, with the configuration the install left:
    // they run cleanly and list nothing of the guest's.
    let install: serde_json::Value =
        serde_json::from_str(&read(&out, "install.json")).expect("install's JSON report");
    let written: Vec<&str> = install["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["target"].as_str().unwrap())
        .collect();
    for target in [
        "/etc/udev/rules.d/10-banger.rules",
        "/etc/lvm/lvmlocal.conf",
    ] {
        assert!(written.contains(&target), "install wrote {written:?}");
    }
    for tool in ["pvs", "vgs"] {
        assert_eq!(
            read(&out, &format!("{tool}-installed.rc")).trim(),
            "0",
            "{tool}: {}",
            read(&out, &format!("{tool}-installed"))
        );
    }
    assert!(
        !read(&out, "pvs-installed").contains(&vg),
        "pvs shows the guest's PV: {}",
        read(&out, "pvs-installed")
    );
    assert!(
        !read(&out, "vgs-installed").contains(&vg),
        "vgs shows the guest's VG: {}",
        read(&out, "vgs-installed")
    );
}

/// An admin's own `global_filter` (in `lvm.conf`) survives the install:
/// banger's patterns go in front of it in `lvmlocal.conf`, LVM then uses
/// both, a second install changes nothing, and the uninstall gives
/// `lvmlocal.conf` back byte for byte. One
/// set in `lvmlocal.conf` itself is refused, naming the fix, before
/// anything is written — unless it already starts with banger's patterns,
/// which the install then leaves alone.
#[test]
fn an_admins_lvm_filter_is_kept_behind_bangers() {
    require_root();
    let tools = tools();
    let owner = TestUser::create(None);
    let admin_filter = "devices {\n\tglobal_filter = [ \"r|^/dev/sdz$|\", \"a|.*|\" ]\n}\n";

    // In lvm.conf: merged.
    let (_tmp, root, out) = lab(&tools);
    append(&root.join("etc/lvm/lvm.conf"), admin_filter);
    let local = root.join("etc/lvm/lvmlocal.conf");
    let original = std::fs::read(&local).unwrap();
    assert!(probe("filter", &tools, &owner, &root, &out, "-").success());
    assert_eq!(
        read(&out, "install.rc").trim(),
        "0",
        "{}",
        read(&out, "install.err")
    );
    assert_eq!(
        read(&out, "filter.installed").trim(),
        r#"global_filter=["r|^/dev/mapper/banger-[0-9a-f]+$|","r|^/dev/banger/|","r|^/dev/sdz$|","a|.*|"]"#,
        "lvmlocal.conf:\n{}",
        read(&out, "lvmlocal.installed")
    );
    assert!(read(&out, "lvmlocal.installed").starts_with(std::str::from_utf8(&original).unwrap()));
    // Installing again finds banger's own patterns in effect and writes the
    // same block: nothing changes.
    let again: serde_json::Value = serde_json::from_str(&read(&out, "install2.json")).unwrap();
    let changed: Vec<&serde_json::Value> = again["written"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["action"] != "unchanged")
        .collect();
    assert!(changed.is_empty(), "a second install changed {changed:?}");
    assert_eq!(
        read(&out, "uninstall.rc").trim(),
        "0",
        "{}",
        read(&out, "uninstall.json")
    );
    assert_eq!(
        std::fs::read(&local).unwrap(),
        original,
        "uninstall left lvmlocal.conf changed"
    );

    // In lvmlocal.conf: refused, nothing written.
    let (_tmp2, root, out) = lab(&tools);
    let local = root.join("etc/lvm/lvmlocal.conf");
    let text = append(&local, admin_filter);
    assert!(probe("filter", &tools, &owner, &root, &out, "-").success());
    assert_ne!(read(&out, "install.rc").trim(), "0");
    let err = read(&out, "install.err") + &read(&out, "install.json");
    assert!(
        err.contains("sets global_filter outside banger's block")
            && err.contains("r|^/dev/banger/|"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), text);
    for never in ["etc/banger", "etc/udev", "usr"] {
        assert!(
            !root.join(never).exists(),
            "{never} written by a refused install"
        );
    }
}

/// The fix the refusal names works: an admin filter in `lvmlocal.conf`
/// that starts with banger's patterns is left as it is, and nothing is
/// added to the file.
#[test]
fn an_admins_filter_that_starts_with_bangers_is_left_alone() {
    require_root();
    let tools = tools();
    let owner = TestUser::create(None);
    let (_tmp, root, out) = lab(&tools);
    let local = root.join("etc/lvm/lvmlocal.conf");
    let text = append(
        &local,
        "devices {\n\tglobal_filter = [ \"r|^/dev/mapper/banger-[0-9a-f]+$|\", \
         \"r|^/dev/banger/|\", \"r|^/dev/sdz$|\" ]\n}\n",
    );
    assert!(probe("filter", &tools, &owner, &root, &out, "-").success());
    assert_eq!(
        read(&out, "install.rc").trim(),
        "0",
        "{}",
        read(&out, "install.json")
    );
    assert_eq!(read(&out, "lvmlocal.installed"), text);
}
