//! The chat webhook: every client chat message is POSTed to the backend (which bridges chat
//! to WhatsApp), signed like `/publish` over the webhook URL's own path.
//!
//! Delivery is at-least-once from a durable outbox with exponential backoff; the body and
//! its `id` never change between attempts, so the backend dedupes by `id`.

use serde_json::{json, Value};

use super::frame::StoredEvent;

/// Calls sent in parallel per alarm; a full batch sets the next alarm at once.
pub const BATCH: u64 = 25;
/// Messages the outbox holds at most; beyond it the oldest are dropped (and logged): a
/// backend that is down for long cannot make a room's storage grow without end.
pub const OUTBOX_MAX: u64 = 10_000;

pub use super::retry::Settled;

/// A queued webhook call, as the outbox returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    pub id: String,
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was queued (ms).
    pub created: i64,
}

/// The durable queue of webhook calls: part of a room's storage port ([`super::room::Store`]).
pub trait Outbox {
    /// Queues a call due at `now`; the same id is queued once. Beyond [`OUTBOX_MAX`] the
    /// oldest are dropped: returns how many.
    fn outbox_put(&mut self, id: &str, body: &str, now: i64) -> Result<u64, String>;
    /// Calls due at `now`, oldest first, at most `limit`.
    fn outbox_due(&self, now: i64, limit: u64) -> Result<Vec<Queued>, String>;
    fn outbox_retry(&mut self, id: &str, attempts: u32, next_at: i64) -> Result<(), String>;
    fn outbox_delete(&mut self, id: &str) -> Result<(), String>;
    /// When the next call is due, if any is queued.
    fn outbox_next_due(&self) -> Result<Option<i64>, String>;
}

/// The retry rule ([`super::retry::settle`]): a 2xx answer delivers; anything else retries
/// with backoff, until the call is a day old.
pub fn settle(queued: &Queued, delivered: bool, now: i64) -> Settled {
    super::retry::settle(queued.attempts, queued.created, delivered, now)
}

/// The JSON body for one chat message: channel, seq, id, author and text (plus its time and
/// the client's own id).
pub fn body(channel: &str, event: &StoredEvent) -> String {
    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    json!({
        "id": event.id,
        "channel": channel,
        "seq": event.seq,
        "event": event.event,
        "ts": event.ts,
        "author": data["author"],
        "text": data["text"],
        "client_id": data["client_id"],
    })
    .to_string()
}

/// The path of an absolute URL (what the signature covers), `/` when it has none.
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_call_settles_by_the_shared_retry_rule() {
        let q = Queued { id: "m".into(), body: "{}".into(), attempts: 3, created: 0 };
        assert_eq!(settle(&q, true, 5), Settled::Delivered);
        assert_eq!(settle(&q, false, 5), Settled::RetryAt(5 + 8_000));
    }

    #[test]
    fn the_body_carries_channel_seq_id_author_and_text() {
        let e = StoredEvent {
            seq: 7,
            id: "u1/m1".into(),
            event: "chat.message".into(),
            data: r#"{"text":"hi","author":{"sub":"u1","name":"Ann","role":null},"client_id":"m1"}"#.into(),
            ts: 5,
            source: None,
        };
        let v: Value = serde_json::from_str(&body("chat:r", &e)).unwrap();
        assert_eq!(
            v,
            json!({"id": "u1/m1", "channel": "chat:r", "seq": 7, "event": "chat.message", "ts": 5,
                             "author": {"sub": "u1", "name": "Ann", "role": null}, "text": "hi", "client_id": "m1"})
        );
    }

    #[test]
    fn the_signed_path_is_the_urls_path() {
        assert_eq!(path_of("https://shop.example/hooks/chat?x=1"), "/hooks/chat");
        assert_eq!(path_of("http://127.0.0.1:9000"), "/");
        assert_eq!(path_of("http://127.0.0.1:9000/a#f"), "/a");
    }
}
