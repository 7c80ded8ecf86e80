//! The Durable Objects: one per channel, three classes (one per kind) over one engine.
//!
//! Why a Durable Object: a channel needs one place that orders its events (`seq`) and knows
//! its sockets. Why the Hibernation API: an idle room with open sockets costs nothing; the
//! runtime keeps the sockets, evicts the object, and wakes it with a fresh instance when a
//! frame, a publish or an alarm arrives. So nothing lives only in memory: each socket's
//! state is its *attachment*, the room's state is in SQLite, and timers are *alarms*.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, wasm_bindgen, DurableObject, Env, Error, Fetch, Headers, Method, Request, RequestInit, Response, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair, WebSocketRequestResponsePair,
};

use super::js;
use super::principal::{JoinAnswer, JoinQuery};
use super::runtime::{self, config, json_error};
use super::sql_store::SqlStore;
use crate::protocol::channel::Channel;
use crate::protocol::frame::{PING, PONG};
use crate::protocol::handshake::SUBPROTOCOL;
use crate::protocol::publish::Delivery;
use crate::protocol::revocation::Revocations;
use crate::protocol::room::{self, close, is_revoked, Effect, Member, Room, Store};
use crate::protocol::{signature, token, webhook};

/// Internal header carrying the Worker's verified [`Ticket`] (only the Worker can reach objects).
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

/// The Worker's order to close a revoked user's sockets.
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

/// A socket's attachment: the member, plus whether the server already closed it.
#[derive(Serialize, Deserialize)]
struct Attachment {
    member: Member,
    #[serde(default)]
    closing: bool,
}

impl Attachment {
    /// Stored as JSON text: one string crosses into JS, where a JS object would be built
    /// with a crossing per field (and read back the same way on every frame).
    fn save(&self, ws: &WebSocket) -> Result<()> {
        use worker::worker_sys::ext::WebSocketExt;
        let text = serde_json::to_string(self)?;
        ws.as_ref().serialize_attachment(wasm_bindgen::JsValue::from_str(&text)).map_err(Error::from)
    }

    fn load(ws: &WebSocket) -> Option<Attachment> {
        use worker::worker_sys::ext::WebSocketExt;
        serde_json::from_str(&ws.as_ref().deserialize_attachment().ok()?.as_string()?).ok()
    }
}

/// The engine's host. Memory here is a cache at most: a woken instance starts empty.
pub struct RoomObject {
    state: State,
    env: Env,
    store: RefCell<Option<SqlStore>>,
    /// When the alarm is known to be set for (ms), so hot paths skip storage round trips.
    alarm_at: std::cell::Cell<Option<i64>>,
    /// The channel this object serves, once known to be in storage.
    channel: RefCell<Option<Channel>>,
    /// Users' revocations as the Principal objects told or pushed them.
    revocations: RefCell<Revocations>,
}

impl RoomObject {
    fn new(state: State, env: Env) -> Self {
        // Answered by the runtime without waking the object: keep-alives cost nothing.
        if let Ok(pair) = WebSocketRequestResponsePair::new(PING, PONG) {
            state.set_websocket_auto_response(&pair);
        }
        RoomObject {
            state,
            env,
            store: RefCell::new(None),
            alarm_at: Default::default(),
            channel: Default::default(),
            revocations: Default::default(),
        }
    }

    /// Runs `f` with the room engine for `channel` over this object's storage.
    fn with_room<T>(&self, channel: &Channel, f: impl FnOnce(&mut Room<SqlStore>) -> std::result::Result<T, String>) -> Result<T> {
        let mut slot = self.store.borrow_mut();
        if slot.is_none() {
            *slot = Some(SqlStore::open(self.state.storage().sql()).map_err(Error::from)?);
        }
        let store = slot.as_mut().ok_or_else(|| Error::from("storage unavailable"))?;
        let mut room = Room::new(channel, store, config(&self.env).limits);
        f(&mut room).map_err(Error::from)
    }

    /// The channel this object serves, from its storage (alarms and socket events carry none).
    fn channel(&self) -> Option<Channel> {
        if let Some(channel) = self.channel.borrow().as_ref() {
            return Some(channel.clone());
        }
        let mut slot = self.store.borrow_mut();
        if slot.is_none() {
            *slot = SqlStore::open(self.state.storage().sql()).ok();
        }
        let channel = slot.as_ref()?.channel().and_then(|name| Channel::parse(&name).ok())?;
        *self.channel.borrow_mut() = Some(channel.clone());
        Some(channel)
    }

    fn remember_channel(&self, channel: &Channel) -> Result<()> {
        if self.channel.borrow().is_none() {
            self.with_room(channel, |room| room.store.set_channel(&channel.to_string()))?;
            *self.channel.borrow_mut() = Some(channel.clone());
        }
        Ok(())
    }

    /// Open sockets with their members. Reads every attachment: for rare paths (alarms, revocation, chat presence) only.
    fn sockets(&self) -> Vec<(WebSocket, Member)> {
        members(self.state.get_websockets())
    }

    /// The members [`Room::join`] needs to see: everyone under presence; otherwise only the
    /// user's own sockets, found by tag, and read only when their number reaches the cap
    /// (below it, even counting sockets mid-close, they cannot change the answer). A
    /// connect in a room of thousands reads no attachments.
    fn others_for_join(&self, channel: &Channel, sub: &str) -> Vec<(WebSocket, Member)> {
        if channel.kind().policy().presence {
            return self.sockets();
        }
        let tag = room::member_tag(sub);
        if (js::count_tagged(self.state.as_raw(), &tag) as usize) < config(&self.env).limits.sockets_per_sub {
            return Vec::new();
        }
        members(self.state.get_websockets_with_tag(&tag))
    }

    /// Sends one frame to every socket of the room; returns how many took it.
    fn fan_out(&self, frame: &str) -> u32 {
        js::send_all(&js::sockets(self.state.as_raw()), frame)
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/connect" => match self.connect(&req).await {
                Ok(response) => Ok(response),
                Err(e) => {
                    worker::console_error!("connect failed: {e}");
                    json_error(500, "internal", "the room could not take the socket")
                }
            },
            "/publish" => {
                // serde_json, not `req.json()`: event data stays raw JSON text end to end.
                let request: PublishRequest = serde_json::from_str(&req.text().await?)?;
                let channel = Channel::parse(&request.channel).map_err(|_| Error::from("bad channel"))?;
                self.remember_channel(&channel)?;
                let published = self.with_room(&channel, |room| room.publish(&request.events, runtime::now_ms()))?;
                let sockets = js::sockets(self.state.as_raw());
                let results = published
                    .into_iter()
                    .map(|p| PublishOutcome {
                        seq: p.seq,
                        // Serialized once; the same string goes to every socket.
                        delivered: p.frame.as_deref().map_or(0, |frame| js::send_all(&sockets, frame)),
                        duplicate: p.duplicate,
                    })
                    .collect();
                self.alarm_by(runtime::now_ms() + room::PRUNE_INTERVAL_MS).await?;
                Response::from_json(&PublishReply { results })
            }
            "/revoke" => {
                let request: RevokeRequest = serde_json::from_str(&req.text().await?)?;
                self.revocations.borrow_mut().revoke(&request.sub, request.revoked_at, runtime::now_ms());
                let mut closed = 0;
                for (ws, member) in self.sockets() {
                    if member.sub == request.sub && is_revoked(member.iat, Some(request.revoked_at)) {
                        self.close_socket(&ws, close::UNAUTHENTICATED, "token revoked");
                        closed += 1;
                    }
                }
                Response::from_json(&RevokeReply { closed })
            }
            _ => json_error(404, "not_found", "no such room endpoint"),
        }
    }

    async fn connect(&self, req: &Request) -> Result<Response> {
        let raw = req.headers().get(TICKET_HEADER)?.ok_or_else(|| Error::from("no ticket"))?;
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| Error::from("bad ticket"))?;
        let mut ticket: Ticket = serde_json::from_slice(&bytes)?;
        let channel = Channel::parse(&ticket.channel).map_err(|_| Error::from("bad channel"))?;
        self.remember_channel(&channel)?;

        let revoked_at = self.revocation_of(&ticket.member.sub, &channel).await?;
        if is_revoked(ticket.member.iat, revoked_at) {
            return Ok(runtime::accept_and_close(close::UNAUTHENTICATED, "token revoked", ticket.subprotocol).into());
        }
        ticket.member.revoked_before = revoked_at;

        let others: Vec<Member> = self.others_for_join(&channel, &ticket.member.sub).into_iter().map(|(_, m)| m).collect();
        let pair = WebSocketPair::new()?;
        let socket = pair.server;
        // Hibernatable accept: the runtime owns the socket from here on.
        self.state.accept_websocket_with_tags(&socket, &[&room::member_tag(&ticket.member.sub)]);
        Attachment { member: ticket.member.clone(), closing: false }.save(&socket)?;

        // No await between here and the last replayed frame: nothing can interleave, so a
        // live event published meanwhile is queued behind the replay, never inside it.
        let join = self.with_room(&channel, |room| room.join(&ticket.member, ticket.since, runtime::BUILD_ID, &others))?;
        for frame in &join.frames {
            socket.send_with_str(frame)?;
        }
        if let Some(presence) = &join.broadcast {
            self.fan_out(presence);
        }
        if let Some((code, reason)) = join.close {
            self.close_socket(&socket, code, reason);
        } else if ticket.outdated {
            self.close_socket(&socket, close::OUTDATED_BUILD, "client build is outdated");
        }
        // The alarm must fire by this token's expiry.
        self.alarm_by(ticket.member.exp.saturating_mul(1000)).await?;

        let mut response = Response::from_websocket(pair.client)?;
        if ticket.subprotocol {
            response.headers_mut().set("Sec-WebSocket-Protocol", SUBPROTOCOL)?;
        }
        Ok(response)
    }

    /// The revocation that applies to `sub` here: remembered, or asked of the user's
    /// Principal object (which records that the user joined this channel, so later
    /// revocations are pushed here). See protocol/revocation.rs.
    async fn revocation_of(&self, sub: &str, channel: &Channel) -> Result<Option<i64>> {
        let now_ms = runtime::now_ms();
        if let Some(known) = self.revocations.borrow().lookup(sub, now_ms) {
            return Ok(known);
        }
        let query = JoinQuery { channel: channel.to_string(), now: now_ms / 1000 };
        let answer: JoinAnswer = js::call(&self.env, runtime::principal(sub), "/join", &query).await?;
        Ok(self.revocations.borrow_mut().learn(sub, answer.revoked_at, now_ms))
    }

    /// Closes a socket from the server side, announcing the departure once.
    fn close_socket(&self, ws: &WebSocket, code: u16, reason: &str) {
        let departing = match Attachment::load(ws) {
            Some(mut a) if !a.closing => {
                a.closing = true;
                let _ = a.save(ws);
                Some(a.member)
            }
            _ => None,
        };
        // Fails only if the socket is already closed, which is the goal anyway.
        let _ = ws.close(Some(code), Some(reason));
        if let Some(member) = departing {
            self.announce_departure(&member);
        }
    }

    fn announce_departure(&self, member: &Member) {
        let Some(channel) = self.channel() else { return };
        // Only presence needs the others; a room of thousands closing sockets reads nothing.
        if !channel.kind().policy().presence {
            return;
        }
        let remaining: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).filter(|m| m.conn != member.conn).collect();
        if let Ok(Some(frame)) = self.with_room(&channel, |room| Ok(room.leave(member, &remaining))) {
            // The departed socket is closed: its send fails and it is not counted.
            self.fan_out(&frame);
        }
    }

    async fn message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let (Some(channel), Some(mut attachment)) = (self.channel(), Attachment::load(&ws)) else {
            self.close_socket(&ws, close::INTERNAL, "room state lost");
            return Ok(());
        };
        if attachment.closing {
            return Ok(());
        }
        let config = config(&self.env);
        let now_ms = runtime::now_ms();
        let verify = |t: &str| match &config.tokens {
            Ok((keys, expect)) => token::verify(t, keys, expect, now_ms / 1000),
            Err(_) => Err(token::TokenError::UnknownKey),
        };
        let member = &mut attachment.member;
        let effects = self.with_room(&channel, |room| match &message {
            WebSocketIncomingMessage::String(text) => room.on_text(member, text, now_ms, &verify),
            WebSocketIncomingMessage::Binary(bytes) => Ok(room.on_binary(member, bytes.len())),
        });
        let effects = match effects {
            Ok(effects) => effects,
            Err(e) => {
                worker::console_error!("room failed on a client frame: {e}");
                vec![Effect::Close(close::INTERNAL, "internal error")]
            }
        };
        let mut schedule = false;
        for effect in effects {
            match effect {
                // A refresh only moves an expiry later: the alarm set for the old one
                // fires, finds nothing expired, and sets the next deadline.
                Effect::Save => attachment.save(&ws)?,
                Effect::Reply(frame) => {
                    let _ = ws.send_with_str(&frame);
                }
                Effect::Broadcast(frame) => {
                    self.fan_out(&frame);
                }
                Effect::ChatAccepted(event) => {
                    // Queued durably and sent from the alarm: the room never waits for the
                    // backend, and a failed call is retried even across restarts.
                    if config.webhook.is_some() {
                        let body = webhook::body(&channel.to_string(), &event);
                        if let Err(e) = self.with_room(&channel, |room| room.store.outbox_put(&event.id, &body, now_ms)) {
                            worker::console_error!("webhook outbox: {e}");
                        }
                        schedule = true;
                    }
                }
                Effect::Close(code, reason) => self.close_socket(&ws, code, reason),
            }
        }
        if schedule {
            self.alarm_by(now_ms).await?;
        }
        Ok(())
    }

    /// A socket closed (by the client, or dropped) or errored. Only presence needs to know
    /// who left; elsewhere the close is answered without reading the attachment (a storm of
    /// departures then costs the room next to nothing).
    async fn closed(&self, ws: WebSocket) -> Result<()> {
        if self.channel().is_some_and(|c| c.kind().policy().presence) {
            self.close_socket(&ws, close::NORMAL, "closed");
        } else {
            // Fails only if the socket is already closed, which is the goal anyway.
            let _ = ws.close(Some(close::NORMAL), Some("closed"));
        }
        Ok(())
    }

    /// The one timer of a room: closes sockets whose token expired and prunes history.
    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(None);
        let now_ms = runtime::now_ms();
        for (ws, _) in self.sockets().into_iter().filter(|(_, m)| m.exp <= now_ms / 1000) {
            self.close_socket(&ws, close::UNAUTHENTICATED, "token expired");
        }
        if let Some(channel) = self.channel() {
            if let Err(e) = self.with_room(&channel, |room| room.prune(now_ms)) {
                worker::console_error!("pruning failed: {e}");
            }
            self.deliver_webhooks(&channel, now_ms).await;
        }
        self.schedule_alarm().await?;
        Response::ok("ok")
    }

    /// Sends due webhook calls; failures are rescheduled with backoff.
    async fn deliver_webhooks(&self, channel: &Channel, now_ms: i64) {
        let config = config(&self.env);
        let Some((url, secret)) = &config.webhook else { return };
        let due = match self.with_room(channel, |room| room.store.outbox_due(now_ms, 25)) {
            Ok(due) => due,
            Err(e) => return worker::console_error!("webhook outbox: {e}"),
        };
        for row in due {
            let delivered = match post_webhook(url, secret, &row.body).await {
                Ok(status) if (200..300).contains(&status) => true,
                Ok(status) => {
                    worker::console_warn!("webhook answered {status}; will retry");
                    false
                }
                Err(e) => {
                    worker::console_warn!("webhook unreachable ({e}); will retry");
                    false
                }
            };
            let attempts = row.attempts as u32 + 1;
            let outcome = self.with_room(channel, |room| {
                if delivered {
                    room.store.outbox_delete(&row.id)
                } else if now_ms - row.created as i64 > webhook::GIVE_UP_AFTER_MS {
                    worker::console_error!("webhook gave up on a message after {attempts} attempts");
                    room.store.outbox_delete(&row.id)
                } else {
                    room.store.outbox_retry(&row.id, attempts, now_ms + webhook::backoff_ms(attempts))
                }
            });
            if let Err(e) = outcome {
                worker::console_error!("webhook outbox: {e}");
            }
        }
    }

    /// Sets the alarm to the room's next deadline (see [`room::next_alarm`]).
    async fn schedule_alarm(&self) -> Result<()> {
        let now = runtime::now_ms();
        let members: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).collect();
        let (has_history, webhook_due) = match self.channel() {
            Some(channel) => self.with_room(&channel, |room| Ok((room.store.oldest_seq()?.is_some(), room.store.outbox_next_due()?)))?,
            None => (false, None),
        };
        let storage = self.state.storage();
        match room::next_alarm(members.iter(), has_history, webhook_due, now) {
            Some(at) => {
                let current = storage.get_alarm().await?;
                // Keep an earlier alarm; it reschedules itself when it fires.
                if current.is_none_or(|c| c > at || c < now) {
                    // An integer here is an offset from now, not a timestamp.
                    storage.set_alarm(at.saturating_sub(now).max(1)).await?;
                    self.alarm_at.set(Some(at));
                } else {
                    self.alarm_at.set(current);
                }
            }
            None => {
                storage.delete_alarm().await?;
                self.alarm_at.set(None);
            }
        }
        Ok(())
    }

    /// Makes sure the alarm fires no later than `at` (ms), touching storage only when the
    /// known alarm is later, already past, or unknown (a freshly woken instance).
    async fn alarm_by(&self, at: i64) -> Result<()> {
        let now = runtime::now_ms();
        let storage = self.state.storage();
        let current = match self.alarm_at.get() {
            Some(c) if c <= at && c > now => return Ok(()),
            // Known and pending: only the runtime could have moved it, by firing it.
            Some(c) if c > now => Some(c),
            _ => storage.get_alarm().await?,
        };
        if current.is_some_and(|c| c <= at && c > now) {
            self.alarm_at.set(current);
        } else {
            storage.set_alarm(at.saturating_sub(now).max(1)).await?;
            self.alarm_at.set(Some(at));
        }
        Ok(())
    }
}

/// One signed webhook call; returns the HTTP status.
async fn post_webhook(url: &str, secret: &[u8], body: &str) -> Result<u16> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    let t = runtime::now_secs();
    headers.set("X-Foyer-Signature", &signature::sign(secret, t, webhook::path_of(url), body.as_bytes()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let response = Fetch::Request(Request::new_with_init(url, &init)?).send().await?;
    Ok(response.status_code())
}

/// Sockets with their members, without those the server is already closing.
fn members(sockets: Vec<WebSocket>) -> Vec<(WebSocket, Member)> {
    sockets
        .into_iter()
        .filter_map(|ws| match Attachment::load(&ws) {
            Some(a) if !a.closing => Some((ws, a.member)),
            _ => None,
        })
        .collect()
}

/// Declares a Durable Object class for a kind. The classes differ only in name: the kind's
/// policy comes from the channel, so all three run the same engine by construction.
macro_rules! room_class {
    ($class:ident) => {
        #[durable_object]
        pub struct $class {
            room: RoomObject,
        }

        impl DurableObject for $class {
            fn new(state: State, env: Env) -> Self {
                Self { room: RoomObject::new(state, env) }
            }
            async fn fetch(&self, req: Request) -> Result<Response> {
                self.room.fetch(req).await
            }
            async fn alarm(&self) -> Result<Response> {
                self.room.alarm().await
            }
            async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
                self.room.message(ws, message).await
            }
            async fn websocket_close(&self, ws: WebSocket, _code: usize, _reason: String, _clean: bool) -> Result<()> {
                self.room.closed(ws).await
            }
            async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
                self.room.closed(ws).await
            }
        }
    };
}

room_class!(OrdersRoom);
room_class!(PaymentRoom);
room_class!(ChatRoom);
