//! A small XML reader for `nvidia-smi -q -x`: enough for its flat,
//! attribute-light documents (elements, text, a `<!DOCTYPE>`, the `<?xml?>`
//! declaration, comments), not a general parser. It never fails: malformed
//! input yields whatever leaves were read before the damage.
//!
//! The document comes from the node, so its memory is bounded by its size:
//! a leaf carries its path as one string, kept at most [`MAX_PATH`] bytes
//! and [`MAX_DEPTH`] elements deep (nvidia-smi's are 5 deep and under 100
//! bytes); whatever lies deeper is skipped. (Each leaf once cloned the
//! whole element stack: 100 KB of nested elements took 1.3 GB.)

/// Elements deeper than this are skipped with everything inside them.
pub(super) const MAX_DEPTH: usize = 32;
/// Longest element path kept (names joined by `/`); deeper is skipped.
pub(super) const MAX_PATH: usize = 256;

/// One element with text and no child elements, with the names of the
/// elements around it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Leaf {
    /// Element names from the root down to this one, joined by `/`.
    pub path: String,
    /// The text, entities decoded, trimmed.
    pub text: String,
}

impl Leaf {
    /// The path's segments from the `n`th on, joined by `/` (empty when
    /// there are not that many).
    pub fn path_from(&self, n: usize) -> &str {
        let mut rest = self.path.as_str();
        for _ in 0..n {
            match rest.split_once('/') {
                Some((_, r)) => rest = r,
                None => return "",
            }
        }
        rest
    }

    /// The `n`th segment of the path.
    pub fn segment(&self, n: usize) -> Option<&str> {
        self.path.split('/').nth(n)
    }
}

/// An element opened, with its attributes as written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    /// `<name attrs>` at `depth` (the root is depth 0).
    Open {
        name: String,
        attrs: String,
        depth: usize,
    },
    /// A leaf element, read completely.
    Leaf(Leaf),
}

/// Reads `text` into open and leaf events, in document order.
pub(super) fn events(text: &str) -> Vec<Event> {
    let mut out = Vec::new();
    // The open elements: each one's start in `path`.
    let mut stack: Vec<usize> = Vec::new();
    let mut path = String::new();
    // Elements open below the kept ones (too deep or too long a path).
    let mut skipped = 0usize;
    let mut pending_text: Option<String> = None;
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let between = &rest[..lt];
        if skipped == 0 && !between.trim().is_empty() {
            pending_text = Some(decode(between.trim()));
        }
        rest = &rest[lt..];
        // Comments may contain '>'; everything else ends at the first one.
        let end = if rest.starts_with("<!--") {
            rest.find("-->").map(|i| i + 3)
        } else {
            rest.find('>').map(|i| i + 1)
        };
        let Some(end) = end else { break };
        let tag = &rest[1..end - 1];
        rest = &rest[end..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            if skipped > 0 {
                skipped -= 1;
                continue;
            }
            let name = name.trim();
            if let Some(&start) = stack.last() {
                let last = path[start..].trim_start_matches('/');
                if last == name {
                    if let Some(text) = pending_text.take() {
                        out.push(Event::Leaf(Leaf {
                            path: path.clone(),
                            text,
                        }));
                    }
                    stack.pop();
                    path.truncate(start);
                }
            }
            pending_text = None;
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        pending_text = None;
        if skipped > 0 {
            skipped += usize::from(!self_closing);
            continue;
        }
        if stack.len() >= MAX_DEPTH || path.len() + 1 + name.len() > MAX_PATH {
            skipped += usize::from(!self_closing);
            continue;
        }
        out.push(Event::Open {
            name: name.to_owned(),
            attrs: attrs.trim().to_owned(),
            depth: stack.len(),
        });
        if !self_closing {
            stack.push(path.len());
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(name);
        }
    }
    out
}

/// The value of attribute `key` in `attrs` (`id="00000000:01:00.0"`).
pub(super) fn attr<'a>(attrs: &'a str, key: &str) -> Option<&'a str> {
    let at = attrs.find(&format!("{key}="))?;
    let rest = &attrs[at + key.len() + 1..];
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    rest.find(quote).map(|end| &rest[..end])
}

fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_leaves_and_attributes() {
        let doc = "<?xml version=\"1.0\" ?>\n<!DOCTYPE x SYSTEM \"a.dtd\">\n<log><!-- c > d -->\
                   <gpu id=\"00:01.0\"><a>1 &amp; 2</a><b><c>x</c></b><e/></gpu></log>";
        let ev = events(doc);
        let leaves: Vec<(String, String)> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Leaf(l) => Some((l.path.clone(), l.text.clone())),
                Event::Open { .. } => None,
            })
            .collect();
        assert_eq!(
            leaves,
            [
                ("log/gpu/a".to_owned(), "1 & 2".to_owned()),
                ("log/gpu/b/c".to_owned(), "x".to_owned())
            ]
        );
        let Event::Open { attrs, depth, .. } = &ev[1] else {
            panic!("{ev:?}")
        };
        assert_eq!((attr(attrs, "id"), *depth), (Some("00:01.0"), 1));
    }

    #[test]
    fn hostile_input_does_not_panic() {
        for doc in [
            "<",
            "<<>>",
            "</a></b>",
            "<a b=\"",
            "<a>text",
            "<!--",
            "é<é>é</é>",
        ] {
            let _ = events(doc);
        }
        assert_eq!(attr("id=", "id"), None);
        assert_eq!(attr("id=\"x", "id"), None);
    }

    #[test]
    fn nesting_costs_memory_in_proportion_to_the_document() {
        // 100 KB: 10,000 nested elements and 4,000 leaves inside them.
        let doc = format!(
            "<log>{}{}{}<gpu><a>1</a></gpu></log>",
            "<a>".repeat(10_000),
            "<b>x</b>".repeat(4_000),
            "</a>".repeat(10_000)
        );
        let ev = events(&doc);
        let held: usize = ev
            .iter()
            .map(|e| match e {
                Event::Leaf(l) => l.path.len() + l.text.len(),
                Event::Open { name, attrs, .. } => name.len() + attrs.len(),
            })
            .sum();
        assert!(held < 4 * doc.len(), "{held} bytes held for {}", doc.len());
        // What lies past the limit is skipped, and the reader finds its
        // way out: the leaf after the deep part is read.
        let last = ev.iter().rev().find_map(|e| match e {
            Event::Leaf(l) => Some(l),
            Event::Open { .. } => None,
        });
        assert_eq!(
            last.map(|l| (l.path.as_str(), l.text.as_str())),
            Some(("log/gpu/a", "1"))
        );
        assert_eq!(last.map(|l| l.path_from(1)), Some("gpu/a"));
        assert_eq!(last.and_then(|l| l.segment(1)), Some("gpu"));
    }
}
