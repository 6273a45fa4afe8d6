//! The hostile-owner suite (issue #13): the owner — and so `bangerd` in
//! system mode — is not trusted by root. It talks to `root.sock` directly
//! with any well-formed `PrivOp`, and it can write anything in its state
//! directory (`vms/<id>/`, `vms/<id>/run/`, `images/`, `kernels/`) at any
//! moment, racing root.
//!
//! Each test starts a real `bangerd-root` inside a test network namespace
//! ([`NetNs`]) serving a throwaway owner ([`TestUser`]); the owner's
//! requests go over `root.sock` from `banger-rawclient` running as that
//! user, and the VMMs the helper launches (as the owner, as in system mode)
//! are small shell stand-ins recorded in the install metadata. What the
//! owner could do with `fs.protected_hardlinks` off (hard-link a file of
//! root's into its directory) the test does itself as root, so nothing
//! depends on that sysctl. Races run on threads whose file-system identity
//! is the owner's (`setfsuid`), so they can do exactly what the owner's
//! processes could.
//!
//! Findings whose regression tests live elsewhere: 8 (the host's udev and
//! LVM acting on banger's devices) in `udev_lvm.rs`, against the distro's
//! own udev and lvm2 rather than a helper.
//!
//! Needs root, iproute2 and e2fsprogs.
#![allow(clippy::disallowed_methods)] // the tests spawn the helper and the raw client directly

mod dirs;
mod fc_jail;
mod fc_snapshot;
mod item13;
mod item16;
mod jail;
mod jailed_vmm;
mod lab;
mod locks;
// The real Firecracker binary and a kernel it loads (`fc_snapshot`).
#[path = "../../../banger-vmm/tests/real_firecracker/mod.rs"]
mod real_firecracker;
mod taps;
mod vmm_jail;

use std::os::fd::AsFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use banger_proto::privops::{GrowWorkDisk, PrivOp, VmOp, VmmStatus};
use banger_proto::vmops::{VmDisksSpec, VmmKind};
use banger_testkit::*;

use lab::*;

/// Issue #13 finding 3: when a VMM exited during start-up, root read
/// `vmm.log` (QEMU) and `serial.log` and `run/firecracker.log`
/// (Firecracker) by path and put their last lines into the `LaunchVm`
/// error. The VMM runs as the owner, so the owner can swap those names for
/// symlinks to a root-only file before root reads them. The stand-ins do
/// exactly that, then exit: the error must show what the VMM wrote, never
/// the secret.
#[test]
fn a_log_swapped_for_a_symlink_never_leaks_into_the_launch_error() {
    let lab = Lab::new();
    let secret_file = lab.root.join("secret");
    let secret = "ROOT-ONLY-7f3a9c-do-not-print";
    root_file(&secret_file, &format!("{secret}\n"));
    let secret_before = identity(&secret_file);
    let (q, f) = (
        "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
        "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
    );
    let (qdir, fdir) = (lab.vm(q), lab.vm(f));
    let s = secret_file.display();
    lab.stand_in(
        "qemu",
        &format!(
            "echo 'qemu stand-in: no usable accelerator' >&2\n\
             ln -sf {s} {q}/vmm.log\nexit 1\n",
            q = qdir.display()
        ),
    );
    lab.stand_in(
        "firecracker",
        &format!(
            "echo 'firecracker stand-in: Kvm(Error(13))'\n\
             ln -sf {s} {f}/serial.log\nln -sf {s} {f}/run/firecracker.log\nexit 1\n",
            f = fdir.display()
        ),
    );
    let lab = lab.start();

    for (id, vmm, output) in [
        (q, VmmKind::Qemu, "qemu stand-in: no usable accelerator"),
        (
            f,
            VmmKind::Firecracker,
            "firecracker stand-in: Kvm(Error(13))",
        ),
    ] {
        let err = lab.launch(id, vmm).expect_err("the stand-in exits");
        assert!(
            !err.contains(secret),
            "the {vmm:?} launch error leaked a root-only file: {err}"
        );
        assert!(err.contains("exited during start-up"), "{err}");
        assert!(err.contains(output), "{err}");
    }
    // The owner's symlinks point at the secret, which is as it was.
    assert_eq!(identity(&secret_file), secret_before);
}

/// Issue #13 finding 7: root opened `vmm.log`, the work seed and the work
/// disk beneath the state dir without following symlinks, but took
/// whatever file was there: a hard link the owner planted to a file of
/// root's (possible where `fs.protected_hardlinks` is off; the test plants
/// it as root) was appended to and handed to the owner (`vmm.log`), copied
/// into the owner's work disk (the seed) or grown (`GrowWorkDisk`). Each is
/// refused now, and the linked file keeps its owner, mode, size and bytes.
#[test]
fn hard_links_planted_where_root_works_are_refused() {
    let lab = Lab::new();
    let (a, b, c, d) = (
        "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
        "0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d",
        "0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e",
        "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
    );
    lab.stand_in("qemu", "echo 'qemu stand-in output' >&2\nexit 1\n");
    let lab = lab.start();
    let victims = lab.root.join("victims");
    std::fs::create_dir(&victims).unwrap();

    // vmm.log, hard-linked to a root-only file.
    let log_victim = victims.join("log");
    root_file(&log_victim, "root's log\n");
    let before = identity(&log_victim);
    let adir = lab.vm(a);
    std::fs::hard_link(&log_victim, adir.join("vmm.log")).unwrap();
    let err = lab
        .launch(a, VmmKind::Qemu)
        .expect_err("a hard-linked vmm.log");
    eprintln!("hard-linked vmm.log: {err}");
    assert_eq!(
        identity(&log_victim),
        before,
        "root changed the file behind vmm.log ({err})"
    );
    assert!(err.contains("vmm.log"), "{err}");
    assert!(err.contains("refusing"), "{err}");

    // The work disk, hard-linked to a root-only file, grown.
    let disk_victim = victims.join("disk");
    root_file(&disk_victim, &"d".repeat(1 << 20));
    let disk_before = identity(&disk_victim);
    let bdir = lab.vm(b);
    std::fs::remove_file(bdir.join("work.ext4")).unwrap();
    std::fs::hard_link(&disk_victim, bdir.join("work.ext4")).unwrap();
    let err = lab
        .call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
            vm_id: b.into(),
            bytes: 64 << 20,
        })))
        .expect_err("a hard-linked work disk");
    eprintln!("hard-linked work disk, grown: {err}");
    assert_eq!(
        identity(&disk_victim),
        disk_before,
        "root changed the file behind work.ext4 ({err})"
    );
    assert!(err.contains("work.ext4"), "{err}");
    assert!(err.contains("refusing"), "{err}");

    // The image's work seed, hard-linked to a root-only ext4 image: root
    // would copy it into the owner's new work disk.
    let seed_victim = victims.join("seed.ext4");
    mkfs_ext4(&seed_victim, "8M");
    std::fs::set_permissions(&seed_victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = identity(&seed_victim);
    let seed = lab
        .state()
        .join("images")
        .join(IMAGE)
        .join("work-seed.ext4");
    std::fs::hard_link(&seed_victim, &seed).unwrap();
    let cdir = lab.vm_dir(c);
    lab.owner_dir(&cdir);
    let err = lab
        .call(PrivOp::Vm(VmOp::CreateVmDisks(VmDisksSpec {
            vm_id: c.into(),
            image_id: IMAGE.into(),
            work_disk_bytes: 64 << 20,
            from_snapshot: None,
        })))
        .expect_err("a hard-linked work seed");
    eprintln!("hard-linked work seed: {err}");
    assert!(err.contains("work-seed.ext4"), "{err}");
    assert!(err.contains("refusing"), "{err}");
    assert!(
        !cdir.join("work.ext4").exists(),
        "a work disk was made from the seed"
    );
    assert!(
        !cdir.join("root.ext4").exists(),
        "the failed create left its root disk"
    );
    assert_eq!(
        identity(&seed_victim),
        before,
        "root changed the file behind the seed"
    );
    std::fs::remove_file(&seed).unwrap();

    // A work disk name taken by a hard link when the disks are created.
    let ddir = lab.vm_dir(d);
    lab.owner_dir(&ddir);
    std::fs::hard_link(&disk_victim, ddir.join("work.ext4")).unwrap();
    let err = lab
        .call(PrivOp::Vm(VmOp::CreateVmDisks(VmDisksSpec {
            vm_id: d.into(),
            image_id: IMAGE.into(),
            work_disk_bytes: 64 << 20,
            from_snapshot: None,
        })))
        .expect_err("a work disk name already taken");
    eprintln!("work disk name taken: {err}");
    assert!(err.contains("work.ext4"), "{err}");
    assert_eq!(
        identity(&disk_victim),
        disk_before,
        "root changed the file behind work.ext4"
    );
}

/// Issue #13 finding 1: root connected to `run/qmp.sock` and
/// `run/firecracker.sock` by path, following a symlink there, so the
/// owner could point root's QMP and API traffic at any socket on the
/// host. The stand-ins replace their socket with a symlink to a listener
/// of root's and keep running: root must never connect to it. (A jailed
/// QEMU has no `run/` now and its QMP socket is root's, outside the
/// owner's tree: the QEMU stand-in's symlink cannot even be made, and its
/// launch fails for want of an answer on root's socket.)
#[test]
fn a_vmm_socket_swapped_for_a_symlink_is_never_connected_to() {
    let lab = Lab::new();
    let (q, f) = (
        "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a",
        "1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b",
    );
    let (qdir, fdir) = (lab.vm(q), lab.vm(f));
    let foreign = lab.root.join("foreign.sock");
    let listener = UnixListener::bind(&foreign).unwrap();
    listener.set_nonblocking(true).unwrap();
    lab.stand_in(
        "qemu",
        &format!(
            "ln -s {} {}/run/qmp.sock\nexec sleep 60\n",
            foreign.display(),
            qdir.display()
        ),
    );
    lab.stand_in(
        "firecracker",
        &format!(
            "ln -s {} {}/run/firecracker.sock\nexec sleep 60\n",
            foreign.display(),
            fdir.display()
        ),
    );
    let lab = lab.start();

    let stop = AtomicBool::new(false);
    let connections = AtomicUsize::new(0);
    let (qemu, firecracker) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let peer = banger_host::peer::peer_cred(conn.as_fd()).unwrap();
                        eprintln!("the foreign socket got a connection from {peer:?}");
                        connections.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let results = (
            lab.launch(q, VmmKind::Qemu),
            lab.launch(f, VmmKind::Firecracker),
        );
        stop.store(true, Ordering::Relaxed);
        results
    });
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "root connected to a socket the owner's symlink pointed at (qemu: {qemu:?}, firecracker: {firecracker:?})"
    );
    eprintln!("qemu: {qemu:?}\nfirecracker: {firecracker:?}");
    let qemu = qemu.expect_err("QEMU's QMP socket is a symlink");
    assert!(qemu.contains("never answered"), "{qemu}");
    let firecracker = firecracker.expect_err("Firecracker's API socket is a symlink");
    assert!(firecracker.contains("API socket"), "{firecracker}");
    // Nothing is left running.
    for id in [q, f] {
        let st = lab
            .call(PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: id.into() })))
            .unwrap();
        assert_eq!(st["result"]["running"], false, "{st}");
    }
}

/// Issue #13 finding 1: after making `vms/<id>/run/`, root created,
/// truncated and `fchown`ed the Firecracker log and metrics files and
/// removed stale sockets by path, so an owner swapping `run` for a symlink
/// (`renameat2(RENAME_EXCHANGE)`, over and over) made root do that to
/// files of another directory. A racing thread, as the owner, flips `run`
/// while Firecracker launches run; root's files and socket in the other
/// directory keep owner, mode and bytes.
#[test]
fn a_run_dir_swapped_during_launch_redirects_nothing() {
    let lab = Lab::new().start();
    let id = "2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a";
    let dir = lab.vm(id);
    let elsewhere = lab.root.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    let files = ["firecracker.log", "firecracker.metrics"].map(|n| elsewhere.join(n));
    for f in &files {
        root_file(f, "root's\n");
    }
    let before: Vec<_> = files.iter().map(|f| identity(f)).collect();
    let sockets = ["firecracker.sock", "vsock.sock"].map(|n| elsewhere.join(n));
    let _bound: Vec<UnixListener> = sockets
        .iter()
        .map(|s| UnixListener::bind(s).unwrap())
        .collect();

    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let (mut spawned, mut refused) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            become_owner_fs(&lab.owner);
            let vm = std::fs::File::open(&dir).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _ = rustix::fs::symlinkat(&elsewhere, &vm, "decoy");
                if exchange(&vm, "decoy", "run") {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        for _ in 0..150 {
            match lab.launch(id, VmmKind::Firecracker) {
                Err(e) if e.contains("exited during start-up") => spawned += 1,
                Err(_) => refused += 1,
                Ok(v) => panic!("the stand-in exits, yet the launch succeeded: {v}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let swaps = swaps.load(Ordering::Relaxed);
    eprintln!("{spawned} launches spawned the VMM, {refused} refused; {swaps} swaps of run/");
    let after: Vec<_> = files.iter().map(|f| identity(f)).collect();
    assert_eq!(after, before, "root changed files outside the VM's run/");
    for s in &sockets {
        assert!(
            s.exists(),
            "root removed {} through a swapped run/",
            s.display()
        );
    }
    assert!(
        swaps > 0 && spawned > 0,
        "the race did not run ({swaps} swaps, {spawned} spawns)"
    );
}

/// Second review of #13 (F1): root read back each guest file with
/// `debugfs -R cat` and kept all of its output. The root disk is made from
/// the owner's image, so the owner can turn `/etc/hostname` into a
/// directory whose inode claims any size; `write` then fails quietly,
/// `sif … mode` makes it a "regular file", and the read-back streamed its
/// whole claimed size into the helper's memory (terabytes: the host runs
/// out). The claim here is 1 GiB, so the unfixed helper survives to show
/// it: its peak memory must stay far below that.
#[test]
fn a_guest_file_claiming_a_huge_size_is_not_read_into_the_helper() {
    let lab = Lab::new().start();
    let id = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";
    let dir = lab.vm(id);
    let disk = dir.join("root.ext4");
    mkfs_ext4(&disk, "16M");
    let script = dir.join("craft");
    std::fs::write(
        &script,
        "mkdir /etc\nmkdir /etc/hostname\nsif /etc/hostname size 0x40000000\n",
    )
    .unwrap();
    let out = std::process::Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&script)
        .arg(&disk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_file(&script).unwrap();
    std::os::unix::fs::chown(&disk, Some(lab.owner.uid), Some(lab.owner.gid)).unwrap();

    let err = lab
        .call(PrivOp::Vm(VmOp::WriteGuestFiles(
            banger_proto::vmops::GuestFilesSpec {
                vm_id: id.into(),
                files: vec![banger_proto::vmops::GuestFile {
                    path: "/etc/hostname".into(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    content: "dev\n".into(),
                }],
            },
        )))
        .expect_err("a hostname that is not what was written");
    eprintln!("huge guest file: {err}");
    let pid = lab.helper.as_ref().unwrap().proc.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    assert!(
        peak_kib < 256 * 1024,
        "the helper's peak memory reached {peak_kib} KiB reading back a guest file ({err})"
    );
    assert!(err.contains("/etc/hostname"), "{err}");
}
