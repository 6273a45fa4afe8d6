//! Renaming the bridge.

use super::*;

/// Regression: after the bridge was renamed, reconcile filled the pool with
/// the old bridge's taps and the first attach failed in sync_firewall.
#[test]
fn taps_left_on_a_renamed_bridge_are_replaced_not_reused() {
    let f = Fixture::new();
    let old = f.network(net_cfg(2));
    old.reconcile().unwrap();
    let old_taps = f.ops.taps();
    assert_eq!(old_taps.len(), 2);
    f.ops.take_ops();

    let renamed = f.network(NetworkConfig {
        bridge: "banger1".into(),
        subnet: "172.31.0.0/24".parse().unwrap(),
        ..net_cfg(2)
    });
    renamed.reconcile().unwrap();
    let ops = f.ops.take_ops();
    assert_eq!(
        deleted_taps(&ops).into_iter().collect::<BTreeSet<_>>(),
        old_taps,
        "{ops:?}"
    );
    assert_eq!(free(&renamed).len(), 2);
    // The new pool is usable: attaching a VM syncs the firewall fine.
    let (vm, _) = f
        .store
        .create_vm_with_lease(
            &NewVm {
                name: "after".into(),
                image_id: f.image_id.clone(),
                vmm: Vmm::Qemu,
                vcpus: 1,
                memory_mib: 512,
                disk_bytes: 1 << 30,
                nat: true,
            },
            &NewLease {
                ip: Ipv4Addr::new(172, 31, 0, 2),
                mac: crate::network::leases::mac_for(Ipv4Addr::new(172, 31, 0, 2)),
            },
        )
        .unwrap();
    f.store
        .set_vm_state(&vm.id, VmState::Created, VmState::Starting, None)
        .unwrap();
    renamed.attach(&vm.id).unwrap();
}
