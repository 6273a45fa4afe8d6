#!/bin/sh
# Cargo's runner for this workspace's test binaries
# (.cargo/config.toml). As root, it runs the binary in a private mount
# namespace of its own in which /dev/net/tun is a node of the tun device
# (10:200) of mode 0666: what systemd's udev rules make it on every
# systemd host, and what a jailed Firecracker (a slot uid without
# groups) needs. Hosts without udev (the lab's CI hosts; a container)
# have it 0600, and the tests must not depend on which. Nothing is
# mounted or made outside that namespace; it goes with the binary.
# As any other user, when already inside such a namespace, or for a
# program rather than a test (`cargo run`: test binaries are the ones
# under target/*/deps/), it runs the binary as it is.
set -eu
case "$1" in
    */deps/*) ;;
    *) exec "$@" ;;
esac
if [ "$(id -u)" != 0 ] || [ -n "${BANGER_TEST_DEV_NS:-}" ]; then
    exec "$@"
fi
BANGER_TEST_DEV_NS=1
export BANGER_TEST_DEV_NS
exec unshare --mount --propagation private sh -c '
    mount -t tmpfs -o mode=0755,size=16k banger-test-dev /dev/net &&
    mknod -m 0666 /dev/net/tun c 10 200 &&
    exec "$@"' banger-test-runner "$@"
