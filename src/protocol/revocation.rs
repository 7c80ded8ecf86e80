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
//! A room that many new users join takes a *lease* on a shard instead of recording each
//! user first ([`Revocations::verdict`]): the shard answers with its live revocations that
//! apply in the room ([`live_revocations`]) and, until the lease ends ([`LEASE_MS`]), pushes
//! every later one to the room before `/revoke` answers. So the room knows every revocation
//! that can refuse one of the shard's users, welcomes them from memory, and records where
//! they joined after the welcome (a revocation racing that record is in its answer, and
//! closes the socket).
//!
//! A departure costs no call: a record outlives the user's sockets, and a `/revoke` that
//! reaches a room the user has left closes nothing there. Records expire instead
//! ([`RECORD_KEPT_MS`]), and a room renews a user's record while the user stays
//! ([`Revocations::needs_record`], at refresh), so a live socket's record never expires.
//! Why not drop the record when the user leaves: at an intermission hundreds of pages close
//! at once, and a call per departure to a shared directory object is what made deliveries
//! wait (bench/README.md).
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

/// How long a directory shard pushes every revocation of its users to a room it granted a
/// lease (ms). See [`Revocations::verdict`].
pub const LEASE_MS: i64 = 60 * 1000;
/// A shard with more live revocations than this grants no lease: its rooms record each new
/// user before the welcome instead (the answer stays small, and such a shard is rare).
pub const MAX_LEASED: usize = 1_000;
/// Slack between the backend's clock (a revocation's time) and the edge's (a token's age).
pub const CLOCK_SLACK_SECS: i64 = 60;

/// Until when a room trusts a lease (ms): 90% of it, counted from when the room *asked*. The
/// shard counts the whole lease from when it *granted*, which is later, so the room stops
/// trusting it before the shard stops pushing, with no two clocks compared.
pub fn lease_trusted_until(asked_at_ms: i64, lease_ms: i64) -> i64 {
    asked_at_ms.saturating_add(lease_ms / 10 * 9)
}

/// What a shard hands a room with a lease: the revocations (sub, Unix seconds) of its users
/// that apply in `channel` and can still refuse a token (issued after `oldest`: a token
/// issued earlier has expired); `None` when there are more than [`MAX_LEASED`].
/// `revoked`: sub → [(scope, revoked at)].
pub fn live_revocations(revoked: &HashMap<String, Vec<(String, i64)>>, channel: &str, oldest: i64) -> Option<Vec<(String, i64)>> {
    let mut live = Vec::new();
    for (sub, scopes) in revoked {
        let applies = scopes.iter().filter(|(scope, at)| (scope == ALL_CHANNELS || scope == channel) && *at >= oldest);
        if let Some(at) = applies.map(|(_, at)| *at).max() {
            if live.len() == MAX_LEASED {
                return None;
            }
            live.push((sub.clone(), at));
        }
    }
    Some(live)
}

/// The oldest revocation that can refuse a token of `max_lifetime` seconds at `now` (a token
/// without `iat` is never admitted under a lease: any revocation refuses it).
pub fn oldest_live(now_secs: i64, max_lifetime: i64) -> i64 {
    now_secs - max_lifetime - crate::protocol::token::LEEWAY_SECS - CLOCK_SLACK_SECS
}

/// Whether a push of a revocation at `revoked_at` (Unix seconds) still matters at `now`: once
/// every token it could refuse has expired, the sockets it would close are closed by their
/// expiry and a reconnect with such a token is refused anyway, so a push that keeps failing
/// is given up rather than retried for ever.
pub fn push_matters(revoked_at: i64, now_secs: i64, max_lifetime: i64) -> bool {
    revoked_at >= oldest_live(now_secs, max_lifetime)
}

/// How a room answers "is this user revoked?" at connect.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The room knows: the revocation that applies, if any.
    Known(Option<i64>),
    /// The room holds a lease on the user's shard (named): not revoked, and the record of
    /// the join can follow the welcome.
    Leased(String),
    /// Ask the user's shard (named) first.
    Ask(String),
}

#[derive(Debug, Default)]
pub struct Revocations {
    /// sub → (revoked at, Unix seconds; when learned, ms)
    entries: HashMap<String, (Option<i64>, i64)>,
    /// sub → when this room last recorded the user in the directory (ms).
    recorded: HashMap<String, i64>,
    /// shard → until when its lease is trusted (ms). At most [`DIRECTORY_SHARDS`] entries.
    leases: HashMap<String, i64>,
    /// The room has asked the directory about a user.
    asked: bool,
}

impl Revocations {
    /// The revocation that applies to `sub`, if known and fresh: `Some(None)` means "known:
    /// not revoked"; `None` means "ask the directory".
    pub fn lookup(&self, sub: &str, now_ms: i64) -> Option<Option<i64>> {
        self.entries.get(sub).filter(|(_, at)| now_ms - at < TTL_MS).map(|(revoked, _)| *revoked)
    }

    /// Whether `sub` may be welcomed without asking the directory. Under a lease on the
    /// user's shard the room knows every live revocation of the shard's users: those in the
    /// lease, and every later one, pushed here by `/revoke` before it answers. A token
    /// without `iat` is refused by any revocation, however old, so it is always asked about.
    pub fn verdict(&self, sub: &str, has_iat: bool, now_ms: i64) -> Verdict {
        if let Some(known) = self.lookup(sub, now_ms) {
            return Verdict::Known(known);
        }
        let shard = directory_shard(sub);
        if has_iat && self.leases.get(&shard).is_some_and(|until| now_ms < *until) {
            return Verdict::Leased(shard);
        }
        Verdict::Ask(shard)
    }

    /// Notes that the room asks the directory about a user; whether it had before. A lease
    /// pays from the room's second new user on: a room with one user never needs one.
    pub fn asked_before(&mut self) -> bool {
        std::mem::replace(&mut self.asked, true)
    }

    /// A lease on `shard` until `trusted_until`, with the shard's live revocations; not taken
    /// when they do not all fit the room's memory (the room then asks about each user).
    pub fn grant(&mut self, shard: &str, trusted_until: i64, revoked: &[(String, i64)], now_ms: i64) {
        let mut kept = true;
        for (sub, at) in revoked {
            kept &= self.remember(sub, *at, now_ms);
        }
        if kept {
            let until = self.leases.entry(shard.to_owned()).or_insert(trusted_until);
            *until = (*until).max(trusted_until);
        }
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

    /// A revocation pushed by `/revoke`. The user's sockets here carry it in their
    /// attachments whatever happens to this memory (see [`super::room::Memory::apply_revocation`]).
    pub fn revoke(&mut self, sub: &str, revoked_at: i64, now_ms: i64) {
        self.remember(sub, revoked_at, now_ms);
    }

    /// Keeps a revocation until it expires, within [`MAX_ENTRIES`]: when the map is full,
    /// expired entries and "not revoked" answers go first. A map still full of live
    /// revocations keeps no more and drops every lease, so that the room asks the directory
    /// (which knows every revocation) about each new user rather than welcome one from a
    /// memory that could not keep what it was told. Returns whether it was kept.
    fn remember(&mut self, sub: &str, revoked_at: i64, now_ms: i64) -> bool {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(sub) {
            self.entries.retain(|_, (revoked, at)| revoked.is_some() && now_ms - *at < TTL_MS);
            if self.entries.len() >= MAX_ENTRIES {
                self.leases.clear();
                return false;
            }
        }
        let entry = self.entries.entry(sub.to_owned()).or_insert((None, now_ms));
        entry.0 = entry.0.max(Some(revoked_at));
        entry.1 = now_ms;
        true
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

    /// A sub in `shard` (there are only 16) other than those in `not`.
    fn sub_in(shard: &str, not: &[&str]) -> String {
        (0..).map(|i| format!("user-{i}")).find(|s| directory_shard(s) == shard && !not.contains(&s.as_str())).unwrap_or_default()
    }

    #[test]
    fn a_lease_admits_the_shards_other_users_until_the_room_stops_trusting_it() {
        let mut r = Revocations::default();
        let shard = directory_shard("u");
        let other = sub_in(&shard, &["u"]);
        let revoked = sub_in(&shard, &["u", &other]);
        let outside = (0..).map(|i| format!("x-{i}")).find(|s| directory_shard(s) != shard).unwrap_or_default();
        let ask = Verdict::Ask(shard.clone());
        assert_eq!(r.verdict(&other, true, T), ask);
        let until = lease_trusted_until(T, LEASE_MS);
        assert_eq!(until, T + LEASE_MS * 9 / 10, "stops trusting before the shard stops pushing");
        r.grant(&shard, until, &[(revoked.clone(), 42)], T);
        assert_eq!(r.verdict(&other, true, T + 1), Verdict::Leased(shard.clone()));
        assert_eq!(r.verdict(&revoked, true, T + 1), Verdict::Known(Some(42)), "the lease's revocations refuse");
        assert_eq!(r.verdict(&other, false, T + 1), ask, "a token without iat is always asked about");
        assert_eq!(r.verdict(&outside, true, T + 1), Verdict::Ask(directory_shard(&outside)), "another shard's user");
        assert_eq!(r.verdict(&other, true, until), ask, "lapsed");
        // A push under the lease is known from then on.
        r.revoke(&other, 50, T + 2);
        assert_eq!(r.verdict(&other, true, T + 3), Verdict::Known(Some(50)));
        // An older grant answered late never shortens a newer one.
        r.grant(&shard, T + 5, &[], T + 4);
        assert_eq!(r.verdict(&sub_in(&shard, &["u", &other, &revoked]), true, until - 1), Verdict::Leased(shard.clone()));
    }

    #[test]
    fn a_room_asks_for_leases_from_its_second_new_user_on() {
        let mut r = Revocations::default();
        assert!(!r.asked_before());
        assert!(r.asked_before());
    }

    #[test]
    fn a_lease_carries_only_revocations_that_apply_and_can_still_refuse_and_none_when_too_many() {
        let mut revoked: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        revoked.insert("all".into(), vec![(ALL_CHANNELS.into(), 100), ("orders:a".into(), 120)]);
        revoked.insert("here".into(), vec![("orders:a".into(), 90)]);
        revoked.insert("elsewhere".into(), vec![("orders:b".into(), 200)]);
        revoked.insert("old".into(), vec![(ALL_CHANNELS.into(), 10)]);
        let mut live = live_revocations(&revoked, "orders:a", 50).unwrap_or_default();
        live.sort();
        assert_eq!(live, vec![("all".into(), 120), ("here".into(), 90)]);
        // A token lives at most its lifetime (plus leeway): older revocations refuse nothing.
        assert_eq!(oldest_live(10_000, 900), 10_000 - 900 - crate::protocol::token::LEEWAY_SECS - CLOCK_SLACK_SECS);
        let many: HashMap<String, Vec<(String, i64)>> =
            (0..=MAX_LEASED).map(|i| (format!("u{i}"), vec![(ALL_CHANNELS.to_owned(), 100)])).collect();
        assert_eq!(live_revocations(&many, "orders:a", 0), None, "too many: no lease");
        let enough: HashMap<String, Vec<(String, i64)>> =
            (0..MAX_LEASED).map(|i| (format!("u{i}"), vec![(ALL_CHANNELS.to_owned(), 100)])).collect();
        assert_eq!(live_revocations(&enough, "orders:a", 0).map(|l| l.len()), Some(MAX_LEASED));
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

    #[test]
    fn pushed_revocations_are_bounded_and_a_full_memory_gives_up_its_leases_not_a_revocation() {
        let mut r = Revocations::default();
        let shard = directory_shard("newcomer");
        r.grant(&shard, T + 60_000, &[], T);
        assert!(matches!(r.verdict("newcomer", true, T), Verdict::Leased(_)));
        // Not-revoked answers and expired entries make room first.
        r.learn("answer", None, T);
        for i in 0..MAX_ENTRIES - 1 {
            r.revoke(&format!("old-{i}"), 1, T - TTL_MS);
        }
        r.revoke("fresh", 1, T);
        assert_eq!(r.entries.len(), 1, "the expired and the answer went");
        assert!(matches!(r.verdict("newcomer", true, T), Verdict::Leased(_)));
        // Full of live revocations: the next is not kept, and no lease is trusted any more.
        for i in 0..MAX_ENTRIES - 1 {
            r.revoke(&format!("live-{i}"), 1, T);
        }
        r.revoke("one-too-many", 1, T);
        assert_eq!(r.entries.len(), MAX_ENTRIES);
        assert_eq!(r.lookup("one-too-many", T), None);
        assert_eq!(r.verdict("newcomer", true, T), Verdict::Ask(shard.clone()), "the directory is asked, it knows");
        // A lease whose revocations do not fit is not taken.
        r.grant(&shard, T + 60_000, &[("another".into(), 1)], T);
        assert_eq!(r.verdict("newcomer", true, T), Verdict::Ask(shard));
    }

    #[test]
    fn a_failing_push_matters_until_every_token_it_could_refuse_has_expired() {
        let (at, lifetime) = (1_800_000_000, 900);
        let last = at + lifetime + crate::protocol::token::LEEWAY_SECS + CLOCK_SLACK_SECS;
        assert!(push_matters(at, at, lifetime));
        assert!(push_matters(at, last, lifetime), "a token issued at the revocation may still live");
        assert!(!push_matters(at, last + 1, lifetime));
    }
}
