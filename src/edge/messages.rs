//! The messages the Worker and the Durable Objects exchange (JSON over `fetch`). Only the
//! Worker can reach an object, and it does so after every check the protocol asks for, so
//! these carry verified values.

use serde::{Deserialize, Serialize};

use crate::protocol::publish::Delivery;
use crate::protocol::room::Member;

/// Internal header carrying the Worker's verified [`Ticket`].
pub const TICKET_HEADER: &str = "X-Foyer-Ticket";

/// What the Worker hands a room with a verified socket.
#[derive(Serialize, Deserialize)]
pub struct Ticket {
    pub channel: String,
    pub member: Member,
    pub since: Option<u64>,
    /// REQUIRE_CURRENT_BUILD is on and the client's build differs: welcome, then 4426.
    pub outdated: bool,
    /// Select `foyer.v1` in the answer (only when the client offered it).
    #[serde(default)]
    pub subprotocol: bool,
}

/// `/publish` to one room: its share of a request, in request order.
#[derive(Serialize, Deserialize)]
pub struct PublishRequest {
    pub channel: String,
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
    pub channel: String,
    #[serde(default)]
    pub since: u64,
    #[serde(default)]
    pub limit: usize,
}

/// A room's order to close a revoked user's sockets (from the user's Principal).
#[derive(Serialize, Deserialize)]
pub struct RevokeRequest {
    pub sub: String,
    /// Unix seconds: sockets whose token was issued at or before it are closed.
    pub revoked_at: i64,
}

#[derive(Serialize, Deserialize)]
pub struct RevokeReply {
    pub closed: u32,
}

/// The Worker's `/revoke` to the user's Principal.
#[derive(Serialize, Deserialize)]
pub struct RevokeOrder {
    pub sub: String,
    /// `None`: every channel where the user holds a socket.
    pub channels: Option<Vec<String>>,
    /// The revocation's time: the signed `t` of the request (Unix seconds).
    pub at: i64,
}

/// A room's question to a user's Principal when the user connects there.
#[derive(Serialize, Deserialize)]
pub struct JoinQuery {
    pub channel: String,
    pub now_ms: i64,
}

#[derive(Serialize, Deserialize)]
pub struct JoinAnswer {
    pub revoked_at: Option<i64>,
}

/// A room's notice that the user's last socket there closed at `at_ms`.
#[derive(Serialize, Deserialize)]
pub struct LeftNotice {
    pub channel: String,
    pub at_ms: i64,
}
