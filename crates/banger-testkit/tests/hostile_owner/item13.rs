//! Issue #13 item 13, the second review of the descriptor work: FIFOs
//! where root reads, write-opens before the checks, what the owner plants
//! in `run/`, and mounts under the state dir.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_proto::privops::{DeleteVmDisks, GrowWorkDisk, PrivOp, VmOp, VmmStatus};
use banger_proto::vmops::{LaunchVmSpec, VmDisksSpec, VmmKind};

use crate::lab::*;

/// A FIFO of the owner's at `p`.
fn owner_fifo(lab: &Lab, p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", p.display());
    std::os::unix::fs::chown(p, Some(lab.owner.uid), Some(lab.owner.gid)).unwrap();
}

/// Issue #13 item 13: root opened the kernel, the initrd, the work disk
/// (`LaunchVm`) and the work seed (`CreateVmDisks`) beneath the state dir
/// read-only and blocking, so a FIFO the owner planted at any of those
/// names held the helper's thread until somebody opened it for writing.
/// Each op must now be refused at once; after 10 s the test opens the
/// FIFOs for writing itself (so a held thread ends) and fails.
#[test]
fn a_fifo_where_root_reads_is_refused_at_once() {
    let lab = Lab::new();
    let (k_fifo, i_fifo, i_seed) = (
        "4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c",
        "1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e",
        "1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f",
    );
    let (a, b, c, d) = (
        "3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a",
        "3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b",
        "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c",
        "3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d",
    );
    let kdir = lab.state().join("kernels").join(k_fifo);
    lab.owner_dir(&kdir);
    let mut fifos = vec![kdir.join("kernel")];
    for image in [i_fifo, i_seed] {
        let idir = lab.state().join("images").join(image);
        lab.owner_dir(&idir);
        lab.owner_file(&idir.join("rootfs.ext4"), &vec![0u8; 1 << 20]);
    }
    fifos.push(lab.state().join("images").join(i_fifo).join("initrd"));
    fifos.push(
        lab.state()
            .join("images")
            .join(i_seed)
            .join("work-seed.ext4"),
    );
    for id in [a, b, c] {
        lab.vm(id);
    }
    let work = lab.vm_dir(c).join("work.ext4");
    std::fs::remove_file(&work).unwrap();
    fifos.push(work);
    lab.owner_dir(&lab.vm_dir(d));
    for f in &fifos {
        owner_fifo(&lab, f);
    }
    let lab = lab.start();

    let ops: [(&str, PrivOp); 4] = [
        ("kernel", launch_op(a, IMAGE, k_fifo)),
        ("initrd", launch_op(b, i_fifo, KERNEL)),
        ("work disk", launch_op(c, IMAGE, KERNEL)),
        (
            "work seed",
            PrivOp::Vm(VmOp::CreateVmDisks(VmDisksSpec {
                vm_id: d.into(),
                image_id: i_seed.into(),
                work_disk_bytes: 64 << 20,
                from_snapshot: None,
            })),
        ),
    ];
    for (what, op) in ops {
        let started = std::time::Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let got = std::thread::scope(|s| {
            s.spawn(|| tx.send(lab.call(op)).unwrap());
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(r) => Ok(r),
                Err(_) => {
                    // Release the helper's thread: a writer lets its open
                    // of the FIFO return.
                    while let Err(std::sync::mpsc::TryRecvError::Empty) = rx.try_recv() {
                        for f in &fifos {
                            let _ = std::fs::OpenOptions::new()
                                .write(true)
                                .custom_flags(libc::O_NONBLOCK)
                                .open(f);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(())
                }
            }
        });
        let took = started.elapsed();
        let err = got
            .unwrap_or_else(|()| panic!("a FIFO at the {what} held the helper for over 10 s"))
            .expect_err("a FIFO is no disk or kernel");
        eprintln!("FIFO at the {what}, refused in {took:?}: {err}");
        assert!(err.contains("not a regular file"), "{what}: {err}");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
    }
    // The helper still answers, and nothing was launched.
    for id in [a, b, c] {
        let st = lab
            .call(PrivOp::Vm(VmOp::VmmStatus(VmmStatus { vm_id: id.into() })))
            .unwrap();
        assert_eq!(st["result"]["running"], false, "{st}");
    }
    assert!(
        !lab.vm_dir(d).join("work.ext4").exists(),
        "the refused create left a work disk"
    );
}

fn launch_op(vm_id: &str, image: &str, kernel: &str) -> PrivOp {
    PrivOp::Vm(VmOp::LaunchVm(LaunchVmSpec {
        vm_id: vm_id.into(),
        image_id: image.into(),
        kernel_id: kernel.into(),
        vmm: VmmKind::Qemu,
        vcpus: 1,
        memory_mib: 128,
        tap: TAP.into(),
        mac: "02:ba:0a:d5:07:02".into(),
        force_kvm: false,
        restore: None,
    }))
}

/// Issue #13 item 13: `GrowWorkDisk` opened the work disk read-write
/// before checking it was the owner's single-link file, so a hard link to
/// a file of root's (possible with `fs.protected_hardlinks` off; planted
/// here as root) was opened for writing — visible to anyone watching it
/// (inotify `IN_CLOSE_WRITE`, fanotify) though the grow was then refused.
/// The disk is now looked at read-only first; the linked file sees no
/// write-open.
#[test]
fn a_hard_linked_work_disk_is_never_opened_for_writing() {
    let lab = Lab::new().start();
    let id = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    let dir = lab.vm(id);
    let victim = lab.root.join("victim-disk");
    root_file(&victim, &"d".repeat(1 << 16));
    let before = identity(&victim);
    std::fs::remove_file(dir.join("work.ext4")).unwrap();
    std::fs::hard_link(&victim, dir.join("work.ext4")).unwrap();
    let watch = banger_host::watch::OpenWatch::new(&victim).unwrap();
    let err = lab
        .call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
            vm_id: id.into(),
            bytes: 64 << 20,
        })))
        .expect_err("a hard-linked work disk");
    assert!(err.contains("refusing"), "{err}");
    let seen = watch.seen();
    eprintln!("opens of the linked file: {seen:?}");
    assert!(seen.opened, "the watch saw no open at all: {seen:?}");
    assert!(
        !seen.for_writing,
        "root opened the linked file for writing: {seen:?}"
    );
    assert_eq!(identity(&victim), before);
}

/// A bind mount made by the test (as root) in the host's mount namespace
/// before the helper starts (the helper's own namespace, made by
/// `ip netns exec`, copies it); detached again on drop.
struct BindMount(PathBuf);

impl BindMount {
    fn new(src: &Path, dst: &Path) -> BindMount {
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let (s, d) = (c(src), c(dst));
        // SAFETY: both are NUL-terminated paths that outlive the call; a
        // bind mount takes no type or data.
        let rc = unsafe {
            libc::mount(
                s.as_ptr(),
                d.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "bind-mounting {} on {}: {}",
            src.display(),
            dst.display(),
            std::io::Error::last_os_error()
        );
        BindMount(dst.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let d = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(d.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Names (sorted) in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Issue #13 item 13: root emptied `run/` (at each launch and at
/// `DeleteVmDisks`) with its own rights, so what the owner put there
/// decided what root removed: a mount point over a directory of root's
/// (here a bind mount the test makes; a FUSE mount of the owner's would
/// also stall root), a symlink to one, or a directory of the owner's
/// holding a subdirectory of root's (the owner may move its own directory
/// into `run/`). Root now removes there only as the owner could (the
/// owner's fsuid) and never crosses a mount: root's files stay.
#[test]
fn what_the_owner_plants_in_run_leads_root_to_remove_nothing_of_roots() {
    let lab = Lab::new();
    let (l, x) = (
        "6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a6a",
        "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b",
    );
    // Root's directory, and its files, behind each trick.
    let victim = lab.root.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    root_file(&victim.join("keep"), "root's\n");
    let keep_before = identity(&victim.join("keep"));
    let mut mounts = Vec::new();
    for id in [l, x] {
        let run = lab.vm(id).join("run");
        lab.owner_dir(&run);
        // A mount point over root's directory.
        lab.owner_dir(&run.join("mnt"));
        mounts.push(BindMount::new(&victim, &run.join("mnt")));
        // A symlink to it.
        std::os::unix::fs::symlink(&victim, run.join("link")).unwrap();
        // The owner's directory holding one of root's.
        lab.owner_dir(&run.join("moved"));
        let roots = run.join("moved").join("roots");
        std::fs::create_dir(&roots).unwrap();
        std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o755)).unwrap();
        root_file(&roots.join("keep"), "root's\n");
    }
    let lab = lab.start();

    // Firecracker's launch empties run/ (a jailed QEMU has none).
    let launched = lab.launch(l, VmmKind::Firecracker);
    let deleted = lab.call(PrivOp::Vm(VmOp::DeleteVmDisks(DeleteVmDisks {
        vm_id: x.into(),
    })));
    eprintln!("launch: {launched:?}\ndelete: {deleted:?}");
    for id in [l, x] {
        let keep = lab.vm_dir(id).join("run/moved/roots/keep");
        assert!(
            keep.exists(),
            "root removed its own file from a directory the owner moved into run/ ({launched:?}, {deleted:?})"
        );
        assert_eq!(
            identity(&keep),
            keep_before,
            "root removed its own file from a directory the owner moved into run/ ({launched:?}, {deleted:?})"
        );
    }
    drop(mounts);
    assert_eq!(
        names(&victim),
        ["keep"],
        "root removed files through a mount in run/ ({launched:?}, {deleted:?})"
    );
    assert_eq!(identity(&victim.join("keep")), keep_before);
    let launched = launched.expect_err("run/ could not be emptied");
    assert!(launched.contains("run"), "{launched}");
    let deleted = deleted.expect_err("run/ could not be emptied");
    assert!(deleted.contains("run"), "{deleted}");
}

/// Issue #13 item 13: no lookup beneath the state dir refused to cross a
/// mount point, so a mount planted under the owner's tree (a FUSE mount
/// of the owner's stalls root; here the test bind-mounts a directory) was
/// walked into as if it were the owner's own. A mount on a VM directory
/// or a kernel directory is now refused, and nothing is made behind it.
#[test]
fn a_mount_under_the_state_dir_is_never_crossed() {
    let lab = Lab::new();
    let (v, k) = (
        "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a",
        "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d",
    );
    // The directory mounted over `vms/<v>`: a VM directory as bangerd
    // leaves it, elsewhere.
    let elsewhere = lab.root.join("elsewhere");
    lab.owner_dir(&elsewhere);
    lab.owner_file(&elsewhere.join("root.ext4"), &[0u8; 4096]);
    lab.owner_file(&elsewhere.join("work.ext4"), &[0u8; 4096]);
    lab.owner_dir(&lab.vm_dir(v));
    let on_vm = BindMount::new(&elsewhere, &lab.vm_dir(v));
    // A kernel directory mounted over `kernels/<k>`.
    let kernel_src = lab.root.join("kernel-elsewhere");
    lab.owner_dir(&kernel_src);
    let mut kernel = b"\x7fELF".to_vec();
    kernel.resize(4096, 0);
    lab.owner_file(&kernel_src.join("kernel"), &kernel);
    let kdir = lab.state().join("kernels").join(k);
    lab.owner_dir(&kdir);
    let on_kernel = BindMount::new(&kernel_src, &kdir);
    let vm = "7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b";
    lab.vm(vm);
    let lab = lab.start();

    let on_vm_dir = lab.launch(v, VmmKind::Qemu);
    let via_kernel = lab.launch_from(vm, VmmKind::Qemu, IMAGE, k);
    let grown = lab.call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
        vm_id: v.into(),
        bytes: 64 << 20,
    })));
    eprintln!("VM dir: {on_vm_dir:?}\nkernel: {via_kernel:?}\ngrow: {grown:?}");
    assert_eq!(
        names(&elsewhere),
        ["root.ext4", "work.ext4"],
        "root made files behind the mount ({on_vm_dir:?})"
    );
    assert_eq!(
        std::fs::metadata(elsewhere.join("work.ext4"))
            .unwrap()
            .len(),
        4096
    );
    for (what, r) in [
        ("VM dir", on_vm_dir),
        ("kernel", via_kernel),
        ("grow", grown),
    ] {
        let err = r.expect_err("a mount is crossed");
        assert!(err.contains("cross-device"), "{what}: {err}");
    }
    drop((on_vm, on_kernel));
}

/// Fourth review F1: root reopened the owner's files (through their
/// O_PATH descriptor) blocking, so a write lease the owner holds on its own
/// file — `F_SETLEASE` needs only ownership — made every open wait out the
/// kernel's lease-break time (45 s by default) per file, per op. The open
/// must be refused at once instead.
#[test]
fn a_lease_the_owner_holds_does_not_stall_root() {
    let lab = Lab::new().start();
    let id = "3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e";
    let dir = lab.vm(id);
    let disk = dir.join("work.ext4");
    // The lease break is signalled to the holder (SIGIO, default: die);
    // the owner ignores it, as an attacker would.
    // SAFETY: setting a signal's disposition to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    let (leased_tx, leased_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let owner = &lab.owner;
    let disk = &disk;
    let (res, took) = std::thread::scope(|s| {
        s.spawn(move || {
            become_owner_fs(owner);
            let f = std::fs::File::open(disk).unwrap();
            // SAFETY: F_SETLEASE on a descriptor this thread owns; plain ints.
            let rc = unsafe {
                libc::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    libc::F_SETLEASE,
                    libc::F_WRLCK,
                )
            };
            assert_eq!(
                rc,
                0,
                "the owner could not take a write lease: {}",
                std::io::Error::last_os_error()
            );
            leased_tx.send(()).unwrap();
            // Held until root's op has answered.
            let _ = done_rx.recv_timeout(Duration::from_secs(120));
            drop(f);
        });
        leased_rx.recv().unwrap();
        let started = std::time::Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lab.call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
                vm_id: id.into(),
                bytes: 64 << 20,
            })))
        }));
        let took = started.elapsed();
        // Let the holder go whatever happened, so a stalled helper shows
        // as this test's failure rather than a hang.
        done_tx.send(()).unwrap();
        let res = res.unwrap_or_else(|p| std::panic::resume_unwind(p));
        (res, took)
    });
    eprintln!("grow under a lease: {res:?} in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "a lease held root's open for {took:?} ({res:?})"
    );
    let err = res.expect_err("the leased work disk");
    assert!(err.contains("work.ext4"), "{err}");
}
