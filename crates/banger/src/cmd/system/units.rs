//! The three systemd units, as pure functions of the install metadata: the
//! owner daemon's, the root helper's, and the holder of the VMs' cgroups.
//!
//! Paths inside the units are the final system paths; `--root DIR` changes
//! where the files are written, never what they say. Every hardening choice
//! is explained in a comment inside the unit itself, so an administrator
//! reading `/etc/systemd/system/bangerd*.service` sees why it is there.

use std::path::{Path, PathBuf};

use banger_proto::install::InstallMeta;

/// The owner daemon's unit.
pub const OWNER_UNIT: &str = "bangerd.service";
/// The root helper's unit.
pub const HELPER_UNIT: &str = banger_proto::install::HELPER_UNIT;
/// The holder of the VMs' cgroups: started once, never restarted by banger.
pub const VMS_UNIT: &str = banger_proto::install::VMS_UNIT;
/// What the holder runs: a shell that moves a `sleep infinity` into its
/// child cgroup (with cgroup2), or nothing (`/bin/true`, without).
const SH: &str = "/bin/sh";
const SLEEP: &str = "/bin/sleep";
const TRUE: &str = "/bin/true";

/// Where systemd creates `StateDirectory=` directories.
const STATE_BASE: &str = "/var/lib";
/// Where systemd creates `RuntimeDirectory=` directories.
const RUNTIME_BASE: &str = "/run";

/// Kernel-facing hardening both units share: neither daemon changes kernel
/// tunables, modules, logs, cgroups (but for the holder's delegated one,
/// made writable by the helper's `ReadWritePaths=`), the clock or the
/// hostname.
const KERNEL_HARDENING: &str = "\
ProtectKernelTunables=yes\n\
ProtectKernelModules=yes\n\
ProtectKernelLogs=yes\n\
ProtectControlGroups=yes\n\
ProtectClock=yes\n\
ProtectHostname=yes\n\
LockPersonality=yes\n\
RestrictRealtime=yes\n\
";

/// Device nodes the helper and the VMMs it starts open: taps
/// (`/dev/net/tun`), KVM, vhost-vsock, and the loop and device-mapper
/// control nodes (also the doctor's probes). The loop and dm block devices
/// themselves are allowed by class (`block-loop`, `block-device-mapper`):
/// they are created on demand.
const HELPER_DEVICES: [&str; 5] = [
    "/dev/net/tun",
    "/dev/kvm",
    "/dev/vhost-vsock",
    "/dev/loop-control",
    "/dev/mapper/control",
];
const HELPER_DEVICE_CLASSES: [&str; 2] = ["block-loop", "block-device-mapper"];

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(
        "{what} {} must be a directory directly under {base}, where systemd creates it",
        path.display()
    )]
    NotUnder {
        what: &'static str,
        path: PathBuf,
        base: &'static str,
    },
    #[error(
        "{what} {value:?} cannot be written into a unit file; accepted: letters, digits and `._-@+/`"
    )]
    Unsafe { what: &'static str, value: String },
}

/// The name of `path` relative to `base` (`/var/lib/banger` → `banger`), as
/// `StateDirectory=`/`RuntimeDirectory=` want it: one plain component.
fn dir_under(what: &'static str, path: &Path, base: &'static str) -> Result<String, UnitError> {
    let not_under = || UnitError::NotUnder {
        what,
        path: path.to_path_buf(),
        base,
    };
    let rel = path.strip_prefix(base).map_err(|_| not_under())?;
    let mut comps = rel.components();
    match (comps.next(), comps.next()) {
        (Some(std::path::Component::Normal(name)), None) => {
            let name = name.to_str().ok_or_else(not_under)?;
            safe(what, name)?;
            Ok(name.to_string())
        }
        _ => Err(not_under()),
    }
}

/// Refuse values that would need quoting or escaping in a unit file (spaces,
/// quotes, `%` specifiers, backslashes, newlines). Real user names and home
/// directories pass.
fn safe<'a>(what: &'static str, value: &'a str) -> Result<&'a str, UnitError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@+/".contains(c));
    if ok {
        Ok(value)
    } else {
        Err(UnitError::Unsafe {
            what,
            value: value.to_string(),
        })
    }
}

fn path_str(what: &'static str, p: &Path) -> Result<String, UnitError> {
    let s = p.to_str().ok_or_else(|| UnitError::Unsafe {
        what,
        value: p.to_string_lossy().into_owned(),
    })?;
    if !p.is_absolute() {
        return Err(UnitError::Unsafe {
            what,
            value: s.to_string(),
        });
    }
    safe(what, s).map(str::to_string)
}

/// `bangerd.service`: the owner daemon, as the owner, with no capabilities.
///
/// `install_file` is the metadata path passed to `--install-file`;
/// `owner_home` is the owner's home directory from the password database.
pub fn owner_unit(
    meta: &InstallMeta,
    install_file: &Path,
    owner_home: &Path,
) -> Result<String, UnitError> {
    let user = safe("owner name", &meta.owner.name)?;
    let exe = path_str("binary directory", &meta.paths.bin_dir.join("bangerd"))?;
    let install_file = path_str("install file", install_file)?;
    let state = dir_under("state directory", &meta.paths.state_dir, STATE_BASE)?;
    let runtime = dir_under("runtime directory", &meta.paths.runtime_dir, RUNTIME_BASE)?;
    let home = path_str("owner home directory", owner_home)?;
    Ok(format!(
        "\
# Written by `banger system install`; reinstalling rewrites it.
# bangerd: the banger daemon. Runs as the owner user with no capabilities;
# every privileged operation goes to bangerd-root.service over its socket.
[Unit]
Description=banger daemon (microVMs for {user})
Requires={HELPER_UNIT}
After={HELPER_UNIT} systemd-resolved.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} --install-file {install_file}
Restart=on-failure
RestartSec=2s
User={user}
UMask=0077

# {STATE_BASE}/{state}: store, images, kernels, VMs (owner, 0700).
StateDirectory={state}
StateDirectoryMode=0700
# {RUNTIME_BASE}/{runtime}: bangerd.sock (owner, 0755; the socket itself is 0600
# and serves only the owner and root). The helper's socket lives in its own
# root-owned directory, so restarting one service never removes the other's.
RuntimeDirectory={runtime}
RuntimeDirectoryMode=0755

# No privilege of any kind.
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
# Not RestrictSUIDSGID=: its seccomp filter cannot see openat2's flags and
# so refuses every openat2 with ENOSYS, and banger opens files beneath
# directories with openat2 (RESOLVE_BENEATH). NoNewPrivileges= already makes
# set-user-ID bits meaningless for whatever runs under this unit.
PrivateUsers=yes

# File system: read-only OS, private /tmp, no devices, and of all home
# directories only the owner's: bangerd reads ~/.config/banger/config.toml
# and the owner's public SSH keys there, copies workspaces (checkouts in the
# owner's home) into VMs and lands their export as a branch in the checkout
# (so read-write), and file_sync is confined to it.
ProtectSystem=strict
ProtectHome=tmpfs
BindPaths=-{home}
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateMounts=yes
PrivateIPC=yes
ProtectProc=invisible
ProcSubset=pid

# Kernel and host state it has no business changing.
{KERNEL_HARDENING}RestrictNamespaces=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private

# Sockets: its own and the helper's (unix), DNS forwarding and guest SSH
# (inet). The .vm DNS sockets on port 53 are bound by the helper and passed
# in, so no bind privilege is needed.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
# seccomp: the doctor's QEMU probe (`-sandbox ... -version`); QEMU offers
# `-sandbox` only where it can install a filter. A filter only takes away.
SystemCallFilter=@system-service seccomp
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"
    ))
}

/// Where systemd puts a system service's cgroup, beneath the cgroup2 mount.
const SYSTEM_SLICE: &str = "system.slice";

/// The controllers delegated to the holder unit for the VMs' cgroups
/// (`banger_executor::VmCgroups`).
pub const DELEGATED_CONTROLLERS: &str = "pids memory cpu";

/// The child cgroup of the holder's where its one process runs.
pub const KEEP_CGROUP: &str = "keep";

/// `banger-vms.service`: holds the VMs' cgroups. Its cgroup is delegated
/// and the helper makes each VM's `vm-<id>` in it. One process keeps it:
/// systemd removes the cgroup of a unit with no process left (an exited
/// `oneshot` included), and a process in the cgroup itself would forbid
/// controllers for its children (cgroup v2's no internal processes rule),
/// so a `sleep infinity` runs in its child cgroup [`KEEP_CGROUP`], moved
/// there before the unit counts as started (`Type=forking`: the shell
/// exits once it has moved it). `cgroup2_mount` as for [`helper_unit`];
/// `None`: no cgroup2, nothing to keep, a unit that runs nothing.
/// `banger system install` enables and starts it (`enable --now`) and
/// never restarts it: a stop kills every VM.
pub fn vms_unit(cgroup2_mount: Option<&Path>) -> Result<String, UnitError> {
    let service = match cgroup2_mount {
        Some(mount) => {
            let dir = path_str("cgroup2 mount", &mount.join(SYSTEM_SLICE).join(VMS_UNIT))?;
            // The unit's own cgroup as /proc/self/cgroup names it.
            let rel = format!("/{SYSTEM_SLICE}/{VMS_UNIT}");
            format!(
                "\
# The one process: `sleep infinity`, moved into this unit's child cgroup
# `{KEEP_CGROUP}` before the shell exits (and the unit is started). Without a
# process systemd would remove the cgroup; in the cgroup itself it would
# forbid controllers for the VMs' cgroups. The shell first checks that its
# own cgroup (the `0::` line of /proc/self/cgroup) is $$1, the one $$0
# names, and makes `{KEEP_CGROUP}` only there (no `mkdir -p`): a unit moved
# elsewhere (a `Slice=` drop-in, another hierarchy at boot) fails to start
# instead of holding nothing. ($$ is systemd's escape of $.)
Type=forking
ExecStart={SH} -c 'c=; while read -r l; do case \"$$l\" in 0::*) c=\"$${{l#0::}}\";; esac; done </proc/self/cgroup; [ \"$$c\" = \"$$1\" ] || {{ echo \"in the cgroup $$c, not $$1\" >&2; exit 1; }}; [ -d \"$$0/{KEEP_CGROUP}\" ] || mkdir \"$$0/{KEEP_CGROUP}\" || exit 1; {SLEEP} infinity </dev/null >/dev/null 2>&1 & echo $$! > \"$$0/{KEEP_CGROUP}/cgroup.procs\"' {dir} {rel}
# Its one writable place: its own cgroup (the rest of the cgroup file
# system stays read-only, ProtectControlGroups=).
ReadWritePaths=-{dir}
"
            )
        }
        None => format!(
            "\
# No cgroup2 when this was written: nothing to hold, nothing runs.
Type=oneshot
RemainAfterExit=yes
ExecStart={TRUE}
"
        ),
    };
    Ok(format!(
        "\
# Written by `banger system install`; reinstalling rewrites it, and never
# restarts it.
# banger-vms: holds the cgroups of banger's VMs. Its cgroup is delegated
# (Delegate= below) and bangerd-root.service makes one child cgroup
# `vm-<id>` in it for each VM's VMM, with that VM's limits (memory.max,
# pids.max, cpu.max; docs/jail.md). The helper's own unit delegates
# nothing, so its cgroup never has controllers enabled for children and
# systemd can always put a restarted helper in it (cgroup v2 refuses a
# process in a cgroup that has them: no internal processes).
# STOPPING THIS UNIT KILLS EVERY VM (its default KillMode=control-group
# signals everything in its cgroup tree): banger stops it only in
# `banger system uninstall`, after the VMs. Started again, it has a new
# cgroup: restart the helper (`banger system restart`) to use it.
[Unit]
Description=banger VM cgroups (holds the per-VM cgroups of bangerd-root)

[Service]
{service}Delegate={DELEGATED_CONTROLLERS}
# A root shell and a `sleep` that need nothing but to write their own
# cgroup, which root owns: no capabilities, no network, no devices, no
# namespaces, a read-only system.
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
PrivateIPC=yes
PrivateMounts=yes
ProtectProc=invisible
ProcSubset=pid
{KERNEL_HARDENING}RestrictNamespaces=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=none
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
IPAddressDeny=any
UMask=0077

[Install]
WantedBy=multi-user.target
"
    ))
}

/// `bangerd-root.service`: the root helper, with only the capabilities,
/// devices and paths today's privileged operations use. `cgroup2_mount`
/// (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host; from
/// `probe_cgroup_v2`) names where the holder's cgroup ([`vms_unit`]) is
/// made writable for its VMs' cgroups; `None`: no cgroup2, none is.
pub fn helper_unit(
    meta: &InstallMeta,
    install_file: &Path,
    cgroup2_mount: Option<&Path>,
) -> Result<String, UnitError> {
    let exe = path_str("binary directory", &meta.paths.bin_dir.join("bangerd-root"))?;
    let install_file = path_str("install file", install_file)?;
    let state = dir_under(
        "helper state directory",
        &meta.paths.root_state_dir,
        STATE_BASE,
    )?;
    let socket_dir = meta
        .paths
        .root_socket
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let runtime = dir_under("helper socket directory", &socket_dir, RUNTIME_BASE)?;
    let state_dir = path_str("state directory", &meta.paths.state_dir)?;
    let allow_devices: String = HELPER_DEVICES
        .iter()
        .map(|d| format!("DeviceAllow={d} rw\n"))
        .chain(
            HELPER_DEVICE_CLASSES
                .iter()
                .map(|c| format!("DeviceAllow={c} rw\n")),
        )
        .collect();
    // `-`: started on a host whose cgroup2 is elsewhere, or without the
    // holder, the helper finds the directory read-only or missing and runs
    // its VMMs without cgroups.
    let vms_cgroup = match cgroup2_mount {
        Some(mount) => format!(
            " -{}",
            path_str("cgroup2 mount", &mount.join(SYSTEM_SLICE).join(VMS_UNIT))?
        ),
        None => String::new(),
    };
    let ip_forward = banger_host::net::IP_FORWARD;
    let ipv6_conf = banger_host::net::IPV6_CONF;
    Ok(format!(
        "\
# Written by `banger system install`; reinstalling rewrites it.
# bangerd-root: banger's root helper. Serves a closed set of privileged
# operations to the owner's uid only (read from the install metadata), on a
# socket in a root-owned directory.
[Unit]
Description=banger root helper (privileged host operations for bangerd)
# Start after the host firewall service, whose ruleset load would otherwise
# flush the nft tables banger creates, and after the holder of the VMs'
# cgroups, which it wants but does not require: stopping the holder (which
# kills every VM) never stops the helper, and stopping or restarting the
# helper never touches the holder.
Wants={VMS_UNIT}
After=nftables.service {VMS_UNIT}

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} --install-file {install_file}
Restart=on-failure
RestartSec=2s
UMask=0077
# VMs outlive a restart of this service: stopping it (restart, upgrade, a
# crash) ends only the helper itself, never the VMM processes it launched.
# They run in their cgroups beneath {VMS_UNIT}'s; the next helper
# re-adopts each one whose pid and start time match its journal. `banger
# system uninstall` stops the VMs first and kills whatever is left in this
# unit's and the holder's cgroup trees afterwards.
KillMode=process
# Per-VM cgroups (docs/jail.md): no Delegate= here. This unit's cgroup stays
# a leaf with no controllers enabled for children, so a restart can always
# put the new helper in it. The helper makes `vm-<id>` for each jailed VMM
# in the holder's delegated cgroup ({VMS_UNIT}), the one path of the
# cgroup file system it can write (ReadWritePaths= below);
# ProtectControlGroups= keeps the rest read-only.

# {STATE_BASE}/{state}: the journal of host objects the helper created (root, 0700).
StateDirectory={state}
StateDirectoryMode=0700
# {RUNTIME_BASE}/{runtime}: root.sock (root:owner-gid 0660; SO_PEERCRED then admits
# only the owner's uid). The directory is root's, so the owner cannot replace
# the socket or plant a link in its place.
RuntimeDirectory={runtime}
RuntimeDirectoryMode=0755

# Capabilities, and what uses them:
#   CAP_NET_ADMIN         bridge, addresses and routes (netlink), taps (tun
#                         ioctls, TUNSETOWNER, moving one into a Firecracker
#                         jail's namespace and back), nft tables, ip_forward,
#                         and resolver routing (resolvectl; resolved checks
#                         it); the jail spawner keeps it for the route socket
#                         it opens in that namespace
#   CAP_NET_BIND_SERVICE  the .vm DNS sockets on port 53, passed to bangerd
#   CAP_CHOWN             giving root.sock to the owner's group, VM files to
#                         the owner
#   CAP_DAC_OVERRIDE      VM disks, run directories and VMM sockets beneath
#   CAP_FOWNER            the owner's 0700 state directory; the ACL that lets
#                         the jailed disk tools open one disk
#   CAP_SETUID CAP_SETGID running the disk tools (e2fsck, resize2fs, mkfs.ext4,
#                         debugfs) as the jail uid and the VMMs (QEMU and
#                         Firecracker) as per-VM jail uids, never as root
#   CAP_KILL              stopping those VMMs (they run as jail uids)
#   CAP_SYS_ADMIN         loop devices (LOOP_CONFIGURE ioctls), dm snapshots
#                         (dmsetup), and the disk-tool jail's namespaces and
#                         mounts (detached mounts, pivot_root)
#   CAP_SETPCAP           at start only: the jail spawner drops every other
#                         capability from its bounding set, the helper drops
#                         this one from all of its sets
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_SETUID CAP_SETGID CAP_KILL CAP_SYS_ADMIN CAP_SETPCAP
AmbientCapabilities=
NoNewPrivileges=yes
# Not RestrictSUIDSGID=: its seccomp filter cannot see openat2's flags and
# so refuses every openat2 with ENOSYS, and banger opens files beneath
# directories with openat2 (RESOLVE_BENEATH). NoNewPrivileges= already makes
# set-user-ID bits meaningless for whatever runs under this unit.

# Devices: only the nodes the helper and its VMMs open (taps, KVM, vsock,
# loop and device-mapper), by cgroup device policy. Not PrivateDevices=:
# the loop and dm block devices a root disk uses are created on demand and
# must appear in /dev.
DevicePolicy=closed
{allow_devices}
# File system: read-only OS except IPv4 forwarding, which it switches on for
# guest NAT, the per-link IPv6 settings (it switches IPv6 off on the bridge
# and taps; `-`: a kernel without IPv6 has none), and the owner's state
# directory (VM disks, run directories), and the holder's cgroup (the VMs'
# cgroups). No home directories, private /tmp.
ProtectSystem=strict
ReadWritePaths={ip_forward} -{ipv6_conf} {state_dir}{vms_cgroup}
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
PrivateIPC=yes
# Hides other users' processes from the VMMs' uids (a jailed VMM also has a
# pid namespace of its own and no /proc). The
# helper still sees its VMMs, whose start time re-adoption checks: hidepid
# exempts the group of its gid= option, 0 by default, and the helper runs
# with gid 0.
ProtectProc=invisible

{KERNEL_HARDENING}# The jail (docs/jail.md) gives each jailed process its own mount, pid,
# IPC, UTS and network namespaces (a Firecracker jail's network one made by
# the spawner with unshare, which then setns back: both in @system-service);
# no user namespaces.
RestrictNamespaces=mnt pid ipc uts net
# QEMU's TCG translator (hosts whose KVM cannot run a stock guest) writes
# code it then executes; the VMMs inherit this unit's restrictions.
MemoryDenyWriteExecute=no
KeyringMode=private

# Sockets: its own and D-Bus (unix), netlink for links and nft, inet for the
# DNS sockets. No IPAddressDeny=: the DNS sockets it binds are passed to
# bangerd and stay accounted to this unit, so an address filter here would
# cut off .vm DNS.
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
SystemCallArchitectures=native
# @mount: the disk-tool jail mounts (fsopen, open_tree, move_mount,
# mount_setattr, pivot_root), each in a mount namespace of its own.
# landlock_*: every jail enters a Landlock scope (no abstract UNIX socket,
# no signal outside it; docs/jail.md), made by the jail spawner.
# seccomp: QEMU runs under its own filter (`-sandbox on`), which it offers
# only where the seccomp system call works. A filter only takes away.
SystemCallFilter=@system-service @mount landlock_create_ruleset landlock_restrict_self seccomp
SystemCallFilter=~@resources @swap @reboot @raw-io @module @obsolete @debug @cpu-emulation @clock
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"
    ))
}

#[cfg(test)]
mod tests;
