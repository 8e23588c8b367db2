//! Firmware updates and BIOS settings over Redfish: what a BMC's
//! `UpdateService` offers, the update request each method takes, a task
//! followed through the BMC's own reboot, and the BIOS settings object
//! with its pending values.
//!
//! The methods, as real BMCs advertise them (`redfish-mockups/`):
//! `SimpleUpdate` with an `ImageURI` the BMC pulls (Dell, HPE, Lenovo,
//! Supermicro, DGX H100, DMTF's reference) and `MultipartHttpPushUri`
//! uploads (Dell, Lenovo, Supermicro, DGX H100, GB200/GH200 OpenBMC, which
//! offer no `SimpleUpdate`). kiln prefers `SimpleUpdate`: the BMC streams
//! the package from kiln's boot server, so kiln holds no image in memory.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::bmc::client::{BmcClient, BmcError, Doc};
use crate::bmc::discover::{link, strings};
use crate::bmc::h1::Body;

/// What a BMC's `UpdateService` offers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateService {
    /// The service's own path.
    pub path: String,
    /// `FirmwareInventory`, when linked.
    pub inventory: Option<String>,
    /// The `SimpleUpdate` action, when offered.
    pub simple_update: Option<SimpleUpdate>,
    /// `MultipartHttpPushUri`, when offered.
    pub multipart_push: Option<String>,
    /// `MaxImageSizeBytes`, when stated.
    pub max_image_bytes: Option<u64>,
    /// `ServiceEnabled: false` (updates refused by configuration).
    pub disabled: bool,
}

/// The `SimpleUpdate` action as advertised.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimpleUpdate {
    /// Where to POST it.
    pub target: String,
    /// `TransferProtocol@Redfish.AllowableValues` (empty: not stated).
    pub protocols: Vec<String>,
    /// `@Redfish.OperationApplyTimeSupport.SupportedValues` (empty: not
    /// stated; the BMC applies at its default).
    pub apply_times: Vec<String>,
    /// `Targets@Redfish.AllowableValues` (empty: not stated).
    pub targets: Vec<String>,
}

/// How kiln hands a package to a BMC.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateMethod {
    /// POST `SimpleUpdate` with an `ImageURI` on kiln's boot server.
    Pull(SimpleUpdate),
    /// Upload to `MultipartHttpPushUri`.
    Push(String),
}

impl UpdateService {
    /// Reads the service from its document.
    pub fn of(path: &str, doc: &Value) -> UpdateService {
        let action = &doc["Actions"]["#UpdateService.SimpleUpdate"];
        let simple_update = action["target"].as_str().map(|target| SimpleUpdate {
            target: target.to_owned(),
            protocols: strings(&action["TransferProtocol@Redfish.AllowableValues"]),
            apply_times: strings(&action["@Redfish.OperationApplyTimeSupport"]["SupportedValues"]),
            targets: strings(&action["Targets@Redfish.AllowableValues"]),
        });
        UpdateService {
            path: path.to_owned(),
            inventory: link(&doc["FirmwareInventory"]),
            simple_update,
            multipart_push: doc["MultipartHttpPushUri"].as_str().map(str::to_owned),
            max_image_bytes: doc["MaxImageSizeBytes"].as_u64(),
            disabled: doc["ServiceEnabled"].as_bool() == Some(false),
        }
    }

    /// The method kiln uses for a package served at a `scheme` (`http` or
    /// `https`) URL: `SimpleUpdate` when the BMC takes that protocol, else
    /// a multipart upload. `Err` says why neither fits.
    pub fn method(&self, scheme: &str, size: u64) -> Result<UpdateMethod, String> {
        if self.disabled {
            return Err("the BMC's UpdateService is disabled (ServiceEnabled: false)".into());
        }
        if let Some(s) = &self.simple_update
            && (s.protocols.is_empty()
                || s.protocols.iter().any(|p| p.eq_ignore_ascii_case(scheme)))
        {
            return Ok(UpdateMethod::Pull(s.clone()));
        }
        match (&self.multipart_push, self.max_image_bytes) {
            (Some(_), Some(max)) if size > max => Err(format!(
                "the package is {size} bytes, over the BMC's MaxImageSizeBytes {max}"
            )),
            (Some(uri), _) => Ok(UpdateMethod::Push(uri.clone())),
            (None, _) => Err(match &self.simple_update {
                Some(s) => format!(
                    "SimpleUpdate takes only {} and there is no MultipartHttpPushUri",
                    s.protocols.join(", ")
                ),
                None => "the BMC offers neither SimpleUpdate nor MultipartHttpPushUri".into(),
            }),
        }
    }
}

impl SimpleUpdate {
    /// The request body: the image, its protocol where the BMC lists
    /// protocols, the targets, and the apply time where the BMC supports
    /// choosing it.
    pub fn body(&self, image_uri: &str, targets: &[String], apply: &str) -> Value {
        let mut body = json!({ "ImageURI": image_uri });
        if !self.protocols.is_empty() {
            let scheme = image_uri.split(':').next().unwrap_or_default();
            body["TransferProtocol"] = json!(scheme.to_ascii_uppercase());
        }
        if !targets.is_empty() {
            body["Targets"] = json!(targets);
        }
        if self.apply_times.iter().any(|t| t == apply) {
            body["@Redfish.OperationApplyTime"] = json!(apply);
        }
        body
    }
}

/// The multipart upload body (`UpdateParameters` JSON, then `UpdateFile`)
/// and its `Content-Type`, as DMTF's spec (DSP0266 "Multipart HTTP push
/// updates") describes it. `image` is not copied: the body's head and tail
/// are built around it, so every node's upload shares one copy.
/// `sha256_hex` is the image's digest, already checked.
pub fn multipart_body(
    targets: &[String],
    apply: &str,
    file_name: &str,
    image: Bytes,
    sha256_hex: &str,
) -> (Body, String) {
    // The boundary must not occur in the image; one made of the image's
    // own digest would need a preimage of SHA-256 to.
    let seed: String = sha256_hex.chars().take(32).collect();
    let boundary = format!("kiln-{seed}");
    let params = json!({ "Targets": targets, "@Redfish.OperationApplyTime": apply });
    let safe_name: String = file_name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"UpdateParameters\"\r\nContent-Type: application/json\r\n\r\n{params}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"UpdateFile\"; filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let body = Body::from_parts(vec![Bytes::from(head), image, Bytes::from(tail)]);
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// Uploads an image to `MultipartHttpPushUri`. Returns the task monitor
/// when the BMC accepted it for later (202), `None` when it finished at
/// once (200/204); an error status is [`BmcError::Http`] with the BMC's
/// message. The request may take [`crate::bmc::transport::upload_time`]
/// on top of the request timeout.
pub async fn push(
    client: &BmcClient,
    uri: &str,
    targets: &[String],
    apply: &str,
    file_name: &str,
    image: Bytes,
    sha256_hex: &str,
) -> Result<Option<String>, BmcError> {
    let (body, content_type) = multipart_body(targets, apply, file_name, image, sha256_hex);
    let doc = client
        .call_bytes(hyper::Method::POST, uri, body, &content_type)
        .await?;
    Ok(monitor_of(&doc))
}

/// Asks the BMC to pull `image_uri` by `SimpleUpdate`; answers as
/// [`push`] does.
pub async fn simple_update(
    client: &BmcClient,
    action: &SimpleUpdate,
    image_uri: &str,
    targets: &[String],
    apply: &str,
) -> Result<Option<String>, BmcError> {
    let body = action.body(image_uri, targets, apply);
    let doc = client
        .call(hyper::Method::POST, &action.target, Some(&body), &[])
        .await?;
    Ok(monitor_of(&doc))
}

/// The task monitor of an accepted (202) request: the `Location` header,
/// else the task the body describes; `None` for a request done at once.
fn monitor_of(doc: &Doc) -> Option<String> {
    if doc.status != hyper::StatusCode::ACCEPTED {
        return None;
    }
    let task = doc.body["@odata.type"]
        .as_str()
        .is_none_or(|t| t.contains("Task"));
    doc.location.clone().or_else(|| {
        doc.body["@odata.id"]
            .as_str()
            .filter(|_| task)
            .map(str::to_owned)
    })
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskEnd {
    /// `Completed` (or a monitor answering 200/204 with no state).
    Completed,
    /// `Exception`, `Killed` or `Cancelled`, with the BMC's messages.
    Failed(String),
    /// The monitor went away (404) after the BMC rebooted: the task's end
    /// is unknown and the caller reads the versions back.
    Lost,
}

/// Progress of a task as the BMC reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskProgress {
    /// `TaskState`.
    pub state: String,
    /// `PercentComplete`, when given.
    pub percent: Option<u64>,
    /// The newest message.
    pub message: Option<String>,
}

/// Follows a task monitor (or task resource) to its end, calling
/// `progress` on each change. A BMC that reboots while updating itself
/// stops answering: connection failures are waited out for `reboot_grace`
/// from the first failure; a monitor gone after that is [`TaskEnd::Lost`].
pub async fn follow_task(
    client: &BmcClient,
    monitor: &str,
    limit: Duration,
    reboot_grace: Duration,
    poll: Duration,
    mut progress: impl FnMut(&TaskProgress),
) -> Result<TaskEnd, BmcError> {
    let start = Instant::now();
    let mut down_since: Option<Instant> = None;
    let mut rebooted = false;
    let mut last = TaskProgress::default();
    loop {
        match client.send(hyper::Method::GET, monitor, None, &[]).await {
            Err(e @ BmcError::Transport { .. }) => {
                let since = *down_since.get_or_insert_with(Instant::now);
                rebooted = true;
                if since.elapsed() > reboot_grace {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
            // A BMC restarting its web server answers 503 for a while.
            Ok(reply) if reply.status.as_u16() == 503 => {
                let since = *down_since.get_or_insert_with(Instant::now);
                rebooted = true;
                if since.elapsed() > reboot_grace {
                    return Err(BmcError::Http {
                        node: client.node.clone(),
                        method: "task".into(),
                        path: monitor.to_owned(),
                        status: 503,
                        message: Some("the BMC stayed unavailable after its reboot".into()),
                    });
                }
            }
            Ok(reply) => {
                down_since = None;
                let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
                match reply.status.as_u16() {
                    404 if rebooted => return Ok(TaskEnd::Lost),
                    200..=299 => {
                        let now = TaskProgress {
                            state: body["TaskState"].as_str().unwrap_or("Running").to_owned(),
                            percent: body["PercentComplete"].as_u64(),
                            message: newest_message(&body),
                        };
                        if now != last {
                            progress(&now);
                            last = now;
                        }
                        match body["TaskState"].as_str() {
                            Some("Exception" | "Killed" | "Cancelled") => {
                                let why = last
                                    .message
                                    .clone()
                                    .unwrap_or_else(|| format!("the task ended {}", last.state));
                                return Ok(TaskEnd::Failed(why));
                            }
                            Some("Completed") => return Ok(TaskEnd::Completed),
                            None if reply.status.as_u16() != 202 => return Ok(TaskEnd::Completed),
                            _ => {}
                        }
                    }
                    // A monitor answers with the operation's own response:
                    // an error with the BMC's message is the task failing.
                    status @ (400 | 500..=599) => {
                        return Ok(TaskEnd::Failed(newest_message(&body).unwrap_or_else(
                            || format!("the task monitor answered HTTP {status}"),
                        )));
                    }
                    status => {
                        return Err(BmcError::Http {
                            node: client.node.clone(),
                            method: "task".into(),
                            path: monitor.to_owned(),
                            status,
                            message: newest_message(&body),
                        });
                    }
                }
            }
        }
        if start.elapsed() > limit {
            return Err(BmcError::Protocol {
                node: client.node.clone(),
                path: monitor.to_owned(),
                reason: format!("the task is still running after {} s", limit.as_secs()),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// The newest message of a task (or an error's extended info).
fn newest_message(body: &Value) -> Option<String> {
    let from = |list: &Value| {
        list.as_array()?
            .iter()
            .rev()
            .find_map(|m| m["Message"].as_str())
            .map(|m| crate::diag::clip(m, 300))
    };
    from(&body["Messages"]).or_else(|| from(&body["error"]["@Message.ExtendedInfo"]))
}

/// A system's BIOS as read: current attributes, and where and how new
/// values are written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bios {
    /// The BIOS resource.
    pub path: String,
    /// `Attributes`, as the BIOS runs now.
    pub attributes: serde_json::Map<String, Value>,
    /// `@Redfish.Settings.SettingsObject`: where values are written
    /// (`None`: the BIOS resource itself, as a few BMCs take it).
    pub settings: Option<String>,
    /// `@Redfish.Settings.SupportedApplyTimes` (empty: not stated).
    pub apply_times: Vec<String>,
    /// Attributes the BMC says it failed to apply (`SettingsFailed`
    /// messages' `RelatedProperties`).
    pub failed: Vec<String>,
}

impl Bios {
    /// Reads the BIOS document.
    pub fn of(path: &str, doc: &Value) -> Bios {
        let settings = &doc["@Redfish.Settings"];
        let failed = settings["Messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| {
                m["MessageId"]
                    .as_str()
                    .is_some_and(|id| id.ends_with("SettingsFailed"))
            })
            .flat_map(|m| {
                m["RelatedProperties"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| {
                p.as_str().map(|p| {
                    p.trim_start_matches("/Attributes/")
                        .trim_start_matches('#')
                        .to_owned()
                })
            })
            .collect();
        Bios {
            path: path.to_owned(),
            attributes: doc["Attributes"].as_object().cloned().unwrap_or_default(),
            settings: link(&settings["SettingsObject"]),
            apply_times: strings(&settings["SupportedApplyTimes"]),
            failed,
        }
    }

    /// The `PATCH` body for `changes`: the attributes, with the apply time
    /// `OnReset` where the BMC lists apply times.
    pub fn patch_body(&self, changes: serde_json::Map<String, Value>) -> Value {
        let mut body = json!({ "Attributes": changes });
        if self.apply_times.iter().any(|t| t == "OnReset") {
            body["@Redfish.SettingsApplyTime"] = json!({ "ApplyTime": "OnReset" });
        }
        body
    }
}

/// Reads a system's BIOS (`None`: the system links none).
pub async fn bios(client: &BmcClient, system: &Value) -> Result<Option<Bios>, BmcError> {
    let Some(path) = link(&system["Bios"]) else {
        return Ok(None);
    };
    let doc = client.get(&path).await?;
    Ok(Some(Bios::of(&path, &doc)))
}

/// Writes pending BIOS values: to the settings object, with `If-Match`
/// when the settings object carries an ETag (HPE refuses without it).
pub async fn write_bios(
    client: &BmcClient,
    bios: &Bios,
    changes: serde_json::Map<String, Value>,
) -> Result<(), BmcError> {
    let target = bios.settings.as_deref().unwrap_or(&bios.path);
    let etag = match client.get_doc(target).await {
        Ok(doc) => doc
            .etag
            .or_else(|| doc.body["@odata.etag"].as_str().map(str::to_owned)),
        Err(e) if e.is_absent() => None,
        Err(e) => return Err(e),
    };
    client
        .patch(target, &bios.patch_body(changes), etag.as_deref())
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mockup(vendor: &str, path: &str) -> Value {
        let file = format!(
            "{}/redfish-mockups/{vendor}{path}/index.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn service(vendor: &str) -> UpdateService {
        UpdateService::of(
            "/redfish/v1/UpdateService",
            &mockup(vendor, "/redfish/v1/UpdateService"),
        )
    }

    #[test]
    fn each_vendor_gets_the_method_its_bmc_offers() {
        let pull = |v: &str| {
            matches!(
                service(v).method("https", 1 << 20),
                Ok(UpdateMethod::Pull(_))
            )
        };
        for vendor in [
            "dell-idrac9-poweredge-r750",
            "hpe-ilo5-proliant-dl385-gen10plus",
            "hpe-ilo7-proliant-dl380a-gen12",
            "lenovo-xcc-thinksystem-sr670v2",
            "supermicro-x13-sys-821ge-tnhr",
            "nvidia-dgx-h100-ami",
            "dmtf-public-rackmount1",
        ] {
            assert!(pull(vendor), "{vendor} pulls from kiln's server");
        }
        for vendor in ["nvidia-gb200-nvl-openbmc", "nvidia-gh200-openbmc"] {
            assert_eq!(
                service(vendor).method("https", 1 << 20),
                Ok(UpdateMethod::Push(
                    "/redfish/v1/UpdateService/update-multipart".into()
                )),
                "{vendor}"
            );
            let too_big = service(vendor).method("https", 300_000_000);
            assert!(too_big.is_err_and(|e| e.contains("MaxImageSizeBytes 209715200")));
        }
        // Dell states apply times and protocols: both go in the body.
        let dell = service("dell-idrac9-poweredge-r750");
        let Some(s) = dell.simple_update else {
            panic!("Dell offers SimpleUpdate")
        };
        let body = s.body("https://10.0.0.1/fw/bmc.bin?t=x", &[], "OnReset");
        assert_eq!(body["TransferProtocol"], "HTTPS");
        assert_eq!(body["@Redfish.OperationApplyTime"], "OnReset");
        assert!(body.get("Targets").is_none());
        // HPE lists protocols but no apply times: none is sent.
        let hpe = service("hpe-ilo6-proliant-dl380a-gen11").simple_update;
        let body = hpe.map(|s| s.body("http://h/x", &["/t".into()], "OnReset"));
        assert!(
            body.is_some_and(|b| b.get("@Redfish.OperationApplyTime").is_none()
                && b["TransferProtocol"] == "HTTP"
                && b["Targets"][0] == "/t")
        );
    }

    #[test]
    fn bios_settings_objects_are_found_where_each_vendor_puts_them() {
        for (vendor, system, settings, on_reset) in [
            (
                "dell-idrac9-poweredge-r750",
                "System.Embedded.1",
                "/redfish/v1/Systems/System.Embedded.1/Bios/Settings",
                true,
            ),
            (
                "hpe-ilo5-proliant-dl385-gen10plus",
                "1",
                "/redfish/v1/systems/1/bios/settings",
                false,
            ),
            (
                "lenovo-xcc-thinksystem-sr670v2",
                "1",
                "/redfish/v1/Systems/1/Bios/Pending",
                true,
            ),
            (
                "supermicro-x13-sys-821ge-tnhr",
                "1",
                "/redfish/v1/Systems/1/Bios/SD",
                false,
            ),
            (
                "nvidia-dgx-h100-ami",
                "DGX",
                "/redfish/v1/Systems/DGX/Bios/SD",
                false,
            ),
            (
                "nvidia-gb200-nvl-openbmc",
                "System_0",
                "/redfish/v1/Systems/System_0/Bios/Settings",
                false,
            ),
        ] {
            let path = format!("/redfish/v1/Systems/{system}/Bios");
            let bios = Bios::of(&path, &mockup(vendor, &path));
            assert_eq!(bios.settings.as_deref(), Some(settings), "{vendor}");
            assert!(bios.attributes.len() > 100, "{vendor}");
            let mut change = serde_json::Map::new();
            change.insert("X".into(), json!("Enabled"));
            let body = bios.patch_body(change);
            assert_eq!(
                body.get("@Redfish.SettingsApplyTime").is_some(),
                on_reset,
                "{vendor}"
            );
        }
        // DMTF's reference says which attribute it failed to apply.
        let path = "/redfish/v1/Systems/437XR1138R2/Bios";
        let bios = Bios::of(path, &mockup("dmtf-public-rackmount1", path));
        assert_eq!(bios.failed, ["ProcTurboMode"]);
    }

    #[test]
    fn multipart_bodies_carry_parameters_then_the_file() {
        let image = b"\x00firmware\r\n--not-a-boundary";
        let digest = crate::imaging::verify::sha256_hex(image);
        let (body, content_type) = multipart_body(
            &["/fw/BMC".into()],
            "Immediate",
            "bmc \"x\".bin",
            Bytes::from_static(image),
            &digest,
        );
        let body = body.parts().concat();
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap_or_default();
        assert_eq!(boundary, format!("kiln-{}", &digest[..32]));
        let text = String::from_utf8_lossy(&body);
        let params = text.find("name=\"UpdateParameters\"").unwrap_or(usize::MAX);
        let file = text
            .find("name=\"UpdateFile\"; filename=\"bmcx.bin\"")
            .unwrap_or(0);
        assert!(params < file, "{text}");
        assert!(text.contains(r#""@Redfish.OperationApplyTime":"Immediate""#));
        assert!(body.windows(image.len()).any(|w| w == image));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }

    fn doc(status: u16, location: Option<&str>, body: Value) -> Doc {
        Doc {
            status: hyper::StatusCode::from_u16(status).unwrap(),
            body,
            etag: None,
            location: location.map(str::to_owned),
        }
    }

    #[test]
    fn monitor_comes_from_location_or_task_body() {
        let task = json!({"@odata.id": "/redfish/v1/TaskService/Tasks/7", "@odata.type": "#Task.v1_5_0.Task"});
        assert_eq!(
            monitor_of(&doc(
                202,
                Some("/redfish/v1/TaskService/TaskMonitors/7"),
                task.clone()
            ))
            .as_deref(),
            Some("/redfish/v1/TaskService/TaskMonitors/7")
        );
        assert_eq!(
            monitor_of(&doc(202, None, task)).as_deref(),
            Some("/redfish/v1/TaskService/Tasks/7")
        );
        // Not a task: no monitor to follow.
        let other = json!({"@odata.id": "/redfish/v1/UpdateService", "@odata.type": "#UpdateService.v1_11_0.UpdateService"});
        assert_eq!(monitor_of(&doc(202, None, other)), None);
        // Done at once.
        assert_eq!(monitor_of(&doc(204, None, Value::Null)), None);
        assert_eq!(
            monitor_of(&doc(
                200,
                Some("/redfish/v1/TaskService/Tasks/1"),
                Value::Null
            )),
            None
        );
    }
}
