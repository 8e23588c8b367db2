//! Remote execution: kiln's SSH client (russh) and a local transport
//! behind one [`Remote`] interface, host-key verification against OpenSSH
//! known_hosts files and kiln's own records, safe command building, and
//! file copies. `kiln exec` and `kiln copy` are thin layers over this; the
//! pipeline's stages use it directly.
//!
//! - [`quote`]: POSIX quoting, so no inventory value can add shell syntax.
//! - [`known_hosts`], [`hostkeys`]: which host keys are trusted.
//! - [`auth`]: key files, encrypted keys, the agent.
//! - [`session`]: connections, jump hosts, the per-node pool, wait-for-ssh.
//! - [`exec`]: one command: wrapping, streaming, bounded capture, timeouts.
//! - [`local`]: the same on this machine.
//! - [`copy`]: uploads and downloads streamed over exec.

pub mod auth;
pub mod copy;
pub mod exec;
pub mod hostkeys;
pub mod known_hosts;
pub mod local;
pub mod quote;
pub mod session;
pub mod site;

use std::sync::Arc;

pub use exec::{CommandFailed, ExecError, ExecOptions, Input, Output, RemoteCommand, Sink, Stream};
pub use session::{Client, ClientOptions, Pool, SshError, Target};

/// Where a node's commands run: over SSH, or here.
#[derive(Clone)]
pub enum Remote {
    /// Over SSH through a shared pool.
    Ssh {
        /// The pool.
        pool: Arc<Pool>,
        /// The node.
        target: Target,
    },
    /// On this machine, under the given node name.
    Local {
        /// The name in output.
        name: String,
    },
}

impl Remote {
    /// The node's name.
    pub fn node(&self) -> &str {
        match self {
            Remote::Ssh { target, .. } => &target.node,
            Remote::Local { name } => name,
        }
    }

    /// The node's address (`local` for the local transport).
    pub fn addr(&self) -> String {
        match self {
            Remote::Ssh { target, .. } => target.addr(),
            Remote::Local { .. } => "local".into(),
        }
    }

    /// Closes the node's SSH connection (nothing for the local transport).
    pub async fn close(&self) {
        if let Remote::Ssh { pool, target } = self {
            pool.close(&target.node).await;
        }
    }

    /// Runs `cmd`, streaming its output to `sink`.
    pub async fn run(
        &self,
        cmd: &RemoteCommand,
        input: Input,
        sink: &mut dyn Sink,
        opts: &ExecOptions,
    ) -> Result<Output, ExecError> {
        match self {
            Remote::Ssh { pool, target } => pool.run(target, cmd, input, sink, opts).await,
            Remote::Local { name } => local::run(name, cmd, input, sink, opts).await,
        }
    }
}
