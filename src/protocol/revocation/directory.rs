//! The directory's side of revocation, for one shard: revocations, records of where users
//! joined, leaseholders, and the queue of pushes that reach rooms. Sans-IO over a
//! [`DirectoryStore`] (SQLite in the shell, memory in the tests below), with time passed in;
//! the shell carries out the [`Push`]es it hands out and reports how each went, and sets the
//! object's one alarm to [`Directory::poll_timeout`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{live_revocations, oldest_live, push_matters, watch_ms, ALL_CHANNELS, KEPT_SECS, RECORD_KEPT_MS};
use crate::protocol::retry::backoff_ms;

/// Rooms holding a lease on one shard at once, at most: beyond, rooms record each new user
/// instead (every `/revoke` pushes to each leaseholder it applies to).
pub const MAX_WATCHERS: usize = 400;
/// Pushes made by one invocation at most (a `/revoke`, or one alarm): every leaseholder and
/// the user's recorded rooms fit; a user with more is reached over the kit's retries, and
/// the answer says `pending` until then.
pub const PUSH_BATCH: usize = 500;
/// A push not answered by then counts as failed (queued, retried): a slow room never holds
/// `/revoke`, whose pushes run in parallel, past this (and the kit's 10 s timeout).
pub const PUSH_TIMEOUT_MS: i64 = 4_000;
/// Expired records and ended leases are dropped at most this often on `/joined` (and on
/// every `/revoke`).
const PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;

/// A revocation to push to one room: `at` in Unix seconds, `attempts` failed so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    pub sub: String,
    pub channel: String,
    pub at: i64,
    pub attempts: u32,
}

/// A shard's durable state. Every write of one call happens without an await in between, so
/// a revocation and the pushes it queues are committed together.
pub trait DirectoryStore {
    /// Every revocation: (sub, scope, Unix seconds).
    fn revocations(&mut self) -> Result<Vec<(String, String, i64)>, String>;
    /// Records a revocation; a later time wins over an earlier one.
    fn put_revocation(&mut self, sub: &str, scope: &str, at: i64) -> Result<(), String>;
    /// Records that `sub` joined `channel` (or is still there) at `at_ms`.
    fn put_record(&mut self, sub: &str, channel: &str, at_ms: i64) -> Result<(), String>;
    /// The channels where `sub` is recorded.
    fn rooms_of(&mut self, sub: &str) -> Result<Vec<String>, String>;
    /// Every leaseholder: (channel, pushed to until, ms).
    fn watchers(&mut self) -> Result<Vec<(String, i64)>, String>;
    /// Registers a leaseholder; a later end wins.
    fn put_watcher(&mut self, channel: &str, until_ms: i64) -> Result<(), String>;
    /// Drops revocations before `revoked_before` (s), records before `recorded_before` (ms)
    /// and leaseholders whose push ended before `now_ms`.
    fn prune(&mut self, revoked_before: i64, recorded_before: i64, now_ms: i64) -> Result<(), String>;
    /// Queues a push due at `next_at`; one per (sub, channel), the later `at` wins.
    fn queue(&mut self, push: &Push, next_at: i64) -> Result<(), String>;
    /// Queued pushes (of `sub` only, when given) due by `due_by`, soonest first, at most `limit`.
    fn queued(&mut self, sub: Option<&str>, due_by: i64, limit: usize) -> Result<Vec<Push>, String>;
    /// Drops a queued push that was carried out (a later one queued meanwhile stays).
    fn unqueue(&mut self, push: &Push) -> Result<(), String>;
    /// A queued push failed: tried again at `next_at`.
    fn requeue(&mut self, push: &Push, attempts: u32, next_at: i64) -> Result<(), String>;
    /// When the soonest queued push is due.
    fn next_due(&mut self) -> Result<Option<i64>, String>;
}

/// A lease granted with a `/joined`: for `ms` from its grant the shard pushes every
/// later revocation to the room; `revoked` are the live ones already recorded, as
/// (sub, Unix seconds). Sent to the room as is (`JoinedAnswer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ms: i64,
    pub revoked: Vec<(String, i64)>,
}

/// How a round of pushes went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reached {
    /// Sockets of the revoked user closed.
    pub closed: u32,
    /// Pushes of the revoked user still queued: the answer is `pending`.
    pub pending: bool,
    /// Pushes that failed and are retried: (channel, why).
    pub failed: Vec<(String, String)>,
    /// Pushes that failed and no longer matter (every token they could refuse has expired).
    pub gave_up: Vec<(String, String)>,
}

/// sub → [(scope, revoked at)].
type Revoked = HashMap<String, Vec<(String, i64)>>;

/// One shard. Memory is a cache of the store (loaded once per instance).
#[derive(Debug)]
pub struct Directory {
    revoked: Option<Revoked>,
    /// channel → until when the shard pushes to it (ms, this shard's clock).
    watchers: Option<HashMap<String, i64>>,
    pruned_at: Option<i64>,
    /// The longest token lifetime the deployment accepts (s).
    max_lifetime: i64,
    lease_ms: i64,
}

impl Directory {
    pub fn new(max_lifetime_secs: i64, lease_ms: i64) -> Directory {
        Directory { revoked: None, watchers: None, pruned_at: None, max_lifetime: max_lifetime_secs, lease_ms }
    }

    fn load(&mut self, store: &mut impl DirectoryStore) -> Result<(), String> {
        if self.revoked.is_none() {
            let mut revoked = Revoked::new();
            for (sub, scope, at) in store.revocations()? {
                revoked.entry(sub).or_default().push((scope, at));
            }
            self.revoked = Some(revoked);
        }
        if self.watchers.is_none() {
            self.watchers = Some(store.watchers()?.into_iter().collect());
        }
        Ok(())
    }

    /// The revocation that applies to `sub` in `channel`: its own or the all-channels one.
    fn revoked_at(&self, sub: &str, channel: &str) -> Option<i64> {
        let scopes = self.revoked.as_ref()?.get(sub)?;
        scopes.iter().filter(|(scope, _)| scope == ALL_CHANNELS || scope == channel).map(|(_, at)| *at).max()
    }

    /// Records that `subs` joined `channel`, answered with the revocation of each as of the
    /// record; with `lease`, grants one when the shard can: it is registered (durably) before
    /// it is answered, so every later `/revoke` of this shard's users pushes to the room.
    pub fn joined(
        &mut self,
        store: &mut impl DirectoryStore,
        channel: &str,
        subs: &[String],
        lease: bool,
        now_ms: i64,
    ) -> Result<(Vec<Option<i64>>, Option<Lease>), String> {
        self.load(store)?;
        if self.pruned_at.is_none_or(|at| now_ms - at >= PRUNE_EVERY_MS) {
            self.prune(store, now_ms)?;
        }
        let mut revoked = Vec::with_capacity(subs.len());
        for sub in subs {
            store.put_record(sub, channel, now_ms)?;
            revoked.push(self.revoked_at(sub, channel));
        }
        let lease = if lease { self.lease(store, channel, now_ms)? } else { None };
        Ok((revoked, lease))
    }

    fn lease(&mut self, store: &mut impl DirectoryStore, channel: &str, now_ms: i64) -> Result<Option<Lease>, String> {
        let oldest = oldest_live(now_ms / 1000, self.max_lifetime);
        let Some(live) = live_revocations(self.revoked.get_or_insert_default(), channel, oldest) else {
            return Ok(None);
        };
        let watchers = self.watchers.get_or_insert_default();
        if watchers.len() >= MAX_WATCHERS && !watchers.contains_key(channel) {
            watchers.retain(|_, until| *until > now_ms);
            if watchers.len() >= MAX_WATCHERS {
                return Ok(None);
            }
        }
        let until = now_ms.saturating_add(watch_ms(self.lease_ms, self.max_lifetime));
        store.put_watcher(channel, until)?;
        let entry = watchers.entry(channel.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        Ok(Some(Lease { ms: self.lease_ms, revoked: live }))
    }

    /// Drops what can no longer matter: revocations older than [`KEPT_SECS`], records older
    /// than [`RECORD_KEPT_MS`], leaseholders no longer pushed to.
    fn prune(&mut self, store: &mut impl DirectoryStore, now_ms: i64) -> Result<(), String> {
        let revoked_before = now_ms / 1000 - KEPT_SECS;
        store.prune(revoked_before, now_ms - RECORD_KEPT_MS, now_ms)?;
        if let Some(revoked) = &mut self.revoked {
            revoked.retain(|_, scopes| {
                scopes.retain(|(_, at)| *at >= revoked_before);
                !scopes.is_empty()
            });
        }
        if let Some(watchers) = &mut self.watchers {
            watchers.retain(|_, until| *until >= now_ms);
        }
        self.pruned_at = Some(now_ms);
        Ok(())
    }

    /// `/revoke`: records the revocation of `sub` at `at` (Unix seconds) in `channels` (all
    /// when `None`) and, when it is new, queues a push to every room it must reach — the
    /// leaseholders it applies to, and the named channels or the user's recorded rooms — in
    /// the same write. Returns the user's queued pushes, to make now: on a retry of the same
    /// request, only those that did not land.
    pub fn revoke(
        &mut self,
        store: &mut impl DirectoryStore,
        sub: &str,
        channels: Option<&[String]>,
        at: i64,
        now_ms: i64,
    ) -> Result<Vec<Push>, String> {
        self.load(store)?;
        let scopes = channels.map_or_else(|| vec![ALL_CHANNELS.to_owned()], <[String]>::to_vec);
        let mut new = false;
        for scope in &scopes {
            let entries = self.revoked.get_or_insert_default().entry(sub.to_owned()).or_default();
            match entries.iter_mut().find(|(s, _)| s == scope) {
                // A retried or replayed older request never moves it back.
                Some((_, known)) if *known >= at => continue,
                Some((_, known)) => *known = at,
                None => entries.push((scope.clone(), at)),
            }
            new = true;
            store.put_revocation(sub, scope, at)?;
        }
        self.prune(store, now_ms)?;
        if new {
            let watchers = self.watchers.get_or_insert_default();
            let mut targets: Vec<String> = watchers
                .iter()
                .filter(|(channel, until)| **until >= now_ms && channels.is_none_or(|named| named.contains(channel)))
                .map(|(channel, _)| channel.clone())
                .collect();
            let rooms = match channels {
                Some(named) => named.to_vec(),
                None => store.rooms_of(sub)?,
            };
            for room in rooms {
                if !targets.contains(&room) {
                    targets.push(room);
                }
            }
            for channel in targets {
                store.queue(&Push { sub: sub.to_owned(), channel, at, attempts: 0 }, now_ms)?;
            }
        }
        store.queued(Some(sub), i64::MAX, PUSH_BATCH)
    }

    /// How a round of pushes went (`outcomes`: each push with the sockets it closed, or why
    /// it failed): those that landed leave the queue; a failure is retried with the one
    /// backoff, or given up once it no longer matters. `revoked`: the user whose `/revoke`
    /// this answers (their closed sockets are counted, and whether any push of theirs is
    /// still queued), or `None` for the alarm.
    pub fn pushed(
        &mut self,
        store: &mut impl DirectoryStore,
        outcomes: Vec<(Push, Result<u32, String>)>,
        revoked: Option<&str>,
        now_ms: i64,
    ) -> Result<Reached, String> {
        let mut reached = Reached::default();
        for (push, outcome) in outcomes {
            match outcome {
                Ok(closed) => {
                    store.unqueue(&push)?;
                    if revoked == Some(push.sub.as_str()) {
                        reached.closed += closed;
                    }
                }
                Err(why) if !push_matters(push.at, now_ms / 1000, self.max_lifetime) => {
                    store.unqueue(&push)?;
                    reached.gave_up.push((push.channel, why));
                }
                Err(why) => {
                    let attempts = push.attempts.saturating_add(1);
                    store.requeue(&push, attempts, now_ms + backoff_ms(attempts))?;
                    reached.failed.push((push.channel, why));
                }
            }
        }
        if let Some(sub) = revoked {
            reached.pending = !store.queued(Some(sub), i64::MAX, 1)?.is_empty();
        }
        Ok(reached)
    }

    /// The pushes due at the alarm.
    pub fn due(&mut self, store: &mut impl DirectoryStore, now_ms: i64) -> Result<Vec<Push>, String> {
        store.queued(None, now_ms, PUSH_BATCH)
    }

    /// The shard's one deadline: its next queued push; `None`: no alarm.
    pub fn poll_timeout(&self, store: &mut impl DirectoryStore) -> Result<Option<i64>, String> {
        store.next_due()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{lease_trusted_until, Revocations, Verdict, LEASE_MS};
    use super::*;

    /// The store in memory, as the SQL tables are.
    #[derive(Default)]
    struct Memory {
        revoked: HashMap<(String, String), i64>,
        joined: HashMap<(String, String), i64>,
        watchers: HashMap<String, i64>,
        /// (sub, channel) → (at, attempts, next_at)
        queue: HashMap<(String, String), (i64, u32, i64)>,
    }

    impl DirectoryStore for Memory {
        fn revocations(&mut self) -> Result<Vec<(String, String, i64)>, String> {
            Ok(self.revoked.iter().map(|((s, c), at)| (s.clone(), c.clone(), *at)).collect())
        }
        fn put_revocation(&mut self, sub: &str, scope: &str, at: i64) -> Result<(), String> {
            let e = self.revoked.entry((sub.into(), scope.into())).or_insert(at);
            *e = (*e).max(at);
            Ok(())
        }
        fn put_record(&mut self, sub: &str, channel: &str, at_ms: i64) -> Result<(), String> {
            self.joined.insert((sub.into(), channel.into()), at_ms);
            Ok(())
        }
        fn rooms_of(&mut self, sub: &str) -> Result<Vec<String>, String> {
            Ok(self.joined.keys().filter(|(s, _)| s == sub).map(|(_, c)| c.clone()).collect())
        }
        fn watchers(&mut self) -> Result<Vec<(String, i64)>, String> {
            Ok(self.watchers.iter().map(|(c, u)| (c.clone(), *u)).collect())
        }
        fn put_watcher(&mut self, channel: &str, until_ms: i64) -> Result<(), String> {
            let e = self.watchers.entry(channel.into()).or_insert(until_ms);
            *e = (*e).max(until_ms);
            Ok(())
        }
        fn prune(&mut self, revoked_before: i64, recorded_before: i64, now_ms: i64) -> Result<(), String> {
            self.revoked.retain(|_, at| *at >= revoked_before);
            self.joined.retain(|_, at| *at >= recorded_before);
            self.watchers.retain(|_, until| *until >= now_ms);
            Ok(())
        }
        fn queue(&mut self, push: &Push, next_at: i64) -> Result<(), String> {
            let e = self.queue.entry((push.sub.clone(), push.channel.clone())).or_insert((push.at, 0, next_at));
            *e = (e.0.max(push.at), 0, next_at);
            Ok(())
        }
        fn queued(&mut self, sub: Option<&str>, due_by: i64, limit: usize) -> Result<Vec<Push>, String> {
            let mut due: Vec<(i64, Push)> = self
                .queue
                .iter()
                .filter(|((s, _), (_, _, next))| sub.is_none_or(|x| x == s) && *next <= due_by)
                .map(|((s, c), (at, attempts, next))| (*next, Push { sub: s.clone(), channel: c.clone(), at: *at, attempts: *attempts }))
                .collect();
            due.sort_by(|a, b| (a.0, &a.1.channel).cmp(&(b.0, &b.1.channel)));
            Ok(due.into_iter().take(limit).map(|(_, p)| p).collect())
        }
        fn unqueue(&mut self, push: &Push) -> Result<(), String> {
            let key = (push.sub.clone(), push.channel.clone());
            if self.queue.get(&key).is_some_and(|(at, _, _)| *at <= push.at) {
                self.queue.remove(&key);
            }
            Ok(())
        }
        fn requeue(&mut self, push: &Push, attempts: u32, next_at: i64) -> Result<(), String> {
            if let Some(e) = self.queue.get_mut(&(push.sub.clone(), push.channel.clone())) {
                (e.1, e.2) = (attempts, next_at);
            }
            Ok(())
        }
        fn next_due(&mut self) -> Result<Option<i64>, String> {
            Ok(self.queue.values().map(|(_, _, next)| *next).min())
        }
    }

    const NOW: i64 = 1_800_000_000_000;
    const LIFETIME: i64 = 900;

    fn shard() -> (Directory, Memory) {
        (Directory::new(LIFETIME, LEASE_MS), Memory::default())
    }

    fn subs(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn channels(pushes: &[Push]) -> Vec<&str> {
        let mut c: Vec<&str> = pushes.iter().map(|p| p.channel.as_str()).collect();
        c.sort();
        c
    }

    /// Every push lands, closing `closed` sockets each.
    fn all_land(pushes: &[Push], closed: u32) -> Vec<(Push, Result<u32, String>)> {
        pushes.iter().map(|p| (p.clone(), Ok(closed))).collect()
    }

    #[test]
    fn a_revocation_before_the_record_is_in_its_answer_and_one_after_it_reaches_the_room() {
        let (mut d, mut s) = shard();
        let secs = NOW / 1000;
        // Before: the record's answer carries it, and the room refuses the welcome.
        assert!(d.revoke(&mut s, "early", None, secs, NOW).unwrap().is_empty(), "recorded nowhere yet");
        let (answer, _) = d.joined(&mut s, "orders:v", &subs(&["early", "late"]), false, NOW + 1).unwrap();
        assert_eq!(answer, [Some(secs), None]);
        // After: the `/revoke` finds the record and pushes to the room.
        let pushes = d.revoke(&mut s, "late", None, secs + 5, NOW + 2).unwrap();
        assert_eq!(channels(&pushes), ["orders:v"]);
        let reached = d.pushed(&mut s, all_land(&pushes, 2), Some("late"), NOW + 3).unwrap();
        assert_eq!(reached, Reached { closed: 2, ..Reached::default() });
        assert_eq!(d.poll_timeout(&mut s).unwrap(), None, "nothing left: no alarm");
    }

    #[test]
    fn a_revocation_of_named_channels_pushes_only_there_and_to_the_leaseholders_among_them() {
        let (mut d, mut s) = shard();
        d.joined(&mut s, "orders:a", &subs(&["x"]), true, NOW).unwrap();
        d.joined(&mut s, "orders:b", &subs(&["y"]), true, NOW).unwrap();
        d.joined(&mut s, "chat:c", &subs(&["u"]), false, NOW).unwrap();
        let pushes = d.revoke(&mut s, "u", Some(&subs(&["orders:b", "payment:p"])), NOW / 1000, NOW + 1).unwrap();
        assert_eq!(channels(&pushes), ["orders:b", "payment:p"]);
        // The scope refuses there only.
        let (answer, _) = d.joined(&mut s, "orders:a", &subs(&["u"]), false, NOW + 2).unwrap();
        assert_eq!(answer, [None]);
        let (answer, _) = d.joined(&mut s, "payment:p", &subs(&["u"]), false, NOW + 2).unwrap();
        assert_eq!(answer, [Some(NOW / 1000)]);
    }

    #[test]
    fn a_failed_push_answers_pending_until_a_retry_of_the_same_request_lands_it_and_only_it() {
        let (mut d, mut s) = shard();
        d.joined(&mut s, "orders:v", &subs(&["u"]), true, NOW).unwrap();
        d.joined(&mut s, "payment:p", &subs(&["u"]), false, NOW).unwrap();
        let t = NOW / 1000;
        let pushes = d.revoke(&mut s, "u", None, t, NOW + 1).unwrap();
        assert_eq!(channels(&pushes), ["orders:v", "payment:p"]);
        let outcomes = pushes.iter().map(|p| (p.clone(), if p.channel == "orders:v" { Err("down".into()) } else { Ok(1) })).collect();
        let first = d.pushed(&mut s, outcomes, Some("u"), NOW + 2).unwrap();
        assert_eq!((first.closed, first.pending), (1, true), "not in force everywhere: said so");
        assert_eq!(first.failed, [("orders:v".to_owned(), "down".to_owned())]);
        assert_eq!(d.poll_timeout(&mut s).unwrap(), Some(NOW + 2 + 1_000), "the alarm retries it");
        // The kit retries the same request before the alarm: only the failed push is made.
        let again = d.revoke(&mut s, "u", None, t, NOW + 3).unwrap();
        assert_eq!(channels(&again), ["orders:v"]);
        let second = d.pushed(&mut s, all_land(&again, 1), Some("u"), NOW + 4).unwrap();
        assert_eq!((second.closed, second.pending), (1, false));
        assert_eq!(d.poll_timeout(&mut s).unwrap(), None);
        // And again: nothing to push, nothing pending.
        assert!(d.revoke(&mut s, "u", None, t, NOW + 5).unwrap().is_empty());
        // An older request replayed later changes nothing.
        assert!(d.revoke(&mut s, "u", None, t - 100, NOW + 6).unwrap().is_empty());
        assert_eq!(d.joined(&mut s, "chat:x", &subs(&["u"]), false, NOW + 7).unwrap().0, [Some(t)]);
    }

    #[test]
    fn the_alarm_retries_failed_pushes_with_backoff_and_gives_up_once_they_no_longer_matter() {
        let (mut d, mut s) = shard();
        d.joined(&mut s, "orders:v", &subs(&["u"]), false, NOW).unwrap();
        let t = NOW / 1000;
        let pushes = d.revoke(&mut s, "u", None, t, NOW).unwrap();
        let fail = |p: &[Push]| p.iter().map(|p| (p.clone(), Err::<u32, String>("down".into()))).collect::<Vec<_>>();
        d.pushed(&mut s, fail(&pushes), Some("u"), NOW).unwrap();
        let mut now = NOW;
        let mut waits = Vec::new();
        while let Some(at) = d.poll_timeout(&mut s).unwrap() {
            assert!(d.due(&mut s, at - 1).unwrap().is_empty(), "nothing before its time");
            waits.push(at - now);
            now = at;
            let due = d.due(&mut s, now).unwrap();
            assert_eq!(due.len(), 1);
            d.pushed(&mut s, fail(&due), None, now).unwrap();
        }
        assert_eq!(waits[..4], [1_000, 2_000, 4_000, 8_000]);
        // Given up once every token it could refuse has expired, not before.
        assert!(!push_matters(t, now / 1000, LIFETIME) && push_matters(t, (now - waits[waits.len() - 1]) / 1000, LIFETIME));
    }

    #[test]
    fn a_lease_registers_the_room_so_every_later_revocation_of_the_shards_users_reaches_it() {
        let (mut d, mut s) = shard();
        d.revoke(&mut s, "old", None, NOW / 1000 - 10, NOW).unwrap();
        let (_, lease) = d.joined(&mut s, "orders:v", &subs(&["first"]), true, NOW).unwrap();
        assert_eq!(lease, Some(Lease { ms: LEASE_MS, revoked: vec![("old".into(), NOW / 1000 - 10)] }));
        // A user never recorded anywhere: the leaseholder is reached.
        let pushes = d.revoke(&mut s, "never-seen", None, NOW / 1000, NOW + 1).unwrap();
        assert_eq!(channels(&pushes), ["orders:v"]);
        // Long after the room stopped trusting the lease, while a socket it welcomed at the
        // lease's last moment may still live, the room is still pushed to.
        let late = NOW + watch_ms(LEASE_MS, LIFETIME) - 1;
        assert_eq!(channels(&d.revoke(&mut s, "another", None, late / 1000, late).unwrap()), ["orders:v"]);
        // Then no more: the room's records reach the users who stayed (renewed at refresh).
        let after = NOW + watch_ms(LEASE_MS, LIFETIME) + 1;
        assert!(d.revoke(&mut s, "third", None, after / 1000, after).unwrap().is_empty());
    }

    #[test]
    fn leaseholders_are_bounded_and_a_full_shard_grants_no_lease() {
        let (mut d, mut s) = shard();
        for i in 0..MAX_WATCHERS {
            assert!(d.joined(&mut s, &format!("orders:{i}"), &subs(&["u"]), true, NOW).unwrap().1.is_some());
        }
        assert_eq!(d.joined(&mut s, "orders:one-more", &subs(&["u"]), true, NOW).unwrap().1, None);
        assert!(d.joined(&mut s, "orders:0", &subs(&["u"]), true, NOW).unwrap().1.is_some(), "renewing one's own is fine");
        // Once leases end they make room again.
        let later = NOW + watch_ms(LEASE_MS, LIFETIME) + 1;
        assert!(d.joined(&mut s, "orders:one-more", &subs(&["u"]), true, later).unwrap().1.is_some());
        // And a revocation pushes to at most PUSH_BATCH rooms per invocation: the rest wait
        // for the next (the answer says pending).
        const { assert!(MAX_WATCHERS < PUSH_BATCH) };
    }

    #[test]
    fn a_user_with_more_rooms_than_one_round_is_reached_over_retries_and_pending_until_then() {
        let (mut d, mut s) = shard();
        for i in 0..PUSH_BATCH + 3 {
            d.joined(&mut s, &format!("chat:{i}"), &subs(&["busy"]), false, NOW).unwrap();
        }
        let first = d.revoke(&mut s, "busy", None, NOW / 1000, NOW).unwrap();
        assert_eq!(first.len(), PUSH_BATCH);
        assert!(d.pushed(&mut s, all_land(&first, 0), Some("busy"), NOW).unwrap().pending);
        let rest = d.revoke(&mut s, "busy", None, NOW / 1000, NOW + 1).unwrap();
        assert_eq!(rest.len(), 3);
        assert!(!d.pushed(&mut s, all_land(&rest, 0), Some("busy"), NOW + 1).unwrap().pending);
    }

    #[test]
    fn a_restarted_shard_keeps_its_revocations_leaseholders_and_queue() {
        let (mut d, mut s) = shard();
        d.joined(&mut s, "orders:v", &subs(&["a"]), true, NOW).unwrap();
        let pushes = d.revoke(&mut s, "u", None, NOW / 1000, NOW).unwrap();
        d.pushed(&mut s, pushes.iter().map(|p| (p.clone(), Err("down".into()))).collect(), Some("u"), NOW).unwrap();
        // Evicted: a new instance over the same storage.
        let mut d = Directory::new(LIFETIME, LEASE_MS);
        assert_eq!(d.joined(&mut s, "chat:x", &subs(&["u"]), false, NOW + 1).unwrap().0, [Some(NOW / 1000)]);
        assert_eq!(channels(&d.revoke(&mut s, "v", None, NOW / 1000, NOW + 2).unwrap()), ["orders:v"], "still a leaseholder");
        let due = d.due(&mut s, NOW + 1_000).unwrap();
        assert!(due.iter().any(|p| p.sub == "u" && p.channel == "orders:v"), "the failed push is still queued");
    }

    #[test]
    fn records_and_revocations_expire_and_take_their_pushes_with_them() {
        let (mut d, mut s) = shard();
        d.joined(&mut s, "chat:x", &subs(&["u"]), false, NOW).unwrap();
        d.revoke(&mut s, "w", None, NOW / 1000, NOW).unwrap();
        let later = NOW + RECORD_KEPT_MS + 5_000;
        assert!(d.revoke(&mut s, "u", None, later / 1000, later).unwrap().is_empty(), "the record expired: no room to reach");
        assert_eq!(d.joined(&mut s, "chat:y", &subs(&["w"]), false, later).unwrap().0, [None], "too old to refuse any token");
        assert!(s.revoked.keys().all(|(sub, _)| sub != "w") && !s.joined.contains_key(&("u".into(), "chat:x".into())));
    }

    /// A room (its memory, its clock) and a shard (its own clock) playing a storm: the room
    /// leases, welcomes from memory, and every revocation of a user it welcomed reaches it
    /// or was in what it knew, whatever the offset between the two clocks.
    #[test]
    fn a_room_under_a_lease_never_welcomes_a_revoked_user_whatever_the_clock_offset() {
        for skew in [-86_400_000, -6_001, 0, 6_001, 86_400_000] {
            let (mut d, mut s) = shard();
            let mut room = Revocations::default();
            let shard_now = |t: i64| NOW + t;
            let room_now = |t: i64| NOW + skew + t;
            let users: Vec<String> = (0..4).map(|i| format!("fan-{i}")).collect();
            // The room asks at t=0 (its clock), the shard grants at t=50 (its clock).
            let (_, lease) = d.joined(&mut s, "orders:v", &users[..1], true, shard_now(50)).unwrap();
            let lease = lease.unwrap();
            room.grant(lease_trusted_until(room_now(0), lease.ms), &lease.revoked, room_now(100));
            // A revocation at t=1000 reaches the room (the push lands).
            let pushes = d.revoke(&mut s, &users[1], None, (NOW + 1_000) / 1000, shard_now(1_000)).unwrap();
            assert_eq!(channels(&pushes), ["orders:v"], "skew {skew}");
            for p in &pushes {
                room.revoke(&p.sub, p.at, room_now(1_100));
            }
            assert_eq!(room.verdict(&users[1], true, room_now(1_200)), Verdict::Known(Some((NOW + 1_000) / 1000)), "skew {skew}");
            assert_eq!(room.verdict(&users[2], true, room_now(1_200)), Verdict::Leased, "skew {skew}");
            // At every moment the room trusts the lease, the shard still pushes to it.
            let last_trusted = lease_trusted_until(room_now(0), LEASE_MS) - 1 - room_now(0);
            assert_eq!(room.verdict(&users[2], true, room_now(last_trusted)), Verdict::Leased, "skew {skew}");
            assert_eq!(room.verdict(&users[2], true, room_now(last_trusted + 1)), Verdict::Ask, "skew {skew}");
            let at = shard_now(last_trusted);
            assert_eq!(channels(&d.revoke(&mut s, &users[3], None, at / 1000, at).unwrap()), ["orders:v"], "skew {skew}");
        }
    }
}
