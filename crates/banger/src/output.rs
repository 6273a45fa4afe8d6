//! Writing results: stdout through one helper, progress on a terminal only.
//!
//! Everything a command prints on stdout goes through [`stdout`], which turns
//! a closed pipe (`banger ... | head -1`) into [`CliError::PipeClosed`]: the
//! command stops there and `banger` exits 0 without a word. SIGPIPE stays
//! ignored (Rust's default), so this is the only place EPIPE is seen.

use std::io::{self, IsTerminal, Write};

use banger_proto::rpc::Progress;

use crate::error::CliError;

/// Write `bytes` to stdout and flush.
pub fn stdout(bytes: &[u8]) -> Result<(), CliError> {
    write_to(&mut io::stdout().lock(), bytes)
}

/// Print `value` as pretty JSON plus a newline.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value)
        .expect("protocol types and JSON values always serialize");
    text.push('\n');
    stdout(text.as_bytes())
}

fn write_to(w: &mut impl Write, bytes: &[u8]) -> Result<(), CliError> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => CliError::PipeClosed,
            _ => CliError::WriteStdout(e),
        })
}

/// Widest progress line drawn, so that `\r` can redraw it on any terminal.
const MAX_PROGRESS_WIDTH: usize = 79;

/// One progress line on stderr, redrawn in place for every event and erased
/// when the work ends. Draws nothing unless enabled; [`ProgressLine::stderr`]
/// enables it only when stderr is a terminal.
#[derive(Debug)]
pub struct ProgressLine<W: Write> {
    out: Option<W>,
    drawn: bool,
}

impl ProgressLine<io::Stderr> {
    pub fn stderr() -> Self {
        let err = io::stderr();
        let on_terminal = err.is_terminal();
        ProgressLine::new(on_terminal.then_some(err))
    }
}

impl<W: Write> ProgressLine<W> {
    pub fn new(out: Option<W>) -> Self {
        ProgressLine { out, drawn: false }
    }

    pub fn update(&mut self, p: &Progress) {
        if let Some(out) = self.out.as_mut() {
            // Progress is decoration: a failed draw must not fail the command.
            let _ = write!(out, "\r\x1b[2K{}", progress_text(p)).and_then(|()| out.flush());
            self.drawn = true;
        }
    }

    /// Erase the line so that the result starts on a clean terminal.
    pub fn finish(&mut self) {
        if let (Some(out), true) = (self.out.as_mut(), self.drawn) {
            let _ = write!(out, "\r\x1b[2K").and_then(|()| out.flush());
            self.drawn = false;
        }
    }
}

/// `[3/12] kvm: checking /dev/kvm`, cut to fit one terminal line.
pub fn progress_text(p: &Progress) -> String {
    let count = match p.total {
        Some(total) => format!("[{}/{}]", p.done, total),
        None => format!("[{}]", p.done),
    };
    let text = format!("{count} {}: {}", p.stage, p.message);
    if text.chars().count() <= MAX_PROGRESS_WIDTH {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_PROGRESS_WIDTH - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(stage: &str, message: &str, done: u64, total: Option<u64>) -> Progress {
        Progress {
            stage: stage.into(),
            message: message.into(),
            done,
            total,
        }
    }

    #[test]
    fn progress_text_counts_and_fits_a_line() {
        assert_eq!(
            progress_text(&p("kvm", "checking /dev/kvm", 3, Some(12))),
            "[3/12] kvm: checking /dev/kvm"
        );
        assert_eq!(
            progress_text(&p("pull", "layer", 7, None)),
            "[7] pull: layer"
        );
        let long = progress_text(&p("x", &"y".repeat(200), 1, Some(1)));
        assert_eq!(long.chars().count(), MAX_PROGRESS_WIDTH);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn progress_line_redraws_in_place_and_erases_itself() {
        let mut line = ProgressLine::new(Some(Vec::new()));
        line.update(&p("kvm", "a", 1, Some(2)));
        line.update(&p("tun", "b", 2, Some(2)));
        line.finish();
        let out = String::from_utf8(line.out.take().unwrap()).unwrap();
        assert_eq!(out, "\r\x1b[2K[1/2] kvm: a\r\x1b[2K[2/2] tun: b\r\x1b[2K");
        assert!(!out.contains('\n'));
    }

    #[test]
    fn disabled_progress_line_writes_nothing() {
        let mut line: ProgressLine<Vec<u8>> = ProgressLine::new(None);
        line.update(&p("kvm", "a", 1, Some(2)));
        line.finish();
        assert!(line.out.is_none());
    }

    #[test]
    fn broken_pipe_is_a_quiet_stop_other_errors_are_failures() {
        struct Fails(io::ErrorKind);
        impl Write for Fails {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(self.0.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = write_to(&mut Fails(io::ErrorKind::BrokenPipe), b"x").unwrap_err();
        assert!(matches!(err, CliError::PipeClosed));
        let err = write_to(&mut Fails(io::ErrorKind::StorageFull), b"x").unwrap_err();
        assert!(matches!(err, CliError::WriteStdout(_)));
    }
}
