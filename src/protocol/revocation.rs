//! Revocation: where it is recorded, and what a room remembers of it.
//!
//! Revocations live in a few long-lived *directory* objects, a user's in the shard named by a
//! hash of their `sub` ([`directory_shard`]): a fixed, small set of objects that stay warm,
//! instead of one fresh object per user on the connect path. Before a room welcomes a user
//! it does not know, it records in the directory that the user is here; the record is
//! answered with the revocation as of the record. So a `/revoke` either comes before the
//! record (and is in the answer: no `welcome`) or after it (and finds the record, and pushes
//! to the room).
//!
//! A departure costs no call: a record outlives the user's sockets, and a `/revoke` that
//! reaches a room the user has left closes nothing there. Records expire instead
//! ([`RECORD_KEPT_MS`]), and a room renews a user's record while the user stays
//! ([`Revocations::needs_record`], at refresh), so a live socket's record never expires.
//! Why not drop the record when the user leaves: at an intermission hundreds of pages close
//! at once, and a call per departure to a shared directory object is what made deliveries
//! wait (README, Benchmark).
//!
//! What a room remembers ([`Revocations`]) spares a reconnect the question. It stays correct
//! because an entry exists only for a user the directory has been asked about and recorded
//! here, and from then on every revocation of that user is pushed to this room by `/revoke`.
//! Answers and pushes merge by taking the later revocation, so neither is lost to the other.
//! Entries expire, so a room forgets users it no longer sees and a push that failed (the
//! backend retries `/revoke`) cannot be trusted away for long.

use std::collections::HashMap;

/// The scope under which a revocation of all of a user's channels is recorded.
pub const ALL_CHANNELS: &str = "*";

/// Directory objects. Fixed for a deployment's life: a `sub` must always hash to the shard
/// holding its revocations (changing it needs a migration that moves the rows).
pub const DIRECTORY_SHARDS: u32 = 16;

/// Revocations older than this are dropped from a directory (on its next `/revoke`). A token
/// lives at most `TOKEN_MAX_LIFETIME` (15 minutes by default), so only the last quarter hour
/// can refuse one; a day leaves room for any configured lifetime and clock skew.
pub const KEPT_SECS: i64 = 24 * 60 * 60;

/// The name of the directory object that holds `sub`'s revocations.
pub fn directory_shard(sub: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(sub.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % DIRECTORY_SHARDS;
    format!("shard-{n}")
}

/// How long an answer is trusted.
pub const TTL_MS: i64 = 10 * 60 * 1000;
/// How long a directory keeps a record of where a user joined.
pub const RECORD_KEPT_MS: i64 = 24 * 60 * 60 * 1000;
/// A room renews a staying user's record when it is this old. A socket refreshes its token
/// at least once per token lifetime (15 minutes by default) or is closed, so a live socket's
/// record is never older than this plus one lifetime: far inside [`RECORD_KEPT_MS`].
pub const RECORD_RENEW_MS: i64 = 60 * 60 * 1000;
/// Entries kept; beyond it, answers are not cached (pushes always are).
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct Revocations {
    /// sub → (revoked at, Unix seconds; when learned, ms)
    entries: HashMap<String, (Option<i64>, i64)>,
    /// sub → when this room last recorded the user in the directory (ms).
    recorded: HashMap<String, i64>,
}

impl Revocations {
    /// The revocation that applies to `sub`, if known and fresh: `Some(None)` means "known:
    /// not revoked"; `None` means "ask the directory".
    pub fn lookup(&self, sub: &str, now_ms: i64) -> Option<Option<i64>> {
        self.entries.get(sub).filter(|(_, at)| now_ms - at < TTL_MS).map(|(revoked, _)| *revoked)
    }

    /// Records the directory's answer; returns the revocation to apply (the later of the
    /// answer and anything pushed meanwhile).
    pub fn learn(&mut self, sub: &str, revoked_at: Option<i64>, now_ms: i64) -> Option<i64> {
        // The answer came from a record: note it (a full map forgets expired notes first,
        // and a note not kept only means an early renewal).
        if self.recorded.len() >= MAX_ENTRIES {
            self.recorded.retain(|_, at| now_ms - *at < RECORD_RENEW_MS);
        }
        if self.recorded.len() < MAX_ENTRIES || self.recorded.contains_key(sub) {
            self.recorded.insert(sub.to_owned(), now_ms);
        }
        if let Some((known, at)) = self.entries.get_mut(sub) {
            *known = (*known).max(revoked_at);
            *at = now_ms;
            return *known;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, (revoked, at)| revoked.is_some() || now_ms - *at < TTL_MS);
        }
        if self.entries.len() < MAX_ENTRIES {
            self.entries.insert(sub.to_owned(), (revoked_at, now_ms));
        }
        revoked_at
    }

    /// Whether the directory's record of `sub` here is due for renewal (or unknown to this
    /// instance: a woken room renews once rather than trust a record it cannot date).
    pub fn needs_record(&self, sub: &str, now_ms: i64) -> bool {
        self.recorded.get(sub).is_none_or(|at| now_ms - at >= RECORD_RENEW_MS)
    }

    /// A revocation pushed by `/revoke`: always kept.
    pub fn revoke(&mut self, sub: &str, revoked_at: i64, now_ms: i64) {
        let entry = self.entries.entry(sub.to_owned()).or_insert((None, now_ms));
        entry.0 = entry.0.max(Some(revoked_at));
        entry.1 = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000;

    #[test]
    fn unknown_users_are_asked_about_and_answers_are_trusted_until_they_expire() {
        let mut r = Revocations::default();
        assert_eq!(r.lookup("u", T), None);
        assert_eq!(r.learn("u", None, T), None);
        assert_eq!(r.lookup("u", T + TTL_MS - 1), Some(None));
        assert_eq!(r.lookup("u", T + TTL_MS), None, "expired: ask again");
        assert_eq!(r.learn("v", Some(5), T), Some(5));
        assert_eq!(r.lookup("v", T), Some(Some(5)));
    }

    #[test]
    fn a_push_during_a_question_is_not_lost_to_the_older_answer() {
        let mut r = Revocations::default();
        // The directory answered "not revoked", then recorded a revocation and pushed it; the
        // push reached the room before the answer did.
        r.revoke("u", 100, T);
        assert_eq!(r.learn("u", None, T + 1), Some(100));
        assert_eq!(r.lookup("u", T + 2), Some(Some(100)));
        // A later revocation moves it forward, an older answer never back.
        r.revoke("u", 200, T + 3);
        assert_eq!(r.learn("u", Some(150), T + 4), Some(200));
    }

    #[test]
    fn a_staying_users_record_is_renewed_long_before_the_directory_drops_it() {
        let mut r = Revocations::default();
        assert!(r.needs_record("u", T), "unknown to this instance: renew");
        r.learn("u", None, T);
        assert!(!r.needs_record("u", T + RECORD_RENEW_MS - 1));
        assert!(r.needs_record("u", T + RECORD_RENEW_MS));
        // Renewed at the latest one token lifetime (15 min) after it is due.
        const { assert!(RECORD_RENEW_MS + 15 * 60 * 1000 < RECORD_KEPT_MS) };
        // A push is not a record.
        r.revoke("p", 5, T);
        assert!(r.needs_record("p", T));
    }

    #[test]
    fn users_spread_over_a_fixed_set_of_directory_shards() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let shard = directory_shard(&format!("customer-{i}"));
            assert_eq!(shard, directory_shard(&format!("customer-{i}")), "stable");
            seen.insert(shard);
        }
        assert_eq!(seen.len(), DIRECTORY_SHARDS as usize, "every shard used, no other name");
        assert!(seen.iter().all(|s| s.starts_with("shard-")));
    }

    #[test]
    fn a_full_cache_stops_caching_answers_but_keeps_pushes() {
        let mut r = Revocations::default();
        for i in 0..MAX_ENTRIES {
            r.learn(&format!("u{i}"), None, T);
        }
        assert_eq!(r.learn("late", None, T + 1), None);
        assert_eq!(r.lookup("late", T + 1), None, "not cached: asked every time, still correct");
        r.revoke("pushed", 7, T + 1);
        assert_eq!(r.lookup("pushed", T + 1), Some(Some(7)));
        // Once the old answers expire they make room again.
        r.learn("later", None, T + TTL_MS);
        assert_eq!(r.lookup("later", T + TTL_MS), Some(None));
    }
}
