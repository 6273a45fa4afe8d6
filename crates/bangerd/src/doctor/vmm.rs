//! Checks about running guests: KVM, the VMM binaries, and which backend
//! can boot a stock guest.

use banger_proto::doctor::{Accel, BackendSupport, Check, CheckStatus, VmmKind};
use banger_proto::privops::{
    DeviceState, GuestTest, KvmProbe, KvmVerdict, MsrTest, ToolProbe, VmmSupport,
};

use super::{HostFacts, ids, not_pass, pass, tool_error, tool_found_text, tool_state};

/// Why KVM cannot run a stock guest, as a clause.
fn kvm_problem(kvm: &KvmProbe) -> String {
    let with_msr = |clause: String| match msr_refusal(kvm) {
        Some(msr) => format!("{clause}, and {msr}"),
        None => clause,
    };
    match (&kvm.device, &kvm.guest_test) {
        (DeviceState::Absent, _) => "there is no /dev/kvm".into(),
        (DeviceState::Unusable { error }, _) => format!("/dev/kvm cannot be opened ({error})"),
        _ if kvm.pvm_host => {
            with_msr("the host KVM is PVM (only PVM-enabled guest kernels run)".into())
        }
        (_, GuestTest::Failed { stage, error }) => {
            with_msr(format!("a test guest failed at {stage} ({error})"))
        }
        (_, GuestTest::NotRun) => with_msr("no test guest could be run".into()),
        (_, GuestTest::Passed) => msr_refusal(kvm).unwrap_or_else(|| "KVM is usable".into()),
    }
}

/// The `IA32_ARCH_CAPABILITIES` refusal behind QEMU's `failed to set MSR
/// 0x10a` abort, as a clause; `None` when the vCPU took the value.
fn msr_refusal(kvm: &KvmProbe) -> Option<String> {
    match &kvm.arch_capabilities_msr {
        MsrTest::Refused { value, error } => Some(format!(
            "KVM refuses IA32_ARCH_CAPABILITIES (MSR 0x10a) at the value it advertises \
             ({value:#x}: {error}), so QEMU -enable-kvm aborts"
        )),
        MsrTest::NotRun | MsrTest::NotAdvertised | MsrTest::Accepted { .. } => None,
    }
}

/// The `kvm` row: the doctor's own probe, and, when the executor's
/// verdict for its jailed VMMs differs (`ProbeVmms`: a `/dev/kvm` root can
/// open but a groupless jail uid cannot), that.
pub(super) fn kvm(kvm: &KvmProbe, qemu_works: bool, support: Option<&VmmSupport>) -> Check {
    let id = ids::KVM;
    // Without KVM only QEMU's TCG can run guests.
    let status = if qemu_works {
        CheckStatus::Warn
    } else {
        CheckStatus::Fail
    };
    let fallback = if qemu_works {
        "stock guests need QEMU TCG"
    } else {
        "stock guests need QEMU TCG, which is not available"
    };
    let use_qemu = if qemu_works {
        "use the QEMU backend (TCG) here"
    } else {
        "install QEMU for TCG (`apt-get install qemu-system-x86`)"
    };
    let (state, summary, hint) = match kvm.verdict() {
        KvmVerdict::Usable
            if let Some(problem) = support
                .filter(|s| s.kvm != KvmVerdict::Usable)
                .and_then(|s| s.kvm_problem.as_deref()) =>
        {
            (
                "no_access",
                format!(
                    "/dev/kvm works for root and ran a test guest, but the jailed VMMs cannot use it: {problem}; {fallback}"
                ),
                "make /dev/kvm a world read-write node, as systemd's own udev rule does (0666): `chmod 0666 /dev/kvm` now, and check for a local udev rule that narrows it"
                    .to_string(),
            )
        }
        KvmVerdict::Usable => {
            let api = kvm
                .api_version
                .map(|v| format!(" (API {v})"))
                .unwrap_or_default();
            return pass(
                id,
                "usable",
                format!("/dev/kvm works{api} and ran a test guest"),
            );
        }
        KvmVerdict::PresentUnusable if kvm.pvm_host => (
            "present_unusable",
            format!(
                "/dev/kvm works but the host KVM is PVM: only PVM-enabled guest kernels run{}; {fallback}",
                msr_refusal(kvm)
                    .map(|msr| format!(", and {msr}"))
                    .unwrap_or_default()
            ),
            format!("{use_qemu}, or use a host with hardware virtualization (vmx/svm) for KVM speed"),
        ),
        KvmVerdict::PresentUnusable
            if kvm.guest_test == GuestTest::Passed && msr_refusal(kvm).is_some() =>
        {
            (
                "present_unusable",
                format!(
                    "/dev/kvm works and ran a test guest, but {}; {fallback}",
                    kvm_problem(kvm)
                ),
                format!(
                    "stock VMMs need hardware KVM (kvm_intel/kvm_amd): check which KVM module is loaded (`lsmod | grep kvm`) and `dmesg`; meanwhile {use_qemu}"
                ),
            )
        }
        KvmVerdict::PresentUnusable => (
            "present_unusable",
            format!("/dev/kvm opens but {}; {fallback}", kvm_problem(kvm)),
            format!("check `dmesg` for KVM errors; meanwhile {use_qemu}"),
        ),
        KvmVerdict::NoAccess => (
            "no_access",
            format!("{}; {fallback}", capitalize(&kvm_problem(kvm))),
            "bangerd-root must open /dev/kvm read-write: check the node's owner and mode and any LSM policy"
                .to_string(),
        ),
        KvmVerdict::Absent => (
            "absent",
            format!(
                "there is no /dev/kvm{}; {fallback}",
                if kvm.hw_virt {
                    " although the CPU has vmx/svm"
                } else {
                    " and the CPU advertises no vmx/svm"
                }
            ),
            if kvm.hw_virt {
                "load the KVM module: `modprobe kvm_intel` (or `kvm_amd`)".to_string()
            } else {
                format!("enable VT-x/AMD-V in firmware or nested virtualization in the hypervisor; until then {use_qemu}")
            },
        ),
    };
    not_pass(id, status, state, summary, hint)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

pub(super) fn firecracker(t: &ToolProbe, kvm: Option<KvmVerdict>) -> Check {
    let id = ids::FIRECRACKER;
    match tool_state(t) {
        "found" if kvm == Some(KvmVerdict::Usable) => pass(id, "found", tool_found_text(t)),
        "found" => not_pass(
            id,
            CheckStatus::Warn,
            "found",
            format!(
                "{}, but it cannot run guests here: {}",
                tool_found_text(t),
                if kvm.is_some() {
                    "KVM is not usable for stock guests"
                } else {
                    "KVM state unknown"
                }
            ),
            "use the QEMU backend on this host",
        ),
        "missing" => not_pass(
            id,
            CheckStatus::Warn,
            "missing",
            format!("{}: the Firecracker backend is unavailable", tool_error(t)),
            "install a Firecracker release binary (github.com/firecracker-microvm/firecracker/releases) and configure its path",
        ),
        _ => not_pass(
            id,
            CheckStatus::Warn,
            "broken",
            format!("firecracker does not run: {}", tool_error(t)),
            "replace it with a working x86_64 Firecracker release binary",
        ),
    }
}

pub(super) fn qemu(t: &ToolProbe, kvm: Option<KvmVerdict>) -> Check {
    let id = ids::QEMU;
    match tool_state(t) {
        "found" => {
            let accel = match kvm {
                Some(KvmVerdict::Usable) => "KVM",
                Some(_) => "TCG software emulation",
                None => "unknown acceleration",
            };
            pass(
                id,
                "found",
                format!("{} (will use {accel})", tool_found_text(t)),
            )
        }
        "missing" => not_pass(
            id,
            CheckStatus::Warn,
            "missing",
            format!("{}: the QEMU backend is unavailable", tool_error(t)),
            "install QEMU: `apt-get install qemu-system-x86`",
        ),
        _ => not_pass(
            id,
            CheckStatus::Warn,
            "broken",
            format!("qemu does not run: {}", tool_error(t)),
            "reinstall QEMU: `apt-get install --reinstall qemu-system-x86`; banger runs it under `-sandbox on`, which needs QEMU built with seccomp (Debian's is) and the seccomp system call allowed",
        ),
    }
}

pub(super) fn backends(f: &HostFacts) -> Vec<BackendSupport> {
    let unreachable = "the privileged helper, which runs VMMs, is unreachable";
    let verdict = f.kvm_verdict();
    // KVM counts for the VMMs as the executor that runs them sees it.
    let kvm_usable = verdict == Some(KvmVerdict::Usable)
        && f.vmm_support
            .as_ref()
            .is_none_or(|s| s.kvm == KvmVerdict::Usable);
    let executor_kvm = f.vmm_support.as_ref().and_then(|s| s.kvm_problem.clone());
    let kvm_problem = |k: &KvmProbe| executor_kvm.clone().unwrap_or_else(|| kvm_problem(k));
    // A VMM the executor has no binary for, in its words.
    let no_binary = |vmm| {
        f.vmm_support
            .as_ref()
            .and_then(|s| s.of(vmm))
            .and_then(|a| a.problem.clone())
    };
    let firecracker = if !f.helper_reachable() {
        (false, unreachable.to_string())
    } else if let Some(p) = no_binary(VmmKind::Firecracker) {
        (false, p)
    } else {
        match (f.firecracker.works, kvm_usable) {
            (true, true) => (
                true,
                format!("{} with KVM", tool_found_text(&f.firecracker)),
            ),
            (true, false) => (
                false,
                format!("Firecracker needs KVM, but {}", kvm_problem(&f.kvm)),
            ),
            (false, true) => (false, tool_error(&f.firecracker).to_string()),
            (false, false) => (
                false,
                format!(
                    "{}; it would also need KVM, but {}",
                    tool_error(&f.firecracker),
                    kvm_problem(&f.kvm)
                ),
            ),
        }
    };
    let qemu = if !f.helper_reachable() {
        (false, unreachable.to_string())
    } else if let Some(p) = no_binary(VmmKind::Qemu) {
        (false, p)
    } else if !f.qemu.works {
        (false, tool_error(&f.qemu).to_string())
    } else if kvm_usable {
        (true, format!("{} with KVM", tool_found_text(&f.qemu)))
    } else {
        (
            true,
            format!(
                "{} with TCG software emulation (slower), because {}",
                tool_found_text(&f.qemu),
                kvm_problem(&f.kvm)
            ),
        )
    };
    vec![
        BackendSupport {
            vmm: VmmKind::Firecracker,
            usable: firecracker.0,
            accel: firecracker.0.then_some(Accel::Kvm),
            reason: firecracker.1,
        },
        BackendSupport {
            vmm: VmmKind::Qemu,
            usable: qemu.0,
            accel: qemu
                .0
                .then_some(if kvm_usable { Accel::Kvm } else { Accel::Tcg }),
            reason: qemu.1,
        },
    ]
}

pub(super) fn vmm_backend(f: &HostFacts, backends: &[BackendSupport], any: bool) -> Check {
    let id = ids::VMM_BACKEND;
    if any {
        let usable: Vec<String> = backends
            .iter()
            .filter(|b| b.usable)
            .map(|b| {
                let accel = match b.accel {
                    Some(Accel::Kvm) => "kvm",
                    Some(Accel::Tcg) => "tcg",
                    None => "?",
                };
                format!("{} ({accel})", b.vmm.as_str())
            })
            .collect();
        return pass(
            id,
            "available",
            format!("usable VMM backends: {}", usable.join(", ")),
        );
    }
    let why: Vec<String> = backends
        .iter()
        .map(|b| format!("{}: {}", b.vmm.as_str(), b.reason))
        .collect();
    let hint = if !f.helper_reachable() {
        "fix `privileged_helper` first"
    } else if f.qemu.path.is_none() {
        "install QEMU, which runs guests on any host (TCG): `apt-get install qemu-system-x86`"
    } else {
        "fix the `qemu` check above; QEMU runs guests on any host (TCG)"
    };
    not_pass(
        id,
        CheckStatus::Fail,
        "none",
        format!("no VMM backend can boot a guest here ({})", why.join("; ")),
        hint,
    )
}
