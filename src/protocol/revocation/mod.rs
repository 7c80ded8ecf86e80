//! Revocation: `POST /revoke` closes a user's sockets and refuses their older tokens.
//!
//! # Invariants
//!
//! Each is a host test here (`directory.rs`, `room.rs`); 1 and 2 are also real-runtime tests
//! (tests/revocation.rs, tests/bounds.rs) and contract (docs/protocol.md, "Revocation").
//!
//! 1. **Refused once answered.** A token whose `sub` was revoked at `t` (in a scope covering
//!    the channel) with `iat ≤ t` never receives a `welcome` or a `refreshed`, in any room,
//!    once `/revoke` has answered 200, whatever object call failed before.
//! 2. **A bounded, true answer.** `/revoke` makes one round of pushes, each bounded by
//!    [`PUSH_TIMEOUT_MS`], and answers 200 only when every room that holds or may admit a
//!    socket of the user in the scope took its push; otherwise `503 {"error":"pending"}`: the
//!    revocation is recorded, what was not reached is queued (retried from the directory's
//!    alarm), and the same request again pushes only what is still queued.
//! 3. **One clock per decision.** No object compares its clock with an instant from another:
//!    a room trusts a lease for a duration on its own clock, counted from before it asked;
//!    the shard pushes for a longer duration on its clock, counted from the grant; records
//!    are stamped by the shard. Clock offsets between objects change nothing (host test).
//! 4. **Everything bounded**, each by a named constant: a room's memory of users
//!    ([`MAX_ENTRIES`]) and its one lease; a shard's
//!    leaseholders ([`MAX_WATCHERS`]), the revocations a lease carries ([`MAX_LEASED`]), its
//!    revocations ([`KEPT_SECS`]) and records ([`RECORD_KEPT_MS`]) by age, its queued pushes by
//!    [`push_matters`] (given up once every token they could refuse has expired), and the
//!    pushes of one invocation ([`PUSH_BATCH`]).
//!
//! # Design
//!
//! Revocations live in a few long-lived *directory* objects, a fixed, small set that stays
//! warm. A room talks to one of them only: the shard named by a hash of its *channel*
//! ([`directory_shard`]), which holds the room's records and its lease. So a room asks one
//! object about every user it admits, and holds one lease, however many users it sees (a
//! venue's first storm wakes one shard, not every shard its users hash to). `/revoke` goes to
//! every shard (or, for named channels, to theirs: [`revoke_routes`]): each keeps the
//! revocation, for its rooms' questions and leases, and reaches its own rooms. Revocations
//! are rare; connects are not. The shard's rules are [`directory`]; the room's are [`room`].
//!
//! - **Record.** Before a room welcomes a user it does not know, it records in the shard
//!   that the user is here, answered with the revocation as of the record: a `/revoke`
//!   before it is in the answer (no `welcome`), one after it finds the record and pushes to
//!   the room. Records outlive departures (a departure costs no call) and expire after a day;
//!   a room renews a staying user's record at refresh, before it answers `refreshed`.
//! - **Lease.** A room that many new users join takes a lease on its shard instead of
//!   recording each: the shard answers with its live revocations that apply there and, for
//!   [`watch_ms`] from the grant (the lease plus a token's whole life), pushes every later
//!   one to the room. The room welcomes new users from memory for 90% of the lease
//!   ([`lease_trusted_until`]). A socket welcomed so is reached by those pushes until its
//!   token expires; its first refresh records it (before `refreshed`; a record that fails
//!   closes the socket 1011), so from then on the record reaches it. No record after a
//!   welcome, no timer in the room: a lost room instance loses only its memory, and asks.
//! - **Reach.** In each shard it goes to, `/revoke` records the revocation, queues every room
//!   of that shard to reach (leaseholders, and the named channels or the user's recorded
//!   rooms) in the same write, and pushes the user's queue at once, in parallel; the Worker
//!   answers 200 only when every shard did. What fails stays queued, retried with the one
//!   backoff ([`crate::protocol::retry`]) from the shard's alarm.
//!
//! What a room remembers ([`Revocations`]) spares a reconnect the question. It stays correct
//! because an entry exists only for a user the directory was asked about with a record here
//! (or under a lease), and from then on every revocation of that user is pushed to this room.
//! Answers and pushes merge by taking the later revocation, so neither is lost to the other.

pub mod directory;
pub mod room;

use std::collections::HashMap;

use crate::protocol::channel::Channel;

pub use directory::{Directory, DirectoryStore, Push, MAX_WATCHERS, PUSH_BATCH, PUSH_TIMEOUT_MS};
pub use room::{Revocations, Verdict, LEASE_FROM_ASK, MAX_ENTRIES, RECORD_RENEW_MS, TTL_MS};

/// The scope under which a revocation of all of a user's channels is recorded.
pub const ALL_CHANNELS: &str = "*";

/// Directory objects. Fixed for a deployment's life: a channel must always hash to the shard
/// holding its records and lease (changing it needs a migration that moves the rows).
pub const DIRECTORY_SHARDS: u32 = 16;

/// Revocations older than this are dropped from a directory (on its next `/revoke`). A token
/// lives at most `TOKEN_MAX_LIFETIME` (15 minutes by default), so only the last quarter hour
/// can refuse one; a day leaves room for any configured lifetime and clock skew.
pub const KEPT_SECS: i64 = 24 * 60 * 60;

/// How long a directory keeps a record of where a user joined.
pub const RECORD_KEPT_MS: i64 = 24 * 60 * 60 * 1000;

/// How long a room may welcome a shard's users under a lease, counted by the shard from
/// the grant (ms). See [`lease_trusted_until`] and [`watch_ms`].
pub const LEASE_MS: i64 = 60 * 1000;
/// A shard with more live revocations than this grants no lease: its rooms record each new
/// user before the welcome instead (the answer stays small, and such a shard is rare).
pub const MAX_LEASED: usize = 1_000;
/// Slack between the backend's clock (a revocation's time) and the edge's (a token's age),
/// and for a room's alarm that closes an expired socket a little late.
pub const CLOCK_SLACK_SECS: i64 = 60;

/// The name of the directory object a room of `channel` asks, records its users in and
/// takes its lease from.
pub fn directory_shard(channel: &Channel) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(channel.to_string().as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % DIRECTORY_SHARDS;
    shard_name(n)
}

fn shard_name(n: u32) -> String {
    ["shard-", &n.to_string()].concat()
}

/// Where a `/revoke` goes, with each shard's share of the scope: every shard when it covers
/// all of the user's channels (`None`: any room may hold or admit the user, and every shard
/// answers some room's questions); otherwise the named channels' shards, each with its own.
pub fn revoke_routes(channels: Option<&[Channel]>) -> Vec<(String, Option<Vec<Channel>>)> {
    let Some(named) = channels else {
        return (0..DIRECTORY_SHARDS).map(|n| (shard_name(n), None)).collect();
    };
    let mut routes: Vec<(String, Option<Vec<Channel>>)> = Vec::new();
    for channel in named {
        let shard = directory_shard(channel);
        match routes.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, Some(share))) => share.push(channel.clone()),
            _ => routes.push((shard, Some(vec![channel.clone()]))),
        }
    }
    routes
}

/// Until when a room trusts a lease (ms, its own clock): 90% of it, counted from when the
/// room *asked*. The shard counts from when it *granted*, which is later, so the room stops
/// trusting before the shard would: each measures a duration on its own clock.
pub fn lease_trusted_until(asked_at_ms: i64, lease_ms: i64) -> i64 {
    asked_at_ms.saturating_add(lease_ms / 10 * 9)
}

/// How long a shard pushes revocations to a room it granted a lease (ms, from the grant):
/// the lease, then the whole life of a token welcomed at its last moment (at most
/// `max_lifetime` after an `iat` up to the leeway ahead, closed by the room's alarm up to
/// the leeway after `exp`), with slack. Until then such a socket is reached by the push; it
/// records itself at its first refresh.
pub fn watch_ms(lease_ms: i64, max_lifetime_secs: i64) -> i64 {
    let token_life = max_lifetime_secs + 2 * crate::protocol::token::LEEWAY_SECS + CLOCK_SLACK_SECS;
    lease_ms.saturating_add(token_life.saturating_mul(1000))
}

/// What a shard hands a room with a lease: the revocations (sub, Unix seconds) it holds
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn payment(i: usize) -> Channel {
        Channel::parse(&format!("payment:order-{i}")).unwrap()
    }

    #[test]
    fn channels_spread_over_a_fixed_set_of_directory_shards() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let shard = directory_shard(&payment(i));
            assert_eq!(shard, directory_shard(&payment(i)), "stable");
            seen.insert(shard);
        }
        assert_eq!(seen.len(), DIRECTORY_SHARDS as usize, "every shard used, no other name");
        assert!(seen.iter().all(|s| s.starts_with("shard-")));
    }

    #[test]
    fn a_revoke_of_every_channel_goes_to_every_shard_and_a_named_one_to_its_channels_shards() {
        let all = revoke_routes(None);
        let names: std::collections::HashSet<&String> = all.iter().map(|(s, _)| s).collect();
        assert_eq!(names.len(), DIRECTORY_SHARDS as usize);
        assert!(all.iter().all(|(_, share)| share.is_none()), "each shard with the whole scope");
        // Two channels of one shard travel together; each other channel to its own shard.
        let a = payment(0);
        let same = (1..).map(payment).find(|c| directory_shard(c) == directory_shard(&a)).unwrap();
        let other = (1..).map(payment).find(|c| directory_shard(c) != directory_shard(&a)).unwrap();
        let routes = revoke_routes(Some(&[a.clone(), other.clone(), same.clone()]));
        assert_eq!(
            routes,
            vec![(directory_shard(&a), Some(vec![a, same])), (directory_shard(&other), Some(vec![other]))],
            "in the order named"
        );
    }

    #[test]
    fn a_failing_push_matters_until_every_token_it_could_refuse_has_expired() {
        let (at, lifetime) = (1_800_000_000, 900);
        let last = at + lifetime + crate::protocol::token::LEEWAY_SECS + CLOCK_SLACK_SECS;
        assert!(push_matters(at, at, lifetime));
        assert!(push_matters(at, last, lifetime), "a token issued at the revocation may still live");
        assert!(!push_matters(at, last + 1, lifetime));
    }

    #[test]
    fn a_shard_pushes_to_a_leaseholder_until_every_socket_welcomed_under_the_lease_has_expired() {
        let (lease, lifetime) = (LEASE_MS, 900);
        let leeway = crate::protocol::token::LEEWAY_SECS;
        // Welcomed at the lease's last trusted moment, with a token issued `leeway` ahead
        // and living `lifetime`, closed by the room's alarm up to `leeway` after it expires.
        let last_socket_closes = lease_trusted_until(0, lease) + (leeway + lifetime + leeway) * 1000;
        assert!(watch_ms(lease, lifetime) > last_socket_closes);
        assert!(lease_trusted_until(0, lease) < lease, "the room stops trusting first");
    }
}
