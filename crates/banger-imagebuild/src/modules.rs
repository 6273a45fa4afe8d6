//! Kernel modules for the initramfs: find them in an unpacked
//! `linux-image-*` tree, resolve their dependencies, decompress them.
//!
//! Debian's kernel packages do not ship `modules.dep` (the postinst runs
//! `depmod`), so dependencies come from each module's own `.modinfo`
//! section (`depends=a,b`), the same field depmod reads. Modules may be
//! plain `.ko` (bookworm's 6.1) or `.ko.xz` / `.ko.zst` (newer kernels);
//! compressed ones are decompressed with `xz`/`zstd`, since busybox `insmod`
//! only takes plain ELF.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use banger_host::runner::{Cmd, Runner};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading the module tree {}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel has no module {name} and does not build it in (neither under {} nor in modules.builtin)",
        root.display()
    )]
    Missing { name: String, root: PathBuf },
    #[error("module {name} depends on {dep}, which the package does not contain")]
    MissingDep { name: String, dep: String },
    #[error("decompressing {}", path.display())]
    Decompress {
        path: PathBuf,
        #[source]
        source: banger_host::runner::RunError,
    },
    #[error("reading module {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a 64-bit little-endian ELF module with a .modinfo section", path.display())]
    NotAModule { path: PathBuf },
}

/// One module to load, with its decompressed bytes.
#[derive(Debug, Clone)]
pub struct Module {
    /// Canonical name (`virtio_blk`).
    pub name: String,
    /// Plain ELF contents.
    pub data: Vec<u8>,
}

/// Canonical module name of a file name: `virtio-blk.ko.xz` → `virtio_blk`.
fn module_name(file: &str) -> Option<String> {
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(stem.replace('-', "_"))
}

fn index(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), ModuleError> {
    let walk_err = |source| ModuleError::Walk {
        path: dir.to_path_buf(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(walk_err)? {
        let e = e.map_err(walk_err)?;
        let ft = e.file_type().map_err(walk_err)?;
        let p = e.path();
        if ft.is_dir() {
            index(&p, out)?;
        } else if ft.is_file()
            && let Some(n) = e.file_name().to_str().and_then(module_name)
        {
            out.insert(n, p);
        }
    }
    Ok(())
}

fn builtins(modroot: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(modroot.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next().and_then(module_name))
        .collect()
}

/// The `.modinfo` strings of an ELF64 little-endian module.
pub fn modinfo(elf: &[u8]) -> Option<Vec<String>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(h)?;
        let off = usize::try_from(u64_at(h + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(h + 0x20)?).ok()?;
        Some((name, off, size))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = elf.get(stroff..stroff.checked_add(strsize)?)?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name = strtab.get(name as usize..)?;
        let end = name.iter().position(|&b| b == 0)?;
        if &name[..end] == b".modinfo" {
            let body = elf.get(off..off.checked_add(size)?)?;
            return Some(
                body.split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            );
        }
    }
    None
}

fn load(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let plain = match tool {
        None => path.to_path_buf(),
        Some(tool) => {
            // The tree is our private unpack directory: decompress in place,
            // keeping the original, next to it.
            let plain = path.with_extension("");
            if !plain.exists() {
                Runner
                    .run(&Cmd::new(tool).args(["-d", "-k", "-q"]).arg(path))
                    .map_err(|source| ModuleError::Decompress {
                        path: path.to_path_buf(),
                        source,
                    })?;
            }
            plain
        }
    };
    std::fs::read(&plain).map_err(|source| ModuleError::Read {
        path: plain.clone(),
        source,
    })
}

/// Resolve `required` (must exist as a module or be built in) and
/// `optional` (skipped when the kernel has neither) plus all their
/// dependencies, in load order: every module after its dependencies.
pub fn resolve(
    modroot: &Path,
    required: &[&str],
    optional: &[&str],
) -> Result<Vec<Module>, ModuleError> {
    let mut files = BTreeMap::new();
    index(&modroot.join("kernel"), &mut files)?;
    let builtin = builtins(modroot);
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let wanted = required
        .iter()
        .map(|n| (*n, true))
        .chain(optional.iter().map(|n| (*n, false)));
    for (name, must) in wanted {
        let name = name.replace('-', "_");
        if builtin.contains(&name) {
            continue;
        }
        if !files.contains_key(&name) {
            if must {
                return Err(ModuleError::Missing {
                    name,
                    root: modroot.to_path_buf(),
                });
            }
            continue;
        }
        visit(&name, &files, &builtin, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<Module>,
) -> Result<(), ModuleError> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let path = &files[name];
    let data = load(path)?;
    let info = modinfo(&data).ok_or_else(|| ModuleError::NotAModule { path: path.clone() })?;
    let deps: Vec<String> = info
        .iter()
        .filter_map(|kv| kv.strip_prefix("depends="))
        .flat_map(|v| v.split(','))
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect();
    for dep in deps {
        if builtin.contains(&dep) {
            continue;
        }
        if !files.contains_key(&dep) {
            return Err(ModuleError::MissingDep {
                name: name.to_string(),
                dep,
            });
        }
        visit(&dep, files, builtin, seen, order)?;
    }
    order.push(Module {
        name: name.to_string(),
        data,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE image: header, a .modinfo section, a shstrtab.
    fn fake_module(modinfo: &str) -> Vec<u8> {
        let strtab = b"\0.modinfo\0.shstrtab\0".to_vec();
        let info = modinfo.replace(';', "\0").into_bytes();
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let info_off = elf.len();
        elf.extend_from_slice(&info);
        let str_off = elf.len();
        elf.extend_from_slice(&strtab);
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, info_off, info.len());
        sh(10, str_off, strtab.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_is_read_from_the_elf_section() {
        let elf = fake_module("license=GPL;depends=virtio,virtio_ring;name=virtio_blk");
        let info = modinfo(&elf).unwrap();
        assert!(info.contains(&"depends=virtio,virtio_ring".to_string()));
        assert!(modinfo(b"not an elf").is_none());
    }

    #[test]
    fn dependencies_come_first_and_builtins_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel/drivers");
        std::fs::create_dir_all(&k).unwrap();
        let m = |n: &str, info: &str| std::fs::write(k.join(n), fake_module(info)).unwrap();
        m("virtio_blk.ko", "depends=virtio,virtio_ring");
        m("virtio_ring.ko", "depends=virtio");
        m("virtio.ko", "depends=");
        m("net_failover.ko", "depends=failover");
        m("failover.ko", "depends=");
        m("virtio_net.ko", "depends=net_failover,virtio,virtio_ring");
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/ext4/ext4.ko\n",
        )
        .unwrap();
        let got = resolve(dir.path(), &["virtio_blk", "virtio_net", "ext4"], &["nope"]).unwrap();
        let names: Vec<_> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        let err = resolve(dir.path(), &["virtio_mmio"], &[]).unwrap_err();
        assert!(err.to_string().contains("no module virtio_mmio"), "{err}");
        m("broken.ko", "depends=ghost");
        let err = resolve(dir.path(), &["broken"], &[]).unwrap_err();
        assert!(err.to_string().contains("depends on ghost"), "{err}");
    }
}
