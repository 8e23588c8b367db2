//! What every stage of one node works with: the node, its hardware
//! profile, its BMC client (the layout discovered once and shared by every
//! stage), the run folder for raw outputs, and the site's gates.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::bmc::client::BmcClient;
use crate::bmc::discover::{Layout, discover_bmc};
use crate::inventory::Node;
use crate::pipeline::gates::Gates;
use crate::profiles::hardware::HardwareProfile;
use crate::profiles::image::ImageProfile;
use crate::ssh::Remote;
use crate::ssh::auth::Credentials;

/// What every node of a run shares: where state lives and the loaded SSH
/// keys. Stages that need more site-wide context (the boot server, handoff
/// targets) find it here.
pub struct SiteCx {
    /// The state folder (`.kiln` beside the inventory, or `$KILN_STATE_DIR`):
    /// journal, trust stores, host keys, site keys.
    pub state: PathBuf,
    /// The inventory's folder (profiles, templates and relative paths).
    pub inventory_dir: PathBuf,
    /// SSH keys loaded once for the run.
    pub credentials: Arc<Credentials>,
    /// kiln's SSH known-hosts store (`ssh::hostkeys::store_path`).
    pub known_hosts: PathBuf,
    /// What stages prepared for the whole run (the boot server, the
    /// handoff targets), one value per type; see [`SiteCx::prepared`].
    pub prepared: Prepared,
}

impl SiteCx {
    /// The run-wide value of type `T` a stage prepared, if the run has one.
    pub fn prepared<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.prepared.get()
    }
}

/// Run-wide values that stages prepare before any node starts, kept by
/// type so that the pipeline needs to know none of the stages' types.
#[derive(Default)]
pub struct Prepared(Vec<Arc<dyn std::any::Any + Send + Sync>>);

impl Prepared {
    /// Adds `value`; a later value of the same type shadows nothing (the
    /// first one added wins), so each stage adds its own type once.
    pub fn with<T: std::any::Any + Send + Sync>(mut self, value: Option<T>) -> Prepared {
        if let Some(value) = value {
            self.0.push(Arc::new(value));
        }
        self
    }

    /// Adds a value whose type only its stage knows (see
    /// [`crate::pipeline::prepare::Prepare`]).
    pub fn add(&mut self, value: crate::pipeline::prepare::PreparedValue) {
        self.0.push(value);
    }

    /// The value of type `T`, if one was added.
    pub fn get<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0
            .iter()
            .find_map(|v| Arc::clone(v).downcast::<T>().ok())
    }
}

/// One node's working context during a run.
pub struct NodeCx {
    /// The node, as the inventory resolved it.
    pub node: Node,
    /// Its hardware profile.
    pub hardware: Arc<HardwareProfile>,
    /// Its image profile (OS family, whether the image carries the stack).
    pub image: Arc<ImageProfile>,
    /// What the run's nodes share.
    pub site: Arc<SiteCx>,
    /// Its folder for raw outputs, inside the run folder.
    pub dir: PathBuf,
    /// The run folder, that artifact paths are relative to.
    pub run_dir: PathBuf,
    /// The site's gates (power-on waves).
    pub gates: Arc<Gates>,
    /// How to run commands on the node (SSH through the run's pool).
    pub remote: Remote,
    bmc: Arc<BmcClient>,
    /// Shared with the acceptance stages' BMC reader.
    layout: Arc<OnceCell<Arc<Layout>>>,
}

impl NodeCx {
    /// A context for `node`.
    pub fn new(
        node: Node,
        profiles: (Arc<HardwareProfile>, Arc<ImageProfile>),
        site: Arc<SiteCx>,
        run_dir: PathBuf,
        gates: Arc<Gates>,
        bmc: Arc<BmcClient>,
        remote: Remote,
    ) -> NodeCx {
        let dir = run_dir.join(&node.name);
        let (hardware, image) = profiles;
        NodeCx {
            node,
            hardware,
            image,
            site,
            dir,
            run_dir,
            gates,
            remote,
            bmc,
            layout: Arc::new(OnceCell::new()),
        }
    }

    /// The BMC layout cell, shared by every view of this node (the
    /// acceptance stages' BMC reader fills or reuses it).
    pub fn layout_cell(&self) -> Arc<OnceCell<Arc<Layout>>> {
        Arc::clone(&self.layout)
    }

    /// The node's BMC client.
    pub fn bmc(&self) -> &Arc<BmcClient> {
        &self.bmc
    }

    /// The BMC's layout, its virtual-media slots unread (see
    /// [`crate::bmc::discover::read_media`]), discovered on first use (a resumed run that skips
    /// the preflight steps discovers it again when a later stage asks).
    pub async fn layout(&self) -> anyhow::Result<Arc<Layout>> {
        let layout = self
            .layout
            .get_or_try_init(|| async {
                discover_bmc(&self.bmc, self.node.bmc.system.as_deref())
                    .await
                    .map(Arc::new)
            })
            .await?;
        Ok(Arc::clone(layout))
    }

    /// Writes a raw output into the node's folder and returns its path
    /// relative to the run folder, for [`crate::pipeline::step::Outcome::with_artifact`].
    pub fn keep(&self, name: &str, contents: &[u8]) -> anyhow::Result<String> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(format!("{}/{name}", self.node.name))
    }
}
