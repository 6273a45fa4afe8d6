//! The device binds (`/dev/kvm`, `/dev/net/tun`) across the wire: the
//! device alone, at its one place.

use super::*;

/// A character device node `major:minor` at `name` in `dir`, opened
/// `O_PATH` (the spawner only `fstat`s and binds it).
pub(super) fn char_node(dir: &std::path::Path, name: &str, major: u32, minor: u32) -> OwnedFd {
    let path = dir.join(name);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
    rustix::fs::open(
        &path,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
    )
    .unwrap()
}

/// A KVM QEMU's jail binds `/dev/kvm` (character device 10:232) at
/// `/dev/kvm`: the spawner, which refuses character-device binds, takes
/// exactly that device at exactly that place.
#[test]
fn the_kvm_device_alone_crosses_the_wire_as_a_device() {
    a_device_alone_crosses_the_wire(Jail::bind_kvm, "dev/kvm", (10, 232), (10, 233));
}

/// A jailed Firecracker's `/dev/net/tun` (character device 10:200) at
/// `/dev/net/tun`, and nothing else there: the same checks as KVM's, by
/// the jail and again by the spawner.
#[test]
fn the_tun_device_alone_crosses_the_wire_as_a_device() {
    a_device_alone_crosses_the_wire(Jail::bind_tun, "dev/net/tun", (10, 200), (10, 232));
}

/// `bind` (a jail's device bind) places the character device `id` at
/// `at`, and the spawner takes it there; the device under a plain name,
/// another device (`other`), a file or `/dev/null` at `at`, or the device
/// not opened `O_PATH|O_NOFOLLOW`, are refused by the jail and by the
/// spawner when a forged message says so anyway.
fn a_device_alone_crosses_the_wire(
    bind: fn(Jail, BorrowedFd<'_>) -> std::io::Result<Jail>,
    at: &str,
    id: (u32, u32),
    other: (u32, u32),
) {
    let dir = tempfile::tempdir().unwrap();
    let dev = char_node(dir.path(), "dev", id.0, id.1);
    let other = char_node(dir.path(), "other", other.0, other.1);
    let wrong = format!("not the character device {}:{}", id.0, id.1);
    let got = round_trip(
        &request(bind(Jail::new(4100, 4100), dev.as_fd()).unwrap()),
        4096..4112,
    )
    .unwrap();
    assert_eq!(got.jail.binds.len(), 1);
    assert_eq!(got.jail.binds[0].at, at);
    // A read-only mount (the node still opens read-write in the jail).
    assert!(!got.jail.binds[0].writable);
    assert_eq!(inode(got.jail.binds[0].fd.as_fd()), inode(dev.as_fd()));
    // A message asking for it writable is refused.
    let mut forged = bind(Jail::new(4100, 4100), dev.as_fd()).unwrap();
    forged.binds[0].writable = true;
    let e = round_trip(&request(forged), 4096..4112).unwrap_err();
    assert!(e.to_string().contains("a writable device bind"), "{e}");
    // The device under a plain name is a character-device bind.
    let plain = Jail::new(4100, 4100)
        .bind(dev.as_fd(), "dev-node", true)
        .unwrap();
    let e = round_trip(&request(plain), 4096..4112).unwrap_err();
    assert!(e.to_string().contains("CharacterDevice"), "{e}");
    // Another device (or a file) at its place: refused by the jail, and
    // by the spawner when the message says so anyway.
    let file = std::fs::File::create(dir.path().join("file")).unwrap();
    for fd in [other.as_fd(), file.as_fd(), devnull().as_fd()] {
        let e = bind(Jail::new(4100, 4100), fd).unwrap_err();
        assert!(e.to_string().contains(&wrong), "{e}");
        let mut forged = bind(Jail::new(4100, 4100), dev.as_fd()).unwrap();
        forged.binds[0].fd = Arc::new(fd.try_clone_to_owned().unwrap());
        let e = round_trip(&request(forged), 4096..4112).unwrap_err();
        assert!(e.to_string().contains(&wrong), "{e}");
    }
    // The device itself, but not opened `O_PATH|O_NOFOLLOW` (a link at
    // its name followed, or a descriptor that can reach the driver):
    // refused by the jail and by the spawner.
    let followed = rustix::fs::open(
        dir.path().join("dev"),
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let e = bind(Jail::new(4100, 4100), followed.as_fd()).unwrap_err();
    assert!(e.to_string().contains("O_PATH|O_NOFOLLOW"), "{e}");
    let mut forged = bind(Jail::new(4100, 4100), dev.as_fd()).unwrap();
    forged.binds[0].fd = Arc::new(followed);
    let e = round_trip(&request(forged), 4096..4112).unwrap_err();
    assert!(e.to_string().contains("O_PATH|O_NOFOLLOW"), "{e}");
}
