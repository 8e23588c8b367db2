//! The one way kiln builds an SSH pool for a site: host keys verified
//! against kiln's store beside the inventory (and the user's own
//! known_hosts files), never trusted on first use unless asked.

use std::path::Path;
use std::sync::Arc;

use crate::ssh::auth::Credentials;
use crate::ssh::hostkeys::{Verifier, store_path};
use crate::ssh::{Client, ClientOptions, Pool};

/// A pool of SSH sessions for the site whose inventory is in
/// `inventory_dir`. `accept_new` records unknown host keys instead of
/// refusing them (`kiln exec --accept-new-host-keys`).
pub fn pool(
    inventory_dir: &Path,
    credentials: Arc<Credentials>,
    accept_new: bool,
    options: ClientOptions,
) -> Arc<Pool> {
    let verifier = Verifier::new(
        Verifier::default_files(),
        Some(store_path(inventory_dir)),
        accept_new,
    );
    Arc::new(Pool::new(Client::new(
        Arc::new(verifier),
        credentials,
        options,
    )))
}
