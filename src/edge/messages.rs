//! The messages the Worker and the Durable Objects exchange (JSON over `fetch`). Only the
//! Worker can reach an object, and it does so after every check the protocol asks for, so
//! these carry verified values.

use serde::{Deserialize, Serialize};

use serde_json::value::RawValue;

use crate::protocol::channel::Channel;
use crate::protocol::frame::StoredEvent;
use crate::protocol::links::{LinkOrder, LinkResult};
use crate::protocol::publish::Delivery;
use crate::protocol::revocation::directory::Lease;
use crate::protocol::room::{Member, Post};

/// Internal header carrying the Worker's verified [`Ticket`].
pub const TICKET_HEADER: &str = "X-Foyer-Ticket";

/// What the Worker hands a room with a verified socket: the member the token's verified
/// claims make (its `conn` is the room's to give), and the client's requests. A member and
/// not the claims: the room reads members from its sockets' attachments too, so one
/// deserializer serves both, and V8 optimizes one fewer on a storm of connects.
#[derive(Serialize, Deserialize)]
pub struct Ticket {
    pub channel: Channel,
    pub member: Member,
    /// On an inbox: the chats the token may post to through it (see `Room::keep_answers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    pub since: Option<u64>,
    /// The client's `build=` id, when it sent one (the room decides 4426).
    pub build: Option<String>,
    /// Select `foyer.v1` in the answer (only when the client offered it).
    #[serde(default)]
    pub subprotocol: bool,
}

/// `/publish` to one room: its share of a request, in request order.
#[derive(Serialize, Deserialize)]
pub struct PublishRequest {
    pub channel: Channel,
    pub events: Vec<Delivery>,
}

#[derive(Serialize, Deserialize)]
pub struct PublishOutcome {
    pub seq: u64,
    pub delivered: u32,
    pub duplicate: bool,
}

#[derive(Serialize, Deserialize)]
pub struct PublishReply {
    pub results: Vec<PublishOutcome>,
}

/// `/state` and `/history` of a room (the backend's reads).
#[derive(Serialize, Deserialize)]
pub struct ReadQuery {
    pub channel: Channel,
    #[serde(default)]
    pub since: u64,
    #[serde(default)]
    pub limit: usize,
}

/// A room's order to close a revoked user's sockets (from the directory).
#[derive(Serialize, Deserialize)]
pub struct RevokeRequest {
    pub sub: String,
    /// Unix seconds: sockets whose token was issued at or before it are closed.
    pub revoked_at: i64,
}

#[derive(Serialize, Deserialize)]
pub struct RevokeReply {
    pub closed: u32,
    /// Some room of the first batch did not take the push yet (queued, retried): the
    /// revocation is recorded but not yet in force everywhere.
    #[serde(default)]
    pub pending: bool,
}

/// The Worker's `/revoke` to the user's directory shard.
#[derive(Serialize, Deserialize)]
pub struct RevokeOrder {
    pub sub: String,
    /// `None`: every channel where the user holds a socket.
    pub channels: Option<Vec<Channel>>,
    /// The revocation's time: the signed `t` of the request (Unix seconds).
    pub at: i64,
}

/// A room's record in the directory of users it does not know (`/joined`), before their
/// `welcome` or `refreshed`. The shard stamps it with its own clock.
#[derive(Serialize, Deserialize)]
pub struct Joined {
    pub channel: Channel,
    pub subs: Vec<String>,
    /// Asks for a lease on the shard as well (protocol/revocation.rs).
    #[serde(default)]
    pub lease: bool,
}

/// For each recorded sub in order, the revocation that applies in the channel (Unix
/// seconds) as of the record; and the lease, when asked for and granted.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinedAnswer {
    pub revoked: Vec<Option<i64>>,
    #[serde(default)]
    pub lease: Option<Lease>,
}

/// `/links` to one source channel: its share of a request's orders, in request order.
#[derive(Serialize, Deserialize)]
pub struct LinkRequest {
    pub channel: Channel,
    pub orders: Vec<LinkOrder>,
}

#[derive(Serialize, Deserialize)]
pub struct LinkReply {
    pub results: Vec<LinkResult>,
}

/// `/forward` from a source channel to one of its inboxes: its oldest pending copies, with
/// the source's `seq` of each.
#[derive(Serialize, Deserialize)]
pub struct ForwardRequest {
    pub inbox: Channel,
    pub source: Channel,
    pub events: Vec<Copy>,
}

/// One copy as it travels: `data` stays raw JSON text end to end.
#[derive(Serialize, Deserialize)]
pub struct Copy {
    pub seq: u64,
    pub id: String,
    pub event: String,
    pub data: Box<RawValue>,
    pub ts: i64,
}

impl Copy {
    pub fn of(e: &StoredEvent) -> Copy {
        let data = RawValue::from_string(e.data.clone()).unwrap_or_else(|_| crate::protocol::publish::null());
        Copy { seq: e.seq, id: e.id.clone(), event: e.event.clone(), data, ts: e.ts }
    }

    pub fn stored(self) -> StoredEvent {
        StoredEvent { seq: self.seq, id: self.id, event: self.event, data: self.data.get().to_owned(), ts: self.ts, source: None }
    }
}

#[derive(Serialize, Deserialize)]
pub struct ForwardReply {
    /// Copies the inbox stored now (the others it held already).
    pub stored: u32,
}

/// `/post` from an inbox to a chat: a message its socket sent there.
#[derive(Serialize, Deserialize)]
pub struct PostRequest {
    pub channel: Channel,
    pub post: Post,
}
