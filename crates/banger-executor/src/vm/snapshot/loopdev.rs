//! Loop devices and the device-mapper probe, by ioctl, without any path
//! to the backing file.
//!
//! `losetup FILE` canonicalizes its argument and reopens the file by name,
//! so a file handed over as `/proc/self/fd/<n>` is re-resolved through a
//! directory the owner controls. Here the descriptor the executor opened
//! (beneath the state dir, no symlinks) is given to the kernel itself:
//! `LOOP_CTL_GET_FREE` on `/dev/loop-control`, then `LOOP_CONFIGURE` on
//! `/dev/loop<N>` with that descriptor. `LOOP_GET_STATUS64` reports the
//! backing file's device and inode, which is how a loop device is
//! recognised as ours (before detaching, and right after attaching).
//!
//! The structures are the kernel's `<linux/loop.h>` and
//! `<linux/dm-ioctl.h>` layouts (uapi, stable).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

const LOOP_MAJOR: u32 = 7;

const LOOP_SET_STATUS64_NAME_SIZE: usize = 64;
const LOOP_CLR_FD: Opcode = 0x4C01;
const LOOP_GET_STATUS64: Opcode = 0x4C05;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LOOP_SET_STATUS64_NAME_SIZE],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;

/// `struct dm_ioctl`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; DM_NAME_LEN],
    uuid: [u8; DM_UUID_LEN],
    data: [u8; 7],
}

const _: () = assert!(std::mem::size_of::<DmIoctl>() == 312);

/// `DM_VERSION`: `_IOWR(0xfd, 0, struct dm_ioctl)`.
const DM_VERSION: Opcode = rustix::ioctl::opcode::read_write::<DmIoctl>(0xfd, 0);

/// One raw ioctl whose argument is a pointer or an integer, returning the
/// syscall's value.
struct Raw {
    op: Opcode,
    arg: *mut std::ffi::c_void,
}

// SAFETY: every `Raw` built below pairs an opcode with the argument its
// driver expects (a pointer to a live, correctly sized `#[repr(C)]` value,
// or an integer/null where the ioctl takes none); IS_MUTATING is true, so
// the kernel may write through the pointer.
unsafe impl Ioctl for Raw {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.op
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        self.arg
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

fn zeroed_info() -> LoopInfo64 {
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; LOOP_SET_STATUS64_NAME_SIZE],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

/// A file as the kernel identifies a loop device's backing file: its
/// filesystem's device number (in the kernel's `huge_encode_dev` form, as
/// `LOOP_GET_STATUS64` reports it) and its inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backing {
    pub dev: u64,
    pub ino: u64,
}

/// The kernel's `new_encode_dev`/`huge_encode_dev`.
pub(crate) fn encode_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

impl Backing {
    /// A `stat` device number (`st_dev`) in the kernel's encoding.
    pub(crate) fn of_dev(st_dev: u64) -> u64 {
        encode_dev(rustix::fs::major(st_dev), rustix::fs::minor(st_dev))
    }
}

/// The identity of an open file.
pub(crate) fn identity(f: &File) -> io::Result<Backing> {
    let st = rustix::fs::fstat(f)?;
    Ok(Backing {
        dev: Backing::of_dev(st.st_dev),
        ino: st.st_ino,
    })
}

/// Open `/dev/loop<n>` and make sure it is a loop block device.
fn open_loop(n: u32) -> io::Result<File> {
    let path = format!("/dev/loop{n}");
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice
        || rustix::fs::major(st.st_rdev) != LOOP_MAJOR
        || rustix::fs::minor(st.st_rdev) != n
    {
        return Err(io::Error::other(format!("{path} is not loop device {n}")));
    }
    Ok(File::from(fd))
}

/// `LOOP_CTL_GET_FREE`: the number of a free loop device (made if needed).
pub(crate) fn get_free() -> io::Result<u32> {
    let ctl = rustix::fs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the number.
    let n = unsafe {
        rustix::ioctl::ioctl(
            &ctl,
            Raw {
                op: LOOP_CTL_GET_FREE,
                arg: std::ptr::null_mut(),
            },
        )?
    };
    u32::try_from(n).map_err(|_| io::Error::other(format!("LOOP_CTL_GET_FREE returned {n}")))
}

/// `LOOP_CONFIGURE` loop device `n` on `file` (the descriptor itself, no
/// path). `label` only fills the informational `lo_file_name`. `EBUSY`
/// means someone else took the device first.
pub(crate) fn configure(n: u32, file: &File, read_only: bool, label: &Path) -> io::Result<()> {
    let dev = open_loop(n)?;
    let mut info = zeroed_info();
    if read_only {
        info.lo_flags |= LO_FLAGS_READ_ONLY;
    }
    let name = label.as_os_str().as_encoded_bytes();
    let len = name.len().min(LOOP_SET_STATUS64_NAME_SIZE - 1);
    info.lo_file_name[..len].copy_from_slice(&name[..len]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file.as_fd());
    let mut cfg = LoopConfig {
        fd: u32::try_from(fd).map_err(|_| io::Error::other("negative descriptor"))?,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`; `cfg` lives
    // across the call and `file` keeps the descriptor open.
    unsafe {
        rustix::ioctl::ioctl(
            &dev,
            Raw {
                op: LOOP_CONFIGURE,
                arg: (&raw mut cfg).cast(),
            },
        )?;
    }
    Ok(())
}

/// `LOOP_GET_STATUS64`: the backing file of loop device `n`, `None` when
/// it is not attached (or does not exist).
pub(crate) fn status(n: u32) -> io::Result<Option<Backing>> {
    let dev = match open_loop(n) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut info = zeroed_info();
    // SAFETY: LOOP_GET_STATUS64 writes a `struct loop_info64` into `info`.
    let r = unsafe {
        rustix::ioctl::ioctl(
            &dev,
            Raw {
                op: LOOP_GET_STATUS64,
                arg: (&raw mut info).cast(),
            },
        )
    };
    match r {
        Ok(_) => Ok(Some(Backing {
            dev: info.lo_device,
            ino: info.lo_inode,
        })),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `LOOP_CLR_FD` on loop device `n`. The kernel defers the detach while
/// the device is open elsewhere.
pub(crate) fn clear(n: u32) -> io::Result<()> {
    let dev = open_loop(n)?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    let r = unsafe {
        rustix::ioctl::ioctl(
            &dev,
            Raw {
                op: LOOP_CLR_FD,
                arg: std::ptr::null_mut(),
            },
        )
    };
    match r {
        Ok(_) | Err(rustix::io::Errno::NXIO) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `DM_VERSION` on `/dev/mapper/control`: the first thing `dmsetup` does,
/// and refused (`EACCES`) to a process without `CAP_SYS_ADMIN`.
pub(crate) fn dm_version() -> io::Result<[u32; 3]> {
    let ctl = rustix::fs::open(
        "/dev/mapper/control",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let mut req = DmIoctl {
        version: [4, 0, 0],
        data_size: std::mem::size_of::<DmIoctl>() as u32,
        data_start: std::mem::size_of::<DmIoctl>() as u32,
        target_count: 0,
        open_count: 0,
        flags: 0,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: [0; DM_NAME_LEN],
        uuid: [0; DM_UUID_LEN],
        data: [0; 7],
    };
    // SAFETY: DM_VERSION reads and writes one `struct dm_ioctl` of
    // `data_size` bytes.
    unsafe {
        rustix::ioctl::ioctl(
            &ctl,
            Raw {
                op: DM_VERSION,
                arg: (&raw mut req).cast(),
            },
        )?;
    }
    Ok(req.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_the_kernels() {
        // new_encode_dev(MKDEV(8, 1)) and a minor above 255.
        assert_eq!(encode_dev(8, 1), 0x801);
        assert_eq!(encode_dev(259, 0x12345), 0x12310345);
        assert_eq!(DM_VERSION, 0xc138fd00);
    }
}
