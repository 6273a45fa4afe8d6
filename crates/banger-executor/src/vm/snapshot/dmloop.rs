//! The loop devices of a dm-snapshot root disk: attached through root's
//! link of the checked descriptor (`links`), journaled before each is
//! made, and detached only while backing the journaled inode (see `dm`).

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use super::dm::{declined, loop_device, loop_number};
use super::links::{LinkDir, link_name};
use super::{DiskTools, is_denied, loopdev};
use crate::journal::{LoopEntry, SnapshotEntry, Txn};
use crate::vm::error::{VmOpError, io, journal_err};

/// How often a loop device `LOOP_CTL_GET_FREE` offered may be taken by
/// someone else before we give up.
const LOOP_ATTEMPTS: usize = 5;

/// What became of a journaled loop device.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LoopFate {
    Detached,
    /// Not attached any more.
    Gone,
    /// Attached to another file: someone else's now; left alone.
    Foreign(String),
}

fn loop_err(what: &'static str, dev: &str) -> impl FnOnce(std::io::Error) -> VmOpError {
    let path = dev.to_string();
    move |source| VmOpError::Io { what, path, source }
}

fn journaled_backing(entry: &LoopEntry) -> loopdev::Backing {
    loopdev::Backing {
        dev: entry.backing_dev,
        ino: entry.backing_ino,
    }
}

pub(super) fn detach_loop(tools: &dyn DiskTools, entry: &LoopEntry) -> Result<LoopFate, VmOpError> {
    let n = loop_number(&entry.device)?;
    let Some(now) = tools
        .loop_backing(n)
        .map_err(loop_err("inspecting loop device", &entry.device))?
    else {
        return Ok(LoopFate::Gone);
    };
    if now != journaled_backing(entry) {
        return Ok(LoopFate::Foreign(format!(
            "dev {:#x} inode {}",
            now.dev, now.ino
        )));
    }
    tools
        .loop_clear(n)
        .map(|()| LoopFate::Detached)
        .map_err(loop_err("detaching loop device", &entry.device))
}

impl Which {
    fn as_str(self) -> &'static str {
        match self {
            Which::Origin => "origin",
            Which::Cow => "cow",
        }
    }
}

pub(super) fn remove_link(links: &LinkDir, vm_id: &str, which: Which) -> Result<(), VmOpError> {
    let name = link_name(vm_id, which.as_str());
    links
        .remove(&name)
        .map_err(io("removing", &links.path().join(&name)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Origin,
    Cow,
}

fn set_loop(txn: &mut Txn<'_>, vm_id: &str, which: Which, l: Option<LoopEntry>) {
    let e = txn.state.snapshot_mut(vm_id);
    match which {
        Which::Origin => e.origin = l,
        Which::Cow => e.cow = l,
    }
}

/// Claim a free loop device for `file` (by descriptor): link it into
/// root's link directory `links`, journal it with the file's device and
/// inode, attach it through that link, and check that the device backs
/// exactly that inode. The kernel refusing (`EPERM`/`EACCES`), or the link
/// crossing file systems, makes the backend decline.
pub(crate) fn attach_loop(
    tools: &dyn DiskTools,
    txn: &mut Txn<'_>,
    links: &LinkDir,
    vm_id: &str,
    which: Which,
    file: &File,
    backing: &Path,
) -> Result<String, VmOpError> {
    let linked = link_file(links, vm_id, which, file, backing)?;
    let attached = attach_linked(tools, txn, vm_id, which, &linked);
    // A device still journaled keeps its link until teardown.
    let unjournaled = txn
        .state
        .snapshot(vm_id)
        .is_none_or(|e| loop_of(e, which).is_none());
    if attached.is_err()
        && unjournaled
        && let Err(e) = remove_link(links, vm_id, which)
    {
        tracing::warn!(vm_id, error = %e, "removing the link of a failed attach");
    }
    attached
}

fn loop_of(e: &SnapshotEntry, which: Which) -> Option<&LoopEntry> {
    match which {
        Which::Origin => e.origin.as_ref(),
        Which::Cow => e.cow.as_ref(),
    }
}

/// `file` as root's link `<vm_id>.<which>` in `links`, opened again (the
/// origin read-only, the COW read-write); with its path.
fn link_file(
    links: &LinkDir,
    vm_id: &str,
    which: Which,
    file: &File,
    backing: &Path,
) -> Result<(File, PathBuf), VmOpError> {
    let name = link_name(vm_id, which.as_str());
    let path = links.path().join(&name);
    let flags = match which {
        Which::Origin => OFlags::RDONLY,
        Which::Cow => OFlags::RDWR,
    };
    match links.link(file, &name, flags) {
        Ok(f) => Ok((f, path)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            Err(declined(format!(
                "{} is on another file system than root's {}: loop devices are attached \
                 through root's hard link of the file, so both must be on one",
                backing.display(),
                links.path().display()
            )))
        }
        Err(e) => Err(io("linking into", links.path())(e)),
    }
}

fn attach_linked(
    tools: &dyn DiskTools,
    txn: &mut Txn<'_>,
    vm_id: &str,
    which: Which,
    linked: &(File, PathBuf),
) -> Result<String, VmOpError> {
    let (file, backing) = (&linked.0, linked.1.as_path());
    let read_only = which == Which::Origin;
    let id = loopdev::identity(file).map_err(io("inspecting", backing))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let n = tools.loop_free().map_err(|e| {
            if is_denied(&e) {
                declined(format!("finding a free loop device: {e}"))
            } else {
                loop_err("finding a free loop device via", "/dev/loop-control")(e)
            }
        })?;
        let dev = loop_device(n);
        set_loop(
            txn,
            vm_id,
            which,
            Some(LoopEntry {
                device: dev.clone(),
                backing: backing.to_path_buf(),
                backing_dev: id.dev,
                backing_ino: id.ino,
            }),
        );
        txn.save().map_err(journal_err)?;
        match tools.loop_configure(n, file, read_only, backing) {
            Ok(()) => {}
            Err(e) => {
                set_loop(txn, vm_id, which, None);
                txn.save().map_err(journal_err)?;
                if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
                    && attempt < LOOP_ATTEMPTS
                {
                    continue;
                }
                if is_denied(&e) {
                    return Err(declined(format!("attaching {dev}: {e}")));
                }
                return Err(loop_err("attaching loop device", &dev)(e));
            }
        }
        // The device must back the inode we hold, nothing else.
        let now = tools.loop_backing(n);
        if matches!(now, Ok(Some(b)) if b == id) {
            return Ok(dev);
        }
        let reason = match now {
            Ok(Some(b)) => format!("it backs dev {:#x} inode {}", b.dev, b.ino),
            Ok(None) => "it is not attached".into(),
            Err(e) => e.to_string(),
        };
        if let Err(e) = tools.loop_clear(n) {
            tracing::warn!(device = %dev, error = %e, "detaching a mismatched loop device");
            // Still journaled: teardown tries again (by identity).
        } else {
            set_loop(txn, vm_id, which, None);
            txn.save().map_err(journal_err)?;
        }
        return Err(VmOpError::Invalid {
            what: "loop device",
            value: dev,
            reason: format!(
                "attached to {} (dev {:#x} inode {}) but {reason}; detached",
                backing.display(),
                id.dev,
                id.ino
            ),
        });
    }
}
