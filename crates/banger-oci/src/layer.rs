//! Apply layer archives, in order, to the [`Tree`] model.
//!
//! A layer is read from its verified blob file (gzip, zstd or plain tar,
//! detected by magic bytes). Every member path is normalised here: `..`
//! components are refused, parents must be real directories *in the model*
//! (a member below a symlink is refused, never resolved), whiteouts and
//! opaque markers edit the model. Regular file contents are streamed to
//! numbered work files created `0600` with `O_EXCL|O_NOFOLLOW` relative to
//! the content directory's descriptor; nothing else is written to the host.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use tar::EntryType;

use crate::OciError;
use crate::tree::{DevKind, Entry, Kind, Meta, Tree, WalkError, split};

/// Bounds on what flattening may produce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of regular-file content across all layers.
    pub max_unpacked_bytes: u64,
    /// Total archive members across all layers.
    pub max_entries: u64,
}

/// The layer-by-layer flattener.
#[derive(Debug)]
pub struct Flattener {
    pub tree: Tree,
    content_dir: OwnedFd,
    content_path: PathBuf,
    next_content: u64,
    unpacked: u64,
    entries: u64,
    limits: Limits,
    layer: usize,
    dropped_xattrs: BTreeSet<String>,
    skipped: Vec<String>,
}

/// Deepest member path accepted (components).
pub const MAX_DEPTH: usize = 256;
/// Longest member path accepted, in bytes: below Linux's PATH_MAX (4096),
/// so every path fits one line of the debugfs script the ext4 pass writes
/// (see `ext4::SCRIPT_LINE_MAX`).
pub(crate) const MAX_PATH_BYTES: usize = 3800;

/// Xattr namespaces an ext4 image holds for a guest.
const KEPT_XATTR_PREFIXES: [&str; 3] = ["user.", "trusted.", "security."];

impl Flattener {
    /// `content_path` must exist and be private to this pull.
    pub fn new(content_path: &Path, limits: Limits) -> Result<Flattener, OciError> {
        let content_dir = rustix::fs::open(
            content_path,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| OciError::Staging {
            what: "opening the content directory",
            path: content_path.into(),
            source: e.into(),
        })?;
        Ok(Flattener {
            tree: Tree::new(),
            content_dir,
            content_path: content_path.into(),
            next_content: 0,
            unpacked: 0,
            entries: 0,
            limits,
            layer: 0,
            dropped_xattrs: BTreeSet::new(),
            skipped: Vec::new(),
        })
    }

    /// Descriptor of the content directory (work file `n` is named `n`).
    pub fn content_dir(&self) -> &OwnedFd {
        &self.content_dir
    }

    /// Total bytes of regular-file content in all layers applied so far.
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked
    }

    /// Warnings collected while flattening (dropped xattrs, skipped members).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.skipped.clone();
        if !self.dropped_xattrs.is_empty() {
            let names: Vec<&str> = self.dropped_xattrs.iter().map(String::as_str).collect();
            w.push(format!(
                "extended attributes not kept (ext4 image holds only user./trusted./security.): {}",
                names.join(", ")
            ));
        }
        w
    }

    /// Apply the layer in `blob` (already digest-verified) on top.
    pub fn apply(&mut self, blob: &Path, digest: &str) -> Result<(), OciError> {
        self.layer += 1;
        let read_err = |source| OciError::LayerRead {
            digest: digest.into(),
            source,
        };
        let f = File::open(blob).map_err(OciError::staging("opening layer blob", blob))?;
        let mut r = BufReader::with_capacity(256 * 1024, f);
        let magic = r.fill_buf().map_err(read_err)?.to_vec();
        let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(r))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::Decoder::with_buffer(r).map_err(read_err)?)
        } else {
            Box::new(r)
        };
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(OciError::TooManyEntries {
                    digest: digest.into(),
                    limit: self.limits.max_entries,
                });
            }
            self.apply_entry(&mut entry, digest)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        digest: &str,
    ) -> Result<(), OciError> {
        let raw = entry.path_bytes().into_owned();
        let member = String::from_utf8_lossy(&raw).into_owned();
        let bad = || OciError::BadMemberPath {
            digest: digest.into(),
            member: member.clone(),
        };
        if raw.len() > MAX_PATH_BYTES {
            return Err(OciError::MemberPathTooLong {
                digest: digest.into(),
                start: member.chars().take(60).collect(),
                len: raw.len(),
                max: MAX_PATH_BYTES,
            });
        }
        let comps = split(&raw);
        // Depth is bounded: the ext4 pass recurses (one descriptor per level).
        if comps.len() > MAX_DEPTH
            || comps
                .iter()
                .any(|c| c == b".." || c.contains(&b'\n') || c.contains(&0))
        {
            return Err(bad());
        }
        let ty = entry.header().entry_type();
        let meta = self.meta_of(entry, digest)?;
        let Some((name, parent)) = comps.split_last() else {
            // The root itself (`./`): only its metadata can change.
            return match ty {
                EntryType::Directory => {
                    self.tree.nodes[crate::tree::ROOT].meta = meta;
                    Ok(())
                }
                _ => Err(bad()),
            };
        };
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent, hidden, digest, &member);
        }
        let dir = self.parent_dir(parent, digest, &member)?;
        let kind = match ty {
            EntryType::Directory => {
                if let Some(e) = self.tree.lookup(dir, name)
                    && matches!(self.tree.nodes[e.node].kind, Kind::Dir(_))
                {
                    self.tree.nodes[e.node].meta = meta;
                    return Ok(());
                }
                Kind::Dir(Default::default())
            }
            // The tar crate reads GNU sparse members with their holes filled.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.store_content(entry, digest, &member)?
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(bad)?;
                Kind::Symlink(target)
            }
            EntryType::Link => {
                let node = self.hardlink_target(entry, digest, &member)?;
                self.insert(dir, name, node);
                return Ok(());
            }
            EntryType::Char | EntryType::Block => {
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let kind = if ty == EntryType::Char {
                    DevKind::Char
                } else {
                    DevKind::Block
                };
                Kind::Device { kind, major, minor }
            }
            EntryType::Fifo => Kind::Fifo,
            // PAX global headers carry defaults this engine does not use.
            EntryType::XGlobalHeader => return Ok(()),
            other => {
                self.skipped.push(format!(
                    "layer {digest}: member `{member}` of tar type {:?} skipped",
                    other.as_byte() as char
                ));
                return Ok(());
            }
        };
        let node = self.tree.add(kind, meta);
        self.insert(dir, name, node);
        Ok(())
    }

    fn insert(&mut self, dir: usize, name: &[u8], node: usize) {
        let layer = self.layer;
        self.tree
            .children_mut(dir)
            .expect("parent_dir returns directories")
            .insert(name.to_vec(), Entry { node, layer });
    }

    fn parent_dir(
        &mut self,
        parent: &[Vec<u8>],
        digest: &str,
        member: &str,
    ) -> Result<usize, OciError> {
        match self.tree.walk_dirs(parent, Some(self.layer)) {
            Ok(d) => Ok(d.expect("walk with create always finds a directory")),
            Err(WalkError::Symlink(symlink)) => Err(OciError::ThroughSymlink {
                digest: digest.into(),
                member: member.into(),
                symlink,
            }),
            Err(WalkError::NotDir(parent)) => Err(OciError::ParentNotDirectory {
                digest: digest.into(),
                member: member.into(),
                parent,
            }),
        }
    }

    fn whiteout(
        &mut self,
        parent: &[Vec<u8>],
        hidden: &[u8],
        digest: &str,
        member: &str,
    ) -> Result<(), OciError> {
        if parent.iter().any(|c| c == b"..") || hidden.is_empty() {
            return Err(OciError::BadMemberPath {
                digest: digest.into(),
                member: member.into(),
            });
        }
        // A whiteout below a symlink would delete through it: refuse too.
        let dir = match self.tree.walk_dirs(parent, None) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()), // nothing there to hide
            Err(_) => return Err(self.parent_dir(parent, digest, member).unwrap_err()),
        };
        let layer = self.layer;
        let children = self
            .tree
            .children_mut(dir)
            .expect("walk returns directories");
        if hidden == b".wh..opq" {
            children.retain(|_, e| e.layer == layer);
        } else {
            children.remove(hidden);
        }
        Ok(())
    }

    fn hardlink_target<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        digest: &str,
        member: &str,
    ) -> Result<usize, OciError> {
        let raw = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let target = String::from_utf8_lossy(&raw).into_owned();
        let comps = split(&raw);
        if comps.is_empty() || comps.iter().any(|c| c == b"..") {
            return Err(OciError::HardlinkOutside {
                digest: digest.into(),
                member: member.into(),
                target,
            });
        }
        let missing = || OciError::HardlinkMissing {
            digest: digest.into(),
            member: member.into(),
            target: target.clone(),
        };
        let (name, parent) = comps.split_last().expect("not empty");
        let dir = match self.tree.walk_dirs(parent, None) {
            Ok(Some(d)) => d,
            Ok(None) => return Err(missing()),
            Err(WalkError::Symlink(symlink)) => {
                return Err(OciError::ThroughSymlink {
                    digest: digest.into(),
                    member: format!("{member} -> {target}"),
                    symlink,
                });
            }
            Err(WalkError::NotDir(_)) => return Err(missing()),
        };
        let e = self.tree.lookup(dir, name).ok_or_else(missing)?;
        if matches!(self.tree.nodes[e.node].kind, Kind::Dir(_)) {
            return Err(missing());
        }
        Ok(e.node)
    }

    fn store_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        digest: &str,
        member: &str,
    ) -> Result<Kind, OciError> {
        let size = entry.size();
        if self.unpacked.saturating_add(size) > self.limits.max_unpacked_bytes {
            return Err(OciError::UnpackedTooLarge {
                digest: digest.into(),
                limit: self.limits.max_unpacked_bytes,
            });
        }
        let id = self.next_content;
        self.next_content += 1;
        let name = id.to_string();
        let path = self.content_path.join(&name);
        let fd = rustix::fs::openat(
            &self.content_dir,
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| OciError::Staging {
            what: "creating work file",
            path: path.clone(),
            source: e.into(),
        })?;
        let mut out = BufWriter::with_capacity(256 * 1024, File::from(fd));
        let got = std::io::copy(&mut entry.take(size), &mut out).map_err(|source| {
            OciError::LayerRead {
                digest: digest.into(),
                source,
            }
        })?;
        out.flush()
            .map_err(OciError::staging("writing work file", &path))?;
        if got != size {
            return Err(OciError::MemberTruncated {
                digest: digest.into(),
                member: member.into(),
                got,
                expected: size,
            });
        }
        self.unpacked += size;
        Ok(Kind::File { content: id, size })
    }

    fn meta_of<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        digest: &str,
    ) -> Result<Meta, OciError> {
        let h = entry.header();
        let mut meta = Meta {
            perm: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
            xattrs: Vec::new(),
        };
        let pax = entry
            .pax_extensions()
            .map_err(|source| OciError::LayerRead {
                digest: digest.into(),
                source,
            })?;
        for ext in pax.into_iter().flatten() {
            let Ok(ext) = ext else { continue };
            let Ok(key) = ext.key() else { continue };
            let num = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
            };
            match key {
                "uid" => meta.uid = num().unwrap_or(meta.uid),
                "gid" => meta.gid = num().unwrap_or(meta.gid),
                "mtime" => meta.mtime = num().unwrap_or(meta.mtime),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        // Allow-listed characters only: the name goes into a
                        // debugfs script line unquoted.
                        if KEPT_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
                            && name.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@')
                            })
                        {
                            meta.xattrs
                                .push((name.to_string(), ext.value_bytes().to_vec()));
                        } else {
                            self.dropped_xattrs.insert(name.to_string());
                        }
                    }
                }
            }
        }
        Ok(meta)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// (path, type, mode, body or link target)
    pub(crate) type Spec<'a> = (&'a str, EntryType, u32, &'a [u8]);

    pub(crate) fn tar_of(entries: &[Spec]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, mode, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(*mode);
            let data: &[u8] = if matches!(ty, EntryType::Symlink | EntryType::Link) {
                h.set_link_name(std::str::from_utf8(body).unwrap()).unwrap();
                &[]
            } else {
                body
            };
            h.set_size(data.len() as u64);
            // append_data writes a GNU long-name entry where needed.
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub(crate) fn flattener(dir: &Path) -> Flattener {
        let content = dir.join("content");
        std::fs::create_dir(&content).unwrap();
        Flattener::new(
            &content,
            Limits {
                max_unpacked_bytes: 1 << 30,
                max_entries: 1000,
            },
        )
        .unwrap()
    }

    fn names(f: &Flattener, path: &str) -> Vec<String> {
        let comps = split(path.as_bytes());
        let mut t = Tree {
            nodes: f.tree.nodes.clone(),
        };
        let d = t.walk_dirs(&comps, None).unwrap().unwrap();
        t.children(d)
            .unwrap()
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn plain_zstd_and_gzip_layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flattener(dir.path());
        let a = tar_of(&[
            ("d", EntryType::Directory, 0o755, b""),
            ("d/old", EntryType::Regular, 0o644, b"old"),
            ("x", EntryType::Regular, 0o644, b"x"),
            ("keep", EntryType::Regular, 0o600, b"keep"),
            ("keep2", EntryType::Link, 0, b"keep"),
        ]);
        // Same layer: `d/new` comes before the opaque marker and survives it.
        let b = tar_of(&[
            ("d/new", EntryType::Regular, 0o644, b"new"),
            ("d/.wh..wh..opq", EntryType::Regular, 0o644, b""),
            (".wh.x", EntryType::Regular, 0o644, b""),
        ]);
        let c = tar_of(&[("d/third", EntryType::Regular, 0o4755, b"3")]);
        let blobs = [
            ("a", a),
            ("b", zstd::encode_all(&b[..], 1).unwrap()),
            ("c", {
                use std::io::Write as _;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                e.write_all(&c).unwrap();
                e.finish().unwrap()
            }),
        ];
        for (name, data) in &blobs {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            f.apply(&p, &format!("sha256:{name}")).unwrap();
        }
        assert_eq!(names(&f, "/d"), vec!["new", "third"]);
        assert_eq!(names(&f, "/"), vec!["d", "keep", "keep2"]);
        let root = f.tree.children(0).unwrap();
        assert_eq!(root[&b"keep"[..]].node, root[&b"keep2"[..]].node);
        assert_eq!(f.unpacked_bytes(), 3 + 1 + 4 + 3 + 1);
    }

    #[test]
    fn deep_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = flattener(dir.path());
        let deep = vec!["a"; MAX_DEPTH + 1].join("/");
        let t = tar_of(&[(&deep, EntryType::Directory, 0o755, b"")]);
        let p = dir.path().join("l");
        std::fs::write(&p, t).unwrap();
        let e = f.apply(&p, "sha256:deep").unwrap_err();
        assert!(matches!(e, OciError::BadMemberPath { .. }), "{e:?}");
    }
}
