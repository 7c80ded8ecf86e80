//! The Durable Objects: one per channel, four classes (one per kind) over one engine.
//!
//! Why a Durable Object: a channel needs one place that orders its events (`seq`) and knows
//! its sockets. Why the Hibernation API: an idle room with open sockets costs nothing; the
//! runtime keeps the sockets, evicts the object, and wakes it with a fresh instance when a
//! frame, a publish or an alarm arrives. So nothing lives only in memory: each socket's
//! state is its *attachment*, the room's state is in SQLite, and timers are *alarms*. The
//! one alarm is set to the engine's deadline and nothing else: a room with no sockets and no
//! pending webhook holds none.
//!
//! - [`sockets`]: connect, client frames, departures, revocations pushed here.
//! - [`timer`]: the one alarm.
//! - [`webhook`]: sending the chat webhook calls the engine queued.
//! - [`forward`]: sending inboxes the copies the engine queued, and taking them in.

mod forward;
mod sockets;
mod timer;
mod webhook;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::FutureExt;

use serde_json::json;
use wasm_bindgen::prelude::{wasm_bindgen, JsValue};
use worker::{web_sys, Env, Error, Response, Result, State, WebSocket, WebSocketIncomingMessage, WebSocketRequestResponsePair};

use super::js;
use super::log;
use super::messages::{
    LinkReply, LinkRequest, PostRequest, PublishOutcome, PublishReply, PublishRequest, ReadQuery, RevokeReply, RevokeRequest,
};
use super::meter;
use super::runtime::{self, config, json_error};
use super::sql_store::SqlStore;
use crate::protocol::channel::Channel;
use crate::protocol::config::Level;
use crate::protocol::handshake;
use crate::protocol::reading::MAX_USERS_LISTED;
use crate::protocol::room::{self, Effect, Member, Memory, Room, Store};
use crate::protocol::wire::{PING, PONG};
use sockets::members;

/// The engine's host. Memory here is a cache at most: a woken instance starts empty.
pub struct RoomObject {
    state: State,
    env: Env,
    store: RefCell<Option<SqlStore>>,
    /// What the alarm is known to be, so hot paths skip storage round trips.
    alarm_at: Cell<timer::Alarm>,
    /// The alarm write under way, if any: a call it covers waits for it to land.
    alarm_write: RefCell<Option<timer::AlarmWrite>>,
    /// The channel this object serves, once known to be in storage.
    channel: RefCell<Option<Channel>>,
    /// The engine's in-memory state (rates, revocations learned, pruning bookkeeping).
    memory: RefCell<Memory>,
    /// Directory records under way, by user: concurrent connects of one user share one.
    recording: RefCell<HashMap<String, sockets::Asking>>,
    /// A lease under way, under its shard's name (the room's one): new users' connects
    /// meanwhile share it.
    leasing: RefCell<HashMap<String, sockets::Asking>>,
    /// The test failpoint `revoke_push_fails_once` has failed its push.
    push_failed: Cell<bool>,
    /// The test failpoint `alarm_write_fails_once` has failed its write.
    alarm_write_failed: Cell<bool>,
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
            alarm_write: Default::default(),
            channel: Default::default(),
            memory: Default::default(),
            recording: Default::default(),
            leasing: Default::default(),
            push_failed: Default::default(),
            alarm_write_failed: Default::default(),
        }
    }

    /// Ends an RPC invocation ([`meter::rpc_answer`]).
    fn rpc_answer(&self, place: &str, reply: Result<String>) -> std::result::Result<String, JsValue> {
        meter::rpc_answer(&self.env, &self.state, self.channel().as_ref(), place, reply)
    }

    /// Ends an invocation for the usage meter (off unless `METER=log`).
    fn meter(&self, what: &str) {
        meter::object(&self.env, &self.state, what);
    }

    /// Runs `f` with the room engine for `channel` over this object's storage.
    fn with_room<T>(&self, channel: &Channel, f: impl FnOnce(&mut Room<SqlStore>) -> std::result::Result<T, String>) -> Result<T> {
        let mut slot = self.store.borrow_mut();
        if slot.is_none() {
            *slot = Some(SqlStore::open(self.state.storage().sql()).map_err(Error::from)?);
        }
        let store = slot.as_mut().ok_or_else(|| Error::from("storage unavailable"))?;
        let mut memory = self.memory.borrow_mut();
        let mut room = Room::new(channel, store, &mut memory, config(&self.env).limits);
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

    /// Open sockets with their members. Reads every attachment: for rare paths (alarms, reads, chat presence) only.
    fn sockets(&self) -> Vec<(WebSocket, Member)> {
        members(self.state.get_websockets())
    }

    /// The members [`Room::join`] needs to see: everyone under presence; otherwise only the
    /// user's own sockets, found by tag, and read only when their number may have reached
    /// the cap (below it, even counting sockets mid-close, they cannot change the answer).
    /// A connect in a room of thousands reads no attachments, and usually lists no sockets.
    fn others_for_join(&self, channel: &Channel, sub: &str) -> Vec<Member> {
        if channel.kind().policy().presence {
            return self.sockets().into_iter().map(|(_, m)| m).collect();
        }
        let tag = room::member_tag(sub);
        let cap = config(&self.env).limits.sockets_per_sub;
        let raw = self.state.as_raw();
        if self.memory.borrow_mut().under_socket_cap(sub, cap, || js::count_tagged(raw, &tag) as usize) {
            return Vec::new();
        }
        members(self.state.get_websockets_with_tag(&tag)).into_iter().map(|(_, m)| m).collect()
    }

    /// What a room does with an accepted chat message, from a socket or through an inbox:
    /// every socket gets it, the webhook call is queued (sent from the alarm: the room never
    /// waits for the backend, and a failed call is retried even across restarts), and so are
    /// copies for the channel's inboxes. Other effects concern one socket: see `message`.
    async fn room_effect(self: &Rc<Self>, channel: &Channel, effect: Effect, now_ms: i64) -> Result<()> {
        match effect {
            Effect::Broadcast(frame) => {
                self.fan_out(&frame);
            }
            Effect::ChatAccepted(event) if config(&self.env).webhook.is_some() => {
                match self.with_room(channel, |room| room.queue_webhook(&event, now_ms)) {
                    Ok(dropped) => {
                        if dropped > 0 {
                            log::internal(
                                &self.env,
                                Some(channel),
                                "webhook outbox",
                                format!("full: dropped the {dropped} oldest messages"),
                            );
                        }
                        self.alarm_by(now_ms).await?
                    }
                    Err(e) => log::internal(&self.env, Some(channel), "webhook outbox", e),
                }
            }
            Effect::Forward => self.forward_soon(channel),
            _ => {}
        }
        Ok(())
    }

    /// Sends one frame to every socket of the room; returns how many took it.
    fn fan_out(&self, frame: &str) -> u32 {
        js::send_all(&js::sockets(self.state.as_raw()), frame)
    }

    /// A publish's share for this room (`PublishRequest` as JSON text), over RPC from the
    /// Worker (entry.js): stored, sent to every socket, answered with a `PublishReply`.
    fn publish(self: &Rc<Self>, body: &str) -> Result<String> {
        let request: PublishRequest = serde_json::from_str(body)?;
        let channel = request.channel;
        self.remember_channel(&channel)?;
        let now_ms = runtime::now_ms();
        let published = self.with_room(&channel, |room| room.publish(&request.events, now_ms))?;
        let sockets = js::sockets(self.state.as_raw());
        let forwarded = published.iter().any(|p| p.forwarded);
        let results: Vec<PublishOutcome> = published
            .into_iter()
            .map(|p| PublishOutcome {
                seq: p.seq,
                // Serialized once; the same string goes to every socket.
                delivered: p.frame.as_deref().map_or(0, |frame| js::send_all(&sockets, frame)),
                duplicate: p.duplicate,
            })
            .collect();
        if forwarded {
            // After the sockets above, and not in the answer's way.
            self.forward_soon(&channel);
        }
        let delivered: u32 = results.iter().map(|r| r.delivered).sum();
        if log::enabled(&self.env, Level::Debug) {
            let duplicates = results.iter().filter(|r| r.duplicate).count();
            let fields = json!({"events": results.len(), "delivered": delivered, "duplicates": duplicates});
            log::write(Level::Debug, "delivery", log::with(&channel, fields));
        }
        if log::metrics_bound(&self.env) {
            log::point(
                &self.env,
                channel.key(),
                &["delivery", channel.kind().as_str(), "", &channel.to_string()],
                &[results.len() as f64, delivered as f64],
            );
        }
        Ok(serde_json::to_string(&PublishReply { results })?)
    }

    /// Requests from the Worker (connects, reads, links) and the directory (revocations),
    /// in the runtime's own types: workers-rs' `Request` and `Response` conversions cost more
    /// than the work on these paths (bench/README.md).
    ///
    /// A connect's future and the other endpoints' are boxed apart: inlined into one function,
    /// V8 would optimize all of them whenever connects make it hot (gateway.rs `route`).
    async fn fetch(self: &Rc<Self>, req: web_sys::Request) -> Result<web_sys::Response> {
        let url = req.url();
        let path = handshake::split_url(&url).1;
        if path == "/connect" {
            return self.connect(&req).boxed_local().await;
        }
        self.endpoint(&req, path).boxed_local().await
    }

    /// Every request to the room but a connect: JSON in, JSON out.
    async fn endpoint(self: &Rc<Self>, req: &web_sys::Request, path: &str) -> Result<web_sys::Response> {
        // serde_json, not `.json()`: event data stays raw JSON text end to end.
        let body = js::text(req).await?;
        match path {
            "/links" => {
                let request: LinkRequest = serde_json::from_str(&body)?;
                self.remember_channel(&request.channel)?;
                let results = self.with_room(&request.channel, |room| room.link(&request.orders))?;
                js::json(&LinkReply { results })
            }
            "/post" => {
                let request: PostRequest = serde_json::from_str(&body)?;
                self.remember_channel(&request.channel)?;
                let now_ms = runtime::now_ms();
                let (posted, effects) = self.with_room(&request.channel, |room| room.post(&request.post, now_ms))?;
                for effect in effects {
                    self.room_effect(&request.channel, effect, now_ms).await?;
                }
                js::json(&posted)
            }
            "/revoke" => {
                let request: RevokeRequest = serde_json::from_str(&body)?;
                // Justified failpoint: the runtime cannot be made to fail one call between objects.
                if config(&self.env).failpoint("revoke_push_fails_once") && !self.push_failed.replace(true) {
                    return Err(Error::from("failpoint revoke_push_fails_once"));
                }
                js::json(&RevokeReply { closed: self.revoke(&request).await, pending: false })
            }
            "/state" => Ok(self.read_state(&serde_json::from_str(&body)?).await?.into()),
            "/history" => Ok(self.read_history(&serde_json::from_str(&body)?)?.into()),
            _ => Ok(json_error(404, "not_found", "no such room endpoint")?.into()),
        }
    }

    /// `GET /channels/{kind}/{key}`: reads only; an unused channel stores nothing. Foyer adds
    /// `next_alarm` (ms, or null): whether the room is timing anything (an idle room is not).
    async fn read_state(&self, query: &ReadQuery) -> Result<Response> {
        let channel = &query.channel;
        let seq = if SqlStore::exists(&self.state.storage().sql()) { self.with_room(channel, |room| room.store.latest_seq())? } else { 0 };
        let members: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).collect();
        let (users, truncated) = room::users(&members, MAX_USERS_LISTED);
        let next_alarm = self.state.storage().get_alarm().await?;
        Response::from_json(&serde_json::json!({
            "channel": query.channel, "seq": seq, "sockets": members.len(), "users": users, "truncated": truncated,
            "next_alarm": next_alarm,
        }))
    }

    /// `GET /channels/{kind}/{key}/history`: reads only; an unused channel stores nothing.
    fn read_history(&self, query: &ReadQuery) -> Result<Response> {
        let history = if SqlStore::exists(&self.state.storage().sql()) {
            self.with_room(&query.channel, |room| room.history(query.since, query.limit))?
        } else {
            room::History { seq: 0, reset: false, events: Vec::new() }
        };
        let events: Vec<serde_json::Value> = history
            .events
            .iter()
            .map(|e| {
                let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null);
                let mut v = serde_json::json!({"seq": e.seq, "id": e.id, "event": e.event, "data": data, "ts": e.ts});
                if let Some(source) = &e.source {
                    v["source"] = serde_json::json!(source);
                }
                v
            })
            .collect();
        Response::from_json(&serde_json::json!({
            "channel": query.channel, "seq": history.seq, "reset": history.reset, "events": events,
        }))
    }
}

/// The one compiled class behind the four kinds' Durable Object classes (`OrdersRoom`,
/// `PaymentRoom`, `ChatRoom`, `InboxRoom`: entry.js names it four times). The kinds differ
/// only in name: a kind's policy comes from the channel, so all four run the same engine by
/// construction, and the module carries its glue once.
///
/// Written out rather than through workers-rs' `#[durable_object]`, which converts every
/// request and response to its own types and back: the runtime's own types go straight
/// through here (bench/README.md). Every handler the runtime can call is defined (a
/// missing one would fail the call), and none can panic on what a client sends.
#[wasm_bindgen]
pub struct RoomClass {
    /// Shared with the copies forwarded after an accept (forward.rs).
    room: Rc<RoomObject>,
}

#[wasm_bindgen(wasm_bindgen_futures = ::worker::wasm_bindgen_futures, js_sys = ::worker::js_sys)]
impl RoomClass {
    #[wasm_bindgen(constructor)]
    pub fn new(state: worker::worker_sys::DurableObjectState, env: Env) -> Self {
        Self { room: Rc::new(RoomObject::new(State::from(state), env)) }
    }

    /// Sync, not `async`: a connect (and most requests) never waits, and is answered without
    /// a task or promise of its own (js::answer_soon). So are the socket handlers below.
    pub fn fetch(&self, req: web_sys::Request) -> JsValue {
        let room = self.room.clone();
        js::answer_soon(async move {
            let response = match room.fetch(req).await {
                Ok(response) => response,
                Err(e) => {
                    crate::edge::log::internal(&room.env, room.channel().as_ref(), "request", e);
                    json_error(500, "internal", "the room could not complete the request").map(web_sys::Response::from)?
                }
            };
            room.meter("object");
            Ok(response.into())
        })
    }

    /// `/publish` over RPC (entry.js): JSON text in, JSON text out; a failure throws, and
    /// the Worker answers 500 (a retry is safe: dedupe by id). Synchronous: the work awaits
    /// nothing (copies to inboxes leave in a task of their own).
    pub fn publish(&self, body: String) -> std::result::Result<String, JsValue> {
        self.room.rpc_answer("publish", self.room.publish(&body))
    }

    /// On an inbox: copies forwarded by a linked channel, over RPC (entry.js).
    pub fn forward(&self, body: String) -> std::result::Result<String, JsValue> {
        self.room.rpc_answer("forward", self.room.take_copies(&body))
    }

    pub async fn alarm(&self) -> std::result::Result<JsValue, JsValue> {
        let done = self.room.alarm().await;
        self.room.meter("alarm");
        done.map(|()| JsValue::UNDEFINED).map_err(JsValue::from)
    }

    #[wasm_bindgen(js_name = webSocketMessage)]
    pub fn websocket_message(&self, ws: web_sys::WebSocket, message: JsValue) -> JsValue {
        let message = match message.as_string() {
            Some(text) => WebSocketIncomingMessage::String(text),
            None => WebSocketIncomingMessage::Binary(worker::js_sys::Uint8Array::new(&message).to_vec()),
        };
        let room = self.room.clone();
        js::answer_soon(async move {
            let done = room.message(ws.into(), message).await;
            room.meter("ws_message");
            done.map(|()| JsValue::UNDEFINED).map_err(JsValue::from)
        })
    }

    #[wasm_bindgen(js_name = webSocketClose)]
    pub fn websocket_close(&self, ws: web_sys::WebSocket, code: u16) -> JsValue {
        self.departed(ws, code)
    }

    #[wasm_bindgen(js_name = webSocketError)]
    pub fn websocket_error(&self, ws: web_sys::WebSocket) -> JsValue {
        // 1006: closed abnormally (no close frame).
        self.departed(ws, 1006)
    }
}

impl RoomClass {
    fn departed(&self, ws: web_sys::WebSocket, code: u16) -> JsValue {
        let room = self.room.clone();
        js::answer_soon(async move {
            let done = room.closed(ws.into(), code).await;
            room.meter("ws_close");
            done.map(|()| JsValue::UNDEFINED).map_err(JsValue::from)
        })
    }
}
