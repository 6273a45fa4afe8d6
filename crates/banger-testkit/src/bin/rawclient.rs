//! `banger-rawclient`: a protocol-level test client.
//!
//! Connects to a banger socket and performs a script of actions, printing
//! every message received as one JSON line. Tests run it as other uids
//! (`Command::uid`) to exercise peer authentication, and use it to send
//! malformed frames that no well-behaved client would.
//!
//! usage: banger-rawclient SOCKET ACTION...
//!   hello-rpc[=N]    send a public-RPC ClientHello (protocol N, default current)
//!   hello-priv[=N]   send a privileged-ops Hello (protocol N, default current)
//!   json=TEXT        send TEXT as one frame body
//!   hex=HEX          send raw bytes (no framing added)
//!   big=N            send a header announcing an N-byte body, and nothing else
//!   read=N           read N frames
//!   reply            read frames until a terminal one (done, ok or error)
//!   eof              read frames until the server closes
//! Output lines: {"recv":VALUE} | {"eof":true} | {"read_error":"..."}

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use banger_proto::frame::{FrameError, read_frame, write_frame};
use banger_proto::privops::{PRIV_PROTOCOL_VERSION, PrivRequest};
use banger_proto::rpc::{ClientHello, PROTOCOL_VERSION};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((socket, actions)) = args.split_first() else {
        eprintln!("usage: banger-rawclient SOCKET ACTION...");
        return ExitCode::from(2);
    };
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("banger-rawclient: connecting to {socket}: {e}");
            return ExitCode::from(3);
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    for action in actions {
        let (verb, arg) = action.split_once('=').unwrap_or((action.as_str(), ""));
        let sent = match verb {
            "hello-rpc" => {
                let mut h = ClientHello::current();
                h.protocol = arg.parse().unwrap_or(PROTOCOL_VERSION);
                write_frame(&mut s, &h).map_err(|e| e.to_string())
            }
            "hello-priv" => {
                let protocol = arg.parse().unwrap_or(PRIV_PROTOCOL_VERSION);
                write_frame(&mut s, &PrivRequest::Hello { protocol }).map_err(|e| e.to_string())
            }
            "json" => {
                let mut frame = (arg.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(arg.as_bytes());
                s.write_all(&frame).map_err(|e| e.to_string())
            }
            "hex" => match decode_hex(arg) {
                Some(bytes) => s.write_all(&bytes).map_err(|e| e.to_string()),
                None => Err(format!("bad hex `{arg}`")),
            },
            "big" => {
                let n: u32 = arg.parse().unwrap_or(u32::MAX);
                s.write_all(&n.to_be_bytes()).map_err(|e| e.to_string())
            }
            "read" => {
                for _ in 0..arg.parse::<usize>().unwrap_or(1) {
                    if read_one(&mut s).is_none() {
                        break;
                    }
                }
                Ok(())
            }
            "reply" => {
                while let Some(v) = read_one(&mut s) {
                    if matches!(v["type"].as_str(), Some("done" | "ok" | "error")) {
                        break;
                    }
                }
                Ok(())
            }
            "eof" => {
                while read_one(&mut s).is_some() {}
                Ok(())
            }
            other => Err(format!("unknown action `{other}`")),
        };
        if let Err(e) = sent {
            println!("{}", json!({ "send_error": e, "action": verb }));
        }
    }
    ExitCode::SUCCESS
}

/// Read and print one frame; `None` once the stream is finished.
fn read_one(s: &mut UnixStream) -> Option<Value> {
    match read_frame::<_, Value>(s) {
        Ok(v) => {
            println!("{}", json!({ "recv": v }));
            Some(v)
        }
        Err(FrameError::Closed) => {
            println!("{}", json!({ "eof": true }));
            None
        }
        Err(e) => {
            let chain = banger_proto::error::chain(&e).join(": ");
            println!("{}", json!({ "read_error": chain }));
            None
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}
