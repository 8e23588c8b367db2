//! Response headers DSP0266 asks of every Redfish service ("Response
//! headers"): `Allow` on reads and on 405 replies, `Cache-Control`, and a
//! `Link` with `rel=describedby` naming the resource's JSON schema.

use hyper::header::{self, HeaderValue};
use serde_json::Value;

use super::{Bmc, Reply};

impl Bmc {
    /// The methods `path` answers, as an `Allow` header value: what `post`,
    /// `patch` and `delete` accept there, besides GET and HEAD.
    pub(super) fn allowed(&self, path: &str) -> String {
        let f = &self.flavour;
        let mut methods = vec!["GET", "HEAD"];
        let post = path == "/redfish/v1/SessionService/Sessions"
            || path == "/redfish/v1/SessionService/Sessions/Members"
            || path == format!("{}/Actions/ComputerSystem.Reset", f.system)
            || path == format!("{}/Actions/Manager.Reset", f.manager)
            || f.simple_update.as_deref() == Some(path)
            || f.media
                .iter()
                .any(|m| path.starts_with(&format!("{}/Actions/VirtualMedia.", m.path)));
        if post {
            methods.push("POST");
        }
        if path == f.system || self.is_bios_settings(path) || f.media.iter().any(|m| m.path == path)
        {
            methods.push("PATCH");
        }
        if path
            .strip_prefix("/redfish/v1/SessionService/Sessions/")
            .is_some_and(|id| id != "Members")
        {
            methods.push("DELETE");
        }
        methods.join(", ")
    }
}

/// Adds `Allow` to `r`.
pub(super) fn add_allow(r: &mut Reply, allowed: &str) {
    if let Ok(v) = HeaderValue::from_str(allowed) {
        r.headers_mut().insert(header::ALLOW, v);
    }
}

/// Adds the headers of a successful read: `Cache-Control` (the simulator's
/// resources change with every power action, so nothing is cached) and the
/// `Link` to the DMTF JSON schema of the document's `@odata.type`.
pub(super) fn add_read_headers(r: &mut Reply, doc: &Value) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(link) = doc["@odata.type"].as_str().and_then(schema_link)
        && let Ok(v) = HeaderValue::from_str(&link)
    {
        h.insert(header::LINK, v);
    }
}

/// `#ServiceRoot.v1_5_0.ServiceRoot` → the `Link` value naming
/// `ServiceRoot.v1_5_0.json` at DMTF's schema site.
fn schema_link(odata_type: &str) -> Option<String> {
    let t = odata_type.trim_start_matches('#');
    let (schema, _) = t.rsplit_once('.')?;
    (!schema.is_empty())
        .then(|| format!("<https://redfish.dmtf.org/schemas/v1/{schema}.json>; rel=describedby"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_names_the_versioned_schema() {
        assert_eq!(
            schema_link("#ServiceRoot.v1_5_0.ServiceRoot").as_deref(),
            Some("<https://redfish.dmtf.org/schemas/v1/ServiceRoot.v1_5_0.json>; rel=describedby")
        );
        assert_eq!(
            schema_link("#ComputerSystemCollection.ComputerSystemCollection").as_deref(),
            Some(
                "<https://redfish.dmtf.org/schemas/v1/ComputerSystemCollection.json>; rel=describedby"
            )
        );
        assert_eq!(schema_link("Nothing"), None);
    }
}
