//! The doctor's `snapshot_backend` check against the executor's rule.

use super::*;

#[test]
fn snapshot_backend_follows_the_executors_rule() {
    // Device-mapper and both tools: dm-snapshot.
    let c = check(
        &report(&healthy()),
        "snapshot_backend",
        CheckStatus::Pass,
        "dm_snapshot",
    );
    assert!(c.summary.contains("dm-snapshots"), "{}", c.summary);
    // No dmsetup: reflink, and the summary says why not dm.
    let no_dmsetup = HostFacts {
        dmsetup: tool_missing("dmsetup", "dmsetup"),
        ..healthy()
    };
    let c = check(
        &report(&no_dmsetup),
        "snapshot_backend",
        CheckStatus::Pass,
        "reflink",
    );
    assert!(
        c.summary.contains("dmsetup is not installed"),
        "{}",
        c.summary
    );
    // The lab host (docs/lab.md): no device-mapper, ext4 state dir.
    let c = check(
        &report(&lab()),
        "snapshot_backend",
        CheckStatus::Pass,
        "sparse_copy",
    );
    assert!(c.summary.contains("no device-mapper"), "{}", c.summary);
    assert_eq!(
        snapshot_backend_of(&lab()),
        Some(SnapshotBackend::SparseCopy)
    );
    // Unknown while the helper is unreachable.
    let cut = HostFacts {
        privileged_channel: Channel::HelperUnreachable {
            socket: PathBuf::from("/run/banger-root/root.sock"),
            error: "connection refused".into(),
        },
        ..healthy()
    };
    check(
        &report(&cut),
        "snapshot_backend",
        CheckStatus::Warn,
        "unknown",
    );
    assert_eq!(snapshot_backend_of(&cut), None);
}

#[test]
fn snapshot_backend_is_not_dm_when_the_executor_may_not_drive_it() {
    // System mode: the node opens, but DM_VERSION is refused to the helper
    // (no CAP_SYS_ADMIN); the executor reports it unusable and falls back.
    let mut f = healthy();
    for d in &mut f.devices {
        if d.device == HostDevice::MapperControl {
            d.state = DeviceState::Unusable {
                error:
                    "device-mapper refuses this process (needs CAP_SYS_ADMIN): Permission denied"
                        .into(),
            };
        }
    }
    assert_eq!(snapshot_backend_of(&f), Some(SnapshotBackend::Reflink));
    let c = check(
        &report(&f),
        "snapshot_backend",
        CheckStatus::Pass,
        "reflink",
    );
    assert!(c.summary.contains("CAP_SYS_ADMIN"), "{}", c.summary);
    // losetup is never asked about: the executor attaches loop devices by
    // ioctl, and the facts have no losetup.
    assert_eq!(
        snapshot_backend_of(&healthy()),
        Some(SnapshotBackend::DmSnapshot)
    );
}
