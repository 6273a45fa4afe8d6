#!/usr/bin/env bash
# Install what a scope of scripts/packages.list needs, on Debian 12, as root.
#
#   scripts/install-deps.sh demo   what `make demo` needs
#   scripts/install-deps.sh test   what `make test` and .ci/run need (a superset)
#   scripts/install-deps.sh lint   cargo-deny, which `make lint` runs
#
# Only missing packages are installed (`apt-get update` runs once, and only
# then). For `test` it also checks the Firecracker binary that
# packages.list's `shared` line names (../shared/firecracker/bin/firecracker
# beside the checkout, or $BANGER_FIRECRACKER), which no registry serves, and
# unpacks (never installs) the `unpacked` packages into
# $BANGER_CACHE_DIR/unpacked/<package>/ (default /var/cache/banger): udev's
# maintainer scripts would start a udevd acting on every block device of a
# host whose PID 1 is not systemd, and the tests need only its binaries and
# rules.
set -euo pipefail
cd "$(dirname "$0")/.."

scope="${1:-}"
case "$scope" in
    demo | test | lint) ;;
    *)
        echo "usage: $0 demo|test|lint" >&2
        exit 2
        ;;
esac
# cargo-deny: pinned; `make lint` checks bans, licenses and sources with it.
CARGO_DENY_VERSION=0.20.2
if [ "$scope" = lint ]; then
    if ! cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
        echo "==> installing cargo-deny $CARGO_DENY_VERSION"
        cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
    fi
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "$0: installing packages needs root" >&2
    exit 1
fi

wanted=()
while read -r pkg scopes _programs; do
    case "$pkg" in '' | '#'*) continue ;; esac
    case ",$scopes," in
        *,"$scope",*) wanted+=("$pkg") ;;
    esac
done <scripts/packages.list

missing=()
for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust 1.95 or newer (rustup), then run this again" >&2
    exit 1
fi

if [ "$scope" = test ]; then
    cache="${BANGER_CACHE_DIR:-/var/cache/banger}/unpacked"
    mkdir -p "$cache"
    updated=
    while read -r pkg scopes _programs; do
        case "$pkg" in '' | '#'*) continue ;; esac
        case ",$scopes," in *,unpacked,*) ;; *) continue ;; esac
        [ -f "$cache/$pkg/.deb" ] && continue
        dl=$(mktemp -d)
        chmod 0755 "$dl" # apt-get download runs as _apt
        if ! (cd "$dl" && apt-get download -q "$pkg" >/dev/null 2>&1); then
            if [ -z "$updated" ]; then
                apt-get update -q
                updated=1
            fi
            (cd "$dl" && apt-get download -q "$pkg")
        fi
        deb=$(ls "$dl"/*.deb)
        echo "==> unpacking $(basename "$deb") into $cache/$pkg"
        rm -rf "$cache/$pkg.new"
        dpkg -x "$deb" "$cache/$pkg.new"
        basename "$deb" >"$cache/$pkg.new/.deb"
        rm -rf "$cache/$pkg"
        mv "$cache/$pkg.new" "$cache/$pkg"
        rm -rf "$dl"
    done <scripts/packages.list

    fc="${BANGER_FIRECRACKER:-../shared/firecracker/bin/firecracker}"
    if [ ! -x "$fc" ]; then
        echo "no Firecracker binary at $fc: the suite runs the real Firecracker v1.16.1" >&2
        echo "(../shared/firecracker/bin/firecracker beside the checkout, or set BANGER_FIRECRACKER)" >&2
        exit 1
    fi
fi
