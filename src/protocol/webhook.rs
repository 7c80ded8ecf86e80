//! The chat webhook: every client chat message is POSTed to the backend (which bridges chat
//! to WhatsApp), signed like `/publish` over the webhook URL's own path.
//!
//! Delivery is at-least-once from a durable outbox with exponential backoff; the body and
//! its `id` never change between attempts, so the backend dedupes by `id`.

use serde_json::{json, Value};

use super::frame::StoredEvent;

/// First retry after 1 s, doubling up to 5 minutes.
const FIRST_RETRY_MS: i64 = 1_000;
const MAX_RETRY_MS: i64 = 5 * 60 * 1_000;
/// Calls sent in parallel per alarm; a full batch sets the next alarm at once.
pub const BATCH: u64 = 25;
/// Messages the outbox holds at most; beyond it the oldest are dropped (and logged): a
/// backend that is down for long cannot make a room's storage grow without end.
pub const OUTBOX_MAX: u64 = 10_000;
/// A message the backend has refused for a whole day is dropped (and logged).
pub const GIVE_UP_AFTER_MS: i64 = 24 * 60 * 60 * 1_000;

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

/// What becomes of a queued call after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Refused or unreachable for [`GIVE_UP_AFTER_MS`]: dropped.
    GaveUp,
    /// Tried again at this time (ms).
    RetryAt(i64),
}

/// The retry rule: a 2xx answer delivers; anything else retries with backoff, until the
/// call is a day old.
pub fn settle(queued: &Queued, delivered: bool, now: i64) -> Settled {
    if delivered {
        Settled::Delivered
    } else if now - queued.created > GIVE_UP_AFTER_MS {
        Settled::GaveUp
    } else {
        Settled::RetryAt(now + backoff_ms(queued.attempts + 1))
    }
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

/// Delay before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (FIRST_RETRY_MS << exp).min(MAX_RETRY_MS)
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
    fn an_attempt_delivers_retries_with_backoff_or_gives_up_after_a_day() {
        let q = Queued { id: "m".into(), body: "{}".into(), attempts: 0, created: 0 };
        assert_eq!(settle(&q, true, 5), Settled::Delivered);
        assert_eq!(settle(&q, false, 5), Settled::RetryAt(5 + 1_000));
        let q3 = Queued { attempts: 3, ..q.clone() };
        assert_eq!(settle(&q3, false, 5), Settled::RetryAt(5 + 8_000));
        assert_eq!(settle(&q, false, GIVE_UP_AFTER_MS), Settled::RetryAt(GIVE_UP_AFTER_MS + 1_000));
        assert_eq!(settle(&q, false, GIVE_UP_AFTER_MS + 1), Settled::GaveUp);
        assert_eq!(settle(&q, true, GIVE_UP_AFTER_MS + 1), Settled::Delivered, "a late success still counts");
    }

    #[test]
    fn the_body_carries_channel_seq_id_author_and_text() {
        let e = StoredEvent {
            seq: 7,
            id: "u1/m1".into(),
            event: "chat.message".into(),
            data: r#"{"text":"hi","author":{"sub":"u1","name":"Ann","role":null},"client_id":"m1"}"#.into(),
            ts: 5,
        };
        let v: Value = serde_json::from_str(&body("chat:r", &e)).unwrap();
        assert_eq!(
            v,
            json!({"id": "u1/m1", "channel": "chat:r", "seq": 7, "event": "chat.message", "ts": 5,
                             "author": {"sub": "u1", "name": "Ann", "role": null}, "text": "hi", "client_id": "m1"})
        );
    }

    #[test]
    fn retries_back_off_exponentially_to_a_cap() {
        assert_eq!((1..=5).map(backoff_ms).collect::<Vec<_>>(), [1_000, 2_000, 4_000, 8_000, 16_000]);
        assert_eq!(backoff_ms(30), MAX_RETRY_MS);
    }

    #[test]
    fn the_signed_path_is_the_urls_path() {
        assert_eq!(path_of("https://shop.example/hooks/chat?x=1"), "/hooks/chat");
        assert_eq!(path_of("http://127.0.0.1:9000"), "/");
        assert_eq!(path_of("http://127.0.0.1:9000/a#f"), "/a");
    }
}
