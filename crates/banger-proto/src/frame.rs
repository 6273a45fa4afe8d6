//! Length-prefixed JSON frames.
//!
//! A frame is a 4-byte big-endian body length followed by that many bytes of
//! UTF-8 JSON. Bodies larger than [`MAX_FRAME_LEN`] are refused before any of
//! the body is read, so a peer cannot make the reader allocate unboundedly.
//! Both sockets (public RPC and privileged ops) use this format.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest frame body accepted or produced, in bytes (1 MiB).
pub const MAX_FRAME_LEN: u32 = 1024 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u32 },
    #[error("empty frame")]
    Empty,
    #[error("peer closed the connection")]
    Closed,
    #[error("reading frame")]
    Read(#[source] io::Error),
    #[error("writing frame")]
    Write(#[source] io::Error),
    #[error("malformed message")]
    Decode(#[source] serde_json::Error),
    #[error("encoding message")]
    Encode(#[source] serde_json::Error),
}

impl FrameError {
    /// True when the peer simply went away between messages.
    pub fn is_closed(&self) -> bool {
        matches!(self, FrameError::Closed)
    }
}

/// Serialize `msg` into a complete frame (header + body).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::Encode)?;
    let len = check_len(body.len() as u64)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Validate a length prefix and return the body length it announces.
pub fn decode_header(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = check_len(u64::from(u32::from_be_bytes(header)))?;
    Ok(len as usize)
}

/// Parse a frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Decode)
}

fn check_len(len: u64) -> Result<u32, FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > u64::from(MAX_FRAME_LEN) {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len as u32)
}

/// Write one frame to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let bytes = encode(msg)?;
    w.write_all(&bytes).map_err(FrameError::Write)?;
    w.flush().map_err(FrameError::Write)
}

/// Read one frame from a blocking reader.
///
/// A clean end of stream before the first header byte is [`FrameError::Closed`];
/// an end of stream inside a frame is a read error.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => {
                return Err(FrameError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame header",
                )));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Read(e)),
        }
    }
    let len = decode_header(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(FrameError::Read)?;
    decode_body(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Msg {
        a: u32,
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&Msg { a: 7 }).unwrap();
        let back: Msg = read_frame(&mut bytes.as_slice()).unwrap();
        assert_eq!(back, Msg { a: 7 });
    }

    #[test]
    fn oversized_header_is_refused_without_reading_body() {
        let header = (MAX_FRAME_LEN + 1).to_be_bytes();
        // No body follows: the reader must fail on the header alone.
        let err = read_frame::<_, Msg>(&mut header.as_slice()).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, .. } if len == u64::from(MAX_FRAME_LEN) + 1)
        );
    }

    #[test]
    fn empty_frame_is_refused() {
        let err = read_frame::<_, Msg>(&mut [0u8, 0, 0, 0].as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Empty));
    }

    #[test]
    fn clean_eof_is_closed_but_torn_header_is_not() {
        assert!(
            read_frame::<_, Msg>(&mut [].as_slice())
                .unwrap_err()
                .is_closed()
        );
        let err = read_frame::<_, Msg>(&mut [0u8, 0].as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::Read(_)));
    }

    #[test]
    fn unknown_field_is_a_decode_error() {
        let body = br#"{"a":1,"b":2}"#;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        let err = read_frame::<_, Msg>(&mut frame.as_slice()).unwrap_err();
        let chain = crate::error::chain(&err).join(": ");
        assert!(chain.contains("unknown field `b`"), "{chain}");
    }

    #[test]
    fn encoder_refuses_oversized_messages() {
        let big = "x".repeat(MAX_FRAME_LEN as usize + 10);
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }
}
