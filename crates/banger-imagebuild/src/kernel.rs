//! Kernels: a bootable kernel + initramfs from a Debian `linux-image-*`
//! package, and the uncompressed ELF inside a bzImage.
//!
//! Debian's cloud kernel builds `virtio_pci`, `virtio_blk`, `virtio_net`,
//! `virtio_mmio` and vsock as modules, so it cannot find its root disk on
//! its own. The initramfs built here carries a static busybox, exactly those
//! modules (plus their dependencies) and an `/init` (`init.sh` beside this
//! file) that loads them, waits for `root=`, mounts it and `switch_root`s.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, RunError, Runner};

use crate::cpio;
use crate::modules::{self, ModuleError};

/// Modules the guest needs to boot from a virtio disk on QEMU (virtio-pci)
/// and to get its network; missing ones are an error.
pub const REQUIRED_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net"];
/// Loaded when the kernel has them: Firecracker's virtio-mmio transport,
/// the vsock readiness channel and the virtio-serial port of the guest
/// agent (QEMU; guest contract 4). The root file system carries no
/// modules: what is not loaded here is never loaded.
pub const OPTIONAL_MODULES: &[&str] = &[
    "virtio_mmio",
    "vmw_vsock_virtio_transport",
    "virtio_console",
];

/// Where the static busybox comes from (Debian `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

const INIT_TEMPLATE: &str = include_str!("init.sh");

/// Bump when the initramfs layout or `init.sh` changes (part of image cache
/// keys).
pub const INITRAMFS_VERSION: u32 = 2;

/// A kernel ready to boot with its initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltKernel {
    /// The bzImage (`vmlinuz-<version>`).
    pub kernel: PathBuf,
    /// gzip-compressed newc initramfs (`initrd.img-<version>`).
    pub initrd: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// Modules the initramfs loads, in load order.
    pub modules: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("creating a work directory in {}", dir.display())]
    TempDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unpacking the kernel package {}", deb.display())]
    Unpack {
        deb: PathBuf,
        #[source]
        source: RunError,
    },
    #[error("{} holds no boot/vmlinuz-* (is it a linux-image package?)", deb.display())]
    NoKernel { deb: PathBuf },
    #[error("{} holds more than one kernel: {names}", deb.display())]
    SeveralKernels { deb: PathBuf, names: String },
    #[error("{} has no lib/modules/{version} for its kernel", deb.display())]
    NoModules { deb: PathBuf, version: String },
    #[error("collecting modules from {}", deb.display())]
    Modules {
        deb: PathBuf,
        #[source]
        source: ModuleError,
    },
    #[error("reading busybox at {}", path.display())]
    Busybox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is dynamically linked; the initramfs needs a static busybox (install Debian's busybox-static)",
        path.display()
    )]
    BusyboxNotStatic { path: PathBuf },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a bzImage: {why}", path.display())]
    NotBzImage { path: PathBuf, why: String },
    #[error("decompressing the kernel in {} ({format})", path.display())]
    Decompress {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Build a bootable kernel + initramfs from a Debian `linux-image-*` .deb.
///
/// Writes `vmlinuz-<version>` and `initrd.img-<version>` into `out_dir`
/// (each through a temporary file and a rename); the package is unpacked
/// into a temporary directory inside `out_dir`, removed afterwards.
pub fn kernel_from_deb(deb: &Path, out_dir: &Path) -> Result<BuiltKernel, KernelError> {
    kernel_from_deb_with(deb, out_dir, Path::new(HOST_BUSYBOX))
}

/// [`kernel_from_deb`] with an explicit static busybox.
pub fn kernel_from_deb_with(
    deb: &Path,
    out_dir: &Path,
    busybox: &Path,
) -> Result<BuiltKernel, KernelError> {
    let tmp = tempfile::Builder::new()
        .prefix(".banger-kernel-")
        .tempdir_in(out_dir)
        .map_err(|source| KernelError::TempDir {
            dir: out_dir.to_path_buf(),
            source,
        })?;
    let tree = tmp.path().join("pkg");
    Runner
        .run(
            &Cmd::new("dpkg-deb")
                .arg("-x")
                .arg(deb)
                .arg(&tree)
                .timeout(Duration::from_secs(300)),
        )
        .map_err(|source| KernelError::Unpack {
            deb: deb.to_path_buf(),
            source,
        })?;

    let mut kernels: Vec<String> = std::fs::read_dir(tree.join("boot"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    kernels.sort();
    let name = match kernels.as_slice() {
        [] => return Err(KernelError::NoKernel { deb: deb.into() }),
        [one] => one.clone(),
        _ => {
            return Err(KernelError::SeveralKernels {
                deb: deb.into(),
                names: kernels.join(", "),
            });
        }
    };
    let version = name["vmlinuz-".len()..].to_string();
    let modroot = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| tree.join(d).join(&version))
        .find(|p| p.is_dir())
        .ok_or_else(|| KernelError::NoModules {
            deb: deb.into(),
            version: version.clone(),
        })?;
    let mods =
        modules::resolve(&modroot, REQUIRED_MODULES, OPTIONAL_MODULES).map_err(|source| {
            KernelError::Modules {
                deb: deb.into(),
                source,
            }
        })?;

    let bb = std::fs::read(busybox).map_err(|source| KernelError::Busybox {
        path: busybox.into(),
        source,
    })?;
    if !is_static_elf(&bb) {
        return Err(KernelError::BusyboxNotStatic {
            path: busybox.into(),
        });
    }
    let names: Vec<String> = mods.iter().map(|m| m.name.clone()).collect();
    let init = INIT_TEMPLATE.replace("@MODULES@", &names.join(" "));

    let initrd = out_dir.join(format!("initrd.img-{version}"));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KernelError::Write { path, source }
    };
    let staged = tmp.path().join("initrd.img");
    {
        let f = std::fs::File::create(&staged).map_err(write_err(&staged))?;
        let gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(f),
            flate2::Compression::default(),
        );
        let mut w = cpio::Writer::new(gz);
        (|| -> std::io::Result<()> {
            for d in [
                "bin",
                "dev",
                "proc",
                "sys",
                "run",
                "tmp",
                "newroot",
                "sbin",
                "usr",
                "usr/bin",
                "usr/sbin",
                "lib",
                "lib/modules",
            ] {
                w.dir(d, 0o755)?;
            }
            w.chardev("dev/console", 0o600, 5, 1)?;
            w.chardev("dev/null", 0o666, 1, 3)?;
            w.file("bin/busybox", 0o755, &bb)?;
            w.symlink("bin/sh", "busybox")?;
            for m in &mods {
                w.file(&format!("lib/modules/{}.ko", m.name), 0o644, &m.data)?;
            }
            w.file("init", 0o755, init.as_bytes())?;
            let gz = w.finish()?;
            let mut buf = gz.finish()?;
            buf.flush()?;
            buf.into_inner().map_err(|e| e.into_error())?.sync_all()
        })()
        .map_err(write_err(&staged))?;
    }
    std::fs::rename(&staged, &initrd).map_err(write_err(&initrd))?;

    let kernel = out_dir.join(&name);
    let staged = tmp.path().join("vmlinuz");
    std::fs::copy(tree.join("boot").join(&name), &staged).map_err(write_err(&staged))?;
    std::fs::rename(&staged, &kernel).map_err(write_err(&kernel))?;
    tracing::info!(%version, modules = %names.join(","), "kernel and initramfs built");
    Ok(BuiltKernel {
        kernel,
        initrd,
        version,
        modules: names,
    })
}

/// True for an ELF executable without a `PT_INTERP` program header.
fn is_static_elf(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let h = phoff as usize + i * usize::from(phentsize);
        u32_at(h).is_some_and(|t| t != 3) // PT_INTERP
    })
}

pub use crate::vmlinux::extract_vmlinux;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_template_has_the_module_slot_and_parses_root() {
        assert!(INIT_TEMPLATE.contains("for m in @MODULES@; do"));
        assert!(INIT_TEMPLATE.contains("root=*) root=\"${arg#root=}\""));
        assert!(INIT_TEMPLATE.contains("exec switch_root /newroot"));
    }

    #[test]
    fn module_parameters_come_from_the_command_line() {
        // The init's own modparams function, run by the same busybox.
        let start = INIT_TEMPLATE.find("modparams() {").unwrap();
        let len = INIT_TEMPLATE[start..].find("\n}\n").unwrap() + 3;
        let script = format!(
            "{}\nCMDLINE='console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 virtio_blk.queue_depth=8 root=/dev/vda'\nmodparams virtio_mmio; echo '|'; modparams virtio_blk; echo '|'; modparams virtio_net",
            &INIT_TEMPLATE[start..start + len]
        );
        let out = Runner
            .run(&Cmd::new(HOST_BUSYBOX).args(["sh", "-c", &script]))
            .unwrap();
        assert_eq!(
            out.stdout,
            "device=4K@0xd0000000:5 device=4K@0xd0001000:6 |\nqueue_depth=8 |\n"
        );
    }

    #[test]
    fn static_elf_is_told_from_dynamic() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(
            !is_static_elf(&sh),
            "/bin/sh is dynamically linked on Debian"
        );
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
