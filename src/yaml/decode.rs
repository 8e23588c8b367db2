//! Building typed values from a [`Node`] tree while collecting every problem.
//!
//! Decoders return `None` after reporting into the [`Cx`]; callers carry on
//! with the next field, so one pass finds every mistake in a file.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diag::{Diagnostic, Severity, Source, did_you_mean};
use crate::yaml::{Node, Pos, Value};

/// The decoding context: the file being read and the problems found so far.
#[derive(Debug)]
pub struct Cx {
    /// The file being decoded.
    pub source: Arc<Source>,
    /// Problems found so far, in the order found.
    pub diags: Vec<Diagnostic>,
}

impl Cx {
    /// A context for decoding `source`.
    pub fn new(source: Arc<Source>) -> Cx {
        Cx {
            source,
            diags: Vec::new(),
        }
    }

    /// Reports an error at `pos`.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(Severity::Error, Some(pos), message.into(), None);
    }

    /// Reports an error at `pos` with a hint on how to fix it.
    pub fn error_help(&mut self, pos: Pos, message: impl Into<String>, help: impl Into<String>) {
        self.push(
            Severity::Error,
            Some(pos),
            message.into(),
            Some(help.into()),
        );
    }

    /// Reports a warning at `pos`.
    pub fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(Severity::Warning, Some(pos), message.into(), None);
    }

    /// Reports that the setting at `pos` is unsafe: a warning `-q` does not
    /// hide.
    pub fn warn_unsafe(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(Severity::Warning, Some(pos), message.into(), None);
        if let Some(d) = self.diags.last_mut() {
            d.unsafe_setting = true;
        }
    }

    /// Reports a problem.
    pub fn push(
        &mut self,
        severity: Severity,
        pos: Option<Pos>,
        message: String,
        help: Option<String>,
    ) {
        // Messages quote values from the file; a hostile value must not
        // turn one diagnostic into megabytes of output.
        self.diags.push(Diagnostic {
            severity,
            source: self.source.clone(),
            pos,
            message: crate::diag::clip(&message, 300),
            help: help.map(|h| crate::diag::clip(&h, 300)),
            unsafe_setting: false,
        });
    }

    /// Whether any error (not warning) has been reported.
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// How many errors (not warnings) have been reported.
    pub fn error_count(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Reads `node` as a mapping of a kind named `what` (used in messages).
    pub fn map<'n>(&mut self, node: &'n Node, what: &'static str) -> Option<MapReader<'n>> {
        match &node.value {
            Value::Map(entries) => Some(MapReader {
                node,
                entries,
                used: vec![false; entries.len()],
                known: Vec::new(),
                what,
            }),
            other => {
                self.error(
                    node.pos,
                    format!("expected {what} (a mapping), found {}", other.kind()),
                );
                None
            }
        }
    }
}

/// A value decodable from a YAML node.
pub trait FromNode: Sized {
    /// Decodes `node`, reporting problems into `cx`; `None` when it could not.
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self>;
}

/// A value with the position it was read from, for checks that come later
/// (duplicates, references to profiles) and still point at the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub pos: Pos,
}

impl<T: FromNode> FromNode for Spanned<T> {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        T::from_node(cx, node).map(|value| Spanned {
            value,
            pos: node.pos,
        })
    }
}

/// Reads a mapping key by key, remembering which keys the caller asked for,
/// so [`MapReader::finish`] can report the rest as unknown with a hint.
pub struct MapReader<'n> {
    node: &'n Node,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
    what: &'static str,
}

impl<'n> MapReader<'n> {
    /// The position of the mapping itself.
    pub fn pos(&self) -> Pos {
        self.node.pos
    }

    /// The raw node under `key`, if present (marks the key as known).
    pub fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let index = self
            .entries
            .iter()
            .position(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))?;
        self.used[index] = true;
        Some(&self.entries[index].1)
    }

    /// Decodes an optional key. A present `null` counts as absent.
    pub fn opt<T: FromNode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        match self.get(key) {
            Some(node) if node.value != Value::Null => T::from_node(cx, node),
            _ => None,
        }
    }

    /// Decodes a required key, reporting it missing at the mapping.
    pub fn req<T: FromNode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        match self.get(key) {
            Some(node) if node.value != Value::Null => T::from_node(cx, node),
            Some(node) => {
                cx.error(node.pos, format!("`{key}` in {} needs a value", self.what));
                None
            }
            None => {
                let pos = self.node.pos;
                cx.error(
                    pos,
                    format!("{} is missing the required key `{key}`", self.what),
                );
                None
            }
        }
    }

    /// Reports every key the caller did not ask for as unknown. Returns the
    /// known keys suggested instead, so callers need not also report those
    /// keys missing.
    pub fn finish(self, cx: &mut Cx) -> Vec<&'static str> {
        let mut suggested = Vec::new();
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            match &key.value {
                Value::Str(name) => {
                    let message = format!("unknown key `{name}` in {}", self.what);
                    match did_you_mean(name, self.known.iter().copied()) {
                        Some(hint) => {
                            suggested.push(hint);
                            cx.error_help(key.pos, message, format!("did you mean `{hint}`?"));
                        }
                        None => cx.error_help(
                            key.pos,
                            message,
                            format!("known keys: {}", self.known.join(", ")),
                        ),
                    }
                }
                other => cx.error(
                    key.pos,
                    format!(
                        "keys in {} must be strings, found {}",
                        self.what,
                        other.kind()
                    ),
                ),
            }
        }
        suggested
    }
}

fn expected(cx: &mut Cx, node: &Node, what: &str) {
    let found = match &node.value {
        Value::Int(i) => format!("integer `{i}`"),
        Value::Float(f) => format!("number `{f}`"),
        Value::Bool(b) => format!("boolean `{b}`"),
        other => other.kind().to_owned(),
    };
    cx.error(node.pos, format!("expected {what}, found {found}"));
}

/// Reads one of a fixed set of words (`choices`: word and value), naming
/// the choices when the word is none of them: "unknown {what} `x` (a, b or c)".
pub fn keyword<T: Copy>(cx: &mut Cx, node: &Node, what: &str, choices: &[(&str, T)]) -> Option<T> {
    let word = String::from_node(cx, node)?;
    if let Some((_, value)) = choices.iter().find(|(w, _)| *w == word) {
        return Some(*value);
    }
    let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
    let listed = match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    };
    cx.error(node.pos, format!("unknown {what} `{word}` ({listed})"));
    None
}

/// Implements [`FromNode`] for a type read as one of a fixed set of words:
/// `keywords!(Type, "what it is", ["word" => Type::Value, …]);`.
#[macro_export]
macro_rules! keywords {
    ($ty:ty, $what:literal, [$($word:literal => $value:expr),+ $(,)?]) => {
        impl $crate::yaml::decode::FromNode for $ty {
            fn from_node(
                cx: &mut $crate::yaml::decode::Cx,
                node: &$crate::yaml::Node,
            ) -> Option<Self> {
                $crate::yaml::decode::keyword(cx, node, $what, &[$(($word, $value)),+])
            }
        }
    };
}

impl FromNode for String {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            // A bare number where text is expected (`rack: 12`) is what the
            // writer meant; anything else is a real type mistake.
            Value::Int(i) => Some(i.to_string()),
            _ => {
                expected(cx, node, "a string");
                None
            }
        }
    }
}

impl FromNode for bool {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                expected(cx, node, "`true` or `false`");
                None
            }
        }
    }
}

impl FromNode for f64 {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        match node.value {
            // Precision loss only above 2^53, far beyond any measured value.
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => Some(i as f64),
            Value::Float(f) if f.is_finite() => Some(f),
            _ => {
                expected(cx, node, "a number");
                None
            }
        }
    }
}

macro_rules! unsigned_from_node {
    ($($t:ty),*) => {$(
        impl FromNode for $t {
            fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
                match node.value {
                    Value::Int(i) => match <$t>::try_from(i) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            cx.error(node.pos, format!(
                                "{i} is out of range (0 to {})", <$t>::MAX));
                            None
                        }
                    },
                    _ => {
                        expected(cx, node, "a whole number");
                        None
                    }
                }
            }
        }
    )*};
}
unsigned_from_node!(u8, u16, u32, u64, usize);

impl<T: FromNode> FromNode for Vec<T> {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            expected(cx, node, "a list");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match T::from_node(cx, item) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

impl<T: FromNode> FromNode for BTreeMap<String, T> {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            expected(cx, node, "a mapping");
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            let Some(key) = String::from_node(cx, key) else {
                ok = false;
                continue;
            };
            match T::from_node(cx, value) {
                Some(v) => {
                    out.insert(key, v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Parses a human duration: a number followed by `s`, `m` or `h`
/// (`90s`, `15m`, `1.5h`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in duration `{text}` (use ms, s, m or h)"
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like `90s`, `15m` or `2h`"))?;
    let secs = value * scale;
    if !(0.0..=365.0 * 86400.0).contains(&secs) {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A duration written as `90s`, `15m` or `2h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

impl FromNode for HumanDuration {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => {
                expected(cx, node, "a duration like `15m`");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(HumanDuration(d)),
            Err(e) => {
                cx.error(node.pos, e);
                None
            }
        }
    }
}

/// Parses a byte size: a number with an optional binary suffix
/// (`8`, `64K`, `256M`, `8G`), as nccl-tests' `-e` takes it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, shift) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 10),
        Some('M' | 'm') => (&text[..text.len() - 1], 20),
        Some('G' | 'g') => (&text[..text.len() - 1], 30),
        Some('T' | 't') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like `64M` or `8G`"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// A byte size written as `8G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromNode for ByteSize {
    fn from_node(cx: &mut Cx, node: &Node) -> Option<Self> {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => {
                expected(cx, node, "a size like `8G`");
                return None;
            }
        };
        match parse_size(&text) {
            Ok(n) => Some(ByteSize(n)),
            Err(e) => {
                cx.error(node.pos, e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn cx(text: &str) -> (Cx, Node) {
        (Cx::new(Source::new("t.yaml", text)), parse(text).unwrap())
    }

    #[test]
    fn unknown_keys_get_a_hint() {
        let (mut cx, node) = cx("name: a\nlabls: {}\n");
        let mut m = cx.map(&node, "rack").unwrap();
        let _: Option<String> = m.req(&mut cx, "name");
        let _: Option<BTreeMap<String, String>> = m.opt(&mut cx, "labels");
        m.finish(&mut cx);
        assert_eq!(cx.diags.len(), 1);
        assert_eq!(cx.diags[0].message, "unknown key `labls` in rack");
        assert_eq!(cx.diags[0].help.as_deref(), Some("did you mean `labels`?"));
        assert_eq!(cx.diags[0].pos.unwrap().line, 2);
    }

    #[test]
    fn missing_and_mistyped_keys_are_all_reported() {
        let (mut cx, node) = cx("count: many\nnested: [1]\n");
        let mut m = cx.map(&node, "gpu").unwrap();
        let _: Option<u32> = m.req(&mut cx, "count");
        let _: Option<String> = m.req(&mut cx, "model");
        let _: Option<String> = m.req(&mut cx, "nested");
        m.finish(&mut cx);
        let messages: Vec<_> = cx.diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "expected a whole number, found a string",
                "gpu is missing the required key `model`",
                "expected a string, found a list"
            ]
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("1.5h").unwrap().as_secs(), 5400);
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("99999999999T").is_err());
    }
}
