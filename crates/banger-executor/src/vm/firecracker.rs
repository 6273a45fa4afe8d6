//! A Firecracker launch (docs/jail.md "Firecracker jailed"): Firecracker
//! runs jailed as the VM slot uid the launch reserved, pid 1 of its own
//! namespaces, with every file a descriptor root opened and checked
//! (`VmHost::fc_files`); its drives reach it through a journaled ACL
//! grant to the slot uid that lasts only for the launch.

use std::time::Duration;

use banger_proto::layout::{RUN_DIR, SERIAL_LOG, SNAPSHOT_MEMORY, SNAPSHOT_VMSTATE};
use banger_proto::vmops::LaunchVmSpec;
use banger_vmm::LaunchSpec;
use banger_vmm::VmmError;
use banger_vmm::dir::{OwnerDir, Peer};
use banger_vmm::driver::{RunningVmm, VmmDriver};
use banger_vmm::firecracker::snapshot::{Incoming, RestoreFiles};
use banger_vmm::firecracker::{ApiClient, FirecrackerDriver, READY_PORT, ReadyListener, Start};
use rustix::fs::OFlags;

use super::VmHost;
use super::cgroup::{Made, VmLimits};
use super::error::{VmOpError, io};
use super::slots::Slot;
use super::taps::HandedTap;
use super::vmm::TapDown;

impl VmHost {
    /// Launch Firecracker jailed as `slot`'s uid (`ls.run_as`: the slot's
    /// ids), in `run` (the slot's fresh `run/` of the VM directory
    /// `vm_dir`), and the tap handed to the slot for this launch. Its
    /// cgroup, when made, is left in `cgroup`; a launch failing with
    /// `VmmError::StillRunning` is handed to
    /// [`VmHost::keep_still_running`], as QEMU's is.
    pub(super) fn launch_firecracker<'a>(
        &'a self,
        spec: &LaunchVmSpec,
        ls: &LaunchSpec,
        (vm_dir, run): (&OwnerDir, OwnerDir),
        slot: &mut Option<Slot<'a>>,
        cgroup: &mut Option<Made<'a>>,
    ) -> Result<(Box<dyn RunningVmm>, HandedTap<'a>), VmOpError> {
        let unavailable = |reason: String| VmOpError::VmmUnavailable {
            vmm: "firecracker",
            reason,
        };
        let binary = self
            .vmm_binary(banger_proto::vmops::VmmKind::Firecracker)
            .map_err(unavailable)?;
        let failed = |source| VmOpError::Launch {
            vm_id: spec.vm_id.clone(),
            source,
        };
        let ids = ls.run_as.ok_or_else(|| VmOpError::Invalid {
            what: "launch",
            value: spec.vm_id.clone(),
            reason: "a jailed Firecracker needs its slot's ids".into(),
        })?;
        // Bound before the launch, with the slot's ids: Firecracker
        // forwards the guest's connection only to a socket that already
        // listens.
        let listener = run
            .try_clone()
            .and_then(|dir| ReadyListener::bind_in(dir, ls, READY_PORT))
            .map_err(failed)?;
        // Firecracker's stdout; root reads an early exit's tail from it.
        let serial = vm_dir
            .open_append(SERIAL_LOG, 0o640, self.tool_ids())
            .map_err(failed)?;
        let (mut files, disks) = self.fc_files(ls, serial, run)?;
        // A restore: the snapshot's state and memory (each the owner's
        // regular file with one link), bound read-only in the jail, and
        // the identity the guest's agent applies once they are loaded.
        // Root's own reopenings of the same inodes carry the slot's grant.
        let mut restore = None;
        if let Some(r) = &spec.restore {
            let (state, _) = self.snapshot_file(&r.snapshot_id, SNAPSHOT_VMSTATE)?;
            let (memory, _) = self.snapshot_file(&r.snapshot_id, SNAPSHOT_MEMORY)?;
            let granted = [(&state, SNAPSHOT_VMSTATE), (&memory, SNAPSHOT_MEMORY)]
                .map(|(f, name)| (f.try_clone(), self.snapshot_path(&r.snapshot_id, name)));
            let mut held = Vec::new();
            for (f, path) in granted {
                held.push((f.map_err(io("opening", &path))?, path));
            }
            files.restore = Some(RestoreFiles { state, memory });
            let (identity, nonce) = super::vmm::restore_identity(spec, r);
            restore = Some((
                held,
                Incoming {
                    identity,
                    nonce,
                    agent_timeout: banger_vmm::qemu::AGENT_TIMEOUT,
                },
            ));
        }
        let limits = VmLimits {
            memory: banger_vmm::firecracker::memory_limit(ls),
            processes: banger_vmm::firecracker::process_limit(ls),
            vcpus: u32::from(ls.vcpus),
        };
        if let Some((made, procs)) = self.make_vm_cgroup(&spec.vm_id, &limits)? {
            files.cgroup = Some(procs);
            *cgroup = Some(made);
        }
        // Firecracker opens its tap by name, as the slot's ids: the idle
        // tap is root's, so it is handed to those ids (tun owner and
        // group), checked against the journal, just before Firecracker
        // starts. A failed launch gives it back as `handed` drops (after
        // the driver killed Firecracker).
        let mut handed = self.hand_tap(&spec.tap, ids)?;
        let reserved = slot.as_ref().ok_or_else(|| VmOpError::Invalid {
            what: "launch",
            value: spec.vm_id.clone(),
            reason: "a jailed Firecracker needs its reserved slot".into(),
        })?;
        let (held, incoming) = match restore {
            Some((held, incoming)) => (held, Some(incoming)),
            None => (Vec::new(), None),
        };
        // Firecracker opens each drive once, at `PUT /drives`, as the
        // slot uid: the slot is granted each for the launch only.
        let mut grants = Vec::new();
        for (d, disk) in ls.drives.iter().zip(&disks) {
            grants.push(self.grant_disk(disk, &d.path, Some(reserved), !d.read_only)?);
        }
        // Firecracker opens the snapshot's files once, at `PUT
        // /snapshot/load`: read-only, for the launch only.
        for (f, path) in &held {
            grants.push(self.grant_disk(f, path, Some(reserved), false)?);
        }
        // Firecracker's jail has a network namespace of its own: the tap
        // moves in for `PUT /network-interfaces` (a restore's `PUT
        // /snapshot/load`) and back (same index, re-enslaved to its
        // journaled bridge, IPv6 off, and up, unless restoring: then up
        // once the agent has applied the new identity, so nobody reaches
        // the clone under its source's address and MAC).
        let mut tap = self.fc_tap(&spec.tap)?;
        let mut down = None;
        if incoming.is_some() {
            tap.keep_down = true;
            down = Some(TapDown::new(&self.net, &spec.tap)?);
        }
        let launched = FirecrackerDriver::new(binary).start(
            ls,
            Start {
                files,
                tap: &mut tap,
                listener,
                incoming,
            },
        );
        // `start` returns once `InstanceStart` is answered (or
        // Firecracker is killed): it opened its drives at `PUT /drives`
        // and keeps those descriptors, so the grants go now, launched or
        // not.
        drop(grants);
        drop(held);
        match launched {
            Ok(mut vm) => {
                if let Some(d) = down.take()
                    && let Err(e) = d.up()
                {
                    // Not reachable as itself: not kept.
                    if vm.kill().is_err() {
                        // Maybe still running as its slot uid.
                        if let Some(s) = slot.take() {
                            std::mem::forget(s);
                        }
                    }
                    return Err(e);
                }
                Ok((vm, handed))
            }
            Err(source) => {
                if matches!(source, VmmError::StillRunning { .. })
                    && let Some(d) = down.as_mut()
                {
                    // It may still run the clone: the tap stays down.
                    d.keep_down();
                }
                self.keep_still_running(spec, &source, slot, cgroup, &mut handed);
                Err(failed(source))
            }
        }
    }

    /// The API of VM `vm_id`'s jailed Firecracker re-adopted as `pid`
    /// running as slot `uid`, for its graceful stop: the VM's `run/`
    /// opened beneath the VM directory without links or mounts, only
    /// while it is that slot's (uid, 0700), and a client that talks to the
    /// socket there only when `SO_PEERCRED` names `pid` and `uid`
    /// (`OwnerDir::connect`). `None` when any of it fails: the stop then
    /// waits out its timeout and kills, as for any adopted VMM.
    pub(super) fn adopted_api(&self, vm_id: &str, uid: u32, pid: u32) -> Option<ApiClient> {
        let vm_dir = self.owner_vm_dir(vm_id).ok()?;
        let fd = rustix::fs::openat2(
            &vm_dir,
            RUN_DIR,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            banger_vmm::dir::RESOLVE,
        )
        .ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        if st.st_uid != uid || st.st_mode & 0o7777 != 0o700 {
            return None;
        }
        let run = OwnerDir::from_fd(fd, vm_dir.join(RUN_DIR));
        ApiClient::new(
            run,
            banger_vmm::API_SOCKET,
            Peer { uid, pid },
            Duration::from_secs(2),
        )
        .ok()
    }
}
