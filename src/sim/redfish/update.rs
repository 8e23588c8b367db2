//! UpdateService on a simulated BMC: `SimpleUpdate` fetches a firmware
//! package over HTTP, answers 202 with a task monitor, and the task moves
//! on over simulated time; the new version shows in FirmwareInventory only
//! once applied (when the task completes, or at the next system reset for
//! `OnReset`). A multipart push to the vendor's `MultipartHttpPushUri`
//! carries the package itself and runs the same task. Update faults
//! ([`UpdateFault`]) act here.
//!
//! The virtual rack's package format: a text file whose first line is
//! `kiln-sim-firmware component=<Id or Name> version=<version>`; anything
//! after that line is payload the BMC ignores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use serde_json::{Value, json};

use super::{Bmc, Reply, Task, TaskState, error, json_reply, multipart};
use crate::sim::faults::UpdateFault;

/// The first word of every virtual-rack firmware package.
pub const PACKAGE_MAGIC: &str = "kiln-sim-firmware";

/// The most of a package the BMC reads (its header is all that matters).
const PACKAGE_LIMIT: u64 = 64 << 10;

/// The largest multipart upload taken where the vendor states no
/// `MaxImageSizeBytes` (and the cap where it states more): the virtual
/// rack's packages are small, and the simulator holds a body in memory.
pub const PUSH_LIMIT: u64 = 16 << 20;

/// Simulated time between two progress steps of an update task.
const STEP: Duration = Duration::from_secs(5);

/// Simulated time the BMC is away when it reboots mid-update.
const REBOOT: Duration = Duration::from_secs(30);

/// What a package header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// The component it updates: a FirmwareInventory member's Id or Name.
    pub component: String,
    /// The version it installs.
    pub version: String,
}

/// Reads a package header; `Err` says why the BMC rejects the image.
pub fn parse_package(text: &str) -> Result<Package, String> {
    let line = text.lines().next().unwrap_or_default();
    let mut words = line.split_whitespace();
    if words.next() != Some(PACKAGE_MAGIC) {
        return Err("the image is not a firmware package for this BMC".into());
    }
    let (mut component, mut version) = (None, None);
    for word in words {
        match word.split_once('=') {
            Some(("component", v)) if !v.is_empty() => component = Some(v.to_owned()),
            Some(("version", v)) if !v.is_empty() => version = Some(v.to_owned()),
            _ => {}
        }
    }
    match (component, version) {
        (Some(component), Some(version)) => Ok(Package { component, version }),
        _ => Err("the package header names no component or no version".into()),
    }
}

/// When a staged update takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyTime {
    /// When the update task completes.
    Immediate,
    /// At the next reset of the system.
    OnReset,
}

/// One BMC's firmware: versions changed by applied updates (the flavour's
/// tree holds the rest) and updates waiting for a reset.
#[derive(Clone, Debug, Default)]
pub struct FirmwareState {
    /// Version by FirmwareInventory member path, for updated components.
    pub versions: BTreeMap<String, String>,
    /// (member path, version) waiting for the next system reset.
    pub staged: Vec<(String, String)>,
}

impl FirmwareState {
    /// Applies what waits for a reset: called when the system resets.
    pub fn apply_staged(&mut self) {
        for (path, version) in self.staged.drain(..) {
            self.versions.insert(path, version);
        }
    }
}

/// The FirmwareInventory member `component` names (by `Id` or `Name`,
/// case-insensitively), among `members`.
fn member_for<'a>(
    docs: &BTreeMap<String, Value>,
    members: &'a [String],
    component: &str,
) -> Option<&'a String> {
    members.iter().find(|m| {
        let doc = docs.get(m.trim_end_matches('/'));
        let id = doc.and_then(|d| d["Id"].as_str());
        let name = doc.and_then(|d| d["Name"].as_str());
        [id, name]
            .into_iter()
            .flatten()
            .any(|s| s.eq_ignore_ascii_case(component))
    })
}

/// `@Redfish.OperationApplyTime` of an update request; 400 for one the
/// BMC does not support.
fn apply_time(params: &Value) -> Result<ApplyTime, Box<Reply>> {
    Ok(match params["@Redfish.OperationApplyTime"].as_str() {
        None | Some("Immediate") => ApplyTime::Immediate,
        Some("OnReset") => ApplyTime::OnReset,
        Some(other) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "ActionParameterValueNotInList",
                &format!("@Redfish.OperationApplyTime {other} is not supported"),
            )));
        }
    })
}

impl Bmc {
    /// `POST …/Actions/UpdateService.SimpleUpdate`.
    pub(super) async fn simple_update(self: &Arc<Self>, body: &Value) -> Reply {
        let Some(uri) = body["ImageURI"].as_str().map(str::to_owned) else {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterMissing",
                "ImageURI is required",
            );
        };
        let apply = match apply_time(body) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        let text = match crate::sim::fetch::text(&uri, PACKAGE_LIMIT).await {
            Ok(t) => t,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ActionParameterValueFormatError",
                    &format!("unable to download the image: {e}"),
                );
            }
        };
        self.start_update(&text, body["Targets"].get(0).and_then(Value::as_str), apply)
    }

    /// `POST` to `MultipartHttpPushUri`: an `UpdateParameters` JSON part
    /// and an `UpdateFile` part holding the package, bounded by
    /// `MaxImageSizeBytes` (or [`PUSH_LIMIT`]).
    pub(super) async fn multipart_push<B: super::ReqBody>(
        self: &Arc<Self>,
        req: hyper::Request<B>,
    ) -> Reply {
        use http_body_util::BodyExt as _;
        let bad = |why: &str| {
            error(
                StatusCode::BAD_REQUEST,
                "ActionParameterValueFormatError",
                &format!("malformed multipart upload: {why}"),
            )
        };
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let boundary = match multipart::boundary(&content_type) {
            Ok(b) => b,
            Err(why) => return bad(&why),
        };
        let limit = self
            .flavour
            .max_image_size
            .unwrap_or(PUSH_LIMIT)
            .min(PUSH_LIMIT);
        // The form's own framing adds a little to the image.
        let limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_add(64 << 10);
        let body = match http_body_util::Limited::new(req.into_body(), limit)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLarge",
                    "the image is larger than MaxImageSizeBytes",
                );
            }
        };
        let parts = match multipart::parts(&body, &boundary) {
            Ok(p) => p,
            Err(why) => return bad(&why),
        };
        let params = match parts.iter().find(|p| p.name == "UpdateParameters") {
            None => json!({}),
            Some(p) => match serde_json::from_slice::<Value>(p.data) {
                Ok(v) if v.is_object() => v,
                _ => return bad("UpdateParameters is not a JSON object"),
            },
        };
        let Some(file) = parts.iter().find(|p| p.name == "UpdateFile") else {
            return bad("no UpdateFile part");
        };
        let apply = match apply_time(&params) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        let head = &file.data[..file.data.len().min(PACKAGE_LIMIT as usize)];
        let text = String::from_utf8_lossy(head);
        self.start_update(
            &text,
            params["Targets"].get(0).and_then(Value::as_str),
            apply,
        )
    }

    /// Checks a package (and the `rejected` fault), finds its component,
    /// and starts the update task: 202 with its monitor, or 400 with why.
    fn start_update(self: &Arc<Self>, text: &str, target: Option<&str>, apply: ApplyTime) -> Reply {
        let fault = self.node.faults.bmc.update;
        let package = match parse_package(text) {
            Ok(_) if fault == UpdateFault::Rejected => {
                Err("the image failed signature verification".to_owned())
            }
            other => other,
        };
        let package = match package {
            Ok(p) => p,
            Err(why) => return error(StatusCode::BAD_REQUEST, "ActionParameterValueError", &why),
        };
        let inventory = "/redfish/v1/UpdateService/FirmwareInventory";
        let members = self
            .render(inventory)
            .map(|d| super::render::member_ids(&d))
            .unwrap_or_default();
        let target = match target {
            Some(t) => members
                .iter()
                .find(|m| m.trim_end_matches('/') == t.trim_end_matches('/')),
            None => member_for(&self.flavour.docs, &members, &package.component),
        };
        let Some(target) = target.map(|t| t.trim_end_matches('/').to_owned()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "ActionParameterValueError",
                &format!("no firmware component {} to update", package.component),
            );
        };
        let id = self.new_task(format!("Update {target} to {}", package.version), 0);
        let bmc = Arc::clone(self);
        let task = id.clone();
        tokio::spawn(async move {
            bmc.run_update(&task, &target, &package.version, apply, fault)
                .await;
        });
        self.accepted(&id)
    }

    /// 202 with task `id`'s document and its monitor in `Location`.
    pub(super) fn accepted(&self, id: &str) -> Reply {
        let path = format!("/redfish/v1/TaskService/Tasks/{id}");
        let doc = self.render(&path).unwrap_or(Value::Null);
        let mut r = json_reply(StatusCode::ACCEPTED, &doc);
        if let Ok(v) = HeaderValue::from_str(&format!("{path}/Monitor")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }

    /// A new running task `percent` along, its id returned.
    pub(super) fn new_task(&self, name: String, percent: u8) -> String {
        let mut st = self.bmc_state();
        st.next_id += 1;
        let id = st.next_id.to_string();
        st.tasks.push(Task {
            id: id.clone(),
            name,
            state: TaskState::Running,
            percent,
        });
        if st.tasks.len() > 32 {
            st.tasks.remove(0);
        }
        id
    }

    fn set_task(&self, id: &str, state: TaskState, percent: u8) {
        if let Some(t) = self.bmc_state().tasks.iter_mut().find(|t| t.id == id) {
            t.state = state;
            t.percent = percent;
        }
    }

    /// Moves an update task on step by step, then applies or stages it.
    async fn run_update(
        &self,
        id: &str,
        target: &str,
        version: &str,
        apply: ApplyTime,
        fault: UpdateFault,
    ) {
        for percent in [25, 50, 75] {
            self.clock.sleep(STEP).await;
            self.set_task(id, TaskState::Running, percent);
            if percent == 50 {
                match fault {
                    UpdateFault::Exception => {
                        let why = format!("flashing {target} failed: the component did not verify");
                        self.set_task(id, TaskState::Failed(why), 50);
                        return;
                    }
                    UpdateFault::Reboot => {
                        self.bmc_state().unavailable_until =
                            Some(Instant::now() + self.clock.real(REBOOT));
                    }
                    _ => {}
                }
            }
        }
        self.clock.sleep(STEP).await;
        {
            let mut st = self.bmc_state();
            if fault != UpdateFault::Unchanged {
                let entry = (target.to_owned(), version.to_owned());
                match apply {
                    ApplyTime::Immediate => {
                        st.firmware.versions.insert(entry.0, entry.1);
                    }
                    ApplyTime::OnReset => st.firmware.staged.push(entry),
                }
            }
        }
        self.set_task(id, TaskState::Completed, 100);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_header_names_component_and_version() {
        let p = parse_package("kiln-sim-firmware component=BMC version=1.2.3\npayload").unwrap();
        assert_eq!(p.component, "BMC");
        assert_eq!(p.version, "1.2.3");
        assert!(parse_package("MZ\u{90}binary").is_err());
        assert!(parse_package("kiln-sim-firmware component=BMC").is_err());
    }

    #[test]
    fn staged_versions_apply_at_reset_only() {
        let mut fw = FirmwareState::default();
        fw.staged.push(("/x/BIOS".into(), "2.0".into()));
        assert!(fw.versions.is_empty());
        fw.apply_staged();
        assert_eq!(fw.versions["/x/BIOS"], "2.0");
        assert!(fw.staged.is_empty());
    }

    #[test]
    fn every_flavour_advertises_simple_update() {
        for v in super::super::flavour::Vendor::ALL {
            let f = super::super::flavour::flavour(v);
            assert!(f.simple_update.is_some(), "{v:?}");
        }
    }
}
