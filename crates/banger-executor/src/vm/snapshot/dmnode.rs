//! Opening a VM's dm-snapshot device for a jailed tool without following
//! a link: `/dev/mapper/<name>` is a symlink to `../dm-N` wherever udev
//! runs, so the device is found by the number device-mapper gave it
//! (sysfs) and its node `/dev/dm-N` opened with `O_NOFOLLOW` and checked
//! to be that device.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

/// Open the dm device `name` read-only, given where sysfs and `/dev` are
/// (`/sys`, `/dev`): the kernel name and number device-mapper gave it are
/// read from sysfs, and the node `/dev/<kernel name>` is opened without
/// following a link and kept only when it is that block device.
///
/// The device can be removed between the lookup and the open and its
/// number taken by another dm device, so the name is read again, by the
/// number of the device opened, once the descriptor holds it (device-mapper
/// refuses to remove an open device: `EBUSY`), and must still be `name`.
pub(crate) fn open_dm_device(sys: &Path, dev: &Path, name: &str) -> io::Result<File> {
    let file = open_block_node(sys, dev, &dm_kernel_name(sys, name)?)?;
    let rdev = rustix::fs::fstat(&file)?.st_rdev;
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let path = sys.join(format!("dev/block/{major}:{minor}/dm/name"));
    let now = std::fs::read_to_string(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("device {major}:{minor} is no longer dm device {name}: {e}"),
        )
    })?;
    let now = now.trim_end_matches('\n');
    if now != name {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("device {major}:{minor} is dm device {now:?} now, not {name}"),
        ));
    }
    Ok(file)
}

/// The kernel name (`dm-N`) of the dm device named `name`: the entry of
/// `<sys>/block` whose `dm/name` holds it.
fn dm_kernel_name(sys: &Path, name: &str) -> io::Result<String> {
    for e in std::fs::read_dir(sys.join("block"))? {
        let e = e?;
        let Ok(text) = std::fs::read_to_string(e.path().join("dm/name")) else {
            continue; // not a dm device
        };
        if text.trim_end_matches('\n') == name {
            return e.file_name().into_string().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a non-UTF-8 block device name")
            });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no device-mapper device named {name}"),
    ))
}

/// Open the block device the kernel names `kname` as its node beneath
/// `dev`, read-only, refusing a symlink and any node whose device number
/// is not the one `<sys>/block/<kname>/dev` gives.
pub(crate) fn open_block_node(sys: &Path, dev: &Path, kname: &str) -> io::Result<File> {
    let plain = !kname.is_empty()
        && kname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("block device name {kname:?}"),
        ));
    }
    let numbers = std::fs::read_to_string(sys.join("block").join(kname).join("dev"))?;
    let (major, minor) = numbers
        .trim_end()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sysfs device number {numbers:?} of {kname}"),
            )
        })?;
    let fd = rustix::fs::open(
        dev.join(kname),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice
        || st.st_rdev != rustix::fs::makedev(major, minor)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not block device {major}:{minor}: wrong type or device number",
                dev.join(kname).display()
            ),
        ));
    }
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt as _;

    use super::*;
    use crate::vm::snapshot::loopdev;

    /// A loop device attached read-only to a 1 MiB file, detached on drop.
    struct Loop {
        n: u32,
        _file: File,
    }

    impl Loop {
        fn attach(dir: &Path) -> Loop {
            let path = dir.join("backing");
            let file = File::create(&path).unwrap();
            file.set_len(1 << 20).unwrap();
            for _ in 0..5 {
                let n = loopdev::get_free().unwrap();
                match loopdev::configure(n, &file, true, &path) {
                    Ok(()) => return Loop { n, _file: file },
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                    Err(e) => panic!("attaching loop{n}: {e}"),
                }
            }
            panic!("no free loop device");
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = loopdev::clear(self.n);
        }
    }

    const NAME: &str = "banger-0123456789abcdef0123456789abcdef";

    /// A sysfs and a `/dev` laid out as on a udev host for a dm device
    /// `NAME` — here the real loop device `kname` with its real number, the
    /// same lookup by device number a dm device takes.
    fn udev_host(
        root: &Path,
        kname: &str,
        numbers: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let (sys, dev) = (root.join("sys"), root.join("dev"));
        std::fs::create_dir_all(sys.join("block").join(kname).join("dm")).unwrap();
        std::fs::write(
            sys.join("block").join(kname).join("dm/name"),
            format!("{NAME}\n"),
        )
        .unwrap();
        std::fs::write(sys.join("block").join(kname).join("dev"), numbers).unwrap();
        // `/sys/dev/block/<major>:<minor>` names the device by number.
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../block/{kname}"),
            sys.join("dev/block").join(numbers.trim_end()),
        )
        .unwrap();
        // Other block devices: a dm device of someone else, and a disk.
        std::fs::create_dir_all(sys.join("block/dm-90/dm")).unwrap();
        std::fs::write(sys.join("block/dm-90/dm/name"), "vg0-root\n").unwrap();
        std::fs::write(sys.join("block/dm-90/dev"), "253:90\n").unwrap();
        std::fs::create_dir_all(sys.join("block/sda")).unwrap();
        std::fs::create_dir_all(dev.join("mapper")).unwrap();
        std::os::unix::fs::symlink(format!("../{kname}"), dev.join("mapper").join(NAME)).unwrap();
        (sys, dev)
    }

    fn rdev_of(path: &Path) -> u64 {
        rustix::fs::stat(path).unwrap().st_rdev
    }

    /// `udev_host` for the real loop device `lo`, with its node in the
    /// fake `/dev` made as udev makes it: the host's number.
    struct Lab {
        kname: String,
        real: std::path::PathBuf,
        numbers: String,
        sys: std::path::PathBuf,
        dev: std::path::PathBuf,
    }

    impl Lab {
        fn new(root: &Path, lo: &Loop) -> Lab {
            let kname = format!("loop{}", lo.n);
            let real = Path::new("/dev").join(&kname);
            let numbers =
                std::fs::read_to_string(Path::new("/sys/block").join(&kname).join("dev")).unwrap();
            let (sys, dev) = udev_host(root, &kname, &numbers);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dev.join(&kname),
                rustix::fs::FileType::BlockDevice,
                Mode::from_raw_mode(0o600),
                rdev_of(&real),
            )
            .unwrap();
            Lab {
                kname,
                real,
                numbers,
                sys,
                dev,
            }
        }
    }

    #[test]
    fn a_dm_device_behind_a_udev_symlink_is_opened_by_its_number() {
        let tmp = tempfile::tempdir().unwrap();
        let lo = Loop::attach(tmp.path());
        let Lab {
            kname,
            real,
            numbers,
            sys,
            dev,
        } = Lab::new(tmp.path(), &lo);
        let f = open_dm_device(&sys, &dev, NAME).unwrap();
        let st = rustix::fs::fstat(&f).unwrap();
        assert!(f.metadata().unwrap().file_type().is_block_device());
        assert_eq!(st.st_rdev, rdev_of(&real));
        // Unknown to device-mapper: refused.
        let other = "banger-ffffffffffffffffffffffffffffffff";
        assert!(open_dm_device(&sys, &dev, other).is_err());
        // The node with another number than sysfs says: refused.
        std::fs::write(sys.join("block").join(&kname).join("dev"), "7:999999\n").unwrap();
        let err = open_dm_device(&sys, &dev, NAME).unwrap_err();
        assert!(err.to_string().contains("device number"), "{err}");
        std::fs::write(sys.join("block").join(&kname).join("dev"), &numbers).unwrap();
        // The node a symlink: refused, not followed.
        std::fs::remove_file(dev.join(&kname)).unwrap();
        std::os::unix::fs::symlink(&real, dev.join(&kname)).unwrap();
        assert!(open_dm_device(&sys, &dev, NAME).is_err());
    }

    /// Hostile review F-a: the owner deletes the VM between the lookup by
    /// name and the open, and another dm device (another VM's, a host LVM
    /// volume) takes the freed number. The device opened is then named
    /// otherwise in `/sys/dev/block/<major>:<minor>/dm/name`: refused.
    #[test]
    fn a_device_renamed_between_the_lookup_and_the_open_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let lo = Loop::attach(tmp.path());
        let lab = Lab::new(tmp.path(), &lo);
        let (sys, dev) = (&lab.sys, &lab.dev);
        // By the time of the open the number is another dm device's.
        let by_number = sys.join("dev/block").join(lab.numbers.trim_end());
        std::fs::remove_file(&by_number).unwrap();
        std::fs::create_dir_all(by_number.join("dm")).unwrap();
        std::fs::write(by_number.join("dm/name"), "vg0-home\n").unwrap();
        let err = open_dm_device(sys, dev, NAME).unwrap_err();
        assert!(err.to_string().contains("vg0-home"), "{err}");
        // The number no device-mapper device's any more: refused too.
        std::fs::remove_dir_all(by_number.join("dm")).unwrap();
        assert!(open_dm_device(sys, dev, NAME).is_err());
    }

    #[test]
    fn a_block_node_is_found_by_number_in_the_real_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        let lo = Loop::attach(tmp.path());
        let kname = format!("loop{}", lo.n);
        let f = open_block_node(Path::new("/sys"), Path::new("/dev"), &kname).unwrap();
        assert_eq!(
            rustix::fs::fstat(&f).unwrap().st_rdev,
            rdev_of(&Path::new("/dev").join(&kname))
        );
        for bad in ["", "..", "loop0/../sda", "a b"] {
            assert!(
                open_block_node(Path::new("/sys"), Path::new("/dev"), bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
