//! The room's side of revocation: what it remembers, and when it must ask its shard.
//!
//! No call here outlives the connect or refresh that made it: a room asks before it
//! welcomes (a failure closes 1011: unknown is not "not revoked") and renews a record before
//! it answers `refreshed`. So the room's side holds no deadline and no retry: a woken room
//! starts with an empty memory, and asks.

use std::collections::HashMap;

/// How long an answer is trusted.
pub const TTL_MS: i64 = 10 * 60 * 1000;
/// A room renews a staying user's record when it is this old. A socket refreshes its token
/// at least once per token lifetime (15 minutes by default) or is closed, so a live socket's
/// record is never older than this plus one lifetime: far inside [`super::RECORD_KEPT_MS`].
pub const RECORD_RENEW_MS: i64 = 60 * 60 * 1000;
/// Entries kept; beyond it, answers are not cached (pushes always are).
pub const MAX_ENTRIES: usize = 10_000;
/// A room asks for a lease with its third question on: a payment page (one user) or a
/// chat (a customer and a staff member) records each, and never becomes a leaseholder that
/// every `/revoke` of the shard must reach; a venue's orders at an intermission soon holds
/// a lease on every shard.
pub const LEASE_FROM_ASK: u32 = 3;

/// How a room answers "is this user revoked?" at connect.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The room knows: the revocation that applies, if any.
    Known(Option<i64>),
    /// The room holds a lease on its shard: not revoked. The shard pushes to this room for
    /// the life of the socket's token; its first refresh records it.
    Leased,
    /// Ask the room's shard first.
    Ask,
}

#[derive(Debug, Default)]
pub struct Revocations {
    /// sub → (revoked at, Unix seconds; when learned, ms)
    entries: HashMap<String, (Option<i64>, i64)>,
    /// sub → when this room last recorded the user in the directory (ms).
    recorded: HashMap<String, i64>,
    /// Until when the lease on the room's shard is trusted (ms).
    lease: Option<i64>,
    /// Questions asked of the directory (saturating).
    asked: u32,
}

impl Revocations {
    /// The revocation that applies to `sub`, if known and fresh: `Some(None)` means "known:
    /// not revoked"; `None` means "ask the directory".
    pub fn lookup(&self, sub: &str, now_ms: i64) -> Option<Option<i64>> {
        self.entries.get(sub).filter(|(_, at)| now_ms - at < TTL_MS).map(|(revoked, _)| *revoked)
    }

    /// Whether `sub` may be welcomed without asking the directory. Under a lease on its
    /// shard the room knows every live revocation that applies here: those in the lease, and
    /// every later one, pushed here by `/revoke` (which reaches every shard) before it
    /// answers. A token without `iat` is refused by any revocation, however old, so it is
    /// always asked about.
    pub fn verdict(&self, sub: &str, has_iat: bool, now_ms: i64) -> Verdict {
        if let Some(known) = self.lookup(sub, now_ms) {
            return Verdict::Known(known);
        }
        if has_iat && self.lease.is_some_and(|until| now_ms < until) {
            return Verdict::Leased;
        }
        Verdict::Ask
    }

    /// Notes that the room asks the directory about a user; whether to ask for a lease with
    /// it ([`LEASE_FROM_ASK`]).
    pub fn wants_lease(&mut self) -> bool {
        self.asked = self.asked.saturating_add(1);
        self.asked >= LEASE_FROM_ASK
    }

    /// A lease on the room's shard until `trusted_until`, with the shard's live revocations
    /// that apply here; not taken when they do not all fit the room's memory (the room then
    /// asks about each user).
    pub fn grant(&mut self, trusted_until: i64, revoked: &[(String, i64)], now_ms: i64) {
        let mut kept = true;
        for (sub, at) in revoked {
            kept &= self.remember(sub, *at, now_ms);
        }
        if kept {
            self.lease = Some(self.lease.map_or(trusted_until, |until| until.max(trusted_until)));
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
    /// revocations keeps no more and drops its lease, so that the room asks the directory
    /// (which knows every revocation) about each new user rather than welcome one from a
    /// memory that could not keep what it was told. Returns whether it was kept.
    fn remember(&mut self, sub: &str, revoked_at: i64, now_ms: i64) -> bool {
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(sub) {
            self.entries.retain(|_, (revoked, at)| revoked.is_some() && now_ms - *at < TTL_MS);
            if self.entries.len() >= MAX_ENTRIES {
                self.lease = None;
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
    use crate::protocol::revocation::{lease_trusted_until, LEASE_MS, RECORD_KEPT_MS};

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
    fn a_lease_admits_new_users_until_the_room_stops_trusting_it() {
        let mut r = Revocations::default();
        let (other, revoked, newcomer) = ("other", "revoked", "newcomer");
        assert_eq!(r.verdict(other, true, T), Verdict::Ask);
        let until = lease_trusted_until(T, LEASE_MS);
        assert_eq!(until, T + LEASE_MS * 9 / 10, "stops trusting before the shard stops pushing");
        r.grant(until, &[(revoked.to_owned(), 42)], T);
        assert_eq!(r.verdict(other, true, T + 1), Verdict::Leased);
        assert_eq!(r.verdict(revoked, true, T + 1), Verdict::Known(Some(42)), "the lease's revocations refuse");
        assert_eq!(r.verdict(other, false, T + 1), Verdict::Ask, "a token without iat is always asked about");
        assert_eq!(r.verdict(other, true, until), Verdict::Ask, "lapsed");
        // A push under the lease is known from then on.
        r.revoke(other, 50, T + 2);
        assert_eq!(r.verdict(other, true, T + 3), Verdict::Known(Some(50)));
        // An older grant answered late never shortens a newer one.
        r.grant(T + 5, &[], T + 4);
        assert_eq!(r.verdict(newcomer, true, until - 1), Verdict::Leased);
    }

    #[test]
    fn a_room_asks_for_leases_from_its_third_question_on() {
        let mut r = Revocations::default();
        assert_eq!((0..4).map(|_| r.wants_lease()).collect::<Vec<_>>(), [false, false, true, true]);
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
        r.grant(T + 60_000, &[], T);
        assert!(matches!(r.verdict("newcomer", true, T), Verdict::Leased));
        // Not-revoked answers and expired entries make room first.
        r.learn("answer", None, T);
        for i in 0..MAX_ENTRIES - 1 {
            r.revoke(&format!("old-{i}"), 1, T - TTL_MS);
        }
        r.revoke("fresh", 1, T);
        assert_eq!(r.entries.len(), 1, "the expired and the answer went");
        assert!(matches!(r.verdict("newcomer", true, T), Verdict::Leased));
        // Full of live revocations: the next is not kept, and no lease is trusted any more.
        for i in 0..MAX_ENTRIES - 1 {
            r.revoke(&format!("live-{i}"), 1, T);
        }
        r.revoke("one-too-many", 1, T);
        assert_eq!(r.entries.len(), MAX_ENTRIES);
        assert_eq!(r.lookup("one-too-many", T), None);
        assert_eq!(r.verdict("newcomer", true, T), Verdict::Ask, "the directory is asked, it knows");
        // A lease whose revocations do not fit is not taken.
        r.grant(T + 60_000, &[("another".into(), 1)], T);
        assert_eq!(r.verdict("newcomer", true, T), Verdict::Ask);
    }
}
