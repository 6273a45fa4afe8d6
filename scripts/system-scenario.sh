#!/usr/bin/env bash
# The system-mode scenario: banger installed as two systemd services, a real
# guest booted and used by the owner without sudo, the services restarted and
# the helper SIGKILLed under it, then everything removed.
#
# Run as root on a host (or container) whose PID 1 is systemd. Shared by
# `make smoke` (scripts/smoke.sh, a real host, Firecracker) and
# crates/banger-testkit/tests/system_guest_nspawn.rs (a systemd-nspawn
# container, QEMU under TCG).
#
#    1. banger system install --owner OWNER   (both units active, status healthy)
#    2. bangerd: the owner's uid, no capabilities
#    3. the image, as OWNER: `image build debian` (the root helper builds it
#       into root's cache), `image pull BUNDLE`, or `kernel import` +
#       `image register` (SCENARIO_IMAGE)
#    4. as OWNER: vm create --vmm VMM --wait; the VMM runs as a non-root uid
#    5. as OWNER: vm ssh -- uname -a
#    6. as OWNER: workspace prepare; a commit in the guest; workspace export
#    7. as OWNER: a listener in the guest shows up in vm ports
#    8. banger system restart: the same VMM process runs on and is re-adopted
#    9. SIGKILL of bangerd-root: systemd restarts it, the same VMM process
#       runs on and is re-adopted (vm ssh, vm pause and resume, then vm
#       stop through it)
#   10. as OWNER: vm rm
#   11. banger system uninstall: no unit, binary, metadata, socket, link,
#       nft table, loop device or owner process left
#
# Prints one `ok` line per check; exits non-zero at the first failure (2:
# this host cannot run the scenario). On failure the VM is removed and banger
# uninstalled (--force) unless SCENARIO_KEEP=1.
#
# Environment:
#   SCENARIO_OWNER  owner user (required; must exist, must not be root)
#   SCENARIO_BIN    directory with banger, bangerd, bangerd-root (required)
#   SCENARIO_VMM    qemu | firecracker (default qemu)
#   SCENARIO_IMAGE  where the image comes from (required), one of
#                     build:SUITE                    `image build debian --suite SUITE`
#                     bundle:PATH                    an image bundle (docs/images.md)
#                     files:KERNEL:INITRD:ROOTFS     kernel import + image register
#                   Paths must be readable by bangerd: the read-only OS or
#                   the owner's home.
#   SCENARIO_KEEP   1: leave everything in place on failure
set -euo pipefail

owner=${SCENARIO_OWNER:-}
bin=${SCENARIO_BIN:-}
vmm=${SCENARIO_VMM:-qemu}
source=${SCENARIO_IMAGE:-}
image=scenario
vm=scenario$$
repo=
installed=0
vm_made=0

say() { printf 'scenario: %s\n' "$*"; }
ok() { printf 'ok      %s\n' "$*"; }
die() {
    printf 'scenario: FAILED: %s\n' "$*" >&2
    exit 1
}
refuse() {
    printf 'scenario: cannot run here: %s\n' "$*" >&2
    exit 2
}

# Run a command as the owner, with a login environment and no sudo.
as_owner() {
    runuser -u "$owner" -- env -i HOME="$owner_home" USER="$owner" \
        PATH=/usr/local/bin:/usr/bin:/bin "$@"
}

# One field of a JSON document on stdin.
field() { jq -r "$1"; }

# Key from /proc/PID/status (first value).
proc_status() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# The unit's main pid, or 0.
main_pid() { systemctl show -p MainPID --value "$1"; }

cleanup() {
    status=$?
    if [ "$status" -ne 0 ] && [ "$installed" = 1 ]; then
        say "failed; bangerd-root journal:"
        journalctl --no-pager -n 40 -u bangerd-root.service 2>/dev/null || true
        say "bangerd journal:"
        journalctl --no-pager -n 40 -u bangerd.service 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ "${SCENARIO_KEEP:-0}" != 1 ]; then
        if [ "$vm_made" = 1 ]; then
            as_owner banger vm kill "$vm" >/dev/null 2>&1 || true
            as_owner banger vm rm "$vm" >/dev/null 2>&1 || true
        fi
        if [ "$installed" = 1 ]; then
            /usr/local/bin/banger system uninstall --force >/dev/null 2>&1 || true
        fi
    fi
    if [ -n "$repo" ]; then rm -rf "$repo"; fi
    exit "$status"
}
trap cleanup EXIT

# --- Where this can run -------------------------------------------------------
[ "$(id -u)" = 0 ] || refuse "run as root"
if ! { [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }; then
    refuse "PID 1 is not systemd; the service model needs a systemd host"
fi
case $vmm in
    qemu) command -v qemu-system-x86_64 >/dev/null || refuse "qemu-system-x86_64 is not on PATH" ;;
    firecracker) command -v firecracker >/dev/null || refuse "firecracker is not on PATH" ;;
    *) refuse "SCENARIO_VMM must be qemu or firecracker, not $vmm" ;;
esac
[ -n "$owner" ] || refuse "SCENARIO_OWNER is not set"
owner_uid=$(id -u "$owner" 2>/dev/null) || refuse "user $owner does not exist"
[ "$owner_uid" != 0 ] || refuse "the owner must not be root"
owner_home=$(getent passwd "$owner" | cut -d: -f6)
[ -n "$bin" ] || refuse "SCENARIO_BIN is not set"
for b in banger bangerd bangerd-root; do
    [ -x "$bin/$b" ] || refuse "$bin/$b is missing"
done
for tool in git jq losetup nft ip; do
    command -v "$tool" >/dev/null || refuse "$tool is missing"
done
[ -n "$source" ] || refuse "SCENARIO_IMAGE is not set"
[ ! -e /etc/banger/install.toml ] ||
    refuse "banger is already installed here (/etc/banger/install.toml); uninstall it first"

# --- 1. install ---------------------------------------------------------------
say "installing for $owner (uid $owner_uid) from $bin; VMM $vmm"
installed=1
"$bin/banger" system install --owner "$owner"
for u in bangerd-root.service bangerd.service; do
    [ "$(systemctl is-active "$u")" = active ] || die "$u is not active after install"
done
banger system status --no-doctor || die "system status reports problems (above)"
ok "install: both units active, status healthy"

# --- 2. bangerd unprivileged --------------------------------------------------
pid=$(main_pid bangerd.service)
[ "$(proc_status "$pid" Uid)" = "$owner_uid" ] || die "bangerd (pid $pid) does not run as $owner"
[ "$(proc_status "$pid" CapEff)" = 0000000000000000 ] || die "bangerd (pid $pid) has effective capabilities"
ok "bangerd runs as uid $owner_uid with no capabilities"

# --- 3. the image -------------------------------------------------------------
case $source in
    build:*)
        as_owner banger image build debian --suite "${source#build:}" --name "$image" >/dev/null
        # mmdebstrap needs root: the owner's daemon must have asked the helper.
        [ "$(journalctl --no-pager -o cat -u bangerd-root.service | grep -c 'build_debian_image')" -gt 0 ] ||
            die "the helper's journal shows no build_debian_image operation"
        ;;
    bundle:*)
        as_owner banger image pull "${source#bundle:}" --name "$image" >/dev/null
        ;;
    files:*)
        IFS=: read -r _ kernel initrd rootfs <<<"$source"
        as_owner banger kernel import "$kernel" --initrd "$initrd" --name "$image" >/dev/null
        as_owner banger image register "$image" --rootfs "$rootfs" --kernel "$image" >/dev/null
        ;;
    *) refuse "SCENARIO_IMAGE must start with build:, bundle: or files:" ;;
esac
as_owner banger image show "$image" >/dev/null || die "image $image was not published"
ok "image $image from $source (as $owner, no sudo)"

# --- 4. a VM ------------------------------------------------------------------
vm_made=1
started=$(date +%s)
as_owner banger vm create "$vm" --image "$image" --vmm "$vmm" --wait >/dev/null
show=$(as_owner banger vm show "$vm" --json)
[ "$(field .vmm <<<"$show")" = "$vmm" ] || die "$vm does not run on $vmm: $show"
[ "$(field .state <<<"$show")" = running ] || die "$vm is not running: $show"
vmm_pid=$(field .pid <<<"$show")
[ -d "/proc/$vmm_pid" ] || die "no VMM process $vmm_pid"
vmm_uid=$(proc_status "$vmm_pid" Uid)
ids=$(awk '$1 == "Uid:" || $1 == "Gid:" {print $2, $3, $4, $5}' "/proc/$vmm_pid/status")
# Real, effective, saved and file-system uid and gid: none of them root.
if [ -z "$vmm_uid" ] || grep -qw 0 <<<"$ids"; then
    die "the VMM (pid $vmm_pid) runs with a root uid or gid: $ids"
fi
[ "$(proc_status "$vmm_pid" CapEff)" = 0000000000000000 ] ||
    die "the VMM (pid $vmm_pid) has effective capabilities"
ok "vm create $vm ($vmm, $(($(date +%s) - started)) s): running, VMM pid $vmm_pid as uid $vmm_uid without capabilities"

# --- 5. SSH -------------------------------------------------------------------
out=$(as_owner banger vm ssh "$vm" -- uname -a)
case "$out" in Linux*) ;; *) die "vm ssh printed: $out" ;; esac
ok "vm ssh: $out"

# --- 6. workspace prepare / export --------------------------------------------
repo=$(runuser -u "$owner" -- mktemp -d "$owner_home/banger-scenario.XXXXXX")
name=$(basename "$repo")
as_owner git -C "$repo" init -q -b main
as_owner git -C "$repo" -c user.name=scenario -c user.email=scenario@localhost \
    commit -q --allow-empty -m "scenario: start"
as_owner banger workspace prepare "$vm" "$repo" >/dev/null
as_owner banger vm ssh "$vm" -- "cd $name && echo scenario > scenario.txt && git add scenario.txt && \
    git -c user.name=scenario -c user.email=scenario@localhost commit -q -m 'scenario: from the guest'"
as_owner banger workspace export "$vm" >/dev/null
# Not `git log | grep -q`: grep exits at the first match, git's next write
# then gets SIGPIPE, and pipefail fails the pipeline (seen once).
subjects=$(as_owner git -C "$repo" log --format=%s "banger/$vm") ||
    die "workspace export: no branch banger/$vm"
grep -qx "scenario: from the guest" <<<"$subjects" ||
    die "workspace export: branch banger/$vm does not hold the guest's commit: $subjects"
[ -z "$(as_owner git -C "$repo" status --porcelain)" ] ||
    die "workspace export changed the host's working tree"
ok "workspace prepare + guest commit + export: branch banger/$vm holds it; working tree untouched"

# --- 7. ports -----------------------------------------------------------------
as_owner banger vm ssh "$vm" -- \
    "nohup socat TCP-LISTEN:4711,fork,reuseaddr EXEC:/bin/cat >/dev/null 2>&1 </dev/null & sleep 1"
ports=$(as_owner banger vm ports "$vm" --json)
[ "$(jq '[.ports[] | select(.proto == "tcp" and .port == 4711)] | length' <<<"$ports")" -ge 1 ] ||
    die "vm ports does not list tcp 4711: $ports"
[ "$(jq -r '[.ports[] | select(.port == 4711)][0].endpoint' <<<"$ports")" = "$vm.vm:4711" ] ||
    die "vm ports endpoint: $ports"
ok "vm ports: tcp 4711 as $vm.vm:4711"

# The helper whose main pid is HELPER logs re-adopting the VMM (it does so
# when bangerd first asks about the VM: at its startup or its next watchdog
# tick, every few seconds).
readopted() { # HELPER WHAT
    local deadline=$(($(date +%s) + 30))
    until grep -qE "re-adopted a running VMM.*pid=$vmm_pid([^0-9]|$)" <<<"$(journalctl --no-pager -o cat "_PID=$1")"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "bangerd-root (pid $1) did not re-adopt the VMM (pid $vmm_pid) after $2"
        sleep 0.5
    done
}

# The VMM is the same process, running, and the VM answers over SSH.
same_vmm() { # WHAT
    [ "$(as_owner banger vm show "$vm" --json | field .state)" = running ] ||
        die "$vm is not running after $1"
    [ "$(as_owner banger vm show "$vm" --json | field .pid)" = "$vmm_pid" ] ||
        die "$vm has another VMM pid after $1"
    kill -0 "$vmm_pid" 2>/dev/null || die "the VMM (pid $vmm_pid) died in $1"
    as_owner banger vm ssh "$vm" -- true || die "$vm is not reachable after $1"
}

# --- 8. restart ---------------------------------------------------------------
before=$(main_pid bangerd-root.service)
banger system restart >/dev/null
helper=$(main_pid bangerd-root.service)
[ "$helper" != "$before" ] || die "system restart did not restart bangerd-root"
readopted "$helper" "system restart"
same_vmm "system restart"
ok "system restart: VMM pid $vmm_pid runs on, re-adopted, $vm reachable"

# --- 9. SIGKILL of the helper -------------------------------------------------
before=$(main_pid bangerd-root.service)
kill -KILL "$before"
deadline=$(($(date +%s) + 30))
until [ "$(main_pid bangerd-root.service)" != 0 ] && [ "$(main_pid bangerd-root.service)" != "$before" ] &&
    systemctl is-active --quiet bangerd-root.service; do
    [ "$(date +%s)" -lt "$deadline" ] || die "bangerd-root was not restarted after SIGKILL"
    sleep 0.2
done
readopted "$(main_pid bangerd-root.service)" "a SIGKILL of bangerd-root"
same_vmm "a SIGKILL of bangerd-root"
# Pause and resume reach the adopted VMM through the new helper.
[ "$(as_owner banger vm pause "$vm" --json | field .state)" = paused ] || die "vm pause did not pause $vm"
kill -0 "$vmm_pid" 2>/dev/null || die "the VMM (pid $vmm_pid) died paused"
[ "$(as_owner banger vm resume "$vm" --json | field .state)" = running ] || die "vm resume did not resume $vm"
same_vmm "a pause and resume"
ok "vm pause / vm resume through the restarted helper: $vm paused, resumed, reachable"
# Stopping goes through the new helper's pidfd of the adopted process.
as_owner banger vm stop "$vm" >/dev/null
if kill -0 "$vmm_pid" 2>/dev/null; then die "vm stop left the VMM (pid $vmm_pid) running"; fi
ok "SIGKILL of bangerd-root: VMM pid $vmm_pid ran on, was re-adopted and stopped through the new helper"

# --- 10. delete ---------------------------------------------------------------
as_owner banger vm rm "$vm" >/dev/null
vm_made=0
! as_owner banger vm show "$vm" >/dev/null 2>&1 || die "$vm still exists after vm rm"
ok "vm rm $vm"

# --- 11. uninstall ------------------------------------------------------------
/usr/local/bin/banger system uninstall >/dev/null
installed=0
for p in /etc/systemd/system/bangerd.service /etc/systemd/system/bangerd-root.service \
    /usr/local/bin/banger /usr/local/bin/bangerd /usr/local/bin/bangerd-root \
    /etc/banger/install.toml /run/banger /run/banger-root; do
    [ ! -e "$p" ] || die "uninstall left $p"
done
for u in bangerd.service bangerd-root.service; do
    [ "$(systemctl show -p LoadState --value "$u")" = not-found ] || die "systemd still knows $u"
done
links=$(ip -o link show | grep banger || true)
[ -z "$links" ] || die "uninstall left links: $links"
tables=$(nft list tables | grep banger || true)
[ -z "$tables" ] || die "uninstall left nft tables: $tables"
loops=$(losetup -l -n -O NAME,BACK-FILE | grep /var/lib/banger || true)
[ -z "$loops" ] || die "uninstall left loop devices: $loops"
procs=$(ps -o pid=,comm= -u "$owner" || true)
[ -z "$procs" ] || die "processes of $owner left: $procs"
if kill -0 "$vmm_pid" 2>/dev/null; then die "the VMM (pid $vmm_pid) is still running"; fi
ok "system uninstall: no unit, binary, metadata, socket, link, nft table, loop device or process left"
say "all checks passed"
