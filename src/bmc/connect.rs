//! From inventory nodes to ready BMC clients, and running one operation
//! on many BMCs at once.
//!
//! Everything that would fail for every node alike — a password variable
//! not set, BMCs never trusted — is checked before the first request, so
//! a command stops with one clear error instead of a thousand.

use std::future::Future;
use std::sync::Arc;

use crate::bmc::client::BmcClient;
use crate::bmc::transport::{Transport, TransportOptions};
use crate::bmc::trust::{TrustError, TrustStore, client_config};
use crate::exit::BadInput;
use crate::inventory::Node;

/// Builds one client per node: resolves every password and trust policy
/// first, and fails as bad input (exit 2) listing the nodes that cannot be
/// reached for a reason the operator must fix.
pub fn clients(
    nodes: &[&Node],
    store: &TrustStore,
    options: &TransportOptions,
) -> anyhow::Result<Vec<Arc<BmcClient>>> {
    let mut out = Vec::with_capacity(nodes.len());
    let mut secret_problems = Vec::new();
    let mut untrusted = Vec::new();
    let mut other = Vec::new();
    for node in nodes {
        let password = match node.bmc.password.resolve() {
            Ok(p) => Some(p),
            Err(e) => {
                secret_problems.push(format!("{}: {e}", node.name));
                None
            }
        };
        let tls = match client_config(node, store) {
            Ok(tls) => Some(tls),
            Err(TrustError::NotRecorded { .. }) => {
                untrusted.push(node.name.clone());
                None
            }
            Err(e) => {
                other.push(e.to_string());
                None
            }
        };
        if let (Some(password), Some(tls)) = (password, tls) {
            let host = node.bmc.endpoint.host.to_string();
            let transport = Transport::new(&host, node.bmc.endpoint.port, tls, options.clone());
            out.push(Arc::new(BmcClient::new(
                &node.name,
                transport,
                &node.bmc.username,
                password,
            )));
        }
    }
    let mut problems = Vec::new();
    if !secret_problems.is_empty() {
        problems.push(summarise("BMC password", &secret_problems));
    }
    if !untrusted.is_empty() {
        problems.push(format!(
            "no certificate fingerprint recorded for {} BMC(s) ({}); run `kiln bmc trust` for them, or set bmc.tls in the inventory",
            untrusted.len(),
            crate::diag::clip(&untrusted.join(", "), 200)
        ));
    }
    problems.extend(other);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(BadInput(problems.join("\n")).into())
    }
}

fn summarise(what: &str, lines: &[String]) -> String {
    let shown: Vec<&str> = lines.iter().take(5).map(String::as_str).collect();
    let more = lines.len().saturating_sub(shown.len());
    let mut text = format!(
        "{what} unavailable for {} node(s):\n  {}",
        lines.len(),
        shown.join("\n  ")
    );
    if more > 0 {
        text.push_str(&format!("\n  … and {more} more"));
    }
    text
}

/// Runs `work` on every item, at most `limit` at once, and returns the
/// results in the items' order. `done` is called as each one finishes
/// (for progress).
pub async fn each<I, T, F, Fut>(
    items: Vec<I>,
    limit: usize,
    work: F,
    mut done: impl FnMut(usize, usize),
) -> Vec<T>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let total = items.len();
    let gate = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let work = Arc::new(work);
    let mut set = tokio::task::JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let gate = Arc::clone(&gate);
        let work = Arc::clone(&work);
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, work(item).await)
        });
    }
    let mut slots: Vec<Option<T>> = (0..total).map(|_| None).collect();
    let mut finished = 0;
    while let Some(joined) = set.join_next().await {
        // A panicking task is a kiln bug; its slot stays empty and is
        // dropped below, and the panic is re-raised.
        match joined {
            Ok((i, value)) => slots[i] = Some(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
        finished += 1;
        done(finished, total);
    }
    slots.into_iter().flatten().collect()
}
