//! The OData query parameters `$expand` and `$select` (DSP0266 "Query
//! parameters"), answered as far as the flavour's service root advertises
//! in `ProtocolFeaturesSupported`: a client that asks a real iLO for
//! `$expand=*` is refused, so the simulator refuses it too.

use serde_json::{Map, Value};

use super::flavour::Flavour;

/// Which navigation links `$expand` replaces by their documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expand {
    /// `.`: subordinate resources only (links outside `Links`).
    Subordinate,
    /// `~`: only links under `Links`.
    Links,
    /// `*`: every navigation link.
    All,
}

/// A GET's `$expand` and `$select`, as asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// What to expand and how many levels deep.
    pub expand: Option<(Expand, usize)>,
    /// The properties to keep; empty keeps all.
    pub select: Vec<String>,
    /// `only`: a collection with exactly one member answers that member.
    pub only: bool,
}

/// Why a query is refused: HTTP status, message id and message.
pub type Refusal = (u16, &'static str, String);

/// Parses `$expand`, `$select` and `only` from a raw query string and checks
/// them against what the flavour advertises. `$skip` and `$top` are read
/// elsewhere; any other `$`-parameter is refused with 501 (DSP0266: a
/// service answers an unsupported query parameter with 501); other
/// parameters without `$` are ignored, as DSP0266 asks.
pub fn parse(f: &Flavour, raw: &str) -> Result<Query, Refusal> {
    let features = f
        .docs
        .get("/redfish/v1")
        .map(|d| d["ProtocolFeaturesSupported"].clone())
        .unwrap_or(Value::Null);
    let flag = |v: &Value| v.as_bool().unwrap_or(false);
    let mut q = Query::default();
    for kv in raw.split('&') {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let key = key.replace("%24", "$");
        let value = value
            .replace("%24", "$")
            .replace("%28", "(")
            .replace("%29", ")");
        match key.as_str() {
            "$expand" => {
                let ex = &features["ExpandQuery"];
                let (sym, rest) = value.split_at(value.len().min(1));
                let (kind, feature) = match sym {
                    "." => (Expand::Subordinate, "NoLinks"),
                    "~" => (Expand::Links, "Links"),
                    "*" => (Expand::All, "ExpandAll"),
                    _ => return Err(bad_value("$expand", &value)),
                };
                if !flag(&ex[feature]) {
                    return Err(not_supported(&format!("$expand={sym}")));
                }
                let levels = if rest.is_empty() {
                    1
                } else {
                    let n = rest
                        .strip_prefix("($levels=")
                        .and_then(|r| r.strip_suffix(')'))
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad_value("$expand", &value))?;
                    if !flag(&ex["Levels"]) && n != 1 {
                        return Err(not_supported("$levels"));
                    }
                    n
                };
                let max = ex["MaxLevels"].as_u64().unwrap_or(1) as usize;
                if levels > max {
                    return Err((
                        400,
                        "QueryParameterOutOfRange",
                        format!("$levels={levels} is above this service's MaxLevels {max}"),
                    ));
                }
                q.expand = Some((kind, levels));
            }
            "$select" => {
                if !flag(&features["SelectQuery"]) {
                    return Err(not_supported("$select"));
                }
                q.select = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if q.select.is_empty() {
                    return Err(bad_value("$select", &value));
                }
            }
            "only" => {
                if !flag(&features["OnlyMemberQuery"]) {
                    return Err(not_supported("only"));
                }
                // `only` takes no value (DSP0266); `only=` is a value too.
                if kv.contains('=') {
                    return Err(bad_value("only", &value));
                }
                q.only = true;
            }
            "$skip" | "$top" => {}
            k if k.starts_with('$') => return Err(not_supported(k)),
            _ => {}
        }
    }
    Ok(q)
}

fn not_supported(what: &str) -> Refusal {
    (
        501,
        "QueryNotSupported",
        format!("the query {what} is not supported by this service"),
    )
}

fn bad_value(key: &str, value: &str) -> Refusal {
    (
        400,
        "QueryParameterValueFormatError",
        format!("{value} is not a valid value for {key}"),
    )
}

/// Replaces navigation links in `doc` by what `render` answers for them,
/// `levels` deep; `render` is the same path a plain GET takes, so expanded
/// members equal member-by-member GETs.
pub fn expand(
    doc: &mut Value,
    kind: Expand,
    levels: usize,
    render: &dyn Fn(&str) -> Option<Value>,
) {
    if levels == 0 {
        return;
    }
    if let Some(map) = doc.as_object_mut() {
        walk(map, kind, levels, false, render);
    }
}

fn walk(
    map: &mut Map<String, Value>,
    kind: Expand,
    levels: usize,
    in_links: bool,
    render: &dyn Fn(&str) -> Option<Value>,
) {
    for (key, value) in map.iter_mut() {
        if key.starts_with('@') || key.contains('@') {
            continue;
        }
        let under_links = in_links || key == "Links";
        walk_value(value, kind, levels, under_links, render);
    }
}

fn walk_value(
    value: &mut Value,
    kind: Expand,
    levels: usize,
    in_links: bool,
    render: &dyn Fn(&str) -> Option<Value>,
) {
    match value {
        Value::Array(items) => {
            for v in items {
                walk_value(v, kind, levels, in_links, render);
            }
        }
        Value::Object(map) => {
            let link = (map.len() == 1)
                .then(|| map.get("@odata.id").and_then(Value::as_str))
                .flatten()
                .map(|s| s.trim_end_matches('/').to_owned());
            match link {
                Some(target) => {
                    let wanted = match kind {
                        Expand::All => true,
                        Expand::Subordinate => !in_links,
                        Expand::Links => in_links,
                    };
                    if let Some(mut doc) = wanted.then(|| render(&target)).flatten() {
                        expand(&mut doc, kind, levels - 1, render);
                        *value = doc;
                    }
                }
                None => walk(map, kind, levels, in_links, render),
            }
        }
        _ => {}
    }
}

/// What `only` makes of `doc`: on a collection with exactly one member, that
/// member's path (to be answered instead); on a collection with another
/// number of members, `None` (the collection itself is answered); on a
/// resource that is no collection, the refusal DSP0266 asks for.
pub fn only_member(doc: &Value) -> Result<Option<String>, Refusal> {
    let Some(members) = doc.get("Members").and_then(Value::as_array) else {
        return Err((
            400,
            "QueryNotSupportedOnResource",
            "only applies to resource collections".to_owned(),
        ));
    };
    match members.as_slice() {
        [one] => Ok(one["@odata.id"]
            .as_str()
            .map(|s| s.trim_end_matches('/').to_owned())),
        _ => Ok(None),
    }
}

/// Keeps only the selected top-level properties, and the OData
/// annotations a client needs to know what it got.
pub fn select(doc: &mut Value, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    if let Some(map) = doc.as_object_mut() {
        map.retain(|k, _| k.starts_with("@odata.") || keys.iter().any(|s| s == k));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sim::redfish::flavour::{Vendor, flavour};

    fn code(f: &Flavour, raw: &str) -> u16 {
        parse(f, raw).err().map_or(200, |r| r.0)
    }

    #[test]
    fn flavours_accept_what_their_mockups_advertise() {
        let hpe = flavour(Vendor::Hpe);
        assert_eq!(code(&hpe, "$expand=."), 200);
        assert_eq!(code(&hpe, "$expand=*"), 501);
        assert_eq!(code(&hpe, "$expand=~"), 501);
        assert_eq!(code(&hpe, "$expand=.($levels=2)"), 400);
        assert_eq!(code(&hpe, "$select=Id"), 200);
        let generic = flavour(Vendor::Generic);
        assert_eq!(code(&generic, "%24expand=*($levels=6)"), 200);
        assert_eq!(code(&generic, "$expand=*($levels=7)"), 400);
        assert_eq!(code(&generic, "$select=Id"), 501);
        for v in [Vendor::Lenovo, Vendor::Supermicro] {
            assert_eq!(code(&flavour(v), "$expand=*($levels=2)"), 200);
            assert_eq!(code(&flavour(v), "$expand=*($levels=3)"), 400);
        }
        assert_eq!(code(&flavour(Vendor::Dell), "$expand=~($levels=2)"), 400);
        assert_eq!(code(&generic, "$expand=x"), 400);
    }

    #[test]
    fn unknown_dollar_parameters_are_not_implemented() {
        let generic = flavour(Vendor::Generic);
        assert_eq!(code(&generic, "$rpvunknown"), 501);
        assert_eq!(code(&generic, "%24filter=Id%20eq%201"), 501);
        // Without `$` a parameter is not a query option: ignored.
        assert_eq!(code(&generic, "rpvunknown=1"), 200);
        assert_eq!(code(&generic, "$skip=2&$top=1"), 200);
    }

    #[test]
    fn only_takes_no_value_and_picks_a_single_member() {
        let generic = flavour(Vendor::Generic);
        assert_eq!(code(&generic, "only=foo"), 400);
        assert_eq!(code(&generic, "only="), 400);
        assert!(parse(&generic, "only").unwrap().only);
        let one = serde_json::json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1/"}]});
        assert_eq!(
            only_member(&one),
            Ok(Some("/redfish/v1/Systems/1".to_owned()))
        );
        let two = serde_json::json!({"Members": [{"@odata.id": "/a"}, {"@odata.id": "/b"}]});
        assert_eq!(only_member(&two), Ok(None));
        assert_eq!(
            only_member(&serde_json::json!({"Id": "1"})).unwrap_err().0,
            400
        );
    }

    #[test]
    fn no_flavour_advertises_excerpt() {
        for v in Vendor::ALL {
            let f = flavour(v);
            let root = &f.docs["/redfish/v1"];
            assert_ne!(root["ProtocolFeaturesSupported"]["ExcerptQuery"], true);
        }
    }

    #[test]
    fn expanded_members_equal_their_documents() {
        let f = flavour(Vendor::Dell);
        let render = |p: &str| f.docs.get(p).cloned();
        let path = f.processors.clone();
        let mut doc = render(&path).unwrap();
        let ids = crate::sim::redfish::render::member_ids(&doc);
        assert!(!ids.is_empty());
        expand(&mut doc, Expand::Subordinate, 1, &render);
        for (m, id) in doc["Members"].as_array().unwrap().iter().zip(&ids) {
            assert_eq!(Some(m.clone()), render(id.trim_end_matches('/')));
        }
        let mut doc = render(&path).unwrap();
        select(&mut doc, &["Name".to_owned()]);
        assert!(doc.get("Members").is_none() && doc.get("Name").is_some());
    }
}
