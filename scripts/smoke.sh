#!/usr/bin/env bash
# `make smoke`: the supported service model end to end, on a real host.
#
# For a systemd host (systemd is PID 1) with working KVM and a Firecracker
# binary — NOT the CI host (PID 1 is not systemd there, and its KVM runs
# only PVM guests). Run as root; the owner is $SMOKE_OWNER, else $SUDO_USER.
#
#   1. banger system install --owner OWNER   (both units active)
#   2. banger system status                  (healthy; versions match)
#   3. as OWNER, no sudo: banger doctor       (Firecracker usable with KVM)
#   4. as OWNER: banger vm create NAME --vmm firecracker --wait
#   5. as OWNER: banger vm ssh NAME -- uname -a
#   6. as OWNER: banger workspace prepare NAME REPO; a commit in the guest;
#      banger workspace export NAME  (a new branch in REPO with that commit)
#   7. banger system restart                 (the VM keeps running, still reachable)
#   8. as OWNER: banger vm rm NAME
#   9. banger system uninstall               (no unit, binary, socket, link left)
#
# Prints one `ok` line per check and exits non-zero at the first failure.
# On failure the VM is removed and banger uninstalled (--force) unless
# SMOKE_KEEP=1, which leaves everything for inspection.
#
# Environment:
#   SMOKE_OWNER   owner user (default: $SUDO_USER)
#   SMOKE_BIN     directory with banger, bangerd, bangerd-root
#                 (default: target/debug beside this script)
#   SMOKE_IMAGE   image to boot (default: `smoke`, registered from the newest
#                 entry of the image builder's cache, $BANGER_CACHE_DIR or
#                 /var/cache/banger, which `make demo` fills)
#   SMOKE_KEEP    1: leave everything in place on failure
#
# This touches the host for real: it installs banger system-wide and the
# helper creates banger's bridge, taps and nft tables in the host's network
# namespace (removed again by the uninstall). An existing install is refused.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${SMOKE_BIN:-$here/../target/debug}
owner=${SMOKE_OWNER:-${SUDO_USER:-}}
image=${SMOKE_IMAGE:-}
vm=smoke$$
repo=
installed=0
vm_made=0

say() { printf 'smoke: %s\n' "$*"; }
ok() { printf 'ok      %s\n' "$*"; }
die() { printf 'smoke: FAILED: %s\n' "$*" >&2; exit 1; }
refuse() { printf 'smoke: cannot run here: %s\n' "$*" >&2; exit 2; }

# One value out of a JSON document on stdin: a Python expression over `d`.
json_get() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

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

# Run a command as the owner, with a login environment and no sudo.
as_owner() { runuser -u "$owner" -- env -i HOME="$owner_home" USER="$owner" \
    PATH=/usr/local/bin:/usr/bin:/bin "$@"; }

cleanup() {
    status=$?
    if [ "$status" -ne 0 ] && [ "${SMOKE_KEEP:-0}" != 1 ] &&
        { [ "$vm_made" = 1 ] || [ "$installed" = 1 ]; }; then
        say "cleaning up after the failure (SMOKE_KEEP=1 keeps everything)"
        if [ "$vm_made" = 1 ]; then
            as_owner banger vm kill "$vm" >/dev/null 2>&1 || true
            as_owner banger vm rm "$vm" >/dev/null 2>&1 || true
        fi
        if [ "$installed" = 1 ]; then
            /usr/local/bin/banger system uninstall --force || true
        fi
    fi
    if [ -n "$repo" ]; then rm -rf "$repo"; fi
    exit "$status"
}
trap cleanup EXIT

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
owner_uid=$(id -u "$owner" 2>/dev/null) || refuse "user $owner does not exist"
[ "$owner_uid" != 0 ] || refuse "the owner must not be root"
owner_home=$(getent passwd "$owner" | cut -d: -f6)
for b in banger bangerd bangerd-root; do
    [ -x "$bin/$b" ] || refuse "$bin/$b is missing; build with \`cargo build --workspace --bins\` or set SMOKE_BIN"
done
command -v git >/dev/null || refuse "git is missing (the workspace check needs it)"
command -v python3 >/dev/null || refuse "python3 is missing (reading banger's --json output needs it)"
[ ! -e /etc/banger/install.toml ] ||
    refuse "banger is already installed here (/etc/banger/install.toml); uninstall it first"

# --- 1. install ---------------------------------------------------------------
say "installing for $owner (uid $owner_uid) from $bin"
installed=1
"$bin/banger" system install --owner "$owner"
for u in bangerd-root.service bangerd.service; do
    [ "$(systemctl is-active "$u")" = active ] || die "$u is not active after install"
done
ok "install: bangerd-root.service and bangerd.service active"

# --- 2. status ----------------------------------------------------------------
banger system status || die "system status reports problems (above)"
ok "system status: healthy, installed and running versions agree"
pid=$(systemctl show -p MainPID --value bangerd.service)
[ "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")" = "$owner_uid" ] ||
    die "bangerd (pid $pid) does not run as $owner"
[ "$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")" = 0000000000000000 ] ||
    die "bangerd (pid $pid) has effective capabilities"
ok "bangerd runs as uid $owner_uid with no capabilities"

# --- 3. doctor ----------------------------------------------------------------
doctor=$(as_owner banger doctor --json) || true
fc=$(printf '%s' "$doctor" |
    json_get 'any(b["vmm"] == "firecracker" and b["usable"] for b in d["backends"])')
[ "$fc" = True ] ||
    die "banger doctor says Firecracker cannot run here: $(as_owner banger doctor 2>&1 || true)"
ok "doctor (as $owner, no sudo): Firecracker usable"

# --- 4. a Firecracker VM ------------------------------------------------------
# `image build` needs a root daemon (dev mode), so the image comes from the
# builder's cache (filled by `make demo` or a dev-mode `banger image build
# debian`): its kernel, initrd and rootfs are imported into the installed
# daemon, which reads them itself.
if [ -z "$image" ]; then
    image=smoke
    if ! as_owner banger image show "$image" >/dev/null 2>&1; then
        cache=${BANGER_CACHE_DIR:-/var/cache/banger}
        entry=$(find "$cache/debian" -mindepth 2 -maxdepth 2 -name image.txt -printf '%T@ %h\n' 2>/dev/null |
            sort -n | tail -n 1 | cut -d' ' -f2-)
        [ -n "$entry" ] || refuse "no built image in $cache/debian; build one first with \`make demo\` (or set SMOKE_IMAGE)"
        kernel=$(sed -n 's/^kernel=//p' "$entry/image.txt")
        initrd=$(sed -n 's/^initrd=//p' "$entry/image.txt")
        rootfs=$(sed -n 's/^rootfs=//p' "$entry/image.txt")
        # In the owner's home: the only place outside the read-only OS that
        # bangerd (which reads the file itself) can see.
        kdir=$(runuser -u "$owner" -- mktemp -d "$owner_home/banger-smoke-kernel.XXXXXX")
        extract_vmlinux "$entry/$kernel" "$kdir/vmlinux" ||
            die "could not unpack a vmlinux from $entry/$kernel (Firecracker needs one)"
        chown "$owner" "$kdir/vmlinux"
        as_owner banger kernel import "$kdir/vmlinux" --initrd "$entry/$initrd" --name smoke
        rm -rf "$kdir"
        as_owner banger image register "$image" --rootfs "$entry/$rootfs" --kernel smoke
        ok "image $image registered from $entry"
    fi
fi
vm_made=1
as_owner banger vm create "$vm" --image "$image" --vmm firecracker --wait
[ "$(as_owner banger vm show "$vm" --json | json_get 'd["vmm"]')" = firecracker ] ||
    die "$vm does not run on Firecracker"
ok "vm create $vm (Firecracker, image $image): ready"

# --- 5. SSH -------------------------------------------------------------------
out=$(as_owner banger vm ssh "$vm" -- uname -a)
case "$out" in Linux*) ;; *) die "vm ssh printed: $out" ;; esac
ok "vm ssh: $out"

# --- 6. workspace prepare / export --------------------------------------------
repo=$(runuser -u "$owner" -- mktemp -d "$owner_home/banger-smoke.XXXXXX")
name=$(basename "$repo")
as_owner git -C "$repo" init -q -b main
as_owner git -C "$repo" -c user.name=smoke -c user.email=smoke@localhost \
    commit -q --allow-empty -m "smoke: start"
as_owner banger workspace prepare "$vm" "$repo"
as_owner banger vm ssh "$vm" -- "cd $name && echo smoke > smoke.txt && git add smoke.txt && \
    git -c user.name=smoke -c user.email=smoke@localhost commit -q -m 'smoke: from the guest'"
ok "workspace prepare: $repo copied to the guest, a commit made there"
as_owner banger workspace export "$vm"
as_owner git -C "$repo" log --format=%s "banger/$vm" | grep -q "smoke: from the guest" ||
    die "workspace export: branch banger/$vm does not hold the guest's commit"
[ -z "$(as_owner git -C "$repo" status --porcelain)" ] ||
    die "workspace export changed the host's working tree"
ok "workspace export: branch banger/$vm holds the guest's commit; working tree untouched"

# --- 7. restart keeps the VM --------------------------------------------------
vmm_pid=$(as_owner banger vm show "$vm" --json | json_get 'd["pid"]')
banger system restart
[ "$(as_owner banger vm show "$vm" --json | json_get 'd["state"]')" = running ] ||
    die "$vm is not running after system restart"
if ! { [ -n "$vmm_pid" ] && kill -0 "$vmm_pid"; }; then
    die "the VMM (pid $vmm_pid) died in the restart"
fi
as_owner banger vm ssh "$vm" -- true || die "$vm is not reachable after system restart"
ok "system restart: $vm still running (VMM pid $vmm_pid) and reachable"

# --- 8. delete ----------------------------------------------------------------
as_owner banger vm stop "$vm"
as_owner banger vm rm "$vm"
vm_made=0
! as_owner banger vm show "$vm" >/dev/null 2>&1 || die "$vm still exists after vm rm"
ok "vm stop + rm $vm"

# --- 9. uninstall -------------------------------------------------------------
/usr/local/bin/banger system uninstall
installed=0
for p in /etc/systemd/system/bangerd.service /etc/systemd/system/bangerd-root.service \
    /usr/local/bin/banger /usr/local/bin/bangerd /usr/local/bin/bangerd-root \
    /etc/banger/install.toml /run/banger/bangerd.sock /run/banger-root/root.sock; do
    [ ! -e "$p" ] || die "uninstall left $p"
done
[ "$(systemctl show -p LoadState --value bangerd.service)" = not-found ] ||
    die "systemd still knows bangerd.service"
! ip -o link show | grep -q banger || die "uninstall left banger links: $(ip -o link show | grep banger)"
if command -v nft >/dev/null; then
    ! nft list tables | grep -q banger || die "uninstall left nft tables"
fi
ok "system uninstall: no unit, binary, metadata, socket, link or nft table left"
say "all checks passed (images and VM data stay in /var/lib/banger; \`banger system uninstall --purge\` would have removed them)"
