//! The Debian image end to end: mmdebstrap build (cached after the first
//! run), the guest contract checked inside the ext4 with debugfs, then a
//! QEMU TCG boot of a copy (with test SSH host keys written in, as banger
//! does per VM) until sshd runs and `banger-guest-ready` shows on serial.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, Runner};
use banger_imagebuild::guest::{KERNEL_CMDLINE, READY_MARKER};
use banger_imagebuild::{DebianOptions, Progress, build_debian, build_work_seed};

/// The console without colour escapes (`\x1b[...m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn inode_type_and_owner(image: &Path, path: &str) -> String {
    common::debugfs(image, &format!("stat {path}"))
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Write `local` to `dir/name` inside the image, owned by root with `mode`.
fn put_file(image: &Path, local: &Path, dir: &str, name: &str, mode: u32) {
    let requests = format!(
        "cd {dir}\nwrite {} {name}\nsif {dir}/{name} mode 0{:o}\nsif {dir}/{name} uid 0\nsif {dir}/{name} gid 0\n",
        local.display(),
        0o100000 | mode
    );
    let out = Runner
        .run(
            &Cmd::new("debugfs")
                .args(["-w", "-f", "-"])
                .arg(image)
                .stdin(requests),
        )
        .unwrap();
    assert!(
        !out.stderr.lines().any(|l| !l.starts_with("debugfs ")),
        "debugfs: {}",
        out.stderr
    );
}

#[test]
fn debian_image_carries_the_guest_contract_and_boots_to_ready() {
    common::require_root();
    common::require_tool("mmdebstrap", "mmdebstrap");
    common::require_tool("debugfs", "e2fsprogs");
    common::require_tool("ssh-keygen", "openssh-client");
    let opts = DebianOptions::new(common::cache_dir());
    let t = Instant::now();
    let img = build_debian(&opts, &mut |p| {
        if let Progress::Step(s) = p {
            eprintln!("[{:>6.1?}] {s}", t.elapsed());
        }
    })
    .unwrap();
    eprintln!(
        "image (cached: {}) in {:?}: {} {} kernel {}",
        img.cached,
        t.elapsed(),
        img.rootfs_ext4.display(),
        img.initrd.display(),
        img.kernel_version
    );
    // A second call is a cache hit.
    let again = build_debian(&opts, &mut |_| {}).unwrap();
    assert!(again.cached);
    assert_eq!(again.rootfs_ext4, img.rootfs_ext4);

    let rootfs = &img.rootfs_ext4;
    common::assert_fsck_clean(rootfs);
    let passwd = common::debugfs(rootfs, "cat /etc/passwd");
    assert!(
        passwd.contains("banger:x:1000:1000::/home/banger:/bin/bash"),
        "{passwd}"
    );
    let group = common::debugfs(rootfs, "cat /etc/group");
    assert!(group.contains("banger:x:1000:"), "{group}");
    let shadow = common::debugfs(rootfs, "cat /etc/shadow");
    assert!(
        shadow.lines().any(|l| l.starts_with("root:!")),
        "root is not locked"
    );
    assert!(
        shadow.lines().any(|l| l.starts_with("banger:*:")),
        "{shadow}"
    );
    let ssh = common::debugfs(rootfs, "ls /etc/ssh");
    assert!(!ssh.contains("ssh_host_"), "host keys in the image: {ssh}");
    let conf = common::debugfs(rootfs, "cat /etc/ssh/sshd_config.d/banger.conf");
    for line in [
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "AuthorizedKeysFile .ssh/authorized_keys /etc/banger/authorized_keys",
    ] {
        assert!(conf.contains(line), "{line} missing from {conf}");
    }
    let wants = common::debugfs(rootfs, "ls /etc/systemd/system/multi-user.target.wants");
    for unit in [
        "banger-ready.service",
        "ssh.service",
        "systemd-networkd.service",
    ] {
        assert!(wants.contains(unit), "{unit} not enabled: {wants}");
    }
    let resolv = inode_type_and_owner(rootfs, "/etc/resolv.conf");
    assert!(resolv.contains("Type: regular"), "{resolv}");
    let home = inode_type_and_owner(rootfs, "/home/banger");
    assert!(
        home.contains("User:  1000") && home.contains("Group:  1000"),
        "{home}"
    );
    let sudo = inode_type_and_owner(rootfs, "/etc/sudoers.d/banger");
    assert!(sudo.contains("Mode:  0440"), "{sudo}");
    let fstab = common::debugfs(rootfs, "cat /etc/fstab");
    assert!(fstab.contains("/dev/vda / ext4 defaults 0 1"), "{fstab}");
    assert!(
        fstab.contains(
            "LABEL=banger-work /home/banger ext4 defaults,nofail,x-systemd.device-timeout=30s 0 0"
        ),
        "{fstab}"
    );
    // The lean boot (docs/guest.md): maintenance off, VM-irrelevant units
    // masked, sshd started once.
    let default_wants = common::debugfs(rootfs, "ls /etc/systemd/system/default.target.wants");
    assert!(!default_wants.contains("e2scrub_reap"), "{default_wants}");
    let timers = common::debugfs(rootfs, "ls /etc/systemd/system/timers.target.wants");
    for t in ["apt-daily", "e2scrub_all", "fstrim", "dpkg-db-backup"] {
        assert!(!timers.contains(t), "{t} still enabled: {timers}");
    }
    for unit in [
        "modprobe@drm.service",
        "modprobe@efi_pstore.service",
        "modprobe@loop.service",
        "modprobe@dm_mod.service",
        "modprobe@fuse.service",
        "systemd-network-generator.service",
    ] {
        let st = common::debugfs(rootfs, &format!("stat /etc/systemd/system/{unit}"));
        assert!(st.contains("/dev/null"), "{unit} is not masked: {st}");
    }
    let dropin = common::debugfs(rootfs, "cat /etc/systemd/system/ssh.service.d/banger.conf");
    assert!(dropin.contains("ExecStartPre=\n"), "{dropin}");
    assert_eq!(common::debugfs(rootfs, "cat /etc/machine-id"), "");
    let label = Runner.run(&Cmd::new("e2label").arg(rootfs)).unwrap().stdout;
    assert_eq!(label.trim(), "banger-root");

    // Boot a copy with per-VM host keys, as banger would write them.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.ext4");
    Runner
        .run(&Cmd::new("cp").arg("--sparse=always").arg(rootfs).arg(&disk))
        .unwrap();
    let key = dir.path().join("ssh_host_ed25519_key");
    Runner
        .run(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key),
        )
        .unwrap();
    put_file(&disk, &key, "/etc/ssh", "ssh_host_ed25519_key", 0o600);
    put_file(
        &disk,
        &key.with_extension("pub"),
        "/etc/ssh",
        "ssh_host_ed25519_key.pub",
        0o644,
    );
    let work = dir.path().join("work.ext4");
    let owner_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    build_work_seed(&[owner_key], "test", &work).unwrap();
    let boot = common::qemu_boot(
        &img.kernel,
        &img.initrd,
        KERNEL_CMDLINE,
        &[&disk, &work],
        READY_MARKER,
        Duration::from_secs(240),
    );
    eprintln!("boot to {READY_MARKER}: {:?}", boot.elapsed);
    assert!(boot.found, "no ready marker:\n{}", boot.serial);
    let serial = strip_ansi(&boot.serial);
    let line_of = |pred: &dyn Fn(&str) -> bool| serial.lines().position(pred);
    let ssh_at = line_of(&|l| l.contains("Started") && l.contains("ssh.service"))
        .unwrap_or_else(|| panic!("sshd did not start:\n{serial}"));
    let ready_at = line_of(&|l| l.trim() == READY_MARKER)
        .unwrap_or_else(|| panic!("{READY_MARKER} not on a line of its own:\n{serial}"));
    assert!(ssh_at < ready_at, "ready before sshd:\n{serial}");
    assert!(!serial.contains("Failed to start ssh.service"), "{serial}");
    // The work disk was found and mounted on the guest's home.
    let home_at = line_of(&|l| l.contains("Mounted") && l.contains("home-banger.mount"))
        .unwrap_or_else(|| panic!("the work disk was not mounted:\n{serial}"));
    assert!(home_at < ready_at, "ready before the work disk:\n{serial}");
    // Logins are allowed (no "System is booting up") once ready.
    // (The console shortens unit names; the description is whole.)
    let sessions_at = line_of(&|l| l.contains("Finished") && l.contains("Permit User Sessions"))
        .unwrap_or_else(|| panic!("user sessions were never allowed:\n{serial}"));
    assert!(
        sessions_at < ready_at,
        "ready before user sessions:\n{serial}"
    );
}
