//! banger's host probes (`banger_host::probe`) against independent probes
//! of the same host (`banger_testkit::hostcheck`). What the host answers
//! differs between hosts (docs/lab.md: one PVM host refuses the
//! `IA32_ARCH_CAPABILITIES` write a stock VMM makes, another accepts it);
//! the tests only require that both probes see the same thing.

use banger_host::probe::probe_kvm;
use banger_proto::privops::{DeviceState, KvmVerdict, MsrTest};
use banger_testkit::hostcheck::{self, MsrCheck};
use banger_testkit::require_root;

#[test]
fn kvm_arch_capabilities_probe_matches_an_independent_one() {
    require_root();
    let probe = probe_kvm();
    let independent = hostcheck::arch_capabilities_msr();
    eprintln!("probe: {probe:#?}\nindependent: {independent:?}");
    match (&probe.device, &probe.arch_capabilities_msr, &independent) {
        (
            DeviceState::Absent | DeviceState::Unusable { .. },
            MsrTest::NotRun,
            MsrCheck::NoKvm(_),
        ) => {}
        (DeviceState::Present, MsrTest::NotAdvertised, MsrCheck::NotAdvertised) => {}
        (DeviceState::Present, MsrTest::Accepted { value }, MsrCheck::Accepted { value: v }) => {
            assert_eq!(value, v, "advertised value");
        }
        (
            DeviceState::Present,
            MsrTest::Refused { value, error },
            MsrCheck::Refused { value: v, why },
        ) => {
            assert_eq!(value, v, "advertised value ({error} / {why})");
        }
        (device, msr, independent) => {
            panic!("banger's probe says {device:?} / {msr:?}, the independent one {independent:?}")
        }
    }
}

#[test]
fn kvm_verdict_matches_an_independent_judgement() {
    require_root();
    let expected = hostcheck::kvm_state().unwrap_or_else(|e| panic!("{e}"));
    let probe = probe_kvm();
    let verdict = match probe.verdict() {
        KvmVerdict::Usable => "usable",
        KvmVerdict::PresentUnusable => "present_unusable",
        KvmVerdict::NoAccess => "no_access",
        KvmVerdict::Absent => "absent",
    };
    assert_eq!(verdict, expected, "{probe:#?}");
}
