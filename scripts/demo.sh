#!/usr/bin/env bash
# `make demo`: banger's main job end to end on a fresh Debian 12 host, as root.
#
# Installs the Debian packages it needs, builds banger, starts `bangerd --dev`
# inside a private network namespace (nothing touches the host's network),
# builds or reuses the default Debian image, creates a VM, runs `uname -a` in
# it over `banger vm ssh`, prints the result, and removes everything it made:
# the VM, the daemon, the namespace (with its bridge, taps and nft tables) and
# the state directory. The image cache (/var/cache/banger, or
# $BANGER_CACHE_DIR) is kept so the next run boots in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "make demo must run as root (it creates a network namespace, taps and VMs)" >&2
    exit 1
fi

# The Debian packages it needs: the `demo` scope of scripts/packages.list.
scripts/install-deps.sh demo

say "building banger"
cargo build -q --workspace --bins
BIN="$PWD/target/debug"

# The image is built here, in the host's network namespace, where Debian's
# mirror is reachable; the daemon below lives in a namespace with no route
# out, and its `image build debian` finds the image in the cache by its
# inputs. A cold cache takes 2-3 minutes (mmdebstrap).
say "building (or finding in the cache) the default Debian image"
"$BIN/banger-imagebuild" debian >/dev/null

NS="banger-demo-$$"
WORK="$(mktemp -d /tmp/banger-demo.XXXXXX)"
DAEMON_PID=""
cleanup() {
    set +e
    if [ -n "$DAEMON_PID" ]; then
        "$BIN/banger" --socket "$WORK/run/bangerd.sock" vm rm demo >/dev/null 2>&1
        "$BIN/banger" --socket "$WORK/run/bangerd.sock" host teardown >/dev/null 2>&1
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
    echo "cleaned up: VM, daemon, network namespace $NS, $WORK"
}
trap cleanup EXIT

say "starting bangerd --dev in network namespace $NS"
ip netns add "$NS"
ip -n "$NS" link set lo up
# HOME="$WORK": the demo daemon's owner material (banger's client SSH key,
# which lives beside the owner config) and config are throwaway too, and a
# real ~/.config/banger/config.toml does not change the demo.
HOME="$WORK" ip netns exec "$NS" "$BIN/bangerd" --dev --state-dir "$WORK/state" --runtime-dir "$WORK/run" \
    >"$WORK/bangerd.log" 2>&1 &
DAEMON_PID=$!
export BANGER_SOCKET="$WORK/run/bangerd.sock"
for _ in $(seq 100); do [ -S "$BANGER_SOCKET" ] && break; sleep 0.1; done
[ -S "$BANGER_SOCKET" ] || { cat "$WORK/bangerd.log"; exit 1; }

say "publishing the default Debian image to the daemon"
"$BIN/banger" image build debian

say "creating VM demo"
start=$SECONDS
"$BIN/banger" vm create demo --wait --vcpus 1 --memory 512 --disk 1G
echo "VM ready in $((SECONDS - start)) s"
"$BIN/banger" vm ls

say "running uname -a in the VM over banger vm ssh"
ip netns exec "$NS" "$BIN/banger" vm ssh demo -- uname -a

say "done"
