//! Exit statuses of `banger`: the one place where errors become numbers.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: an internal error or an unexpected host failure |
//! | 2 | usage error: the command line could not be parsed |
//! | 3 | the daemon is unreachable, or its socket is unsafe to use |
//! | 4 | permission denied by the daemon |
//! | 5 | a named object was not found |
//! | 6 | conflict: the object already exists or is in the wrong state |
//! | 7 | incompatible peer: protocol mismatch, malformed or oversized message |
//! | 8 | unavailable: the host lacks a required facility |
//! | 10 | doctor found failing checks (warnings alone exit 0) |
//!
//! The same table is printed at the end of `banger --help` and in banger(1);
//! both are generated from [`Exit::ALL`], and a test keeps this doc in step.
//! Never renumber a status: scripts depend on them. Add new ones.

use banger_proto::ErrorCode;
use banger_proto::frame::FrameError;

use crate::client::ClientError;
use crate::error::CliError;

/// A documented exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failure,
    Usage,
    Unreachable,
    PermissionDenied,
    NotFound,
    Conflict,
    Incompatible,
    Unavailable,
    DoctorFailures,
}

impl Exit {
    /// Every status, in the order of the documented table.
    pub const ALL: [Exit; 10] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::Unreachable,
        Exit::PermissionDenied,
        Exit::NotFound,
        Exit::Conflict,
        Exit::Incompatible,
        Exit::Unavailable,
        Exit::DoctorFailures,
    ];

    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Unreachable => 3,
            Exit::PermissionDenied => 4,
            Exit::NotFound => 5,
            Exit::Conflict => 6,
            Exit::Incompatible => 7,
            Exit::Unavailable => 8,
            Exit::DoctorFailures => 10,
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "success",
            Exit::Failure => "failure: an internal error or an unexpected host failure",
            Exit::Usage => "usage error: the command line could not be parsed",
            Exit::Unreachable => "the daemon is unreachable, or its socket is unsafe to use",
            Exit::PermissionDenied => "permission denied by the daemon",
            Exit::NotFound => "a named object was not found",
            Exit::Conflict => "conflict: the object already exists or is in the wrong state",
            Exit::Incompatible => {
                "incompatible peer: protocol mismatch, malformed or oversized message"
            }
            Exit::Unavailable => "unavailable: the host lacks a required facility",
            Exit::DoctorFailures => "doctor found failing checks (warnings alone exit 0)",
        }
    }

    /// Status for an error class reported by the daemon.
    pub fn for_rpc(code: ErrorCode) -> Exit {
        match code {
            ErrorCode::BadRequest | ErrorCode::FrameTooLarge | ErrorCode::ProtocolMismatch => {
                Exit::Incompatible
            }
            ErrorCode::PermissionDenied => Exit::PermissionDenied,
            ErrorCode::NotFound => Exit::NotFound,
            ErrorCode::AlreadyExists | ErrorCode::InvalidState => Exit::Conflict,
            ErrorCode::Unavailable => Exit::Unavailable,
            ErrorCode::Internal | ErrorCode::Unknown => Exit::Failure,
        }
    }

    /// Status for a failed command.
    pub fn for_error(err: &CliError) -> Exit {
        match err {
            CliError::Client(e) => Exit::for_client(e),
            CliError::PipeClosed => Exit::Ok,
            CliError::WriteStdout(_)
            | CliError::CreateDir { .. }
            | CliError::WriteManPage { .. }
            | CliError::RenderManPage { .. }
            | CliError::Exec { .. }
            | CliError::UnsafeSshTarget { .. }
            | CliError::ReadFile { .. } => Exit::Failure,
        }
    }

    fn for_client(err: &ClientError) -> Exit {
        match err {
            ClientError::Connect { .. } | ClientError::UnsafeSocket(_) => Exit::Unreachable,
            ClientError::Remote(e) => Exit::for_rpc(e.code),
            ClientError::ProtocolMismatch { .. } | ClientError::Protocol { .. } => {
                Exit::Incompatible
            }
            ClientError::Frame { source, .. } => match source {
                // The daemon went away mid-conversation.
                FrameError::Closed | FrameError::Read(_) | FrameError::Write(_) => {
                    Exit::Unreachable
                }
                FrameError::TooLarge { .. }
                | FrameError::Empty
                | FrameError::Decode(_)
                | FrameError::TooManyFds { .. }
                | FrameError::FdsTruncated { .. } => Exit::Incompatible,
                FrameError::Encode(_) => Exit::Failure,
            },
        }
    }

    /// Status for a command line clap refused (or help/version it printed).
    pub fn for_clap(err: &clap::Error) -> Exit {
        if err.use_stderr() {
            Exit::Usage
        } else {
            Exit::Ok
        }
    }

    /// The stable `code` string of an error in `--json` output: the daemon's
    /// [`ErrorCode`] for remote errors, a client-side class otherwise.
    pub fn json_code(err: &CliError) -> &'static str {
        match err {
            CliError::Client(ClientError::Remote(e)) => e.code.as_str(),
            CliError::Client(ClientError::Connect { .. }) => "daemon_unreachable",
            CliError::Client(ClientError::UnsafeSocket(_)) => "unsafe_socket",
            CliError::Client(ClientError::ProtocolMismatch { .. }) => "protocol_mismatch",
            CliError::Client(ClientError::Protocol { .. }) => "protocol_error",
            CliError::Client(ClientError::Frame { source, .. }) => match source {
                FrameError::TooLarge { .. } => "frame_too_large",
                FrameError::Closed | FrameError::Read(_) | FrameError::Write(_) => {
                    "connection_lost"
                }
                FrameError::Empty
                | FrameError::Decode(_)
                | FrameError::TooManyFds { .. }
                | FrameError::FdsTruncated { .. } => "protocol_error",
                FrameError::Encode(_) => "internal",
            },
            CliError::PipeClosed
            | CliError::WriteStdout(_)
            | CliError::CreateDir { .. }
            | CliError::WriteManPage { .. }
            | CliError::ReadFile { .. } => "io",
            CliError::Exec { .. } => "exec_failed",
            CliError::RenderManPage { .. } => "internal",
            CliError::UnsafeSshTarget { .. } => "protocol_error",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// The exit-status table shown after `banger --help` and in banger(1).
pub fn help_table() -> String {
    let mut out = String::from("Exit status:\n");
    for e in Exit::ALL {
        out.push_str(&format!("  {:<3} {}\n", e.code(), e.meaning()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_documented_in_the_module_doc() {
        let src = include_str!("exit.rs");
        let mut seen = std::collections::HashSet::new();
        for e in Exit::ALL {
            assert!(seen.insert(e.code()), "{e:?} reuses status {}", e.code());
            let row = format!("//! | {} | {} |", e.code(), e.meaning());
            assert!(src.contains(&row), "module doc lacks the row `{row}`");
        }
    }

    #[test]
    fn every_error_code_has_a_status() {
        let check =
            |code: ErrorCode, want: u8| assert_eq!(Exit::for_rpc(code).code(), want, "{code}");
        check(ErrorCode::BadRequest, 7);
        check(ErrorCode::FrameTooLarge, 7);
        check(ErrorCode::ProtocolMismatch, 7);
        check(ErrorCode::PermissionDenied, 4);
        check(ErrorCode::NotFound, 5);
        check(ErrorCode::AlreadyExists, 6);
        check(ErrorCode::InvalidState, 6);
        check(ErrorCode::Unavailable, 8);
        check(ErrorCode::Internal, 1);
        check(ErrorCode::Unknown, 1);
    }

    #[test]
    fn help_table_lists_every_status() {
        let t = help_table();
        for e in Exit::ALL {
            assert!(
                t.contains(&format!("  {:<3} {}", e.code(), e.meaning())),
                "{t}"
            );
        }
    }
}
