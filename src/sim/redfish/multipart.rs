//! `multipart/form-data` (RFC 7578) as a simulated BMC reads a firmware
//! push: the boundary from the `Content-Type`, then each part's name and
//! bytes. Anything malformed is an `Err` with the reason, never a panic.

/// One part of a form.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// Its bytes.
    pub data: &'a [u8],
}

/// The boundary a `multipart/form-data` `Content-Type` names.
pub fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let kind = params.next().unwrap_or_default().trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!("expected multipart/form-data, got `{kind}`"));
    }
    params
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| "the multipart Content-Type names no boundary".to_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The parts of `body`, split on `boundary`.
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delim = format!("--{boundary}");
    let start = find(body, delim.as_bytes()).ok_or("the body has no multipart boundary")?;
    let mut rest = &body[start + delim.len()..];
    let next = format!("\r\n--{boundary}");
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a multipart boundary is not followed by a line end")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("a multipart part has no header end")?;
        let head = std::str::from_utf8(&rest[..head_end])
            .map_err(|_| "a multipart part header is not text")?;
        let name = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .and_then(|(_, v)| {
                v.split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(k, _)| *k == "name")
                    .map(|(_, n)| n.trim_matches('"').to_owned())
            })
            .ok_or("a multipart part has no Content-Disposition name")?;
        let data_start = head_end + 4;
        let end = find(&rest[data_start..], next.as_bytes())
            .ok_or("a multipart part is not closed by a boundary")?;
        out.push(Part {
            name,
            data: &rest[data_start..data_start + end],
        });
        rest = &rest[data_start + end + next.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kiln_sends() {
        let targets = vec!["/redfish/v1/UpdateService/FirmwareInventory/BMC".to_owned()];
        let image = b"image\r\nbytes";
        let (body, ct) = crate::bmc::update::multipart_body(
            &targets,
            "Immediate",
            "fw.bin",
            bytes::Bytes::from_static(image),
            &crate::imaging::verify::sha256_hex(image),
        );
        let body = body.parts().concat();
        let b = boundary(&ct).unwrap();
        let p = parts(&body, &b).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "UpdateParameters");
        let params: serde_json::Value = serde_json::from_slice(p[0].data).unwrap();
        assert_eq!(params["Targets"][0], targets[0]);
        assert_eq!(p[1].name, "UpdateFile");
        assert_eq!(p[1].data, b"image\r\nbytes");
    }

    #[test]
    fn malformed_forms_are_errors() {
        assert!(boundary("application/json").is_err());
        assert!(boundary("multipart/form-data").is_err());
        assert_eq!(
            boundary("multipart/form-data; boundary=\"x y\"").unwrap(),
            "x y"
        );
        for body in [
            &b""[..],
            b"--x",
            b"--xjunk",
            b"--x\r\nno header end",
            b"--x\r\nContent-Type: text/plain\r\n\r\ndata\r\n--x--",
            b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunclosed",
        ] {
            assert!(parts(body, "x").is_err(), "{body:?}");
        }
        assert_eq!(parts(b"--x--\r\n", "x").unwrap(), vec![]);
    }
}
