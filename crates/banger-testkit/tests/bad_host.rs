//! Bad hosts (issue #16 item 4): a real `bangerd --dev` in a throwaway
//! network namespace, started on a host that is wrong in one way, must say
//! so once, clearly, naming what is wrong and how to fix it — and a host
//! wrong in a way that needs no fix (a socket left by a killed daemon)
//! must not stop it.
//!
//! Not here yet: a host without `nft` (the tool runner resolves tools on
//! its own fixed path, not the daemon's `PATH`, so hiding it needs a mount
//! namespace; docs/reliability.md).
//!
//! Needs root, iproute2, nftables and e2fsprogs (what `make test`
//! installs).
#![allow(clippy::disallowed_methods)] // the tests spawn the daemon under test directly

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use banger_testkit::*;

/// `bangerd --dev` for `dir` in `ns` as `NsDaemon::start` runs it, but
/// through `prefix` (a command that execs the rest) and not waited on:
/// for a daemon that must not start.
fn dev_command(ns: &NetNs, dir: &Path, prefix: &[&str]) -> Command {
    let mut cmd = if prefix.is_empty() {
        ns.exec_daemon(bin("bangerd"))
    } else {
        let mut c = ns.exec_daemon(prefix[0]);
        c.args(&prefix[1..]).arg(bin("bangerd"));
        c
    };
    let (k, v) = dev_jail_env();
    cmd.arg("--dev")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .env("HOME", dir)
        .env(k, v)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

/// Run a daemon that must fail to start: its output, once it exited
/// (within 30 s).
fn failed_start(ns: &NetNs, dir: &Path, prefix: &[&str]) -> Output {
    // The cgroup a dev daemon makes for its VMs' at start (before it can
    // fail): removed after the daemon has gone, as `NsDaemon` does.
    let _cgroup = JailCgroup::of_dev(&dir.join("state"));
    let mut proc = Proc::spawn("bangerd --dev", dev_command(ns, dir, prefix));
    let out = proc.wait(Duration::from_secs(30));
    assert!(
        !out.status.success(),
        "the daemon started: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn banger(d: &NsDaemon, args: &[&str]) -> Output {
    banger_at(&d.socket, args)
}

fn banger_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("banger"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("running banger")
}

/// An image `img` a create can use (a kernel of 4 KiB with a bzImage
/// header, a 16 MiB ext4 with an init and an sshd): nothing boots it.
fn small_image(socket: &Path, dir: &Path) {
    let k = dir.join("bzImage");
    let mut b = vec![0u8; 4096];
    b[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&k, b).unwrap();
    let ok = |args: &[&str]| {
        let out = banger_at(socket, args);
        assert!(out.status.success(), "banger {args:?}: {}", said(&out));
    };
    ok(&["kernel", "import", k.to_str().unwrap(), "--name", "k"]);
    let tree = dir.join("tree");
    for f in ["sbin/init", "usr/sbin/sshd"] {
        let p = tree.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
    }
    let rootfs = dir.join("rootfs.ext4");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&rootfs)
        .arg("16M")
        .output()
        .unwrap();
    assert!(made.status.success(), "mkfs.ext4: {made:?}");
    ok(&[
        "image",
        "register",
        "img",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--kernel",
        "k",
    ]);
}

/// The last lines of `out`'s stderr (what a user reads).
fn said(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}

/// A store written by a newer banger (its schema version above this
/// one's) is refused before anything is written to it, naming the file.
#[test]
fn a_store_from_a_newer_banger_is_refused_naming_it() {
    require_root();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let mut d = NsDaemon::start(&ns, tmp.path());
    d.proc.terminate();
    let store = tmp.path().join("state").join("store.db");
    assert!(store.is_file(), "no store at {}", store.display());
    // SQLite keeps `PRAGMA user_version` at offset 60 of the database
    // header, big-endian: what a newer banger's migration would leave.
    let newer = u32::try_from(bangerd::store::SCHEMA_VERSION).unwrap() + 1;
    let mut bytes = std::fs::read(&store).unwrap();
    bytes[60..64].copy_from_slice(&newer.to_be_bytes());
    std::fs::write(&store, &bytes).unwrap();
    let before = std::fs::read(&store).unwrap();
    let out = failed_start(&ns, tmp.path(), &[]);
    let text = said(&out);
    eprintln!("{text}");
    assert!(
        text.contains(&store.display().to_string()) && text.contains("upgrade banger"),
        "{text}"
    );
    assert_eq!(std::fs::read(&store).unwrap(), before, "the store changed");
}

/// A daemon killed by SIGKILL leaves its socket file behind; the next
/// one starts anyway and serves.
#[test]
fn a_socket_left_by_a_killed_daemon_does_not_stop_the_next() {
    require_root();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let mut d = NsDaemon::start(&ns, tmp.path());
    d.proc.kill();
    assert!(
        d.socket.exists(),
        "the killed daemon left no socket to test"
    );
    drop(d);
    let d = NsDaemon::start(&ns, tmp.path());
    let out = banger(&d, &["--json", "vm", "ls"]);
    assert!(out.status.success(), "{}", said(&out));
}

/// A state directory on a read-only file system (bound read-only over
/// itself in the daemon's own mount namespace) stops the daemon with one
/// error naming it.
#[test]
fn a_read_only_state_dir_is_one_clear_error() {
    require_root();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let s = state.to_str().unwrap();
    let script =
        format!("mount --bind {s} {s} && mount -o remount,bind,ro {s} && exec \"$0\" \"$@\"");
    let out = failed_start(
        &ns,
        tmp.path(),
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
    );
    let text = said(&out);
    eprintln!("{text}");
    assert!(
        text.contains(s) && text.to_lowercase().contains("read-only"),
        "{text}"
    );
}

/// A configured QEMU binary that does not exist: `vm create` says which
/// path and how to fix it, and makes nothing.
#[test]
fn a_missing_vmm_binary_is_one_clear_error() {
    require_root();
    let ns = NetNs::new();
    let tmp = shared_tempdir();
    let config = tmp.path().join(".config").join("banger");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        "[vm]\ndefault_vmm = \"qemu\"\n[vmm]\nqemu_bin = \"/nonexistent/qemu-system-x86_64\"\n",
    )
    .unwrap();
    let d = NsDaemon::start(&ns, tmp.path());
    small_image(&d.socket, tmp.path());
    let out = banger(
        &d,
        &[
            "vm",
            "create",
            "x",
            "--image",
            "img",
            "--no-start",
            "--wait",
        ],
    );
    let text = said(&out);
    eprintln!("{text}");
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("/nonexistent/qemu-system-x86_64") && text.contains("vmm.qemu_bin"),
        "{text}"
    );
    let ls = banger(&d, &["--json", "vm", "ls"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "[]");
}
