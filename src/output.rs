//! Where output goes: data on stdout (tables, or JSON with `--json`), logs
//! and diagnostics on stderr, colour only where it is wanted.
//!
//! This module owns the terminal: everything else writes through it (a lint
//! forbids printing and `std::io::stdout`/`stderr` elsewhere), so quiet,
//! JSON and terminal decisions live here.
// The printer's own implementation is the one place allowed to print.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::borrow::Cow;
use std::io::{IsTerminal, StderrLock, StdoutLock, Write};

use indicatif::{ProgressBar, ProgressDrawTarget};

use serde::Serialize;

use crate::diag::Diagnostic;

/// When to use colour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The one place kiln writes to stdout and stderr.
#[derive(Clone, Debug)]
pub struct Printer {
    /// `--json`: data as JSON on stdout.
    pub json: bool,
    /// `-q`: no progress or informational messages.
    pub quiet: bool,
    /// Colour on stderr.
    pub color: bool,
    /// Colour on stdout.
    pub color_stdout: bool,
    /// Whether stdout is a terminal: remote text written there has its
    /// control characters escaped.
    pub stdout_tty: bool,
    /// Whether stderr is a terminal.
    pub stderr_tty: bool,
}

impl Printer {
    /// A printer for the given flags, deciding colour from the terminal
    /// and `NO_COLOR`.
    pub fn new(json: bool, quiet: bool, color: ColorChoice) -> Printer {
        let wanted = |is_tty: bool| match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        let stdout_tty = std::io::stdout().is_terminal();
        let stderr_tty = std::io::stderr().is_terminal();
        Printer {
            json,
            quiet,
            color: wanted(stderr_tty),
            color_stdout: wanted(stdout_tty),
            stdout_tty,
            stderr_tty,
        }
    }

    /// Writes data to stdout. A closed pipe (`kiln … | head`) is not an error.
    /// On a terminal, control characters from remote text are escaped.
    pub fn data(&self, text: &str) {
        let text = if self.stdout_tty {
            printable(text)
        } else {
            Cow::Borrowed(text)
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Writes a node's own stderr (remote command output) to stderr; shown
    /// even with `-q`, as it is the command's output, not kiln's chatter.
    pub fn data_stderr(&self, text: &str) {
        let text = if self.stderr_tty {
            printable(text)
        } else {
            Cow::Borrowed(text)
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }

    /// A line on stderr shown even with `-q`: the summary or hint that goes
    /// with a failure.
    pub fn notice(&self, text: &str) {
        eprintln!("{}", printable(text));
    }

    /// Whether live progress (bars, rewritten counters) is shown: stderr is
    /// a terminal and neither `-q` nor `--json` was given.
    pub fn shows_progress(&self) -> bool {
        !self.quiet && !self.json && Printer::stderr_is_terminal()
    }

    /// A progress bar of `len` units drawn on stderr, or a hidden one when
    /// progress is not shown (see [`Printer::shows_progress`]).
    pub fn bar(&self, len: u64) -> ProgressBar {
        if self.shows_progress() {
            ProgressBar::with_draw_target(Some(len), Printer::draw_target())
        } else {
            ProgressBar::hidden()
        }
    }

    /// Where progress bars draw: stderr.
    pub fn draw_target() -> ProgressDrawTarget {
        ProgressDrawTarget::stderr()
    }

    /// Whether stderr is a terminal, checked now.
    pub fn stderr_is_terminal() -> bool {
        std::io::stderr().is_terminal()
    }

    /// Locked stdout, for output streamed line by line (JSON events).
    /// Callers ignore write errors: a closed pipe must not stop kiln.
    pub fn out() -> StdoutLock<'static> {
        std::io::stdout().lock()
    }

    /// Locked stderr, for output streamed line by line (progress lines).
    pub fn err() -> StderrLock<'static> {
        std::io::stderr().lock()
    }

    /// Writes one JSON document to stdout.
    pub fn json_data<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        self.data(&text);
        Ok(())
    }

    /// An informational line on stderr (hidden by `-q`).
    pub fn info(&self, text: &str) {
        if !self.quiet {
            eprintln!("{}", printable(text));
        }
    }

    /// A diagnostic about an input file, on stderr. `-q` hides warnings,
    /// but not those saying a setting is unsafe (`tls: insecure`, a token
    /// over plain HTTP).
    pub fn diagnostic(&self, d: &Diagnostic) {
        if self.quiet && d.severity == crate::diag::Severity::Warning && !d.unsafe_setting {
            return;
        }
        eprint!("{}", d.render(self.color));
    }

    /// An error that ended the command, on stderr.
    pub fn error(&self, err: &anyhow::Error) {
        let (red, reset) = if self.color {
            ("\x1b[1;31m", "\x1b[0m")
        } else {
            ("", "")
        };
        let mut text = format!("{red}error{reset}: {err}");
        for cause in err.chain().skip(1) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        eprintln!("{}", printable(&text));
    }
}

/// `text` with every control character but newline and tab written as an
/// escape (`\u{1b}`): text from BMCs and nodes must not move the cursor,
/// recolour or retitle the operator's terminal. Kiln's own colours are
/// added after this, never passed through it.
pub fn printable(text: &str) -> Cow<'_, str> {
    // A CR ending a line (CRLF output) is harmless; any other rewinds it.
    let mut chars = text.chars().peekable();
    let mut unsafe_at = Vec::new();
    let mut i = 0;
    while let Some(c) = chars.next() {
        if c.is_control() && c != '\n' && c != '\t' && !(c == '\r' && chars.peek() == Some(&'\n')) {
            unsafe_at.push(i);
        }
        i += 1;
    }
    if unsafe_at.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8 * unsafe_at.len());
    let mut next = unsafe_at.iter().peekable();
    for (i, c) in text.chars().enumerate() {
        if next.peek() == Some(&&i) {
            next.next();
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Lays rows out in aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(printable(cell).chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let cell = printable(cell);
            l.push_str(&cell);
            l.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn remote_control_characters_are_escaped() {
        use super::printable;
        assert!(matches!(
            printable("ok\tfine\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("GPU 3\x1b]0;pwned\x07\x1b[2J\rX\u{9b}1m"),
            "GPU 3\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}X\\u{9b}1m"
        );
        let t = super::table(&["A"], &[vec!["\x1b[31mred".into()]]);
        assert_eq!(t, "A\n\\u{1b}[31mred\n");
    }

    #[test]
    fn tables_align() {
        let t = super::table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
