//! KVM usability: open `/dev/kvm`, check that a vCPU takes the
//! `IA32_ARCH_CAPABILITIES` KVM advertises, and run a tiny real-mode guest.
//!
//! `/dev/kvm` existing says little: on a PVM host (`kvm_pvm` loaded, no
//! vmx/svm) the device opens, `KVM_CREATE_VM` works, and yet a stock guest
//! kernel does not boot. So the probe goes as far as running guest code, and
//! also repeats the one vCPU setup step where a stock VMM is known to fail.
//!
//! # What a PVM host does with the tiny guest
//!
//! Measured on the lab host (Linux 6.18, `kvm_pvm` loaded, no vmx/svm): the
//! tiny guest **passes**. `KVM_CREATE_VM`, `KVM_SET_USER_MEMORY_REGION`,
//! `KVM_CREATE_VCPU` and the register ioctls succeed, the first `KVM_RUN`
//! returns `KVM_EXIT_IO` (out, port 0x10, data `[0x42]`) after ~0.1 ms, the
//! second `KVM_EXIT_HLT` with rip 0x1005. A 64-bit long-mode variant (identity
//! page tables, `EFER.LME|LMA`) passes the same way. So a passing guest test
//! does not prove a stock kernel will boot.
//!
//! # The `IA32_ARCH_CAPABILITIES` test
//!
//! Before it runs anything, QEMU reads the feature MSRs KVM advertises on the
//! system fd (`KVM_GET_MSR_FEATURE_INDEX_LIST`, `KVM_GET_MSRS`) and, after
//! `KVM_SET_CPUID2`, writes `IA32_ARCH_CAPABILITIES` (MSR 0x10a) to each vCPU
//! with the advertised value; when `KVM_SET_MSRS` writes fewer MSRs than asked
//! it aborts with `failed to set MSR 0x10a` (docs/lab.md). The probe does
//! the same on a fresh VM and vCPU (given `KVM_GET_SUPPORTED_CPUID`, which
//! enumerates the MSR in CPUID.7.0:EDX[29]) and records the outcome in
//! [`KvmProbe::arch_capabilities_msr`]; [`KvmProbe::verdict`] counts a refusal
//! as `PresentUnusable`, as it does `pvm_host`.
//!
//! What a PVM host answers differs from host to host (docs/lab.md). On one
//! (Linux 6.18.44) 0x10a is listed, advertised as 0x4000_0000_0c00_0069
//! (CPUID.7.0:EDX[29] set), and `KVM_SET_MSRS` of that value on a fresh vCPU
//! returns 0 (0 of 1 written), with or without `KVM_SET_CPUID2`; only 0 is
//! accepted. The probe reports `Refused { value: 0x4000_0000_0c00_0069,
//! error: "KVM_SET_MSRS wrote 0 of 1 MSRs" }`. On another (also 6.18) the
//! advertised 0x4000_0000_0c08_e0eb is accepted: `Accepted { .. }`, and only
//! `pvm_host` makes the verdict `PresentUnusable`. Tests therefore compare
//! the probe with an independent one (banger-testkit's `hostcheck`) instead
//! of expecting either answer. Firecracker's `KVM_EXIT_INTERNAL_ERROR` comes
//! later, inside the stock kernel's boot, and is not reproduced by either
//! test.

use std::ffi::c_void;
use std::path::Path;
use std::ptr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use banger_proto::privops::{DeviceState, GuestTest, KvmProbe, MsrTest};
use kvm_bindings::{
    KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_SIMUL_EX, KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, KVM_MAX_CPUID_ENTRIES,
    Msrs, kvm_msr_entry, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rustix::mm::{MapFlags, ProtFlags};

/// The KVM device node.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// Present when the host KVM is PVM.
pub const PVM_MODULE_DIR: &str = "/sys/module/kvm_pvm";
/// How long the tiny guest may take before the probe gives up on it.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// `KVM_GET_API_VERSION` of every KVM since Linux 2.6.22.
const KVM_API_VERSION: i32 = 12;

/// The test guest: 16-bit real-mode code, loaded at [`GUEST_LOAD_ADDR`].
///
/// ```text
/// b0 42    mov al, 0x42
/// e6 10    out 0x10, al      ; -> KVM_EXIT_IO, out, port 0x10, 1 byte 0x42
/// f4       hlt               ; -> KVM_EXIT_HLT (no in-kernel irqchip)
/// ```
pub const TINY_GUEST: [u8; 5] = [0xb0, GUEST_BYTE, 0xe6, GUEST_PORT, 0xf4];
/// The I/O port the guest writes to: `out imm8, al` takes an 8-bit port.
const GUEST_PORT: u8 = 0x10;
const GUEST_BYTE: u8 = 0x42;
/// Guest-physical address of the memory slot and of the first instruction.
const GUEST_LOAD_ADDR: u64 = 0x1000;
/// Two pages of guest memory.
const GUEST_MEM_SIZE: usize = 0x2000;
/// `IA32_ARCH_CAPABILITIES`, the feature MSR a stock VMM writes to every vCPU.
pub const MSR_IA32_ARCH_CAPABILITIES: u32 = 0x10a;
/// More exits than the program can legitimately cause (two, plus a few
/// `EINTR` retries); guards against a guest that keeps exiting.
const MAX_RUNS: usize = 8;

/// Probe `/dev/kvm`: open it, read the API version, write the advertised
/// `IA32_ARCH_CAPABILITIES` to a vCPU, run [`TINY_GUEST`].
///
/// Never panics and never blocks for much longer than [`GUEST_TIMEOUT`].
pub fn probe_kvm() -> KvmProbe {
    probe_kvm_with(&TINY_GUEST, GUEST_TIMEOUT)
}

pub(crate) fn probe_kvm_with(program: &'static [u8], timeout: Duration) -> KvmProbe {
    let pvm_host = Path::new(PVM_MODULE_DIR).exists();
    let hw_virt = cpu_has_hw_virt();
    let kvm = match Kvm::new_with_path(c"/dev/kvm") {
        Ok(kvm) => kvm,
        Err(e) => {
            let device = if e.errno() == libc::ENOENT {
                DeviceState::Absent
            } else {
                DeviceState::Unusable {
                    error: format!("opening {KVM_DEVICE}: {e}"),
                }
            };
            return KvmProbe {
                device,
                api_version: None,
                guest_test: GuestTest::NotRun,
                arch_capabilities_msr: MsrTest::NotRun,
                pvm_host,
                hw_virt,
            };
        }
    };
    let api_version = kvm.get_api_version();
    let (guest_test, arch_capabilities_msr) = if api_version == KVM_API_VERSION {
        // The MSR test only issues ioctls that return promptly, so it runs
        // here, before the guest thread takes `kvm`.
        let msr = test_arch_capabilities(&kvm);
        (run_guest(kvm, program, timeout), msr)
    } else {
        let error =
            format!("KVM_GET_API_VERSION returned {api_version}, expected {KVM_API_VERSION}");
        (failed("api_version", error), MsrTest::NotRun)
    };
    KvmProbe {
        device: DeviceState::Present,
        api_version: Some(api_version),
        guest_test,
        arch_capabilities_msr,
        pvm_host,
        hw_virt,
    }
}

/// Do what QEMU does with `IA32_ARCH_CAPABILITIES` before a guest runs: read
/// the value KVM advertises for it as a feature MSR (`KVM_GET_MSRS` on the
/// system fd), then on a fresh vCPU given KVM's supported CPUID (which
/// enumerates the MSR) write that value back with `KVM_SET_MSRS`.
fn test_arch_capabilities(kvm: &Kvm) -> MsrTest {
    let listed = match kvm.get_msr_feature_index_list() {
        Ok(list) => list.as_slice().contains(&MSR_IA32_ARCH_CAPABILITIES),
        // Only kernels without KVM_CAP_GET_MSR_FEATURES (before 4.17) fail
        // here; QEMU then writes no feature MSR either.
        Err(e) => {
            tracing::debug!(error = %e, "KVM_GET_MSR_FEATURE_INDEX_LIST failed");
            false
        }
    };
    if !listed {
        return MsrTest::NotAdvertised;
    }
    let entry = kvm_msr_entry {
        index: MSR_IA32_ARCH_CAPABILITIES,
        ..Default::default()
    };
    let refused = |value: u64, error: String| MsrTest::Refused { value, error };
    let mut msrs = match Msrs::from_entries(&[entry]) {
        Ok(m) => m,
        Err(e) => return refused(0, format!("building a kvm_msrs of one entry: {e:?}")),
    };
    match kvm.get_msrs(&mut msrs) {
        Ok(1) => {}
        Ok(n) => {
            return refused(
                0,
                format!("KVM_GET_MSRS on {KVM_DEVICE} read {n} of 1 MSRs although 0x10a is listed"),
            );
        }
        Err(e) => return refused(0, format!("KVM_GET_MSRS on {KVM_DEVICE}: {e}")),
    }
    let value = msrs.as_slice()[0].data;
    let cpuid = match kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES) {
        Ok(c) => c,
        Err(e) => return refused(value, format!("KVM_GET_SUPPORTED_CPUID: {e}")),
    };
    let vm = match kvm.create_vm() {
        Ok(vm) => vm,
        Err(e) => return refused(value, format!("KVM_CREATE_VM: {e}")),
    };
    let vcpu = match vm.create_vcpu(0) {
        Ok(v) => v,
        Err(e) => return refused(value, format!("KVM_CREATE_VCPU: {e}")),
    };
    if let Err(e) = vcpu.set_cpuid2(&cpuid) {
        return refused(value, format!("KVM_SET_CPUID2: {e}"));
    }
    match vcpu.set_msrs(&msrs) {
        Ok(1) => MsrTest::Accepted { value },
        Ok(n) => refused(value, format!("KVM_SET_MSRS wrote {n} of 1 MSRs")),
        Err(e) => refused(value, format!("KVM_SET_MSRS: {e}")),
    }
}

/// Whether `/proc/cpuinfo` advertises vmx or svm.
fn cpu_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .flat_map(|l| l.split_whitespace())
            .any(|f| f == "vmx" || f == "svm")
    })
}

fn failed(stage: &str, error: impl Into<String>) -> GuestTest {
    GuestTest::Failed {
        stage: stage.to_string(),
        error: error.into(),
    }
}

/// Run `program` on its own thread and wait at most `timeout` for a verdict.
///
/// A guest that never exits keeps its thread in `KVM_RUN`; there is no safe
/// way to pull it out without a signal handler, so on timeout the thread is
/// left behind. It owns the VM and its memory and releases both if the guest
/// ever exits.
fn run_guest(kvm: Kvm, program: &'static [u8], timeout: Duration) -> GuestTest {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let result = run_guest_blocking(&kvm, program);
            // The receiver is gone when the probe already timed out.
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return failed("spawn_thread", e.to_string());
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            failed("run", format!("timed out after {} ms", timeout.as_millis()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => failed("run", "the probe thread died"),
    }
}

fn run_guest_blocking(kvm: &Kvm, program: &[u8]) -> GuestTest {
    // Declaration order matters: `mem` is declared before `vm` and `vcpu`, so
    // it is dropped (unmapped) after them.
    let mut mem = match GuestMem::new(GUEST_MEM_SIZE) {
        Ok(m) => m,
        Err(e) => return failed("mmap", e.to_string()),
    };
    if !mem.write(0, program) {
        return failed("load", "program does not fit in guest memory");
    }
    let vm = match kvm.create_vm() {
        Ok(vm) => vm,
        Err(e) => return failed("create_vm", format!("KVM_CREATE_VM: {e}")),
    };
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: GUEST_LOAD_ADDR,
        memory_size: GUEST_MEM_SIZE as u64,
        userspace_addr: mem.addr(),
    };
    // SAFETY: `userspace_addr`/`memory_size` describe exactly the live
    // anonymous mapping owned by `mem`, which outlives `vm` (declared earlier,
    // dropped later); slot 0 is the VM's only memory region, so it overlaps
    // nothing.
    if let Err(e) = unsafe { vm.set_user_memory_region(region) } {
        return failed(
            "set_user_memory_region",
            format!("KVM_SET_USER_MEMORY_REGION: {e}"),
        );
    }
    let mut vcpu = match vm.create_vcpu(0) {
        Ok(v) => v,
        Err(e) => return failed("create_vcpu", format!("KVM_CREATE_VCPU: {e}")),
    };
    let mut sregs = match vcpu.get_sregs() {
        Ok(s) => s,
        Err(e) => return failed("get_sregs", format!("KVM_GET_SREGS: {e}")),
    };
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if let Err(e) = vcpu.set_sregs(&sregs) {
        return failed("set_sregs", format!("KVM_SET_SREGS: {e}"));
    }
    let mut regs = match vcpu.get_regs() {
        Ok(r) => r,
        Err(e) => return failed("get_regs", format!("KVM_GET_REGS: {e}")),
    };
    regs.rip = GUEST_LOAD_ADDR;
    regs.rflags = 2; // bit 1 is reserved and must be set
    if let Err(e) = vcpu.set_regs(&regs) {
        return failed("set_regs", format!("KVM_SET_REGS: {e}"));
    }
    run_to_hlt(&mut vcpu)
}

/// What one `KVM_RUN` produced, detached from the vCPU's `kvm_run` page.
#[derive(Debug)]
enum Exit {
    IoOut { port: u16, data: Vec<u8> },
    Hlt,
    InternalError,
    Other(String),
}

fn run_to_hlt(vcpu: &mut VcpuFd) -> GuestTest {
    let mut saw_out = false;
    for _ in 0..MAX_RUNS {
        let exit = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => Exit::IoOut {
                port,
                data: data.to_vec(),
            },
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::InternalError) => Exit::InternalError,
            Ok(other) => Exit::Other(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return failed("run", format!("KVM_RUN: {e}{}", at_rip(vcpu))),
        };
        match exit {
            Exit::IoOut { port, data }
                if !saw_out && port == u16::from(GUEST_PORT) && data == [GUEST_BYTE] =>
            {
                saw_out = true;
            }
            Exit::Hlt if saw_out => return GuestTest::Passed,
            Exit::Hlt => {
                return failed(
                    "run",
                    format!("KVM_EXIT_HLT before the expected write to port {GUEST_PORT:#x}"),
                );
            }
            Exit::IoOut { port, data } => {
                return failed(
                    "run",
                    format!("unexpected KVM_EXIT_IO out to port {port:#x}: {data:02x?}"),
                );
            }
            Exit::InternalError => {
                let what = internal_error(vcpu);
                return failed("run", format!("{what}{}", at_rip(vcpu)));
            }
            Exit::Other(what) => {
                return failed("run", format!("unexpected exit {what}{}", at_rip(vcpu)));
            }
        }
    }
    failed("run", format!("no KVM_EXIT_HLT after {MAX_RUNS} runs"))
}

/// `KVM_EXIT_INTERNAL_ERROR` with its suberror and data words.
fn internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
        return "KVM_EXIT_INTERNAL_ERROR".to_string();
    }
    // SAFETY: the kernel set exit_reason to KVM_EXIT_INTERNAL_ERROR (checked
    // just above), which means it filled the `internal` member of the union;
    // the value is plain integers, copied out.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let name = match internal.suberror {
        KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
        KVM_INTERNAL_ERROR_SIMUL_EX => "simultaneous exceptions",
        KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected exit reason",
        _ => "unknown suberror",
    };
    let n = (internal.ndata as usize).min(internal.data.len());
    format!(
        "KVM_EXIT_INTERNAL_ERROR suberror {} ({name}), data {:#x?}",
        internal.suberror,
        &internal.data[..n]
    )
}

fn at_rip(vcpu: &VcpuFd) -> String {
    vcpu.get_regs()
        .map(|r| format!(" at rip {:#x}", r.rip))
        .unwrap_or_default()
}

/// Anonymous guest memory, unmapped on drop.
struct GuestMem {
    ptr: *mut c_void,
    len: usize,
}

impl GuestMem {
    fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: a null address hint lets the kernel choose a fresh range, so
        // the new mapping aliases no existing Rust object.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        Ok(GuestMem { ptr, len })
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Copy `bytes` to `offset`; false when it does not fit.
    fn write(&mut self, offset: usize, bytes: &[u8]) -> bool {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return false;
        }
        // SAFETY: the destination range lies inside the mapping (checked
        // above), which is live and writable while `self` exists; the source
        // is a separate Rust slice, so the ranges do not overlap, and no Rust
        // reference into the mapping exists (only the raw pointer).
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.cast::<u8>().add(offset),
                bytes.len(),
            );
        }
        true
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and are unmapped
        // only here, once; no Rust reference into the range exists. KVM's own
        // use of the range ends with the VM, which the caller drops first.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr, self.len) } {
            tracing::warn!(error = %std::io::Error::from(e), "unmapping KVM probe memory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::privops::KvmVerdict;

    /// `vmx`/`svm` from the shell, independently of the parser above.
    fn grep_hw_virt() -> bool {
        let out = crate::runner::Runner
            .output(&crate::runner::Cmd::new("grep").args(["-qwE", "vmx|svm", "/proc/cpuinfo"]))
            .expect("grep runs");
        out.status.success()
    }

    fn require_kvm() {
        assert!(
            Path::new(KVM_DEVICE).exists(),
            "this test needs {KVM_DEVICE} (load kvm_intel, kvm_amd or kvm_pvm)"
        );
    }

    #[test]
    fn probe_agrees_with_the_host() {
        let p = probe_kvm();
        eprintln!("{p:#?}");
        assert_eq!(p.pvm_host, Path::new(PVM_MODULE_DIR).exists());
        assert_eq!(p.hw_virt, grep_hw_virt());
        let can_open = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(KVM_DEVICE);
        match (&p.device, can_open) {
            (DeviceState::Absent, Err(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
                assert_eq!(p.guest_test, GuestTest::NotRun);
                assert_eq!(p.verdict(), KvmVerdict::Absent);
            }
            (DeviceState::Unusable { error }, Err(e)) => {
                assert!(error.contains(&e.to_string()), "{error} vs {e}");
                assert_eq!(p.verdict(), KvmVerdict::NoAccess);
            }
            (DeviceState::Present, Ok(_)) => {
                assert_eq!(p.api_version, Some(KVM_API_VERSION));
                assert_ne!(p.guest_test, GuestTest::NotRun);
                assert_ne!(p.arch_capabilities_msr, MsrTest::NotRun);
                if let GuestTest::Failed { stage, error } = &p.guest_test {
                    assert!(!stage.is_empty() && !error.is_empty());
                }
                if p.pvm_host {
                    assert_eq!(p.verdict(), KvmVerdict::PresentUnusable);
                } else if p.hw_virt {
                    assert_eq!(
                        p.guest_test,
                        GuestTest::Passed,
                        "hardware KVM must run the tiny guest"
                    );
                    assert_eq!(p.verdict(), KvmVerdict::Usable);
                }
            }
            (device, open) => panic!("probe said {device:?}, direct open gave {open:?}"),
        }
    }

    /// What holds whatever this host's KVM does with the MSR (hosts differ:
    /// docs/lab.md). Whether the outcome is the right one for this host is
    /// checked against an independent raw-ioctl probe in banger-testkit's
    /// `tests/host_probes.rs`.
    #[test]
    fn arch_capabilities_outcome_is_consistent() {
        require_kvm();
        let p = probe_kvm();
        eprintln!("{:#?}", p.arch_capabilities_msr);
        assert_eq!(p.device, DeviceState::Present, "{p:#?}");
        match &p.arch_capabilities_msr {
            MsrTest::NotRun => panic!("KVM is present but the MSR test did not run: {p:#?}"),
            MsrTest::Refused { error, .. } => {
                assert!(!error.is_empty());
                assert_eq!(p.verdict(), KvmVerdict::PresentUnusable);
            }
            MsrTest::NotAdvertised | MsrTest::Accepted { .. } => {}
        }
        // The host's answer does not change between two asks.
        assert_eq!(probe_kvm().arch_capabilities_msr, p.arch_capabilities_msr);
    }

    #[test]
    fn hw_virt_parser_matches_grep() {
        assert_eq!(cpu_has_hw_virt(), grep_hw_virt());
    }

    #[test]
    fn guest_program_bytes_are_the_documented_ones() {
        assert_eq!(TINY_GUEST, [0xb0, 0x42, 0xe6, 0x10, 0xf4]);
    }

    #[test]
    fn a_guest_that_does_not_finish_times_out() {
        require_kvm();
        // A zero budget cannot be met: the verdict must be "timed out", and
        // it must come back without waiting for the guest thread.
        let start = std::time::Instant::now();
        let p = probe_kvm_with(&TINY_GUEST, Duration::ZERO);
        assert!(start.elapsed() < Duration::from_secs(1));
        match p.guest_test {
            GuestTest::Failed { stage, error } => {
                assert_eq!(stage, "run");
                assert!(error.starts_with("timed out"), "{error}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn guest_memory_rejects_out_of_range_writes() {
        let mut mem = GuestMem::new(GUEST_MEM_SIZE).expect("mmap");
        assert!(mem.write(GUEST_MEM_SIZE - 5, &TINY_GUEST));
        assert!(!mem.write(GUEST_MEM_SIZE - 4, &TINY_GUEST));
        assert!(!mem.write(usize::MAX, &TINY_GUEST));
    }
}
