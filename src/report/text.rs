//! Small text helpers the renderers share: UTC timestamps without a time
//! crate, durations for people.

use crate::pipeline::record::UnixMs;
use crate::pipeline::time::civil;
pub use crate::pipeline::time::rfc3339_utc;

/// The same instant as JUnit's `timestamp` wants it: no zone (it is UTC).
pub(super) fn junit_timestamp(ms: UnixMs) -> String {
    let (date, time) = civil(ms);
    format!("{date}T{time}")
}

/// A duration for people: `450 ms`, `12.3 s`, `3m 05s`, `1h 02m`, `2d 03h`.
pub fn human_duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    if s < 3600 {
        return format!("{}m {:02}s", s / 60, s % 60);
    }
    if s < 86_400 {
        return format!("{}h {:02}m", s / 3600, s % 3600 / 60);
    }
    format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600)
}

/// Seconds with millisecond precision, as JUnit's `time` wants them.
pub(super) fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Collapses line breaks and runs of whitespace into single spaces, for
/// places that hold one line.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether XML 1.0 allows `c` at all (tool output may hold ANSI escapes
/// and NULs, which no escaping can carry).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes character data; characters XML cannot hold become U+FFFD.
pub(super) fn xml_text(s: &str) -> String {
    escape(s, false)
}

/// Escapes an attribute value (double- or single-quoted); also safe for
/// text, in XML and in HTML, so the HTML report uses it everywhere. Line breaks and tabs are
/// written as references, which attribute-value normalisation keeps.
pub(super) fn xml_attr(s: &str) -> String {
    escape(s, true)
}

/// The one escaper behind both: `attr` adds quotes and white space to what
/// is written as references.
fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' if attr => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `f` against each `(input, expected)` pair, naming the input
    /// that failed.
    fn check(f: fn(u64) -> String, cases: &[(u64, &str)]) {
        for (input, want) in cases {
            assert_eq!(f(*input), *want, "input {input}");
        }
    }

    #[test]
    fn epoch_and_known_dates() {
        check(
            rfc3339_utc,
            &[
                (0, "1970-01-01T00:00:00Z"),
                // 2000-02-29 (a leap day in a century leap year).
                (951_782_400_000, "2000-02-29T00:00:00Z"),
                // 2026-11-25T10:15:00Z, with milliseconds dropped.
                (1_795_601_700_999, "2026-11-25T10:15:00Z"),
                (4_107_542_399_000, "2100-02-28T23:59:59Z"),
                (4_107_542_400_000, "2100-03-01T00:00:00Z"),
            ],
        );
        assert_eq!(junit_timestamp(0), "1970-01-01T00:00:00");
    }

    #[test]
    fn durations() {
        check(
            human_duration_ms,
            &[
                (450, "450 ms"),
                (12_345, "12.3 s"),
                (185_000, "3m 05s"),
                (3_720_000, "1h 02m"),
                (183_600_000, "2d 03h"),
            ],
        );
        assert_eq!(seconds(1_234), "1.234");
        assert_eq!(seconds(5), "0.005");
    }

    #[test]
    fn text_escapes_markup_and_attr_also_quotes_and_white_space() {
        let raw = "a&<>\"'\n\r\t\u{0}b";
        assert_eq!(xml_text(raw), "a&amp;&lt;&gt;\"'\n\r\t\u{FFFD}b");
        assert_eq!(
            xml_attr(raw),
            "a&amp;&lt;&gt;&quot;&apos;&#10;&#13;&#9;\u{FFFD}b"
        );
    }
}
