//! `banger-bench` (`make bench`): measured, not asserted.
//!
//! Each benchmark runs against a baseline measured in the same run on the same
//! machine, and the results are written as a Markdown table.
//!
//! * `rpc_ping`: one request/response on an established connection to a real
//!   `bangerd --dev` (peer already authenticated, handshake done), against a
//!   baseline echo server on a Unix socket speaking the same frames from a
//!   plain thread. The difference is the daemon's own per-request cost
//!   (async runtime, dispatch, serialization of a real response).
//! * `rpc_connect`: connect + SO_PEERCRED check + handshake + one ping on a
//!   fresh connection (what every CLI invocation pays), against the baseline
//!   connect + one echo.
//! * `oci_pull_ext4` (`bench_oci.rs`): OCI pull → ext4 with banger-oci against
//!   `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d`, from a real registry on
//!   loopback in a throwaway network namespace. `--only oci` runs just this.
//! * `vm_orchestration`, `vm_ssh_ready`, `root_disk_clone` (`bench_vm.rs`):
//!   QEMU/TCG boots through banger against a hand-written QEMU command line,
//!   and reflink clones against full copies. `--only vm` runs just these.
//! * `workspace_prepare` (`bench_workspace.rs`): `banger workspace prepare` of
//!   a >100 MB repository, full and after a one-file change, against `tar |
//!   ssh tar` over the same channel. `--only workspace` runs just this.
//!
//! Needs root (it starts `bangerd --dev`). Bounded: a fixed number of
//! iterations per case, loopback Unix sockets only.
#![allow(clippy::disallowed_methods)] // starts the daemon under test directly

mod bench_oci;
mod bench_vm;
mod bench_workspace;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_proto::frame::{read_frame, write_frame};
use banger_proto::rpc::{ClientHello, Request, ServerMsg};
use banger_testkit::DevDaemon;
use serde_json::Value;

const WARMUP: usize = 200;
const ITERS: usize = 5_000;
const CONNECT_ITERS: usize = 1_000;

struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
}

/// The `pct`th percentile of `samples` (the sample at index `n * pct /
/// 100` once sorted; `pct` 50 is the median). Every section uses this one.
pub(crate) fn percentile(samples: &[Duration], pct: usize) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    match s.len() {
        0 => Duration::ZERO,
        n => s[(n * pct / 100).min(n - 1)],
    }
}

fn stats(samples: Vec<Duration>) -> Stats {
    let sum: Duration = samples.iter().sum();
    Stats {
        median: percentile(&samples, 50),
        p99: percentile(&samples, 99),
        mean: sum / samples.len() as u32,
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// A thread answering each frame with the same frame: the floor for a
/// framed round trip over a Unix socket.
fn start_echo(path: &Path) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                while let Ok(v) = read_frame::<_, Value>(&mut s) {
                    if write_frame(&mut s, &v).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn daemon_conn(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    write_frame(&mut s, &ClientHello::current()).unwrap();
    let hello: ServerMsg = read_frame(&mut s).unwrap();
    assert!(matches!(hello, ServerMsg::Hello(_)), "{hello:?}");
    s
}

fn daemon_ping(s: &mut UnixStream) {
    write_frame(s, &Request::Ping).unwrap();
    let r: ServerMsg = read_frame(s).unwrap();
    assert!(matches!(r, ServerMsg::Done(_)), "{r:?}");
}

fn echo_ping(s: &mut UnixStream) {
    write_frame(s, &Request::Ping).unwrap();
    let _: Value = read_frame(s).unwrap();
}

fn time_n(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// `doc` with the section starting at `heading` (up to the next `\n## `)
/// replaced by `section`, or with `section` appended.
fn splice(doc: &str, heading: &str, section: &str) -> String {
    match doc.find(heading) {
        Some(start) => {
            let rest = &doc[start + 1..];
            let end = rest.find("\n## ").map_or(doc.len(), |e| start + 1 + e);
            format!("{}{section}{}", &doc[..start], &doc[end..])
        }
        None => format!("{}{section}", doc.trim_end_matches('\n').to_string() + "\n"),
    }
}

fn main() {
    let out = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("docs/benchmarks.md"));
    banger_testkit::require_root();
    // `--only vm`: just the VM benchmarks, printed, docs untouched.
    if std::env::args().any(|a| a == "vm") && std::env::args().any(|a| a == "--only") {
        print!("{}", bench_vm::section());
        return;
    }
    // `--only workspace`: just the workspace benchmark, printed; with
    // `--splice` it also replaces (or appends) its section in the output file.
    if std::env::args().any(|a| a == "workspace") && std::env::args().any(|a| a == "--only") {
        let section = bench_workspace::section();
        print!("{section}");
        if std::env::args().any(|a| a == "--splice") {
            let doc = std::fs::read_to_string(&out).unwrap_or_default();
            let doc = splice(&doc, "\n## Workspace prepare", &section);
            std::fs::write(&out, doc).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
        }
        return;
    }
    // `--only oci`: just the OCI pull benchmark, printed, docs untouched.
    if std::env::args().any(|a| a == "oci") && std::env::args().any(|a| a == "--only") {
        print!("{}", bench_oci::section());
        return;
    }
    let d = DevDaemon::start();
    let dir = tempfile::tempdir().unwrap();
    let echo = dir.path().join("echo.sock");
    start_echo(&echo);

    // rpc_ping
    let mut ds = daemon_conn(&d.socket);
    let mut es = UnixStream::connect(&echo).unwrap();
    time_n(WARMUP, || daemon_ping(&mut ds));
    time_n(WARMUP, || echo_ping(&mut es));
    let ping_d = stats(time_n(ITERS, || daemon_ping(&mut ds)));
    let ping_b = stats(time_n(ITERS, || echo_ping(&mut es)));

    // rpc_connect
    let conn_d = stats(time_n(CONNECT_ITERS, || {
        let mut s = daemon_conn(&d.socket);
        daemon_ping(&mut s);
    }));
    let conn_b = stats(time_n(CONNECT_ITERS, || {
        let mut s = UnixStream::connect(&echo).unwrap();
        echo_ping(&mut s);
    }));

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Written by `make bench` (`crates/banger-testkit/src/bin/bench.rs`). Every row is\n",
    );
    md.push_str("measured against a baseline in the same run on the same machine; times are\n");
    md.push_str("microseconds per iteration. Regenerate rather than edit.\n\n");
    md.push_str(&format!(
        "Machine: {cpu}, {} cores. banger {}.\n\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        banger_proto::BANGER_VERSION
    ));
    md.push_str("| benchmark | iterations | subject median | subject p99 | subject mean | baseline median | baseline p99 | overhead (median) |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for (name, n, s, b, what) in [
        (
            "rpc_ping",
            ITERS,
            &ping_d,
            &ping_b,
            "ping on an open bangerd connection vs framed echo thread",
        ),
        (
            "rpc_connect",
            CONNECT_ITERS,
            &conn_d,
            &conn_b,
            "connect + peercred + hello + ping vs connect + echo",
        ),
    ] {
        md.push_str(&format!(
            "| `{name}` ({what}) | {n} | {} | {} | {} | {} | {} | {:.2}x |\n",
            us(s.median),
            us(s.p99),
            us(s.mean),
            us(b.median),
            us(b.p99),
            s.median.as_secs_f64() / b.median.as_secs_f64()
        ));
    }
    md.push_str(&bench_oci::section());
    md.push_str(&bench_vm::section());
    md.push_str(&bench_workspace::section());
    std::fs::File::create(&out)
        .and_then(|mut f| f.write_all(md.as_bytes()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    print!("{md}");
}
