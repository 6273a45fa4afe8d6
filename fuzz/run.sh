#!/usr/bin/env bash
# banger's fuzz targets on the stable toolchain (fuzz/README.md).
#
#   fuzz/run.sh build              build every target, instrumented
#   fuzz/run.sh seeds              (re)write corpus/ from banger's own types
#   fuzz/run.sh run TARGET [SECS]  fuzz one target (default 60 s)
#   fuzz/run.sh smoke [SECS]       every target in turn, SECS each (default 60)
#   fuzz/run.sh repro TARGET FILE  run one input (a crash) through a target
#   fuzz/run.sh list               the targets
#
# New inputs a run finds go to target/fuzz-work/TARGET (not committed); the
# seeds in corpus/TARGET are only read. A crash is written to
# crashes/TARGET/ and makes `run` and `smoke` exit 1. One fuzzer runs at a
# time, single-process (the host has two cores, shared).
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(frame config install_meta dns catalog bundle oci_layer ss)
CARGO=${CARGO:-cargo}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
OUT=target/$TRIPLE/release

# libFuzzer's instrumentation, as `cargo fuzz build --sanitizer none` asks
# rustc for it, with only stable flags: inline 8-bit edge counters and the
# PC table (the coverage libFuzzer's `cov:`/`ft:` count), and comparison
# tracing (so it learns the magic bytes and keywords the parsers compare
# against). `--cfg fuzzing` as cargo-fuzz sets it. `--target` keeps these
# flags off build scripts and proc macros, which must not be instrumented.
SANCOV="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cforce-frame-pointers=yes"

build() {
    RUSTFLAGS="$SANCOV" CARGO_TERM_COLOR=never \
        "$CARGO" build --release --locked --target "$TRIPLE" --bins
}

# libFuzzer options every run takes. -timeout: one input running longer is
# a finding (the DNS target waits up to 10 s for its probe). -rss_limit_mb:
# well under the host's memory, far above any target's need.
OPTS=(-timeout=30 -rss_limit_mb=4096 -print_final_stats=1)

fuzz_one() {
    local t=$1 secs=$2
    local work=target/fuzz-work/$t log=target/fuzz-work/$t.log
    mkdir -p "$work" "crashes/$t"
    local dict=()
    [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
    echo "==> $t: ${secs}s"
    set +e
    "$OUT/$t" "${OPTS[@]}" "${dict[@]}" -max_total_time="$secs" \
        -artifact_prefix="crashes/$t/" "$work" "corpus/$t" >"$log" 2>&1
    local rc=$?
    set -e
    summary "$t" "$log"
    if [ "$rc" != 0 ]; then
        echo "!!! $t: libFuzzer exited $rc; the input is in crashes/$t/, the log in fuzz/$log" >&2
        grep -E "panicked at|^==[0-9]+== ERROR|SUMMARY" "$log" | head -5 >&2 || true
        return 1
    fi
}

# One line per run: executions, exec/s, edges covered (cov), features (ft),
# corpus size.
summary() {
    local t=$1 log=$2
    local last execs rate
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    printf '%-13s execs=%s exec/s=%s %s\n' "$t" "${execs:-?}" "${rate:-?}" \
        "$(sed -E 's/^#[0-9]+ +[A-Z]+ +//; s/ (lim|exec\/s|rss|L):.*//' <<<"$last")"
}

case "${1:-}" in
    build) build ;;
    list) printf '%s\n' "${TARGETS[@]}" ;;
    seeds)
        build
        "$OUT/gen-seeds" corpus
        ;;
    run)
        t=${2:?usage: run.sh run TARGET [SECS]}
        build
        fuzz_one "$t" "${3:-60}"
        ;;
    repro)
        t=${2:?usage: run.sh repro TARGET FILE}
        build
        "$OUT/$t" "${3:?usage: run.sh repro TARGET FILE}"
        ;;
    smoke)
        secs=${2:-60}
        build
        failed=()
        for t in "${TARGETS[@]}"; do
            fuzz_one "$t" "$secs" || failed+=("$t")
        done
        if [ "${#failed[@]}" != 0 ]; then
            echo "fuzz smoke: crashes in ${failed[*]}" >&2
            exit 1
        fi
        echo "fuzz smoke: ${#TARGETS[@]} targets, ${secs}s each, no crash"
        ;;
    *)
        sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
