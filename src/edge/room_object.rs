//! The Durable Objects: one per channel, three classes (one per kind) over one engine.
//!
//! Why a Durable Object: a channel needs one place that orders its events (`seq`) and knows
//! its sockets. Why the Hibernation API: an idle room with open sockets costs nothing; the
//! runtime keeps the sockets, evicts the object, and wakes it with a fresh instance when a
//! frame, a publish or an alarm arrives. So nothing lives only in memory: each socket's
//! state is its *attachment*, the room's state is in SQLite, and timers are *alarms*. The
//! one alarm is set to the engine's [`room::poll_timeout`] and nothing else: a room with no
//! sockets and no pending webhook holds none.

use std::cell::{Cell, RefCell};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, wasm_bindgen, DurableObject, Env, Error, Fetch, Headers, Method, Request, RequestInit, Response, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair, WebSocketRequestResponsePair,
};

use super::js;
use super::messages::{
    Presence, PublishOutcome, PublishReply, PublishRequest, ReadQuery, RevokeReply, RevokeRequest, RevokedAnswer, Ticket, Unrecorded,
    TICKET_HEADER,
};
use super::meter;
use super::runtime::{self, config, json_error};
use super::sql_store::SqlStore;
use crate::protocol::channel::Channel;
use crate::protocol::reading::MAX_USERS_LISTED;
use crate::protocol::room::{self, Builds, Effect, Incoming, Member, Memory, Room, Store};
use crate::protocol::wire::{close, PING, PONG, SUBPROTOCOL};
use crate::protocol::{signature, token, webhook};

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
    alarm_at: Cell<Option<i64>>,
    /// The channel this object serves, once known to be in storage.
    channel: RefCell<Option<Channel>>,
    /// The engine's in-memory state (rates, revocations learned, pruning bookkeeping).
    memory: RefCell<Memory>,
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
            memory: Default::default(),
        }
    }

    /// Ends an invocation for the usage meter (off unless `METER=log`).
    fn meter(&self, what: &str) {
        meter::line(&self.env, what, || Some((self.state.id().to_string(), self.state.storage().sql().database_size())));
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
    /// user's own sockets, found by tag, and read only when their number reaches the cap
    /// (below it, even counting sockets mid-close, they cannot change the answer). A
    /// connect in a room of thousands reads no attachments.
    fn others_for_join(&self, channel: &Channel, sub: &str) -> Vec<Member> {
        if channel.kind().policy().presence {
            return self.sockets().into_iter().map(|(_, m)| m).collect();
        }
        let tag = room::member_tag(sub);
        if (js::count_tagged(self.state.as_raw(), &tag) as usize) < config(&self.env).limits.sockets_per_sub {
            return Vec::new();
        }
        members(self.state.get_websockets_with_tag(&tag)).into_iter().map(|(_, m)| m).collect()
    }

    /// Sends one frame to every socket of the room; returns how many took it.
    fn fan_out(&self, frame: &str) -> u32 {
        js::send_all(&js::sockets(self.state.as_raw()), frame)
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/connect" => self.connect(&req).await,
            "/publish" => {
                // serde_json, not `req.json()`: event data stays raw JSON text end to end.
                let request: PublishRequest = serde_json::from_str(&req.text().await?)?;
                let channel = request.channel;
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
                Response::from_json(&PublishReply { results })
            }
            "/revoke" => {
                let request: RevokeRequest = serde_json::from_str(&req.text().await?)?;
                Response::from_json(&RevokeReply { closed: self.revoke(&request).await })
            }
            "/unrecorded" => {
                let note: Unrecorded = serde_json::from_str(&req.text().await?)?;
                self.unrecorded(&note.sub).await;
                Response::from_json(&serde_json::json!({}))
            }
            "/state" => {
                let query: ReadQuery = serde_json::from_str(&req.text().await?)?;
                self.read_state(&query).await
            }
            "/history" => {
                let query: ReadQuery = serde_json::from_str(&req.text().await?)?;
                self.read_history(&query)
            }
            _ => json_error(404, "not_found", "no such room endpoint"),
        }
    }

    async fn connect(&self, req: &Request) -> Result<Response> {
        let raw = req.headers().get(TICKET_HEADER)?.ok_or_else(|| Error::from("no ticket"))?;
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| Error::from("bad ticket"))?;
        let ticket: Ticket = serde_json::from_slice(&bytes)?;
        let channel = &ticket.channel;
        let mut member = Member::admit(runtime::random_id(), ticket.claims);

        let now_ms = runtime::now_ms();
        let (revoked_before, asked) = self.revocation_of(&member.sub, channel, now_ms).await?;
        member.revoked_before = revoked_before;
        // A revoked token is refused before the room keeps anything of it.
        if self.memory.borrow().refuses(&member.sub, member.iat, member.revoked_before, now_ms) {
            return Ok(runtime::accept_and_close(close::UNAUTHENTICATED, "token revoked", ticket.subprotocol).into());
        }

        let others = self.others_for_join(channel, &member.sub);
        let pair = WebSocketPair::new()?;
        let socket = pair.server;
        // Hibernatable accept: the runtime owns the socket from here on.
        self.state.accept_websocket_with_tags(&socket, &[&room::member_tag(&member.sub)]);
        let builds =
            Builds { server: runtime::BUILD_ID, client: ticket.build.as_deref(), require_current: config(&self.env).require_current_build };
        match self.admit(&socket, &member, ticket.since, builds, channel, &others, now_ms).await {
            // The directory records where the user is after the welcome is on its way.
            Ok(()) if asked => self.record_join(&member.sub, channel, now_ms),
            Ok(()) => {}
            Err(e) => {
                // A socket the room could not take must not linger: presence and the per-user
                // cap would count it. The client sees 1011 and reconnects.
                worker::console_error!("connect failed after accept: {e}");
                // Marked as closing first: until the runtime drops it, the socket is still listed.
                self.close_socket(&socket, close::INTERNAL, "internal error").await;
            }
        }
        let mut response = Response::from_websocket(pair.client)?;
        if ticket.subprotocol {
            response.headers_mut().set("Sec-WebSocket-Protocol", SUBPROTOCOL)?;
        }
        Ok(response)
    }

    /// Everything after the accept: attachment, welcome and replay, presence, alarm.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        socket: &WebSocket,
        member: &Member,
        since: Option<u64>,
        builds: Builds<'_>,
        channel: &Channel,
        others: &[Member],
        now_ms: i64,
    ) -> Result<()> {
        self.remember_channel(channel)?;
        Attachment { member: member.clone(), closing: false }.save(socket)?;
        if config(&self.env).failpoint.as_deref() == Some("after_accept") {
            return Err(Error::from("failpoint after_accept"));
        }
        // No await between here and the last replayed frame: nothing can interleave, so a
        // live event published meanwhile is queued behind the replay, never inside it.
        let join = self.with_room(channel, |room| room.join(member, since, builds, others, now_ms))?;
        for frame in &join.frames {
            socket.send_with_str(frame)?;
        }
        if let Some(presence) = &join.broadcast {
            self.fan_out(presence);
        }
        if let Some((code, reason)) = join.close {
            self.close_socket(socket, code, reason).await;
        }
        // The alarm must fire by this token's expiry.
        self.alarm_by(member.exp.saturating_mul(1000)).await
    }

    /// The revocation that applies to `sub` here, and whether the directory was asked: a
    /// user the room remembers costs nothing; for any other, the directory's `/check` is a
    /// read in a warm object. See protocol/revocation.rs.
    async fn revocation_of(&self, sub: &str, channel: &Channel, now_ms: i64) -> Result<(Option<i64>, bool)> {
        if let Some(known) = self.memory.borrow().revocations.lookup(sub, now_ms) {
            return Ok((known, false));
        }
        let query = Presence { sub: sub.to_owned(), channel: channel.clone(), at_ms: now_ms };
        let answer: RevokedAnswer = js::call(&self.env, runtime::directory(sub), "/check", &query).await?;
        Ok((self.memory.borrow_mut().revocations.learn(sub, answer.revoked_at, now_ms), true))
    }

    /// Records in the directory that `sub` is here, without holding up the welcome. The
    /// record's answer carries any revocation that raced it, which this room then applies to
    /// itself (`/revoke`); a record that cannot be made closes the user's sockets here
    /// (`/unrecorded`), so no socket stays where a `/revoke` could not find it.
    fn record_join(&self, sub: &str, channel: &Channel, now_ms: i64) {
        let env = self.env.clone();
        let notice = Presence { sub: sub.to_owned(), channel: channel.clone(), at_ms: now_ms };
        let here = runtime::room(channel);
        // A test failpoint holds the record back, so a `/revoke` can race it.
        let first = if config(&self.env).failpoint.as_deref() == Some("slow_join_record") { 2_000 } else { 0 };
        let task = async move {
            let mut answer = Err(Error::from("not tried"));
            for delay_ms in [first, 100, 1_000] {
                if delay_ms > 0 {
                    worker::Delay::from(std::time::Duration::from_millis(delay_ms)).await;
                }
                answer = js::call::<_, RevokedAnswer>(&env, runtime::directory(&notice.sub), "/joined", &notice).await;
                if answer.is_ok() {
                    break;
                }
            }
            let outcome = match answer {
                Ok(RevokedAnswer { revoked_at: None }) => Ok(()),
                Ok(RevokedAnswer { revoked_at: Some(revoked_at) }) => {
                    let request = RevokeRequest { sub: notice.sub.clone(), revoked_at };
                    js::call::<_, RevokeReply>(&env, here, "/revoke", &request).await.map(|_| ())
                }
                Err(e) => {
                    worker::console_error!("the directory could not record a join ({e}); closing the user's sockets here");
                    js::call::<_, serde_json::Value>(&env, here, "/unrecorded", &Unrecorded { sub: notice.sub.clone() }).await.map(|_| ())
                }
            };
            if let Err(e) = outcome {
                worker::console_error!("after recording a join: {e}");
            }
        };
        js::wait_until(self.state.as_raw(), task);
    }

    /// The directory could not record that `sub` is here: forget them and close their
    /// sockets (1011), so they reconnect and are recorded.
    async fn unrecorded(&self, sub: &str) {
        self.memory.borrow_mut().forget_user(sub);
        for (ws, _) in members(self.state.get_websockets_with_tag(&room::member_tag(sub))) {
            self.close_socket(&ws, close::INTERNAL, "internal error").await;
        }
    }

    /// A revocation pushed by the directory: closes the sockets it covers; the
    /// user's other sockets here carry it from now on (a refresh with an older token fails).
    async fn revoke(&self, request: &RevokeRequest) -> u32 {
        let now_ms = runtime::now_ms();
        let tag = room::member_tag(&request.sub);
        // Remembered even where the user holds no socket: their next connect is refused.
        self.memory.borrow_mut().revocations.revoke(&request.sub, request.revoked_at, now_ms);
        let mut closed = 0;
        for (ws, mut member) in members(self.state.get_websockets_with_tag(&tag)) {
            if self.memory.borrow_mut().apply_revocation(&mut member, request.revoked_at, now_ms) {
                self.close_socket(&ws, close::UNAUTHENTICATED, "token revoked").await;
                closed += 1;
            } else if let Err(e) = (Attachment { member, closing: false }).save(&ws) {
                worker::console_error!("revocation not saved on a socket ({e}); closing it");
                self.close_socket(&ws, close::INTERNAL, "internal error").await;
            }
        }
        closed
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
                serde_json::json!({"seq": e.seq, "id": e.id, "event": e.event, "data": data, "ts": e.ts})
            })
            .collect();
        Response::from_json(&serde_json::json!({
            "channel": query.channel, "seq": history.seq, "reset": history.reset, "events": events,
        }))
    }

    /// Closes a socket from the server side; its departure is handled once.
    async fn close_socket(&self, ws: &WebSocket, code: u16, reason: &str) {
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
            self.depart(&member).await;
        }
    }

    /// After a socket left: presence hears of it; when it was the user's last socket here,
    /// the room forgets the user and tells the directory (so `/revoke` lists only where the
    /// user is); when it was the room's last socket, the alarm is recomputed (and usually
    /// dropped: an idle room holds none).
    async fn depart(&self, member: &Member) {
        let Some(channel) = self.channel() else { return };
        let raw = self.state.as_raw();
        if channel.kind().policy().presence {
            let remaining: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).filter(|m| m.conn != member.conn).collect();
            if let Ok(Some(frame)) = self.with_room(&channel, |room| Ok(room.leave(member, &remaining))) {
                // The departed socket is closed: its send fails and it is not counted.
                self.fan_out(&frame);
            }
        }
        if js::count_open(raw, &room::member_tag(&member.sub)) == 0 {
            self.memory.borrow_mut().forget_user(&member.sub);
            let notice = Presence { sub: member.sub.clone(), channel: channel.clone(), at_ms: runtime::now_ms() };
            if let Err(e) = js::call::<_, serde_json::Value>(&self.env, runtime::directory(&member.sub), "/left", &notice).await {
                // Harmless: a later `/revoke` reaches this room for nothing.
                worker::console_warn!("could not tell the directory a user left: {e}");
            }
        }
        if js::count_open(raw, "") == 0 {
            if let Err(e) = self.schedule_alarm().await {
                worker::console_error!("alarm: {e}");
            }
        }
    }

    async fn message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let (Some(channel), Some(mut attachment)) = (self.channel(), Attachment::load(&ws)) else {
            self.close_socket(&ws, close::INTERNAL, "room state lost").await;
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
        let incoming = Incoming { now_ms, verify: &verify };
        let member = &mut attachment.member;
        let effects = self.with_room(&channel, |room| match &message {
            WebSocketIncomingMessage::String(text) => room.on_text(member, text, &incoming),
            WebSocketIncomingMessage::Binary(bytes) => Ok(room.on_binary(member, bytes.len())),
        });
        let effects = match effects {
            Ok(effects) => effects,
            Err(e) => {
                worker::console_error!("room failed on a client frame: {e}");
                vec![Effect::Close(close::INTERNAL, "internal error")]
            }
        };
        // Every effect is carried out even when one fails: a chat message the room stored
        // must reach the room whatever happens to this socket's attachment.
        let mut failed = false;
        for effect in effects {
            match effect {
                // A refresh only moves an expiry later: the alarm set for the old one
                // fires, finds nothing expired, and sets the next deadline.
                Effect::Save => {
                    if let Err(e) = attachment.save(&ws) {
                        worker::console_error!("attachment not saved: {e}");
                        failed = true;
                    }
                }
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
                        match self.with_room(&channel, |room| room.store.outbox_put(&event.id, &body, now_ms)) {
                            Ok(()) => self.alarm_by(now_ms).await?,
                            Err(e) => worker::console_error!("webhook outbox: {e}"),
                        }
                    }
                }
                Effect::Close(code, reason) => self.close_socket(&ws, code, reason).await,
            }
        }
        if failed {
            self.close_socket(&ws, close::INTERNAL, "internal error").await;
        }
        Ok(())
    }

    /// A socket closed (by the client, or dropped) or errored.
    async fn closed(&self, ws: WebSocket) -> Result<()> {
        // No attachment write: nothing else arrives for a socket the client closed.
        let departing = Attachment::load(&ws).filter(|a| !a.closing).map(|a| a.member);
        // Fails only if the socket is already closed, which is the goal anyway.
        let _ = ws.close(Some(close::NORMAL), Some("closed"));
        if let Some(member) = departing {
            self.depart(&member).await;
        }
        Ok(())
    }

    /// The one timer of a room: closes sockets whose token expired, prunes history, sends
    /// due webhook calls; then waits for the engine's next deadline, if any.
    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(None);
        let now_ms = runtime::now_ms();
        for (ws, _) in self.sockets().iter().filter(|(_, m)| room::is_expired(m, now_ms / 1000)) {
            self.close_socket(ws, close::UNAUTHENTICATED, "token expired").await;
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

    /// Sends due webhook calls, a batch in parallel; failures are rescheduled with backoff.
    async fn deliver_webhooks(&self, channel: &Channel, now_ms: i64) {
        let config = config(&self.env);
        let Some((url, secret)) = &config.webhook else { return };
        let due = match self.with_room(channel, |room| room.store.outbox_due(now_ms, webhook::BATCH)) {
            Ok(due) => due,
            Err(e) => return worker::console_error!("webhook outbox: {e}"),
        };
        let calls = due.iter().map(|row| post_webhook(url, secret, &row.body));
        for (row, outcome) in due.iter().zip(futures::future::join_all(calls).await) {
            let delivered = match outcome {
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

    /// Sets the alarm to the engine's next deadline ([`room::poll_timeout`]), or drops it.
    async fn schedule_alarm(&self) -> Result<()> {
        let now = runtime::now_ms();
        let members: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).collect();
        let webhook_due = match self.channel() {
            Some(channel) => self.with_room(&channel, |room| room.store.outbox_next_due())?,
            None => None,
        };
        let storage = self.state.storage();
        match room::poll_timeout(members.iter(), webhook_due) {
            Some(at) => {
                // An integer here is an offset from now, not a timestamp.
                storage.set_alarm(at.saturating_sub(now).max(1)).await?;
                self.alarm_at.set(Some(at));
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
                let response = match self.room.fetch(req).await {
                    Ok(response) => Ok(response),
                    Err(e) => {
                        worker::console_error!("room request failed: {e}");
                        json_error(500, "internal", "the room could not complete the request")
                    }
                };
                self.room.meter("object");
                response
            }
            async fn alarm(&self) -> Result<Response> {
                let response = self.room.alarm().await;
                self.room.meter("alarm");
                response
            }
            async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
                let done = self.room.message(ws, message).await;
                self.room.meter("ws_message");
                done
            }
            async fn websocket_close(&self, ws: WebSocket, _code: usize, _reason: String, _clean: bool) -> Result<()> {
                let done = self.room.closed(ws).await;
                self.room.meter("ws_close");
                done
            }
            async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
                let done = self.room.closed(ws).await;
                self.room.meter("ws_close");
                done
            }
        }
    };
}

room_class!(OrdersRoom);
room_class!(PaymentRoom);
room_class!(ChatRoom);
