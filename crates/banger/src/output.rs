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

/// Makes a guest's console output safe to print on a terminal: the bytes
/// come from the guest, and escape sequences could retitle the window,
/// rewrite earlier lines, or (on some terminals) answer back as typed input.
/// Every control character except line feed and tab — C0 (ESC, BEL, CR, ...),
/// DEL and C1 — and the bidirectional overrides that reorder what is shown
/// are printed as visible escapes (`\x1b`, `\u{9b}`, `\u{202e}`); carriage
/// returns are dropped (serial consoles end lines with CR LF). Invalid UTF-8
/// becomes U+FFFD. Feed it chunks in order: a character split between two
/// chunks is held back until the rest arrives.
#[derive(Debug, Default)]
pub struct ConsoleFilter {
    held: Vec<u8>,
}

impl ConsoleFilter {
    pub fn push(&mut self, chunk: &[u8]) -> String {
        self.held.extend_from_slice(chunk);
        let bytes = std::mem::take(&mut self.held);
        // Hold back an incomplete character at the end (at most 3 bytes).
        let keep = match std::str::from_utf8(&bytes) {
            Ok(_) => 0,
            Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
            Err(_) => {
                // Invalid in the middle: find an incomplete tail, if any.
                let tail_start = bytes.len().saturating_sub(3);
                (tail_start..bytes.len())
                    .find(|&i| {
                        let b = bytes[i];
                        b >= 0xc0 && utf8_len(b) > bytes.len() - i
                    })
                    .map_or(0, |i| bytes.len() - i)
            }
        };
        let (now, later) = bytes.split_at(bytes.len() - keep);
        self.held = later.to_vec();
        escape_controls(&String::from_utf8_lossy(now))
    }

    /// Whatever is still held (an incomplete character at the very end).
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        escape_controls(&String::from_utf8_lossy(&rest))
    }
}

/// How many bytes the UTF-8 sequence starting with `lead` has.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// `text` with the control characters [`ConsoleFilter`] escapes made
/// visible (line feed and tab kept, carriage returns dropped).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => {}
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{80}'..='\u{9f}'
            | '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod console_tests {
    use super::ConsoleFilter;

    fn filter(chunks: &[&[u8]]) -> String {
        let mut f = ConsoleFilter::default();
        let mut out: String = chunks.iter().map(|c| f.push(c)).collect();
        out.push_str(&f.finish());
        out
    }

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(
            filter(&[b"\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hok\r\n"]),
            "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1Hok\n"
        );
        // C1 CSI (U+009B), DEL, NUL, backspace, a bidi override.
        assert_eq!(
            filter(&["a\u{9b}2Jb\x7f\0\x08c\u{202e}d".as_bytes()]),
            "a\\u{9b}2Jb\\x7f\\x00\\x08c\\u{202e}d"
        );
        // Tabs, line feeds and ordinary text pass untouched.
        assert_eq!(filter(&["x\ty\nüñí 🦀\n".as_bytes()]), "x\ty\nüñí 🦀\n");
    }

    #[test]
    fn a_character_split_between_chunks_is_kept_whole() {
        let crab = "🦀".as_bytes();
        assert_eq!(filter(&[&crab[..1], &crab[1..3], &crab[3..]]), "🦀");
        let csi = "\u{9b}".as_bytes();
        assert_eq!(filter(&[b"a", &csi[..1], &csi[1..], b"b"]), "a\\u{9b}b");
        // Invalid bytes, then a split character: both handled.
        assert_eq!(filter(&[b"\xff", &crab[..2], &crab[2..]]), "\u{fffd}🦀");
        // A sequence cut off for good at the end.
        assert_eq!(filter(&[&crab[..2]]), "\u{fffd}");
    }
}
