//! Small text helpers the renderers share: UTC timestamps without a time
//! crate, durations for people.

use crate::pipeline::record::UnixMs;

/// `ms` since the Unix epoch as RFC 3339 in UTC, to the second
/// (`2026-11-25T10:15:00Z`).
pub fn rfc3339_utc(ms: UnixMs) -> String {
    let (date, time) = civil(ms);
    format!("{date}T{time}Z")
}

/// The same instant as JUnit's `timestamp` wants it: no zone (it is UTC).
pub(super) fn junit_timestamp(ms: UnixMs) -> String {
    let (date, time) = civil(ms);
    format!("{date}T{time}")
}

/// (`YYYY-MM-DD`, `HH:MM:SS`) in UTC.
fn civil(ms: UnixMs) -> (String, String) {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day):
/// Howard Hinnant's `civil_from_days`, for non-negative days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
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
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// Escapes an attribute value (double- or single-quoted); also safe for
/// text, in XML and in HTML, so the HTML report uses it everywhere. Line breaks and tabs are
/// written as references, which attribute-value normalisation keeps.
pub(super) fn xml_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day in a century leap year).
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        // 2026-11-25T10:15:00Z, with milliseconds dropped.
        assert_eq!(rfc3339_utc(1_795_601_700_999), "2026-11-25T10:15:00Z");
        assert_eq!(rfc3339_utc(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(4_107_542_400_000), "2100-03-01T00:00:00Z");
        assert_eq!(junit_timestamp(0), "1970-01-01T00:00:00");
    }

    #[test]
    fn every_day_round_trips_through_days_from_civil() {
        // Inverse (Hinnant's days_from_civil) checked over 400 years.
        fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
            let y = if m <= 2 { y - 1 } else { y };
            let era = y / 400;
            let yoe = y - era * 400;
            let mp = if m > 2 { m - 3 } else { m + 9 };
            let doy = (153 * mp + 2) / 5 + d - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            era * 146_097 + doe - 719_468
        }
        for days in (0..146_097 + 400).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration_ms(450), "450 ms");
        assert_eq!(human_duration_ms(12_345), "12.3 s");
        assert_eq!(human_duration_ms(185_000), "3m 05s");
        assert_eq!(human_duration_ms(3_720_000), "1h 02m");
        assert_eq!(human_duration_ms(183_600_000), "2d 03h");
        assert_eq!(seconds(1_234), "1.234");
        assert_eq!(seconds(5), "0.005");
    }
}
