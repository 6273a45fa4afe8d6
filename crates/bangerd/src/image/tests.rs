//! ImageService on a real SQLite store and real files in a temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use banger_host::runner::{Cmd, Runner};
use banger_proto::ErrorCode;
use banger_proto::image::{ImportKernel, RegisterImage};

use super::*;
use crate::store::{ImageSource, KernelSource, NewLease, NewVm, Vmm};

struct Fixture {
    tmp: tempfile::TempDir,
    svc: Arc<ImageService>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::dev(Some(tmp.path().join("state")), Some(tmp.path().join("run"))).unwrap();
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    layout.ensure(uid, gid).unwrap();
    let store = Arc::new(Store::open(&layout.store_path).unwrap());
    let svc = Arc::new(ImageService::new(store, layout, Runner));
    Fixture { tmp, svc }
}

impl Fixture {
    fn input(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn bzimage(&self, name: &str) -> PathBuf {
        let mut bytes = vec![0x11u8; 8192];
        bytes[0x202..0x206].copy_from_slice(b"HdrS");
        let p = self.input(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn ext4(&self, name: &str) -> PathBuf {
        let p = self.input(name);
        Runner
            .run(&Cmd::new("mkfs.ext4").args(["-q", "-F"]).arg(&p).arg("4M"))
            .expect("mkfs.ext4 (package e2fsprogs)");
        p
    }

    fn import(&self, name: &str) -> banger_proto::image::KernelInfo {
        let path = self.bzimage(&format!("{name}.src"));
        self.svc
            .import_kernel(
                &ImportKernel {
                    path,
                    initrd: None,
                    name: Some(name.into()),
                },
                &ProgressSink::discard(),
            )
            .unwrap()
    }

    fn register(&self, name: &str, kernel: &str, rootfs: &Path) -> Result<ImageInfoT, ImageError> {
        self.svc.register(
            &RegisterImage {
                name: name.into(),
                rootfs: rootfs.to_path_buf(),
                kernel: kernel.into(),
                initrd: None,
            },
            &ProgressSink::discard(),
        )
    }

    /// Entries of both staging dirs and the id dirs under images/ and
    /// kernels/ (not counting the staging dirs themselves).
    fn on_disk(&self) -> (Vec<PathBuf>, usize, usize) {
        let l = self.svc.layout();
        let list = |d: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(d)
                .map(|rd| rd.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default()
        };
        let mut staging = list(&l.images_staging_dir());
        staging.extend(list(&l.kernels_staging_dir()));
        let ids = |d: &Path| {
            list(d)
                .into_iter()
                .filter(|p| !p.ends_with(crate::layout::STAGING_DIR))
                .count()
        };
        (staging, ids(&l.images_dir), ids(&l.kernels_dir))
    }
}

type ImageInfoT = banger_proto::image::ImageInfo;

#[test]
fn import_register_show_and_remove() {
    let f = fixture();
    let k = f.import("cloud");
    let l = f.svc.layout();
    assert_eq!(k.kernel, l.kernel_file(&k.id));
    assert_eq!(k.arch, "x86_64");
    assert_eq!(k.initrd, None);
    assert_eq!(
        std::fs::read(&k.kernel).unwrap(),
        std::fs::read(f.input("cloud.src")).unwrap()
    );
    assert_eq!(k.sha256, files::sha256_file(&f.input("cloud.src")).unwrap());

    let rootfs = f.ext4("root.ext4");
    let i = f.register("deb", "cloud", &rootfs).unwrap();
    assert_eq!(i.rootfs, l.image_rootfs(&i.id));
    assert_eq!(i.kernel, "cloud");
    assert_eq!(i.size_bytes, 4 << 20);
    assert_eq!(
        std::fs::read(&i.rootfs).unwrap(),
        std::fs::read(&rootfs).unwrap()
    );
    assert_eq!(f.svc.show_image("deb").unwrap(), i);
    assert_eq!(f.svc.list_images().unwrap(), vec![i.clone()]);
    assert_eq!(f.svc.list_kernels().unwrap()[0].used_by, vec!["deb"]);

    // The kernel is in use by the image.
    let e = f.svc.remove_kernel("cloud").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidState);
    assert!(e.to_string().contains("used by image deb"), "{e}");
    assert!(l.kernel_dir(&k.id).is_dir());

    f.svc.remove_image("deb").unwrap();
    assert!(!l.image_dir(&i.id).exists());
    f.svc.remove_kernel("cloud").unwrap();
    assert!(!l.kernel_dir(&k.id).exists());
    assert_eq!(f.on_disk(), (vec![], 0, 0));
    let e = f.svc.remove_image("deb").unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[test]
fn image_rm_is_refused_while_vms_use_it_and_names_them() {
    let f = fixture();
    f.import("k");
    let i = f.register("deb", "k", &f.ext4("r.ext4")).unwrap();
    for (n, vm) in ["web", "dev"].iter().enumerate() {
        f.svc
            .store
            .create_vm_with_lease(
                &NewVm {
                    name: (*vm).into(),
                    image_id: i.id.clone(),
                    vmm: Vmm::Qemu,
                    vcpus: 1,
                    memory_mib: 512,
                    disk_bytes: 1 << 30,
                    nat: false,
                },
                &NewLease {
                    ip: std::net::Ipv4Addr::new(172, 30, 0, 10 + n as u8),
                    mac: format!("02:ba:ac:1e:00:{:02x}", 10 + n),
                },
            )
            .unwrap();
    }
    let e = f.svc.remove_image("deb").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidState);
    assert_eq!(
        e.to_string(),
        "image \"deb\" is still used by VMs dev, web; remove them first"
    );
    assert!(f.svc.layout().image_rootfs(&i.id).is_file());
    assert_eq!(f.svc.show_image("deb").unwrap().used_by, vec!["dev", "web"]);
}

#[test]
fn bad_inputs_leave_no_row_and_no_directory() {
    let f = fixture();
    f.import("k");
    let good = f.ext4("good.ext4");
    f.register("taken", "k", &good).unwrap();
    let not_ext4 = f.input("junk.img");
    std::fs::write(&not_ext4, vec![7u8; 1 << 16]).unwrap();
    // Superblock magic but nothing else: passes the sniff, fails e2fsck.
    let broken = f.input("broken.ext4");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[1080] = 0x53;
    bytes[1081] = 0xef;
    std::fs::write(&broken, bytes).unwrap();
    let missing = f.input("missing.ext4");

    let cases: Vec<(&str, &str, &Path, ErrorCode, String)> = vec![
        ("Bad", "k", &good, ErrorCode::BadRequest, "\"Bad\"".into()),
        (
            "taken",
            "k",
            &good,
            ErrorCode::AlreadyExists,
            "\"taken\"".into(),
        ),
        (
            "x",
            "nokernel",
            &good,
            ErrorCode::NotFound,
            "\"nokernel\"".into(),
        ),
        (
            "x",
            "k",
            &missing,
            ErrorCode::NotFound,
            missing.display().to_string(),
        ),
        (
            "x",
            "k",
            &not_ext4,
            ErrorCode::BadRequest,
            not_ext4.display().to_string(),
        ),
        (
            "x",
            "k",
            &broken,
            ErrorCode::BadRequest,
            broken.display().to_string(),
        ),
        (
            "x",
            "k",
            Path::new("rel.ext4"),
            ErrorCode::BadRequest,
            "rel.ext4".into(),
        ),
    ];
    let before = f.on_disk();
    for (name, kernel, rootfs, code, needle) in cases {
        let e = f.register(name, kernel, rootfs).unwrap_err();
        let msg = banger_proto::error::chain(&e).join(": ");
        assert_eq!(e.code(), code, "{name} {}: {msg}", rootfs.display());
        assert!(msg.contains(&needle), "{msg} should name {needle}");
        assert_eq!(f.on_disk(), before, "after {msg}");
    }
    let e = f.register("x", "k", &broken).unwrap_err();
    assert!(matches!(e, ImageError::Fsck { .. }), "{e}");
    assert_eq!(f.svc.list_images().unwrap().len(), 1);

    // Kernels: not a kernel, taken name, bad default name.
    let txt = f.input("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    let import = |path: &Path, name: Option<&str>| {
        f.svc.import_kernel(
            &ImportKernel {
                path: path.to_path_buf(),
                initrd: None,
                name: name.map(Into::into),
            },
            &ProgressSink::discard(),
        )
    };
    let e = import(&txt, Some("t")).unwrap_err();
    assert!(e.to_string().contains(&txt.display().to_string()), "{e}");
    assert!(e.to_string().contains("HdrS"), "{e}");
    let e = import(&f.bzimage("other"), Some("k")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AlreadyExists);
    let e = import(&f.bzimage("Has Space"), None).unwrap_err();
    assert!(e.to_string().contains("\"has space\""), "{e}");
    assert_eq!(f.on_disk(), before);
    assert_eq!(f.svc.list_kernels().unwrap().len(), 1);
}

#[test]
fn concurrent_publications_of_one_name_publish_exactly_one() {
    let f = fixture();
    let k = f.import("k");
    let rootfs = f.ext4("r.ext4");
    let stage = || {
        let s = f.svc.stage_image().unwrap();
        std::fs::copy(&rootfs, s.file(crate::layout::ROOTFS_FILE)).unwrap();
        s
    };
    let (a, b) = (stage(), stage());
    let publish = |s: Staging| {
        let svc = Arc::clone(&f.svc);
        let kernel_id = k.id.clone();
        std::thread::spawn(move || {
            svc.publish_image(
                s,
                PublishImage {
                    name: "same".into(),
                    kernel_id,
                    source: ImageSource::Build,
                    source_ref: None,
                },
            )
        })
    };
    let (ha, hb) = (publish(a), publish(b));
    let results = [ha.join().unwrap(), hb.join().unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let err = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");
    assert_eq!(f.on_disk(), (vec![], 1, 1));
}

#[test]
fn publish_kernel_computes_sha_and_keeps_the_initrd() {
    let f = fixture();
    let s = f.svc.stage_kernel().unwrap();
    std::fs::write(s.file("kernel"), b"abc").unwrap();
    std::fs::write(s.file("initrd"), b"init").unwrap();
    let row = f
        .svc
        .publish_kernel(
            s,
            PublishKernel {
                name: "pulled".into(),
                arch: "x86_64".into(),
                sha256: None,
                source: KernelSource::Pull,
            },
        )
        .unwrap();
    assert_eq!(
        row.sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(row.initrd_path, Some(f.svc.layout().kernel_initrd(&row.id)));
    assert_eq!(
        std::fs::read(f.svc.layout().kernel_initrd(&row.id)).unwrap(),
        b"init"
    );
}

#[test]
fn a_failed_insert_unpublishes_and_a_dropped_staging_vanishes() {
    let f = fixture();
    let s = f.svc.stage_image().unwrap();
    std::fs::write(s.file(crate::layout::ROOTFS_FILE), b"x").unwrap();
    let e = f
        .svc
        .publish_image(
            s,
            PublishImage {
                name: "orphan".into(),
                kernel_id: "00".repeat(16),
                source: ImageSource::Oci,
                source_ref: Some("reg/x:1".into()),
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert_eq!(f.on_disk(), (vec![], 0, 0));

    // A staging without its rootfs is refused, and removed when dropped.
    let s = f.svc.stage_image().unwrap();
    let dir = s.path().to_path_buf();
    let e = f
        .svc
        .publish_image(
            s,
            PublishImage {
                name: "empty".into(),
                kernel_id: "00".repeat(16),
                source: ImageSource::Build,
                source_ref: None,
            },
        )
        .unwrap_err();
    assert!(matches!(e, ImageError::StagedFileMissing { .. }), "{e}");
    assert!(!dir.exists());
}

#[test]
fn reconcile_removes_stale_staging_and_unrecorded_dirs_only() {
    let f = fixture();
    let k = f.import("k");
    let l = f.svc.layout().clone();
    let stale = Staging::create(&l.images_staging_dir()).unwrap();
    let stale_dir = stale.path().to_path_buf();
    std::mem::forget(stale); // a crash: nobody drops it
    std::fs::write(stale_dir.join("rootfs.ext4"), b"half").unwrap();
    let stale_kernel = l.kernels_staging_dir().join("rm-deadbeef");
    std::fs::create_dir_all(&stale_kernel).unwrap();
    let orphan = l.image_dir(&"ab".repeat(16));
    std::fs::create_dir_all(&orphan).unwrap();
    let not_an_id = l.images_dir.join("notes");
    std::fs::create_dir_all(&not_an_id).unwrap();

    std::thread::sleep(Duration::from_millis(20));
    let started = SystemTime::now();
    // File times come from the kernel's coarse clock, a tick behind.
    std::thread::sleep(Duration::from_millis(50));
    let fresh = f.svc.stage_kernel().unwrap();

    let mut removed = f.svc.reconcile(started);
    removed.sort();
    let mut expected = vec![stale_dir, stale_kernel, orphan];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(
        fresh.path().is_dir(),
        "a staging dir from after the start stays"
    );
    assert!(not_an_id.is_dir(), "only id-shaped directories are touched");
    assert!(l.kernel_file(&k.id).is_file(), "recorded kernels stay");
}
