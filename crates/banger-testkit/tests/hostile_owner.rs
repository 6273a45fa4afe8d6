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
//! Needs root, iproute2 and e2fsprogs.
#![allow(clippy::disallowed_methods)] // the tests spawn the helper and the raw client directly

use std::os::fd::AsFd as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use banger_proto::install::InstallVmm;
use banger_proto::net::{BridgeSpec, TapSpec};
use banger_proto::privops::PrivOp;
use banger_proto::vmops::{LaunchVmSpec, VmDisksSpec, VmmKind};
use banger_testkit::*;
use serde_json::Value;

const KERNEL: &str = "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b";
const IMAGE: &str = "1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d";
const BRIDGE: &str = "bangerhost0";
const TAP: &str = "bangertap0";

/// A helper serving a throwaway owner, with its state under a temp dir.
/// Fields drop in order: the helper stops before its namespace and its
/// user go, the directory last.
struct Lab {
    helper: Option<RootHelper>,
    ns: NetNs,
    owner: TestUser,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Lab {
    /// The owner, its state directory (as `banger system install` leaves
    /// it: the owner's), a kernel and an image of the owner's, and the two
    /// VMM stand-ins (`vmm/qemu`, `vmm/firecracker`: `exit 1` until a test
    /// writes them).
    fn new() -> Lab {
        require_root();
        let tmp = shared_tempdir();
        let root = tmp.path().to_path_buf();
        let owner = TestUser::create(None);
        let ns = NetNs::new();
        let lab = Lab {
            helper: None,
            ns,
            owner,
            root,
            _tmp: tmp,
        };
        for d in ["state", "state/vms", "state/images", "state/kernels"] {
            lab.owner_dir(&lab.root.join(d));
        }
        let kdir = lab.state().join("kernels").join(KERNEL);
        lab.owner_dir(&kdir);
        // An ELF header, so the Firecracker path gets past its kernel check.
        let mut kernel = b"\x7fELF".to_vec();
        kernel.resize(4096, 0);
        lab.owner_file(&kdir.join("kernel"), &kernel);
        let idir = lab.state().join("images").join(IMAGE);
        lab.owner_dir(&idir);
        lab.owner_file(&idir.join("rootfs.ext4"), &vec![0u8; 1 << 20]);
        let vmm = lab.root.join("vmm");
        std::fs::create_dir(&vmm).unwrap();
        std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
        lab.stand_in("qemu", "exit 1\n");
        lab.stand_in("firecracker", "exit 1\n");
        lab
    }

    /// Start the helper, then the bridge and the tap every launch uses.
    fn start(mut self) -> Lab {
        let vmm = InstallVmm {
            qemu_bin: Some(self.root.join("vmm/qemu")),
            firecracker_bin: Some(self.root.join("vmm/firecracker")),
        };
        // The helper serves only the bridge its install records.
        let network = banger_proto::install::InstallNetwork {
            bridge: BRIDGE.into(),
            subnet: "10.213.7.0/24".parse().unwrap(),
        };
        self.helper = Some(RootHelper::start_in_full(
            &self.ns,
            &self.root,
            &self.owner,
            vmm,
            network,
        ));
        self.call(PrivOp::EnsureBridge(BridgeSpec {
            name: BRIDGE.into(),
            address: [10, 213, 7, 1].into(),
            prefix_len: 24,
        }))
        .expect("EnsureBridge");
        self.call(PrivOp::EnsureTap(TapSpec {
            name: TAP.into(),
            bridge: BRIDGE.into(),
            owner_uid: self.owner.uid,
        }))
        .expect("EnsureTap");
        self
    }

    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    fn vm_dir(&self, vm_id: &str) -> PathBuf {
        self.state().join("vms").join(vm_id)
    }

    fn owner_dir(&self, p: &Path) {
        std::fs::create_dir_all(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(p, Some(self.owner.uid), Some(self.owner.gid)).unwrap();
    }

    fn owner_file(&self, p: &Path, bytes: &[u8]) {
        std::fs::write(p, bytes).unwrap();
        std::os::unix::fs::chown(p, Some(self.owner.uid), Some(self.owner.gid)).unwrap();
    }

    /// A VM directory as `bangerd` leaves it before `LaunchVm`: the
    /// owner's, with a root and a work disk of the owner's.
    fn vm(&self, vm_id: &str) -> PathBuf {
        let dir = self.vm_dir(vm_id);
        self.owner_dir(&dir);
        self.owner_file(&dir.join("root.ext4"), &[0u8; 4096]);
        self.owner_file(&dir.join("work.ext4"), &[0u8; 4096]);
        dir
    }

    /// (Re)write the stand-in for `vmm` (`qemu` or `firecracker`): a shell
    /// script root runs as the owner. Written beside and renamed into
    /// place, so the path the helper executes is never open for writing.
    fn stand_in(&self, vmm: &str, body: &str) {
        let path = self.root.join("vmm").join(vmm);
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Send `op` over `root.sock` as the owner: the result's body, or the
    /// error's code and messages.
    fn call(&self, op: PrivOp) -> Result<Value, String> {
        let helper = self.helper.as_ref().expect("the helper is started");
        helper.call_as(&self.owner, op)
    }

    fn launch(&self, vm_id: &str, vmm: VmmKind) -> Result<Value, String> {
        self.call(PrivOp::LaunchVm(LaunchVmSpec {
            vm_id: vm_id.into(),
            image_id: IMAGE.into(),
            kernel_id: KERNEL.into(),
            vmm,
            vcpus: 1,
            memory_mib: 128,
            tap: TAP.into(),
            mac: "02:ba:0a:d5:07:02".into(),
            kvm: vmm == VmmKind::Firecracker,
        }))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.helper.is_some() {
            let _ = self.call(PrivOp::Teardown);
        }
    }
}

/// A root-only file (root:root 0600) holding `text`.
fn root_file(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::os::unix::fs::chown(p, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Owner, group, mode, size and a digest of the content (FNV-1a): what
/// root must never change.
fn identity(p: &Path) -> (u32, u32, u32, u64, u64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let digest = std::fs::read(p)
        .unwrap()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
    (m.uid(), m.gid(), m.mode() & 0o7777, m.len(), digest)
}

/// Give this thread the owner's file-system identity: from here on it can
/// do in the state directory what the owner's processes could, and no
/// more (a non-zero fsuid drops root's file capabilities). `setfsuid` is
/// per thread; call it only on a thread that ends with the test's race.
fn become_owner_fs(owner: &TestUser) {
    // SAFETY: setfsgid/setfsuid take plain integers and change only the
    // calling thread's file-system ids; the thread is a racer that ends
    // before the test does. Each returns the previous id, so the second
    // call reports whether the first took.
    let ok = unsafe {
        libc::setfsgid(owner.gid);
        libc::setfsuid(owner.uid);
        libc::setfsgid(owner.gid) as u32 == owner.gid
            && libc::setfsuid(owner.uid) as u32 == owner.uid
    };
    assert!(ok, "could not take the owner's file-system ids");
}

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
        .call(PrivOp::GrowWorkDisk {
            vm_id: b.into(),
            bytes: 64 << 20,
        })
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
        .call(PrivOp::CreateVmDisks(VmDisksSpec {
            vm_id: c.into(),
            image_id: IMAGE.into(),
            work_disk_bytes: 64 << 20,
        }))
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
        .call(PrivOp::CreateVmDisks(VmDisksSpec {
            vm_id: d.into(),
            image_id: IMAGE.into(),
            work_disk_bytes: 64 << 20,
        }))
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
/// of root's and keep running: root must never connect to it.
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
    assert!(qemu.contains("qmp.sock"), "{qemu}");
    let firecracker = firecracker.expect_err("Firecracker's API socket is a symlink");
    assert!(firecracker.contains("API socket"), "{firecracker}");
    // Nothing is left running.
    for id in [q, f] {
        let st = lab.call(PrivOp::VmmStatus { vm_id: id.into() }).unwrap();
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
                if rustix::fs::renameat_with(
                    &vm,
                    "decoy",
                    &vm,
                    "run",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .is_ok()
                {
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
