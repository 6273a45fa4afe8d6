#!/usr/bin/env bash
# `make smoke`: the supported service model end to end, on a real host.
#
# For a systemd host (systemd is PID 1) with working KVM and a Firecracker
# binary — NOT the CI host (PID 1 is not systemd there, and its KVM runs
# only PVM guests). Run as root; the owner is $SMOKE_OWNER, else $SUDO_USER.
#
# Checks the host, prepares the image from the image builder's cache (an ELF
# vmlinux unpacked from the cached bzImage, which Firecracker needs; the
# cached initrd and root filesystem), then runs scripts/system-scenario.sh
# with Firecracker — the same scenario crates/banger-testkit/tests/
# system_guest_nspawn.rs runs with QEMU in a container: install, status, the
# image as the owner, a VM, SSH, workspace prepare/export, ports,
# `system restart` and a SIGKILL of bangerd-root with the VM running (same
# VMM process, re-adopted), delete, uninstall with nothing left.
#
# Prints one `ok` line per check and exits non-zero at the first failure.
# On failure the VM is removed and banger uninstalled (--force) unless
# SMOKE_KEEP=1, which leaves everything for inspection.
#
# Environment:
#   SMOKE_OWNER   owner user (default: $SUDO_USER)
#   SMOKE_BIN     directory with banger, bangerd, bangerd-root
#                 (default: target/debug beside this script)
#   SMOKE_KEEP    1: leave everything in place on failure
#   BANGER_CACHE_DIR  the image builder's cache (default /var/cache/banger,
#                 which `make demo` fills)
#
# This touches the host for real: it installs banger system-wide and the
# helper creates banger's bridge, taps and nft tables in the host's network
# namespace (removed again by the uninstall). An existing install is refused.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${SMOKE_BIN:-$here/../target/debug}
owner=${SMOKE_OWNER:-${SUDO_USER:-}}

say() { printf 'smoke: %s\n' "$*"; }
die() { printf 'smoke: FAILED: %s\n' "$*" >&2; exit 1; }

# Firecracker boots only an uncompressed ELF vmlinux; the image builder's
# kernel is a bzImage (Debian's: LZ4). Find the compressed payload by its
# magic bytes, unpack it, and keep the first result that is an ELF file.
extract_vmlinux() { # BZIMAGE OUT
    local img=$1 out=$2 kind magic off
    for kind in lz4 gzip xz zstd; do
        case $kind in
            lz4) magic='\x02\x21\x4c\x18' ;;
            gzip) magic='\x1f\x8b\x08' ;;
            xz) magic='\xfd\x37\x7a\x58\x5a\x00' ;;
            zstd) magic='\x28\xb5\x2f\xfd' ;;
        esac
        command -v "$kind" >/dev/null || continue
        while IFS=: read -r off _; do
            # Trailing bytes after the payload make the tools complain;
            # what they wrote before that is what counts.
            case $kind in
                lz4) tail -c +"$((off + 1))" "$img" | lz4 -dc >"$out" 2>/dev/null || true ;;
                gzip) tail -c +"$((off + 1))" "$img" | gzip -dc >"$out" 2>/dev/null || true ;;
                xz) tail -c +"$((off + 1))" "$img" | xz -dc --single-stream >"$out" 2>/dev/null || true ;;
                zstd) tail -c +"$((off + 1))" "$img" | zstd -dcq >"$out" 2>/dev/null || true ;;
            esac
            if [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
                return 0
            fi
        done < <(LC_ALL=C grep -obUaP "$magic" "$img")
    done
    return 1
}

refuse() { printf 'smoke: cannot run here: %s\n' "$*" >&2; exit 2; }

# --- Where this can run ------------------------------------------------------
[ "$(id -u)" = 0 ] || refuse "run as root (sudo make smoke)"
if ! { [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }; then
    refuse "PID 1 is not systemd; the service model needs a systemd host (this is not one)"
fi
[ -c /dev/kvm ] || refuse "no /dev/kvm; Firecracker needs KVM"
if ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then refuse "/dev/kvm is not usable by root"; fi
command -v firecracker >/dev/null ||
    refuse "firecracker is not on PATH; install a Firecracker release binary (e.g. /usr/local/bin/firecracker)"
[ -n "$owner" ] || refuse "no owner: set SMOKE_OWNER=USER or run through sudo"
id -u "$owner" >/dev/null 2>&1 || refuse "user $owner does not exist"
owner_home=$(getent passwd "$owner" | cut -d: -f6)
command -v jq >/dev/null || refuse "jq is missing (the scenario reads banger's --json output with it)"

# --- The image, from the builder's cache ------------------------------------
# Firecracker boots an uncompressed vmlinux, so the image comes from the
# builder's cache (filled by `make demo` or by the owner's `image build
# debian`): the scenario imports the kernel unpacked from it, with the cached
# initrd, and registers the cached root filesystem, as the owner.
cache=${BANGER_CACHE_DIR:-/var/cache/banger}
entry=$(find "$cache/debian" -mindepth 2 -maxdepth 2 -name image.txt -printf '%T@ %h\n' 2>/dev/null |
    sort -n | tail -n 1 | cut -d' ' -f2-)
[ -n "$entry" ] || refuse "no built image in $cache/debian; build one first with \`make demo\`"
kernel=$(sed -n 's/^kernel=//p' "$entry/image.txt")
initrd=$(sed -n 's/^initrd=//p' "$entry/image.txt")
rootfs=$(sed -n 's/^rootfs=//p' "$entry/image.txt")
# In the owner's home: the only place outside the read-only OS that bangerd
# (which reads the file itself) can see.
kdir=$(runuser -u "$owner" -- mktemp -d "$owner_home/banger-smoke-kernel.XXXXXX")
trap 'rm -rf "$kdir"' EXIT
extract_vmlinux "$entry/$kernel" "$kdir/vmlinux" ||
    die "could not unpack a vmlinux from $entry/$kernel (Firecracker needs one)"
chown "$owner" "$kdir/vmlinux"
say "image from $entry"

SCENARIO_OWNER=$owner SCENARIO_BIN=$bin SCENARIO_VMM=firecracker \
    SCENARIO_IMAGE="files:$kdir/vmlinux:$entry/$initrd:$entry/$rootfs" \
    SCENARIO_KEEP=${SMOKE_KEEP:-0} "$here/system-scenario.sh"
