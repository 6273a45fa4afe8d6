//! Issue #13 finding 9: e2fsck, resize2fs and debugfs parse disks the
//! owner (and the guest) wrote. They ran as root in dev mode and as the
//! owner in system mode, on a path. Now each runs jailed as a uid that
//! owns nothing, seeing the one disk bound at `/disk` through an ACL
//! granted on root's checked descriptor and revoked afterwards.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use banger_proto::privops::{GrowWorkDisk, PrivOp, VmOp};
use banger_proto::vmops::{GuestFile, GuestFilesSpec, VmDisksSpec};

use crate::lab::*;

/// A stand-in for `tool` that records who runs it into the disk it is
/// given (its last argument) — in place, at a block of its own (`slot`):
/// a jailed tool may not grow its disk — then acts as the owner's most
/// hostile tool would: opens the disk to everyone and leaves a child
/// holding it read-write.
fn stand_in(dir: &Path, tool: &str, slot: u32) -> PathBuf {
    let path = dir.join(tool);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             for a; do d=$a; done\n\
             printf '\\n%s\\n' \"{tool} uid=$(id -u) gid=$(id -g) groups=$(id -G)\" \
             | dd of=\"$d\" bs=4096 seek={slot} conv=notrunc 2>/dev/null\n\
             chmod 0666 \"$d\" 2>/dev/null\n\
             (exec 4<>\"$d\"; exec sleep 300) >/dev/null 2>&1 &\n\
             exit 0\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The `uid=` records the stand-ins left in `disk`: (tool, uid, gid, groups).
fn records(disk: &Path) -> Vec<(String, u32, u32, String)> {
    let bytes = std::fs::read(disk).unwrap();
    String::from_utf8_lossy(&bytes)
        .split(['\n', '\0'])
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let tool = w.next()?.to_string();
            let uid = w.next()?.strip_prefix("uid=")?.parse().ok()?;
            let gid = w.next()?.strip_prefix("gid=")?.parse().ok()?;
            let groups = l.split_once("groups=")?.1.trim().to_string();
            Some((tool, uid, gid, groups))
        })
        .collect()
}

/// Pids of processes whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let real: u32 = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            (real == uid).then_some(pid)
        })
        .collect()
}

#[test]
fn disk_tools_run_jailed_as_a_uid_that_owns_nothing_and_leave_nothing_behind() {
    let lab = Lab::new();
    let tools_dir = lab.root.join("tools");
    std::fs::create_dir(&tools_dir).unwrap();
    std::fs::set_permissions(&tools_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tools: Vec<(PathBuf, &str)> = [
        ("e2fsck", "/usr/sbin/e2fsck"),
        ("resize2fs", "/usr/sbin/resize2fs"),
        ("debugfs", "/usr/sbin/debugfs"),
    ]
    .into_iter()
    .zip(1..)
    .map(|((t, at), slot)| (stand_in(&tools_dir, t, slot), at))
    .collect();
    // A work seed, so making the work disk runs e2fsck and resize2fs.
    let idir = lab.state().join("images").join(IMAGE);
    lab.owner_file(&idir.join("work-seed.ext4"), &vec![0u8; 64 << 10]);
    let vm = "d15c0d15c0d15c0d15c0d15c0d15c0d1";
    lab.owner_dir(&lab.vm_dir(vm));
    let lab = lab.start_with_tools(&tools);
    let owner = lab.owner.uid;

    lab.call(PrivOp::Vm(VmOp::CreateVmDisks(VmDisksSpec {
        vm_id: vm.into(),
        image_id: IMAGE.into(),
        work_disk_bytes: 64 << 20,
        from_snapshot: None,
    })))
    .expect("CreateVmDisks");
    lab.call(PrivOp::Vm(VmOp::GrowWorkDisk(GrowWorkDisk {
        vm_id: vm.into(),
        bytes: 96 << 20,
    })))
    .expect("GrowWorkDisk");
    // The debugfs stand-in writes nothing into the image, so the read-back
    // differs and the op fails; what matters is who ran it.
    let _ = lab.call(PrivOp::Vm(VmOp::WriteGuestFiles(GuestFilesSpec {
        vm_id: vm.into(),
        files: vec![GuestFile {
            path: "/etc/hostname".into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            content: "guest\n".into(),
        }],
    })));

    let work = lab.vm_dir(vm).join("work.ext4");
    let root = lab.vm_dir(vm).join("root.ext4");
    let mut seen = records(&work);
    seen.extend(records(&root));
    let tools_seen: Vec<&str> = seen.iter().map(|r| r.0.as_str()).collect();
    for t in ["e2fsck", "resize2fs", "debugfs"] {
        assert!(tools_seen.contains(&t), "{t} never ran: {seen:?}");
    }
    // The leftovers of a tool that ran as the owner (before the jail): the
    // test's own cleanup, by pid.
    let left_by_owner = processes_of(owner);
    for pid in &left_by_owner {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(*pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    for (tool, uid, gid, groups) in &seen {
        assert!(
            *uid != 0 && *uid != owner && *gid != 0 && *gid != lab.owner.gid,
            "{tool} ran as uid {uid} gid {gid} (owner {owner}): {seen:?}"
        );
        assert_eq!(groups, &gid.to_string(), "{tool}: supplementary groups");
    }
    let jail_uids: std::collections::BTreeSet<u32> = seen.iter().map(|r| r.1).collect();
    for uid in &jail_uids {
        assert_eq!(
            processes_of(*uid),
            Vec::<i32>::new(),
            "left running as {uid}"
        );
    }
    assert_eq!(
        left_by_owner,
        Vec::<i32>::new(),
        "left running as the owner"
    );
    for disk in [&work, &root] {
        let m = std::fs::metadata(disk).unwrap();
        assert_eq!(
            m.mode() & 0o077,
            0,
            "{} opened up: {:o}",
            disk.display(),
            m.mode()
        );
        assert_eq!(m.uid(), owner, "{}", disk.display());
        assert!(
            rustix::fs::getxattr(disk, "system.posix_acl_access", &mut [0u8; 64]).is_err(),
            "{} keeps an ACL",
            disk.display()
        );
    }
}

/// `/proc/<pid>/status` field `key`.
fn status_field(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

/// The `bangerd-root` processes that are `pid` or below it.
fn helpers_under(pid: i32) -> Vec<i32> {
    let ppid = |p: i32| status_field(p, "PPid").parse::<i32>().unwrap_or(0);
    let below = |mut p: i32| {
        while p > 1 {
            if p == pid {
                return true;
            }
            p = ppid(p);
        }
        false
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "bangerd-root")
                && below(p)
        })
        .collect()
}

/// Hostile review F1: the real helper runs under one seccomp filter more
/// than it started with (the spawner, forked before it, holds exactly
/// those), and the spawner keeps only `CAP_SYS_ADMIN`, `CAP_NET_ADMIN`
/// (the route socket it opens in a Firecracker jail's network namespace),
/// `CAP_SETUID` and `CAP_SETGID`.
#[test]
fn the_helper_is_locked_out_of_mounts_and_its_spawner_holds_four_capabilities() {
    let lab = Lab::new().start();
    let top = lab.helper.as_ref().unwrap().proc.pid() as i32;
    let found = helpers_under(top);
    let ppid = |p: i32| status_field(p, "PPid").parse::<i32>().unwrap();
    let spawners: Vec<i32> = found
        .iter()
        .copied()
        .filter(|&p| found.contains(&ppid(p)))
        .collect();
    let helpers: Vec<i32> = found
        .iter()
        .copied()
        .filter(|p| !spawners.contains(p))
        .collect();
    assert_eq!((helpers.len(), spawners.len()), (1, 1), "{found:?}");
    let (helper, spawner) = (helpers[0], spawners[0]);
    assert_eq!(ppid(spawner), helper);
    let filters = |p: i32| status_field(p, "Seccomp_filters").parse::<u32>().unwrap();
    assert_eq!(filters(helper), filters(spawner) + 1);
    assert_eq!(status_field(helper, "Seccomp"), "2");
    assert_eq!(status_field(helper, "NoNewPrivs"), "1");
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(status_field(spawner, set), "00000000002010c0", "{set}");
    }
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(status_field(spawner, set), "0000000000000000", "{set}");
    }
}
