//! A small XML reader for `nvidia-smi -q -x`: enough for its flat,
//! attribute-light documents (elements, text, a `<!DOCTYPE>`, the `<?xml?>`
//! declaration, comments), not a general parser. It never fails: malformed
//! input yields whatever leaves were read before the damage.

/// One element with text and no child elements, with the names of the
/// elements around it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Leaf {
    /// Element names from the root down to this one.
    pub path: Vec<String>,
    /// The text, entities decoded, trimmed.
    pub text: String,
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
    let mut stack: Vec<String> = Vec::new();
    let mut pending_text: Option<String> = None;
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let between = &rest[..lt];
        if !between.trim().is_empty() {
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
            let name = name.trim();
            if stack.last().map(String::as_str) == Some(name) {
                if let Some(text) = pending_text.take() {
                    out.push(Event::Leaf(Leaf {
                        path: stack.clone(),
                        text,
                    }));
                }
                stack.pop();
            }
            pending_text = None;
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        out.push(Event::Open {
            name: name.to_owned(),
            attrs: attrs.trim().to_owned(),
            depth: stack.len(),
        });
        pending_text = None;
        if !self_closing {
            stack.push(name.to_owned());
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
                Event::Leaf(l) => Some((l.path.join("/"), l.text.clone())),
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
}
