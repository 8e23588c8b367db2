//! Power, boot override and virtual media, each verified by reading the
//! state back rather than trusting a 2xx: BMCs accept requests they then
//! drop, apply power changes seconds later, and report media in their own
//! ways. Vendor differences come from [`Layout`] and its quirks only.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::bmc::client::{BmcClient, BmcError};
use crate::bmc::discover::{
    InsertMethod, Layout, MediaSlot, MediaState, for_each_member, insert_params, read_slots,
    slot_of,
};
use crate::bmc::vendor::Quirks;

/// How long operations wait for a BMC to show their effect.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// For a power state to be reached.
    pub power: Duration,
    /// For media to show as inserted or ejected, and for tasks.
    pub media: Duration,
    /// Between reads while waiting.
    pub poll: Duration,
    /// Off time in an off-then-on cycle.
    pub off_dwell: Duration,
}

impl Default for Waits {
    fn default() -> Waits {
        Waits {
            power: Duration::from_secs(120),
            media: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            off_dwell: Duration::from_secs(5),
        }
    }
}

/// A power request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PowerOp {
    /// Power on (nothing to do when on).
    On,
    /// Force off.
    Off,
    /// Off, then on.
    Cycle,
    /// Restart (ForceRestart, or off-then-on where that hangs or is not
    /// offered); powers on a node that is off.
    Reset,
}

/// What a power request did.
#[derive(Clone, Debug, Serialize)]
pub struct PowerOutcome {
    /// `PowerState` before.
    pub before: String,
    /// `PowerState` after, as read back.
    pub after: String,
    /// The `ResetType`s sent, in order.
    pub sent: Vec<String>,
}

/// Reads the host's `PowerState`. A BMC may fail the read for a moment
/// while the host changes power state (sushy-tools' libvirt driver has
/// answered 500 "domain is not running" just after a power-off): a 5xx is
/// asked again, up to [`POWER_READ_RETRIES`] times a second apart, and
/// the BMC's own message is kept if it persists.
pub async fn power_state(client: &BmcClient, layout: &Layout) -> Result<String, BmcError> {
    let mut retries = 0;
    loop {
        match client.get(&layout.system).await {
            Ok(sys) => return Ok(sys["PowerState"].as_str().unwrap_or("Unknown").to_owned()),
            Err(e)
                if retries < POWER_READ_RETRIES
                    && e.status().is_some_and(|s| (500..600).contains(&s)) =>
            {
                retries += 1;
                tracing::warn!(node = %client.node, "reading the power state failed ({e}); asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How often a power-state read that failed with a 5xx is asked again.
const POWER_READ_RETRIES: u32 = 3;

/// The first of `choices` the BMC allows (any, if it does not say).
fn pick<'a>(client: &BmcClient, layout: &Layout, choices: &[&'a str]) -> Result<&'a str, BmcError> {
    if layout.reset_types.is_empty() {
        return Ok(choices[0]);
    }
    choices
        .iter()
        .find(|c| layout.reset_types.iter().any(|t| t == *c))
        .copied()
        .ok_or_else(|| BmcError::Protocol {
            node: client.node.clone(),
            path: layout.reset_target.clone(),
            reason: format!(
                "needs ResetType {}, but the BMC allows only {}",
                choices.join(" or "),
                layout.reset_types.join(", ")
            ),
        })
}

async fn reset(
    client: &BmcClient,
    layout: &Layout,
    kind: &str,
    sent: &mut Vec<String>,
) -> Result<(), BmcError> {
    let body = json!({"ResetType": kind});
    let limit = Duration::from_secs(120);
    match client.action(&layout.reset_target, &body, limit).await {
        Ok(()) => {}
        Err(e) if e.maybe_acted() => {
            // The reset may have been carried out: look before asking
            // again. A restart cannot be told from the state, so it is
            // never repeated; the step fails and says why.
            sent.push(kind.to_owned());
            let settled = match kind {
                "On" | "ForceOn" => "On",
                "ForceOff" | "GracefulShutdown" => "Off",
                _ => return Err(e),
            };
            let now = power_state(client, layout).await?;
            tracing::warn!(node = %client.node, reset = kind, power = %now, "no answer to the reset ({e}); power read back");
            if now != settled {
                // Still as before: sending the same reset to a node
                // already on its way there does no harm.
                client.action(&layout.reset_target, &body, limit).await?;
            }
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    sent.push(kind.to_owned());
    Ok(())
}

/// Polls until `PowerState` is `want`; an error names what was last seen.
async fn wait_power(
    client: &BmcClient,
    layout: &Layout,
    want: &str,
    waits: &Waits,
) -> Result<String, BmcError> {
    let start = Instant::now();
    loop {
        let now = power_state(client, layout).await?;
        if now == want {
            return Ok(now);
        }
        if start.elapsed() >= waits.power {
            return Err(BmcError::Protocol {
                node: client.node.clone(),
                path: layout.system.clone(),
                reason: format!(
                    "asked for power {want}; the BMC still reports {now} after {} s",
                    waits.power.as_secs()
                ),
            });
        }
        tokio::time::sleep(waits.poll).await;
    }
}

async fn off_then_on(
    client: &BmcClient,
    layout: &Layout,
    waits: &Waits,
    sent: &mut Vec<String>,
) -> Result<String, BmcError> {
    reset(client, layout, pick(client, layout, &["ForceOff"])?, sent).await?;
    wait_power(client, layout, "Off", waits).await?;
    tokio::time::sleep(waits.off_dwell).await;
    reset(
        client,
        layout,
        pick(client, layout, &["On", "ForceOn"])?,
        sent,
    )
    .await?;
    wait_power(client, layout, "On", waits).await
}

/// Carries out a power request and reads the result back.
pub async fn power(
    client: &BmcClient,
    layout: &Layout,
    op: PowerOp,
    waits: &Waits,
) -> Result<PowerOutcome, BmcError> {
    let before = power_state(client, layout).await?;
    power_from(client, layout, op, waits, before).await
}

/// [`power`] for a caller that has just read the `PowerState` (`before`).
pub async fn power_from(
    client: &BmcClient,
    layout: &Layout,
    op: PowerOp,
    waits: &Waits,
    before: String,
) -> Result<PowerOutcome, BmcError> {
    let mut sent = Vec::new();
    let is_off = before == "Off";
    let after = match op {
        PowerOp::On | PowerOp::Cycle | PowerOp::Reset if is_off => {
            reset(
                client,
                layout,
                pick(client, layout, &["On", "ForceOn"])?,
                &mut sent,
            )
            .await?;
            wait_power(client, layout, "On", waits).await?
        }
        PowerOp::On => before.clone(),
        PowerOp::Off if is_off => before.clone(),
        PowerOp::Off => {
            reset(
                client,
                layout,
                pick(client, layout, &["ForceOff"])?,
                &mut sent,
            )
            .await?;
            wait_power(client, layout, "Off", waits).await?
        }
        PowerOp::Cycle => off_then_on(client, layout, waits, &mut sent).await?,
        PowerOp::Reset => {
            let restart_offered = layout.reset_types.is_empty()
                || layout.reset_types.iter().any(|t| t == "ForceRestart");
            if layout.quirks().force_restart_hangs || !restart_offered {
                off_then_on(client, layout, waits, &mut sent).await?
            } else {
                reset(client, layout, "ForceRestart", &mut sent).await?;
                wait_power(client, layout, "On", waits).await?
            }
        }
    };
    Ok(PowerOutcome {
        before,
        after,
        sent,
    })
}

/// A boot device, as a technician names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    /// The (virtual) CD.
    Cd,
    /// PXE.
    Pxe,
    /// UEFI HTTP boot.
    Http,
    /// The local disk.
    Disk,
    /// BIOS/UEFI setup.
    Bios,
}

impl BootDevice {
    /// Redfish's `BootSourceOverrideTarget` for it.
    pub fn redfish(self) -> &'static str {
        match self {
            BootDevice::Cd => "Cd",
            BootDevice::Pxe => "Pxe",
            BootDevice::Http => "UefiHttp",
            BootDevice::Disk => "Hdd",
            BootDevice::Bios => "BiosSetup",
        }
    }
}

/// What a boot override request did.
#[derive(Clone, Debug, Serialize)]
pub struct BootOutcome {
    /// `BootSourceOverrideTarget` read back (or `Cd` for an HPE slot flag).
    pub target: String,
    /// `BootSourceOverrideEnabled` read back.
    pub enabled: String,
    /// How it was requested: `boot-override`, or `hpe-boot-on-next-reset`.
    pub via: &'static str,
    /// Anything read back that differs from the request but is harmless.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `PowerState` in the system document read back, when it was read.
    #[serde(skip)]
    pub power: Option<String>,
}

fn protocol(client: &BmcClient, path: &str, reason: String) -> BmcError {
    BmcError::Protocol {
        node: client.node.clone(),
        path: path.to_owned(),
        reason,
    }
}

/// The ETag of a resource, from the header or `@odata.etag`.
async fn etag_of(client: &BmcClient, path: &str) -> Result<Option<String>, BmcError> {
    let doc = client.get_doc(path).await?;
    Ok(doc
        .etag
        .or_else(|| doc.body["@odata.etag"].as_str().map(str::to_owned)))
}

/// PATCHes with `If-Match` where the BMC needs it; a 428/412 from a BMC
/// not known to need it is answered once with a fresh ETag.
async fn patch(
    client: &BmcClient,
    layout: &Layout,
    path: &str,
    body: &Value,
) -> Result<(), BmcError> {
    // With no tag known, `If-Match: *` (RFC 9110: any current
    // representation) saves reading the resource first; a BMC that wants
    // its real tag answers 412 or 428 and gets it below, one request
    // more than reading first.
    let etag = if layout.quirks().needs_if_match {
        Some(client.known_etag(path).unwrap_or_else(|| "*".to_owned()))
    } else {
        None
    };
    match client.patch(path, body, etag.as_deref()).await {
        Err(e) if matches!(e.status(), Some(412 | 428)) => {
            let etag = etag_of(client, path).await?;
            client.patch(path, body, etag.as_deref()).await.map(drop)
        }
        other => other.map(drop),
    }
}

/// Sets the boot override: once (next boot only) or persistent, with a
/// UEFI HTTP boot URI where the BMC takes one.
pub async fn set_boot(
    client: &BmcClient,
    layout: &Layout,
    device: BootDevice,
    persistent: bool,
    uri: Option<&str>,
) -> Result<BootOutcome, BmcError> {
    let target = device.redfish();
    let enabled = if persistent { "Continuous" } else { "Once" };
    for (allowed, value, what) in [
        (&layout.boot_targets, target, "boot target"),
        (&layout.boot_enabled, enabled, "boot override"),
    ] {
        // An empty list means the BMC does not say; try it.
        if !allowed.is_empty() && !allowed.iter().any(|t| t == value) {
            return Err(protocol(
                client,
                &layout.system,
                format!(
                    "{what} {value} is not offered; the BMC allows {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    if uri.is_some() && device != BootDevice::Http {
        return Err(protocol(
            client,
            &layout.system,
            "a boot URI only applies to `http`".into(),
        ));
    }
    if uri.is_some() && !layout.http_boot_uri {
        return Err(protocol(
            client,
            &layout.system,
            "this BMC has no Boot.HttpBootUri; give the URI through DHCP instead".into(),
        ));
    }

    // iLO boots its virtual CD once through a flag on the slot.
    if device == BootDevice::Cd && !persistent && layout.quirks().boot_on_next_reset {
        let slot = cd_slot(client, layout)?;
        let no_media = || {
            protocol(
                client,
                &slot.path,
                "no media in the virtual CD; insert an image first (`kiln bmc media insert URL`)"
                    .into(),
            )
        };
        // The flag is set, then the slot read back once: the read says
        // both whether the flag held and whether media is in.
        let body = json!({"Oem": {"Hpe": {"BootOnNextServerReset": true}}});
        if let Err(e) = patch(client, layout, &slot.path, &body).await {
            let doc = client.get(&slot.path).await?;
            return Err(if MediaState::of(&doc).inserted {
                e
            } else {
                no_media()
            });
        }
        let doc = client.get(&slot.path).await?;
        if !MediaState::of(&doc).inserted {
            return Err(no_media());
        }
        if doc.pointer("/Oem/Hpe/BootOnNextServerReset") != Some(&Value::Bool(true)) {
            return Err(protocol(
                client,
                &slot.path,
                "BootOnNextServerReset did not read back as set".into(),
            ));
        }
        return Ok(BootOutcome {
            target: "Cd".into(),
            enabled: "Once".into(),
            via: "hpe-boot-on-next-reset",
            notes: Vec::new(),
            power: None,
        });
    }

    let mut boot = json!({
        "BootSourceOverrideTarget": target,
        "BootSourceOverrideEnabled": enabled,
    });
    if layout.boot_mode {
        boot["BootSourceOverrideMode"] = json!("UEFI");
    }
    if let Some(uri) = uri {
        boot["HttpBootUri"] = json!(uri);
    }
    patch(client, layout, &layout.system, &json!({"Boot": boot})).await?;

    let sys = client.get(&layout.system).await?;
    let got_target = sys["Boot"]["BootSourceOverrideTarget"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let got_enabled = sys["Boot"]["BootSourceOverrideEnabled"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if got_target != target {
        return Err(protocol(
            client,
            &layout.system,
            format!("asked to boot from {target}; the BMC reads back {got_target:?}"),
        ));
    }
    let mut notes = Vec::new();
    if got_enabled != enabled {
        // Some BMCs (and sushy-tools) always report Continuous.
        notes.push(format!(
            "asked for {enabled}; the BMC reports {got_enabled}"
        ));
    }
    Ok(BootOutcome {
        target: got_target,
        enabled: got_enabled,
        via: "boot-override",
        notes,
        power: sys["PowerState"].as_str().map(str::to_owned),
    })
}

/// The layout's CD slot, or an error saying the BMC offers none.
fn cd_slot<'a>(client: &BmcClient, layout: &'a Layout) -> Result<&'a MediaSlot, BmcError> {
    layout.cd_slot().ok_or_else(|| {
        protocol(
            client,
            &layout.manager,
            "the BMC offers no CD/DVD virtual-media slot".into(),
        )
    })
}

/// Turns on virtual media where an OEM switch hides the slots (AMI
/// MegaRAC's RMedia), then waits for a CD slot to appear.
async fn enable_media(
    client: &BmcClient,
    layout: &Layout,
    waits: &Waits,
) -> Result<Option<Layout>, BmcError> {
    let (None, Some(target)) = (layout.cd_slot(), &layout.media_enable) else {
        return Ok(None);
    };
    client
        .action(target, &json!({"RMediaState": "Enable"}), waits.media)
        .await?;
    let start = Instant::now();
    loop {
        let media = read_slots(client, layout, &layout.media_collections).await?;
        if media.iter().any(MediaSlot::takes_cd) {
            let mut enabled = layout.clone();
            enabled.media = media;
            enabled.media_enable = None;
            return Ok(Some(enabled));
        }
        if start.elapsed() >= waits.media {
            return Err(protocol(
                client,
                target,
                format!(
                    "virtual media enabled, but no CD slot appeared within {} s",
                    waits.media.as_secs()
                ),
            ));
        }
        tokio::time::sleep(waits.poll).await;
    }
}

/// Re-reads every slot: one request per collection where the BMC
/// expands them, one per slot otherwise.
pub async fn media_status(client: &BmcClient, layout: &Layout) -> Result<Vec<MediaSlot>, BmcError> {
    let mut out = layout.media.clone();
    if let Some(expand) = layout.expand.as_deref() {
        let mut states = std::collections::HashMap::new();
        for collection in &layout.media_collections {
            for_each_member(client, Some(expand), collection, |path, doc| {
                states.insert(path.to_owned(), MediaState::of(doc));
            })
            .await?;
        }
        for slot in &mut out {
            match states.remove(&slot.path) {
                Some(state) => slot.state = state,
                None => slot.state = MediaState::of(&client.get(&slot.path).await?),
            }
        }
        return Ok(out);
    }
    for slot in &mut out {
        slot.state = MediaState::of(&client.get(&slot.path).await?);
    }
    Ok(out)
}

/// What a media request did.
#[derive(Clone, Debug, Serialize)]
pub struct MediaOutcome {
    /// The slot.
    pub slot: String,
    /// `insert-action` or `patch`.
    pub via: &'static str,
    /// The slot's state read back.
    pub state: MediaState,
    /// It was already so; nothing was sent.
    pub unchanged: bool,
}

fn transfer_protocol(url: &str) -> Option<&'static str> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    Some(match scheme.as_str() {
        "http" => "HTTP",
        "https" => "HTTPS",
        "nfs" => "NFS",
        "smb" | "cifs" => "CIFS",
        _ => return None,
    })
}

/// Whether the slot's `Image` names `url` (some BMCs keep only the file
/// name).
fn same_image(image: Option<&str>, url: &str) -> bool {
    match image {
        Some(i) => i == url || url.rsplit('/').next() == Some(i),
        None => false,
    }
}

/// Inserts the image at `url` into the CD slot (ejecting anything else
/// first) and waits until the BMC reports it inserted. `states_current`:
/// the layout's slot states were read moments ago with nothing done to
/// the slots since, so the CD slot is not read again.
pub async fn insert_media(
    client: &BmcClient,
    layout: &Layout,
    url: &str,
    waits: &Waits,
    states_current: bool,
) -> Result<MediaOutcome, BmcError> {
    let enabled = enable_media(client, layout, waits).await?;
    let layout = enabled.as_ref().unwrap_or(layout);
    let slot = match (states_current && enabled.is_none(), layout.cd_slot()) {
        (true, Some(slot)) => slot.clone(),
        _ => {
            let slot = cd_slot(client, layout)?;
            let doc = client.get(&slot.path).await?;
            slot_of(&slot.path, &doc, None)
        }
    };
    if slot.state.inserted {
        if same_image(slot.state.image.as_deref(), url) {
            return Ok(MediaOutcome {
                slot: slot.path.clone(),
                via: "none",
                state: slot.state,
                unchanged: true,
            });
        }
        eject_slot(client, layout, &slot, waits).await?;
    }
    let quirks = layout.quirks();
    let via = match &slot.insert {
        InsertMethod::Action { target } => {
            let body = insert_body(url, &quirks, slot.insert_params.as_deref());
            match client.action(target, &body, waits.media).await {
                // The ActionInfo the slot links says which parameters it
                // takes; it is read only when the BMC refuses one, which
                // saves a request on every BMC that takes them all.
                Err(e) if e.status() == Some(400) && slot.insert_params.is_none() => {
                    let params = insert_params(client, slot.clone()).await?.insert_params;
                    let narrowed = insert_body(url, &quirks, params.as_deref());
                    if narrowed == body {
                        return Err(e);
                    }
                    client.action(target, &narrowed, waits.media).await?;
                }
                other => other?,
            }
            "insert-action"
        }
        InsertMethod::Patch => {
            let body = json!({"Image": url, "Inserted": true, "WriteProtected": true});
            patch(client, layout, &slot.path, &body).await?;
            "patch"
        }
    };
    let state = wait_media(
        client,
        &slot.path,
        waits,
        |s| s.inserted && same_image(s.image.as_deref(), url),
        &format!("inserted {url}, but"),
    )
    .await?;
    Ok(MediaOutcome {
        slot: slot.path,
        via,
        state,
        unchanged: false,
    })
}

/// The InsertMedia body for `url`: the optional parameters kiln sends,
/// less those the vendor's quirks leave out and, once known, those the
/// slot's ActionInfo does not declare.
fn insert_body(url: &str, quirks: &Quirks, declared: Option<&[String]>) -> Value {
    let mut body = json!({"Image": url, "Inserted": true, "WriteProtected": true});
    if let Some(proto) = transfer_protocol(url) {
        body["TransferProtocolType"] = json!(proto);
    }
    if let Some(obj) = body.as_object_mut() {
        obj.retain(|k, _| {
            k == "Image"
                || (!quirks.omit_insert_params.contains(&k.as_str())
                    && declared.is_none_or(|ps| ps.iter().any(|p| p == k)))
        });
    }
    body
}

fn describe(s: &MediaState) -> String {
    match (&s.image, s.inserted) {
        (Some(i), true) => format!("{i} inserted"),
        (Some(i), false) => format!("{i}, not inserted"),
        (None, _) => "no image".into(),
    }
}

/// Polls a slot until `done`; on timeout, an error saying `what` and the
/// last state seen.
async fn wait_media(
    client: &BmcClient,
    path: &str,
    waits: &Waits,
    done: impl Fn(&MediaState) -> bool,
    what: &str,
) -> Result<MediaState, BmcError> {
    let start = Instant::now();
    let mut last = MediaState::default();
    loop {
        if let Ok(doc) = client.get(path).await {
            last = MediaState::of(&doc);
            if done(&last) {
                return Ok(last);
            }
        }
        if start.elapsed() >= waits.media {
            return Err(protocol(
                client,
                path,
                format!(
                    "{what} after {} s the slot reports {}",
                    waits.media.as_secs(),
                    describe(&last)
                ),
            ));
        }
        tokio::time::sleep(waits.poll.min(Duration::from_millis(500))).await;
    }
}

async fn eject_slot(
    client: &BmcClient,
    layout: &Layout,
    slot: &MediaSlot,
    waits: &Waits,
) -> Result<MediaState, BmcError> {
    match &slot.eject_target {
        Some(target) => client.action(target, &json!({}), waits.media).await?,
        None => {
            let body = json!({"Image": null, "Inserted": false});
            patch(client, layout, &slot.path, &body).await?;
        }
    }
    // Confirmed by `Inserted: false`, or `ConnectedVia: NotConnected` on
    // BMCs that leave the image name behind.
    wait_media(
        client,
        &slot.path,
        waits,
        |s| !s.inserted || s.connected_via.as_deref() == Some("NotConnected"),
        "ejected, but",
    )
    .await
}

/// Ejects the CD slot an image was inserted into, without reading the
/// slots first; a slot that turns out to be empty (the eject refused,
/// `Inserted: false` on reading it back) is `None`.
pub async fn eject_cd(
    client: &BmcClient,
    layout: &Layout,
    waits: &Waits,
) -> Result<Option<MediaOutcome>, BmcError> {
    let Some(slot) = layout.cd_slot() else {
        return Ok(None);
    };
    let state = match eject_slot(client, layout, slot, waits).await {
        Ok(state) => state,
        Err(e) => {
            if MediaState::of(&client.get(&slot.path).await?).inserted {
                return Err(e);
            }
            tracing::debug!(node = %client.node, slot = %slot.path, "eject refused on an empty slot ({e})");
            return Ok(None);
        }
    };
    Ok(Some(MediaOutcome {
        via: if slot.eject_target.is_some() {
            "eject-action"
        } else {
            "patch"
        },
        slot: slot.path.clone(),
        state,
        unchanged: false,
    }))
}

/// Ejects every slot that holds media; returns one outcome per slot.
pub async fn eject_media(
    client: &BmcClient,
    layout: &Layout,
    waits: &Waits,
) -> Result<Vec<MediaOutcome>, BmcError> {
    let mut out = Vec::new();
    for slot in media_status(client, layout).await? {
        if !slot.state.inserted {
            continue;
        }
        let state = eject_slot(client, layout, &slot, waits).await?;
        out.push(MediaOutcome {
            via: if slot.eject_target.is_some() {
                "eject-action"
            } else {
                "patch"
            },
            slot: slot.path,
            state,
            unchanged: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_match_by_url_or_file_name() {
        assert!(same_image(Some("http://a/b.iso"), "http://a/b.iso"));
        assert!(same_image(Some("b.iso"), "http://a/b.iso"));
        assert!(!same_image(Some("c.iso"), "http://a/b.iso"));
        assert!(!same_image(None, "http://a/b.iso"));
    }

    #[test]
    fn transfer_protocol_follows_the_scheme() {
        assert_eq!(transfer_protocol("https://x/y.iso"), Some("HTTPS"));
        assert_eq!(transfer_protocol("nfs://x/y.iso"), Some("NFS"));
        assert_eq!(transfer_protocol("y.iso"), None);
    }

    #[test]
    fn the_insert_body_narrows_to_what_the_action_info_declares() {
        let quirks = Quirks {
            omit_insert_params: &["WriteProtected"],
            media_by_patch: false,
            needs_if_match: false,
            force_restart_hangs: false,
            boot_on_next_reset: false,
            extra_systems: false,
            lists_gpus: true,
            expand_broken: false,
        };
        let url = "http://10.0.0.1/i.iso";
        // Before the ActionInfo is read: all but what the quirks leave out.
        assert_eq!(
            insert_body(url, &quirks, None),
            json!({"Image": url, "Inserted": true, "TransferProtocolType": "HTTP"})
        );
        // After: only what it declares; Image is always sent.
        let declared = ["Inserted".to_owned()];
        assert_eq!(
            insert_body(url, &quirks, Some(&declared)),
            json!({"Image": url, "Inserted": true})
        );
        assert_eq!(insert_body(url, &quirks, Some(&[])), json!({"Image": url}));
    }
}
