//! The error a command ends with, and how `main` reports it.
//!
//! Human form, on stderr: `banger: outer: inner: cause` and an optional
//! `hint: ...` line. With `--json`, on stdout:
//! `{"error":{"code":"...","messages":["outer","inner","cause"],"hint":"..."}}`
//! (`hint` only when there is one). The exit status is the same either way
//! and comes from [`Exit::for_error`](crate::exit::Exit::for_error).

use std::io::{self, Write};
use std::path::PathBuf;

use crate::client::ClientError;
use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The reader of stdout went away (`banger ... | head`): not a failure.
    #[error("standard output was closed")]
    PipeClosed,
    #[error("writing to standard output")]
    WriteStdout(#[source] io::Error),
    #[error("creating directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing man page {}", path.display())]
    WriteManPage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rendering man page {page}")]
    RenderManPage {
        page: String,
        #[source]
        source: io::Error,
    },
    #[error("running {program}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The daemon's answer for `vm ssh` holds a value that could be read
    /// as an ssh option or change ssh's configuration: refused, not run.
    #[error("the daemon's SSH target has an unsafe {field}: {value:?}")]
    UnsafeSshTarget { field: &'static str, value: String },
    #[error("reading {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CliError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            CliError::Client(e) => e.hint(),
            _ => None,
        }
    }

    /// The messages of this error and its causes, outermost first. An error
    /// from the daemon contributes its own message list.
    pub fn messages(&self) -> Vec<String> {
        match self {
            CliError::Client(ClientError::Remote(rpc)) if rpc.messages.is_empty() => {
                vec![rpc.code.to_string()]
            }
            CliError::Client(ClientError::Remote(rpc)) => rpc.messages.clone(),
            _ => banger_proto::error::chain(self),
        }
    }

    /// The `{"error": {...}}` object printed with `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut inner = serde_json::json!({
            "code": Exit::json_code(self),
            "messages": self.messages(),
        });
        if let Some(hint) = self.hint() {
            inner["hint"] = hint.into();
        }
        serde_json::json!({ "error": inner })
    }
}

/// Report `err` the way the user asked for: JSON on stdout or text on stderr.
/// A closed stdout is reported as nothing at all. Failures to write the report
/// itself are ignored: there is nowhere left to say so.
pub fn report(err: &CliError, json: bool) {
    if matches!(err, CliError::PipeClosed) {
        return;
    }
    if json {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{:#}", err.to_json());
        let _ = out.flush();
    } else {
        let _ = io::stderr().write_all(render_human(err).as_bytes());
    }
}

/// The error for a terminal. Messages carry text from elsewhere — a
/// guest's last console lines when it failed to boot, a tool's stderr — so
/// their control characters are shown as visible escapes, never sent to
/// the terminal as commands (the same filter as `vm logs`).
fn render_human(err: &CliError) -> String {
    let mut text = format!("banger: {}\n", err.messages().join(": "));
    if let Some(hint) = err.hint() {
        text.push_str(&format!("hint: {hint}\n"));
    }
    crate::output::escape_controls(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_proto::{ErrorCode, RpcError};

    #[test]
    fn a_guests_console_bytes_in_an_error_reach_the_terminal_escaped() {
        // What a hostile image prints before failing to boot: a clipboard
        // write (OSC 52), a title change, a bidi override.
        let err = CliError::Client(ClientError::Remote(RpcError::new(
            ErrorCode::Unavailable,
            "VM dev did not become ready within 60s; last console lines: \
             \x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07 \u{202e}txt.exe\r\nend",
        )));
        let shown = render_human(&err);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(shown.contains("\\x1b]52;c;ZXZpbA==\\x07"), "{shown}");
        assert!(shown.contains("\\u{202e}"), "{shown}");
        assert!(shown.ends_with("end\n"), "{shown:?}");
    }

    fn connect_error() -> CliError {
        CliError::Client(ClientError::Connect {
            socket: "/run/x.sock".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    #[test]
    fn human_form_prints_the_chain_and_the_hint() {
        let text = render_human(&connect_error());
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "banger: cannot reach bangerd at /run/x.sock: entity not found"
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("hint: is the daemon running?")
        );
    }

    #[test]
    fn remote_errors_keep_their_message_list() {
        let rpc = RpcError::new(ErrorCode::NotFound, "no such thing").context("looking up vm dev");
        let err = CliError::Client(ClientError::Remote(rpc));
        assert_eq!(err.messages(), ["looking up vm dev", "no such thing"]);
        let json = err.to_json();
        assert_eq!(json["error"]["code"], "not_found");
        assert_eq!(json["error"]["messages"][1], "no such thing");
        assert!(json["error"].get("hint").is_none());
        assert_eq!(Exit::for_error(&err), Exit::NotFound);
    }

    #[test]
    fn json_form_carries_code_messages_and_hint() {
        let json = connect_error().to_json();
        assert_eq!(json["error"]["code"], "daemon_unreachable");
        assert_eq!(
            json["error"]["messages"][0],
            "cannot reach bangerd at /run/x.sock"
        );
        assert!(
            json["error"]["hint"]
                .as_str()
                .unwrap()
                .contains("bangerd --dev")
        );
    }
}
