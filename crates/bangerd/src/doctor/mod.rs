//! `banger doctor`: turn host facts into a report of checks with fix hints.
//!
//! Facts come from two places. The privileged ones (KVM, device nodes, nft)
//! are probed by the executor and arrive over the privileged-ops seam; the
//! rest the owner daemon gathers itself ([`gather_unprivileged`]). The caller
//! combines both into [`HostFacts`]; [`assemble`] is pure and does no I/O.
//!
//! # Checks
//!
//! Every report carries these checks, in this order. Ids and states are
//! stable (scripts match on them); summaries and hints are prose.
//!
//! | id | states | status |
//! |---|---|---|
//! | `privileged_helper` | `in_process`, `connected`, `version_mismatch`, `unreachable` | fail when unreachable, warn on a version mismatch |
//! | `kvm` | `usable`, `present_unusable`, `no_access`, `absent` | pass when usable; otherwise warn while QEMU works (TCG), fail when it does not |
//! | `tun` | `present`, `absent`, `unusable` | fail unless present |
//! | `vhost_vsock` | `present`, `absent`, `unusable` | warn unless present (only QEMU vsock needs it) |
//! | `loop_control` | `present`, `absent`, `unusable` | fail unless present |
//! | `device_mapper` | `present`, `absent`, `unusable` | warn unless present (snapshots fall back to reflink/copy) |
//! | `nft` | `found`, `missing`, `broken` | fail unless found |
//! | `ip_forward` | `enabled`, `disabled`, `unknown` | warn unless enabled (banger enables it when it sets up the bridge) |
//! | `jail_scope` | `scoped`, `unscoped`, `unknown` | warn unless every jail the executor makes enters the Landlock scope on abstract UNIX sockets and signals (without it, a Firecracker jail sharing the host's network namespace can connect to the host's abstract UNIX sockets) |
//! | `e2fsprogs` | `found`, `missing`, `broken`, `too_old`, `unknown_version` | fail when missing, broken or older than 1.43; warn on an unreadable version |
//! | `firecracker` | `found`, `missing`, `broken` | warn unless found and KVM is usable |
//! | `qemu` | `found`, `missing`, `broken` | warn unless found |
//! | `vmm_backend` | `available`, `none` | fail when no backend can boot a guest |
//! | `cgroup_v2` | `unified`, `unified_no_limits`, `hybrid`, `legacy`, `missing` | warn unless unified with the memory, pids and cpu controllers (per-VM limits; each message says whether they are available and why not) |
//! | `systemd_resolved` | `running`, `running_bypassed`, `unreachable`, `absent` | warn unless running with the stub in `/etc/resolv.conf` |
//! | `reflink` | `supported`, `unsupported`, `error` | warn unless supported |
//! | `snapshot_backend` | `dm_snapshot`, `reflink`, `sparse_copy`, `unknown` | pass (says which backend new root disks get; `device_mapper` and `reflink` carry the warnings); warn/`unknown` when the helper is unreachable |
//! | `host_guard` | `current`, `missing`, `stale`, `dev_mode` | pass when the install's udev rule (and, where lvm2 is installed, banger's LVM filter) is current; warn otherwise, and always in dev mode |
//!
//! When the helper is unreachable the privileged facts are not known: the
//! checks built from them (`kvm`, the four devices, `nft`, `ip_forward`,
//! `jail_scope`) are warn/`unknown`,
//! whatever placeholder values the caller put in [`HostFacts`], and no backend
//! is usable (the helper owns VMM processes).

mod gather;
mod host_guard;
#[cfg(test)]
mod tests;
mod vmm;

use banger_host::probe::{
    CgroupMode, CgroupProbe, ReflinkProbe, ReflinkSupport, ResolvedProbe, ResolvedSocket,
};
use banger_proto::doctor::{Check, CheckStatus, DoctorReport};
use banger_proto::privops::{
    DeviceProbe, DeviceState, HostDevice, JailScopeProbe, KvmProbe, KvmVerdict, SnapshotBackend,
    ToolProbe, VmmSupport,
};

pub use crate::privileged::Channel;
pub use gather::{UnprivilegedFacts, gather_unprivileged};
pub use host_guard::HostGuard;

/// Stable check ids, in report order.
pub mod ids {
    pub const PRIVILEGED_HELPER: &str = "privileged_helper";
    pub const KVM: &str = "kvm";
    pub const TUN: &str = "tun";
    pub const VHOST_VSOCK: &str = "vhost_vsock";
    pub const LOOP_CONTROL: &str = "loop_control";
    pub const DEVICE_MAPPER: &str = "device_mapper";
    pub const NFT: &str = "nft";
    pub const IP_FORWARD: &str = "ip_forward";
    pub const JAIL_SCOPE: &str = "jail_scope";
    pub const E2FSPROGS: &str = "e2fsprogs";
    pub const FIRECRACKER: &str = "firecracker";
    pub const QEMU: &str = "qemu";
    pub const VMM_BACKEND: &str = "vmm_backend";
    pub const CGROUP_V2: &str = "cgroup_v2";
    pub const SYSTEMD_RESOLVED: &str = "systemd_resolved";
    pub const REFLINK: &str = "reflink";
    pub const SNAPSHOT_BACKEND: &str = "snapshot_backend";
    pub const HOST_GUARD: &str = "host_guard";

    pub const ALL: [&str; 18] = [
        PRIVILEGED_HELPER,
        KVM,
        TUN,
        VHOST_VSOCK,
        LOOP_CONTROL,
        DEVICE_MAPPER,
        NFT,
        IP_FORWARD,
        JAIL_SCOPE,
        E2FSPROGS,
        FIRECRACKER,
        QEMU,
        VMM_BACKEND,
        CGROUP_V2,
        SYSTEMD_RESOLVED,
        REFLINK,
        SNAPSHOT_BACKEND,
        HOST_GUARD,
    ];
}

/// Oldest e2fsprogs whose `mkfs.ext4` has `-d` (populate from a directory).
pub const MIN_E2FSPROGS: (u32, u32) = (1, 43);

/// Everything the doctor needs to know about the host.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub kvm: KvmProbe,
    pub devices: Vec<DeviceProbe>,
    pub nft: ToolProbe,
    pub mkfs_ext4: ToolProbe,
    pub e2fsck: ToolProbe,
    pub firecracker: ToolProbe,
    pub qemu: ToolProbe,
    pub cgroup_v2: CgroupProbe,
    pub resolved: ResolvedProbe,
    pub reflink: ReflinkProbe,
    /// `dmsetup`, which dm-snapshot root disks need.
    pub dmsetup: ToolProbe,
    /// How privileged operations were reached (or why not).
    pub privileged_channel: Channel,
    /// `net.ipv4.ip_forward` where the executor runs; `None` when unknown.
    pub ip_forward: Option<bool>,
    /// Whether the executor's jails enter the Landlock scope; `None` when
    /// the helper did not say.
    pub jail_scope: Option<JailScopeProbe>,
    /// The udev rule and LVM filter of issue #13 finding 8.
    pub host_guard: HostGuard,
    /// What the executor says it can run (`ProbeVmms`): what `vm create`
    /// chooses from. `None` when it did not say.
    pub vmm_support: Option<VmmSupport>,
}

/// What the executor answered the doctor (through the seam).
#[derive(Debug, Clone)]
pub struct PrivilegedFacts {
    pub kvm: KvmProbe,
    pub devices: Vec<DeviceProbe>,
    pub nft: ToolProbe,
    /// `None` where the executor did not say (each is best-effort).
    pub ip_forward: Option<bool>,
    pub jail_scope: Option<JailScopeProbe>,
    pub vmm_support: Option<VmmSupport>,
}

impl HostFacts {
    /// Combine the facts from the seam with those the daemon gathered.
    ///
    /// When `privileged_channel` is [`Channel::HelperUnreachable`], the
    /// privileged facts are ignored; pass any placeholder.
    pub fn combine(
        privileged_channel: Channel,
        privileged: PrivilegedFacts,
        unprivileged: UnprivilegedFacts,
    ) -> HostFacts {
        let PrivilegedFacts {
            kvm,
            devices,
            nft,
            ip_forward,
            jail_scope,
            vmm_support,
        } = privileged;
        let UnprivilegedFacts {
            mkfs_ext4,
            e2fsck,
            firecracker,
            qemu,
            cgroup_v2,
            resolved,
            reflink,
            dmsetup,
            host_guard,
        } = unprivileged;
        HostFacts {
            kvm,
            devices,
            nft,
            mkfs_ext4,
            e2fsck,
            firecracker,
            qemu,
            cgroup_v2,
            resolved,
            reflink,
            dmsetup,
            privileged_channel,
            ip_forward,
            jail_scope,
            host_guard,
            vmm_support,
        }
    }

    /// Facts for a host whose privileged helper could not be reached: the
    /// privileged probes did not run, so their fields hold "not probed"
    /// values that [`assemble`] never reads.
    pub fn without_privileged(channel: Channel, unprivileged: UnprivilegedFacts) -> HostFacts {
        debug_assert!(matches!(channel, Channel::HelperUnreachable { .. }));
        let not_probed = "not probed: the privileged helper is unreachable".to_string();
        let kvm = KvmProbe {
            device: DeviceState::Unusable {
                error: not_probed.clone(),
            },
            api_version: None,
            guest_test: banger_proto::privops::GuestTest::NotRun,
            arch_capabilities_msr: banger_proto::privops::MsrTest::NotRun,
            pvm_host: false,
            hw_virt: false,
        };
        let nft = ToolProbe {
            tool: "nft".into(),
            path: None,
            version: None,
            works: false,
            error: Some(not_probed),
        };
        let privileged = PrivilegedFacts {
            kvm,
            devices: Vec::new(),
            nft,
            ip_forward: None,
            jail_scope: None,
            vmm_support: None,
        };
        Self::combine(channel, privileged, unprivileged)
    }

    fn helper_reachable(&self) -> bool {
        !matches!(self.privileged_channel, Channel::HelperUnreachable { .. })
    }

    /// The KVM verdict, when known.
    fn kvm_verdict(&self) -> Option<KvmVerdict> {
        self.helper_reachable().then(|| self.kvm.verdict())
    }
}

/// Build the report. Pure: no I/O.
pub fn assemble(f: &HostFacts) -> DoctorReport {
    let backends = vmm::backends(f);
    let any_backend = backends.iter().any(|b| b.usable);
    let mut checks = vec![privileged_helper(&f.privileged_channel)];
    if f.helper_reachable() {
        checks.push(vmm::kvm(&f.kvm, f.qemu.works, f.vmm_support.as_ref()));
        checks.extend(device_checks(f));
        checks.push(nft(&f.nft));
        checks.push(ip_forward(f.ip_forward));
        checks.push(jail_scope(f.jail_scope.as_ref()));
    } else {
        for id in [
            ids::KVM,
            ids::TUN,
            ids::VHOST_VSOCK,
            ids::LOOP_CONTROL,
            ids::DEVICE_MAPPER,
            ids::NFT,
            ids::IP_FORWARD,
            ids::JAIL_SCOPE,
        ] {
            checks.push(Check {
                id: id.into(),
                status: CheckStatus::Warn,
                state: "unknown".into(),
                summary: "not checked: the privileged helper is unreachable".into(),
                hint: Some("fix `privileged_helper` first, then run `banger doctor` again".into()),
            });
        }
    }
    checks.push(e2fsprogs(&f.mkfs_ext4, &f.e2fsck));
    checks.push(vmm::firecracker(&f.firecracker, f.kvm_verdict()));
    checks.push(vmm::qemu(&f.qemu, f.kvm_verdict()));
    checks.push(vmm::vmm_backend(f, &backends, any_backend));
    checks.push(cgroup_v2(&f.cgroup_v2));
    checks.push(systemd_resolved(&f.resolved));
    checks.push(reflink(&f.reflink));
    checks.push(snapshot_backend(f));
    checks.push(host_guard::check(&f.host_guard));
    DoctorReport { checks, backends }
}

/// The backend the executor picks for new root disks on this host, by the
/// same rule it uses (`SnapshotBackend::select`); `None` when the helper is
/// unreachable and the device-mapper node was not probed.
pub fn snapshot_backend_of(f: &HostFacts) -> Option<SnapshotBackend> {
    if matches!(f.privileged_channel, Channel::HelperUnreachable { .. }) {
        return None;
    }
    // The executor's probe of the node includes DM_VERSION, so `Present`
    // means device-mapper works for the executor (CAP_SYS_ADMIN), not just
    // that the node opens. Loop devices are attached by ioctl: losetup is
    // not needed.
    let mapper = f
        .devices
        .iter()
        .any(|d| d.device == HostDevice::MapperControl && d.state == DeviceState::Present);
    let dm = mapper && f.dmsetup.path.is_some();
    let reflink = f.reflink.support == ReflinkSupport::Supported;
    Some(SnapshotBackend::select(dm, reflink))
}

fn snapshot_backend(f: &HostFacts) -> Check {
    let id = ids::SNAPSHOT_BACKEND;
    let Some(backend) = snapshot_backend_of(f) else {
        return not_pass(
            id,
            CheckStatus::Warn,
            "unknown",
            "not checked: the privileged helper is unreachable".into(),
            "fix `privileged_helper` first, then run `banger doctor` again",
        );
    };
    let dir = f.reflink.dir.display();
    let mapper = f
        .devices
        .iter()
        .find(|d| d.device == HostDevice::MapperControl)
        .map(|d| &d.state);
    let why_not_dm = if f.dmsetup.path.is_none() {
        "dmsetup is not installed".to_string()
    } else if let Some(DeviceState::Unusable { error }) = mapper {
        format!("device-mapper unusable for the executor: {error}")
    } else {
        "no device-mapper".to_string()
    };
    let summary = match backend {
        SnapshotBackend::DmSnapshot => {
            "VM root disks are dm-snapshots of the image over loop devices".to_string()
        }
        SnapshotBackend::Reflink => {
            format!("VM root disks are reflink clones in {dir} ({why_not_dm})")
        }
        SnapshotBackend::SparseCopy => {
            format!("VM root disks are sparse copies ({why_not_dm}, no reflink in {dir})")
        }
    };
    pass(id, backend.as_str(), summary)
}

fn pass(id: &str, state: &str, summary: String) -> Check {
    Check {
        id: id.into(),
        status: CheckStatus::Pass,
        state: state.into(),
        summary,
        hint: None,
    }
}

fn not_pass(
    id: &str,
    status: CheckStatus,
    state: &str,
    summary: String,
    hint: impl Into<String>,
) -> Check {
    Check {
        id: id.into(),
        status,
        state: state.into(),
        summary,
        hint: Some(hint.into()),
    }
}

fn privileged_helper(channel: &Channel) -> Check {
    let id = ids::PRIVILEGED_HELPER;
    let ours = banger_proto::BANGER_VERSION;
    match channel {
        Channel::InProcess => pass(
            id,
            "in_process",
            "dev mode: privileged operations run in this process (bangerd --dev as root)".into(),
        ),
        Channel::Helper { socket, version } if version == ours => pass(
            id,
            "connected",
            format!("bangerd-root {version} answers on {}", socket.display()),
        ),
        Channel::Helper { socket, version } => not_pass(
            id,
            CheckStatus::Warn,
            "version_mismatch",
            format!(
                "bangerd-root on {} is {version} but bangerd is {ours}",
                socket.display()
            ),
            "restart both services after an upgrade: `banger system restart`",
        ),
        Channel::HelperUnreachable { socket, error } => not_pass(
            id,
            CheckStatus::Fail,
            "unreachable",
            format!(
                "the privileged helper bangerd-root is unreachable on {}: {error}",
                socket.display()
            ),
            "start it with `banger system restart`, or reinstall with `banger system install`",
        ),
    }
}
fn device_checks(f: &HostFacts) -> Vec<Check> {
    let state_of = |device: HostDevice| {
        f.devices
            .iter()
            .find(|d| d.device == device)
            .map(|d| &d.state)
    };
    let reflink_note = match f.reflink.support {
        ReflinkSupport::Supported => "reflink copies (supported in the state dir)",
        _ => "sparse copies (reflink is not available in the state dir)",
    };
    let specs: [(&str, HostDevice, CheckStatus, String, &str); 4] = [
        (
            ids::TUN,
            HostDevice::Tun,
            CheckStatus::Fail,
            "VM network taps cannot be created".into(),
            "load the tun module: `modprobe tun` (CONFIG_TUN)",
        ),
        (
            ids::VHOST_VSOCK,
            HostDevice::VhostVsock,
            CheckStatus::Warn,
            "QEMU guests get no vsock and readiness falls back to serial/SSH (Firecracker's vsock is AF_UNIX and unaffected)"
                .into(),
            "load the module: `modprobe vhost_vsock` (CONFIG_VHOST_VSOCK)",
        ),
        (
            ids::LOOP_CONTROL,
            HostDevice::LoopControl,
            CheckStatus::Fail,
            "disk images cannot be attached as loop devices".into(),
            "load the loop module: `modprobe loop` (CONFIG_BLK_DEV_LOOP)",
        ),
        (
            ids::DEVICE_MAPPER,
            HostDevice::MapperControl,
            CheckStatus::Warn,
            format!("VM disks fall back from dm-snapshot to {reflink_note}"),
            "load device-mapper: `modprobe dm_snapshot` (CONFIG_BLK_DEV_DM, CONFIG_DM_SNAPSHOT)",
        ),
    ];
    specs
        .into_iter()
        .map(|(id, device, bad, consequence, hint)| {
            let path = device.path();
            match state_of(device) {
                Some(DeviceState::Present) => {
                    pass(id, "present", format!("{path} opens read-write"))
                }
                Some(DeviceState::Absent) => {
                    not_pass(id, bad, "absent", format!("no {path}: {consequence}"), hint)
                }
                Some(DeviceState::Unusable { error }) => not_pass(
                    id,
                    bad,
                    "unusable",
                    format!("{path} exists but cannot be opened ({error}): {consequence}"),
                    format!("check {path}'s owner and mode, and that its driver loaded (`dmesg`)"),
                ),
                None => not_pass(
                    id,
                    CheckStatus::Warn,
                    "unknown",
                    format!("{path} was not probed"),
                    "run `banger doctor` again; report a bug if this persists",
                ),
            }
        })
        .collect()
}

/// `found` / `missing` / `broken`.
fn tool_state(t: &ToolProbe) -> &'static str {
    match (&t.path, t.works) {
        (None, _) => "missing",
        (Some(_), true) => "found",
        (Some(_), false) => "broken",
    }
}

/// "nftables v1.0.6 at /usr/sbin/nft".
fn tool_found_text(t: &ToolProbe) -> String {
    let version = t.version.as_deref().unwrap_or(&t.tool);
    match &t.path {
        Some(path) => format!("{version} at {path}"),
        None => version.to_string(),
    }
}

fn tool_error(t: &ToolProbe) -> &str {
    t.error.as_deref().unwrap_or("unknown error")
}

fn nft(t: &ToolProbe) -> Check {
    let id = ids::NFT;
    match tool_state(t) {
        "found" => pass(
            id,
            "found",
            format!("{}; it can list tables", tool_found_text(t)),
        ),
        "missing" => not_pass(
            id,
            CheckStatus::Fail,
            "missing",
            format!("{}: banger cannot set up VM NAT", tool_error(t)),
            "install nftables: `apt-get install nftables`",
        ),
        _ => not_pass(
            id,
            CheckStatus::Fail,
            "broken",
            format!("nft does not work: {}", tool_error(t)),
            "check that the kernel has nf_tables (`modprobe nf_tables`, CONFIG_NF_TABLES, CONFIG_NFT_NAT)",
        ),
    }
}

fn ip_forward(v: Option<bool>) -> Check {
    let id = ids::IP_FORWARD;
    match v {
        Some(true) => pass(
            id,
            "enabled",
            "net.ipv4.ip_forward is 1: guests can be routed and NATed".into(),
        ),
        Some(false) => not_pass(
            id,
            CheckStatus::Warn,
            "disabled",
            "net.ipv4.ip_forward is 0: NAT-enabled guests cannot reach anything beyond the host"
                .into(),
            "banger enables it when it sets up its bridge (restart bangerd); if something resets it, set `net.ipv4.ip_forward = 1` in /etc/sysctl.d/",
        ),
        None => not_pass(
            id,
            CheckStatus::Warn,
            "unknown",
            "net.ipv4.ip_forward could not be read".into(),
            "check the privileged helper, then run `banger doctor` again",
        ),
    }
}

/// Whether the jails the executor makes (disk tools, QEMU, and Firecracker
/// once it runs jailed) enter the Landlock scope on abstract UNIX sockets
/// and signals, and what its absence leaves open.
fn jail_scope(scope: Option<&JailScopeProbe>) -> Check {
    let id = ids::JAIL_SCOPE;
    match scope {
        Some(JailScopeProbe::Scoped) => pass(
            id,
            "scoped",
            "jailed VMMs and disk tools enter a Landlock scope: they can neither connect to an \
             abstract UNIX socket nor signal a process outside their jail"
                .into(),
        ),
        Some(JailScopeProbe::Unscoped { reason }) => not_pass(
            id,
            CheckStatus::Warn,
            "unscoped",
            format!(
                "jailed VMMs and disk tools get no Landlock scope: {reason}. Every jail, \
                 Firecracker's included, still has network and pid namespaces of its own, \
                 which keep it from the host's abstract UNIX sockets and from signalling \
                 processes outside it; the scope is the second wall, missing here"
            ),
            "run Linux 6.12 or later with Landlock enabled (`landlock` in the `lsm=` list), and \
             the helper unit of this version (`banger system install`), whose seccomp filter \
             allows landlock_create_ruleset and landlock_restrict_self",
        ),
        None => not_pass(
            id,
            CheckStatus::Warn,
            "unknown",
            "the privileged helper did not say whether jails enter the Landlock scope".into(),
            "check the privileged helper, then run `banger doctor` again",
        ),
    }
}

/// `(major, minor)` from a version line such as "mke2fs 1.47.0 (5-Feb-2023)".
pub fn parse_version(line: &str) -> Option<(u32, u32)> {
    line.split(|c: char| c.is_whitespace() || c == 'v')
        .find_map(|word| {
            let mut parts = word.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts
                .next()?
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()?;
            Some((major, minor))
        })
}

fn e2fsprogs(mkfs: &ToolProbe, fsck: &ToolProbe) -> Check {
    let id = ids::E2FSPROGS;
    let install = "install e2fsprogs: `apt-get install e2fsprogs`";
    let missing: Vec<&str> = [mkfs, fsck]
        .iter()
        .filter(|t| t.path.is_none())
        .map(|t| t.tool.as_str())
        .collect();
    if !missing.is_empty() {
        return not_pass(
            id,
            CheckStatus::Fail,
            "missing",
            format!("{} not found on PATH", missing.join(" and ")),
            install,
        );
    }
    if let Some(bad) = [mkfs, fsck].into_iter().find(|t| !t.works) {
        return not_pass(
            id,
            CheckStatus::Fail,
            "broken",
            format!("{} does not run: {}", bad.tool, tool_error(bad)),
            "reinstall e2fsprogs: `apt-get install --reinstall e2fsprogs`",
        );
    }
    let line = mkfs.version.as_deref().unwrap_or("");
    match parse_version(line) {
        Some(v) if v >= MIN_E2FSPROGS => {
            pass(id, "found", format!("e2fsprogs {}.{}: {line}", v.0, v.1))
        }
        Some(v) => not_pass(
            id,
            CheckStatus::Fail,
            "too_old",
            format!(
                "e2fsprogs {}.{} is older than {}.{}: `mkfs.ext4 -d` is missing",
                v.0, v.1, MIN_E2FSPROGS.0, MIN_E2FSPROGS.1
            ),
            format!(
                "install e2fsprogs {}.{} or newer",
                MIN_E2FSPROGS.0, MIN_E2FSPROGS.1
            ),
        ),
        None => not_pass(
            id,
            CheckStatus::Warn,
            "unknown_version",
            format!("cannot read the e2fsprogs version from {line:?}"),
            format!(
                "make sure `mkfs.ext4 -V` reports e2fsprogs {}.{} or newer",
                MIN_E2FSPROGS.0, MIN_E2FSPROGS.1
            ),
        ),
    }
}
fn cgroup_v2(c: &CgroupProbe) -> Check {
    let id = ids::CGROUP_V2;
    let hint = "boot with `systemd.unified_cgroup_hierarchy=1` for a pure cgroup v2 host; VM resource accounting and limits need it";
    let controllers = if c.controllers.is_empty() {
        "none".to_string()
    } else {
        c.controllers.join(" ")
    };
    let mount = c
        .cgroup2_mount
        .as_ref()
        .map(|m| m.display().to_string())
        .unwrap_or_default();
    // Per-VM cgroups (`banger_executor::VmCgroups`) limit each VMM with
    // these controllers; without one a VMM has its rlimits only.
    let missing: Vec<&str> = banger_executor::VmCgroups::CONTROLLERS
        .iter()
        .copied()
        .filter(|w| !c.controllers.iter().any(|h| h == w))
        .collect();
    let unavailable = |why: &str| {
        format!("per-VM limits are unavailable ({why}); each VMM is bounded by its rlimits only")
    };
    match c.mode {
        CgroupMode::Unified if missing.is_empty() => pass(
            id,
            "unified",
            format!(
                "cgroup v2 at {mount}, controllers: {controllers}; per-VM limits (memory.max, pids.max, cpu.max) are available where the helper's cgroup is delegated"
            ),
        ),
        CgroupMode::Unified => not_pass(
            id,
            CheckStatus::Warn,
            "unified_no_limits",
            format!(
                "cgroup v2 at {mount}, controllers: {controllers}; {}",
                unavailable(&format!("no {} controller", missing.join("/")))
            ),
            "enable the memory, pids and cpu controllers at the cgroup2 root",
        ),
        CgroupMode::Hybrid => not_pass(
            id,
            CheckStatus::Warn,
            "hybrid",
            format!(
                "cgroup v2 only at {mount} (hybrid layout), controllers: {controllers}; the rest are bound to v1; {}",
                unavailable("cgroup v2 has no memory/pids/cpu controller on a hybrid host")
            ),
            hint,
        ),
        CgroupMode::Legacy => not_pass(
            id,
            CheckStatus::Warn,
            "legacy",
            format!(
                "only cgroup v1 hierarchies are mounted; {}",
                unavailable("no cgroup v2")
            ),
            hint,
        ),
        CgroupMode::Missing => not_pass(
            id,
            CheckStatus::Warn,
            "missing",
            format!(
                "no cgroup filesystem: {}; {}",
                c.error.as_deref().unwrap_or("nothing mounted"),
                unavailable("no cgroup v2")
            ),
            hint,
        ),
    }
}

fn systemd_resolved(r: &ResolvedProbe) -> Check {
    let id = ids::SYSTEMD_RESOLVED;
    let nameservers = if r.nameservers.is_empty() {
        "no nameservers".to_string()
    } else {
        r.nameservers.join(", ")
    };
    let no_resolved_hint = "point your resolver at banger's DNS (the bridge address) for the `vm` domain, \
                            e.g. dnsmasq `server=/vm/<bridge-ip>`, or enable systemd-resolved";
    match (&r.socket, r.stub_in_resolv_conf) {
        (ResolvedSocket::Accepting, true) => pass(
            id,
            "running",
            "systemd-resolved is running and /etc/resolv.conf uses its stub: `.vm` names will resolve".into(),
        ),
        (ResolvedSocket::Accepting, false) => not_pass(
            id,
            CheckStatus::Warn,
            "running_bypassed",
            format!("systemd-resolved is running but /etc/resolv.conf lists {nameservers}, not its stub: `.vm` names will not resolve"),
            "ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf",
        ),
        (ResolvedSocket::Unreachable { error }, _) => not_pass(
            id,
            CheckStatus::Warn,
            "unreachable",
            format!("systemd-resolved's socket is there but not answering ({error}): `.vm` names will not resolve"),
            "restart it: `systemctl restart systemd-resolved`",
        ),
        (ResolvedSocket::Absent, _) => not_pass(
            id,
            CheckStatus::Warn,
            "absent",
            format!("systemd-resolved is not running (resolv.conf: {nameservers}): `.vm` names will not resolve on the host"),
            no_resolved_hint,
        ),
    }
}

fn reflink(r: &ReflinkProbe) -> Check {
    let id = ids::REFLINK;
    let dir = r.dir.display();
    let fs = r.fs_type.as_deref().unwrap_or("unknown filesystem");
    match &r.support {
        ReflinkSupport::Supported => pass(
            id,
            "supported",
            format!("reflink (FICLONE) works in {dir} ({fs})"),
        ),
        ReflinkSupport::Unsupported { error } => not_pass(
            id,
            CheckStatus::Warn,
            "unsupported",
            format!(
                "no reflink in {dir} ({fs}: {error}): disk copies fall back to sparse copies (slower, more space)"
            ),
            "put banger's state dir on XFS (reflink=1) or btrfs for instant disk copies",
        ),
        ReflinkSupport::Failed { stage, error } => not_pass(
            id,
            CheckStatus::Warn,
            "error",
            format!("the reflink probe in {dir} failed at {stage}: {error}"),
            format!("make sure {dir} exists and the owner user can write to it"),
        ),
    }
}
