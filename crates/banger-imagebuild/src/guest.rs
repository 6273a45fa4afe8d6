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
    AGENT_PORT, GUEST_CONTRACT_VERSION, GUEST_GID, GUEST_UID, GUEST_USER, KERNEL_CMDLINE,
    READY_MARKER, READY_VSOCK_PORT, WORK_LABEL,
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

/// The guest agent (guest contract 4; its protocol is
/// `banger_proto::guest::agent`'s). It reads lines from its virtio-serial
/// port, which only the host end can write to, so it trusts what arrives
/// there and nothing from the network; it checks every token before use
/// and runs nothing it was not asked for. It applies an identity to a VM
/// restored from a snapshot while the VM's tap is down on the host: the
/// clock, the per-VM files, MAC and IPv4 address, hostname, and sshd's
/// host keys (sshd restarted; systemd waits for it to listen again).
///
/// A port whose host end is not connected reads as end of file, so the
/// agent waits 100 ms between tries (as QEMU's own guest agent does),
/// sleeping in `read -t` on a FIFO of its own: no process per try.
pub const AGENT_SCRIPT: &str = r#"#!/bin/bash
# banger guest agent (guest contract 4, docs/guest.md).
set -u
# The unit sets none of these; a test points them elsewhere.
port=${BANGER_AGENT_PORT:-/dev/virtio-ports/org.banger.agent.0}
run=${BANGER_AGENT_RUN:-/run}
sysnet=${BANGER_AGENT_SYSNET:-/sys/class/net}
sshd_pid=${BANGER_AGENT_SSHD_PID:-/run/sshd.pid}
tcp=${BANGER_AGENT_TCP:-/proc/net/tcp}
errf=$run/banger-agent.err
fifo=$run/banger-agent.wait
rm -f "$fifo" && mkfifo -m 600 "$fifo" && exec 4<>"$fifo" || exit 1
nap() { read -r -t "$1" -u 4 _ || true; }
until [ -c "$port" ]; do nap 0.5; done
exec 3<>"$port" || exit 1
stage=$run/banger-agent
rm -rf "$stage" && mkdir -m 700 "$stage" || exit 1
dirty=1
# Cheap when nothing was staged: it runs every 100 ms while no host is
# connected, and forks nothing then.
reset() {
    if [ -n "$dirty" ]; then
        rm -f "$stage"/*
    fi
    files=() net= name= clock= bad= why= dirty=
}
fail() { why="$1"; return 1; }
# The first ethernet interface, in $dev.
first_ether() {
    local d t
    for d in "$sysnet"/*; do
        if [ -e "$d/device" ] && read -r t 2>/dev/null <"$d/type" && [ "$t" = 1 ]; then
            dev=${d##*/}
            return 0
        fi
    done
    return 1
}
# step WHAT CMD...: run CMD with its errors kept in a file (no subshell per
# step: each costs a fork under emulation); on failure, fail with them.
step() {
    local what=$1
    shift
    "$@" >/dev/null 2>"$errf" && return 0
    fail "$what: $(tr '\n' ' ' <"$errf")"
}
# The socket inodes of the IPv4 listeners on port 22, in $socks.
listeners() {
    local sl addr rem st rest
    socks=" "
    while read -r sl addr rem st rest; do
        if [ "$st" = 0A ] && [[ $addr == *:0016 ]]; then
            set -- $rest
            socks+="$6 "
        fi
    done <"$tcp"
}
# sshd re-executes itself on SIGHUP, reading its new host keys; the answer
# waits until it listens again (a port-22 listener with a new socket
# inode). Without its pid file, systemd restarts it.
restart_sshd() {
    local pid old s n=0
    if ! read -r pid 2>/dev/null <"$sshd_pid" || ! kill -0 "$pid" 2>/dev/null; then
        step sshd systemctl restart ssh.service
        return
    fi
    listeners
    old=$socks
    if ! kill -HUP "$pid" 2>/dev/null; then
        step sshd systemctl restart ssh.service
        return
    fi
    while [ "$n" -lt 500 ]; do
        nap 0.02
        listeners
        for s in $socks; do
            case "$old" in *" $s "*) ;; *) return 0 ;; esac
        done
        n=$((n + 1))
    done
    fail "sshd: not listening again 10 s after SIGHUP"
}
apply() {
    local i dev ssh=
    if [ -n "$clock" ]; then
        step clock date -s "@$clock" || return 1
    fi
    for i in "${!files[@]}"; do
        set -- ${files[$i]}
        step "file $1" install -D -m "$2" -o "$3" -g "$4" "$stage/$i" "$1" || return 1
        case "$1" in /etc/ssh/*) ssh=1 ;; esac
    done
    # On disk before anything runs with them: a later cold boot reads them.
    sync
    if [ -n "$net" ]; then
        set -- $net
        first_ether || fail "net: no ethernet interface" || return 1
        step net ip link set dev "$dev" address "$1" &&
            step net ip -4 addr flush dev "$dev" &&
            step net ip addr add "$2" dev "$dev" &&
            step net ip route replace default via "$3" dev "$dev" || return 1
        # networkd takes the new file (matched by the new MAC) as its own.
        networkctl reload >/dev/null 2>&1 || true
    fi
    if [ -n "$name" ]; then
        step hostname hostname "$name" || return 1
    fi
    # New host keys: sshd reads them again.
    if [ -n "$ssh" ]; then
        restart_sshd || return 1
    fi
}
reset
while :; do
    if ! IFS= read -r -u 3 line; then
        # No host on the other end (or it left): start over when it comes.
        reset
        nap 0.1
        continue
    fi
    set -f
    w=($line)
    set +f
    case "${w[0]-}:${#w[@]}" in
    file:6)
        # Content in base64; `-` is an empty file.
        dirty=1
        if [[ ${w[1]} =~ ^(/[A-Za-z0-9._-]+)+$ && ! ${w[1]} =~ /\.\.?(/|$) &&
            ${w[2]} =~ ^[0-7]{1,4}$ && ${w[3]} =~ ^[0-9]{1,10}$ &&
            ${w[4]} =~ ^[0-9]{1,10}$ && ${w[5]} =~ ^([A-Za-z0-9+/=]+|-)$ ]] &&
            if [ "${w[5]}" = - ]; then
                : >"$stage/${#files[@]}"
            else
                base64 -d <<<"${w[5]}" >"$stage/${#files[@]}" 2>/dev/null
            fi; then
            files+=("${w[1]} ${w[2]} ${w[3]} ${w[4]}")
        else
            bad="bad file line for ${w[1]//[^A-Za-z0-9._\/-]/?}"
        fi
        ;;
    net:4)
        if [[ ${w[1]} =~ ^02:ba(:[0-9a-f]{2}){4}$ &&
            ${w[2]} =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ &&
            ${w[3]} =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]]; then
            net="${w[1]} ${w[2]} ${w[3]}"
        else
            bad="bad net line"
        fi
        ;;
    hostname:2)
        if [[ ${w[1]} =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]]; then
            name=${w[1]}
        else
            bad="bad hostname line"
        fi
        ;;
    clock:2)
        if [[ ${w[1]} =~ ^[0-9]{1,12}(\.[0-9]{1,9})?$ ]]; then
            clock=${w[1]}
        else
            bad="bad clock line"
        fi
        ;;
    apply:2)
        if [[ ! ${w[1]} =~ ^[0-9a-f]{1,32}$ ]]; then
            reset
            continue
        fi
        if [ -n "$bad" ]; then
            printf 'failed %s %s\n' "${w[1]}" "$bad" >&3
        elif apply; then
            printf 'applied %s\n' "${w[1]}" >&3
        else
            printf 'failed %s %s\n' "${w[1]}" "$why" >&3
        fi
        reset
        ;;
    :0) ;;
    *) bad="unknown line ${w[0]//[^a-z]/?}" ;;
    esac
done
"#;

pub const AGENT_UNIT: &str = "\
[Unit]
Description=banger guest agent (host-only channel)

[Service]
ExecStart=/usr/lib/banger/agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
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
        path: "usr/lib/banger/agent",
        mode: 0o755,
        contents: AGENT_SCRIPT,
    },
    GuestFile {
        path: "etc/systemd/system/banger-agent.service",
        mode: 0o644,
        contents: AGENT_UNIT,
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
systemctl enable systemd-networkd.service ssh.service banger-ready.service banger-agent.service
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
        assert!(AGENT_SCRIPT.contains(&format!("/dev/virtio-ports/{AGENT_PORT}")));
        assert!(SETUP_SCRIPT.contains(&format!("--uid {GUEST_UID} --gid {GUEST_GID}")));
        for f in FILES {
            assert!(!f.path.starts_with('/'), "{} must be relative", f.path);
        }
    }
}
