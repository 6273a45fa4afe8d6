//! The character devices a jail admits (`/dev/kvm`, `/dev/net/tun`),
//! each only at its place and only as the node itself.

use std::os::fd::BorrowedFd;

use rustix::fs::OFlags;

/// Where [`Jail::bind_kvm`] places `/dev/kvm` in the jail's root.
pub(super) const KVM_AT: &str = "dev/kvm";
/// Where [`Jail::bind_tun`] places `/dev/net/tun` in the jail's root.
pub(super) const TUN_AT: &str = "dev/net/tun";

/// The character devices a jail (and the spawner) admits, each only at
/// its place: (place in the jail's root, what it is called in errors,
/// major, minor) (`Documentation/admin-guide/devices.txt`: the misc
/// major 10; `KVM_MINOR` 232, `TUN_MINOR` 200).
const JAIL_DEVICES: [(&str, &str, u32, u32); 2] =
    [(KVM_AT, "KVM", 10, 232), (TUN_AT, "tun", 10, 200)];

/// Whether `at` is the place of one of [`JAIL_DEVICES`].
pub(super) fn is_device_place(at: &str) -> bool {
    JAIL_DEVICES.iter().any(|d| d.0 == at)
}

/// Refused unless `at` is one of [`JAIL_DEVICES`]' places and `fd` is
/// that character device, opened `O_PATH|O_NOFOLLOW`: the node itself,
/// not a link's target, and a descriptor that never reached the driver.
/// The only character devices a jail (and the spawner) admits.
pub(super) fn check_device(fd: BorrowedFd<'_>, at: &str) -> std::io::Result<()> {
    let Some(&(_, what, want_major, want_minor)) = JAIL_DEVICES.iter().find(|d| d.0 == at) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("/{at} is no place of a jail device"),
        ));
    };
    let st = rustix::fs::fstat(fd)?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    if kind != rustix::fs::FileType::CharacterDevice || (major, minor) != (want_major, want_minor) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a {what} bind of a {kind:?} {major}:{minor}, \
                 not the character device {want_major}:{want_minor}"
            ),
        ));
    }
    let opened = rustix::fs::fcntl_getfl(fd)?;
    if !opened.contains(OFlags::PATH | OFlags::NOFOLLOW) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a {what} bind not opened O_PATH|O_NOFOLLOW (flags {opened:?})"),
        ));
    }
    Ok(())
}
