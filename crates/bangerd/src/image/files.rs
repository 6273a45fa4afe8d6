//! Reading the user's files and copying them into staging: opening with
//! errors that name the path, kernel and ext4 sniffing, `e2fsck -fn`, and the
//! copy itself (reflink where the filesystem shares extents, else a sparse
//! copy that reports progress in bytes).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_host::runner::{Cmd, Runner};
use banger_proto::rpc::Progress;
use sha2::{Digest, Sha256};

use super::error::ImageError;
use crate::server::ProgressSink;

/// Copy buffer; also the granularity at which holes are kept.
const CHUNK: usize = 1 << 20;
/// At most one progress event per this much time (plus the last one).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// `e2fsck -fn` reads metadata only; generous for large images on slow disks.
const FSCK_TIMEOUT: Duration = Duration::from_secs(600);

/// A user's file, opened by the daemon.
#[derive(Debug)]
pub struct Source {
    pub what: &'static str,
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
}

/// Open `path` (a `what`: "rootfs", "kernel", "initrd") for reading as the
/// daemon's user. It must be absolute, exist, be readable and be a non-empty
/// regular file; each failure names the path.
pub fn open_source(what: &'static str, path: &Path) -> Result<Source, ImageError> {
    if !path.is_absolute() {
        return Err(ImageError::RelativePath {
            what,
            path: path.to_path_buf(),
        });
    }
    // O_NONBLOCK: a FIFO at that path must not hang the request in open(2);
    // it is refused below as not a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|source| match source.kind() {
            ErrorKind::NotFound => ImageError::SourceMissing {
                what,
                path: path.to_path_buf(),
            },
            ErrorKind::PermissionDenied => ImageError::SourceDenied {
                what,
                path: path.to_path_buf(),
                uid: rustix::process::geteuid().as_raw(),
                source,
            },
            _ => ImageError::SourceOpen {
                what,
                path: path.to_path_buf(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| ImageError::SourceRead {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let ft = meta.file_type();
    if !ft.is_file() || ft.is_fifo() {
        return Err(ImageError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    if meta.len() == 0 {
        return Err(ImageError::EmptyFile {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(Source {
        what,
        path: path.to_path_buf(),
        file,
        len: meta.len(),
    })
}

impl Source {
    /// A file someone else opened for the daemon (the root helper's build
    /// output); `path` only names it in messages. Same checks as
    /// [`open_source`]: a non-empty regular file.
    pub fn from_descriptor(
        what: &'static str,
        path: PathBuf,
        fd: std::os::fd::OwnedFd,
    ) -> Result<Source, ImageError> {
        let file = File::from(fd);
        let meta = file.metadata().map_err(|source| ImageError::SourceRead {
            what,
            path: path.clone(),
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(ImageError::NotAFile { what, path });
        }
        if meta.len() == 0 {
            return Err(ImageError::EmptyFile { what, path });
        }
        Ok(Source {
            what,
            path,
            len: meta.len(),
            file,
        })
    }

    /// SHA-256 of the whole file, read from its start.
    pub fn sha256(&mut self) -> Result<String, ImageError> {
        let read_err = |source| ImageError::SourceRead {
            what: self.what,
            path: self.path.clone(),
            source,
        };
        self.file.seek(SeekFrom::Start(0)).map_err(read_err)?;
        sha256_reader(&mut self.file).map_err(read_err)
    }
}

/// Read up to `buf.len()` bytes at `offset`; returns how many were read.
fn read_at(src: &mut Source, offset: u64, buf: &mut [u8]) -> Result<usize, ImageError> {
    let read_err = |source| ImageError::SourceRead {
        what: src.what,
        path: src.path.clone(),
        source,
    };
    src.file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
    let mut n = 0;
    while n < buf.len() {
        match src.file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok(n)
}

/// The guest architecture of a kernel image: a bzImage (`HdrS` at 0x202) is
/// x86_64; an ELF vmlinux says its machine.
pub fn sniff_kernel(src: &mut Source) -> Result<&'static str, ImageError> {
    let mut head = [0u8; 0x206];
    let n = read_at(src, 0, &mut head)?;
    if n >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok("x86_64");
    }
    if n >= 20 && head[..4] == *b"\x7fELF" {
        // e_machine at offset 18, in the byte order EI_DATA (offset 5) names.
        let machine = if head[5] == 2 {
            u16::from_be_bytes([head[18], head[19]])
        } else {
            u16::from_le_bytes([head[18], head[19]])
        };
        return match machine {
            0x3e => Ok("x86_64"),
            0xb7 => Ok("aarch64"),
            _ => Err(ImageError::UnsupportedElf {
                path: src.path.clone(),
                machine,
            }),
        };
    }
    Err(ImageError::NotAKernel {
        path: src.path.clone(),
    })
}

/// Refuse early (before copying gigabytes) a file without the ext2/3/4
/// superblock magic 0xEF53 at byte 1080.
pub fn sniff_ext4(src: &mut Source) -> Result<(), ImageError> {
    let mut magic = [0u8; 2];
    let n = read_at(src, 1080, &mut magic)?;
    if n == 2 && magic == [0x53, 0xef] {
        Ok(())
    } else {
        Err(ImageError::NotExt4 {
            path: src.path.clone(),
        })
    }
}

/// `e2fsck -f -n` on the staged copy (what gets published is what was
/// checked); errors name `shown`, the user's original path.
pub fn fsck(runner: &Runner, staged: &Path, shown: &Path) -> Result<(), ImageError> {
    // -f: a full check even when the superblock says "clean", since a
    // copied file's clean flag proves nothing; -n: read-only, answer no.
    let cmd = Cmd::new("e2fsck")
        .args(["-f", "-n"])
        .arg(staged)
        .timeout(FSCK_TIMEOUT);
    let out = runner.output(&cmd).map_err(|source| ImageError::FsckRun {
        path: shown.to_path_buf(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let staged_text = staged.display().to_string();
    let shown_text = shown.display().to_string();
    let detail = [out.stderr.as_str(), out.stdout.as_str()]
        .iter()
        .flat_map(|s| s.lines())
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("e2fsck ") && !l.starts_with("Pass "))
        .unwrap_or("no output")
        .replace(&staged_text, &shown_text);
    Err(ImageError::Fsck {
        path: shown.to_path_buf(),
        status: out
            .status
            .code()
            .map_or_else(|| out.status.to_string(), |c| c.to_string()),
        detail,
    })
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the bytes, when asked for.
    pub sha256: Option<String>,
    /// Whether the copy shares extents with the source (FICLONE).
    pub reflinked: bool,
}

/// Copy `src` to a new file `dst` (mode 0600, must not exist), reporting
/// progress under `stage`. Without `hash`, a reflink is tried first; with
/// it (or where reflink is unsupported) the bytes are streamed: holes in
/// the source are skipped, all-zero chunks become holes. The copy is synced before returning.
pub fn copy_to(
    src: &mut Source,
    dst: &Path,
    hash: bool,
    stage: &str,
    progress: &ProgressSink,
) -> Result<Copied, ImageError> {
    let copy_err = |source| ImageError::Copy {
        what: src.what,
        from: src.path.clone(),
        to: dst.to_path_buf(),
        source,
    };
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(copy_err)?;
    let name = src.path.file_name().map_or_else(
        || src.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let emit = |done: u64| {
        progress.emit_blocking(Progress {
            stage: stage.to_owned(),
            message: format!("{} {name} ({})", src.what, human_bytes(src.len)),
            done,
            total: Some(src.len),
        })
    };
    emit(0);
    if !hash && rustix::fs::ioctl_ficlone(&out, &src.file).is_ok() {
        out.sync_all().map_err(copy_err)?;
        emit(src.len);
        return Ok(Copied {
            bytes: src.len,
            sha256: None,
            reflinked: true,
        });
    }
    let read_err = |source| ImageError::SourceRead {
        what: src.what,
        path: src.path.clone(),
        source,
    };
    // Holes in the source are skipped without reading them (SEEK_DATA);
    // hashing needs every byte, holes included.
    let segments = if hash {
        vec![(0, src.len)]
    } else {
        data_segments(&src.file, src.len)
    };
    let mut hasher = hash.then(Sha256::new);
    let mut buf = vec![0u8; CHUNK];
    let mut last = Instant::now();
    for (start, end) in segments {
        src.file.seek(SeekFrom::Start(start)).map_err(read_err)?;
        out.seek(SeekFrom::Start(start)).map_err(copy_err)?;
        let mut pos = start;
        while pos < end {
            let want = usize::try_from(end - pos).map_or(CHUNK, |r| r.min(CHUNK));
            let n = fill(&mut src.file, &mut buf[..want]).map_err(read_err)?;
            if n == 0 {
                return Err(read_err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "the file shrank below {} bytes while it was copied",
                        src.len
                    ),
                )));
            }
            let chunk = &buf[..n];
            if let Some(h) = hasher.as_mut() {
                h.update(chunk);
            }
            if chunk.iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(n as i64)).map_err(copy_err)?;
            } else {
                out.write_all(chunk).map_err(copy_err)?;
            }
            pos += n as u64;
            if last.elapsed() >= PROGRESS_EVERY {
                emit(pos);
                last = Instant::now();
            }
        }
    }
    // Trailing holes are only seeks: give the file its full length.
    out.set_len(src.len).map_err(copy_err)?;
    out.sync_all().map_err(copy_err)?;
    emit(src.len);
    Ok(Copied {
        bytes: src.len,
        sha256: hasher.map(|h| hex(&h.finalize())),
        reflinked: false,
    })
}

/// The `[start, end)` ranges of `f` that hold data, from SEEK_DATA and
/// SEEK_HOLE; the whole file where the filesystem cannot tell.
fn data_segments(f: &File, len: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom as Whence, seek};
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(f, Whence::Data(pos)) {
            Ok(s) => s,
            // ENXIO: no data after `pos`, the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, len)],
        };
        let end = match seek(f, Whence::Hole(start)) {
            Ok(e) => e.min(len),
            Err(_) => return vec![(0, len)],
        };
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    out
}

/// Read until `buf` is full or the file ends.
fn fill(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// SHA-256 of a file already in the store's staging area.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_reader(&mut File::open(path)?)
}

fn sha256_reader(f: &mut File) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = fill(f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `1.5 GiB`, `12 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 10.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path, name: &str, bytes: &[u8]) -> Source {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        open_source("kernel", &p).unwrap()
    }

    #[test]
    fn kernel_sniffing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(
            sniff_kernel(&mut source(tmp.path(), "bz", &bz)).unwrap(),
            "x86_64"
        );
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[5] = 1;
        elf[18] = 0xb7;
        assert_eq!(
            sniff_kernel(&mut source(tmp.path(), "elf", &elf)).unwrap(),
            "aarch64"
        );
        elf[18] = 0x28;
        let err = sniff_kernel(&mut source(tmp.path(), "arm", &elf)).unwrap_err();
        assert!(err.to_string().contains("machine 0x28"), "{err}");
        let err = sniff_kernel(&mut source(tmp.path(), "txt", b"hello")).unwrap_err();
        assert!(
            err.to_string()
                .contains(&tmp.path().join("txt").display().to_string())
        );
        assert!(matches!(err, ImageError::NotAKernel { .. }));
    }

    #[test]
    fn open_source_names_the_path_in_every_refusal() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let e = open_source("rootfs", &missing).unwrap_err();
        assert!(matches!(e, ImageError::SourceMissing { .. }));
        assert_eq!(
            e.to_string(),
            format!("rootfs {} does not exist", missing.display())
        );
        let e = open_source("rootfs", Path::new("rel/x.ext4")).unwrap_err();
        assert!(matches!(e, ImageError::RelativePath { .. }), "{e}");
        let e = open_source("rootfs", tmp.path()).unwrap_err();
        assert!(matches!(e, ImageError::NotAFile { .. }), "{e}");
        let empty = tmp.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let e = open_source("initrd", &empty).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let fifo = tmp.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = open_source("rootfs", &fifo).unwrap_err();
        assert!(matches!(e, ImageError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn streamed_copy_keeps_bytes_and_holes_and_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * CHUNK + 17];
        data[5] = 1;
        data[3 * CHUNK + 3] = 9;
        let mut src = source(tmp.path(), "src", &data);
        let dst = tmp.path().join("dst");
        let c = copy_to(&mut src, &dst, true, "copy", &ProgressSink::discard()).unwrap();
        assert_eq!(c.bytes, data.len() as u64);
        assert!(!c.reflinked);
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert_eq!(
            c.sha256.unwrap(),
            sha256_file(&tmp.path().join("src")).unwrap()
        );
        // Two all-zero chunks in the middle became a hole.
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&dst).unwrap());
        assert!(blocks * 512 < data.len() as u64, "{blocks} blocks");
        // The destination is never overwritten.
        let e = copy_to(&mut src, &dst, true, "copy", &ProgressSink::discard()).unwrap_err();
        assert!(matches!(e, ImageError::Copy { .. }), "{e}");
    }

    #[test]
    fn sparse_source_is_copied_by_its_data_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sparse");
        {
            let mut f = File::create(&p).unwrap();
            f.set_len(64 << 20).unwrap();
            f.seek(SeekFrom::Start(3 << 20)).unwrap();
            f.write_all(b"middle").unwrap();
            f.seek(SeekFrom::Start((64 << 20) - 4)).unwrap();
            f.write_all(b"tail").unwrap();
        }
        let segs = data_segments(&File::open(&p).unwrap(), 64 << 20);
        assert!(segs.len() >= 2, "{segs:?}");
        assert!(
            segs.iter().all(|(a, b)| a < b && *b <= 64 << 20),
            "{segs:?}"
        );
        let mut src = open_source("rootfs", &p).unwrap();
        let dst = tmp.path().join("copy");
        let c = copy_to(&mut src, &dst, false, "copy", &ProgressSink::discard()).unwrap();
        assert_eq!(c.bytes, 64 << 20);
        assert_eq!(
            sha256_file(&dst).unwrap(),
            sha256_file(&p).unwrap(),
            "same bytes"
        );
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&dst).unwrap());
        assert!(blocks * 512 < 1 << 20, "holes kept: {blocks} blocks");
    }

    #[test]
    fn sha256_of_a_known_input() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
        assert_eq!(human_bytes(300 << 20), "300 MiB");
    }
}
