//! The spawner's wire format: a message's bytes and descriptors
//! ([`Writer`], [`Reader`]) and a [`Jail`]'s encoding, with the checks
//! that refuse what the public API would never build.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::sync::Arc;

use crate::mounts::MountKey;

use super::super::{Bind, CopyIn, Jail, Limits, Pass};
use super::{FIXED_FDS, MAX_BINDS, MAX_FDS, refused};

/// A message being written: bytes and the descriptors that go with it.
#[derive(Default)]
pub(super) struct Writer<'a> {
    pub(super) bytes: Vec<u8>,
    pub(super) fds: Vec<BorrowedFd<'a>>,
}

impl<'a> Writer<'a> {
    pub(super) fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.bytes.extend_from_slice(b);
    }

    pub(super) fn fd(&mut self, fd: BorrowedFd<'a>) {
        self.fds.push(fd);
    }
}

/// A message being read: every read is bounded by what arrived.
pub(super) struct Reader<'m> {
    pub(super) bytes: &'m [u8],
    pub(super) fds: std::vec::IntoIter<OwnedFd>,
}

impl<'m> Reader<'m> {
    pub(super) fn u32(&mut self) -> std::io::Result<u32> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<4>() else {
            return Err(refused("a short message"));
        };
        self.bytes = rest;
        Ok(u32::from_le_bytes(*head))
    }

    pub(super) fn u64(&mut self) -> std::io::Result<u64> {
        Ok(u64::from(self.u32()?) | u64::from(self.u32()?) << 32)
    }

    /// A count of descriptor-carrying items, at most `max`.
    pub(super) fn count(&mut self, what: &str, max: usize) -> std::io::Result<usize> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(refused(format!("{n} {what}, more than {max}")));
        }
        Ok(n)
    }

    pub(super) fn bytes(&mut self) -> std::io::Result<&'m [u8]> {
        let len = self.u32()? as usize;
        if len > self.bytes.len() {
            return Err(refused("a short message"));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn os(&mut self) -> std::io::Result<OsString> {
        Ok(OsStr::from_bytes(self.bytes()?).to_os_string())
    }

    pub(super) fn fd(&mut self) -> std::io::Result<OwnedFd> {
        self.fds
            .next()
            .ok_or_else(|| refused("fewer descriptors than the request names"))
    }

    /// Nothing may be left over: neither bytes nor descriptors.
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        if !self.bytes.is_empty() {
            return Err(refused("trailing bytes"));
        }
        if self.fds.next().is_some() {
            return Err(refused("more descriptors than the request names"));
        }
        Ok(())
    }
}

impl Jail {
    /// Every field of the jail, in the order [`Jail::decode`] reads them.
    /// A field added to [`Jail`] is added here and there, nowhere else.
    pub(super) fn encode<'a>(&'a self, w: &mut Writer<'a>) {
        w.u32(self.uid);
        w.u32(self.gid);
        w.u32(self.binds.len() as u32);
        for b in &self.binds {
            w.bytes(b.at.as_bytes());
            w.u32(u32::from(b.writable));
            w.fd(b.fd.as_fd());
        }
        w.u32(self.passes.len() as u32);
        for p in &self.passes {
            w.u32(p.at as u32);
            w.fd(p.fd.as_fd());
        }
        w.u32(self.copies.len() as u32);
        for c in &self.copies {
            w.bytes(c.at.as_bytes());
            w.fd(c.fd.as_fd());
        }
        w.u32(u32::from(self.net_handles));
        match self.long_lived {
            None => w.u32(0),
            Some(l) => {
                w.u32(1);
                w.u64(l.memory);
                w.u32(l.processes);
                w.u64(l.open_files);
                w.u64(l.file_size);
            }
        }
        match &self.cgroup {
            None => w.u32(0),
            Some(c) => {
                w.u32(2);
                w.fd(c.procs.as_fd());
                w.fd(c.dir.as_fd());
            }
        }
    }

    /// A jail as [`Jail::encode`] wrote it, refused unless its ids lie in
    /// `range` (which never holds 0), each bind and copy name is one plain
    /// token (but `/dev/kvm`'s and `/dev/net/tun`'s places, each holding
    /// its device, opened `O_PATH|O_NOFOLLOW`), each bind's
    /// descriptor one `check_bind_fd` takes, each pass-through number lies in 3 to
    /// [`super::super::MAX_PASSED_FD`] once, and its descriptors fit
    /// [`MAX_FDS`] with the request's own, and its cgroup descriptors (if
    /// any) are a cgroup2 directory and its own `cgroup.procs`, opened for
    /// writing (`check_cgroup`).
    pub(super) fn decode(
        r: &mut Reader<'_>,
        range: &std::ops::Range<u32>,
        binds_from: &[MountKey],
    ) -> std::io::Result<Jail> {
        let (uid, gid) = (r.u32()?, r.u32()?);
        for id in [uid, gid] {
            if id == 0 || !range.contains(&id) {
                return Err(refused(format!(
                    "id {id} is root or outside the jail range {range:?}"
                )));
            }
        }
        let mut room = MAX_FDS - FIXED_FDS;
        let count = r.count("binds", MAX_BINDS)?;
        room -= count;
        let mut binds = Vec::with_capacity(count);
        for _ in 0..count {
            let at = std::str::from_utf8(r.bytes()?)
                .map_err(|_| refused("a bind name that is not UTF-8"))?
                .to_string();
            // `/dev/kvm` and `/dev/net/tun` are placed as devices, and
            // only they; every other bind is a plain name and no character
            // device.
            let device = super::super::is_device_place(&at);
            if !device {
                super::super::check_name(&at, "bind").map_err(refused)?;
            }
            let writable = match r.u32()? {
                0 => false,
                1 => true,
                n => return Err(refused(format!("writable flag {n}"))),
            };
            let fd = r.fd()?;
            if device {
                // Bound read-only, always (`Jail::bind_device`).
                if writable {
                    return Err(refused(format!("a writable device bind at /{at}")));
                }
                super::super::check_device(fd.as_fd(), &at).map_err(refused)?;
            } else {
                check_bind_fd(fd.as_fd(), binds_from)?;
            }
            binds.push(Bind {
                fd: Arc::new(fd),
                at,
                writable,
            });
        }
        let count = r.count("passed descriptors", room)?;
        room -= count;
        let mut passes: Vec<Pass> = Vec::with_capacity(count);
        for _ in 0..count {
            let at = i32::try_from(r.u32()?).unwrap_or(-1);
            super::super::check_pass(&passes, at).map_err(refused)?;
            passes.push(Pass {
                fd: Arc::new(r.fd()?),
                at,
            });
        }
        let count = r.count("copies", room)?;
        room -= count;
        let mut copies = Vec::with_capacity(count);
        for _ in 0..count {
            let at = std::str::from_utf8(r.bytes()?)
                .map_err(|_| refused("a copy name that is not UTF-8"))?
                .to_string();
            super::super::check_name(&at, "copy").map_err(refused)?;
            copies.push(CopyIn {
                fd: Arc::new(r.fd()?),
                at,
            });
        }
        let net_handles = match r.u32()? {
            0 => false,
            1 => true,
            n => return Err(refused(format!("network-handles flag {n}"))),
        };
        let long_lived = match r.u32()? {
            0 => None,
            1 => Some(Limits {
                memory: r.u64()?,
                processes: r.u32()?,
                open_files: r.u64()?,
                file_size: r.u64()?,
            }),
            n => return Err(refused(format!("long-lived flag {n}"))),
        };
        let cgroup = match r.count("cgroup descriptors", room.min(2))? {
            0 => None,
            2 => {
                let procs = r.fd()?;
                let dir = r.fd()?;
                super::super::check_cgroup(dir.as_fd(), procs.as_fd()).map_err(refused)?;
                Some(Arc::new(super::super::CgroupFds { dir, procs }))
            }
            n => return Err(refused(format!("{n} cgroup descriptors, not 0 or 2"))),
        };
        Ok(Jail {
            uid,
            gid,
            binds,
            passes,
            copies,
            long_lived,
            cgroup,
            net_handles,
        })
    }
}

/// The loop devices' block major (`Documentation/admin-guide/devices.txt`).
const LOOP_MAJOR: u32 = 7;

/// A bind descriptor the spawner accepts, an allow-list (second read of
/// F1, finding 5; a deny-list of pseudo file systems before it missed
/// several): a regular file or directory on one of the mounts `binds_from`
/// names by mount id (the state directory's and the temporary
/// directory's, where the executor's disks and staging directories are;
/// by mount, not `st_dev`, since the third read's finding d), or a loop or
/// device-mapper block device. Anything else — another mount (`/proc`,
/// `/sys`, `/dev`, hugetlbfs, …), another block device (the host's
/// disks), a character device, a socket — is refused.
pub(super) fn check_bind_fd(fd: BorrowedFd<'_>, binds_from: &[MountKey]) -> std::io::Result<()> {
    use rustix::fs::FileType;
    let st = rustix::fs::fstat(fd)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile | FileType::Directory => {
            let mount = crate::mounts::mount_key_of(fd)?;
            if binds_from.contains(&mount) {
                Ok(())
            } else {
                Err(refused(format!(
                    "a bind not on a file system the helper binds from ({mount})"
                )))
            }
        }
        FileType::BlockDevice => {
            let major = rustix::fs::major(st.st_rdev);
            if major == LOOP_MAJOR || Some(major) == dm_major()? {
                Ok(())
            } else {
                Err(refused(format!(
                    "a bind of block device {major}:{}, neither loop nor device-mapper",
                    rustix::fs::minor(st.st_rdev)
                )))
            }
        }
        kind => Err(refused(format!(
            "a bind of a {kind:?}, not a file, directory or block device"
        ))),
    }
}

/// device-mapper's block major, from `/proc/devices` (dynamic; `None`
/// while the module is not loaded). Read at each check, not once at
/// start: `dm-mod` may load after the helper starts (`dmsetup` loads it).
pub(super) fn dm_major() -> std::io::Result<Option<u32>> {
    Ok(dm_major_in(&std::fs::read_to_string("/proc/devices")?))
}

/// device-mapper's major in `/proc/devices` text: its block section only.
pub(super) fn dm_major_in(text: &str) -> Option<u32> {
    text.lines()
        .skip_while(|l| !l.starts_with("Block devices:"))
        .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [n, "device-mapper"] => n.parse().ok(),
            _ => None,
        })
}
