//! Shared by the integration tests: the cached Debian kernel package, a
//! QEMU TCG boot that watches the serial console, small ext4 helpers.
//! Missing tools or packages fail the test with a hint; nothing skips.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, Runner, SpawnOptions};

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (mmdebstrap, chroot, ownership in ext4 images); run the suite as root, as CI does"
    );
}

pub fn require_tool(tool: &str, package: &str) {
    assert!(
        banger_host::runner::resolve(tool.as_ref()).is_some(),
        "{tool} is missing: apt-get install {package}"
    );
}

/// The cache shared by test runs (`$BANGER_CACHE_DIR` or /var/cache/banger).
pub fn cache_dir() -> PathBuf {
    let d = banger_imagebuild::default_cache_dir();
    std::fs::create_dir_all(&d).expect("creating the cache dir");
    d
}

/// The current Debian cloud kernel package, downloaded once with
/// `apt-get download` into `<cache>/debs/` and reused.
pub fn kernel_deb() -> PathBuf {
    require_tool("apt-get", "apt");
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs).unwrap();
    let out = Runner
        .run(&Cmd::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))
        .expect("apt-cache depends linux-image-cloud-amd64 (run apt-get update)");
    let pkg = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .expect("linux-image-cloud-amd64 has a Depends: line")
        .trim()
        .to_string();
    let find = || {
        std::fs::read_dir(&debs)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")
            })
    };
    if let Some(p) = find() {
        return p;
    }
    // Download into a private dir, then move in: a parallel test never sees
    // a partial package.
    let tmp = tempfile::tempdir_in(&debs).unwrap();
    Runner
        .run(
            &Cmd::new("sh")
                .args(["-ec", "cd \"$1\" && apt-get download -q \"$2\"", "sh"])
                .arg(tmp.path())
                .arg(&pkg)
                .timeout(Duration::from_secs(600)),
        )
        .expect("apt-get download of the kernel package");
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let p = e.unwrap().path();
        std::fs::rename(&p, debs.join(p.file_name().unwrap())).unwrap();
    }
    find().expect("the downloaded kernel package")
}

/// What a boot printed, and whether the marker came.
#[derive(Debug)]
pub struct Boot {
    pub found: bool,
    pub serial: String,
    pub elapsed: Duration,
}

/// Boot under QEMU TCG (q35, `disks` as virtio-blk vda, vdb..., no NIC) until `marker`
/// shows on the serial console, the VM exits, or `timeout`; the VM is then
/// killed through its pidfd.
pub fn qemu_boot(
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    disks: &[&Path],
    marker: &str,
    timeout: Duration,
) -> Boot {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Cmd::new("qemu-system-x86_64")
        .args(["-M", "q35", "-accel", "tcg", "-m", "512", "-smp", "1"])
        .args(["-nographic", "-nic", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline);
    for d in disks {
        cmd = cmd
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", d.display()));
    }
    let start = Instant::now();
    let mut vm = Runner
        .spawn(
            &cmd,
            SpawnOptions {
                output: Some(log.reopen().unwrap()),
                run_as: None,
            },
        )
        .expect("starting qemu");
    let mut found = false;
    loop {
        let serial = String::from_utf8_lossy(&std::fs::read(log.path()).unwrap()).into_owned();
        if serial.contains(marker) {
            found = true;
            break;
        }
        if vm.try_wait().unwrap().is_some() || start.elapsed() > timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = start.elapsed();
    let _ = vm.kill();
    let serial = String::from_utf8_lossy(&std::fs::read(log.path()).unwrap()).into_owned();
    Boot {
        found,
        serial,
        elapsed,
    }
}

/// Output of one read-only debugfs request.
pub fn debugfs(image: &Path, request: &str) -> String {
    let out = Runner
        .run(&Cmd::new("debugfs").arg("-R").arg(request).arg(image))
        .expect("debugfs");
    out.stdout
}

/// `e2fsck -fn` passes.
pub fn assert_fsck_clean(image: &Path) {
    let out = Runner
        .output(&Cmd::new("e2fsck").arg("-fn").arg(image))
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}{}",
        image.display(),
        out.stdout,
        out.stderr
    );
}
