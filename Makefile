# banger — build, test and lint entry points. `make test` and `make lint` are
# what CI runs (.ci/run); both need root for the real-kernel tests.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test deps-test deps-lint lint fmt bench demo smoke man chaos

all: build

build:
	$(CARGO) build --workspace --bins

# Unit tests, CLI tests, the cross-process tests (real daemons, real users,
# real sockets, real guests under QEMU, the real Firecracker, a real systemd
# in a container). Needs root; tests fail, never skip, without what they
# need. Installs the Debian packages of scripts/packages.list's `test` scope
# first; built guest images are cached in $BANGER_CACHE_DIR (default
# /var/cache/banger) by their inputs. The Firecracker tests run the real
# binary: $BANGER_FIRECRACKER, else ../shared/firecracker/bin/firecracker.
test: deps-test build
	$(CARGO) test --workspace --no-fail-fast

deps-test:
	scripts/install-deps.sh test

deps-lint:
	scripts/install-deps.sh lint

lint: deps-lint
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) deny --offline check bans licenses sources

fmt:
	$(CARGO) fmt --all

# Benchmarks compare against a baseline measured in the same run and write
# docs/benchmarks.md.
bench:
	$(CARGO) build --release --workspace --bins
	target/release/banger-bench --out docs/benchmarks.md

# `make chaos`: the kill matrix (docs/reliability.md): daemons that die at
# each of bangerd's crash points on real guests, then the checks that the
# next daemon is consistent and nothing is left. `make test` runs it too.
chaos: deps-test build
	$(CARGO) test -p banger-testkit --test vm crash -- --test-threads 1

man: build
	$(CARGO) run -q -p banger -- man --out-dir target/man

# `make demo`: on a fresh Debian 12 host, as root — install what it needs,
# build, boot a VM inside a private network namespace, run `uname -a` in it
# over `banger vm ssh`, clean up. See scripts/demo.sh.
demo:
	scripts/demo.sh

# `make smoke`: as root on a real systemd host with working KVM, a
# Firecracker binary on PATH and jq (not the CI host): runs the shared
# scenario scripts/system-scenario.sh with Firecracker — the same script the
# system_guest_nspawn test runs with QEMU in a container. Refuses (exit 2)
# on a host without systemd as PID 1, KVM, firecracker or jq. See
# scripts/smoke.sh.
smoke: build
	scripts/smoke.sh

# `make fuzz-smoke`: every fuzz target in fuzz/ (fuzz/README.md), built with
# libFuzzer on the stable toolchain, run for FUZZ_SECS (60) seconds each, one
# at a time, from its committed seed corpus. A crash fails the target; its
# input is kept in fuzz/crashes/TARGET/.
.PHONY: fuzz-smoke
FUZZ_SECS ?= 60
fuzz-smoke:
	fuzz/run.sh smoke $(FUZZ_SECS)
