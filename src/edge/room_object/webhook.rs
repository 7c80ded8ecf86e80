//! Chat webhook delivery: the engine queues each accepted chat message in its outbox (through
//! the `Store` port) and decides retries and giving up (`protocol::webhook::settle`); this
//! only sends the signed calls the engine hands it, a batch in parallel, from the alarm.

use worker::{Fetch, Headers, Method, Request, RequestInit, Result};

use serde_json::json;

use super::RoomObject;
use crate::edge::log;
use crate::edge::runtime::{self, config};
use crate::protocol::channel::Channel;
use crate::protocol::config::Level;
use crate::protocol::signature;
use crate::protocol::webhook::{self, Queued, Settled};

impl RoomObject {
    /// Sends `due` calls in parallel and tells the engine how each went.
    pub(super) async fn deliver_webhooks(&self, channel: &Channel, due: Vec<Queued>, now_ms: i64) {
        let config = config(&self.env);
        let Some((url, secret)) = &config.webhook else { return };
        let calls = due.iter().map(|queued| post_webhook(url, secret, &queued.body));
        for (queued, outcome) in due.iter().zip(futures::future::join_all(calls).await) {
            // 0: unreachable (no answer at all).
            let status = outcome.unwrap_or(0);
            let delivered = (200..300).contains(&status);
            let (outcome, level) = match self.with_room(channel, |room| room.webhook_attempted(queued, delivered, now_ms)) {
                Ok(Settled::Delivered) => ("delivered", Level::Info),
                Ok(Settled::RetryAt(_)) => ("retry", Level::Warn),
                Ok(Settled::GaveUp) => ("gave_up", Level::Error),
                Err(e) => {
                    log::internal(&self.env, Some(channel), "webhook outbox", e);
                    ("retry", Level::Warn)
                }
            };
            // The message's id and channel, never its text: a lost message can be traced.
            let attempt = queued.attempts + 1;
            let fields = json!({"id": queued.id, "status": status, "attempt": attempt, "outcome": outcome});
            log::line(&self.env, level, "webhook", log::with(channel, fields));
            log::point(
                &self.env,
                channel.key(),
                &["webhook", channel.kind().as_str(), &status.to_string(), outcome],
                &[1.0, attempt as f64],
            );
        }
    }
}

/// One signed webhook call; returns the HTTP status.
async fn post_webhook(url: &str, secret: &[u8], body: &str) -> Result<u16> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    let t = runtime::now_secs();
    headers.set("X-Foyer-Signature", &signature::sign(secret, t, webhook::path_of(url), body.as_bytes()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let response = Fetch::Request(Request::new_with_init(url, &init)?).send().await?;
    Ok(response.status_code())
}
