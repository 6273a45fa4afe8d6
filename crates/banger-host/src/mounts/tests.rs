//! The mount lookup against real file systems: a temp dir's own, and a
//! tmpfs and a FUSE file system mounted over it in a mount namespace of
//! the test thread's own (gone with the thread; nothing propagates to the
//! host). The parsing against `mountinfo` lines as the kernel writes them.

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::testing::{in_private_mount_ns, mount_fuse_without_daemon, mount_new};
use super::*;

fn open_path(p: &Path) -> OwnedFd {
    rustix::fs::open(
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

#[test]
fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
    // No optional fields.
    assert_eq!(
        parse_mountinfo_line("36 35 98:0 / /mnt1 rw,noatime - ext3 /dev/root rw,errors=continue"),
        Some(MountEntry {
            id: 36,
            mount_point: "/mnt1".into(),
            fs_type: "ext3".into(),
        })
    );
    // Optional fields before ` - `, a space and a backslash in the mount
    // point, a subtype in the type.
    assert_eq!(
        parse_mountinfo_line(
            "512 29 0:71 / /home/o/my\\040state\\134dir rw,nosuid,nodev shared:290 master:1 - \
             fuse.sshfs o@h:/x rw,user_id=1000,group_id=1000"
        ),
        Some(MountEntry {
            id: 512,
            mount_point: "/home/o/my state\\dir".into(),
            fs_type: "fuse.sshfs".into(),
        })
    );
    // A `-` as the mount point is not the separator.
    assert_eq!(
        parse_mountinfo_line("7 1 0:5 / - rw shared:2 - tmpfs tmpfs rw").map(|m| m.fs_type),
        Some("tmpfs".into())
    );
    // A truncated line, a missing separator, a non-numeric id.
    for bad in [
        "",
        "36 35 98:0 / /mnt1",
        "36 35 98:0 / /mnt1 rw shared:1 ext3 /dev/root rw",
        "x 35 98:0 / /mnt1 rw - ext3 /dev/root rw",
    ] {
        assert_eq!(parse_mountinfo_line(bad), None, "{bad:?}");
    }
    let table = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
                 2 1 0:40 / /var/lib/banger rw shared:5 - fuse /dev/fuse rw\n";
    let find = |id| find_mount(table.as_bytes(), id).unwrap();
    assert_eq!(find(2).map(|m| m.fs_type), Some("fuse".into()));
    assert_eq!(find(3), None);
    // The id is the whole first field: mount 2 is not found in 21's line.
    assert_eq!(
        find_mount(&b"21 1 0:4 / /x rw - tmpfs t rw\n"[..], 2),
        Ok(None)
    );
}

#[test]
fn fuse_types_are_refused_and_kernel_file_systems_are_not() {
    for t in [
        "fuse",
        "fuseblk",
        "fuse.sshfs",
        "fuse.gocryptfs",
        "fuseblk.ntfs",
        "fuseblk.exfat",
    ] {
        assert!(is_fuse(t), "{t}");
    }
    for t in [
        "fusectl",
        "tmpfs",
        "ext4",
        "xfs",
        "btrfs",
        "overlay",
        "nfs4",
        "zfs",
        "fusectl.x",
        "fuser",
        "fuseblkx",
    ] {
        assert!(!is_fuse(t), "{t}");
    }
}

/// Third review: `mountinfo` was read whole on every state-directory
/// open, and an owner can fill it (a thousand FUSE mounts with long
/// escaped mount points). A line that is not ours is passed over without
/// being kept, the lookup stops at its line, and the whole read is capped.
#[test]
fn mountinfo_is_read_line_by_line_within_caps() {
    let ours = b"9 1 0:40 / /var/lib/banger rw - fuse.x /dev/fuse rw\n";
    // A non-matching line far longer than a line may be kept, then ours.
    let huge = std::io::repeat(b'a').take(32 << 20);
    let table = (&b"7 1 0:5 /"[..])
        .chain(huge)
        .chain(&b" /x rw - tmpfs t rw\n"[..])
        .chain(&ours[..]);
    let mut kept = Vec::new();
    let m = scan(std::io::BufReader::new(table), 9, &mut kept).unwrap();
    assert_eq!(m.map(|m| m.fs_type), Some("fuse.x".into()));
    assert!(
        kept.capacity() <= 4 * MAX_LINE,
        "{} bytes kept",
        kept.capacity()
    );
    // Our own line longer than that is refused, not cut.
    let long = (&b"9 1 0:40 / /"[..])
        .chain(std::io::repeat(b'b').take(MAX_LINE as u64))
        .chain(&b" rw - fuse.x /dev/fuse rw\n"[..]);
    let e = find_mount(std::io::BufReader::new(long), 9).unwrap_err();
    assert!(e.contains(&MAX_LINE.to_string()), "{e}");
    // Past the total cap (short lines, none ours), the lookup refuses,
    // naming the cap, though ours comes after.
    let line = b"7 1 0:5 / /x rw - tmpfs t rw\n";
    let lines = (MAX_TABLE as usize).div_ceil(line.len()) + 1;
    let filler = line.repeat(lines);
    let table = (&filler[..]).chain(&ours[..]);
    let e = find_mount(std::io::BufReader::new(table), 9).unwrap_err();
    assert!(e.contains(&MAX_TABLE.to_string()), "{e}");
    // Within it, found.
    let fits = line.repeat(1000);
    let table = (&fits[..]).chain(&ours[..]);
    assert!(
        find_mount(std::io::BufReader::new(table), 9)
            .unwrap()
            .is_some()
    );
}

/// A tmpfs over the directory (an admin's ordinary mount) is found as the
/// mount it is on and passes; the host never sees it.
#[test]
fn a_kernel_mount_over_the_state_dir_passes() {
    let dir = tempfile::tempdir().unwrap();
    let host = open_path(dir.path());
    check_state_dir(&host).unwrap();
    let host_mount = mount_of(host.as_fd()).unwrap();
    in_private_mount_ns(|| {
        mount_new("tmpfs", dir.path(), 0, "size=1m");
        let over = open_path(dir.path());
        let m = mount_of(over.as_fd()).unwrap();
        assert_eq!(
            (m.fs_type.as_str(), Path::new(&m.mount_point)),
            ("tmpfs", dir.path())
        );
        assert_ne!(m.id, host_mount.id);
        check_state_dir(&over).unwrap();
    });
    assert_eq!(mount_of(open_path(dir.path()).as_fd()).unwrap(), host_mount);
}

/// A real FUSE mount with no daemon behind it: mounted for another uid
/// without `allow_other`, so the kernel sends none of root's requests to
/// it — the check must come out without any answer, naming the type and
/// the mount point.
#[test]
fn a_fuse_mount_is_refused_without_asking_its_daemon() {
    let dir = tempfile::tempdir().unwrap();
    in_private_mount_ns(|| {
        let _fuse = mount_fuse_without_daemon(dir.path(), 65534, 65534);
        let over = open_path(dir.path());
        let err = check_state_dir(&over).unwrap_err();
        assert_eq!(
            err,
            StateDirRefusal::Fuse {
                fs_type: "fuse".into(),
                mount_point: dir.path().display().to_string(),
            }
        );
        assert!(
            err.to_string()
                .contains("FUSE file system (fuse, mounted at /"),
            "{err}"
        );
    });
}
