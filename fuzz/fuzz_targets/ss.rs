//! The guest's `ss` output: `bangerd::vm::parse_ss` (exported under
//! `--cfg fuzzing`), which turns what `sudo -n ss -H -tulnp` printed in the
//! guest, over ssh, into the `vm ports` answer. The guest writes every byte
//! of it.
//!
//! The input is the VM's name on a first line, then the output; the daemon
//! reads ssh's stdout lossily as UTF-8, and so does the target. A first
//! line that is not a VM name (`banger_proto::guest::check_hostname`: the
//! only names the daemon passes) is taken as output, under the name `dev`.
//!
//! Checked besides "no panic", what `VmService::ports` and the CLI rely on:
//! one port at most per line; ports sorted by (port, proto) with no two
//! neighbours alike (`dedup_by`); `proto` the first field of a line, one
//! word, non-empty; `address` and `process` single words (the CLI's table
//! is one row per port), `process` free of `"`; `endpoint` exactly
//! `NAME.vm:PORT`; and the answer (`ServerMsg::Done(Response::Vm(
//! VmResponse::Ports(..)))`) comes back unchanged through the frame codec.

#![no_main]

use std::collections::BTreeSet;

use banger_proto::frame::{self, FrameError};
use banger_proto::guest::check_hostname;
use banger_proto::rpc::{Response, ServerMsg};
use banger_proto::vm::{VmPorts, VmResponse};
use bangerd::vm::parse_ss;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (name, out) = match text.split_once('\n') {
        Some((first, rest)) if check_hostname(first).is_ok() => (first, rest),
        _ => ("dev", &*text),
    };
    let ports = parse_ss(name, out);

    let lines: Vec<&str> = out.lines().collect();
    assert!(
        ports.len() <= lines.len(),
        "{} ports from {} lines: {ports:?}",
        ports.len(),
        lines.len()
    );
    let first_fields: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let one_word = |s: &str| !s.chars().any(char::is_whitespace);
    for p in &ports {
        assert!(
            !p.proto.is_empty() && one_word(&p.proto),
            "proto {:?}",
            p.proto
        );
        assert!(
            first_fields.contains(p.proto.as_str()),
            "proto {:?} is no line's first field",
            p.proto
        );
        assert!(one_word(&p.address), "address {:?}", p.address);
        if let Some(process) = &p.process {
            assert!(
                one_word(process) && !process.contains('"'),
                "process {process:?}"
            );
        }
        assert_eq!(p.endpoint, format!("{name}.vm:{}", p.port), "{p:?}");
    }
    for w in ports.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            (a.port, &a.proto) <= (b.port, &b.proto),
            "ports out of order: {a:?} before {b:?}"
        );
        assert!(
            !(a.port == b.port && a.proto == b.proto && a.process == b.process),
            "the same port twice in a row: {a:?}, {b:?}"
        );
    }

    // The answer as the daemon sends it and the CLI reads it.
    let answer = VmPorts {
        name: name.to_string(),
        ports,
    };
    let msg = ServerMsg::Done(Response::Vm(VmResponse::Ports(answer.clone())));
    match frame::encode(&msg) {
        Ok(bytes) => {
            let back: ServerMsg = frame::read_frame(&mut bytes.as_slice())
                .unwrap_or_else(|e| panic!("the ports answer does not decode: {e}: {answer:?}"));
            let ServerMsg::Done(Response::Vm(VmResponse::Ports(back))) = back else {
                panic!("the ports answer decodes as another message: {back:?}");
            };
            assert_eq!(back, answer, "the ports answer changed through the wire");
        }
        Err(FrameError::TooLarge { .. }) => {}
        Err(e) => panic!("the ports answer cannot be encoded: {e}: {answer:?}"),
    }
});
