//! dm-snapshot root disks over loop devices.
//!
//! A VM's root disk is three kernel devices: the image's `rootfs.ext4` on a
//! read-only loop device (the origin), the VM's sparse `root.cow` on a
//! second loop device, and the persistent snapshot
//!
//! ```text
//! dmsetup create banger-<vm_id> --table "0 <sectors> snapshot <origin> <cow> P 8"
//! ```
//!
//! (`<sectors>`: the image size in 512-byte sectors; chunks of 8 sectors,
//! 4 KiB). The journal records which image (`dm_origins`), so the devices
//! can be rebuilt after they vanished; `vms/<id>/root.origin` names it for
//! people and is read only for a VM from before that record (the owner's
//! single-link file, its contents never echoed); `root.cow` is root-owned
//! 0600 (the kernel parses it), the dm node is given to the owner for the
//! VMM.
//!
//! Safety rules, on top of the executor's: each device is written to the
//! journal before it is created (a loop device by the number
//! `LOOP_CTL_GET_FREE` offered, then claimed); teardown goes dm, COW loop,
//! origin loop; only dm devices named `banger-<32 hex>` are removed, and a
//! loop device is detached only while its backing file is still the
//! journaled one by device and inode (one that now backs something else is
//! left alone and forgotten). Loop devices are attached by ioctl from the
//! descriptors the executor opened beneath the state directory without
//! following symlinks (`loopdev`), each through root's hard link of the
//! descriptor in its own `root-loops/` (`links`: the device's backing file is
//! then a name the owner cannot rename out of the udev guard's reach); no
//! path is ever re-resolved, so renaming
//! or replacing a file in the owner's tree cannot make root attach another
//! one, and the attached device is checked (`LOOP_GET_STATUS64`) to back
//! the very inode that was opened. Before attaching, the COW file must be
//! the executor's own (its uid, mode 0600, one link) and the image the
//! owner's (owner uid, one link; root's own links in `root-loops/` are not
//! counted). Which VMs have dm root disks is in the
//! journal (`dm_disks`), not inferred from the VM directory. Files are
//! removed with `unlinkat` beneath the state directory.
//!
//! The argv and the table are built by pure functions below; the unit tests
//! pin them, since device-mapper cannot run on the CI hosts.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use banger_host::runner::Cmd;
use banger_proto::layout::{IMAGES_DIR, ROOTFS};
use banger_proto::vmops::SnapshotBackend as BackendKind;
use rustix::fs::OFlags;

use super::dmloop::{LoopFate, detach_loop, remove_link};
pub(crate) use super::dmloop::{Which, attach_loop};
use super::links::LinkDir;
use super::{DiskTools, RootDisk, SnapshotBackend, checked, loopdev, run_ok};
use crate::journal::{Journal, LoopEntry, SnapshotEntry, Txn};
use crate::vm::VmHost;
use crate::vm::error::{VmOpError, io, journal_err};
use crate::vm::validate;

/// The VM's copy-on-write store (root-owned, 0600) and the id of the
/// image the snapshot is taken of.
pub(crate) use banger_proto::layout::{COW_FILE, ORIGIN_FILE};
/// Every dm device banger makes is named `banger-<vm_id>`.
pub(crate) const DM_PREFIX: &str = banger_proto::vmops::DM_NAME_PREFIX;
/// Exception chunk size in 512-byte sectors (4 KiB).
pub(crate) const CHUNK_SECTORS: u64 = 8;
const SECTOR: u64 = 512;

/// dm-snapshot over loop devices.
#[derive(Debug)]
pub(crate) struct DmSnapshot;

// ---- pure construction ------------------------------------------------

pub(crate) fn dm_name(vm_id: &str) -> String {
    format!("{DM_PREFIX}{vm_id}")
}

pub(crate) fn mapper_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

/// Only `banger-<32 lowercase hex>` names are ever created or removed.
pub(crate) fn check_dm_name(name: &str) -> Result<(), VmOpError> {
    let ok = name
        .strip_prefix(DM_PREFIX)
        .is_some_and(banger_proto::ids::is_id);
    if ok {
        return Ok(());
    }
    Err(VmOpError::Invalid {
        what: "device-mapper name",
        value: name.to_string(),
        reason: format!("banger only touches dm devices named {DM_PREFIX}<32 hex VM id>"),
    })
}

/// The `N` of `/dev/loop<N>`, and nothing else is accepted.
pub(crate) fn loop_number(dev: &str) -> Result<u32, VmOpError> {
    dev.strip_prefix("/dev/loop")
        .filter(|n| !n.is_empty() && n.len() <= 7 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| VmOpError::Invalid {
            what: "loop device",
            value: dev.to_string(),
            reason: "expected /dev/loop<N>".into(),
        })
}

pub(crate) fn loop_device(n: u32) -> String {
    format!("/dev/loop{n}")
}

/// The COW file must be the executor's own: its uid, mode 0600, one link
/// (the owner cannot have swapped in, or hard-linked, a file of theirs).
pub(crate) fn check_cow(uid: u32, mode: u32, nlink: u64, executor_uid: u32) -> Result<(), String> {
    if uid != executor_uid {
        return Err(format!(
            "owned by uid {uid}, not the executor's uid {executor_uid}"
        ));
    }
    if mode & 0o7777 != 0o600 {
        return Err(format!("mode {:04o}, not 0600", mode & 0o7777));
    }
    if nlink != 1 {
        return Err(format!("{nlink} hard links, not 1"));
    }
    Ok(())
}

/// The origin image must be the owner's own file with one link (not a hard
/// link to somebody else's file).
pub(crate) fn check_origin(uid: u32, nlink: u64, owner_uid: u32) -> Result<(), String> {
    if uid != owner_uid {
        return Err(format!(
            "owned by uid {uid}, not the owner's uid {owner_uid}"
        ));
    }
    if nlink != 1 {
        return Err(format!("{nlink} hard links, not 1"));
    }
    Ok(())
}

/// The origin's length in 512-byte sectors; it must be a whole, non-zero
/// number of them.
pub(crate) fn sectors(bytes: u64) -> Result<u64, VmOpError> {
    if bytes == 0 || !bytes.is_multiple_of(SECTOR) {
        return Err(VmOpError::Invalid {
            what: "image size",
            value: bytes.to_string(),
            reason: format!("a dm-snapshot origin must be a non-zero multiple of {SECTOR} bytes"),
        });
    }
    Ok(bytes / SECTOR)
}

/// Size of the sparse COW file: room for every chunk of the origin plus
/// the exception metadata (16 bytes per 4 KiB chunk, i.e. 1/256, doubled)
/// and a 1 MiB margin, rounded up to 4 KiB. Sparse, so only what the guest
/// writes takes space.
pub(crate) fn cow_bytes(origin_bytes: u64) -> u64 {
    let raw = origin_bytes + origin_bytes / 128 + (1 << 20);
    raw.div_ceil(4096) * 4096
}

/// The dm table line of a persistent snapshot of `origin` into `cow`.
pub(crate) fn snapshot_table(sectors: u64, origin: &str, cow: &str) -> String {
    format!("0 {sectors} snapshot {origin} {cow} P {CHUNK_SECTORS}")
}

pub(crate) fn dmsetup_create(name: &str, table: &str) -> Result<Cmd, VmOpError> {
    check_dm_name(name)?;
    Ok(Cmd::new("dmsetup")
        .arg("create")
        .arg(name)
        .arg("--table")
        .arg(table))
}

pub(crate) fn dmsetup_info(name: &str) -> Result<Cmd, VmOpError> {
    check_dm_name(name)?;
    Ok(Cmd::new("dmsetup").arg("info").arg(name))
}

pub(crate) fn dmsetup_remove(name: &str) -> Result<Cmd, VmOpError> {
    check_dm_name(name)?;
    Ok(Cmd::new("dmsetup").args(["remove", "--retry"]).arg(name))
}

/// One step of tearing a snapshot down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    RemoveDm(String),
    DetachCow(LoopEntry),
    DetachOrigin(LoopEntry),
}

/// The order devices come down: the snapshot first (it holds both loop
/// devices), then the COW loop, then the origin loop.
pub(crate) fn teardown_steps(entry: &SnapshotEntry) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(dm) = &entry.dm {
        steps.push(Step::RemoveDm(dm.clone()));
    }
    if let Some(l) = &entry.cow {
        steps.push(Step::DetachCow(l.clone()));
    }
    if let Some(l) = &entry.origin {
        steps.push(Step::DetachOrigin(l.clone()));
    }
    steps
}

// ---- device operations ------------------------------------------------

fn tool_err(what: &str) -> impl FnOnce(banger_host::runner::RunError) -> VmOpError + '_ {
    move |source| VmOpError::Tool {
        what: what.to_string(),
        source,
    }
}

/// Whether the dm device `name` exists.
pub(crate) fn dm_exists(tools: &dyn DiskTools, name: &str) -> Result<bool, VmOpError> {
    let cmd = dmsetup_info(name)?;
    let out = tools
        .output(&cmd)
        .map_err(tool_err("inspecting a device-mapper device"))?;
    if out.status.success() {
        return Ok(true);
    }
    if out.stderr.contains("does not exist") || out.stderr.contains("No such device") {
        return Ok(false);
    }
    run_ok(tools, &cmd)
        .map(|_| true)
        .map_err(tool_err("inspecting a device-mapper device"))
}

/// Remove the dm device `name`; `Ok(false)` when it was already gone.
fn remove_dm(tools: &dyn DiskTools, name: &str) -> Result<bool, VmOpError> {
    check_dm_name(name)?;
    if !dm_exists(tools, name)? {
        return Ok(false);
    }
    run_ok(tools, &dmsetup_remove(name)?)
        .map(|_| true)
        .map_err(tool_err("removing a device-mapper device"))
}

/// Tear down what `entry` lists, in order, clearing each field once its
/// device is gone. Stops at the first failure (a loop device under a live
/// snapshot cannot be detached anyway). Returns (removed, errors).
pub(crate) fn teardown_entry(
    tools: &dyn DiskTools,
    links: Option<&LinkDir>,
    entry: &mut SnapshotEntry,
) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    // Root's names of files whose devices are gone that could not be
    // removed: reported, but the next step still runs.
    let mut link_errors = Vec::new();
    for step in teardown_steps(entry) {
        let result = match &step {
            Step::RemoveDm(name) => remove_dm(tools, name).map(|gone| {
                if gone {
                    removed.push(format!("dm device {name}"));
                }
                entry.dm = None;
            }),
            Step::DetachCow(l) | Step::DetachOrigin(l) => detach_loop(tools, l).map(|d| {
                let which = if matches!(step, Step::DetachCow(_)) {
                    Which::Cow
                } else {
                    Which::Origin
                };
                // The device is gone (or someone else's): root's name for
                // its file goes too. Failing that, the device is still
                // forgotten and the next step runs (the error is
                // reported; the sweep of `host teardown` tries again).
                let unlinked =
                    links.map_or(Ok(()), |links| remove_link(links, &entry.vm_id, which));
                match d {
                    LoopFate::Detached => removed.push(format!("loop device {}", l.device)),
                    LoopFate::Gone => {}
                    LoopFate::Foreign(other) => tracing::warn!(
                        device = %l.device,
                        journaled = %l.backing.display(),
                        now = %other,
                        "loop device backs another file now; not touched"
                    ),
                }
                match which {
                    Which::Cow => entry.cow = None,
                    Which::Origin => entry.origin = None,
                }
                if let Err(e) = unlinked {
                    let msg = banger_proto::error::chain(&e).join(": ");
                    link_errors.push(format!("VM {}: {msg}", entry.vm_id));
                }
            }),
        };
        if let Err(e) = result {
            let msg = banger_proto::error::chain(&e).join(": ");
            link_errors.push(format!("VM {}: {msg}", entry.vm_id));
            return (removed, link_errors);
        }
    }
    (removed, link_errors)
}

/// `host teardown`: remove every journaled snapshot device. Entries whose
/// devices could not all be removed stay for a later attempt.
pub(crate) fn teardown_all(
    tools: &dyn DiskTools,
    links: Option<&LinkDir>,
    journal: &mut Journal,
) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for entry in &mut journal.snapshots {
        let (r, e) = teardown_entry(tools, links, entry);
        removed.extend(r);
        errors.extend(e);
    }
    journal.prune_snapshots();
    // Links of VMs without devices (a crash between the link and its
    // journal entry).
    let keep: Vec<&str> = journal.snapshots.iter().map(|e| e.vm_id.as_str()).collect();
    match links.map(|l| (l, l.sweep(&keep))) {
        None => {}
        Some((_, Ok(names))) => removed.extend(names.into_iter().map(|n| format!("loop link {n}"))),
        Some((l, Err(e))) => errors.push(format!("sweeping {}: {e}", l.path().display())),
    }
    (removed, errors)
}

pub(super) fn declined(reason: String) -> VmOpError {
    VmOpError::SnapshotUnsupported {
        backend: BackendKind::DmSnapshot.as_str(),
        reason,
    }
}

/// `dmsetup`'s message when the kernel said `EACCES`/`EPERM`.
fn denied_text(stderr: &str) -> bool {
    stderr.contains("Permission denied") || stderr.contains("Operation not permitted")
}

fn loop_name(dev: &str) -> String {
    dev.trim_start_matches("/dev/").to_string()
}

fn disk(name: &str, origin: &str, cow: &str, sectors: u64) -> RootDisk {
    RootDisk {
        backend: BackendKind::DmSnapshot,
        path: mapper_path(name),
        devices: vec![name.to_string(), loop_name(origin), loop_name(cow)],
        bytes: sectors * SECTOR,
    }
}

fn regular(f: &File, path: &Path) -> Result<std::fs::Metadata, VmOpError> {
    let m = f.metadata().map_err(io("inspecting", path))?;
    if !m.is_file() {
        return Err(VmOpError::Invalid {
            what: "disk file",
            value: path.display().to_string(),
            reason: "not a regular file".into(),
        });
    }
    Ok(m)
}

/// The image a snapshot is taken of: a regular file of the owner's with
/// one link besides root's own in `root-loops/` (a running dm VM's); returns
/// its length.
pub(crate) fn checked_origin(host: &VmHost, f: &File, path: &Path) -> Result<u64, VmOpError> {
    let own = own_links(host, f, path)?;
    checked_linked(host, f, path, "image file", own)
}

/// How many of root's `root-loops/` names link to `f`'s inode.
fn own_links(host: &VmHost, f: &File, path: &Path) -> Result<u64, VmOpError> {
    let id = loopdev::identity(f).map_err(io("inspecting", path))?;
    let links = host.links();
    links.count(id).map_err(io("reading", links.path()))
}

/// A file of the owner's tree root reads or writes (an image, a work seed,
/// a work disk): a regular file of the owner's with one link, not a hard
/// link to somebody else's file; returns its length. `what` names it.
pub(crate) fn checked_owners(
    host: &VmHost,
    f: &File,
    path: &Path,
    what: &'static str,
) -> Result<u64, VmOpError> {
    checked_linked(host, f, path, what, 0)
}

/// [`checked_owners`] for a file with `own` links of root's besides.
fn checked_linked(
    host: &VmHost,
    f: &File,
    path: &Path,
    what: &'static str,
    own: u64,
) -> Result<u64, VmOpError> {
    let m = regular(f, path)?;
    let nlink = m.nlink().saturating_sub(own);
    check_origin(m.uid(), nlink, host.owner.0).map_err(|reason| VmOpError::Invalid {
        what,
        value: path.display().to_string(),
        reason: format!("{reason}; refusing to use it"),
    })?;
    Ok(m.len())
}

/// The COW file: a regular file of the executor's, 0600, one link
/// besides root's own in `root-loops/`.
fn checked_cow(host: &VmHost, f: &File, path: &Path) -> Result<(), VmOpError> {
    let m = regular(f, path)?;
    let me = rustix::process::geteuid().as_raw();
    let nlink = m.nlink().saturating_sub(own_links(host, f, path)?);
    check_cow(m.uid(), m.mode(), nlink, me).map_err(|reason| VmOpError::Invalid {
        what: "COW file",
        value: path.display().to_string(),
        reason: format!("{reason}; it was replaced, refusing to use it"),
    })
}

impl DmSnapshot {
    fn image_rel(image_id: &str) -> PathBuf {
        Path::new(IMAGES_DIR).join(image_id).join(ROOTFS)
    }

    /// The image the VM's snapshot is of: root's record in the journal.
    /// A VM from before that record has only the owner's `root.origin`:
    /// it is read once, as the owner's regular file with one link, its
    /// contents never echoed, and the id it names recorded.
    fn origin_image(host: &VmHost, vm_id: &str) -> Result<String, VmOpError> {
        if let Some(id) = host
            .journal
            .open()
            .map_err(journal_err)?
            .state
            .dm_origins
            .get(vm_id)
        {
            validate::id("image id", id)?;
            return Ok(id.clone());
        }
        let rel = host.vm_rel(vm_id, ORIGIN_FILE);
        let path = host.state_dir.join(&rel);
        let marker = host.open_beneath(&rel, OFlags::RDONLY)?;
        checked_owners(host, &marker, &path, "origin marker")?;
        let mut bytes = Vec::new();
        (&marker)
            .take(64)
            .read_to_end(&mut bytes)
            .map_err(io("reading", &path))?;
        let id = std::str::from_utf8(&bytes)
            .ok()
            .map(str::trim)
            .filter(|id| validate::id("image id", id).is_ok())
            .ok_or_else(|| VmOpError::Invalid {
                what: "origin marker",
                value: path.display().to_string(),
                reason: "not a valid image id (its contents are not shown)".into(),
            })?
            .to_string();
        let mut txn = host.journal.open().map_err(journal_err)?;
        if txn.state.is_dm_disk(vm_id) {
            txn.state.dm_origins.insert(vm_id.to_string(), id.clone());
            txn.save().map_err(journal_err)?;
        }
        Ok(id)
    }

    /// Remove the VM's devices (journal-guided) and forget them.
    fn remove_devices(&self, host: &VmHost, vm_id: &str) -> Result<(), VmOpError> {
        let mut txn = host.journal.open().map_err(journal_err)?;
        let Some(entry) = txn.state.snapshots.iter_mut().find(|e| e.vm_id == vm_id) else {
            return Ok(());
        };
        let (_, errors) = teardown_entry(&*host.tools, Some(&host.links()), entry);
        txn.state.prune_snapshots();
        txn.save().map_err(journal_err)?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(VmOpError::SnapshotTeardown {
                vm_id: vm_id.to_string(),
                errors,
            })
        }
    }

    fn build(
        &self,
        host: &VmHost,
        txn: &mut Txn<'_>,
        vm_id: &str,
        origin: (&File, &Path),
        cow: (&File, &Path),
        sectors: u64,
    ) -> Result<RootDisk, VmOpError> {
        let tools = &*host.tools;
        let links = host.links();
        let o = attach_loop(tools, txn, &links, vm_id, Which::Origin, origin.0, origin.1)?;
        let c = attach_loop(tools, txn, &links, vm_id, Which::Cow, cow.0, cow.1)?;
        let name = dm_name(vm_id);
        txn.state.snapshot_mut(vm_id).dm = Some(name.clone());
        txn.save().map_err(journal_err)?;
        let cmd = dmsetup_create(&name, &snapshot_table(sectors, &o, &c))?;
        let out = tools
            .output(&cmd)
            .map_err(tool_err("creating the dm-snapshot device"))?;
        if !out.status.success() && denied_text(&out.stderr) {
            return Err(declined(format!(
                "dmsetup create: {}",
                out.stderr.trim().replace('\n', "; ")
            )));
        }
        checked(&cmd, out).map_err(tool_err("creating the dm-snapshot device"))?;
        if let Some(owner) = host.tool_ids() {
            tools
                .chown(&mapper_path(&name), owner)
                .map_err(io("chown", &mapper_path(&name)))?;
        }
        Ok(disk(&name, &o, &c, sectors))
    }
}

impl SnapshotBackend for DmSnapshot {
    fn kind(&self) -> BackendKind {
        BackendKind::DmSnapshot
    }

    fn create(&self, host: &VmHost, vm_id: &str, image_id: &str) -> Result<RootDisk, VmOpError> {
        validate::id("VM id", vm_id)?;
        validate::id("image id", image_id)?;
        let image_rel = Self::image_rel(image_id);
        let origin = host.open_beneath(&image_rel, OFlags::RDONLY)?;
        let len = checked_origin(host, &origin, &host.state_dir.join(&image_rel))?;
        sectors(len)?;
        drop(origin);
        // Journal the VM as a dm disk before any file exists, so whatever
        // is left of a crash is found and removed by the dm driver.
        {
            let mut txn = host.journal.open().map_err(journal_err)?;
            if txn.state.is_dm_disk(vm_id) {
                return Err(VmOpError::Exists {
                    what: "dm-snapshot root disk of VM",
                    path: vm_id.to_string(),
                });
            }
            txn.state.dm_disks.push(vm_id.to_string());
            txn.state
                .dm_origins
                .insert(vm_id.to_string(), image_id.to_string());
            txn.save().map_err(journal_err)?;
        }
        let made = (|| {
            let cow_rel = host.vm_rel(vm_id, COW_FILE);
            let cow_path = host.state_dir.join(&cow_rel);
            // The executor's own, 0600: the owner must not rewrite what the
            // kernel parses.
            let cow = host.open_beneath(&cow_rel, OFlags::CREATE | OFlags::EXCL | OFlags::RDWR)?;
            rustix::fs::fchmod(&cow, rustix::fs::Mode::from_raw_mode(0o600))
                .map_err(|e| io("chmod", &cow_path)(e.into()))?;
            cow.set_len(cow_bytes(len))
                .map_err(io("sizing", &cow_path))?;
            drop(cow);
            let origin_rel = host.vm_rel(vm_id, ORIGIN_FILE);
            let mut marker = host.create_file(vm_id, ORIGIN_FILE)?;
            marker
                .write_all(format!("{image_id}\n").as_bytes())
                .map_err(io("writing", &host.state_dir.join(&origin_rel)))?;
            drop(marker);
            self.attach(host, vm_id)
        })();
        if made.is_err()
            && let Err(e) = self.remove(host, vm_id)
        {
            tracing::warn!(vm_id, error = %e, "undoing a failed dm-snapshot create");
        }
        made
    }

    fn attach(&self, host: &VmHost, vm_id: &str) -> Result<RootDisk, VmOpError> {
        validate::id("VM id", vm_id)?;
        let image_id = Self::origin_image(host, vm_id)?;
        let image_rel = Self::image_rel(&image_id);
        let image_path = host.state_dir.join(&image_rel);
        let origin = host.open_beneath(&image_rel, OFlags::RDONLY)?;
        let sectors = sectors(checked_origin(host, &origin, &image_path)?)?;
        let cow_rel = host.vm_rel(vm_id, COW_FILE);
        let cow_path = host.state_dir.join(&cow_rel);
        // Looked at read-only; written only once it is the executor's own.
        let cow = host.open_beneath(&cow_rel, OFlags::RDONLY)?;
        checked_cow(host, &cow, &cow_path)?;
        let cow = host.reopen_rw(&cow, &cow_rel)?;
        let tools = &*host.tools;
        let mut txn = host.journal.open().map_err(journal_err)?;
        if let Some(e) = txn.state.snapshot(vm_id)
            && let (Some(dm), Some(o), Some(c)) = (&e.dm, &e.origin, &e.cow)
            && dm_exists(tools, dm)?
        {
            let d = disk(dm, &o.device, &c.device, sectors);
            if let Some(owner) = host.tool_ids() {
                tools.chown(&d.path, owner).map_err(io("chown", &d.path))?;
            }
            return Ok(d);
        }
        // Leftovers of an earlier attach (half-built, or the snapshot is
        // gone): clear them before building afresh.
        if let Some(entry) = txn.state.snapshots.iter_mut().find(|e| e.vm_id == vm_id) {
            let (_, errors) = teardown_entry(tools, Some(&host.links()), entry);
            txn.state.prune_snapshots();
            txn.save().map_err(journal_err)?;
            if !errors.is_empty() {
                return Err(VmOpError::SnapshotTeardown {
                    vm_id: vm_id.to_string(),
                    errors,
                });
            }
        }
        let built = self.build(
            host,
            &mut txn,
            vm_id,
            (&origin, &image_path),
            (&cow, &cow_path),
            sectors,
        );
        if let Err(e) = built {
            if let Some(entry) = txn.state.snapshots.iter_mut().find(|e| e.vm_id == vm_id) {
                let (_, errors) = teardown_entry(tools, Some(&host.links()), entry);
                for err in errors {
                    tracing::warn!(vm_id, error = %err, "undoing a half-built snapshot");
                }
            }
            txn.state.prune_snapshots();
            if let Err(je) = txn.save() {
                tracing::warn!(vm_id, error = %je, "rewriting the journal after a failed attach");
            }
            return Err(e);
        }
        built
    }

    fn remove(&self, host: &VmHost, vm_id: &str) -> Result<(), VmOpError> {
        validate::id("VM id", vm_id)?;
        self.remove_devices(host, vm_id)?;
        // Root's links too (a crash may have left one unjournaled).
        for which in [Which::Cow, Which::Origin] {
            remove_link(&host.links(), vm_id, which)?;
        }
        host.remove_beneath(vm_id, &[COW_FILE, ORIGIN_FILE])?;
        let mut txn = host.journal.open().map_err(journal_err)?;
        let recorded = txn.state.dm_origins.remove(vm_id).is_some();
        if recorded || txn.state.dm_disks.iter().any(|v| v == vm_id) {
            txn.state.dm_disks.retain(|v| v != vm_id);
            txn.save().map_err(journal_err)?;
        }
        Ok(())
    }
}
