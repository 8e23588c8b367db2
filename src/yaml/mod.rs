//! YAML input: a position-annotated tree read with resource limits, and a
//! decoder that turns it into typed values while collecting every problem.
//!
//! kiln reads YAML written by people (inventories, profiles, fault files). A
//! serde derive stops at the first mistake; a technician fixing a 300-node
//! inventory wants all of them at once, each with `file:line:col`. So files
//! are parsed once into a [`Node`] tree that remembers positions, and typed
//! values are built from it by [`decode`], which reports and carries on.

pub mod decode;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Largest YAML file kiln reads (a 100,000-node site is about 15 MiB).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A position in a source file: 1-based line and column, and the length of
/// the marked text in characters (at least 1 when rendered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
    /// Length of the marked text, in characters.
    pub len: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<serde_saphyr::Location> for Pos {
    fn from(loc: serde_saphyr::Location) -> Self {
        Pos {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            col: u32::try_from(loc.column()).unwrap_or(u32::MAX),
            len: u32::try_from(loc.span().len()).unwrap_or(0),
        }
    }
}

/// One YAML node with the position it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts (for an alias: where it is used).
    pub pos: Pos,
    /// The node's value.
    pub value: Value,
}

/// The value of a YAML node, typed by the YAML 1.2 core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            pos: spanned.referenced.into(),
            value: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        String::from_utf8(v.to_vec())
            .map(Value::Str)
            .map_err(|_| E::custom("binary data is not valid UTF-8"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

/// A YAML document that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// Where the parser stopped, when known.
    pub pos: Option<Pos>,
    /// What went wrong, without position (the caller renders it).
    pub message: String,
}

/// The parser options kiln reads every file with (public so benchmarks can
/// parse with the same limits).
///
/// Resource limits for human-written files: deep enough for any real
/// inventory, far too shallow for a nesting bomb; aliases allowed (anchors
/// are handy for shared settings) but not enough to expand a "billion laughs".
pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_documents: 1,
            max_events: 8_000_000,
            // A 100,000-node site is about 700,000 YAML nodes.
            max_nodes: 4_000_000,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_recorded_anchor_events: 200_000,
            max_total_scalar_bytes: MAX_FILE_BYTES as usize,
        },
        // `yes`/`no`/`on` stay strings: a label value `no` is not `false`.
        strict_booleans: true,
        // `01` is a rack number, not the integer 1.
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    }
}

/// Parses one YAML document into a position-annotated tree.
///
/// An empty document (or one holding only comments) gives a `Null` node.
pub fn parse(text: &str) -> Result<Node, ParseError> {
    if text.trim().is_empty() {
        return Ok(Node {
            pos: Pos {
                line: 1,
                col: 1,
                len: 0,
            },
            value: Value::Null,
        });
    }
    if let Some(offset) = text.find('\0') {
        let line = text[..offset].matches('\n').count() + 1;
        return Err(ParseError {
            pos: Some(Pos {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                col: 1,
                len: 0,
            }),
            message: "file contains NUL bytes: this looks like binary data, not YAML".into(),
        });
    }
    serde_saphyr::from_str_with_options::<Node>(text, options()).map_err(|err| {
        let inner = err.without_snippet();
        ParseError {
            pos: inner.location().map(Pos::from),
            message: clean_message(&inner.to_string()),
        }
    })
}

/// serde-saphyr appends " at line X, column Y" to some messages; kiln prints
/// the position itself, in front.
fn clean_message(message: &str) -> String {
    let message = message.trim();
    let cut = message
        .rfind(" at line ")
        .filter(|&i| message[i..].contains("column"));
    match cut {
        Some(i) => message[..i].trim_end_matches(',').to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let node = parse("a: 1\nbb:\n  - x\n  - {c: d}\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        assert_eq!(entries[1].0.pos.line, 2);
        assert_eq!(entries[1].0.pos.col, 1);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!((items[0].pos.line, items[0].pos.col), (3, 5));
        assert_eq!((items[1].pos.line, items[1].pos.col), (4, 5));
        assert_eq!(entries[0].1.value, Value::Int(1));
    }

    #[test]
    fn strings_that_look_like_other_things_stay_strings() {
        let node = parse("a: 01\nb: no\nc: '5'\nd: true\n").unwrap();
        let Value::Map(entries) = node.value else {
            panic!()
        };
        assert_eq!(entries[0].1.value, Value::Str("01".into()));
        assert_eq!(entries[1].1.value, Value::Str("no".into()));
        assert_eq!(entries[2].1.value, Value::Str("5".into()));
        assert_eq!(entries[3].1.value, Value::Bool(true));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.is_some(), "{err:?}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
    }

    #[test]
    fn merge_keys_expand() {
        let node = parse("base: &b {x: 1}\nn:\n  <<: *b\n  y: 2\n").unwrap();
        let Value::Map(entries) = node.value else {
            panic!()
        };
        let Value::Map(n) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(n.len(), 2);
    }
}
