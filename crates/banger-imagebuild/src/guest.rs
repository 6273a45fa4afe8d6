//! The guest side of banger's guest contract (docs/guest.md): the files and
//! the one-time setup baked into every image banger builds.
//!
//! Per-VM pieces — the network file, `/etc/resolv.conf`'s contents, the
//! hostname, SSH host keys and `/etc/banger/authorized_keys` — are written
//! by banger into each VM's disk before it boots; the image only leaves the
//! places for them.

/// The contract's shared facts (its version — bump it when anything in
/// this module changes —, the guest user, the work disk's label, the
/// readiness line and port, the kernel command line) are
/// `banger_proto::guest`'s: the executor, the VMM drivers and the daemon
/// rely on the same ones.
pub use banger_proto::guest::{
    GUEST_CONTRACT_VERSION, GUEST_GID, GUEST_UID, GUEST_USER, KERNEL_CMDLINE, READY_MARKER,
    READY_VSOCK_PORT, WORK_LABEL,
};

/// The guest user's home (the work disk's mount point).
pub const GUEST_HOME: &str = "/home/banger";

/// Label of the root filesystem banger builds.
pub const ROOT_LABEL: &str = "banger-root";

/// Where banger writes per-VM authorized keys (in addition to the user's
/// `~/.ssh/authorized_keys` on the work disk).
pub const AUTHORIZED_KEYS: &str = "/etc/banger/authorized_keys";

/// A file the image carries: path inside the root, mode, contents.
#[derive(Debug, Clone, Copy)]
pub struct GuestFile {
    pub path: &'static str,
    pub mode: u32,
    pub contents: &'static str,
}

pub const SSHD_CONFIG: &str = "\
# banger guest contract: key-only logins, no root, banger's key file.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys /etc/banger/authorized_keys
";

/// The work disk's device timeout is 30 s, not less: under QEMU TCG udevd
/// itself starts some 10 s after systemd begins waiting for the label, so a
/// 10 s timeout expired with the disk present. `nofail` keeps it from
/// blocking boot; only `banger-ready` waits for the mount (to finish either
/// way). No fsck pass for it: banger made it, ext4's journal replays an
/// unclean one at mount, and the check cost 1.8-2.7 s of the one vCPU.
pub const FSTAB: &str = "\
# banger guest contract: root disk first, work disk second.
/dev/vda / ext4 defaults 0 1
LABEL=banger-work /home/banger ext4 defaults,nofail,x-systemd.device-timeout=30s 0 0
";

pub const READY_SCRIPT: &str = "\
#!/bin/sh
# banger readiness: a line on the serial console (QEMU) and, where the VM
# has vsock, the same line to the host (Firecracker). Best effort.
# A leading newline: the marker starts its own line even after a prompt.
printf '\\nbanger-guest-ready\\n' > /dev/ttyS0 2>/dev/null || true
if [ -e /dev/vsock ]; then
    echo banger-guest-ready | timeout 5 socat - VSOCK-CONNECT:2:52 || true
fi
exit 0
";

pub const READY_UNIT: &str = "\
[Unit]
Description=Tell the banger host this guest is ready
# Ordered after, never bound to: a failed sshd, network or work disk still
# reports. After the work disk's mount, so a login never sees the image's
# own /home/banger before the work disk covers it; after user sessions are
# allowed, so a login is not refused with 'System is booting up'.
Wants=network-online.target
After=network-online.target ssh.service home-banger.mount systemd-user-sessions.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/banger/guest-ready

[Install]
WantedBy=multi-user.target
";

/// networkd-wait-online waits for any configured link, not all, for a
/// bounded time, and not at all when banger wrote no network file: a VM
/// without a NIC (or with one banger has not configured) still reaches ready.
pub const WAIT_ONLINE_DROPIN: &str = "\
[Unit]
ConditionPathExistsGlob=/etc/systemd/network/*.network

[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=15
";

/// sshd starts once, not twice: Debian's unit checks the configuration
/// with a separate `sshd -t` first, which cost about a second of the one
/// vCPU under TCG before every boot's first login. The configuration is
/// the image's own (Debian's plus [`SSHD_CONFIG`]); the image test boots
/// it to a login.
pub const SSH_DROPIN: &str = "\
[Service]
ExecStartPre=
";

pub const SUDOERS: &str = "banger ALL=(ALL) NOPASSWD:ALL\n";

pub const HOSTS: &str = "\
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
";

/// Files written into the tree after mmdebstrap, replacing whatever was
/// there (symlinks included: the old entry is removed first).
pub const FILES: &[GuestFile] = &[
    GuestFile {
        path: "etc/ssh/sshd_config.d/banger.conf",
        mode: 0o644,
        contents: SSHD_CONFIG,
    },
    GuestFile {
        path: "etc/sudoers.d/banger",
        mode: 0o440,
        contents: SUDOERS,
    },
    GuestFile {
        path: "etc/fstab",
        mode: 0o644,
        contents: FSTAB,
    },
    GuestFile {
        path: "usr/lib/banger/guest-ready",
        mode: 0o755,
        contents: READY_SCRIPT,
    },
    GuestFile {
        path: "etc/systemd/system/banger-ready.service",
        mode: 0o644,
        contents: READY_UNIT,
    },
    GuestFile {
        path: "etc/systemd/system/ssh.service.d/banger.conf",
        mode: 0o644,
        contents: SSH_DROPIN,
    },
    GuestFile {
        path: "etc/systemd/system/systemd-networkd-wait-online.service.d/banger.conf",
        mode: 0o644,
        contents: WAIT_ONLINE_DROPIN,
    },
    // banger writes the per-VM values of these three before boot.
    GuestFile {
        path: "etc/hostname",
        mode: 0o644,
        contents: "localhost\n",
    },
    GuestFile {
        path: "etc/resolv.conf",
        mode: 0o644,
        contents: "# written per VM by banger\n",
    },
    GuestFile {
        path: "etc/hosts",
        mode: 0o644,
        contents: HOSTS,
    },
    // Empty: systemd makes one on first boot.
    GuestFile {
        path: "etc/machine-id",
        mode: 0o444,
        contents: "",
    },
];

/// Run inside the tree (`chroot TREE sh -ec SETUP_SCRIPT`) after [`FILES`]
/// are in place.
pub const SETUP_SCRIPT: &str = "\
groupadd --gid 1000 banger
useradd --uid 1000 --gid 1000 --create-home --home-dir /home/banger --shell /bin/bash banger
# No password at all ('*'), not a locked one ('!'): key logins only.
usermod -p '*' banger
usermod -L root
systemctl enable systemd-networkd.service ssh.service banger-ready.service
systemctl disable systemd-resolved.service 2>/dev/null || true
# Disposable VMs: no background maintenance competing with the user's work
# (or with the boot: a timer that never ran fires at the first boot, and
# e2scrub_reap alone took 5-9 s of the one vCPU under TCG). One unit per
# call: disabling a unit the image lacks fails the whole call.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer man-db.timer dpkg-db-backup.timer; do
    systemctl disable \"$u\" 2>/dev/null || true
done
# Not for a VM: DRM and EFI pstore modules, network config from the kernel
# command line (banger writes networkd's file). loop, dm_mod and fuse are
# not preloaded: the kernel loads each when its device node is first opened
# (kmod-static-nodes makes the nodes), so each saves one modprobe at boot.
systemctl mask modprobe@drm.service modprobe@efi_pstore.service systemd-network-generator.service \
    modprobe@loop.service modprobe@dm_mod.service modprobe@fuse.service
mkdir -p /etc/banger
chmod 0755 /etc/banger
rm -f /etc/ssh/ssh_host_*
rm -f /var/lib/dbus/machine-id
";

/// sha256 over what the image build writes and runs for the contract
/// ([`FILES`]: path, mode, contents; and [`SETUP_SCRIPT`]): part of the
/// image cache key, so an edit to any of them builds a new image even when
/// nobody bumped [`GUEST_CONTRACT_VERSION`].
pub fn files_digest() -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for f in FILES {
        // Lengths first: no two different lists hash the same bytes.
        for part in [f.path.as_bytes(), f.contents.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(f.mode.to_le_bytes());
    }
    h.update((SETUP_SCRIPT.len() as u64).to_le_bytes());
    h.update(SETUP_SCRIPT.as_bytes());
    crate::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_constants_agree_with_the_files() {
        assert!(READY_SCRIPT.contains(READY_MARKER));
        assert!(READY_SCRIPT.contains(&format!("VSOCK-CONNECT:2:{READY_VSOCK_PORT}")));
        assert!(FSTAB.contains(&format!("LABEL={WORK_LABEL} {GUEST_HOME} ")));
        assert!(SSHD_CONFIG.contains(AUTHORIZED_KEYS));
        assert!(SETUP_SCRIPT.contains(&format!("--uid {GUEST_UID} --gid {GUEST_GID}")));
        for f in FILES {
            assert!(!f.path.starts_with('/'), "{} must be relative", f.path);
        }
    }
}
