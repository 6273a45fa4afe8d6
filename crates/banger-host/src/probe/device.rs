//! Device nodes: does the fixed path exist, and does it open read-write?

use std::path::Path;

use banger_proto::privops::{DeviceProbe, DeviceState, HostDevice};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// Open `device`'s fixed node `O_RDWR | O_CLOEXEC` and close it again.
///
/// Opening has no lasting effect on any of the [`HostDevice`] nodes: a tun fd
/// does nothing until `TUNSETIFF`, loop-control and mapper-control until an
/// ioctl, a vhost-vsock fd until `VHOST_SET_OWNER`.
pub fn probe_device(device: HostDevice) -> DeviceProbe {
    DeviceProbe {
        device,
        state: open_state(Path::new(device.path())),
    }
}

/// `Present` when `path` opens read-write, `Absent` on `ENOENT`,
/// `Unusable` with the OS error otherwise.
pub(crate) fn open_state(path: &Path) -> DeviceState {
    let flags = OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => {
            drop(fd);
            DeviceState::Present
        }
        Err(Errno::NOENT) => DeviceState::Absent,
        Err(e) => DeviceState::Unusable {
            error: format!("opening {}: {}", path.display(), std::io::Error::from(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a plain `std::fs` open says about the node.
    fn ground_truth(path: &Path) -> DeviceState {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(_) => DeviceState::Present,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DeviceState::Absent,
            Err(e) => DeviceState::Unusable {
                error: format!("opening {}: {e}", path.display()),
            },
        }
    }

    #[test]
    fn every_device_agrees_with_a_direct_open() {
        for device in HostDevice::ALL {
            let probe = probe_device(device);
            assert_eq!(probe.device, device);
            assert_eq!(
                probe.state,
                ground_truth(Path::new(device.path())),
                "{device:?}"
            );
            assert_eq!(
                probe.state == DeviceState::Absent,
                !Path::new(device.path()).exists(),
                "{device:?}"
            );
        }
    }

    #[test]
    fn missing_node_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(open_state(&dir.path().join("nope")), DeviceState::Absent);
        assert_eq!(
            open_state(&dir.path().join("no/such/dir")),
            DeviceState::Absent
        );
    }

    #[test]
    fn unopenable_node_is_unusable_with_the_os_error() {
        // A directory exists but cannot be opened O_RDWR: EISDIR.
        let dir = tempfile::tempdir().unwrap();
        match open_state(dir.path()) {
            DeviceState::Unusable { error } => {
                assert!(error.contains("Is a directory"), "{error}");
                assert!(error.contains(&dir.path().display().to_string()), "{error}");
            }
            other => panic!("expected Unusable, got {other:?}"),
        }
    }
}
