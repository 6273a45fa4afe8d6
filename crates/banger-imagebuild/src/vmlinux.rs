//! The uncompressed ELF `vmlinux` inside an x86 bzImage (Firecracker boots
//! only ELF kernels).
//!
//! The boot protocol (≥ 2.08) records where the compressed payload sits:
//! `payload_offset`/`payload_length` in the setup header, relative to the
//! protected-mode code that starts after `(setup_sects + 1) * 512` bytes.
//! The payload's own magic says how it is compressed.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use banger_host::runner::{Cmd, Runner};

use crate::kernel::KernelError;

fn not_bz(path: &Path, why: impl Into<String>) -> KernelError {
    KernelError::NotBzImage {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Locate the compressed payload of a bzImage.
fn payload<'a>(img: &'a [u8], path: &Path) -> Result<&'a [u8], KernelError> {
    let u32_at = |o: usize| {
        img.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if img.get(0x202..0x206) != Some(b"HdrS") {
        return Err(not_bz(path, "no HdrS setup header"));
    }
    let version = img
        .get(0x206..0x208)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    if version < 0x208 {
        return Err(not_bz(
            path,
            format!("boot protocol {version:#x} has no payload fields (need 2.08+)"),
        ));
    }
    let setup_sects = match img.get(0x1f1).copied().unwrap_or(0) {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(off), Some(len)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err(not_bz(path, "truncated setup header"));
    };
    let start = (setup_sects + 1) * 512 + off as usize;
    img.get(start..start + len as usize)
        .ok_or_else(|| not_bz(path, "payload lies outside the file"))
}

/// LZ4 "legacy" frames, as the kernel's `lz4 -l` build step writes them:
/// a magic, then blocks of `[u32 LE compressed size][data]`, each at most
/// 8 MiB decompressed. The kernel appends the uncompressed size (4 bytes),
/// which reads as a block size running past the end: that ends the frame.
fn lz4_legacy(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut at = 4;
    let mut out = Vec::new();
    let mut block = vec![0u8; 8 << 20];
    while at + 4 <= data.len() {
        let size = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        if size == 0x184C_2102 {
            at += 4; // a concatenated frame's magic
            continue;
        }
        let size = size as usize;
        if at + 4 + size > data.len() {
            break;
        }
        let n = lz4_flex::block::decompress_into(&data[at + 4..at + 4 + size], &mut block)
            .map_err(|e| bad(&e.to_string()))?;
        out.extend_from_slice(&block[..n]);
        at += 4 + size;
    }
    if out.is_empty() {
        return Err(bad("no LZ4 block"));
    }
    Ok(out)
}

/// Decompress with an external tool (`xz` or `zstd`) through files in a
/// temporary directory (the runner captures text, not binary output).
fn with_tool(data: &[u8], tool: &str) -> std::io::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let output = dir.path().join("payload");
    let input = output.with_extension(if tool == "xz" { "xz" } else { "zst" });
    std::fs::write(&input, data)?;
    let cmd = if tool == "xz" {
        // Writes `payload` beside `payload.xz`; the size trailer the kernel
        // appends after the stream is ignored with --single-stream.
        Cmd::new("xz")
            .args(["-d", "-k", "-q", "--single-stream"])
            .arg(&input)
    } else {
        Cmd::new("zstd")
            .args(["-d", "-q", "-f"])
            .arg(&input)
            .arg("-o")
            .arg(&output)
    };
    Runner.run(&cmd).map_err(std::io::Error::other)?;
    std::fs::read(&output)
}

/// Write the ELF `vmlinux` contained in `bzimage` to `out` (through a
/// temporary file and a rename). Handles gzip, xz, zstd and LZ4 payloads.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<PathBuf, KernelError> {
    let img = std::fs::read(bzimage).map_err(|source| KernelError::Read {
        path: bzimage.into(),
        source,
    })?;
    let p = payload(&img, bzimage)?;
    let (format, elf) = if p.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        let r = flate2::read::GzDecoder::new(p).read_to_end(&mut v);
        ("gzip", r.map(|_| v))
    } else if p.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        ("lz4", lz4_legacy(p))
    } else if p.starts_with(b"\xfd7zXZ\0") {
        ("xz", with_tool(p, "xz"))
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ("zstd", with_tool(p, "zstd"))
    } else {
        return Err(not_bz(
            bzimage,
            format!(
                "unsupported payload compression (magic {:02x?})",
                &p[..p.len().min(4)]
            ),
        ));
    };
    let elf = elf.map_err(|source| KernelError::Decompress {
        path: bzimage.into(),
        format,
        source,
    })?;
    if !elf.starts_with(b"\x7fELF") {
        return Err(not_bz(bzimage, format!("{format} payload is not an ELF")));
    }
    let dir = out.parent().unwrap_or(Path::new("."));
    let write_err = |source| KernelError::Write {
        path: out.into(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    std::io::Write::write_all(&mut tmp, &elf).map_err(write_err)?;
    tmp.persist(out).map_err(|e| write_err(e.error))?;
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_bzimages_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, vec![0u8; 4096]).unwrap();
        let err = extract_vmlinux(&f, &dir.path().join("v")).unwrap_err();
        assert!(err.to_string().contains("no HdrS"), "{err}");
        assert!(!dir.path().join("v").exists());
    }

    #[test]
    fn lz4_legacy_frames_decode() {
        let text = b"vmlinux vmlinux vmlinux vmlinux vmlinux".repeat(100);
        let block = lz4_flex::block::compress(&text);
        let mut frame = vec![0x02, 0x21, 0x4c, 0x18];
        frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
        frame.extend_from_slice(&block);
        frame.extend_from_slice(&(text.len() as u32).to_le_bytes()); // size trailer
        assert_eq!(lz4_legacy(&frame).unwrap(), text);
    }
}
