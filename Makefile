# banger — build, test and lint entry points. `make test` and `make lint` are
# what CI runs (.ci/run); both need root for the real-kernel tests.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test lint fmt bench demo smoke man deps-check

all: build

build:
	$(CARGO) build --workspace --bins

# Unit tests, CLI tests and the cross-process tests (real daemons, real users,
# real sockets). Needs root; tests fail, never skip, without it.
test: build
	$(CARGO) test --workspace --no-fail-fast

lint:
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

man: build
	$(CARGO) run -q -p banger -- man --out-dir target/man

# `make demo` and `make smoke` boot real VMs; they arrive with the VM
# lifecycle work. Until then they say so and fail rather than pretend.
demo smoke:
	@echo "make $@: not available yet — VM lifecycle (boot, ssh) is not built; see README 'Status'" >&2
	@exit 2
