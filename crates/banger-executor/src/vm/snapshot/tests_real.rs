//! The file backends and loop attachment on real files and devices.

use super::*;

// ---- reflink and sparse copy on real files ------------------------------

pub(super) fn assert_same_content(a: &Path, b: &Path) {
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn sparse_copy_through_the_trait_keeps_content_and_holes() {
    let e = env_in(&std::env::temp_dir(), FakeHost::lab_host(), |t| t);
    let disk = SparseCopy.create(&e.host, VM, IMG).unwrap();
    assert_eq!(disk.backend, BackendKind::SparseCopy);
    assert_eq!(disk.path, e.vm_file("root.ext4"));
    assert_eq!(disk.bytes, IMAGE_BYTES);
    assert!(disk.devices.is_empty());
    assert_same_content(&e.image(), &disk.path);
    assert!(std::fs::metadata(&disk.path).unwrap().blocks() * 512 < IMAGE_BYTES / 2);
    assert_eq!(e.host.backend_of(VM).unwrap().kind(), BackendKind::Reflink);
    assert_eq!(e.host.root_disk(VM).unwrap().path, disk.path);
    // A second create refuses to overwrite.
    let again = SparseCopy.create(&e.host, VM, IMG).unwrap_err();
    assert!(matches!(again, VmOpError::Exists { .. }), "{again}");
    SparseCopy.remove(&e.host, VM).unwrap();
    assert!(!disk.path.exists());
    SparseCopy.remove(&e.host, VM).unwrap();
    assert!(
        e.tools.take_calls().is_empty(),
        "file backends run no tools"
    );
}

#[test]
fn reflink_declines_without_ficlone_and_the_copy_takes_over() {
    // /tmp is ext4 and /dev/shm tmpfs on the CI hosts: neither has FICLONE.
    let e = env_in(Path::new("/dev/shm"), FakeHost::lab_host(), |t| t);
    let err = Reflink.create(&e.host, VM, IMG).unwrap_err();
    assert!(
        matches!(
            err,
            VmOpError::SnapshotUnsupported {
                backend: "reflink",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !e.vm_file("root.ext4").exists(),
        "nothing half-made is left"
    );
    let disk = e.host.create_root_disk(VM, IMG).unwrap();
    assert_eq!(disk.backend, BackendKind::SparseCopy);
    assert_same_content(&e.image(), &disk.path);
}

#[test]
fn sparse_copy_keeps_content_and_holes() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = std::fs::File::create_new(dir.path().join("src")).unwrap();
    src.write_all(b"head").unwrap();
    src.seek(SeekFrom::Start(64 << 20)).unwrap();
    src.write_all(b"tail").unwrap();
    let src = std::fs::File::open(dir.path().join("src")).unwrap();
    let dst = std::fs::File::create_new(dir.path().join("dst")).unwrap();
    sparse_copy(&src, &dst).unwrap();
    assert_same_content(&dir.path().join("src"), &dir.path().join("dst"));
    // 64 MiB apparent, only a few blocks allocated.
    assert!(dst.metadata().unwrap().blocks() * 512 < 1 << 20);
}

/// A loop-mounted XFS (reflink=1), unmounted on drop.
struct XfsMount {
    dir: tempfile::TempDir,
}

impl XfsMount {
    fn new() -> XfsMount {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (mount)"
        );
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        // 300 MiB: mkfs.xfs refuses smaller filesystems.
        std::fs::File::create(&image)
            .unwrap()
            .set_len(300 << 20)
            .unwrap();
        Runner
            .run(
                &Cmd::new("mkfs.xfs")
                    .args(["-q", "-m", "reflink=1"])
                    .arg(&image),
            )
            .expect("mkfs.xfs (apt-get install xfsprogs)");
        // `mount -o loop` detaches its loop device again on umount.
        Runner
            .run(
                &Cmd::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(dir.path().join("mnt")),
            )
            .expect("mount -o loop");
        XfsMount { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        // Children forked by parallel tests may hold our descriptors for a
        // moment: retry, then detach lazily.
        for _ in 0..50 {
            if Runner.run(&Cmd::new("umount").arg(self.path())).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Runner.run(&Cmd::new("umount").arg("--lazy").arg(self.path()));
    }
}

#[test]
fn reflink_through_the_trait_on_xfs() {
    let m = XfsMount::new();
    {
        let e = env_in(&m.path(), FakeHost::lab_host(), |t| t);
        let disk = Reflink.create(&e.host, VM, IMG).unwrap();
        assert_eq!(disk.backend, BackendKind::Reflink);
        assert_eq!(disk.bytes, IMAGE_BYTES);
        assert_same_content(&e.image(), &disk.path);
        assert_eq!(e.host.root_disk(VM).unwrap().path, disk.path);
        Reflink.remove(&e.host, VM).unwrap();
        assert!(!disk.path.exists());
        // Selection on this host (no dm): reflink first, and it works.
        let disk = e.host.create_root_disk(VM, IMG).unwrap();
        assert_eq!(disk.backend, BackendKind::Reflink);
        assert_same_content(&e.image(), &disk.path);
    }
}

// ---- real loop devices (root) ---------------------------------------------

/// Detaches loop device `n` on drop if it still backs `id`: no loop device
/// outlives the test, pass or fail.
pub(super) struct LoopGuard {
    pub(super) n: Option<u32>,
    pub(super) id: Backing,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Some(n) = self.n
            && matches!(loopdev::status(n), Ok(Some(b)) if b == self.id)
        {
            let _ = loopdev::clear(n);
        }
    }
}

/// A 4 MiB sparse file at `path` for a real loop device (root only),
/// opened read-only.
pub(super) fn loop_disk(path: &Path) -> std::fs::File {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (loop devices)"
    );
    std::fs::File::create(path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    std::fs::File::open(path).unwrap()
}

/// `dm::attach_loop` of `file` (at `path`) as VM's origin.
pub(super) fn attach_origin(
    tools: &dyn super::super::DiskTools,
    txn: &mut crate::journal::Txn<'_>,
    links: &LinkDir,
    file: &std::fs::File,
    path: &Path,
) -> Result<String, VmOpError> {
    dm::attach_loop(tools, txn, links, VM, dm::Which::Origin, file, path)
}

/// Attach through `dm::attach_loop` with the real ioctls, from a descriptor
/// whose path was swapped afterwards; the kernel must back the held inode.
#[test]
fn real_loop_device_is_attached_from_the_held_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let held = loop_disk(&path);
    let id = loopdev::identity(&held).unwrap();
    // The owner renames the file away and plants another in its place.
    let moved = dir.path().join("moved.img");
    std::fs::rename(&path, &moved).unwrap();
    std::fs::write(&path, b"decoy").unwrap();

    let journal = crate::journal::JournalFile::new(dir.path().join("journal.json"));
    let tools = super::super::HostTools;
    let mut guard = LoopGuard { n: None, id };
    let dev = {
        let mut txn = journal.open().unwrap();
        let links = LinkDir::in_state(dir.path());
        let dev = attach_origin(&tools, &mut txn, &links, &held, &path).unwrap();
        guard.n = Some(dm::loop_number(&dev).unwrap());
        dev
    };
    let n = guard.n.unwrap();
    let sys = PathBuf::from(format!("/sys/block/loop{n}"));
    let backing = std::fs::read_to_string(sys.join("loop/backing_file")).unwrap();
    // Attached through root's link of the held inode, not the owner's name.
    assert_eq!(
        backing.trim(),
        std::fs::canonicalize(dir.path())
            .unwrap()
            .join("root-loops")
            .join(format!("{VM}.origin"))
            .display()
            .to_string()
    );
    assert_eq!(std::fs::read_to_string(sys.join("ro")).unwrap().trim(), "1");
    assert_eq!(loopdev::status(n).unwrap(), Some(id));
    // Journaled with the identity.
    let entry = journal.open().unwrap().state.snapshot(VM).unwrap().clone();
    let l = entry.origin.clone().unwrap();
    assert_eq!(
        (l.device.as_str(), l.backing_dev, l.backing_ino),
        (dev.as_str(), id.dev, id.ino)
    );

    // Teardown by identity detaches it.
    let mut entry = entry;
    let (removed, errors) =
        dm::teardown_entry(&tools, Some(&LinkDir::in_state(dir.path())), &mut entry);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(removed, [format!("loop device {dev}")]);
    assert_eq!(loopdev::status(n).unwrap(), None);
    assert!(
        std::fs::read_to_string(sys.join("loop/backing_file")).is_err(),
        "loop{n} still attached"
    );
}

/// The real device-mapper probe: on the lab hosts (docs/lab.md: no dm module;
/// `DM_VERSION` fails, ENOENT or ENODEV) it must report the node unusable
/// even where an open of the node alone would not tell.
#[test]
fn real_dm_version_probe_reports_what_the_kernel_says() {
    let present = banger_proto::privops::DeviceProbe {
        device: HostDevice::MapperControl,
        state: DeviceState::Present,
    };
    let probe = super::super::mapper_probe(present.clone(), &super::super::HostTools);
    match loopdev::dm_version() {
        Ok(v) => {
            assert_eq!(v[0], 4, "dm ioctl interface version {v:?}");
            assert_eq!(probe, present);
        }
        Err(e) => assert!(
            matches!(&probe.state, DeviceState::Unusable { error } if error.contains(&e.to_string())),
            "{e}: {probe:?}"
        ),
    }
}
