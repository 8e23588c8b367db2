//! Diagnostics about input files: `file:line:col: severity: message`, then
//! the offending source line with a marker under the problem.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::yaml::Pos;

/// A file that diagnostics point into.
#[derive(Debug)]
pub struct Source {
    /// The path as the user gave it (shown in messages).
    pub name: String,
    /// The file's text.
    pub text: String,
}

impl Source {
    /// A source with the given display name and text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Source> {
        Arc::new(Source {
            name: name.into(),
            text: text.into(),
        })
    }

    /// The text of 1-based line `line`, without its line ending.
    pub fn line(&self, line: u32) -> Option<&str> {
        let index = usize::try_from(line).ok()?.checked_sub(1)?;
        self.text
            .split('\n')
            .nth(index)
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The input cannot be used.
    Error,
    /// The input can be used, but something will probably fail later.
    Warning,
}

/// One problem found in an input file.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in.
    pub source: Arc<Source>,
    /// Where in the file, when known.
    pub pos: Option<Pos>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it, when kiln can tell.
    pub help: Option<String>,
    /// A warning that a setting is unsafe (`tls: insecure`, a token over
    /// plain HTTP): shown even with `-q`.
    pub unsafe_setting: bool,
}

/// The JSON form of a diagnostic.
#[derive(Serialize)]
struct DiagnosticJson<'a> {
    severity: Severity,
    file: &'a str,
    line: Option<u32>,
    column: Option<u32>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
}

impl Diagnostic {
    /// `file:line:col` (or just `file` when the position is unknown).
    pub fn location(&self) -> String {
        match self.pos {
            Some(p) => format!("{}:{}:{}", self.source.name, p.line, p.col),
            None => self.source.name.clone(),
        }
    }

    /// A JSON object with the diagnostic's fields.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(DiagnosticJson {
            severity: self.severity,
            file: &self.source.name,
            line: self.pos.map(|p| p.line),
            column: self.pos.map(|p| p.col),
            message: &self.message,
            help: self.help.as_deref(),
        })
        .unwrap_or(serde_json::Value::Null)
    }

    /// Renders the diagnostic with a source snippet, like a compiler does.
    pub fn render(&self, color: bool) -> String {
        let (label, paint) = match self.severity {
            Severity::Error => ("error", "\x1b[1;31m"),
            Severity::Warning => ("warning", "\x1b[1;33m"),
        };
        let (bold, blue, reset) = if color {
            ("\x1b[1m", "\x1b[1;34m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        let paint = if color { paint } else { "" };
        let mut out = format!(
            "{bold}{}{reset}: {paint}{label}{reset}: {bold}{}{reset}\n",
            self.location(),
            self.message
        );
        if let Some(pos) = self.pos
            && let Some(text) = self.source.line(pos.line)
        {
            // Show at most WINDOW characters of the line, keeping the marked
            // column in view (a minified or hostile file has huge lines).
            const WINDOW: usize = 120;
            let number = pos.line.to_string();
            let gutter = " ".repeat(number.len());
            let col = usize::try_from(pos.col.max(1)).unwrap_or(1) - 1;
            let chars: Vec<char> = text
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            let start = col.saturating_sub(WINDOW / 2).min(chars.len());
            let end = (start + WINDOW).min(chars.len());
            let mut shown: String = chars[start..end].iter().collect();
            let mut offset = col - start;
            if start > 0 {
                shown.insert(0, '…');
                offset += 1;
            }
            if end < chars.len() {
                shown.push('…');
            }
            let available = shown.chars().count().saturating_sub(offset).max(1);
            let len = usize::try_from(pos.len).unwrap_or(1).clamp(1, available);
            let _ = writeln!(out, "{blue}{number} |{reset} {shown}");
            let _ = writeln!(
                out,
                "{blue}{gutter} |{reset} {}{paint}{}{reset}",
                " ".repeat(offset),
                "^".repeat(len)
            );
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  {blue}= help:{reset} {help}");
        }
        out
    }
}

/// Shortens `text` to at most `max` characters, marking the cut with `…`.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Suggests the closest of `candidates` to `word`, for "did you mean" hints:
/// a small edit distance (typos, swapped letters) or a shared long prefix.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let budget = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            (
                strsim::osa_distance(word, c),
                strsim::jaro_winkler(word, c),
                c,
            )
        })
        .filter(|(dist, jw, _)| *dist <= budget || *jw > 0.85)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_snippet_and_marker() {
        let src = Source::new("site.yaml", "site: par1\nracks:\n  - nmae: r01\n");
        let d = Diagnostic {
            severity: Severity::Error,
            source: src,
            pos: Some(Pos {
                line: 3,
                col: 5,
                len: 4,
            }),
            message: "unknown key `nmae` in rack".into(),
            help: Some("did you mean `name`?".into()),
            unsafe_setting: false,
        };
        let text = d.render(false);
        assert_eq!(
            text,
            "site.yaml:3:5: error: unknown key `nmae` in rack\n3 |   - nmae: r01\n  |     ^^^^\n  = help: did you mean `name`?\n"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("nmae", ["name", "nodes"]), Some("name"));
        assert_eq!(did_you_mean("zzz", ["name", "nodes"]), None);
        assert_eq!(did_you_mean("shh", ["bmc", "ssh", "mac"]), Some("ssh"));
        assert_eq!(
            did_you_mean("hgx-h100-80gb", ["hgx-h100-80gb-8x", "hgx-h200-141gb-8x"]),
            Some("hgx-h100-80gb-8x")
        );
    }
}
