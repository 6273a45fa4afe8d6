#!/bin/sh
# Run by udev_lvm.rs in a private mount namespace (`unshare -m
# --propagation private`): every mount below dies with it, and the host's
# own /dev, /run and rules are never written (`udevadm test` creates the
# device links it computes: without a private /dev they would land in the
# host's devtmpfs).
#
# Environment: TOOLS (the unpacked packages), OUT (results), ROOT (the
# `--root` of the install), BANGER, OWNER, ID (a unique token).
set -eu
T=$TOOLS
# The distro's rules that exist on the host (dmsetup's, systemd's), kept
# before a tmpfs hides them.
mkdir "$OUT/host-rules"
cp -a /usr/lib/udev/rules.d/. "$OUT/host-rules/"
for d in /run /dev /var/lib /usr/local/sbin /usr/lib/udev/rules.d; do
    mount -t tmpfs -o mode=0755 banger-udev-test "$d"
done
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/urandom c 1 9
mknod -m 600 /dev/loop-control c 10 237

# lvm and lvmconfig from the unpacked lvm2, where `system install` looks
# for them (its PATH is fixed: /usr/local/sbin comes first).
cat >/usr/local/sbin/lvm <<W
#!/bin/sh
export LD_LIBRARY_PATH=$T/libdevmapper-event1.02.1/lib/x86_64-linux-gnu LVM_SUPPRESS_FD_WARNINGS=1
exec $T/lvm2/sbin/lvm "\$@"
W
printf '#!/bin/sh\nexec /usr/local/sbin/lvm config "$@"\n' >/usr/local/sbin/lvmconfig
# What 69-lvm.rules runs is logged before it runs.
printf '#!/bin/sh\necho "$*" >>%s/lvm-calls\nexec /usr/local/sbin/lvm "$@"\n' "$OUT" \
    >/usr/local/sbin/lvm-from-udev
chmod 755 /usr/local/sbin/*

# MODE=filter: only the install and uninstall against the root's LVM
# configuration, as the test prepared it.
if [ "${MODE:-}" = filter ]; then
    rc=0
    "$BANGER" system install --json --owner "$OWNER" --root "$ROOT" \
        >"$OUT/install.json" 2>"$OUT/install.err" || rc=$?
    echo "$rc" >"$OUT/install.rc"
    cp "$ROOT/etc/lvm/lvmlocal.conf" "$OUT/lvmlocal.installed" 2>/dev/null || true
    if [ "$rc" = 0 ]; then
        "$BANGER" system install --json --owner "$OWNER" --root "$ROOT" >"$OUT/install2.json"
    fi
    LVM_SYSTEM_DIR=$ROOT/etc/lvm lvmconfig --type full devices/global_filter \
        >"$OUT/filter.installed" 2>&1 || true
    rc=0
    "$BANGER" system uninstall --json --root "$ROOT" >"$OUT/uninstall.json" 2>&1 || rc=$?
    echo "$rc" >"$OUT/uninstall.rc"
    exit 0
fi

# The distro's rules: the host's (systemd's), udev's, dmsetup's and lvm2's.
for from in "$OUT"/host-rules "$T"/udev/lib/udev/rules.d "$T"/dmsetup/lib/udev/rules.d; do
    cp "$from"/* /usr/lib/udev/rules.d/
done
sed 's|/sbin/lvm |/usr/local/sbin/lvm-from-udev |g' "$T"/lvm2/lib/udev/rules.d/69-lvm.rules \
    >/usr/lib/udev/rules.d/69-lvm.rules
grep -q lvm-from-udev /usr/lib/udev/rules.d/69-lvm.rules

# The install, as on a host with lvm2 and udev: whatever it writes for
# udev goes where udevadm reads it (/etc/udev/rules.d is not on this host;
# /run/udev/rules.d sorts with it by file name).
"$BANGER" system install --json --owner "$OWNER" --root "$ROOT" >"$OUT/install.json"
mkdir -p /run/udev/rules.d
for r in "$ROOT"/etc/udev/rules.d/*; do
    [ -e "$r" ] && cp "$r" /run/udev/rules.d/
done

# A VM's disk as the dm driver attaches it: through root's hard link in
# its 0700 `root-loops/` in the state directory (banger-executor
# snapshot/links.rs), so the loop device's backing file is a name the
# owner cannot move out of the state directory; on a real loop device,
# carrying a real LVM PV and VG, as a guest could write it.
state=$(sed -n 's/^state_dir = "\(.*\)"$/\1/p' "$ROOT/etc/banger/install.toml")
[ -n "$state" ]
mkdir -p "$state"
mkdir -m 700 "$state/root-loops"
disk=$state/root-loops/$ID.cow
truncate -s 64M "$disk"
dev=$(losetup -f)
mknod -m 660 "$dev" b $(tr : ' ' <"/sys/block/${dev#/dev/}/dev")
losetup "$dev" "$disk"
trap 'losetup -d "$dev"' EXIT
echo "$dev" >"$OUT/dev"
LVM_SYSTEM_DIR=$OUT/pristine-lvm lvm pvcreate -q "$dev" >"$OUT/pvcreate" 2>&1
LVM_SYSTEM_DIR=$OUT/pristine-lvm lvm vgcreate -q "bangert$ID" "$dev" >"$OUT/vgcreate" 2>&1

# What the host's udev would do with a change event on it.
"$T"/udev/bin/udevadm test --action=change "/sys/block/${dev#/dev/}" >"$OUT/udev" 2>&1
find /dev >"$OUT/devtree"

# What LVM's command-line tools see: with lvm2's own configuration, and
# with the configuration as the install left it.
for conf in pristine installed; do
    d=$OUT/pristine-lvm
    [ "$conf" = installed ] && d=$ROOT/etc/lvm
    for tool in pvs vgs; do
        rc=0
        LVM_SYSTEM_DIR=$d lvm "$tool" --noheadings -o vg_name >"$OUT/$tool-$conf" 2>&1 || rc=$?
        echo "$rc" >"$OUT/$tool-$conf.rc"
    done
done
