//! Independent probes of the host, for tests that check banger's own probes
//! and `banger doctor` against the machine they run on.
//!
//! Each answers a question banger's code also answers, by a separate and
//! simpler route — a plain `open`, `/proc` and `/sys` files, a tool run from
//! `PATH`, raw ioctls on this module's own copies of the kernel's uapi
//! layouts — so a test derives what to expect from the host as it is now,
//! never from a fact remembered about one host (docs/lab.md records how much
//! the hosts differ: which MSR writes KVM accepts, device-mapper,
//! vhost-vsock).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What opening a node read-write does.
#[derive(Debug)]
pub enum NodeState {
    Absent,
    Opens,
    Fails(std::io::Error),
}

/// Open `path` read-write with `std::fs` and close it again.
pub fn open_rw(path: &str) -> NodeState {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => NodeState::Opens,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeState::Absent,
        Err(e) => NodeState::Fails(e),
    }
}

/// The doctor's state for a device node check (`tun`, `vhost_vsock`,
/// `loop_control`): `present` when it opens read-write.
pub fn device_state(path: &str) -> &'static str {
    match open_rw(path) {
        NodeState::Absent => "absent",
        NodeState::Opens => "present",
        NodeState::Fails(_) => "unusable",
    }
}

/// The minor number `/proc/misc` lists for the misc driver `name`, when it
/// is registered.
pub fn misc_minor(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/misc").expect("reading /proc/misc");
    text.lines().find_map(|l| {
        let (minor, driver) = l.trim().split_once(char::is_whitespace)?;
        (driver.trim() == name).then(|| minor.parse().ok())?
    })
}

/// The doctor's `device_mapper` state for a root executor, without creating
/// or opening `/dev/mapper/control` (running `dmsetup` would create it):
/// `absent` without the node, `present` when it is the character device of
/// a registered device-mapper driver (then `DM_VERSION` succeeds for root),
/// `unusable` otherwise.
///
/// Ask after the code under test opened the node: opening it may load
/// `dm_mod` on demand, which registers the driver.
pub fn device_mapper_state() -> &'static str {
    let node = match std::fs::symlink_metadata("/dev/mapper/control") {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return "absent",
        Err(e) => panic!("stat /dev/mapper/control: {e}"),
    };
    const MISC_MAJOR: u64 = 10;
    let rdev = node.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let registered = misc_minor("device-mapper");
    if node.file_type().is_char_device()
        && u64::from(major) == MISC_MAJOR
        && registered == Some(minor)
    {
        "present"
    } else {
        "unusable"
    }
}

/// `tool` as found on `PATH` (an executable regular file).
pub fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// Whether `tool ARGS` runs from `PATH` and exits 0.
pub fn runs(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the CPU advertises hardware virtualization (`vmx`/`svm` as a
/// word in `/proc/cpuinfo`), asked of `grep`.
pub fn hw_virt() -> bool {
    Command::new("grep")
        .args(["-qwE", "vmx|svm", "/proc/cpuinfo"])
        .status()
        .expect("running grep")
        .success()
}

/// Whether the host KVM is PVM (the `kvm_pvm` module is loaded).
pub fn pvm_host() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

// ---- KVM by raw ioctl ------------------------------------------------------

const KVMIO: u64 = 0xae;
const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}
const fn iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (KVMIO << 8) | nr
}
const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (KVMIO << 8) | nr
}
/// The sizes in the ioctl numbers are those of the fixed headers
/// (`struct kvm_msrs`, `struct kvm_cpuid2`): 8 bytes each.
const KVM_GET_API_VERSION: u64 = io(0x00);
const KVM_CREATE_VM: u64 = io(0x01);
const KVM_GET_SUPPORTED_CPUID: u64 = iowr(0x05, 8);
const KVM_CREATE_VCPU: u64 = io(0x41);
const KVM_GET_MSRS: u64 = iowr(0x88, 8);
const KVM_SET_MSRS: u64 = iow(0x89, 8);
const KVM_SET_CPUID2: u64 = iow(0x90, 8);
const _: () = assert!(KVM_GET_MSRS == 0xc008_ae88 && KVM_SET_MSRS == 0x4008_ae89);
const _: () = assert!(KVM_SET_CPUID2 == 0x4008_ae90 && KVM_GET_SUPPORTED_CPUID == 0xc008_ae05);

/// `IA32_ARCH_CAPABILITIES`.
pub const MSR_ARCH_CAPABILITIES: u32 = 0x10a;

/// `struct kvm_msrs` with exactly one `struct kvm_msr_entry`.
#[repr(C)]
#[derive(Default)]
struct OneMsr {
    nmsrs: u32,
    pad: u32,
    index: u32,
    reserved: u32,
    data: u64,
}

/// `struct kvm_cpuid_entry2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CpuidEntry {
    function: u32,
    index: u32,
    flags: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
    padding: [u32; 3],
}

const CPUID_ENTRIES: usize = 256;

/// `struct kvm_cpuid2` with room for 256 entries (KVM's maximum).
#[repr(C)]
struct Cpuid {
    nent: u32,
    padding: u32,
    entries: [CpuidEntry; CPUID_ENTRIES],
}

const _: () = assert!(std::mem::size_of::<OneMsr>() == 24);
const _: () = assert!(std::mem::size_of::<CpuidEntry>() == 40);

/// `ioctl(fd, request, arg)`: the result, or the OS error.
///
/// # Safety
/// `arg` must be what `request` expects: null for requests that take an
/// integer 0, else a pointer to a live structure of the request's layout.
unsafe fn ioctl(fd: RawFd, request: u64, arg: *mut libc::c_void) -> std::io::Result<i32> {
    // SAFETY: the caller passes an `arg` that matches `request`.
    let r = unsafe { libc::ioctl(fd, request as libc::Ioctl, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An ioctl that returns a new descriptor (`KVM_CREATE_VM`, `KVM_CREATE_VCPU`).
fn create(fd: RawFd, request: u64) -> std::io::Result<OwnedFd> {
    // SAFETY: both requests take the integer 0 as their argument.
    let raw = unsafe { ioctl(fd, request, std::ptr::null_mut())? };
    // SAFETY: the kernel just returned `raw` as a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// What KVM does with the `IA32_ARCH_CAPABILITIES` value it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsrCheck {
    /// `/dev/kvm` did not open.
    NoKvm(String),
    /// `KVM_GET_MSRS` on the system descriptor does not give the MSR.
    NotAdvertised,
    /// A fresh vCPU given KVM's supported CPUID took the value.
    Accepted { value: u64 },
    /// It did not (or a step before the write failed): why.
    Refused { value: u64, why: String },
}

/// Read the advertised `IA32_ARCH_CAPABILITIES` from `/dev/kvm` and write it
/// to a fresh vCPU that has KVM's supported CPUID, as a stock VMM does.
pub fn arch_capabilities_msr() -> MsrCheck {
    let kvm = match File::options().read(true).write(true).open("/dev/kvm") {
        Ok(f) => f,
        Err(e) => return MsrCheck::NoKvm(e.to_string()),
    };
    let mut msr = OneMsr {
        nmsrs: 1,
        index: MSR_ARCH_CAPABILITIES,
        ..OneMsr::default()
    };
    // SAFETY: KVM_GET_MSRS reads and fills a `struct kvm_msrs` whose
    // `nmsrs` (1) entries follow it; `msr` is exactly that.
    let got = unsafe { ioctl(kvm.as_raw_fd(), KVM_GET_MSRS, (&raw mut msr).cast()) };
    // Only feature MSRs are readable on the system descriptor: it reads
    // 0 of 1 (or fails, before KVM_CAP_GET_MSR_FEATURES) for the others.
    if !matches!(got, Ok(1)) {
        return MsrCheck::NotAdvertised;
    }
    let value = msr.data;
    let refused = |why: String| MsrCheck::Refused { value, why };
    let mut cpuid = Box::new(Cpuid {
        nent: CPUID_ENTRIES as u32,
        padding: 0,
        entries: [CpuidEntry::default(); CPUID_ENTRIES],
    });
    // SAFETY: KVM_GET_SUPPORTED_CPUID fills at most `nent` entries of the
    // `struct kvm_cpuid2` it is given; `cpuid` has room for all of them.
    if let Err(e) = unsafe {
        ioctl(
            kvm.as_raw_fd(),
            KVM_GET_SUPPORTED_CPUID,
            (&raw mut *cpuid).cast(),
        )
    } {
        return refused(format!("KVM_GET_SUPPORTED_CPUID: {e}"));
    }
    let vm = match create(kvm.as_raw_fd(), KVM_CREATE_VM) {
        Ok(fd) => fd,
        Err(e) => return refused(format!("KVM_CREATE_VM: {e}")),
    };
    let vcpu = match create(vm.as_raw_fd(), KVM_CREATE_VCPU) {
        Ok(fd) => fd,
        Err(e) => return refused(format!("KVM_CREATE_VCPU: {e}")),
    };
    // SAFETY: KVM_SET_CPUID2 reads the `struct kvm_cpuid2` header and the
    // `nent` entries KVM_GET_SUPPORTED_CPUID left in `cpuid`.
    if let Err(e) = unsafe { ioctl(vcpu.as_raw_fd(), KVM_SET_CPUID2, (&raw mut *cpuid).cast()) } {
        return refused(format!("KVM_SET_CPUID2: {e}"));
    }
    let mut set = OneMsr {
        nmsrs: 1,
        index: MSR_ARCH_CAPABILITIES,
        data: value,
        ..OneMsr::default()
    };
    // SAFETY: KVM_SET_MSRS reads a `struct kvm_msrs` with `nmsrs` (1)
    // entries following it; `set` is exactly that.
    match unsafe { ioctl(vcpu.as_raw_fd(), KVM_SET_MSRS, (&raw mut set).cast()) } {
        Ok(1) => MsrCheck::Accepted { value },
        Ok(n) => refused(format!("KVM_SET_MSRS set {n} of 1")),
        Err(e) => refused(format!("KVM_SET_MSRS: {e}")),
    }
}

/// The doctor's `kvm` state for this host, from the checks above:
/// `absent` / `no_access` when `/dev/kvm` does not open; `present_unusable`
/// on a PVM host, with an unexpected API version, or when the vCPU refuses
/// the advertised `IA32_ARCH_CAPABILITIES`; `usable` on hardware KVM
/// (vmx/svm) that accepts it. `Err` for a KVM these checks cannot judge
/// (neither PVM nor vmx/svm): only a guest run could tell.
pub fn kvm_state() -> Result<&'static str, String> {
    let kvm = match open_rw("/dev/kvm") {
        NodeState::Absent => return Ok("absent"),
        NodeState::Fails(_) => return Ok("no_access"),
        NodeState::Opens => File::options()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .expect("/dev/kvm opened a moment ago"),
    };
    // SAFETY: KVM_GET_API_VERSION takes the integer 0.
    let api = unsafe { ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, std::ptr::null_mut()) };
    if pvm_host() || !matches!(api, Ok(12)) {
        return Ok("present_unusable");
    }
    match arch_capabilities_msr() {
        MsrCheck::Refused { .. } => Ok("present_unusable"),
        _ if hw_virt() => Ok("usable"),
        msr => Err(format!(
            "/dev/kvm opens, API 12, IA32_ARCH_CAPABILITIES {msr:?}, but the host KVM is neither \
             PVM nor backed by vmx/svm: cannot tell without running a guest"
        )),
    }
}
