//! The frame decoder and every message read off banger's two sockets.
//!
//! The first input byte picks whose reader the rest is fed to, as one byte
//! stream of length-prefixed frames (`banger_proto::frame::read_frame`,
//! read until the first error, as the servers do):
//!
//! * 0: `bangerd` serving the public socket: a `ClientHello`, then
//!   `Request`s.
//! * 1: `bangerd-root` serving `root.sock`: `PrivRequest`s (`Hello`, `Op`);
//!   every decoded `PrivOp` then goes through the helper's own check,
//!   `banger_executor::validate_op` (exported under `--cfg fuzzing`), which
//!   runs before any host state is read or changed. It must not panic; a
//!   refusal is answered as the helper answers it (`ExecError::to_rpc` in
//!   a `PrivReply::Error`), which must encode.
//! * 2: the CLI reading the daemon: `ServerMsg`s.
//! * 3: `bangerd` reading the helper: `PrivReply`s.
//!
//! What a server accepts must survive its own wire: a decoded request is
//! encoded again and must decode to the same value (requests are `Eq`; the
//! replies carry floats, so they are only re-encoded, which must not fail
//! short of the size cap).

#![no_main]

use banger_executor::validate_op;
use banger_proto::frame::{self, FrameError};
use banger_proto::privops::{PrivOp, PrivReply, PrivRequest};
use banger_proto::rpc::{ClientHello, Request, ServerMsg};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Most frames read from one input: far more than a seed holds, and a
/// bound on the work a pathological input can ask for.
const MAX_FRAMES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&side, stream)) = data.split_first() else {
        return;
    };
    let mut r = stream;
    match side % 4 {
        0 => {
            if read_same::<ClientHello>(&mut r).is_some() {
                for _ in 0..MAX_FRAMES {
                    let Some(req) = read_same::<Request>(&mut r) else {
                        break;
                    };
                    let _ = req.method();
                }
            }
        }
        1 => {
            for _ in 0..MAX_FRAMES {
                let Some(req) = read_same::<PrivRequest>(&mut r) else {
                    break;
                };
                if let PrivRequest::Op(op) = &req {
                    let _ = op.name();
                    validate(op);
                }
            }
        }
        2 => {
            for _ in 0..MAX_FRAMES {
                if read_reencode::<ServerMsg>(&mut r).is_none() {
                    break;
                }
            }
        }
        _ => {
            for _ in 0..MAX_FRAMES {
                let Some(reply) = read_reencode::<PrivReply>(&mut r) else {
                    break;
                };
                if let PrivReply::Ok(outcome) = &reply {
                    let _ = (outcome.kind(), outcome.fd_indices());
                }
            }
        }
    }
});

/// What `bangerd-root` does with an op before touching the host
/// (`Executor::execute`): `validate::op`, then, if it passes, the op's
/// `Debug` form for the journal line; if it is refused, the error's code,
/// its one-line chain for the log, and the reply frame.
fn validate(op: &PrivOp) {
    match validate_op(op) {
        Ok(()) => {
            let _ = format!("{op:?}");
        }
        Err(e) => {
            let _ = (e.code(), e.render());
            let reply = PrivReply::Error(e.to_rpc());
            match frame::encode(&reply) {
                Ok(_) | Err(FrameError::TooLarge { .. }) => {}
                Err(err) => panic!("the refusal of {op:?} cannot be encoded: {err} ({reply:?})"),
            }
        }
    }
}

/// One frame as `T`, which must come back unchanged through `encode`.
fn read_same<T>(r: &mut &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let msg: T = frame::read_frame(r).ok()?;
    match frame::encode(&msg) {
        Ok(bytes) => {
            let back: T = frame::read_frame(&mut bytes.as_slice()).unwrap_or_else(|e| {
                panic!("{msg:?} was accepted, but its own encoding is refused: {e}")
            });
            assert_eq!(back, msg, "a message changed through its own encoding");
        }
        // Re-encoding may grow past the cap (escapes written longer than
        // they were read); anything else is a bug.
        Err(FrameError::TooLarge { .. }) => {}
        Err(e) => panic!("{msg:?} was accepted but cannot be encoded: {e}"),
    }
    Some(msg)
}

/// One frame as `T`, which must encode again.
fn read_reencode<T: Serialize + DeserializeOwned + std::fmt::Debug>(r: &mut &[u8]) -> Option<T> {
    let msg: T = frame::read_frame(r).ok()?;
    match frame::encode(&msg) {
        Ok(_) | Err(FrameError::TooLarge { .. }) => {}
        Err(e) => panic!("{msg:?} was accepted but cannot be encoded: {e}"),
    }
    Some(msg)
}
