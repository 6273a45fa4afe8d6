//! A kernel + initramfs built from the real Debian cloud kernel package
//! boots under QEMU TCG, loads its virtio modules, mounts `root=/dev/vda`
//! read-write and hands over to the root filesystem's /sbin/init.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, Runner};
use banger_imagebuild::kernel_from_deb;

const MARKER: &str = "banger-test-rootfs-up";

/// A tiny root filesystem: static busybox and an /sbin/init that proves the
/// root is writable, prints the marker and powers off.
fn busybox_rootfs(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    for d in ["bin", "sbin", "dev", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    let init = tree.join("sbin/init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/busybox sh\n\
             /bin/busybox touch /rw-check && echo \"{MARKER} rw=yes root=$(/bin/busybox awk '$2==\"/\"{{print $1}}' /proc/mounts | /bin/busybox tail -n1)\"\n\
             /bin/busybox poweroff -f\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let img = dir.join("rootfs.ext4");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 << 20).unwrap();
    Runner
        .run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&tree)
                .arg(&img),
        )
        .unwrap();
    img
}

#[test]
fn debian_cloud_kernel_boots_a_virtio_root_through_the_initramfs() {
    common::require_tool("dpkg-deb", "dpkg");
    common::require_tool("mkfs.ext4", "e2fsprogs");
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    let deb = common::kernel_deb();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let k = kernel_from_deb(&deb, dir.path()).unwrap();
    eprintln!(
        "kernel {} built in {:?}: modules {:?}",
        k.version,
        t.elapsed(),
        k.modules
    );
    for m in [
        "virtio_pci",
        "virtio_blk",
        "virtio_net",
        "failover",
        "net_failover",
    ] {
        assert!(
            k.modules.iter().any(|x| x == m),
            "{m} missing from {:?}",
            k.modules
        );
    }
    let pos = |m: &str| k.modules.iter().position(|x| x == m).unwrap();
    assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
    assert!(k.kernel.is_file() && k.initrd.is_file());
    // Nothing but the two outputs (and the caller's rootfs dir) is left.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    let rootfs = busybox_rootfs(dir.path());
    let boot = common::qemu_boot(
        &k.kernel,
        &k.initrd,
        "console=ttyS0 root=/dev/vda rw panic=-1",
        &[&rootfs],
        MARKER,
        Duration::from_secs(150),
    );
    eprintln!("boot to marker: {:?}", boot.elapsed);
    assert!(
        boot.found,
        "no marker on the serial console:\n{}",
        boot.serial
    );
    assert!(
        boot.serial
            .contains("banger-initramfs: root /dev/vda mounted rw, starting /sbin/init"),
        "{}",
        boot.serial
    );
    assert!(
        boot.serial
            .contains(&format!("{MARKER} rw=yes root=/dev/vda")),
        "{}",
        boot.serial
    );
}

#[test]
fn a_missing_root_disk_ends_the_boot_with_a_clear_message() {
    let deb = common::kernel_deb();
    let dir = tempfile::tempdir().unwrap();
    let k = kernel_from_deb(&deb, dir.path()).unwrap();
    let boot = common::qemu_boot(
        &k.kernel,
        &k.initrd,
        "console=ttyS0 root=/dev/vda rw panic=-1 banger.root_timeout=3",
        &[],
        "did not appear within 3s",
        Duration::from_secs(150),
    );
    assert!(boot.found, "no timeout message:\n{}", boot.serial);
}

#[test]
fn extracted_vmlinux_is_an_elf_that_boots_through_pvh() {
    let deb = common::kernel_deb();
    let dir = tempfile::tempdir().unwrap();
    let k = kernel_from_deb(&deb, dir.path()).unwrap();
    let vmlinux = dir.path().join("vmlinux");
    let t = Instant::now();
    banger_imagebuild::extract_vmlinux(&k.kernel, &vmlinux).unwrap();
    eprintln!("extract_vmlinux: {:?}", t.elapsed());
    let elf = std::fs::read(&vmlinux).unwrap();
    assert!(elf.starts_with(b"\x7fELF\x02\x01"), "not an ELF64 LE");
    assert!(elf.len() as u64 > std::fs::metadata(&k.kernel).unwrap().len());
    // QEMU boots an ELF kernel through its PVH entry point, as Firecracker
    // does: the extracted image is complete.
    let rootfs = busybox_rootfs(dir.path());
    let boot = common::qemu_boot(
        &vmlinux,
        &k.initrd,
        "console=ttyS0 root=/dev/vda rw panic=-1",
        &[&rootfs],
        MARKER,
        Duration::from_secs(150),
    );
    assert!(boot.found, "the vmlinux did not boot:\n{}", boot.serial);
}

#[test]
fn a_package_without_a_kernel_is_refused_by_name_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/doc/fake")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: fake\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: not a kernel\n",
    )
    .unwrap();
    let deb = dir.path().join("fake.deb");
    Runner
        .run(
            &Cmd::new("dpkg-deb")
                .args(["-b", "--root-owner-group"])
                .arg(&pkg)
                .arg(&deb),
        )
        .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let err = kernel_from_deb(&deb, &out).unwrap_err().to_string();
    assert!(err.contains("fake.deb holds no boot/vmlinuz-*"), "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}
