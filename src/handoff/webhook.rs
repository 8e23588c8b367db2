//! The webhook target: POST the signed record as JSON, retrying what a
//! receiver may answer better later (no connection, 408, 429, 5xx), and
//! record the receiver's last answer.

use std::time::Duration;

use serde_json::json;

use super::http::{Client, HttpError, Reply};
use crate::inventory::handoff::WebhookTarget;
use crate::pipeline::step::Outcome;

/// The pause before retry `n` (1-based): 1 s, 2 s, 4 s, … up to 30 s.
fn backoff(n: u32, base: Duration) -> Duration {
    base.saturating_mul(1 << n.saturating_sub(1).min(5))
        .min(Duration::from_secs(30))
}

fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}

/// Sends `body` (a signed record) for `node`; the outcome says what the
/// receiver answered. `base` is the first retry's pause.
pub async fn deliver(
    target: &WebhookTarget,
    node: &str,
    body: &[u8],
    base: Duration,
) -> anyhow::Result<Outcome> {
    let token = match &target.token {
        Some(t) => Some(
            t.resolve()
                .map_err(|e| anyhow::anyhow!("webhook {}: token: {e}", target.url))?,
        ),
        None => None,
    };
    let client =
        Client::new(target.ca.as_deref(), target.timeout)?.insecure_http(target.insecure_http);
    let mut last: Result<Reply, HttpError> = Err(HttpError::Connect {
        url: target.url.to_string(),
        reason: "not tried".into(),
    });
    let mut tries = 0;
    for attempt in 1..=target.attempts {
        if attempt > 1 {
            tokio::time::sleep(backoff(attempt - 1, base)).await;
        }
        tries = attempt;
        last = client
            .send(
                "POST",
                &target.url,
                &[("x-kiln-node", node)],
                token.as_ref(),
                Some(("application/json", body.to_vec())),
            )
            .await;
        match &last {
            Ok(r) if r.ok() => break,
            Ok(r) if !retryable(r.status) => break,
            Ok(r) => {
                tracing::warn!(node, url = %target.url, status = r.status, attempt, "webhook answered; retrying")
            }
            Err(e) => tracing::warn!(node, url = %target.url, attempt, "webhook: {e}; retrying"),
        }
    }
    let metrics = |status: Option<u16>, answer: String| json!({"url": target.url.to_string(), "attempts": tries, "status": status, "answer": answer});
    Ok(match last {
        Ok(r) if r.ok() => Outcome::done(format!(
            "{} answered {} after {tries} attempt(s)",
            target.url, r.status
        ))
        .with_metrics(metrics(Some(r.status), r.text(2000))),
        Ok(r) => Outcome::failed(format!(
            "{tries} attempt(s) to {}, last answer {}{}",
            target.url,
            r.status,
            match r.text(200) {
                t if t.is_empty() => String::new(),
                t => format!(": {t}"),
            }
        ))
        .with_metrics(metrics(Some(r.status), r.text(2000))),
        Err(e) => Outcome::failed(format!("{tries} attempt(s), last error: {e}"))
            .with_metrics(metrics(None, e.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(1);
        assert_eq!(backoff(1, b), Duration::from_secs(1));
        assert_eq!(backoff(3, b), Duration::from_secs(4));
        assert_eq!(backoff(20, b), Duration::from_secs(30));
        assert!(retryable(503) && retryable(429) && !retryable(400) && !retryable(404));
    }
}
