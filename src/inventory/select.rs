//! `--select`: which nodes a command acts on.
//!
//! ```text
//! r01-n[01-08]          node names: globs (`*`, `?`) and numeric ranges
//! r0[1-4]-n[01,03,05-08]  lists and zero-padded ranges, as pdsh/clush write them
//! rack:r01              racks (also globs and ranges)
//! row=A   row!=A        labels (the value may be a glob)
//! a,b                   either (union)
//! rack:r01&row=A        both (intersection; binds tighter than `,`)
//! !r01-n03              not
//! ```

use std::fmt;
use std::str::FromStr;

use super::Node;

/// A parsed `--select` expression: a union of intersections.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    text: String,
    any_of: Vec<Vec<Factor>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Factor {
    negated: bool,
    atom: Atom,
}

#[derive(Clone, Debug, PartialEq)]
enum Atom {
    Name(Pattern),
    Rack(Pattern),
    Label {
        key: String,
        value: Pattern,
        equal: bool,
    },
}

/// Why a selection failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectError {
    /// The expression does not parse.
    #[error("invalid selection `{expr}`: {reason}")]
    Invalid {
        /// The expression.
        expr: String,
        /// What is wrong.
        reason: String,
    },
    /// The expression is valid but picks no node.
    #[error("selection `{0}` matches no node")]
    NoMatch(String),
}

impl Selection {
    /// Every node.
    pub fn all() -> Selection {
        Selection {
            text: "*".into(),
            any_of: vec![vec![Factor {
                negated: false,
                atom: Atom::Name(Pattern(vec![Seg::Star])),
            }]],
        }
    }

    /// Whether `node` is selected.
    pub fn matches(&self, node: &Node) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|f| f.atom.matches(node) != f.negated))
    }

    /// The selected nodes, in order; an error if there are none.
    pub fn apply<'a>(&self, nodes: &'a [Node]) -> Result<Vec<&'a Node>, SelectError> {
        let picked: Vec<&Node> = nodes.iter().filter(|n| self.matches(n)).collect();
        if picked.is_empty() {
            return Err(SelectError::NoMatch(self.text.clone()));
        }
        Ok(picked)
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Atom {
    fn matches(&self, node: &Node) -> bool {
        match self {
            Atom::Name(p) => p.matches(&node.name),
            Atom::Rack(p) => p.matches(&node.rack),
            Atom::Label { key, value, equal } => match node.labels.get(key) {
                Some(v) => value.matches(v) == *equal,
                None => !*equal,
            },
        }
    }
}

impl FromStr for Selection {
    type Err = SelectError;

    fn from_str(text: &str) -> Result<Selection, SelectError> {
        let invalid = |reason: String| SelectError::Invalid {
            expr: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let mut any_of = Vec::new();
        for term in split_top(trimmed, ',') {
            let mut all = Vec::new();
            for factor in split_top(term, '&') {
                let factor = factor.trim();
                let (negated, atom) = match factor.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, factor),
                };
                if atom.is_empty() {
                    return Err(invalid(
                        "an empty term (check for a stray `,`, `&` or `!`)".into(),
                    ));
                }
                let atom = parse_atom(atom).map_err(invalid)?;
                all.push(Factor { negated, atom });
            }
            any_of.push(all);
        }
        Ok(Selection {
            text: trimmed.to_owned(),
            any_of,
        })
    }
}

/// Splits on `sep` outside brackets (`[01,03]` keeps its comma).
fn split_top(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_atom(atom: &str) -> Result<Atom, String> {
    if let Some(rack) = atom.strip_prefix("rack:") {
        return Ok(Atom::Rack(rack.parse()?));
    }
    if let Some((key, value)) = atom.split_once("!=") {
        return label(key, value, false);
    }
    if let Some((key, value)) = atom.split_once('=') {
        return label(key, value, true);
    }
    if let Some((kind, _)) = atom.split_once(':') {
        return Err(format!("unknown selector `{kind}:` (only `rack:` exists)"));
    }
    Ok(Atom::Name(atom.parse()?))
}

fn label(key: &str, value: &str, equal: bool) -> Result<Atom, String> {
    let key = key.trim();
    if key.is_empty() {
        return Err("a label selector needs a key, as in `row=A`".into());
    }
    Ok(Atom::Label {
        key: key.to_owned(),
        value: value.trim().parse()?,
        equal,
    })
}

/// A name pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern(Vec<Seg>);

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Lit(String),
    /// `*`: any run of characters.
    Star,
    /// `?`: one character.
    One,
    /// `[01-08,10]`: a number in one of the ranges; `width` is set when the
    /// bounds are zero-padded, and then the digits must have that width.
    Range {
        ranges: Vec<(u64, u64)>,
        width: Option<usize>,
    },
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Pattern, String> {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '*' | '?' | '[' => {
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    match c {
                        '*' => segs.push(Seg::Star),
                        '?' => segs.push(Seg::One),
                        _ => {
                            let end = text[i..]
                                .find(']')
                                .ok_or_else(|| format!("`[` without `]` in `{text}`"))?;
                            segs.push(parse_range(&text[i + 1..i + end])?);
                            for _ in 0..text[i..i + end].chars().count() {
                                chars.next();
                            }
                        }
                    }
                }
                ']' => return Err(format!("`]` without `[` in `{text}`")),
                c if c.is_whitespace() => return Err(format!("unexpected space in `{text}`")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        if segs.is_empty() {
            return Err("an empty pattern".into());
        }
        Ok(Pattern(segs))
    }
}

fn parse_range(body: &str) -> Result<Seg, String> {
    let mut ranges = Vec::new();
    let mut width = None;
    for part in body.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let bad = || format!("`[{body}]` is not a numeric range like [01-08] or [1,3,5-7]");
        if lo.is_empty()
            || hi.is_empty()
            || !lo.bytes().chain(hi.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let (l, h): (u64, u64) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        if l > h {
            return Err(format!("range `{part}` runs backwards"));
        }
        for bound in [lo, hi] {
            if bound.len() > 1 && bound.starts_with('0') {
                match width {
                    Some(w) if w != bound.len() => {
                        return Err(format!("`[{body}]` mixes padded widths"));
                    }
                    _ => width = Some(bound.len()),
                }
            }
        }
        ranges.push((l, h));
    }
    Ok(Seg::Range { ranges, width })
}

impl Pattern {
    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        match_from(&self.0, name)
    }
}

fn match_from(segs: &[Seg], name: &str) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        return name.is_empty();
    };
    match first {
        Seg::Lit(lit) => name
            .strip_prefix(lit.as_str())
            .is_some_and(|tail| match_from(rest, tail)),
        Seg::One => {
            let mut chars = name.chars();
            chars.next().is_some() && match_from(rest, chars.as_str())
        }
        Seg::Star => name
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(name.len()))
            .any(|i| match_from(rest, &name[i..])),
        Seg::Range { ranges, width } => {
            let digits = name.bytes().take_while(u8::is_ascii_digit).count();
            (1..=digits).any(|k| {
                let text = &name[..k];
                let width_ok = match width {
                    Some(w) => k == *w,
                    None => k == 1 || !text.starts_with('0'),
                };
                width_ok
                    && text
                        .parse::<u64>()
                        .is_ok_and(|v| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&v)))
                    && match_from(rest, &name[k..])
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn patterns() {
        assert!(p("r01-n[01-08]").matches("r01-n05"));
        assert!(!p("r01-n[01-08]").matches("r01-n09"));
        assert!(!p("r01-n[01-08]").matches("r01-n5"));
        assert!(p("r01-n[1-16]").matches("r01-n12"));
        assert!(!p("r01-n[1-16]").matches("r01-n012"));
        assert!(p("r0[1-2]-n[01,03,05-06]").matches("r02-n06"));
        assert!(!p("r0[1-2]-n[01,03,05-06]").matches("r02-n04"));
        assert!(p("r*-n0?").matches("r12-n07"));
        assert!(p("*").matches(""));
        assert!(!p("r01").matches("r011"));
        assert!("r[01-".parse::<Pattern>().is_err());
        assert!("r[a-b]".parse::<Pattern>().is_err());
        assert!("r[08-01]".parse::<Pattern>().is_err());
    }

    #[test]
    fn expressions_parse() {
        assert!("rack:r01&row=A,!r02-n01".parse::<Selection>().is_ok());
        assert!("".parse::<Selection>().is_err());
        assert!("r01,".parse::<Selection>().is_err());
        assert!("zone:x".parse::<Selection>().is_err());
        assert!("=x".parse::<Selection>().is_err());
    }
}
