//! VMM processes: launched as children the executor holds (pidfd), recorded
//! in the journal (pid + start time), and re-adopted after an executor
//! restart only when the journaled pid still names the same process.

use std::path::Path;

use banger_proto::layout::{
    API_SOCKET, IMAGES_DIR, INITRD, KERNEL, KERNELS_DIR, RUN_DIR, SERIAL_LOG, VMM_LOG,
    VSOCK_SOCKET, in_run_dir,
};
use banger_proto::privops::KvmVerdict;
use banger_proto::vmops::{LaunchVmSpec, VmmKind, VmmState};

use banger_vmm::dir::OwnerDir;
use banger_vmm::driver::{RunningVmm, VmmDriver};
use banger_vmm::qemu::QemuDriver;
use banger_vmm::{Drive, LaunchSpec, VmmError};
use rustix::fs::OFlags;

use super::VmHost;
use super::disks::WORK_DISK;
use super::error::{VmOpError, io, journal_err};
use super::validate;
use super::vmm_files::with_log_tail;
use crate::journal::VmmEntry;

/// The kernel command line every banger guest boots with (the guest
/// contract, docs/guest.md).
pub use banger_proto::guest::KERNEL_CMDLINE;

/// The sockets a VMM of `kind` uses, relative to the VM directory (the
/// names `banger_vmm::LaunchSpec` gives them under `run/`).
pub(super) fn sockets(kind: VmmKind) -> Vec<String> {
    match kind {
        // Root's, outside the VM directory (`VmHost::qmp_socket`).
        VmmKind::Qemu => Vec::new(),
        VmmKind::Firecracker => vec![in_run_dir(API_SOCKET), in_run_dir(VSOCK_SOCKET)],
    }
}

use banger_host::jail::start_time;

/// A VM's tap set down for a restore ([`TapDown::new`]): set up again when
/// dropped (a failed launch: the tap's next user needs it up), or by
/// [`TapDown::up`], unless [`TapDown::keep_down`] said otherwise.
pub(super) struct TapDown<'a> {
    net: &'a std::sync::Arc<dyn banger_host::net::HostNet>,
    tap: &'a str,
    up_on_drop: bool,
}

impl<'a> TapDown<'a> {
    pub(super) fn new(
        net: &'a std::sync::Arc<dyn banger_host::net::HostNet>,
        tap: &'a str,
    ) -> Result<TapDown<'a>, VmOpError> {
        net.set_down(tap).map_err(|e| {
            io("setting down tap", Path::new(tap))(std::io::Error::other(e.to_string()))
        })?;
        Ok(TapDown {
            net,
            tap,
            up_on_drop: true,
        })
    }

    /// Set it up now.
    pub(super) fn up(mut self) -> Result<(), VmOpError> {
        self.up_on_drop = false;
        self.net.set_up(self.tap).map_err(|e| {
            io("setting up tap", Path::new(self.tap))(std::io::Error::other(e.to_string()))
        })
    }

    /// Leave it down when dropped.
    pub(super) fn keep_down(&mut self) {
        self.up_on_drop = false;
    }
}

impl Drop for TapDown<'_> {
    fn drop(&mut self) {
        if self.up_on_drop
            && let Err(e) = self.net.set_up(self.tap)
        {
            tracing::warn!(tap = %self.tap, error = %e, "setting a tap up again after a failed restore");
        }
    }
}

impl VmHost {
    fn launch_spec(&self, spec: &LaunchVmSpec, kvm: bool) -> Result<LaunchSpec, VmOpError> {
        let krel = Path::new(KERNELS_DIR).join(&spec.kernel_id);
        // Existence and "no symlinks on the way" checks; a jailed VMM
        // gets descriptors opened again and checked by `qemu_files` or
        // `fc_files`.
        drop(self.open_beneath(&krel.join(KERNEL), OFlags::RDONLY)?);
        let irel = Path::new(IMAGES_DIR).join(&spec.image_id).join(INITRD);
        let initrd = match self.open_beneath(&irel, OFlags::RDONLY) {
            Ok(_) => Some(self.state_dir.join(&irel)),
            Err(VmOpError::Missing { .. }) => {
                match self.open_beneath(&krel.join(INITRD), OFlags::RDONLY) {
                    Ok(_) => Some(self.state_dir.join(&krel).join(INITRD)),
                    Err(VmOpError::Missing { .. }) => None,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        drop(self.open_beneath(&self.vm_rel(&spec.vm_id, WORK_DISK), OFlags::RDONLY)?);
        // A file (reflink, sparse copy) or a block device (dm-snapshot).
        let root = self.root_disk(&spec.vm_id)?;
        let dir = self.vm_dir(&spec.vm_id);
        Ok(LaunchSpec {
            vm_id: spec.vm_id.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            kernel: self.state_dir.join(&krel).join(KERNEL),
            initrd,
            cmdline: KERNEL_CMDLINE.to_string(),
            drives: vec![
                Drive {
                    id: "root".into(),
                    path: root.path,
                    read_only: false,
                },
                Drive {
                    id: "work".into(),
                    path: dir.join(WORK_DISK),
                    read_only: false,
                },
            ],
            tap: spec.tap.clone(),
            mac: spec.mac.clone(),
            run_dir: dir.join(RUN_DIR),
            serial_log: dir.join(SERIAL_LOG),
            vsock_cid: 3,
            // The launch's slot ids (`launch`): never the owner's.
            run_as: None,
            kvm,
        })
    }

    /// The VM directory as an [`OwnerDir`]: the owner writes it, so root
    /// works in it only through this descriptor.
    pub(super) fn owner_vm_dir(&self, vm_id: &str) -> Result<OwnerDir, VmOpError> {
        match self.vm_dir_fd(vm_id)? {
            Some(fd) => Ok(OwnerDir::from_fd(fd, self.vm_dir(vm_id))),
            None => Err(VmOpError::Missing {
                what: "VM directory",
                path: self.vm_dir(vm_id).display().to_string(),
            }),
        }
    }

    /// A fresh `run/` directory for Firecracker's sockets, handed to `to`
    /// (the launch's slot ids), and the
    /// descriptor of the very directory made: root works inside it only
    /// through this descriptor, never by re-resolving its path (the owner
    /// could move another directory into its place).
    fn fresh_run_dir(&self, vm_dir: &OwnerDir, to: (u32, u32)) -> Result<OwnerDir, VmOpError> {
        let run = vm_dir.join(RUN_DIR);
        // Relative to the VM dir's descriptor, no symlink followed, no
        // mount crossed; as the owner.
        self.remove_vm_tree(vm_dir, RUN_DIR)
            .map_err(io("removing", &run))?;
        let mode = rustix::fs::Mode::from_raw_mode(0o700);
        rustix::fs::mkdirat(vm_dir, RUN_DIR, mode).map_err(|e| io("creating", &run)(e.into()))?;
        let fd = rustix::fs::openat2(
            vm_dir,
            RUN_DIR,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            banger_vmm::dir::RESOLVE,
        )
        .map_err(|e| io("opening", &run)(e.into()))?;
        // The owner could have renamed another directory to `run` between
        // the mkdir and the open: only the empty 0700 directory this process
        // just made is handed over.
        let st = rustix::fs::fstat(&fd).map_err(|e| io("inspecting", &run)(e.into()))?;
        let empty = rustix::fs::Dir::read_from(&fd)
            .map(|d| {
                d.filter_map(Result::ok)
                    .all(|e| matches!(e.file_name().to_bytes(), b"." | b".."))
            })
            .unwrap_or(false);
        if st.st_uid != rustix::process::geteuid().as_raw()
            || st.st_mode & 0o7777 != 0o700
            || !empty
        {
            return Err(VmOpError::Invalid {
                what: "run directory",
                value: run.display().to_string(),
                reason: "was replaced while it was being created".into(),
            });
        }
        rustix::fs::fchown(
            &fd,
            Some(rustix::process::Uid::from_raw(to.0)),
            Some(rustix::process::Gid::from_raw(to.1)),
        )
        .map_err(|e| io("chown", &run)(e.into()))?;
        Ok(OwnerDir::from_fd(fd, run))
    }

    pub(crate) fn launch(
        &self,
        spec: &LaunchVmSpec,
        tap_journaled: bool,
    ) -> Result<VmmState, VmOpError> {
        validate::launch(spec)?;
        if !tap_journaled {
            return Err(VmOpError::Invalid {
                what: "tap",
                value: spec.tap.clone(),
                reason: "not a tap banger created".into(),
            });
        }
        // The caller holds this VM's operation lock (`VmHost::begin_op`)
        // until this launch is journaled or has failed: a concurrent
        // launch, or a disk operation, of the same VM would pass the check
        // below too.
        if let Some(state) = self.status_inner(&spec.vm_id)?
            && state.running
        {
            return Err(VmOpError::Running {
                vm_id: spec.vm_id.clone(),
                pid: state.pid.unwrap_or(0),
            });
        }
        // KVM by this executor's own verdict, unless the owner forces it.
        let kvm = spec.force_kvm || self.kvm_verdict() == KvmVerdict::Usable;
        let ls = self.launch_spec(spec, kvm)?;
        // The owner's VM directory, opened once: `run/` and both logs are
        // made or opened relative to this descriptor — new files with
        // O_EXCL, an existing serial log only when it is the owner's own
        // single-link file.
        let vm_dir = self.owner_vm_dir(&spec.vm_id)?;
        let failed = |source: VmmError| VmOpError::Launch {
            vm_id: spec.vm_id.clone(),
            source,
        };
        // The VMM's jail uid (QEMU's and Firecracker's alike), reserved
        // until the journal holds it.
        let reserved = self.reserve_slot()?;
        let ids = (reserved.uid(), reserved.uid());
        let mut slot = Some(reserved);
        let ls = LaunchSpec {
            run_as: Some(ids),
            ..ls
        };
        // The VM's cgroup, removed unless its VMM ends up journaled in it.
        let mut cgroup = None;
        // With the VMM, its tap (Firecracker's handed to its ids, QEMU's
        // to root), given back if the launch fails, until the journal
        // holds it.
        let (mut proc, mut handed): (Box<dyn RunningVmm>, _) = match spec.vmm {
            VmmKind::Qemu => {
                let binary =
                    self.vmm_binary(VmmKind::Qemu)
                        .map_err(|reason| VmOpError::VmmUnavailable {
                            vmm: "qemu",
                            reason,
                        })?;
                // QEMU gets root's descriptor of its tap, attached while
                // the journal is locked and checked against its index
                // (never a later attach by name): the tap is root's for
                // it, owner and group, and given back whatever the jailed
                // QEMU set through that descriptor.
                let (mut handed, tap) = self.take_tap_for_qemu(&spec.tap)?;
                let qmp = self.qmp_socket(&spec.vm_id, true)?;
                let agent = self.agent_socket(&spec.vm_id, true)?;
                let log = vm_dir
                    .recreate(VMM_LOG, 0o600, self.tool_ids())
                    .map_err(failed)?;
                // Root's own descriptor of the file it made: the error tail
                // is read from it, never from the name.
                let tail = log
                    .try_clone()
                    .map_err(io("duplicating", &vm_dir.join(VMM_LOG)))?;
                let mut files = self.qemu_files(&ls, &vm_dir, log, (qmp, agent), tap)?;
                // A restore: the saved state, and the tap down until the
                // guest's agent has applied the new identity, so nobody
                // reaches the clone under its source's address and MAC
                // (the firewall's per-tap MAC and address pins hold
                // besides). Up again when `down` goes, unless a QEMU that
                // may still run the clone keeps it down. A boot sets it
                // up: a restore the helper did not live through may have
                // left it down.
                let mut down = None;
                match &spec.restore {
                    Some(r) => {
                        files.incoming = Some(self.incoming(spec, r)?);
                        down = Some(TapDown::new(&self.net, &spec.tap)?);
                    }
                    None => {
                        if let Err(e) = self.net.set_up(&spec.tap) {
                            tracing::warn!(tap = %spec.tap, error = %e, "setting a tap up before a boot");
                        }
                    }
                }
                let limits = super::cgroup::VmLimits {
                    memory: banger_vmm::qemu::memory_limit(&ls),
                    processes: banger_vmm::qemu::process_limit(&ls),
                    vcpus: u32::from(ls.vcpus),
                };
                if let Some((made, procs)) = self.make_vm_cgroup(&spec.vm_id, &limits)? {
                    files.cgroup = Some(procs);
                    cgroup = Some(made);
                }
                let driver = QemuDriver { binary };
                let mut vm = match driver.start(&ls, files) {
                    Ok(vm) => vm,
                    Err(source) => {
                        if matches!(source, VmmError::StillRunning { .. })
                            && let Some(d) = down.as_mut()
                        {
                            // It may still run the clone: the tap stays down.
                            d.keep_down();
                        }
                        self.keep_still_running(spec, &source, &mut slot, &mut cgroup, &mut handed);
                        return Err(failed(with_log_tail(source, &tail)));
                    }
                };
                if let Some(d) = down.take()
                    && let Err(e) = d.up()
                {
                    // Not reachable as itself: not kept.
                    if vm.kill().is_err() {
                        std::mem::forget(slot);
                    }
                    return Err(e);
                }
                (vm, handed)
            }
            VmmKind::Firecracker => {
                // The slot's own `run/` (0700), bound at `/run` in the
                // jail: Firecracker binds its API and vsock sockets there.
                let run = self.fresh_run_dir(&vm_dir, ids)?;
                let (proc, handed) =
                    self.launch_firecracker(spec, &ls, (&vm_dir, run), &mut slot, &mut cgroup)?;
                (proc, handed)
            }
        };
        let pid = proc.pid();
        // Re-adoption matches pid *and* start time; a VMM whose start time
        // cannot be read could never be re-adopted, so it is not kept.
        let Ok(started) = start_time(pid) else {
            if proc.kill().is_err() {
                // Maybe still running as its slot uid: never given again.
                std::mem::forget(slot);
            }
            return Err(VmOpError::StartTimeUnreadable {
                vm_id: spec.vm_id.clone(),
                pid,
            });
        };
        let entry = VmmEntry {
            vm_id: spec.vm_id.clone(),
            pid,
            start_time: started,
            vmm: spec.vmm,
            uid: slot.as_ref().map(|s| s.uid()),
            cgroup: cgroup.as_ref().map(|c| c.name.clone()),
            tap: Some(spec.tap.clone()),
            // A restored guest prints no ready line again: re-adopted, it
            // is not watched for one (its launch settled it ready).
            console_offset: if spec.restore.is_some() {
                None
            } else {
                proc.console_offset()
            },
        };
        // A failure below drops `handed` after the kill: the tap goes back
        // to root unless the VMM still holds it.
        if let Err(e) = self.journal_vmm(entry, &mut handed) {
            // Unjournaled, it could never be stopped or re-adopted.
            if proc.kill().is_err() {
                // Maybe still running as its slot uid: never given again.
                std::mem::forget(slot);
            }
            return Err(e);
        }
        // The journal holds the slot, the handed tap and the cgroup now.
        drop(slot);
        if let Some(c) = cgroup {
            c.keep();
        }
        // A replaced entry (a racing launch) is dropped after the lock.
        let replaced = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.vm_id.clone(), (proc, started));
        drop(replaced);
        Ok(self.describe(VmmState {
            vm_id: spec.vm_id.clone(),
            running: true,
            pid: Some(pid),
            vmm: Some(spec.vmm),
            adopted: false,
            ready: None,
            start_time: None,
            sockets: Vec::new(),
            root_devices: Vec::new(),
        }))
    }

    /// What a QEMU restoring `r` is given: the snapshot's state (the
    /// owner's checked file) and the identity its agent applies, with the
    /// launch's MAC and root's clock.
    fn incoming(
        &self,
        spec: &LaunchVmSpec,
        r: &banger_proto::vmops::RestoreSpec,
    ) -> Result<banger_vmm::qemu::Incoming, VmOpError> {
        let (identity, nonce) = restore_identity(spec, r);
        Ok(banger_vmm::qemu::Incoming {
            state: self.snapshot_state(&r.snapshot_id)?,
            identity,
            nonce,
            agent_timeout: banger_vmm::qemu::AGENT_TIMEOUT,
        })
    }

    /// After a launch failed with `source`: when that is
    /// [`VmmError::StillRunning`] (its VMM maybe still running as its slot
    /// uid), journal it, so status reports it running and its exit frees
    /// the slot (hostile read of the VMM table, finding 3), with its tap
    /// (`handed`, given back when that entry goes) and its cgroup; a slot
    /// whose VMM could not be journaled is never given again. The start
    /// time is the one read at the spawn: read now, the runner's reaper
    /// may have reaped the VMM and the pid name another process (last
    /// read before landing, F2). Anything else: nothing to keep.
    pub(super) fn keep_still_running<'a>(
        &'a self,
        spec: &LaunchVmSpec,
        source: &VmmError,
        slot: &mut Option<super::slots::Slot<'a>>,
        cgroup: &mut Option<super::cgroup::Made<'a>>,
        handed: &mut super::taps::HandedTap<'a>,
    ) {
        let VmmError::StillRunning { pid, started, .. } = *source else {
            return;
        };
        let uid = slot.as_ref().map(|s| s.uid());
        let journaled = started.is_some_and(|started| {
            self.journal_vmm(
                VmmEntry {
                    vm_id: spec.vm_id.clone(),
                    pid,
                    start_time: started,
                    vmm: spec.vmm,
                    uid,
                    cgroup: cgroup.as_ref().map(|c| c.name.clone()),
                    tap: Some(spec.tap.clone()),
                    // Not watched once re-adopted: it never got that far.
                    console_offset: None,
                },
                handed,
            )
            .is_ok()
        });
        if !journaled {
            std::mem::forget(slot.take());
        }
        // Its cgroup stays with it: journaled (in `vm_cgroups` at least),
        // removed once it is seen gone or by the next start's sweep.
        if let Some(c) = cgroup.take() {
            c.keep();
        }
    }

    /// Record the VM's VMM, in place of any earlier entry of the VM (a
    /// launch runs only once that VMM is gone), and, in the same
    /// transaction, its `handed` tap as kept: out of flight only once the
    /// entry naming it is saved, before anyone can read that entry (a
    /// status that finds the VMM gone then gives the tap back; second
    /// hostile read of the tap hand-over, finding B). On an error the tap
    /// stays handed, for the caller's failure to give back.
    pub(super) fn journal_vmm(
        &self,
        entry: VmmEntry,
        handed: &mut super::taps::HandedTap<'_>,
    ) -> Result<(), VmOpError> {
        let mut txn = self.journal.open().map_err(journal_err)?;
        txn.state.vmms.retain(|e| e.vm_id != entry.vm_id);
        txn.state.vmms.push(entry);
        txn.save().map_err(journal_err)?;
        handed.keep();
        Ok(())
    }
}

/// What a restored guest's agent applies for `spec` (`r`'s identity with
/// the launch's MAC; the clock is set again just before it is sent), and
/// the nonce its answer must carry.
pub(super) fn restore_identity(
    spec: &LaunchVmSpec,
    r: &banger_proto::vmops::RestoreSpec,
) -> (banger_vmm::agent::Identity, String) {
    let id = &r.identity;
    let nonce = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{:x}",
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        )
    };
    let identity = banger_vmm::agent::Identity {
        files: id.files.clone(),
        mac: spec.mac.clone(),
        ip: id.ip,
        prefix: id.prefix,
        gateway: id.gateway,
        hostname: id.hostname.clone(),
        clock: std::time::SystemTime::now(),
    };
    (identity, nonce)
}
