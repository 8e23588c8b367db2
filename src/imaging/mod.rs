//! Imaging: putting an operating system on a node through its BMC.
//!
//! - `iso.rs` finds a file inside an ISO 9660 image and plans the bytes
//!   that replace it while the image streams (and writes tiny images for
//!   tests and the demo);
//! - `seed.rs` renders the installer's configuration from the tera
//!   templates in `templates/` with typed contexts;
//! - `hostkeys.rs` makes and keeps each node's SSH host keys;
//! - `server.rs` is the boot server (images with Range, seeds behind
//!   per-node tokens, the install-finished call-back);
//! - `deploy.rs` is the imaging stage as named, resumable steps;
//! - `verify.rs` checks an installer image's digest.
//!
//! Seed delivery works with one virtual CD: the node's BMC mounts
//! `/node/TOKEN/installer.iso`, the vendor's image whose grub.cfg kiln
//! rewrites on the fly to carry `ds=nocloud;s=…/seed/TOKEN/` (or
//! `inst.ks=…`), so the installer reads its configuration from the boot
//! server and no second (cidata) image is needed.

pub mod deploy;
pub mod hostkeys;
pub mod iso;
pub mod seed;
pub mod server;
pub mod verify;
