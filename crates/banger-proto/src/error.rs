//! Errors as they cross a socket: a stable code plus the chain of messages.

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error class. The CLI maps these to exit statuses
/// in exactly one place (`banger::exit`); never reuse or renumber a variant's
/// meaning, only add new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message could not be parsed or failed validation.
    BadRequest,
    /// A frame exceeded the size cap.
    FrameTooLarge,
    /// Client and server speak different protocol versions.
    ProtocolMismatch,
    /// The peer's uid is not allowed to use this socket.
    PermissionDenied,
    /// A named object does not exist.
    NotFound,
    /// A named object already exists.
    AlreadyExists,
    /// The object is in a state that does not allow the operation.
    InvalidState,
    /// A required host facility or peer is not available.
    Unavailable,
    /// A bug or an unexpected host failure.
    Internal,
    /// A code this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::ProtocolMismatch => "protocol_mismatch",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as sent over the wire: `messages` runs from the outermost context
/// to the root cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{}", self.render())]
pub struct RpcError {
    pub code: ErrorCode,
    pub messages: Vec<String>,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code,
            messages: vec![message.into()],
        }
    }

    /// Build from a Rust error, walking its `source()` chain.
    pub fn from_error(code: ErrorCode, err: &(dyn std::error::Error + 'static)) -> Self {
        RpcError {
            code,
            messages: chain(err),
        }
    }

    /// Prepend an outer context message.
    pub fn context(mut self, message: impl Into<String>) -> Self {
        self.messages.insert(0, message.into());
        self
    }

    /// The chain joined the way `main` prints it: `outer: inner: cause`.
    pub fn render(&self) -> String {
        if self.messages.is_empty() {
            return self.code.to_string();
        }
        self.messages.join(": ")
    }
}

/// The messages of an error and all of its sources, outermost first.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        out.push(e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_from_newer_peers_decode() {
        let e: RpcError =
            serde_json::from_str(r#"{"code":"quota_exceeded","messages":["x"]}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Unknown);
    }

    #[test]
    fn chain_walks_sources_outermost_first() {
        #[derive(Debug, thiserror::Error)]
        #[error("opening store at /x")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk on fire"));
        let rpc = RpcError::from_error(ErrorCode::Internal, &e);
        assert_eq!(rpc.messages, vec!["opening store at /x", "disk on fire"]);
        assert_eq!(rpc.render(), "opening store at /x: disk on fire");
    }
}
