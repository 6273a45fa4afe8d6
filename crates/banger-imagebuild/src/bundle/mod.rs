//! Image bundles: one file that carries a whole banger image.
//!
//! A bundle is a tar archive, optionally zstd-compressed (recognised by the
//! zstd magic `28 b5 2f fd`, whatever the file is called), whose members
//! are, in this order:
//!
//! 1. `manifest.json` (at most 64 KiB):
//!    ```json
//!    {"format": "banger-bundle", "version": 1, "name": "web",
//!     "members": {"rootfs.ext4": {"sha256": "<64 hex>", "size": 1073741824},
//!                 "kernel":      {"sha256": "<64 hex>", "size": 8388608},
//!                 "initrd":      {"sha256": "<64 hex>", "size": 2097152}}}
//!    ```
//!    `name` is a suggestion for the image name (optional); `members` lists
//!    every other member with its sha256 and size.
//! 2. `rootfs.ext4` (required): the root filesystem.
//! 3. `kernel` and `initrd` (optional, any order after the manifest).
//!
//! Names may carry a leading `./` and the archive may hold a `./` directory
//! entry (what `tar -C DIR .` writes); pax headers are understood. Anything
//! else is refused, naming the member: absolute paths, `..`, other
//! directories, links, device nodes and FIFOs, names other than the three
//! above, a member the manifest does not list, a member given twice, a size
//! or sha256 that differs from the manifest, a listed member that never
//! comes (a truncated bundle), a manifest that is not first.
//!
//! [`read_bundle`] streams: members go from the (possibly decompressed)
//! stream straight to files in the output directory while being hashed,
//! never whole into memory. It writes nothing but those files, created new
//! with mode 0600 and without following symlinks. [`write_bundle`] makes
//! bundles (tests and tooling).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::fetch::is_sha256;
use crate::{Progress, hex};

/// The manifest member (always first).
pub const MANIFEST: &str = "manifest.json";
/// The members are named as the files of an image's directory
/// (`banger_proto::layout`), so a bundle unpacks into one: the root
/// filesystem (required), the kernel and the initrd (optional).
pub use banger_proto::layout::{INITRD, KERNEL, ROOTFS};
/// What `manifest.json`'s `format` says.
pub const FORMAT: &str = "banger-bundle";
/// The only manifest version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest accepted.
pub const MAX_MANIFEST: u64 = 64 << 10;

const MEMBERS: [&str; 3] = [ROOTFS, KERNEL, INITRD];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const CHUNK: usize = 1 << 20;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`].
    pub version: u32,
    /// Suggested image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every member but the manifest, by name.
    pub members: BTreeMap<String, MemberDigest>,
}

/// A member's expected content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDigest {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// What [`read_bundle`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub manifest: Manifest,
    /// `out_dir/rootfs.ext4`.
    pub rootfs: PathBuf,
    /// `out_dir/kernel`, when the bundle has one.
    pub kernel: Option<PathBuf>,
    /// `out_dir/initrd`, when the bundle has one.
    pub initrd: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is gzip-compressed; bundles are plain tar or zstd-compressed tar")]
    Gzip,
    #[error("reading the bundle{}", after_text(after))]
    Read {
        /// The last member read completely, if any.
        after: Option<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("reading bundle member {member:?}")]
    ReadMember {
        member: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle member {member:?}: {problem}")]
    Member { member: String, problem: String },
    #[error("bundle manifest: {0}")]
    Manifest(String),
    #[error(
        "bundle member {member:?} is listed in the manifest but missing from the bundle (truncated?)"
    )]
    Missing { member: String },
    #[error(
        "bundle member {member:?}: sha256 mismatch: manifest says {expected}, content is {actual}"
    )]
    Mismatch {
        member: String,
        expected: String,
        actual: String,
    },
    #[error("bundle member {member:?}: {done} bytes, but the manifest says {size} (truncated?)")]
    Short {
        member: String,
        done: u64,
        size: u64,
    },
    #[error("writing bundle member {member:?} to {}", path.display())]
    Write {
        member: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the bundle")]
    Output(#[source] std::io::Error),
}

fn after_text(after: &Option<String>) -> String {
    match after {
        Some(m) => format!(" after member {m:?}"),
        None => " at its start".into(),
    }
}

impl BundleError {
    /// True when the bundle's content is at fault (as opposed to reading
    /// or writing files).
    pub fn is_bad_content(&self) -> bool {
        matches!(
            self,
            BundleError::Gzip
                | BundleError::Member { .. }
                | BundleError::Manifest(_)
                | BundleError::Missing { .. }
                | BundleError::Mismatch { .. }
                | BundleError::Short { .. }
        )
    }
}

fn member_err(member: &str, problem: impl Into<String>) -> BundleError {
    BundleError::Member {
        member: member.to_string(),
        problem: problem.into(),
    }
}

impl Manifest {
    /// Parse and check `manifest.json`.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Manifest(format!("not valid JSON of the format: {e}")))?;
        if m.format != FORMAT {
            return Err(BundleError::Manifest(format!(
                "format is {:?}, expected {FORMAT:?}",
                m.format
            )));
        }
        if m.version != FORMAT_VERSION {
            return Err(BundleError::Manifest(format!(
                "version {} is not supported (this banger reads {FORMAT_VERSION})",
                m.version
            )));
        }
        for (name, d) in &m.members {
            if !MEMBERS.contains(&name.as_str()) {
                return Err(BundleError::Manifest(format!(
                    "lists unknown member {name:?}; members are {}",
                    MEMBERS.join(", ")
                )));
            }
            if !is_sha256(&d.sha256) {
                return Err(BundleError::Manifest(format!(
                    "member {name:?}: sha256 {:?} is not 64 hex digits",
                    d.sha256
                )));
            }
        }
        if !m.members.contains_key(ROOTFS) {
            return Err(BundleError::Manifest(format!(
                "no {ROOTFS:?} member: a bundle must carry a root filesystem"
            )));
        }
        Ok(m)
    }

    /// The manifest of the given files (hashing each one).
    pub fn describe(name: Option<&str>, files: &[(&str, &Path)]) -> Result<Manifest, BundleError> {
        let mut members = BTreeMap::new();
        for (member, path) in files {
            members.insert((*member).to_string(), digest_file(path)?);
        }
        Ok(Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            name: name.map(str::to_string),
            members,
        })
    }
}

/// sha256 and size of a file.
pub fn digest_file(path: &Path) -> Result<MemberDigest, BundleError> {
    let input_err = |source| BundleError::Input {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(input_err)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(input_err(e)),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(MemberDigest {
        sha256: hex(&h.finalize()),
        size,
    })
}

/// The member name as the bundle means it: a leading `./` dropped.
/// `Ok(None)` for the archive root (`.`, `./`). Absolute paths and `..`
/// components are refused.
fn member_name(raw: &[u8]) -> Result<Option<String>, BundleError> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let Ok(s) = std::str::from_utf8(raw) else {
        return Err(member_err(&text, "the name is not UTF-8"));
    };
    if s.starts_with('/') {
        return Err(member_err(s, "absolute paths are refused"));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(member_err(s, "`..` components are refused"));
    }
    let trimmed = s.strip_prefix("./").unwrap_or(s);
    let trimmed = trimmed.trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Ok(None);
    }
    Ok(Some(trimmed.to_string()))
}

/// Counts the raw bytes read from the bundle (before decompression).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Read a bundle from `input` (`total`: its size in bytes when known, for
/// progress) into `out_dir`, which must exist and should be empty: every
/// member becomes `out_dir/<member>`, checked against the manifest. On
/// error the files already written stay in `out_dir` (the caller owns and
/// removes it). Reports [`Progress::Step`] per member and
/// [`Progress::Bytes`] of the raw stream.
pub fn read_bundle(
    input: impl Read,
    total: Option<u64>,
    out_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Bundle, BundleError> {
    let count = Arc::new(AtomicU64::new(0));
    let mut buffered = BufReader::with_capacity(
        256 << 10,
        Counting {
            inner: input,
            count: Arc::clone(&count),
        },
    );
    let head = buffered.fill_buf().map_err(|source| BundleError::Read {
        after: None,
        source,
    })?;
    let stream: Box<dyn Read> = if head.starts_with(&ZSTD_MAGIC) {
        let d = zstd::stream::read::Decoder::with_buffer(buffered).map_err(|source| {
            BundleError::Read {
                after: None,
                source,
            }
        })?;
        Box::new(d)
    } else if head.starts_with(&GZIP_MAGIC) {
        return Err(BundleError::Gzip);
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(stream);
    let mut manifest: Option<Manifest> = None;
    let mut written: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut last: Option<String> = None;
    let read_err = |after: &Option<String>| {
        let after = after.clone();
        move |source| BundleError::Read { after, source }
    };
    let entries = archive.entries().map_err(read_err(&last))?;
    for entry in entries {
        let mut entry = entry.map_err(read_err(&last))?;
        let raw = entry.path_bytes().into_owned();
        let name = member_name(&raw)?;
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        match (kind, &name) {
            (T::XGlobalHeader, _) => continue,
            (T::Directory, None) => continue,
            (T::Regular | T::Continuous, Some(_)) => {}
            (T::Directory, Some(n)) => return Err(member_err(n, "directories are refused")),
            (T::Symlink | T::Link, _) => {
                return Err(member_err(&display(&name, &raw), "links are refused"));
            }
            (T::Char | T::Block | T::Fifo, _) => {
                return Err(member_err(
                    &display(&name, &raw),
                    "device nodes and FIFOs are refused",
                ));
            }
            (other, _) => {
                return Err(member_err(
                    &display(&name, &raw),
                    format!("member type {:?} is refused", other.as_byte() as char),
                ));
            }
        }
        let name = name.unwrap_or_default();
        let size = entry.size();
        let Some(m) = &manifest else {
            if name != MANIFEST {
                return Err(member_err(
                    &name,
                    format!("{MANIFEST} must be the first member of a bundle"),
                ));
            }
            if size > MAX_MANIFEST {
                return Err(member_err(
                    &name,
                    format!("{size} bytes; a manifest is at most {MAX_MANIFEST}"),
                ));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(MAX_MANIFEST)
                .read_to_end(&mut bytes)
                .map_err(|source| BundleError::ReadMember {
                    member: name.clone(),
                    source,
                })?;
            if (bytes.len() as u64) < size {
                return Err(BundleError::Short {
                    member: name,
                    done: bytes.len() as u64,
                    size,
                });
            }
            manifest = Some(Manifest::parse(&bytes)?);
            last = Some(name);
            continue;
        };
        if name == MANIFEST || written.contains_key(&name) {
            return Err(member_err(&name, "the member appears twice"));
        }
        if !MEMBERS.contains(&name.as_str()) {
            return Err(member_err(
                &name,
                format!(
                    "unknown member; a bundle holds {MANIFEST}, {}",
                    MEMBERS.join(", ")
                ),
            ));
        }
        let Some(want) = m.members.get(&name) else {
            return Err(member_err(&name, "not listed in the manifest"));
        };
        if size != want.size {
            return Err(member_err(
                &name,
                format!(
                    "{size} bytes in the archive, but the manifest says {}",
                    want.size
                ),
            ));
        }
        progress(Progress::Step(format!("unpacking {name}")));
        let path = out_dir.join(&name);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|source| BundleError::Write {
                member: name.clone(),
                path: path.clone(),
                source,
            })?;
        let mut report = |n: u64| progress(Progress::Bytes { done: n, total });
        let (done, sha) = copy_member(&mut entry, &mut out, &name, &path, &count, &mut report)
            .map_err(|e| match e {
                CopyError::Read(source) => BundleError::ReadMember {
                    member: name.clone(),
                    source,
                },
                CopyError::Bundle(b) => b,
            })?;
        if done != want.size {
            return Err(BundleError::Short {
                member: name,
                done,
                size: want.size,
            });
        }
        if !sha.eq_ignore_ascii_case(&want.sha256) {
            return Err(BundleError::Mismatch {
                member: name,
                expected: want.sha256.to_ascii_lowercase(),
                actual: sha,
            });
        }
        written.insert(name.clone(), path);
        last = Some(name);
    }
    let Some(manifest) = manifest else {
        return Err(BundleError::Manifest(format!(
            "the bundle is empty or has no {MANIFEST}"
        )));
    };
    if let Some(member) = manifest.members.keys().find(|k| !written.contains_key(*k)) {
        return Err(BundleError::Missing {
            member: member.clone(),
        });
    }
    progress(Progress::Bytes {
        done: count.load(Ordering::Relaxed),
        total,
    });
    Ok(Bundle {
        rootfs: written.remove(ROOTFS).unwrap_or_default(),
        kernel: written.remove(KERNEL),
        initrd: written.remove(INITRD),
        manifest,
    })
}

fn display(name: &Option<String>, raw: &[u8]) -> String {
    name.clone()
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

enum CopyError {
    Read(std::io::Error),
    Bundle(BundleError),
}

/// Stream one member to `out`, hashing it; all-zero chunks become holes.
fn copy_member(
    entry: &mut impl Read,
    out: &mut File,
    name: &str,
    path: &Path,
    count: &AtomicU64,
    report: &mut dyn FnMut(u64),
) -> Result<(u64, String), CopyError> {
    let write_err = |source| {
        CopyError::Bundle(BundleError::Write {
            member: name.to_string(),
            path: path.to_path_buf(),
            source,
        })
    };
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        // Fill the whole chunk (short reads are common) so holes line up.
        let mut n = 0;
        while n < buf.len() {
            match entry.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CopyError::Read(e)),
            }
        }
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        h.update(chunk);
        if chunk.iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(n as i64)).map_err(write_err)?;
        } else {
            out.write_all(chunk).map_err(write_err)?;
        }
        done += n as u64;
        let raw = count.load(Ordering::Relaxed);
        if raw - reported >= 1 << 20 {
            reported = raw;
            report(raw);
        }
        if n < buf.len() {
            break;
        }
    }
    out.set_len(done).map_err(write_err)?;
    out.sync_all().map_err(write_err)?;
    Ok((done, hex(&h.finalize())))
}

mod write;
pub use write::{BundleFiles, append, write_bundle};

#[cfg(test)]
mod tests;
