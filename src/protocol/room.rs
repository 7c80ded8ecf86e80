//! The room engine: one channel's sequence numbers, history, replay, dedupe, presence,
//! rate limits and expiry. One engine for every kind; the kinds differ by [`Policy`] only.
//!
//! It is sans-IO: storage is the [`Store`] port (SQLite in a Durable Object, a `Vec` in unit
//! tests), sockets are [`Member`] values (the Durable Object keeps them as hibernation
//! attachments), and time is an argument. The engine returns frames and decisions; the
//! Durable Object shell moves them to the runtime.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::channel::{Channel, Grants, Kind, Policy, Replay};
use super::frame::{self, ClientFrame, Present, Roster, StoredEvent, MAX_CLIENT_FRAME_BYTES};
use super::links::{self, Batch, InFlight, Link, LinkOrder, LinkResult, LinkStore};
use super::publish::Delivery;
use super::retry;
use super::revocation::Revocations;
use super::token::{Claims, TokenError};
use super::webhook::{self, Outbox, Queued};
use super::wire::{close, ErrorCode};
use retry::Settled;

/// Events kept at least: the last `MIN_EVENTS`, and everything of the last `MIN_AGE_MS`.
pub const HISTORY_MIN_EVENTS: u64 = 100;
pub const HISTORY_MIN_AGE_MS: i64 = 10 * 60 * 1000;
/// Beyond the newest `HISTORY_MIN_EVENTS`, older events are kept (up to `HISTORY_MIN_AGE_MS`)
/// only while they add up to at most this many bytes: retention is bounded in bytes too.
pub const HISTORY_MAX_EXTRA_BYTES: usize = 2 * 1024 * 1024;
/// A room prunes history when written at most this often (or sooner after a burst of bytes);
/// no timer does it, so an idle room holds no alarm.
pub const PRUNE_INTERVAL_MS: i64 = 60 * 1000;
/// A replay longer than either bound is answered with `reset` (PROTOCOL.md "Recovery"), so no
/// request can make an object load an unbounded history.
pub const MAX_REPLAY_EVENTS: u64 = 1000;
pub const MAX_REPLAY_BYTES: usize = 1024 * 1024;
/// What an `event` frame adds around an event's data, id and name (type, channel, seq, ts),
/// and what an inbox's copy adds besides (its `source`).
const FRAME_OVERHEAD_BYTES: usize = 96;
const SOURCE_OVERHEAD_BYTES: usize = 112;
/// A history read answers at most this many bytes of events (the reader pages on).
pub const MAX_READ_BYTES: usize = 4 * 1024 * 1024;
/// A chat `welcome` lists at most this many users (PROTOCOL.md; `count` tells the rest).
pub const MAX_PRESENCE_LISTED: usize = 100;
/// Users whose per-user rate window is tracked; beyond it, expired windows are dropped.
const MAX_TRACKED_RATES: usize = 10_000;
/// How long a churning room keeps its alarm after its last socket left (ms). At an interval
/// phones come and go, and a room with no staff dashboard open empties and fills again many
/// times a second: dropping the alarm at each emptying and setting it again at the next
/// connect was two storage writes each time (20 in a storm of 500 users, 50 at a time:
/// bench/README.md). A room that empties again within this long of its last emptying keeps
/// its alarm this long: the next connects find it set; it fires once, finds nothing to do,
/// and is not set again. A room that empties once (a payment page left) drops it at once,
/// as an idle room holds none.
pub const LINGER_MS: i64 = 2_000;
/// Users whose socket bound a room keeps; beyond it, a connect counts (correct, slower).
const MAX_SOCKET_BOUNDS: usize = 10_000;
/// After this many malformed or unexpected frames a connection is closed with 4400.
pub const MAX_STRIKES: u32 = 10;
pub const MAX_CHAT_TEXT_CHARS: usize = 2000;
/// Display fields are cut to this many characters (attachments are limited to 2 KiB).
pub const MAX_DISPLAY_CHARS: usize = 64;

/// Storage port. Every method is synchronous, as Durable Object SQLite is: the engine never
/// yields between reading `latest_seq` and appending, so events cannot interleave. It
/// includes the webhook [`Outbox`] and the links into inboxes ([`LinkStore`]).
pub trait Store: Outbox + LinkStore {
    fn latest_seq(&self) -> Result<u64, String>;
    /// Appends an event under its dedupe `key` and makes its `seq` the latest, in one
    /// statement; unless `key` is held by a retained event: then returns that event's `seq`
    /// and changes nothing. Ids are remembered exactly as long as their event is retained
    /// (PROTOCOL.md: at least the retention window).
    fn append_unique(&mut self, key: &str, event: &StoredEvent) -> Result<Option<u64>, String>;
    /// Events with `after < seq <= upto`, ascending.
    fn events_between(&self, after: u64, upto: u64) -> Result<Vec<StoredEvent>, String>;
    /// The smallest retained `seq`, if any event is retained.
    fn oldest_seq(&self) -> Result<Option<u64>, String>;
    /// Drops events with `seq < below_seq` and `ts < before_ts`.
    fn prune_events(&mut self, below_seq: u64, before_ts: i64) -> Result<(), String>;
    /// The sizes (bytes of data, id and event name) of the newest `count` events with
    /// `seq > after`, newest first: what a bound can be checked on without loading events.
    fn sizes_after(&self, after: u64, count: usize) -> Result<Vec<(u64, usize)>, String>;
}

/// What a room keeps in memory only: losing it (eviction, restart) is always safe, because
/// each part is a cache or a bound that resets to "ask again" or "start a fresh window".
#[derive(Debug, Default)]
pub struct Memory {
    /// Client frames per user in the current window: sub → (window start ms, count).
    rates: HashMap<String, (i64, u32)>,
    /// When history was last pruned here, and the bytes appended since.
    pruned_at: Option<i64>,
    appended_bytes: usize,
    /// Users' revocations as the directory told or pushed them.
    pub revocations: Revocations,
    /// sub → a bound on the user's sockets here, never below the true count (see
    /// [`Memory::under_socket_cap`]).
    socket_bounds: HashMap<String, usize>,
    /// The room's open sockets, once counted in this instance ([`Memory::socket_left`]).
    open_sockets: Option<usize>,
    /// When the room last emptied (ms), and until when it keeps its alarm for that
    /// ([`LINGER_MS`]; only while it has no socket).
    emptied_ms: Option<i64>,
    linger_until: Option<i64>,
    /// Forwarding calls under way, by inbox.
    forwarding: InFlight,
    /// Copies given up (a day of failures, or past [`links::FORWARD_QUEUE_MAX`]) since the
    /// shell last asked (logged).
    forwards_dropped: u64,
}

impl Memory {
    /// Copies given up since the last call (for the log).
    pub fn take_forwards_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.forwards_dropped)
    }

    /// The one revocation rule, used at connect, on a `/revoke` push and at refresh: a token
    /// of `sub` issued at `iat` is refused when a revocation at or after it is known, whether
    /// the socket carried it (`carried`) or the room learned it since.
    pub fn refuses(&self, sub: &str, iat: Option<i64>, carried: Option<i64>, now_ms: i64) -> bool {
        let learned = self.revocations.lookup(sub, now_ms).flatten();
        is_revoked(iat, carried.max(learned))
    }

    /// A revocation pushed by `/revoke`: remembered, and applied to one of the user's
    /// sockets (its attachment carries it from now on). True: close that socket with 4401.
    pub fn apply_revocation(&mut self, member: &mut Member, revoked_at: i64, now_ms: i64) -> bool {
        self.revocations.revoke(&member.sub, revoked_at, now_ms);
        member.revoked_before = member.revoked_before.max(Some(revoked_at));
        is_revoked(member.iat, member.revoked_before)
    }

    /// A socket was accepted here (counted when the room's count is known).
    pub fn socket_opened(&mut self) {
        self.linger_until = None;
        if let Some(n) = &mut self.open_sockets {
            *n += 1;
        }
    }

    /// A socket of `sub` left (once per socket): the user's bound and the room's count go
    /// down by one, with no socket listed, so a storm of departures costs O(1) each. A
    /// woken instance counts the room's sockets once (`count`: those still open). Returns
    /// whether the room is now empty as far as it knows (the caller recomputes the alarm,
    /// from the sockets themselves: a wrong count costs an alarm, never a missed one).
    ///
    /// Their rate window stays for as long as it can matter (it expires with its period,
    /// [`MAX_TRACKED_RATES`] bounds the map): closing and reconnecting does not reset it.
    /// What the room knows of their revocation stays (until it expires): the directory's
    /// record of them here stays too, so a reconnect soon after costs no question.
    pub fn socket_left(&mut self, sub: &str, now_ms: i64, count: impl FnOnce() -> usize) -> bool {
        if let Some(bound) = self.socket_bounds.get_mut(sub) {
            *bound = bound.saturating_sub(1);
            if *bound == 0 {
                self.socket_bounds.remove(sub);
            }
        }
        let open = match self.open_sockets {
            Some(n) => n.saturating_sub(1),
            None => count(),
        };
        self.open_sockets = Some(open);
        if open == 0 {
            // Emptied again soon after the last time: churning, so the alarm lingers.
            let churning = self.emptied_ms.is_some_and(|t| now_ms.saturating_sub(t) < LINGER_MS);
            self.linger_until = churning.then(|| now_ms.saturating_add(LINGER_MS));
            self.emptied_ms = Some(now_ms);
        }
        open == 0
    }

    /// Until when an emptied room keeps its alarm ([`LINGER_MS`]); `None` once that has passed,
    /// while the room has sockets, and when it is not churning.
    fn lingers_until(&self, now_ms: i64) -> Option<i64> {
        self.linger_until.filter(|&until| until > now_ms)
    }

    /// Whether `sub` surely holds fewer than `cap` sockets here, counting one more for the
    /// socket now joining. Counting a user's sockets in the runtime lists every one of them
    /// (a connect of a user with n sockets would cost O(n)); so the room keeps a bound (+1
    /// per join, -1 per departure, [`Memory::socket_left`]: every socket counted once, and
    /// one not counted makes it overcount, never under) and recounts (`count`) when it is
    /// unknown (a woken instance) or has reached the cap. False: the caller reads the
    /// user's sockets and lets [`Room::join`] decide.
    pub fn under_socket_cap(&mut self, sub: &str, cap: usize, count: impl FnOnce() -> usize) -> bool {
        let known = self.socket_bounds.get(sub).copied().filter(|&n| n < cap);
        let n = known.unwrap_or_else(count);
        if self.socket_bounds.len() >= MAX_SOCKET_BOUNDS && !self.socket_bounds.contains_key(sub) {
            return n < cap; // not remembered: the next connect of this user counts again
        }
        self.socket_bounds.insert(sub.to_owned(), n + 1);
        n < cap
    }
}

/// Per-connection limits (configuration with defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Client frames per window; beyond it `rate_limited`, at twice it close 4429.
    pub rate_count: u32,
    pub rate_window_ms: i64,
    /// Open sockets one `sub` may hold in one room (tabs, devices); beyond it: close 4429.
    pub sockets_per_sub: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { rate_count: 20, rate_window_ms: 10_000, sockets_per_sub: 8 }
    }
}

/// One socket of the room, as stored in its hibernation attachment (and handed over in a
/// connect's ticket). A member at a default (no name, no strikes yet) leaves it out: every
/// connect writes one and every departure reads one, field by field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Empty only in a ticket: the room gives it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub conn: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Token expiry (Unix seconds); the socket is closed with 4401 once it passes.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The token's `publish` grant covers this channel.
    pub can_publish: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_start: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_count: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub strikes: u32,
    /// Tokens of this `sub` issued at or before this time (Unix seconds) were revoked:
    /// a refresh with one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_before: Option<i64>,
    /// When the socket connected (ms): how long it stayed open is in its `closed` log line.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub joined_ms: i64,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

/// The runtime tag a member's socket carries, so the host can find one user's sockets
/// without reading every attachment. Tags are limited to 256 characters: long subs are hashed
/// (the two forms cannot collide: their prefixes differ).
pub fn member_tag(sub: &str) -> String {
    if sub.len() <= 200 {
        ["sub:", sub].concat()
    } else {
        use sha2::{Digest, Sha256};
        ["sub#", &super::signature::hex(&Sha256::digest(sub.as_bytes()))].concat()
    }
}

fn display(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| s.chars().take(MAX_DISPLAY_CHARS).collect())
}

/// A token's claims as the Worker verified them for one channel: what a room needs to build
/// its member, and nothing more (the grants are decided; the token itself stays behind).
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub sub: String,
    pub name: Option<String>,
    pub role: Option<String>,
    pub exp: i64,
    pub iat: Option<i64>,
    /// The token's `publish` grant covers the channel.
    pub can_publish: bool,
    /// On an inbox: the chats the token may post to through it (see [`Room::keep_answers`]).
    pub answers: Vec<String>,
}

impl Verified {
    pub fn new(claims: &Claims, channel: &Channel) -> Verified {
        Verified {
            sub: claims.sub.clone(),
            name: display(&claims.name),
            role: display(&claims.role),
            exp: claims.exp,
            iat: claims.iat,
            can_publish: claims.publish.allows(channel),
            answers: answerable(claims, channel),
        }
    }
}

/// On an inbox, the chats the token may answer through it (its `publish` entries for
/// chats, as written); elsewhere nothing.
fn answerable(claims: &Claims, channel: &Channel) -> Vec<String> {
    if channel.kind().policy().sends_to_named_chat {
        claims.publish.entries_of(Kind::Chat)
    } else {
        Vec::new()
    }
}

impl Member {
    /// The member a verified socket becomes, under connection id `conn`.
    pub fn admit(conn: String, verified: Verified) -> Member {
        let Verified { sub, name, role, exp, iat, can_publish, answers: _ } = verified;
        Member {
            conn,
            sub,
            name,
            role,
            exp,
            iat,
            can_publish,
            window_start: 0,
            window_count: 0,
            strikes: 0,
            revoked_before: None,
            joined_ms: 0,
        }
    }
}

/// Whether a token issued at `iat` falls under a revocation at `revoked_at`. Tokens without
/// `iat` cannot prove they are newer, and the same second counts as before (seconds are
/// all a token carries).
pub fn is_revoked(iat: Option<i64>, revoked_at: Option<i64>) -> bool {
    match (iat, revoked_at) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(iat), Some(at)) => iat <= at,
    }
}

/// The deployed build and the joining client's, for the welcome and the 4426 rule.
#[derive(Clone, Copy, Debug, Default)]
pub struct Builds<'a> {
    /// This deployment's build id (sent in every `welcome`).
    pub server: &'a str,
    /// The client's `build=`, if it sent one.
    pub client: Option<&'a str>,
    /// `REQUIRE_CURRENT_BUILD`: a client on another build is closed with 4426.
    pub require_current: bool,
}

impl Builds<'_> {
    pub fn outdated(&self) -> bool {
        self.require_current && self.client.is_some_and(|client| client != self.server)
    }
}

/// What a joining socket receives, and what the room hears about it.
#[derive(Debug, Default, PartialEq)]
pub struct Join {
    /// `welcome`, then replayed events or a `reset`, in order.
    pub frames: Vec<String>,
    /// A `presence` joined frame for everyone, when this is the user's first socket.
    pub broadcast: Option<String>,
    /// Close right after the frames (4426 for an outdated build).
    pub close: Option<(u16, &'static str)>,
}

/// The outcome of one published event on this channel.
#[derive(Debug, PartialEq)]
pub struct Published {
    pub seq: u64,
    pub duplicate: bool,
    /// The `event` frame to send to every socket; `None` for a duplicate.
    pub frame: Option<String>,
    /// The channel is linked into an inbox: copies are due now.
    pub forwarded: bool,
}

/// A chat message posted through an inbox, as the inbox sends it to the chat: the author
/// from the inbox socket's token, the frame's id and text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub sub: String,
    pub name: Option<String>,
    pub role: Option<String>,
    pub id: String,
    pub text: String,
}

/// The chat's answer to a [`Post`]: the inbox tells its socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Posted {
    /// Accepted, or a repeated id already delivered once.
    Accepted,
    Refused {
        code: ErrorCode,
        message: String,
    },
    /// The user is at twice the chat's rate: the inbox socket is closed with 4429.
    TooFast,
}

/// What a chat accepted from a client (its own socket or an inbox): for the shell to fan out,
/// queue for the webhook and forward.
struct Accepted {
    frame: String,
    stored: StoredEvent,
    forwarded: bool,
}

impl Accepted {
    fn effects(self) -> Vec<Effect> {
        let mut effects = vec![Effect::Broadcast(self.frame), Effect::ChatAccepted(self.stored)];
        if self.forwarded {
            effects.push(Effect::Forward);
        }
        effects
    }
}

/// What to do after a client frame.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Send to the socket that spoke.
    Reply(String),
    /// Send to every socket of the room (a chat message).
    Broadcast(String),
    /// A client chat message was accepted (for the backend webhook).
    ChatAccepted(StoredEvent),
    /// The member's attachment changed and must be saved.
    Save,
    /// Close the socket that spoke.
    Close(u16, &'static str),
    /// Renew the directory's record that the speaker's user is here (and apply the
    /// revocation it answers with): see [`Revocations::needs_record`].
    RenewRecord,
    /// Copies were queued for inboxes: the room's deadline is now.
    Forward,
    /// Post to a chat on the speaker's behalf (an inbox answering a linked chat); the chat's
    /// [`Posted`] answer goes back to the speaker ([`Room::relayed`]).
    Relay(Channel, Post),
}

/// What the room's deadline found due: webhook calls and forwarding calls, sent by the shell
/// in parallel and reported back one by one.
#[derive(Debug, Default, PartialEq)]
pub struct Due {
    pub webhooks: Vec<Queued>,
    pub forwards: Vec<Batch>,
}

pub struct Room<'a, S: Store> {
    pub channel: &'a Channel,
    pub policy: Policy,
    pub store: &'a mut S,
    pub memory: &'a mut Memory,
    pub limits: Limits,
}

/// What a client frame is judged with besides the frame itself.
pub struct Incoming<'v> {
    pub now_ms: i64,
    /// Checks a refresh token (signature and claims).
    pub verify: &'v dyn Fn(&str) -> Result<Claims, TokenError>,
}

impl<'a, S: Store> Room<'a, S> {
    pub fn new(channel: &'a Channel, store: &'a mut S, memory: &'a mut Memory, limits: Limits) -> Self {
        Room { channel, policy: channel.kind().policy(), store, memory, limits }
    }

    fn refuses(&self, sub: &str, iat: Option<i64>, carried: Option<i64>, now_ms: i64) -> bool {
        self.memory.refuses(sub, iat, carried, now_ms)
    }

    fn name(&self) -> String {
        self.channel.to_string()
    }

    /// A verified socket joins. `others` are the members already in the room; without
    /// presence, the user's own are enough, and none while they are fewer than the cap.
    pub fn join(
        &mut self,
        member: &Member,
        since: Option<u64>,
        builds: Builds<'_>,
        others: &[Member],
        now_ms: i64,
    ) -> Result<Join, String> {
        if self.refuses(&member.sub, member.iat, member.revoked_before, now_ms) {
            return Ok(Join { close: Some((close::UNAUTHENTICATED, "token revoked")), ..Join::default() });
        }
        if others.iter().filter(|o| o.sub == member.sub).count() >= self.limits.sockets_per_sub {
            return Ok(Join { close: Some((close::RATE_LIMITED, "too many sockets for this user")), ..Join::default() });
        }
        let channel = self.name();
        let latest = self.store.latest_seq()?;
        let everyone: Vec<&Member> = others.iter().chain([member]).collect();
        let present = self.policy.presence.then(|| roster(&everyone));
        let roster = present.as_ref().map(|p| Roster { present: &p[..p.len().min(MAX_PRESENCE_LISTED)], count: p.len() });
        let mut frames = vec![frame::welcome(&channel, &member.conn, latest, builds.server, member.exp, roster)];
        match self.replay(since, latest)? {
            Replayed::Events(events) => frames.extend(events.iter().map(|e| frame::event(&channel, e))),
            Replayed::Reset => frames.push(frame::reset(&channel, latest)),
        }
        let broadcast = (self.policy.presence && !others.iter().any(|o| o.sub == member.sub)).then(|| {
            let count = distinct_subs(everyone.iter().copied());
            frame::presence(&channel, "joined", &member.sub, member.name.as_deref(), member.role.as_deref(), count)
        });
        // An outdated client still gets its welcome (with the current build id) first.
        let close = builds.outdated().then_some((close::OUTDATED_BUILD, "client build is outdated"));
        Ok(Join { frames, broadcast, close })
    }

    /// What a joining socket is replayed: the gap after `since`, or the kind's default
    /// without it; `reset` when the gap is not held whole or exceeds the replay bounds.
    fn replay(&mut self, since: Option<u64>, latest: u64) -> Result<Replayed, String> {
        let since = match (since, self.policy.replay_without_since) {
            (Some(since), _) => since,
            (None, Replay::Nothing) => return Ok(Replayed::Events(Vec::new())),
            (None, Replay::Everything) => self.store.oldest_seq()?.map_or(latest, |oldest| oldest - 1),
            (None, Replay::Last(n)) => {
                // Recent context, not a gap to fill: as many of the last `n` as the byte bound takes.
                let sizes = self.store.sizes_after(0, n)?;
                let events = match self.fitting(&sizes).checked_sub(1).and_then(|i| sizes.get(i)) {
                    Some((first, _)) => self.store.events_between(first - 1, latest)?,
                    None => Vec::new(),
                };
                return Ok(Replayed::Events(events));
            }
        };
        if since >= latest {
            return Ok(Replayed::Events(Vec::new()));
        }
        let gap = latest - since;
        let held = self.store.oldest_seq()?.is_some_and(|oldest| oldest <= since + 1);
        if !held || gap > MAX_REPLAY_EVENTS {
            return Ok(Replayed::Reset);
        }
        let sizes = self.store.sizes_after(since, gap as usize)?;
        if self.fitting(&sizes) < sizes.len() {
            return Ok(Replayed::Reset);
        }
        Ok(Replayed::Events(self.store.events_between(since, latest)?))
    }

    /// How many of `sizes` (newest first) fit into one replay's byte bound as frames.
    fn fitting(&self, sizes: &[(u64, usize)]) -> usize {
        let copies = if self.policy.linkable { 0 } else { SOURCE_OVERHEAD_BYTES };
        let per_frame = FRAME_OVERHEAD_BYTES + self.name().len() + copies;
        let mut total = 0;
        sizes
            .iter()
            .take_while(|(_, size)| {
                total += size + per_frame;
                total <= MAX_REPLAY_BYTES
            })
            .count()
    }

    /// Backend events, in request order. A repeated `id` is not delivered again.
    pub fn publish(&mut self, deliveries: &[Delivery], now_ms: i64) -> Result<Vec<Published>, String> {
        let published = deliveries
            .iter()
            .map(|d| {
                let event = StoredEvent {
                    seq: 0,
                    id: d.id.clone(),
                    event: d.event.clone(),
                    data: d.data.get().to_owned(),
                    ts: now_ms,
                    source: None,
                };
                self.accept(&["p:", &d.id].concat(), event)
            })
            .collect();
        self.housekeeping(now_ms)?;
        published
    }

    /// Pruning on write: at most once per `PRUNE_INTERVAL_MS`, or at once after a burst of
    /// bytes, so retention stays bounded without a timer.
    fn housekeeping(&mut self, now_ms: i64) -> Result<(), String> {
        let due = self.memory.pruned_at.is_none_or(|at| now_ms - at >= PRUNE_INTERVAL_MS)
            || self.memory.appended_bytes > HISTORY_MAX_EXTRA_BYTES / 4;
        if due {
            self.prune(now_ms)?;
        }
        Ok(())
    }

    /// Stores an event (its `seq` is the room's next) under a dedupe key, or reports the
    /// earlier copy. A linked channel writes nothing more: its inboxes' cursors now lag.
    fn accept(&mut self, key: &str, mut event: StoredEvent) -> Result<Published, String> {
        event.seq = self.store.latest_seq()? + 1;
        if let Some(earlier) = self.store.append_unique(key, &event)? {
            return Ok(Published { seq: earlier, duplicate: true, frame: None, forwarded: false });
        }
        self.memory.appended_bytes += event.data.len() + event.id.len() + event.event.len();
        let forwarded = self.policy.linkable && self.store.links()?.iter().any(Link::holds);
        Ok(Published { seq: event.seq, duplicate: false, frame: Some(frame::event(&self.name(), &event)), forwarded })
    }

    /// A binary frame: the protocol has none, so it is unexpected (or too big).
    pub fn on_binary(&mut self, member: &mut Member, len: usize) -> Vec<Effect> {
        if len > MAX_CLIENT_FRAME_BYTES {
            return vec![Effect::Close(close::TOO_BIG, "frame too big")];
        }
        self.strike(member, frame::error(ErrorCode::BinaryUnsupported, "frames are text (JSON)"))
    }

    /// A text frame from `member`.
    pub fn on_text(&mut self, member: &mut Member, text: &str, incoming: &Incoming<'_>) -> Result<Vec<Effect>, String> {
        let now_ms = incoming.now_ms;
        if text.len() > MAX_CLIENT_FRAME_BYTES {
            return Ok(vec![Effect::Close(close::TOO_BIG, "frame too big")]);
        }
        let parsed = frame::parse_client_frame(text);
        if parsed == Ok(ClientFrame::Ping) {
            // Normally answered by the runtime's auto-response; this is the fallback.
            return Ok(vec![Effect::Reply(super::wire::PONG.to_owned())]);
        }
        // Every other client frame counts towards the rate limit, of the connection and of
        // the user across all their sockets here (more sockets do not raise it).
        if now_ms - member.window_start >= self.limits.rate_window_ms {
            member.window_start = now_ms;
            member.window_count = 0;
        }
        member.window_count += 1;
        let user_count = self.count_for_user(&member.sub, now_ms);
        let count = member.window_count.max(user_count);
        if count >= 2 * self.limits.rate_count {
            return Ok(vec![Effect::Close(close::RATE_LIMITED, "rate limited")]);
        }
        if count > self.limits.rate_count {
            return Ok(vec![Effect::Save, Effect::Reply(frame::error(ErrorCode::RateLimited, "too many messages, slow down"))]);
        }
        let mut effects = match parsed {
            Err(e) => self.strike(member, frame::error(e.code, e.message)),
            Ok(ClientFrame::Ping) => Vec::new(),
            Ok(ClientFrame::Refresh { token }) => self.refresh(member, &token, incoming),
            Ok(ClientFrame::Send { id, text, channel }) => self.send(member, &id, &text, channel.as_deref(), now_ms)?,
        };
        effects.insert(0, Effect::Save);
        Ok(effects)
    }

    /// Counts one frame of `sub` in the user's window; returns the window's count.
    fn count_for_user(&mut self, sub: &str, now_ms: i64) -> u32 {
        let window = self.limits.rate_window_ms;
        let rates = &mut self.memory.rates;
        if rates.len() >= MAX_TRACKED_RATES && !rates.contains_key(sub) {
            rates.retain(|_, (start, _)| now_ms - *start < window);
        }
        let (start, count) = rates.entry(sub.to_owned()).or_insert((now_ms, 0));
        if now_ms - *start >= window {
            (*start, *count) = (now_ms, 0);
        }
        *count = count.saturating_add(1);
        *count
    }

    fn strike(&mut self, member: &mut Member, error: String) -> Vec<Effect> {
        member.strikes += 1;
        if member.strikes > MAX_STRIKES {
            vec![Effect::Close(close::BAD_REQUEST, "too many malformed frames")]
        } else {
            vec![Effect::Save, Effect::Reply(error)]
        }
    }

    fn refresh(&mut self, member: &mut Member, token: &str, incoming: &Incoming<'_>) -> Vec<Effect> {
        match (incoming.verify)(token) {
            Ok(claims)
                if claims.sub == member.sub
                    && claims.channels.allows(self.channel)
                    && !self.refuses(&member.sub, claims.iat, member.revoked_before, incoming.now_ms) =>
            {
                member.exp = claims.exp;
                member.iat = claims.iat;
                member.can_publish = claims.publish.allows(self.channel);
                if self.keep_answers(&member.conn, &answerable(&claims, self.channel)).is_err() {
                    // The old grant must not outlive the token it came with: close instead.
                    return vec![Effect::Close(close::INTERNAL, "internal error")];
                }
                // A renewal first: a revocation in its answer closes the socket 4401, and a
                // `refreshed` must never come before that close.
                let mut effects = Vec::new();
                if self.memory.revocations.needs_record(&member.sub, incoming.now_ms) {
                    effects.push(Effect::RenewRecord);
                }
                effects.push(Effect::Reply(frame::refreshed(claims.exp)));
                effects
            }
            _ => vec![Effect::Close(close::UNAUTHENTICATED, "refresh refused")],
        }
    }

    fn send(&mut self, member: &mut Member, id: &str, text: &str, chat: Option<&str>, now_ms: i64) -> Result<Vec<Effect>, String> {
        if self.policy.sends_to_named_chat {
            return self.send_to_named_chat(member, id, text, chat);
        }
        if !self.policy.clients_may_send {
            return Ok(self.strike(member, frame::error(ErrorCode::Forbidden, "this channel takes no client messages")));
        }
        if !member.can_publish {
            return Ok(vec![Effect::Reply(frame::error(ErrorCode::Forbidden, "your token does not grant posting here"))]);
        }
        let author = Post {
            sub: member.sub.clone(),
            name: member.name.clone(),
            role: member.role.clone(),
            id: id.to_owned(),
            text: text.to_owned(),
        };
        Ok(match self.post_checked(&author, now_ms)? {
            Ok(Some(accepted)) => accepted.effects(),
            Ok(None) => Vec::new(), // A repeated id: already delivered once.
            Err((code, message)) => vec![Effect::Reply(frame::error(code, message))],
        })
    }

    /// An inbox socket's `send`: names a chat its token may post to; the chat decides the rest
    /// ([`Room::post`]). The inbox's own rate (per socket) was counted with the frame.
    fn send_to_named_chat(&mut self, member: &mut Member, id: &str, text: &str, chat: Option<&str>) -> Result<Vec<Effect>, String> {
        let Some(chat) = chat.and_then(|c| Channel::parse(c).ok()).filter(|c| c.kind() == Kind::Chat) else {
            return Ok(self.strike(member, frame::error(ErrorCode::BadChannel, "send on an inbox names a chat: \"channel\": \"chat:KEY\"")));
        };
        let grants = Grants::from_entries(self.store.grants_of(&member.conn)?.iter().map(String::as_str));
        if !grants.allows(&chat) {
            return Ok(vec![Effect::Reply(frame::error(ErrorCode::Forbidden, "your token does not grant posting to that chat"))]);
        }
        let post = Post {
            sub: member.sub.clone(),
            name: member.name.clone(),
            role: member.role.clone(),
            id: id.to_owned(),
            text: text.to_owned(),
        };
        Ok(vec![Effect::Relay(chat, post)])
    }

    /// On a chat: a message posted through an inbox, under the chat's own rules: its text,
    /// its id's dedupe, and the user's rate here, counted with their own sockets' frames.
    pub fn post(&mut self, post: &Post, now_ms: i64) -> Result<(Posted, Vec<Effect>), String> {
        if !self.policy.clients_may_send {
            return Ok((
                Posted::Refused { code: ErrorCode::Forbidden, message: "this channel takes no client messages".into() },
                Vec::new(),
            ));
        }
        let count = self.count_for_user(&post.sub, now_ms);
        if count >= 2 * self.limits.rate_count {
            return Ok((Posted::TooFast, Vec::new()));
        }
        if count > self.limits.rate_count {
            return Ok((Posted::Refused { code: ErrorCode::RateLimited, message: "too many messages, slow down".into() }, Vec::new()));
        }
        Ok(match self.post_checked(post, now_ms)? {
            Ok(accepted) => (Posted::Accepted, accepted.map_or_else(Vec::new, Accepted::effects)),
            Err((code, message)) => (Posted::Refused { code, message: message.into() }, Vec::new()),
        })
    }

    /// A chat message whose author may post here: its text rules, then stored under the
    /// author's id (a repeated id is `Ok(None)`).
    fn post_checked(&mut self, post: &Post, now_ms: i64) -> Result<Result<Option<Accepted>, (ErrorCode, &'static str)>, String> {
        let chars = post.text.chars().count();
        if chars == 0 {
            return Ok(Err((ErrorCode::Empty, "text must not be empty")));
        }
        if chars > MAX_CHAT_TEXT_CHARS {
            return Ok(Err((ErrorCode::TooLong, "text is limited to 2000 characters")));
        }
        let data = serde_json::json!({
            "text": post.text,
            "author": {"sub": post.sub, "name": post.name, "role": post.role},
            "client_id": post.id,
        })
        .to_string();
        let event_id = chat_event_id(&post.sub, &post.id);
        let event = StoredEvent { seq: 0, id: event_id, event: "chat.message".into(), data, ts: now_ms, source: None };
        let published = self.accept(&format!("c:{}\u{0}{}", post.sub, post.id), event.clone())?;
        let Some(frame) = published.frame else {
            return Ok(Ok(None));
        };
        self.housekeeping(now_ms)?;
        Ok(Ok(Some(Accepted { frame, stored: StoredEvent { seq: published.seq, ..event }, forwarded: published.forwarded })))
    }

    /// On an inbox: the chat's answer to a post relayed for `member` (`None`: the chat could
    /// not be reached).
    pub fn relayed(&self, posted: Option<Posted>) -> Vec<Effect> {
        match posted {
            Some(Posted::Accepted) => Vec::new(),
            Some(Posted::Refused { code, message }) => vec![Effect::Reply(frame::error(code, &message))],
            Some(Posted::TooFast) => vec![Effect::Close(close::RATE_LIMITED, "rate limited")],
            None => vec![Effect::Reply(frame::error(
                ErrorCode::Unavailable,
                "the chat could not be reached; sending the same id again is safe",
            ))],
        }
    }

    /// On an inbox: keeps the chats a socket may answer (at connect and refresh); a socket
    /// that may answer none keeps nothing.
    pub fn keep_answers(&mut self, conn: &str, entries: &[String]) -> Result<(), String> {
        if !self.policy.sends_to_named_chat {
            return Ok(());
        }
        if entries.is_empty() {
            return self.store.grants_drop(conn);
        }
        self.store.grants_put(conn, entries)
    }

    /// On an inbox: a socket left; what it could answer goes with it.
    pub fn forget_answers(&mut self, conn: &str) -> Result<(), String> {
        if self.policy.sends_to_named_chat {
            self.store.grants_drop(conn)?;
        }
        Ok(())
    }

    /// `/links` on the source channel: applies its orders in request order (the link rule:
    /// [`links::apply`]) and stores the links that changed.
    pub fn link(&mut self, orders: &[LinkOrder]) -> Result<Vec<LinkResult>, String> {
        if !self.policy.linkable {
            return Err("an inbox is never linked".into());
        }
        let latest = self.store.latest_seq()?;
        let mut links = self.store.links()?;
        let before = links.clone();
        let results = orders.iter().map(|o| links::apply(&mut links, &o.inbox, o.remove, latest)).collect();
        for link in links.iter().filter(|l| !before.contains(l)) {
            self.keep(link)?;
        }
        Ok(results)
    }

    /// Stores a link, or drops it once it owes nothing more.
    fn keep(&mut self, link: &Link) -> Result<(), String> {
        if link.done() {
            self.store.drop_link(&link.inbox)
        } else {
            self.store.put_link(link)
        }
    }

    /// On an inbox: copies forwarded by `source`, in its `seq` order. Each is stored once
    /// under its source's key (a copy sent twice is a duplicate) with the inbox's own `seq`
    /// and the source's id, name, data and time; returns the frames for the inbox's sockets.
    pub fn accept_copies(&mut self, source: &Channel, copies: &[StoredEvent], now_ms: i64) -> Result<Vec<String>, String> {
        let mut frames = Vec::new();
        for copy in copies {
            let origin = frame::Source { channel: source.to_string(), seq: copy.seq };
            let event = StoredEvent { source: Some(origin), ..copy.clone() };
            if let Some(frame) = self.accept(&links::copy_key(source, copy.seq), event)?.frame {
                frames.push(frame);
            }
        }
        self.housekeeping(now_ms)?;
        Ok(frames)
    }

    /// The forwarding calls to make now: one per inbox that is owed events, is not backing
    /// off and has no call under way, carrying the oldest it is owed (from history).
    pub fn forwards_due(&mut self, now_ms: i64) -> Result<Vec<Batch>, String> {
        if !self.policy.linkable {
            return Ok(Vec::new());
        }
        let links = self.store.links()?;
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let latest = self.store.latest_seq()?;
        let mut due = Vec::new();
        for link in links {
            if !link.pending(latest) || link.next_at > now_ms || !self.memory.forwarding.may_send(&link.inbox, now_ms) {
                continue;
            }
            let upto = link.upto(latest).min(link.sent + links::FORWARD_BATCH as u64);
            let mut events = self.store.events_between(link.sent, upto)?;
            links::fit(&mut events);
            if events.is_empty() {
                // Not retained (pruning keeps what a cursor owes, so only past the bound).
                self.memory.forwards_dropped += upto - link.sent;
                self.keep(&Link { sent: upto, ..link })?;
                continue;
            }
            self.memory.forwarding.start(&link.inbox, now_ms);
            due.push(Batch { inbox: link.inbox, events });
        }
        Ok(due)
    }

    /// Records how a forwarding call went ([`retry::settle`]): delivered (or given up after a
    /// day of failures), the link's cursor moves past the batch; failed, the link waits for
    /// the retry.
    pub fn forward_attempted(&mut self, batch: &Batch, delivered: bool, now_ms: i64) -> Result<Settled, String> {
        self.memory.forwarding.finish(&batch.inbox);
        let Some(mut link) = self.store.links()?.into_iter().find(|l| l.inbox == batch.inbox) else {
            return Ok(Settled::Delivered); // dropped meanwhile: nothing left to owe
        };
        let settled = retry::settle(link.attempts, link.failing_since.unwrap_or(now_ms), delivered, now_ms);
        match settled {
            Settled::Delivered | Settled::GaveUp => {
                if settled == Settled::GaveUp {
                    self.memory.forwards_dropped += batch.events.len() as u64;
                }
                link = Link { sent: link.sent.max(batch.upto()), attempts: 0, next_at: 0, failing_since: None, ..link };
            }
            Settled::RetryAt(at) => {
                link = Link { attempts: link.attempts + 1, next_at: at, failing_since: link.failing_since.or(Some(now_ms)), ..link };
            }
        }
        self.keep(&link)?;
        Ok(settled)
    }

    /// A socket left (closed, errored or dropped). `remaining` excludes it.
    pub fn leave(&self, member: &Member, remaining: &[Member]) -> Option<String> {
        if !self.policy.presence || remaining.iter().any(|o| o.sub == member.sub) {
            return None;
        }
        let count = distinct_subs(remaining.iter());
        Some(frame::presence(&self.name(), "left", &member.sub, member.name.as_deref(), member.role.as_deref(), count))
    }

    /// `GET /channels/.../history`: retained events after `since`, oldest first, at most
    /// `limit` and at most `MAX_READ_BYTES` of them (the caller pages on with `since`);
    /// `reset` when part of the gap is no longer held.
    pub fn history(&mut self, since: u64, limit: usize) -> Result<History, String> {
        let latest = self.store.latest_seq()?;
        if since >= latest {
            return Ok(History { seq: latest, reset: false, events: Vec::new() });
        }
        if self.store.oldest_seq()?.is_none_or(|oldest| oldest > since + 1) {
            return Ok(History { seq: latest, reset: true, events: Vec::new() });
        }
        let mut sizes = self.store.sizes_after(since, usize::MAX)?;
        sizes.reverse();
        let mut total = 0;
        let take = sizes.iter().take(limit).take_while(|(_, size)| {
            total += size;
            total <= MAX_READ_BYTES
        });
        let events = match take.last() {
            Some((upto, _)) => self.store.events_between(since, *upto)?,
            // A first event larger than the bound still goes alone: the reader must progress.
            None => self.store.events_between(since, since + 1)?,
        };
        Ok(History { seq: latest, reset: false, events })
    }

    /// Drops history (and with it the ids it remembers) past its retention: the newest
    /// `HISTORY_MIN_EVENTS` always stay; older events stay for `HISTORY_MIN_AGE_MS` while
    /// they add up to at most `HISTORY_MAX_EXTRA_BYTES`, oldest dropped first.
    pub fn prune(&mut self, now_ms: i64) -> Result<(), String> {
        let latest = self.store.latest_seq()?;
        let keep_from = latest.saturating_sub(HISTORY_MIN_EVENTS - 1).max(1).min(self.owed_from(latest)?);
        self.memory.pruned_at = Some(now_ms);
        self.memory.appended_bytes = 0;
        if keep_from == 1 {
            // Every event is among the newest kept: nothing to read, nothing to drop (most
            // payment rooms never hold more).
            return Ok(());
        }
        self.store.prune_events(keep_from, now_ms - HISTORY_MIN_AGE_MS)?;
        let older = self.store.sizes_after(0, usize::MAX)?.into_iter().filter(|(seq, _)| *seq < keep_from);
        let mut total = 0;
        if let Some((cut, _)) = older.into_iter().find(|(_, size)| {
            total += size;
            total > HISTORY_MAX_EXTRA_BYTES
        }) {
            self.store.prune_events(cut + 1, i64::MAX)?;
        }
        Ok(())
    }

    /// The first `seq` an inbox is still owed (history keeps it), at most
    /// [`links::FORWARD_QUEUE_MAX`] events back: a cursor lagging further is moved up to that
    /// bound, the events it skips given up (and logged).
    fn owed_from(&mut self, latest: u64) -> Result<u64, String> {
        if !self.policy.linkable {
            return Ok(u64::MAX);
        }
        let floor = latest.saturating_sub(links::FORWARD_QUEUE_MAX - 1).max(1);
        let mut owed = u64::MAX;
        for link in self.store.links()?.into_iter().filter(|l| l.pending(latest)) {
            if link.sent + 1 < floor {
                self.memory.forwards_dropped += floor - 1 - link.sent;
                self.keep(&Link { sent: floor - 1, ..link.clone() })?;
            }
            owed = owed.min((link.sent + 1).max(floor));
        }
        Ok(owed)
    }

    /// Queues the webhook call for a chat message the room accepted (sent from the alarm:
    /// the room never waits for the backend, and a failed call survives restarts).
    pub fn queue_webhook(&mut self, event: &StoredEvent, now_ms: i64) -> Result<u64, String> {
        let body = webhook::body(&self.name(), event);
        self.store.outbox_put(&event.id, &body, now_ms)
    }

    /// The webhook calls to send now: one batch, sent in parallel by the shell.
    pub fn webhooks_due(&self, now_ms: i64) -> Result<Vec<Queued>, String> {
        if !self.policy.clients_may_send {
            return Ok(Vec::new());
        }
        self.store.outbox_due(now_ms, webhook::BATCH)
    }

    /// Records the outcome of one call ([`webhook::settle`]).
    pub fn webhook_attempted(&mut self, queued: &Queued, delivered: bool, now_ms: i64) -> Result<Settled, String> {
        let settled = webhook::settle(queued, delivered, now_ms);
        match settled {
            Settled::Delivered | Settled::GaveUp => self.store.outbox_delete(&queued.id)?,
            Settled::RetryAt(at) => self.store.outbox_retry(&queued.id, queued.attempts + 1, at)?,
        }
        Ok(settled)
    }

    /// What the room does when its deadline comes, besides closing expired sockets (which
    /// needs no storage: [`is_expired`]): prunes history, and returns the calls due.
    pub fn handle_timeout(&mut self, now_ms: i64) -> Result<Due, String> {
        self.prune(now_ms)?;
        Ok(Due { webhooks: self.webhooks_due(now_ms)?, forwards: self.forwards_due(now_ms)? })
    }

    /// The room's one deadline, for the shell's one alarm: see [`poll_timeout`]. A churning
    /// room that emptied less than [`LINGER_MS`] ago keeps one until then.
    pub fn poll_timeout<'m>(&self, members: impl Iterator<Item = &'m Member>, now_ms: i64) -> Result<Option<i64>, String> {
        // Only client messages queue webhook calls: other kinds never hold an outbox, and
        // asking the store whether one exists costs a schema query per instance.
        let webhook_due = if self.policy.clients_may_send { self.store.outbox_next_due()? } else { None };
        // A channel never linked answers from what its store read anyway: no query.
        let links = if self.policy.linkable { self.store.links()? } else { Vec::new() };
        let forward_due = match links.is_empty() {
            true => None,
            false => {
                let latest = self.store.latest_seq()?;
                self.memory.forwarding.next_due(links.iter().filter(|l| l.pending(latest)))
            }
        };
        let linger = self.memory.lingers_until(now_ms);
        Ok(poll_timeout(members, [webhook_due, forward_due, linger].into_iter().flatten().min()))
    }
}

/// A chat message's event id: `<sub>/<client id>`, stable for the pair, so retries share it
/// end to end (the webhook's backend dedupes by it). `/` and `%` in the `sub` are
/// percent-encoded, so the first `/` always ends it: `a/b` sending `c` and `a` sending `b/c`
/// are two ids, not one.
pub fn chat_event_id(sub: &str, client_id: &str) -> String {
    let mut id = String::with_capacity(sub.len() + client_id.len() + 1);
    for c in sub.chars() {
        match c {
            '%' => id.push_str("%25"),
            '/' => id.push_str("%2F"),
            c => id.push(c),
        }
    }
    id.push('/');
    id.push_str(client_id);
    id
}

pub fn distinct_subs<'m>(members: impl Iterator<Item = &'m Member>) -> usize {
    let mut subs: Vec<&str> = members.map(|m| m.sub.as_str()).collect();
    subs.sort_unstable();
    subs.dedup();
    subs.len()
}

/// Whether a member's token has expired at `now` (seconds): close it with 4401.
pub fn is_expired(member: &Member, now: i64) -> bool {
    member.exp <= now
}

/// The one instant the room next needs to run (ms): the first token expiry or the next
/// call due (webhook or forward, or the end of a [`LINGER_MS`]). `None`: nothing to time, so
/// the room holds no alarm and an idle room costs nothing (history is pruned when the room is
/// next written, not by a timer).
pub fn poll_timeout<'m>(members: impl Iterator<Item = &'m Member>, call_due: Option<i64>) -> Option<i64> {
    let expiry = members.map(|m| m.exp.saturating_mul(1000)).min();
    [expiry, call_due].into_iter().flatten().min()
}

/// The users of a room for a `welcome`: one entry per distinct `sub`, sorted by `sub`.
fn roster<'m>(members: &[&'m Member]) -> Vec<Present<'m>> {
    let mut present: Vec<Present<'m>> =
        members.iter().map(|m| Present { sub: &m.sub, name: m.name.as_deref(), role: m.role.as_deref() }).collect();
    present.sort_by(|a, b| a.sub.cmp(b.sub));
    present.dedup_by(|a, b| a.sub == b.sub);
    present
}

/// The answer to a history read.
#[derive(Debug, PartialEq)]
pub struct History {
    pub seq: u64,
    pub reset: bool,
    pub events: Vec<StoredEvent>,
}

/// One user of a room as `GET /channels/{kind}/{key}` lists them.
#[derive(Debug, PartialEq, Serialize)]
pub struct User {
    pub sub: String,
    pub name: Option<String>,
    pub role: Option<String>,
    pub sockets: usize,
}

/// The distinct users holding `members`, sorted by `sub`, at most `max` of them; and whether
/// there were more.
pub fn users(members: &[Member], max: usize) -> (Vec<User>, bool) {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.sub.cmp(&b.sub));
    let mut users: Vec<User> = Vec::new();
    for m in sorted {
        match users.last_mut() {
            Some(u) if u.sub == m.sub => u.sockets += 1,
            _ => users.push(User { sub: m.sub.clone(), name: m.name.clone(), role: m.role.clone(), sockets: 1 }),
        }
    }
    let truncated = users.len() > max;
    users.truncate(max);
    (users, truncated)
}

enum Replayed {
    Events(Vec<StoredEvent>),
    Reset,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_stored_without_its_defaults_and_reads_back_whole() {
        let fresh = Member::admit(String::new(), Verified::new(&claims("u", &["orders:v"], &[]), &Channel::parse("orders:v").unwrap()));
        let text = serde_json::to_string(&fresh).unwrap();
        let (exp, iat) = (fresh.exp, fresh.iat.unwrap());
        assert_eq!(text, format!(r#"{{"sub":"u","name":"u-name","role":"customer","exp":{exp},"iat":{iat},"can_publish":false}}"#));
        assert_eq!(serde_json::from_str::<Member>(&text).unwrap(), fresh);
        let bare = Member { name: None, role: None, iat: None, ..fresh.clone() };
        assert_eq!(serde_json::to_string(&bare).unwrap(), format!(r#"{{"sub":"u","exp":{exp},"can_publish":false}}"#));
        assert_eq!(serde_json::from_str::<Member>(&serde_json::to_string(&bare).unwrap()).unwrap(), bare);
        let busy = Member { conn: "c".into(), window_count: 3, strikes: 1, revoked_before: Some(9), joined_ms: 5, ..fresh };
        assert_eq!(serde_json::from_str::<Member>(&serde_json::to_string(&busy).unwrap()).unwrap(), busy);
    }

    /// `let $ch = Channel::parse($name)`, and `let mut $room`: a room with default limits over
    /// fresh in-memory storage and memory.
    macro_rules! fresh_room {
        ($ch:ident = $name:literal, $room:ident) => {
            let $ch = Channel::parse($name).unwrap();
            let mut store = MemStore::default();
            let mut mem = Memory::default();
            let mut $room = Room::new(&$ch, &mut store, &mut mem, Limits::default());
        };
    }

    fn b() -> Builds<'static> {
        Builds { server: "b", ..Builds::default() }
    }
    use crate::devkit::MemStore;
    use crate::protocol::channel::Grants;
    use crate::protocol::publish::{null, Delivery};
    use crate::protocol::revocation::RECORD_RENEW_MS;
    use serde_json::value::RawValue as RawValueBox;
    use serde_json::Value;

    const T0: i64 = 1_800_000_000_000;

    fn claims(sub: &str, channels: &[&str], publish: &[&str]) -> Claims {
        Claims {
            sub: sub.into(),
            exp: T0 / 1000 + 600,
            iat: Some(T0 / 1000),
            channels: Grants::from_entries(channels.iter().copied()),
            publish: Grants::from_entries(publish.iter().copied()),
            name: Some(format!("{sub}-name")),
            role: Some("customer".into()),
        }
    }

    fn member(conn: &str, sub: &str, channel: &Channel) -> Member {
        Member::admit(conn.into(), Verified::new(&claims(sub, &[&channel.to_string()], &[&channel.to_string()]), channel))
    }

    fn delivery(id: &str) -> Delivery {
        Delivery { id: id.into(), event: "order.created".into(), data: null() }
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn seqs(frames: &[String]) -> Vec<u64> {
        frames.iter().map(|f| json(f)).filter(|v| v["type"] == "event").map(|v| v["seq"].as_u64().unwrap()).collect()
    }

    fn publish_n(room: &mut Room<MemStore>, n: usize, at: i64) {
        let ds: Vec<Delivery> = (0..n).map(|i| delivery(&format!("e{}-{i}", at))).collect();
        room.publish(&ds, at).unwrap();
    }

    fn no_refresh(_: &str) -> Result<Claims, TokenError> {
        Err(TokenError::BadSignature)
    }

    #[test]
    fn seq_starts_at_one_and_increases_by_one() {
        fresh_room!(ch = "orders:v1", room);
        let out = room.publish(&[delivery("a"), delivery("b"), delivery("c")], T0).unwrap();
        assert_eq!(out.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let frame = json(out[1].frame.as_ref().unwrap());
        assert_eq!(frame["seq"], 2);
        assert_eq!(frame["ts"], T0);
        assert_eq!(frame["channel"], "orders:v1");
    }

    #[test]
    fn republished_id_is_a_duplicate_with_its_first_seq() {
        fresh_room!(ch = "orders:v1", room);
        room.publish(&[delivery("a"), delivery("b")], T0).unwrap();
        let again = room.publish(&[delivery("a"), delivery("c")], T0 + 1).unwrap();
        assert_eq!(again[0], Published { seq: 1, duplicate: true, frame: None, forwarded: false });
        assert_eq!((again[1].seq, again[1].duplicate), (3, false));
    }

    #[test]
    fn welcome_carries_latest_seq_and_expiry() {
        fresh_room!(ch = "orders:v1", room);
        let m = member("c1", "u1", &ch);
        let join = room.join(&m, None, Builds { server: "build-1", ..Builds::default() }, &[], T0).unwrap();
        assert_eq!(
            json(&join.frames[0]),
            serde_json::json!({"type": "welcome", "channel": "orders:v1", "conn": "c1", "seq": 0, "build": "build-1", "expires_at": m.exp})
        );
        publish_n(&mut room, 2, T0);
        let join = room.join(&m, None, b(), &[], T0).unwrap();
        assert_eq!(json(&join.frames[0])["seq"], 2);
        assert_eq!(join.frames.len(), 1, "orders replays nothing without since");
    }

    #[test]
    fn replay_without_since_follows_the_kind() {
        for (name, expected) in [("orders:v", vec![]), ("payment:o", (1..=60).collect::<Vec<u64>>()), ("chat:r", (11..=60).collect())] {
            let ch = Channel::parse(name).unwrap();
            let mut store = MemStore::default();
            let mut mem = Memory::default();
            let mut room = Room::new(&ch, &mut store, &mut mem, Limits::default());
            publish_n(&mut room, 60, T0);
            let join = room.join(&member("c", "u", &ch), None, b(), &[], T0).unwrap();
            assert_eq!(seqs(&join.frames), expected, "{name}");
        }
    }

    #[test]
    fn since_replays_every_later_event_in_order() {
        fresh_room!(ch = "orders:v", room);
        publish_n(&mut room, 10, T0);
        let m = member("c", "u", &ch);
        assert_eq!(seqs(&room.join(&m, Some(7), b(), &[], T0).unwrap().frames), [8, 9, 10]);
        assert_eq!(seqs(&room.join(&m, Some(0), b(), &[], T0).unwrap().frames), (1..=10).collect::<Vec<_>>());
        assert!(seqs(&room.join(&m, Some(10), b(), &[], T0).unwrap().frames).is_empty());
        assert!(seqs(&room.join(&m, Some(99), b(), &[], T0).unwrap().frames).is_empty());
    }

    #[test]
    fn since_older_than_history_gets_a_reset() {
        fresh_room!(ch = "orders:v", room);
        publish_n(&mut room, 150, T0);
        // Eleven minutes later everything but the last 100 may go.
        room.prune(T0 + 11 * 60 * 1000).unwrap();
        assert_eq!(room.store.oldest_seq().unwrap(), Some(51));
        let m = member("c", "u", &ch);
        let frames = room.join(&m, Some(49), b(), &[], T0).unwrap().frames;
        assert_eq!(json(&frames[1]), serde_json::json!({"type": "reset", "channel": "orders:v", "seq": 150}));
        assert_eq!(frames.len(), 2);
        assert_eq!(seqs(&room.join(&m, Some(50), b(), &[], T0).unwrap().frames), (51..=150).collect::<Vec<_>>());
    }

    #[test]
    fn pruning_keeps_the_last_100_and_the_last_10_minutes() {
        fresh_room!(ch = "orders:v", room);
        publish_n(&mut room, 150, T0);
        room.prune(T0 + 9 * 60 * 1000).unwrap();
        assert_eq!(room.store.oldest_seq().unwrap(), Some(1), "younger than 10 minutes: all kept");
        room.prune(T0 + 30 * 60 * 1000).unwrap();
        assert_eq!(room.store.oldest_seq().unwrap(), Some(51), "older than 10 minutes: the last 100 kept");
        // An id is remembered as long as its event is retained.
        assert!(room.publish(&[delivery(&format!("e{T0}-50"))], T0 + 30 * 60 * 1000).unwrap()[0].duplicate);
        assert_eq!(room.store.keys.len(), 100);
        // The newest event always stays: the SQL store reads the latest seq from it.
        room.prune(T0 + 24 * 60 * 60 * 1000).unwrap();
        assert_eq!(room.store.events_between(149, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn a_room_holding_no_more_than_the_kept_events_prunes_without_a_query() {
        fresh_room!(ch = "payment:p", room);
        publish_n(&mut room, 100, T0);
        let asked = room.store.upkeep_queries.get();
        room.prune(T0 + 30 * 60 * 1000).unwrap();
        assert_eq!(room.store.upkeep_queries.get(), asked, "the newest 100 always stay: nothing to look at");
        // One more, and the oldest may go.
        room.publish(&[delivery("one-more")], T0 + 30 * 60 * 1000).unwrap();
        room.prune(T0 + 31 * 60 * 1000).unwrap();
        assert_eq!(room.store.oldest_seq().unwrap(), Some(2));
    }

    #[test]
    fn only_rooms_whose_clients_send_look_for_webhook_calls() {
        for (name, looks) in [("orders:o", false), ("payment:p", false), ("chat:c", true)] {
            let ch = Channel::parse(name).unwrap();
            let (mut store, mut mem) = (MemStore::default(), Memory::default());
            let mut room = Room::new(&ch, &mut store, &mut mem, Limits::default());
            room.poll_timeout([].iter(), T0).unwrap();
            room.handle_timeout(T0).unwrap();
            assert_eq!(room.store.upkeep_queries.get() > 0, looks, "{name}");
        }
    }

    #[test]
    fn an_outdated_build_gets_its_welcome_then_4426_only_when_required() {
        fresh_room!(ch = "chat:r", room);
        let builds = |client, require_current| Builds { server: "b2", client, require_current };
        let join = room.join(&member("c", "u", &ch), None, builds(Some("b1"), true), &[], T0).unwrap();
        assert_eq!(json(&join.frames[0])["type"], "welcome");
        assert_eq!(json(&join.frames[0])["build"], "b2");
        assert_eq!(join.close, Some((close::OUTDATED_BUILD, "client build is outdated")));
        for (client, require) in [(Some("b2"), true), (None, true), (Some("b1"), false)] {
            assert_eq!(
                room.join(&member("c", "u", &ch), None, builds(client, require), &[], T0).unwrap().close,
                None,
                "{client:?} {require}"
            );
        }
    }

    #[test]
    fn webhook_calls_go_through_the_store_and_the_room_times_their_retries() {
        fresh_room!(ch = "chat:r", room);
        let event =
            StoredEvent { seq: 1, id: "u1/m1".into(), event: "chat.message".into(), data: r#"{"text":"hi"}"#.into(), ts: T0, source: None };
        room.queue_webhook(&event, T0).unwrap();
        room.queue_webhook(&event, T0).unwrap();
        let due = room.handle_timeout(T0).unwrap().webhooks;
        assert_eq!(due.len(), 1, "queued once per id");
        assert_eq!(json(&due[0].body)["channel"], "chat:r");
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), Some(T0));
        // A failure is retried after the backoff, and the room's deadline follows it.
        assert_eq!(room.webhook_attempted(&due[0], false, T0).unwrap(), Settled::RetryAt(T0 + 1_000));
        assert!(room.webhooks_due(T0 + 999).unwrap().is_empty());
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), Some(T0 + 1_000));
        let again = room.webhooks_due(T0 + 1_000).unwrap();
        assert_eq!(again[0].attempts, 1);
        assert_eq!(room.webhook_attempted(&again[0], true, T0 + 1_000).unwrap(), Settled::Delivered);
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), None, "nothing left to time");
    }

    #[test]
    fn chat_message_author_comes_from_the_token() {
        fresh_room!(ch = "chat:r", room);
        let mut m = member("c", "u1", &ch);
        let frame = r#"{"type":"send","id":"m1","text":"hello","author":{"sub":"admin","name":"Boss"}}"#;
        let effects = room.on_text(&mut m, frame, &Incoming { now_ms: T0, verify: &no_refresh }).unwrap();
        let Some(Effect::Broadcast(b)) = effects.iter().find(|e| matches!(e, Effect::Broadcast(_))) else { panic!("{effects:?}") };
        let v = json(b);
        assert_eq!(v["event"], "chat.message");
        assert_eq!(v["seq"], 1);
        assert_eq!(
            v["data"],
            serde_json::json!({"text": "hello", "author": {"sub": "u1", "name": "u1-name", "role": "customer"}, "client_id": "m1"})
        );
        assert!(effects.iter().any(|e| matches!(e, Effect::ChatAccepted(s) if s.seq == 1)));
        // The same id again from the same sub is not delivered twice; from another sub it is.
        assert!(!room
            .on_text(&mut m, frame, &Incoming { now_ms: T0, verify: &no_refresh })
            .unwrap()
            .iter()
            .any(|e| matches!(e, Effect::Broadcast(_))));
        let mut other = member("c2", "u2", &ch);
        assert!(room
            .on_text(&mut other, frame, &Incoming { now_ms: T0, verify: &no_refresh })
            .unwrap()
            .iter()
            .any(|e| matches!(e, Effect::Broadcast(_))));
    }

    fn reply_code(effects: &[Effect]) -> Option<String> {
        effects.iter().find_map(|e| match e {
            Effect::Reply(r) => json(r)["code"].as_str().map(str::to_owned),
            _ => None,
        })
    }

    #[test]
    fn refused_sends_get_error_frames_and_store_nothing() {
        let ch = Channel::parse("chat:r").unwrap();
        let mut store = MemStore::default();
        let mut mem = Memory::default();
        let mut room = Room::new(&ch, &mut store, &mut mem, Limits { rate_count: 1000, ..Limits::default() });
        let mut reader = Member::admit("c".into(), Verified::new(&claims("u", &["chat:r"], &[]), &ch));
        let send = |text: &str| format!(r#"{{"type":"send","id":"x","text":{}}}"#, serde_json::to_string(text).unwrap());
        assert_eq!(
            reply_code(&room.on_text(&mut reader, &send("hi"), &Incoming { now_ms: T0, verify: &no_refresh }).unwrap()).as_deref(),
            Some("forbidden")
        );
        let mut writer = member("c2", "w", &ch);
        assert_eq!(
            reply_code(&room.on_text(&mut writer, &send(""), &Incoming { now_ms: T0, verify: &no_refresh }).unwrap()).as_deref(),
            Some("empty")
        );
        let long = "é".repeat(2001);
        assert_eq!(
            reply_code(&room.on_text(&mut writer, &send(&long), &Incoming { now_ms: T0, verify: &no_refresh }).unwrap()).as_deref(),
            Some("too_long")
        );
        assert!(room
            .on_text(&mut writer, &send(&"é".repeat(2000)), &Incoming { now_ms: T0, verify: &no_refresh })
            .unwrap()
            .iter()
            .any(|e| matches!(e, Effect::Broadcast(_))));
        assert_eq!(room.store.latest, 1);
    }

    #[test]
    fn send_on_orders_or_payment_is_refused_even_with_a_publish_grant() {
        for name in ["orders:v", "payment:o"] {
            let ch = Channel::parse(name).unwrap();
            let mut store = MemStore::default();
            let mut mem = Memory::default();
            let mut room = Room::new(&ch, &mut store, &mut mem, Limits::default());
            let mut m = member("c", "u", &ch);
            let effects =
                room.on_text(&mut m, r#"{"type":"send","id":"1","text":"x"}"#, &Incoming { now_ms: T0, verify: &no_refresh }).unwrap();
            assert_eq!(reply_code(&effects).as_deref(), Some("forbidden"));
            assert_eq!(room.store.latest, 0);
        }
    }

    #[test]
    fn rate_limit_refuses_then_closes_4429() {
        fresh_room!(ch = "chat:r", room);
        let mut m = member("c", "u", &ch);
        let mut codes = Vec::new();
        for i in 0..40 {
            let f = format!(r#"{{"type":"send","id":"{i}","text":"x"}}"#);
            let effects = room.on_text(&mut m, &f, &Incoming { now_ms: T0 + i, verify: &no_refresh }).unwrap();
            codes.push(match effects.iter().find(|e| matches!(e, Effect::Close(..))) {
                Some(Effect::Close(code, _)) => code.to_string(),
                _ => reply_code(&effects).unwrap_or_else(|| "ok".into()),
            });
        }
        assert!(codes[..20].iter().all(|c| c == "ok"), "{codes:?}");
        assert!(codes[20..39].iter().all(|c| c == "rate_limited"), "{codes:?}");
        assert_eq!(codes[39], "4429");
        // A new window starts fresh.
        let f = r#"{"type":"send","id":"later","text":"x"}"#;
        let mut m2 = m.clone();
        m2.window_count = 5;
        let effects = room.on_text(&mut m2, f, &Incoming { now_ms: T0 + 10_000, verify: &no_refresh }).unwrap();
        assert!(effects.iter().any(|e| matches!(e, Effect::Broadcast(_))));
    }

    #[test]
    fn more_than_ten_malformed_frames_close_4400() {
        let ch = Channel::parse("orders:v").unwrap();
        let mut store = MemStore::default();
        let mut mem = Memory::default();
        let mut room = Room::new(&ch, &mut store, &mut mem, Limits { rate_count: 1000, ..Limits::default() });
        let mut m = member("c", "u", &ch);
        for _ in 0..10 {
            let effects = room.on_text(&mut m, "nonsense", &Incoming { now_ms: T0, verify: &no_refresh }).unwrap();
            assert_eq!(reply_code(&effects).as_deref(), Some("bad_frame"));
        }
        assert!(room.on_binary(&mut m, 10).contains(&Effect::Close(close::BAD_REQUEST, "too many malformed frames")));
    }

    #[test]
    fn oversized_frames_close_1009() {
        fresh_room!(ch = "chat:r", room);
        let mut m = member("c", "u", &ch);
        let big = "x".repeat(MAX_CLIENT_FRAME_BYTES + 1);
        assert_eq!(
            room.on_text(&mut m, &big, &Incoming { now_ms: T0, verify: &no_refresh }).unwrap(),
            vec![Effect::Close(close::TOO_BIG, "frame too big")]
        );
        assert_eq!(room.on_binary(&mut m, MAX_CLIENT_FRAME_BYTES + 1), vec![Effect::Close(close::TOO_BIG, "frame too big")]);
    }

    #[test]
    fn refresh_needs_the_same_sub_and_the_channel() {
        fresh_room!(ch = "payment:o1", room);
        let mut m = member("c", "u", &ch);
        let fresh = |sub: &'static str, channel: &'static str| {
            move |_: &str| {
                let mut c = claims(sub, &[channel], &[]);
                c.exp += 900;
                Ok(c)
            }
        };
        let f = r#"{"type":"refresh","token":"t"}"#;
        let effects = room.on_text(&mut m, f, &Incoming { now_ms: T0, verify: &fresh("u", "payment:o1") }).unwrap();
        assert!(effects.iter().any(|e| matches!(e, Effect::Reply(r) if json(r)["type"] == "refreshed")), "{effects:?}");
        assert_eq!(m.exp, T0 / 1000 + 1500);
        for verify in [fresh("other", "payment:o1"), fresh("u", "payment:o2")] {
            let mut m = member("c", "u", &ch);
            assert!(room
                .on_text(&mut m, f, &Incoming { now_ms: T0, verify: &verify })
                .unwrap()
                .contains(&Effect::Close(close::UNAUTHENTICATED, "refresh refused")));
        }
        assert!(room
            .on_text(&mut m, f, &Incoming { now_ms: T0, verify: &no_refresh })
            .unwrap()
            .contains(&Effect::Close(close::UNAUTHENTICATED, "refresh refused")));
    }

    #[test]
    fn a_refresh_renews_the_users_record_only_when_it_is_due() {
        fresh_room!(ch = "orders:v", room);
        let mut m = member("c", "u", &ch);
        let verify = |_: &str| {
            let mut c = claims("u", &["orders:v"], &[]);
            c.exp += 900;
            Ok(c)
        };
        let f = r#"{"type":"refresh","token":"t"}"#;
        let renews = |room: &mut Room<MemStore>, m: &mut Member, now_ms| {
            room.on_text(m, f, &Incoming { now_ms, verify: &verify }).unwrap().contains(&Effect::RenewRecord)
        };
        assert!(renews(&mut room, &mut m, T0), "a record this instance cannot date is renewed");
        // ...before the socket is told `refreshed`: a revocation in the renewal's answer
        // closes it first.
        let effects = room.on_text(&mut m, f, &Incoming { now_ms: T0, verify: &verify }).unwrap();
        let at = |wanted: fn(&Effect) -> bool| effects.iter().position(wanted);
        assert!(at(|e| *e == Effect::RenewRecord) < at(|e| matches!(e, Effect::Reply(r) if r.contains("refreshed"))), "{effects:?}");
        room.memory.revocations.learn("u", None, T0);
        assert!(!renews(&mut room, &mut m, T0 + 1000));
        assert!(renews(&mut room, &mut m, T0 + RECORD_RENEW_MS));
    }

    #[test]
    fn a_users_sockets_are_counted_only_when_unknown_or_when_the_bound_reaches_the_cap() {
        let mut memory = Memory::default();
        let counted = std::cell::Cell::new(0);
        let join = |m: &mut Memory, present: usize| {
            m.under_socket_cap("u", 3, || {
                counted.set(counted.get() + 1);
                present
            })
        };
        assert!(join(&mut memory, 0), "unknown: counted (none)");
        assert!(join(&mut memory, 99) && join(&mut memory, 99), "under the bound: the count is not read");
        assert_eq!(counted.get(), 1);
        // The bound (3) reached the cap: counted again; two left meanwhile, so there is room.
        assert!(join(&mut memory, 1));
        assert_eq!(counted.get(), 2);
        assert!(join(&mut memory, 99), "under the new bound (2): not read");
        assert!(!join(&mut memory, 3), "at the cap: counted, and the caller must look");
        assert_eq!(counted.get(), 3);
        // Departures lower the bound without a count: the bound (4) less two fits one more unread.
        memory.socket_left("u", T0, || 0);
        memory.socket_left("u", T0, || 0);
        assert!(join(&mut memory, 99));
        assert_eq!(counted.get(), 3);
        for _ in 0..3 {
            memory.socket_left("u", T0, || 0);
        }
        assert!(join(&mut memory, 0));
        assert_eq!(counted.get(), 4, "a user whose sockets all left is counted again");
    }

    #[test]
    fn a_departure_knows_whether_the_room_emptied_without_listing_its_sockets() {
        let mut memory = Memory::default();
        let counted = std::cell::Cell::new(0);
        let count = |n: usize| {
            counted.set(counted.get() + 1);
            n
        };
        memory.socket_opened();
        assert!(!memory.socket_left("a", T0, || count(2)), "a woken room counts once: two still open");
        memory.socket_opened();
        assert!(!memory.socket_left("b", T0, || count(99)));
        assert!(!memory.socket_left("c", T0, || count(99)));
        assert!(memory.socket_left("d", T0, || count(99)), "the last one");
        assert_eq!(counted.get(), 1, "counted once per instance");
        assert!(memory.socket_left("e", T0, || count(99)), "an extra departure never underflows");
    }

    #[test]
    fn a_churning_room_keeps_its_alarm_for_a_linger_then_none() {
        let ch = Channel::parse("orders:v").unwrap();
        let (mut store, mut mem) = (MemStore::default(), Memory::default());
        let room = Room::new(&ch, &mut store, &mut mem, Limits::default());
        let m = member("c", "u", &ch);
        let exp = m.exp * 1000;
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), None, "never used: nothing to time");
        room.memory.socket_opened();
        assert_eq!(room.poll_timeout([&m].into_iter(), T0).unwrap(), Some(exp), "a socket: its expiry");
        assert!(room.memory.socket_left("u", T0, || 0));
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), None, "emptied once (a payment page left): none");
        // Filled and emptied again soon after: churning, the alarm lingers.
        room.memory.socket_opened();
        assert_eq!(room.poll_timeout([&m].into_iter(), T0 + 100).unwrap(), Some(exp), "no linger while open");
        assert!(room.memory.socket_left("u", T0 + 200, || 0));
        let until = T0 + 200 + LINGER_MS;
        assert_eq!(room.poll_timeout([].iter(), T0 + 200).unwrap(), Some(until), "churning: it lingers");
        assert_eq!(room.poll_timeout([].iter(), until - 1).unwrap(), Some(until));
        assert_eq!(room.poll_timeout([].iter(), until).unwrap(), None, "then none");
        // Again within the linger: it runs from the last emptying.
        room.memory.socket_opened();
        assert!(room.memory.socket_left("u", T0 + 900, || 0));
        assert_eq!(room.poll_timeout([].iter(), T0 + 900).unwrap(), Some(T0 + 900 + LINGER_MS));
        // Emptied long after its last emptying: not churning.
        room.memory.socket_opened();
        assert!(room.memory.socket_left("u", T0 + 900 + LINGER_MS, || 0));
        assert_eq!(room.poll_timeout([].iter(), T0 + 900 + LINGER_MS).unwrap(), None);
        // A woken instance never saw the room empty here: nothing lingers.
        let (mut store, mut fresh) = (MemStore::default(), Memory::default());
        let woken = Room::new(&ch, &mut store, &mut fresh, Limits::default());
        assert_eq!(woken.poll_timeout([].iter(), T0).unwrap(), None);
    }

    #[test]
    fn refresh_with_a_revoked_token_is_refused() {
        fresh_room!(ch = "chat:r", room);
        let mut m = member("c", "u", &ch);
        m.revoked_before = Some(T0 / 1000 + 10);
        let old = |_: &str| Ok(claims("u", &["chat:r"], &[]));
        let f = r#"{"type":"refresh","token":"t"}"#;
        assert!(room
            .on_text(&mut m, f, &Incoming { now_ms: T0, verify: &old })
            .unwrap()
            .contains(&Effect::Close(close::UNAUTHENTICATED, "refresh refused")));
        let newer = |_: &str| {
            let mut c = claims("u", &["chat:r"], &[]);
            c.iat = Some(T0 / 1000 + 11);
            Ok(c)
        };
        let effects = room.on_text(&mut m, f, &Incoming { now_ms: T0, verify: &newer }).unwrap();
        assert!(effects.iter().any(|e| matches!(e, Effect::Reply(r) if json(r)["type"] == "refreshed")), "{effects:?}");
    }

    #[test]
    fn revocation_covers_tokens_issued_up_to_its_second() {
        assert!(!is_revoked(Some(5), None));
        assert!(is_revoked(Some(5), Some(5)));
        assert!(is_revoked(Some(4), Some(5)));
        assert!(!is_revoked(Some(6), Some(5)));
        assert!(is_revoked(None, Some(5)), "no iat: cannot prove it is newer");
    }

    #[test]
    fn a_user_at_the_socket_cap_is_refused_without_affecting_others() {
        let ch = Channel::parse("orders:v").unwrap();
        let mut store = MemStore::default();
        let mut mem = Memory::default();
        let limits = Limits { sockets_per_sub: 2, ..Limits::default() };
        let mut room = Room::new(&ch, &mut store, &mut mem, limits);
        let tabs = [member("a1", "ann", &ch), member("a2", "ann", &ch)];
        let j = room.join(&member("a3", "ann", &ch), None, b(), &tabs, T0).unwrap();
        assert_eq!((j.close, j.frames.len()), (Some((close::RATE_LIMITED, "too many sockets for this user")), 0));
        let j = room.join(&member("b1", "bob", &ch), None, b(), &tabs, T0).unwrap();
        assert_eq!((j.close, j.frames.len()), (None, 1));
    }

    #[test]
    fn presence_counts_users_not_sockets() {
        fresh_room!(ch = "chat:r", room);
        let a1 = member("a1", "ann", &ch);
        let a2 = member("a2", "ann", &ch);
        let b1 = member("b1", "bob", &ch);
        let j = room.join(&a1, None, b(), &[], T0).unwrap();
        assert_eq!(json(j.broadcast.as_ref().unwrap())["count"], 1);
        assert!(room.join(&a2, None, b(), std::slice::from_ref(&a1), T0).unwrap().broadcast.is_none(), "second tab");
        let j = room.join(&b1, None, b(), &[a1.clone(), a2.clone()], T0).unwrap();
        let v = json(j.broadcast.as_ref().unwrap());
        assert_eq!((v["action"].as_str(), v["sub"].as_str(), v["count"].as_u64()), (Some("joined"), Some("bob"), Some(2)));
        assert!(room.leave(&a1, &[a2.clone(), b1.clone()]).is_none(), "ann still has a tab");
        let left = json(&room.leave(&a2, std::slice::from_ref(&b1)).unwrap());
        assert_eq!((left["action"].as_str(), left["sub"].as_str(), left["count"].as_u64()), (Some("left"), Some("ann"), Some(1)));
    }

    #[test]
    fn no_presence_outside_chat() {
        fresh_room!(ch = "orders:v", room);
        let m = member("a", "ann", &ch);
        assert!(room.join(&m, None, b(), &[], T0).unwrap().broadcast.is_none());
        assert!(room.leave(&m, &[]).is_none());
    }

    #[test]
    fn the_alarm_waits_for_the_first_expiry_or_webhook_and_an_idle_room_has_none() {
        let ch = Channel::parse("chat:r").unwrap();
        let mut a = member("a", "ann", &ch);
        let b = member("b", "bob", &ch);
        a.exp = T0 / 1000 + 5;
        assert_eq!(poll_timeout([&a, &b].into_iter(), None), Some(T0 + 5000));
        assert_eq!(poll_timeout([&b].into_iter(), Some(T0 + 1)), Some(T0 + 1));
        assert_eq!(poll_timeout(std::iter::empty(), None), None, "history alone never wakes a room");
        assert!(is_expired(&a, T0 / 1000 + 5) && !is_expired(&b, T0 / 1000 + 5));
    }

    fn publish_sized(room: &mut Room<MemStore>, n: usize, bytes: usize, at: i64) {
        let data = RawValueBox::from_string(serde_json::to_string(&"x".repeat(bytes)).unwrap()).unwrap();
        let ds: Vec<Delivery> = (0..n).map(|i| Delivery { id: format!("s{at}-{i}"), event: "e".into(), data: data.clone() }).collect();
        room.publish(&ds, at).unwrap();
    }

    #[test]
    fn a_gap_of_more_than_1000_events_is_answered_with_reset() {
        fresh_room!(ch = "orders:v", room);
        publish_n(&mut room, 1200, T0);
        let m = member("c", "u", &ch);
        let frames = room.join(&m, Some(199), b(), &[], T0).unwrap().frames;
        assert_eq!(json(&frames[1])["type"], "reset", "1001 events");
        assert_eq!(frames.len(), 2);
        assert_eq!(seqs(&room.join(&m, Some(200), b(), &[], T0).unwrap().frames).len(), 1000, "exactly 1000 is replayed");
    }

    #[test]
    fn a_gap_of_more_than_1_mib_of_frames_is_answered_with_reset() {
        fresh_room!(ch = "chat:r", room);
        publish_sized(&mut room, 40, 60 * 1024, T0);
        let m = member("c", "u", &ch);
        let frames = room.join(&m, Some(0), b(), &[], T0).unwrap().frames;
        assert_eq!((json(&frames[1])["type"].as_str(), frames.len()), (Some("reset"), 2), "40 x 60 KiB");
        assert_eq!(seqs(&room.join(&m, Some(25), b(), &[], T0).unwrap().frames), (26..=40).collect::<Vec<_>>(), "15 x 60 KiB fit");
        // Without `since`, chat replays as many of its last 50 as fit, newest kept.
        let recent = seqs(&room.join(&m, None, b(), &[], T0).unwrap().frames);
        assert_eq!(recent, (24..=40).collect::<Vec<_>>());
        assert!(recent.len() as u64 * 60 * 1024 <= MAX_REPLAY_BYTES as u64);
    }

    #[test]
    fn payment_replays_everything_retained_within_the_bounds() {
        fresh_room!(ch = "payment:o", room);
        publish_n(&mut room, 3, T0);
        let m = member("c", "u", &ch);
        assert_eq!(seqs(&room.join(&m, None, b(), &[], T0).unwrap().frames), [1, 2, 3]);
        publish_sized(&mut room, 20, 60 * 1024, T0);
        let frames = room.join(&m, None, b(), &[], T0).unwrap().frames;
        assert_eq!(json(&frames[1])["type"], "reset", "too large to replay whole: the page reloads");
    }

    #[test]
    fn retention_is_bounded_in_bytes_beyond_the_newest_100() {
        fresh_room!(ch = "orders:v", room);
        // 300 events of 32 KiB within one minute: the last 100 stay whatever their size, and
        // older ones only up to HISTORY_MAX_EXTRA_BYTES (64 of 32 KiB), pruned on write.
        for i in 0..300 {
            publish_sized(&mut room, 1, 32 * 1024, T0 + i);
        }
        room.prune(T0 + 1000).unwrap();
        let oldest = room.store.oldest_seq().unwrap().unwrap();
        let older_bytes: usize = room.store.sizes_after(0, usize::MAX).unwrap().iter().filter(|(s, _)| *s <= 200).map(|(_, b)| b).sum();
        assert!(older_bytes <= HISTORY_MAX_EXTRA_BYTES, "{older_bytes}");
        assert_eq!(oldest, 200 - (HISTORY_MAX_EXTRA_BYTES / (32 * 1024 + 7)) as u64 + 1, "oldest first");
        assert_eq!(room.store.events_between(200, u64::MAX).unwrap().len(), 100, "the newest 100 always stay");
        // Without pruning calls from outside, writes kept it bounded all along.
        assert!(room.store.events.len() < 300);
    }

    #[test]
    fn the_chat_rate_limit_holds_per_user_across_their_sockets() {
        fresh_room!(ch = "chat:r", room);
        let mut tabs: Vec<Member> = (0..8).map(|i| member(&format!("c{i}"), "u", &ch)).collect();
        let mut outcomes = Vec::new();
        for i in 0..40 {
            let f = format!(r#"{{"type":"send","id":"{i}","text":"x"}}"#);
            let effects = room.on_text(&mut tabs[i % 8], &f, &Incoming { now_ms: T0 + i as i64, verify: &no_refresh }).unwrap();
            outcomes.push(match effects.iter().find(|e| matches!(e, Effect::Close(..))) {
                Some(Effect::Close(code, _)) => code.to_string(),
                _ => reply_code(&effects).unwrap_or_else(|| "ok".into()),
            });
        }
        assert!(outcomes[..20].iter().all(|c| c == "ok"), "{outcomes:?}");
        assert!(outcomes[20..39].iter().all(|c| c == "rate_limited"), "{outcomes:?}");
        assert_eq!(outcomes[39], "4429", "the socket that reaches twice the limit");
        // Closing every socket and reconnecting does not reset the user's window.
        for tab in &tabs {
            room.memory.socket_left(&tab.sub, T0, || 0);
        }
        let mut again = member("c9", "u", &ch);
        let effects =
            room.on_text(&mut again, r#"{"type":"send","id":"y","text":"x"}"#, &Incoming { now_ms: T0 + 41, verify: &no_refresh });
        assert!(matches!(effects.unwrap()[..], [Effect::Close(4429, _)]), "a reconnect keeps the user's count");
        let effects =
            room.on_text(&mut again, r#"{"type":"send","id":"w","text":"x"}"#, &Incoming { now_ms: T0 + 10_001, verify: &no_refresh });
        assert!(effects.unwrap().iter().any(|e| matches!(e, Effect::Broadcast(_))), "the window ends with its period");
        // Another user is unaffected.
        let mut other = member("d", "v", &ch);
        let effects = room.on_text(&mut other, r#"{"type":"send","id":"z","text":"x"}"#, &Incoming { now_ms: T0, verify: &no_refresh });
        assert!(effects.unwrap().iter().any(|e| matches!(e, Effect::Broadcast(_))));
    }

    #[test]
    fn history_reads_page_oldest_first_and_say_reset_when_the_gap_is_gone() {
        fresh_room!(ch = "orders:v", room);
        assert_eq!(room.history(0, 100).unwrap(), History { seq: 0, reset: false, events: vec![] });
        publish_n(&mut room, 150, T0);
        let h = room.history(10, 5).unwrap();
        assert_eq!((h.seq, h.reset, h.events.iter().map(|e| e.seq).collect::<Vec<_>>()), (150, false, vec![11, 12, 13, 14, 15]));
        assert!(room.history(150, 100).unwrap().events.is_empty());
        assert!(room.history(999, 100).unwrap().events.is_empty());
        room.prune(T0 + 11 * 60 * 1000).unwrap();
        let h = room.history(10, 5).unwrap();
        assert!(h.reset && h.events.is_empty());
        assert_eq!(room.history(50, 1000).unwrap().events.len(), 100);
        publish_sized(&mut room, 100, 60 * 1024, T0 + 11 * 60 * 1000);
        let h = room.history(150, 1000).unwrap();
        assert!(h.events.len() < 100 && !h.events.is_empty(), "bounded in bytes: {}", h.events.len());
        assert_eq!(h.events[0].seq, 151);
    }

    #[test]
    fn users_are_distinct_sorted_counted_and_capped() {
        let ch = Channel::parse("chat:r").unwrap();
        let ms = [member("1", "bob", &ch), member("2", "ann", &ch), member("3", "bob", &ch)];
        let (users, truncated) = users(&ms, 1000);
        assert!(!truncated);
        assert_eq!(users.iter().map(|u| (u.sub.as_str(), u.sockets)).collect::<Vec<_>>(), [("ann", 1), ("bob", 2)]);
        assert_eq!(
            self::users(&ms, 1),
            (vec![User { sub: "ann".into(), name: Some("ann-name".into()), role: Some("customer".into()), sockets: 1 }], true)
        );
    }

    #[test]
    fn a_chat_welcome_lists_who_is_there() {
        fresh_room!(ch = "chat:r", room);
        let others = [member("b1", "bob", &ch), member("b2", "bob", &ch), member("z1", "zed", &ch)];
        let j = room.join(&member("a1", "ann", &ch), None, b(), &others, T0).unwrap();
        let w = json(&j.frames[0]);
        assert_eq!(w["count"], 3);
        let subs: Vec<&str> = w["presence"].as_array().unwrap().iter().map(|p| p["sub"].as_str().unwrap()).collect();
        assert_eq!(subs, ["ann", "bob", "zed"]);
        assert_eq!(w["presence"][0], serde_json::json!({"sub": "ann", "name": "ann-name", "role": "customer"}));
        let crowd: Vec<Member> = (0..150).map(|i| member(&format!("c{i}"), &format!("u{i:03}"), &ch)).collect();
        let w = json(&room.join(&member("x", "ann", &ch), None, b(), &crowd, T0).unwrap().frames[0]);
        assert_eq!((w["count"].as_u64(), w["presence"].as_array().unwrap().len()), (Some(151), MAX_PRESENCE_LISTED));
        fresh_room!(orders = "orders:v", room);
        let w = json(&room.join(&member("a", "ann", &orders), None, b(), &[], T0).unwrap().frames[0]);
        assert!(w.get("presence").is_none() && w.get("count").is_none(), "chat only");
    }

    #[test]
    fn refresh_consults_revocations_the_room_learned_after_connect() {
        fresh_room!(ch = "chat:r", room);
        // The socket's own token is newer than the revocation, so the push leaves it open,
        // but a refresh with an older token must be refused.
        let mut survivor = member("c", "u", &ch);
        survivor.iat = Some(T0 / 1000 + 20);
        assert!(!room.memory.apply_revocation(&mut survivor, T0 / 1000 + 10, T0));
        let old = |_: &str| Ok(claims("u", &["chat:r"], &[]));
        let f = r#"{"type":"refresh","token":"t"}"#;
        let effects = room.on_text(&mut survivor, f, &Incoming { now_ms: T0, verify: &old }).unwrap();
        assert!(effects.contains(&Effect::Close(close::UNAUTHENTICATED, "refresh refused")));
        // A socket that never heard of it (connected before, attachment unchanged) too.
        let mut unaware = member("d", "u", &ch);
        let effects = room.on_text(&mut unaware, f, &Incoming { now_ms: T0, verify: &old }).unwrap();
        assert!(effects.contains(&Effect::Close(close::UNAUTHENTICATED, "refresh refused")));
        // And a connect with the old token.
        assert_eq!(room.join(&member("e", "u", &ch), None, b(), &[], T0).unwrap().close, Some((close::UNAUTHENTICATED, "token revoked")));
    }

    #[test]
    fn member_tags_fit_the_runtime_limit_and_stay_distinct() {
        assert_eq!(member_tag("alice"), "sub:alice");
        let long = "x".repeat(5000);
        assert!(member_tag(&long).len() <= 256);
        assert_ne!(member_tag(&long), member_tag(&"x".repeat(4999)));
        assert!(member_tag(&"é".repeat(100)).len() <= 256);
    }

    #[test]
    fn the_largest_member_fits_a_hibernation_attachment() {
        // The runtime limits an attachment to 2 KiB; the shell wraps the member in ~30 bytes.
        let ch = Channel::parse("chat:r").unwrap();
        let mut m = member("c0123456789abcdef", "s", &ch);
        m.sub = "\u{1}".repeat(crate::protocol::token::MAX_SUB_BYTES / 6);
        m.name = Some("\u{1}".repeat(MAX_DISPLAY_CHARS));
        m.role = Some("\u{1}".repeat(MAX_DISPLAY_CHARS));
        (m.exp, m.iat, m.window_start, m.revoked_before, m.joined_ms) = (i64::MAX, Some(i64::MAX), i64::MAX, Some(i64::MAX), i64::MIN);
        (m.window_count, m.strikes) = (u32::MAX, u32::MAX);
        assert!(serde_json::to_string(&m).unwrap().len() + 32 <= 2048);
    }

    fn link(room: &mut Room<MemStore>, inbox: &str, remove: bool) -> LinkResult {
        let order = LinkOrder { channel: room.channel.clone(), inbox: Channel::parse(inbox).unwrap(), remove };
        room.link(&[order]).unwrap().remove(0)
    }

    #[test]
    fn a_linked_channel_owes_each_inbox_what_it_accepts_after_the_link() {
        fresh_room!(ch = "chat:o-1", room);
        publish_n(&mut room, 1, T0);
        assert!(room.forwards_due(T0).unwrap().is_empty(), "nothing linked: nothing owed");
        assert_eq!(link(&mut room, "inbox:v1", false), LinkResult { linked: true, error: None });
        assert!(link(&mut room, "inbox:v2", false).linked);
        let out = room.publish(&[delivery("a"), delivery("a")], T0).unwrap();
        assert!(out[0].forwarded && !out[1].forwarded, "a duplicate is not forwarded again");
        let mut m = member("c", "u", &ch);
        let effects =
            room.on_text(&mut m, r#"{"type":"send","id":"m1","text":"hi"}"#, &Incoming { now_ms: T0, verify: &no_refresh }).unwrap();
        assert!(effects.contains(&Effect::Forward), "a chat message from a socket is forwarded too");
        let due = room.forwards_due(T0).unwrap();
        assert_eq!(due.len(), 2, "one call per inbox");
        for batch in &due {
            assert_eq!(batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3], "after the link only, in seq order");
        }
        assert_eq!(due[0].events[1].event, "chat.message");
        // Removed: later events are not forwarded; what was accepted while it held still goes.
        link(&mut room, "inbox:v2", true);
        publish_n(&mut room, 1, T0 + 1);
        for batch in &due {
            room.forward_attempted(batch, true, T0 + 2).unwrap();
        }
        assert_eq!(room.store.links.len(), 1, "a removed link that owes nothing goes");
        let due = room.forwards_due(T0 + 2).unwrap();
        assert_eq!(due.iter().map(|b| (b.inbox.to_string(), b.upto())).collect::<Vec<_>>(), [("inbox:v1".to_owned(), 4)]);
    }

    #[test]
    fn accepting_an_event_on_a_linked_channel_writes_nothing_more() {
        fresh_room!(ch = "orders:v1", room);
        link(&mut room, "inbox:v1", false);
        let links = room.store.links.clone();
        publish_n(&mut room, 5, T0);
        assert_eq!(room.store.links, links, "the cursor lags; the events are the history's");
        assert_eq!(room.store.events.len(), 5);
        let _ = ch;
    }

    #[test]
    fn one_forwarding_call_per_inbox_at_a_time_retried_by_the_shared_rule_until_it_lands() {
        fresh_room!(ch = "orders:v1", room);
        link(&mut room, "inbox:v1", false);
        publish_n(&mut room, 2, T0);
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), Some(0), "copies are due at once");
        let first = room.forwards_due(T0).unwrap();
        assert_eq!(first[0].events.len(), 2);
        publish_n(&mut room, 1, T0 + 1);
        assert!(room.forwards_due(T0 + 1).unwrap().is_empty(), "a second call could overtake the first");
        // The call fails: the inbox's events (the new one too) wait for the backoff.
        assert_eq!(room.forward_attempted(&first[0], false, T0 + 5).unwrap(), Settled::RetryAt(T0 + 1_005));
        assert!(room.forwards_due(T0 + 1_004).unwrap().is_empty());
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), Some(T0 + 1_005));
        publish_n(&mut room, 1, T0 + 6);
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), Some(T0 + 1_005), "a new event waits with the others");
        let again = room.forwards_due(T0 + 1_005).unwrap();
        assert_eq!(again[0].events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4], "the same events again, oldest first");
        assert_eq!(room.forward_attempted(&again[0], false, T0 + 1_010).unwrap(), Settled::RetryAt(T0 + 1_010 + 2_000), "doubling");
        let third = room.forwards_due(T0 + 3_010).unwrap();
        assert_eq!(room.forward_attempted(&third[0], true, T0 + 3_020).unwrap(), Settled::Delivered);
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), None, "nothing owed: no alarm");
        assert_eq!((room.store.links[0].sent, room.store.links[0].attempts), (4, 0));
        let _ = ch;
    }

    #[test]
    fn a_day_of_failures_gives_up_the_batch_and_moves_on() {
        fresh_room!(ch = "orders:v1", room);
        link(&mut room, "inbox:v1", false);
        publish_n(&mut room, 2, T0);
        let batch = room.forwards_due(T0).unwrap().remove(0);
        room.forward_attempted(&batch, false, T0).unwrap();
        let day = crate::protocol::retry::GIVE_UP_AFTER_MS;
        let batch = room.forwards_due(T0 + day + 1).unwrap().remove(0);
        assert_eq!(room.forward_attempted(&batch, false, T0 + day + 1).unwrap(), Settled::GaveUp);
        assert_eq!(room.memory.take_forwards_dropped(), 2);
        assert!(room.forwards_due(T0 + day + 2).unwrap().is_empty());
        let _ = ch;
    }

    #[test]
    fn a_forwarding_call_lost_with_no_answer_is_sent_again_after_its_deadline() {
        fresh_room!(ch = "orders:v1", room);
        link(&mut room, "inbox:v1", false);
        publish_n(&mut room, 1, T0);
        assert_eq!(room.forwards_due(T0).unwrap().len(), 1);
        assert_eq!(room.poll_timeout([].iter(), T0).unwrap(), Some(T0 + links::FORWARD_CALL_MS));
        assert_eq!(room.forwards_due(T0 + links::FORWARD_CALL_MS).unwrap().len(), 1, "the inbox dedupes a second copy");
        // An evicted instance forgets its calls: a fresh memory sends at once.
        room.memory.forwarding = InFlight::default();
        assert_eq!(room.forwards_due(T0 + links::FORWARD_CALL_MS + 1).unwrap().len(), 1);
        let _ = ch;
    }

    #[test]
    fn history_is_kept_for_a_lagging_inbox_up_to_the_bound_then_the_oldest_are_given_up() {
        fresh_room!(ch = "orders:v1", room);
        link(&mut room, "inbox:v1", false);
        publish_n(&mut room, 300, T0);
        // An hour later, the room's own retention would keep the newest 100 only.
        room.prune(T0 + 60 * 60 * 1000).unwrap();
        assert_eq!(room.store.oldest_seq().unwrap(), Some(1), "every event the inbox is owed stays");
        assert_eq!(room.forwards_due(T0 + 60 * 60 * 1000).unwrap()[0].events[0].seq, 1);
        // Past the bound, the oldest are given up and the cursor moves to it.
        let mut room = Room::new(&ch, room.store, room.memory, Limits::default());
        room.memory.forwarding = InFlight::default();
        let ds: Vec<Delivery> = (0..100).map(|i| delivery(&format!("d{i}"))).collect();
        for round in 0..(links::FORWARD_QUEUE_MAX / 100) {
            room.publish(&ds.iter().map(|d| Delivery { id: format!("{}-{round}", d.id), ..d.clone() }).collect::<Vec<_>>(), T0).unwrap();
        }
        room.prune(T0 + 2 * 60 * 60 * 1000).unwrap();
        assert_eq!(room.memory.take_forwards_dropped(), 300);
        assert_eq!(room.store.links[0].sent, 300);
        assert_eq!(room.store.oldest_seq().unwrap(), Some(301));
        assert_eq!(room.forwards_due(T0 + 2 * 60 * 60 * 1000).unwrap()[0].events[0].seq, 301);
        // Delivered, the room's own retention applies again.
        room.store.links[0].sent = room.store.latest;
        room.prune(T0 + 3 * 60 * 60 * 1000).unwrap();
        assert_eq!(room.store.events.len() as u64, HISTORY_MIN_EVENTS);
    }

    #[test]
    fn an_inbox_stores_each_copy_once_with_its_own_seq_and_its_source() {
        fresh_room!(ch = "inbox:v1", room);
        let source = Channel::parse("chat:o-1").unwrap();
        let copy = |seq: u64, id: &str| StoredEvent {
            seq,
            id: id.into(),
            event: "chat.message".into(),
            data: "{}".into(),
            ts: T0 - 5,
            source: None,
        };
        let frames = room.accept_copies(&source, &[copy(7, "a"), copy(8, "b")], T0).unwrap();
        let first = json(&frames[0]);
        assert_eq!(
            first,
            serde_json::json!({"type": "event", "channel": "inbox:v1", "seq": 1, "id": "a", "event": "chat.message", "data": {}, "ts": T0 - 5,
                               "source": {"channel": "chat:o-1", "seq": 7}})
        );
        // Sent twice (a retry after a lost answer): stored once.
        let again = room.accept_copies(&source, &[copy(7, "a"), copy(8, "b"), copy(9, "c")], T0).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(json(&again[0])["seq"], 3);
        // Another source with the same seq and id is another event.
        let other = Channel::parse("orders:v1").unwrap();
        assert_eq!(room.accept_copies(&other, &[copy(7, "a")], T0).unwrap().len(), 1);
        let history = room.history(0, 100).unwrap();
        assert_eq!(history.events.iter().map(|e| e.source.as_ref().unwrap().seq).collect::<Vec<_>>(), [7, 8, 9, 7]);
        // A socket joining without since gets the last 50, with their source.
        let join = room.join(&member("c", "u", &ch), None, b(), &[], T0).unwrap();
        assert_eq!(seqs(&join.frames), [1, 2, 3, 4]);
        assert_eq!(json(&join.frames[4])["source"]["channel"], "orders:v1");
    }

    #[test]
    fn an_inbox_is_never_linked_and_never_forwards() {
        fresh_room!(ch = "inbox:v1", room);
        let order = LinkOrder { channel: ch.clone(), inbox: Channel::parse("inbox:v2").unwrap(), remove: false };
        assert!(room.link(&[order]).is_err());
        assert!(room.forwards_due(T0).unwrap().is_empty());
    }

    fn inbox_member(room: &mut Room<MemStore>, conn: &str, publish: &[&str]) -> Member {
        let claims = claims("staff", &["inbox:v1"], publish);
        let verified = Verified::new(&claims, room.channel);
        room.keep_answers(conn, &verified.answers).unwrap();
        Member::admit(conn.into(), verified)
    }

    #[test]
    fn an_inbox_send_names_a_chat_the_token_may_post_to() {
        fresh_room!(ch = "inbox:v1", room);
        let mut staff = inbox_member(&mut room, "c1", &["chat:o-1", "orders:v1"]);
        let incoming = Incoming { now_ms: T0, verify: &no_refresh };
        let send = |channel: &str| format!(r#"{{"type":"send","channel":{channel},"id":"r1","text":"on its way"}}"#);
        let effects = room.on_text(&mut staff, &send(r#""chat:o-1""#), &incoming).unwrap();
        let post = Post {
            sub: "staff".into(),
            name: Some("staff-name".into()),
            role: Some("customer".into()),
            id: "r1".into(),
            text: "on its way".into(),
        };
        assert!(effects.contains(&Effect::Relay(Channel::parse("chat:o-1").unwrap(), post)), "{effects:?}");
        assert_eq!(reply_code(&room.on_text(&mut staff, &send(r#""chat:o-2""#), &incoming).unwrap()).as_deref(), Some("forbidden"));
        for bad in [r#""orders:v1""#, r#""chat:o 1""#, r#""inbox:v1""#, "7", "null"] {
            assert_eq!(reply_code(&room.on_text(&mut staff, &send(bad), &incoming).unwrap()).as_deref(), Some("bad_channel"), "{bad}");
        }
        let unnamed = r#"{"type":"send","id":"r1","text":"x"}"#;
        assert_eq!(reply_code(&room.on_text(&mut staff, unnamed, &incoming).unwrap()).as_deref(), Some("bad_channel"));
        assert_eq!(room.store.latest, 0, "the inbox stores nothing of a send");
        // A token without a publish grant for chats keeps nothing, and may answer nowhere.
        let mut reader = inbox_member(&mut room, "c2", &[]);
        assert!(room.store.grants_of("c2").unwrap().is_empty());
        assert_eq!(reply_code(&room.on_text(&mut reader, &send(r#""chat:o-1""#), &incoming).unwrap()).as_deref(), Some("forbidden"));
        // A wildcard grant answers every chat; leaving forgets it.
        let mut admin = inbox_member(&mut room, "c3", &["chat:*"]);
        assert!(room.on_text(&mut admin, &send(r#""chat:any""#), &incoming).unwrap().iter().any(|e| matches!(e, Effect::Relay(..))));
        room.forget_answers("c3").unwrap();
        assert_eq!(reply_code(&room.on_text(&mut admin, &send(r#""chat:any""#), &incoming).unwrap()).as_deref(), Some("forbidden"));
    }

    #[test]
    fn a_refresh_on_an_inbox_replaces_what_the_socket_may_answer() {
        fresh_room!(ch = "inbox:v1", room);
        let mut staff = inbox_member(&mut room, "c1", &["chat:o-1"]);
        let renewed = |_: &str| Ok(claims("staff", &["inbox:v1"], &["chat:o-2"]));
        let effects = room.on_text(&mut staff, r#"{"type":"refresh","token":"t"}"#, &Incoming { now_ms: T0, verify: &renewed }).unwrap();
        assert!(effects.iter().any(|e| matches!(e, Effect::Reply(r) if r.contains("refreshed"))));
        assert_eq!(room.store.grants_of("c1").unwrap(), ["chat:o-2"]);
    }

    #[test]
    fn a_post_through_an_inbox_follows_the_chats_rules_and_its_users_rate() {
        fresh_room!(ch = "chat:o-1", room);
        link(&mut room, "inbox:v1", false);
        let post = |id: &str, text: &str| Post {
            sub: "staff".into(),
            name: Some("Sam".into()),
            role: Some("staff".into()),
            id: id.into(),
            text: text.into(),
        };
        let (posted, effects) = room.post(&post("r1", "on its way"), T0).unwrap();
        assert_eq!(posted, Posted::Accepted);
        let Some(Effect::Broadcast(frame)) = effects.first() else { panic!("{effects:?}") };
        assert_eq!(json(frame)["data"]["author"], serde_json::json!({"sub": "staff", "name": "Sam", "role": "staff"}));
        assert_eq!(json(frame)["id"], "staff/r1");
        assert!(effects.iter().any(|e| matches!(e, Effect::ChatAccepted(_))) && effects.contains(&Effect::Forward));
        let (posted, effects) = room.post(&post("r1", "on its way"), T0).unwrap();
        assert_eq!((posted, effects), (Posted::Accepted, Vec::new()), "a repeated id is delivered once");
        for (text, code) in [("", ErrorCode::Empty), (&*"x".repeat(2001), ErrorCode::TooLong)] {
            assert!(matches!(room.post(&post("r2", text), T0).unwrap().0, Posted::Refused { code: c, .. } if c == code));
        }
        // The user's rate counts their own sockets' frames and their posts alike.
        let mut own = member("c", "staff", &ch);
        for i in 0..10 {
            room.on_text(&mut own, &format!(r#"{{"type":"send","id":"s{i}","text":"x"}}"#), &Incoming { now_ms: T0, verify: &no_refresh })
                .unwrap();
        }
        let outcomes: Vec<Posted> = (0..30).map(|i| room.post(&post(&format!("p{i}"), "x"), T0 + 1).unwrap().0).collect();
        assert_eq!(outcomes.iter().filter(|p| **p == Posted::Accepted).count(), 6, "20 a window: 4 + 10 spent already");
        assert!(matches!(outcomes[6], Posted::Refused { code: ErrorCode::RateLimited, .. }));
        assert_eq!(outcomes[25], Posted::TooFast, "at twice the limit the inbox socket is closed");
    }

    #[test]
    fn the_chats_answer_reaches_the_inbox_socket() {
        fresh_room!(ch = "inbox:v1", room);
        room.keep_answers("c", &["chat:o-1".into()]).unwrap();
        assert!(room.relayed(Some(Posted::Accepted)).is_empty(), "the message comes back as an event, through the link");
        let refused = room.relayed(Some(Posted::Refused { code: ErrorCode::TooLong, message: "long".into() }));
        assert_eq!(reply_code(&refused).as_deref(), Some("too_long"));
        assert_eq!(room.relayed(Some(Posted::TooFast)), vec![Effect::Close(close::RATE_LIMITED, "rate limited")]);
        assert_eq!(reply_code(&room.relayed(None)).as_deref(), Some("unavailable"));
        let _ = ch;
    }

    #[test]
    fn a_post_to_a_channel_that_takes_no_messages_is_refused() {
        fresh_room!(ch = "orders:v1", room);
        let post = Post { sub: "s".into(), name: None, role: None, id: "1".into(), text: "x".into() };
        assert!(matches!(room.post(&post, T0).unwrap().0, Posted::Refused { code: ErrorCode::Forbidden, .. }));
        assert_eq!(room.store.latest, 0);
        let _ = ch;
    }

    #[test]
    fn chat_event_ids_name_their_author_and_client_id_unambiguously() {
        assert_eq!(chat_event_id("cust-ann", "m1"), "cust-ann/m1", "ordinary subs are unchanged");
        assert_ne!(chat_event_id("a/b", "c"), chat_event_id("a", "b/c"));
        assert_eq!(chat_event_id("a/b", "c"), "a%2Fb/c");
        assert_eq!(chat_event_id("100%", "x"), "100%25/x");
        assert_ne!(chat_event_id("a%2Fb", "c"), chat_event_id("a/b", "c"));
    }
}
