//! Length-prefixed JSON frames.
//!
//! A frame is a 4-byte big-endian body length followed by that many bytes of
//! UTF-8 JSON. Bodies larger than [`MAX_FRAME_LEN`] are refused before any of
//! the body is read, so a peer cannot make the reader allocate unboundedly.
//! Both sockets (public RPC and privileged ops) use this format.
//!
//! On the privileged socket a reply may carry file descriptors beside it
//! (SCM_RIGHTS): [`write_frame_with_fds`] attaches them to the frame's first
//! byte, and [`read_frame_with_fds`] collects whatever arrives while the frame
//! is read, close-on-exec. At most [`MAX_FRAME_FDS`] travel with one frame.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest frame body accepted or produced, in bytes (1 MiB).
pub const MAX_FRAME_LEN: u32 = 1024 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Most file descriptors sent or accepted beside one frame.
pub const MAX_FRAME_FDS: usize = 8;

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
    #[error("{count} file descriptors exceed the {max} one frame may carry")]
    TooManyFds { count: usize, max: usize },
    #[error(
        "file descriptors passed beside the frame were cut off (MSG_CTRUNC; more than {max} sent)"
    )]
    FdsTruncated { max: usize },
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

/// Write one frame to a Unix stream socket with `fds` attached (SCM_RIGHTS)
/// to its first `sendmsg`; the rest of the frame follows as plain writes.
/// The caller keeps ownership of `fds` and closes them afterwards.
pub fn write_frame_with_fds<S, T>(
    s: &mut S,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), FrameError>
where
    S: AsFd + Write,
    T: Serialize,
{
    if fds.is_empty() {
        return write_frame(s, msg);
    }
    if fds.len() > MAX_FRAME_FDS {
        return Err(FrameError::TooManyFds {
            count: fds.len(),
            max: MAX_FRAME_FDS,
        });
    }
    let bytes = encode(msg)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FRAME_FDS))];
    let sent = loop {
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        if !control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)) {
            // Cannot happen: the buffer is sized for MAX_FRAME_FDS.
            return Err(FrameError::TooManyFds {
                count: fds.len(),
                max: MAX_FRAME_FDS,
            });
        }
        match rustix::net::sendmsg(
            s.as_fd(),
            &[IoSlice::new(&bytes)],
            &mut control,
            rustix::net::SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            // Nothing was sent, descriptors included: try again.
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(FrameError::Write(e.into())),
        }
    };
    // The descriptors went with the first byte; the rest is ordinary data.
    s.write_all(&bytes[sent..]).map_err(FrameError::Write)?;
    s.flush().map_err(FrameError::Write)
}

/// Read one frame from a Unix stream socket, with every file descriptor that
/// arrives beside it (received close-on-exec, in the order sent).
///
/// More than [`MAX_FRAME_FDS`] descriptors, or a cut-off control message, is
/// an error; descriptors already received are closed when the error returns.
pub fn read_frame_with_fds<S, T>(s: &S) -> Result<(T, Vec<OwnedFd>), FrameError>
where
    S: AsFd,
    T: DeserializeOwned,
{
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER_LEN];
    recv_exact(s.as_fd(), &mut header, &mut fds, true)?;
    let len = decode_header(header)?;
    let mut body = vec![0u8; len];
    recv_exact(s.as_fd(), &mut body, &mut fds, false)?;
    Ok((decode_body(&body)?, fds))
}

/// Fill `buf` with `recvmsg`, collecting descriptors into `fds`.
fn recv_exact(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    frame_start: bool,
) -> Result<(), FrameError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FRAME_FDS))];
    let mut got = 0;
    while got < buf.len() {
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let res = rustix::net::recvmsg(
            fd,
            &mut [IoSliceMut::new(&mut buf[got..])],
            &mut control,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        );
        let msg = match res {
            Ok(m) => m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(FrameError::Read(e.into())),
        };
        for cmsg in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            return Err(FrameError::FdsTruncated { max: MAX_FRAME_FDS });
        }
        if fds.len() > MAX_FRAME_FDS {
            return Err(FrameError::TooManyFds {
                count: fds.len(),
                max: MAX_FRAME_FDS,
            });
        }
        if msg.bytes == 0 {
            if frame_start && got == 0 {
                return Err(FrameError::Closed);
            }
            return Err(FrameError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            )));
        }
        got += msg.bytes;
    }
    Ok(())
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

    fn inode(fd: &impl AsFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    #[test]
    fn descriptors_travel_beside_a_frame() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let f1 = tempfile_fd();
        let f2 = tempfile_fd();
        write_frame_with_fds(&mut a, &Msg { a: 9 }, &[f1.as_fd(), f2.as_fd()]).unwrap();
        // A plain frame after it carries nothing.
        write_frame(&mut a, &Msg { a: 10 }).unwrap();
        let (msg, fds): (Msg, _) = read_frame_with_fds(&b).unwrap();
        assert_eq!(msg, Msg { a: 9 });
        assert_eq!(fds.len(), 2);
        assert_eq!(inode(&fds[0]), inode(&f1));
        assert_eq!(inode(&fds[1]), inode(&f2));
        for fd in &fds {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        let (msg, fds): (Msg, _) = read_frame_with_fds(&b).unwrap();
        assert_eq!((msg, fds.len()), (Msg { a: 10 }, 0));
        drop(a);
        assert!(read_frame_with_fds::<_, Msg>(&b).unwrap_err().is_closed());
    }

    #[test]
    fn too_many_descriptors_are_refused_on_both_ends() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let files: Vec<_> = (0..MAX_FRAME_FDS + 1).map(|_| tempfile_fd()).collect();
        let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
        let err = write_frame_with_fds(&mut a, &Msg { a: 1 }, &borrowed).unwrap_err();
        assert!(matches!(err, FrameError::TooManyFds { .. }), "{err}");

        // A peer that sends more than the reader accepts: the read fails
        // (over the count, or the control message cut off) rather than
        // losing descriptors silently.
        let files: Vec<_> = (0..MAX_FRAME_FDS * 2).map(|_| tempfile_fd()).collect();
        let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FRAME_FDS * 2))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&borrowed)));
        let bytes = encode(&Msg { a: 1 }).unwrap();
        let n = rustix::net::sendmsg(
            &a,
            &[IoSlice::new(&bytes)],
            &mut control,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
        assert_eq!(n, bytes.len());
        let err = read_frame_with_fds::<_, Msg>(&b).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::FdsTruncated { .. } | FrameError::TooManyFds { .. }
            ),
            "{err}"
        );
    }

    fn tempfile_fd() -> OwnedFd {
        rustix::fs::memfd_create("frame-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
    }
}
