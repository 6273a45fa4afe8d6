//! Turn the flattened [`Tree`] into an ext4 image.
//!
//! 1. Materialise a host copy of the tree under the staging directory, using
//!    only descriptor-relative calls on directories this pass created itself
//!    (`mkdirat`, `linkat` of the content work files, `symlinkat`), so no
//!    image path is ever resolved by the host. Host copies are `0700`/`0600`
//!    and owned by the caller: no setuid bit or foreign owner ever exists on
//!    the host. Device nodes and FIFOs are not created on the host at all.
//! 2. `mkfs.ext4 -d` packs that copy (sized from the content plus headroom).
//! 3. One `debugfs -w -f` script sets the real mode, uid, gid and xattrs of
//!    every inode and creates device nodes and FIFOs inside the image.
//! 4. `e2fsck -fn` must report a clean file system.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_host::runner::{Cmd, Runner};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use crate::OciError;
use crate::tree::{DevKind, Kind, NodeId, ROOT, Tree};

const BLOCK: u64 = 4096;

/// What the build produced.
#[derive(Debug)]
pub struct Built {
    pub size_bytes: u64,
    pub inodes: u64,
}

/// Build `image` from `tree`. `content_dir` holds the work files;
/// `host_root` must not exist yet; `work` is a private scratch directory.
pub fn build(
    tree: &Tree,
    content_dir: &OwnedFd,
    host_root: &Path,
    work: &Path,
    image: &Path,
    headroom: u64,
) -> Result<Built, OciError> {
    std::fs::create_dir(host_root).map_err(OciError::staging("creating", host_root))?;
    let root_fd = open_dir(None, host_root)?;
    // Drop a setgid bit inherited from the caller's staging directory, so
    // no host directory below carries one either.
    rustix::fs::fchmod(&root_fd, Mode::from_raw_mode(0o700)).map_err(|e| OciError::Staging {
        what: "setting the mode of",
        path: host_root.into(),
        source: e.into(),
    })?;
    let mut m = Materialiser {
        tree,
        content_dir,
        script: String::new(),
        seen: vec![false; tree.nodes.len()],
        blocks: 0,
        inodes: 0,
        xattr_files: 0,
        work: work.into(),
        host_root: host_root.into(),
    };
    push_line(&mut m.script, "/", "cd /")?;
    m.node_attrs(ROOT, "/")?;
    m.dir(ROOT, &root_fd, "")?;
    set_mtime(&root_fd, None, tree.nodes[ROOT].meta.mtime);
    drop(root_fd);
    // The tree now holds the only links to the content that is used; drop
    // the work names so link counts are exact for mkfs's hardlink detection
    // (and whited-out content is freed before the image is written).
    clear_dir(content_dir)?;

    // Size: content blocks, plus metadata (inode tables, bitmaps, journal,
    // directories) and the caller's headroom, rounded to MiB.
    let data = m.blocks * BLOCK;
    let inodes = (m.inodes + 64).max(4096) * 5 / 4;
    let mut size =
        (data + data / 8 + inodes * 256 + 48 * 1024 * 1024 + headroom).div_ceil(1 << 20) << 20;
    let r = Runner;
    // The estimate is generous, but a tree of many tiny files with large
    // directories can still beat it: one retry at twice the size.
    for attempt in 0..2 {
        let _ = std::fs::remove_file(image);
        let res = r.run(
            &Cmd::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "4096", "-I", "256", "-m", "0"])
                // orphan_file (default in e2fsprogs 1.47) needs guest kernels
                // >= 5.15; leave it off so older guest kernels mount the image.
                .args(["-O", "^orphan_file"])
                .arg("-N")
                .arg(inodes.to_string())
                .arg("-E")
                .arg("root_owner=0:0")
                .arg("-d")
                .arg(host_root)
                .arg(image)
                .arg(format!("{}k", size / 1024))
                .timeout(Duration::from_secs(1800)),
        );
        match res {
            Ok(_) => break,
            Err(e) if attempt == 0 => {
                tracing::warn!(error = %e, size, "mkfs.ext4 -d failed; retrying at twice the size");
                size *= 2;
            }
            Err(source) => {
                return Err(OciError::Ext4Tool {
                    step: "mkfs.ext4 -d",
                    source,
                });
            }
        }
    }

    let script = work.join("debugfs.script");
    std::fs::write(&script, &m.script).map_err(OciError::staging("writing", &script))?;
    let out = r
        .output(
            &Cmd::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&script)
                .arg(image)
                .timeout(Duration::from_secs(1800)),
        )
        .map_err(|source| OciError::Ext4Tool {
            step: "debugfs -w",
            source,
        })?;
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .take(5)
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(OciError::Debugfs {
            errors: errors.join("; "),
        });
    }
    fsck(image)?;
    Ok(Built {
        size_bytes: size,
        inodes: m.inodes,
    })
}

/// `e2fsck -fn IMAGE` must exit 0.
pub fn fsck(image: &Path) -> Result<(), OciError> {
    let out = Runner
        .output(
            &Cmd::new("e2fsck")
                .arg("-fn")
                .arg(image)
                .timeout(Duration::from_secs(900)),
        )
        .map_err(|source| OciError::Ext4Tool {
            step: "e2fsck -fn",
            source,
        })?;
    if !out.status.success() {
        return Err(OciError::Fsck {
            image: image.into(),
            output: format!("{}{}", out.stdout, out.stderr)
                .lines()
                .filter(|l| !l.starts_with("Pass ") && !l.starts_with("e2fsck "))
                .take(8)
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(())
}

struct Materialiser<'a> {
    tree: &'a Tree,
    content_dir: &'a OwnedFd,
    script: String,
    /// Nodes whose attributes are already in the script (hardlinks).
    seen: Vec<bool>,
    blocks: u64,
    inodes: u64,
    xattr_files: u64,
    work: PathBuf,
    host_root: PathBuf,
}

/// A path for a debugfs script: double quotes, `"` doubled.
fn quote(p: &str) -> String {
    format!("\"{}\"", p.replace('"', "\"\""))
}

/// Longest line written to a debugfs script. debugfs reads its script with
/// `fgets` into a `BUFSIZ` (8192-byte) buffer: a longer line is split and
/// its rest runs as a line of its own — and a line that starts with `!`
/// runs a shell command. Member paths are capped below this
/// (`layer::MAX_PATH_BYTES`); this check is the last word.
pub(crate) const SCRIPT_LINE_MAX: usize = 4000;

/// Append one line to a debugfs script, refusing any line that is too long,
/// holds a line break or NUL, or does not start with a command name (so it
/// can never start with `!`, white space or `#`). `what` names the node.
fn push_line(script: &mut String, what: &str, line: &str) -> Result<(), OciError> {
    let why = if line.len() > SCRIPT_LINE_MAX {
        Some("longer than a debugfs script line may be")
    } else if line.bytes().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
        Some("it holds a line break or NUL")
    } else if !line.as_bytes().first().is_some_and(u8::is_ascii_lowercase) {
        Some("it does not start with a debugfs command")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(OciError::ScriptLine {
            what: what.chars().take(60).collect(),
            why,
        });
    }
    script.push_str(line);
    script.push('\n');
    Ok(())
}

fn open_dir(at: Option<&OwnedFd>, name: impl rustix::path::Arg) -> Result<OwnedFd, OciError> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let r = match at {
        Some(fd) => rustix::fs::openat(fd, name, flags, Mode::empty()),
        None => rustix::fs::open(name, flags, Mode::empty()),
    };
    r.map_err(|e| OciError::Staging {
        what: "opening staging directory",
        path: PathBuf::from("rootfs"),
        source: e.into(),
    })
}

/// Unlink every entry of a flat directory of work files.
fn clear_dir(dir: &OwnedFd) -> Result<(), OciError> {
    let err = |e: rustix::io::Errno| OciError::Staging {
        what: "clearing",
        path: PathBuf::from("content"),
        source: e.into(),
    };
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir).map_err(err)? {
        let e = e.map_err(err)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(e.file_name().to_owned());
        }
    }
    for n in names {
        rustix::fs::unlinkat(dir, n.as_c_str(), AtFlags::empty()).map_err(err)?;
    }
    Ok(())
}

/// Best effort: a wrong mtime is cosmetic.
fn set_mtime(dir: &OwnedFd, name: Option<&[u8]>, mtime: u64) {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    let _ = match name {
        Some(n) => rustix::fs::utimensat(dir, n, &ts, AtFlags::SYMLINK_NOFOLLOW),
        None => rustix::fs::futimens(dir, &ts),
    };
}

impl Materialiser<'_> {
    fn host_err(
        &self,
        what: &'static str,
        path: &str,
    ) -> impl FnOnce(rustix::io::Errno) -> OciError {
        let path = self.host_root.join(path.trim_start_matches('/'));
        move |e| OciError::Staging {
            what,
            path,
            source: e.into(),
        }
    }

    fn dir(&mut self, id: NodeId, fd: &OwnedFd, path: &str) -> Result<(), OciError> {
        let Kind::Dir(children) = &self.tree.nodes[id].kind else {
            unreachable!("dir() is called on directories")
        };
        self.blocks += 1 + (children.len() as u64 * 48).div_ceil(BLOCK);
        for (name, e) in children {
            let child = &self.tree.nodes[e.node];
            let cpath = format!("{path}/{}", String::from_utf8_lossy(name));
            let first = !self.seen[e.node];
            match &child.kind {
                Kind::Dir(_) => {
                    rustix::fs::mkdirat(fd, name.as_slice(), Mode::from_raw_mode(0o700))
                        .map_err(self.host_err("creating directory", &cpath))?;
                    let sub = open_dir(Some(fd), name.as_slice())?;
                    self.node_attrs(e.node, &cpath)?;
                    self.dir(e.node, &sub, &cpath)?;
                    set_mtime(&sub, None, child.meta.mtime);
                }
                Kind::File { content, size } => {
                    rustix::fs::linkat(
                        self.content_dir,
                        content.to_string(),
                        fd,
                        name.as_slice(),
                        AtFlags::empty(),
                    )
                    .map_err(self.host_err("linking work file to", &cpath))?;
                    if first {
                        self.blocks += size.div_ceil(BLOCK) + size / (BLOCK * 340) + 1;
                        set_mtime(fd, Some(name), child.meta.mtime);
                        self.node_attrs(e.node, &cpath)?;
                    }
                }
                Kind::Symlink(target) => {
                    rustix::fs::symlinkat(target.as_slice(), fd, name.as_slice())
                        .map_err(self.host_err("creating symlink", &cpath))?;
                    self.blocks += 1;
                    set_mtime(fd, Some(name), child.meta.mtime);
                    // Each host symlink is its own inode (hardlinked
                    // symlinks become copies).
                    self.seen[e.node] = false;
                    self.node_attrs(e.node, &cpath)?;
                }
                Kind::Device { .. } | Kind::Fifo => {
                    // Only ever an inode inside the image: debugfs mknod,
                    // relative to its directory (mknod does not split paths).
                    let (kind, dev) = match child.kind {
                        Kind::Device {
                            kind: DevKind::Char,
                            major,
                            minor,
                        } => ("c", format!(" {major} {minor}")),
                        Kind::Device {
                            kind: DevKind::Block,
                            major,
                            minor,
                        } => ("b", format!(" {major} {minor}")),
                        _ => ("p", String::new()),
                    };
                    let parent = if path.is_empty() { "/" } else { path };
                    let s = &mut self.script;
                    push_line(s, &cpath, &format!("cd {}", quote(parent)))?;
                    let node = quote(&String::from_utf8_lossy(name));
                    push_line(s, &cpath, &format!("mknod {node} {kind}{dev}"))?;
                    push_line(s, &cpath, "cd /")?;
                    self.seen[e.node] = false;
                    self.node_attrs(e.node, &cpath)?;
                }
            }
        }
        Ok(())
    }

    /// Script lines for the real attributes of a node (once per node).
    fn node_attrs(&mut self, id: NodeId, path: &str) -> Result<(), OciError> {
        if self.seen[id] {
            return Ok(());
        }
        self.seen[id] = true;
        self.inodes += 1;
        let n = &self.tree.nodes[id];
        let q = quote(path);
        let ty = match n.kind {
            Kind::Dir(_) => 0o040000,
            Kind::File { .. } => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::Device {
                kind: DevKind::Char,
                ..
            } => 0o020000,
            Kind::Device {
                kind: DevKind::Block,
                ..
            } => 0o060000,
            Kind::Fifo => 0o010000,
        };
        let perm = if ty == 0o120000 { 0o777 } else { n.meta.perm };
        let s = &mut self.script;
        push_line(s, path, &format!("sif {q} mode 0{:o}", ty | perm))?;
        push_line(s, path, &format!("sif {q} uid {}", n.meta.uid))?;
        push_line(s, path, &format!("sif {q} gid {}", n.meta.gid))?;
        for (name, value) in &n.meta.xattrs {
            self.xattr_files += 1;
            let f = self.work.join(format!("xattr-{}", self.xattr_files));
            std::fs::write(&f, value).map_err(OciError::staging("writing", &f))?;
            let line = format!("ea_set -f {} {q} {name}", quote(&f.to_string_lossy()));
            push_line(&mut self.script, path, &line)?;
            self.blocks += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use tar::EntryType as T;

    use super::*;
    use crate::layer::tests::{Spec, flattener, tar_of};

    fn walk(p: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                walk(&e.path(), out);
            }
            out.push((e.path(), m));
        }
    }

    #[test]
    fn host_copy_never_carries_setuid_foreign_owners_or_devices() {
        banger_host::runner::resolve("mkfs.ext4".as_ref()).expect("needs e2fsprogs");
        let dir = tempfile::tempdir().unwrap();
        let mut f = flattener(dir.path());
        let mut t = tar_of(&[
            ("bin", T::Directory, 0o755, b""),
            ("bin/su", T::Regular, 0o6755, b"su"),
            ("bin/su2", T::Link, 0, b"bin/su"),
            ("bin/sh", T::Symlink, 0o777, b"/bin/busybox"),
            ("pub", T::Directory, 0o1777, b""),
        ]);
        // Append a device node before the end-of-archive blocks.
        t.truncate(t.len() - 1024);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(T::Char);
        h.set_path("null").unwrap();
        h.set_mode(0o666);
        h.set_uid(4242);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_size(0);
        h.set_cksum();
        t.extend_from_slice(h.as_bytes());
        t.extend_from_slice(&[0; 1024]);
        let blob = dir.path().join("layer");
        std::fs::write(&blob, t).unwrap();
        f.apply(&blob, "sha256:l").unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let host = dir.path().join("rootfs");
        let image = dir.path().join("rootfs.ext4");
        build(&f.tree, f.content_dir(), &host, &work, &image, 1 << 20).unwrap();

        let me = rustix::process::geteuid().as_raw();
        let mut all = Vec::new();
        walk(&host, &mut all);
        assert_eq!(all.len(), 5, "{all:?}"); // bin, su, su2, sh, pub; no `null`
        for (p, m) in &all {
            assert_eq!(m.uid(), me, "{}", p.display());
            let perm = m.mode() & 0o7777;
            let want = if m.is_dir() {
                0o700
            } else if m.file_type().is_symlink() {
                0o777
            } else {
                assert!(m.is_file(), "{}", p.display());
                0o600
            };
            assert_eq!(perm, want, "{}", p.display());
        }
        // The image has the real attributes.
        let out = Runner
            .run(
                &Cmd::new("debugfs")
                    .arg("-R")
                    .arg("stat /bin/su")
                    .arg(&image),
            )
            .unwrap();
        assert!(out.stdout.contains("Mode:  06755"), "{}", out.stdout);
        let out = Runner
            .run(&Cmd::new("debugfs").arg("-R").arg("stat /null").arg(&image))
            .unwrap();
        assert!(out.stdout.contains("User:  4242"), "{}", out.stdout);
        assert!(out.stdout.contains("Type: character"), "{}", out.stdout);
    }

    /// Issue #13 finding 2: a member path that puts `!cmd` where debugfs's
    /// 8 KiB line buffer splits the `sif "<path>" …` line made debugfs run
    /// `cmd` (as root in dev mode). The path is refused before any script
    /// exists, and the command never runs.
    #[test]
    fn a_member_path_cannot_start_a_debugfs_shell_command() {
        banger_host::runner::resolve("mkfs.ext4".as_ref()).expect("needs e2fsprogs");
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("/tmp/banger-oci-marker-{}", std::process::id());
        let _ = std::fs::remove_file(&marker);
        // `/` cannot be in a name: the shell rebuilds it from octal.
        let shell = format!("!touch $(printf %b {});#", marker.replace('/', "\\\\057"));
        // The line is `sif "/<path>" …`: 6 bytes before the path; fgets
        // keeps 8191 bytes of a line, so the chunk that becomes a line of
        // its own starts at path byte 8185.
        let mut path = String::new();
        let mut dirs = Vec::new();
        while path.len() + 201 <= 8185 {
            path.push_str(&"d".repeat(200));
            path.push('/');
            dirs.push(path.trim_end_matches('/').to_string());
        }
        path.push_str(&"f".repeat(8185 - path.len()));
        path.push_str(&shell);
        let mut specs: Vec<Spec> = dirs
            .iter()
            .map(|d| (d.as_str(), T::Directory, 0o755, &b""[..]))
            .collect();
        specs.push((path.as_str(), T::Regular, 0o644, b"x"));
        let blob = dir.path().join("layer");
        std::fs::write(&blob, tar_of(&specs)).unwrap();
        let mut f = flattener(dir.path());
        let res = f.apply(&blob, "sha256:l").and_then(|()| {
            let work = dir.path().join("work");
            std::fs::create_dir(&work).unwrap();
            let host = dir.path().join("rootfs");
            let image = dir.path().join("rootfs.ext4");
            build(&f.tree, f.content_dir(), &host, &work, &image, 1 << 20).map(|_| ())
        });
        let created = std::path::Path::new(&marker).exists();
        let _ = std::fs::remove_file(&marker);
        assert!(!created, "debugfs ran the member path's shell command");
        let err = res.expect_err("an 8 KiB member path was accepted");
        assert!(matches!(err, OciError::MemberPathTooLong { .. }), "{err}");
    }

    #[test]
    fn script_lines_are_bounded_and_start_with_a_command() {
        let mut s = String::new();
        push_line(&mut s, "/a", "sif \"/a\" uid 0").unwrap();
        assert_eq!(s, "sif \"/a\" uid 0\n");
        let long = format!("sif \"{}\" uid 0", "a".repeat(SCRIPT_LINE_MAX));
        for bad in [
            long.as_str(),
            "sif \"/a\nb\" uid 0",
            "sif \"/a\rb\" uid 0",
            "sif \"/a\0b\" uid 0",
            "!touch x",
            " !touch x",
            "# comment",
            "",
        ] {
            let e = push_line(&mut s, "/a", bad).unwrap_err();
            assert!(matches!(e, OciError::ScriptLine { .. }), "{bad:?}: {e}");
        }
        assert_eq!(s, "sif \"/a\" uid 0\n", "a refused line was written");
    }
}
