//! A room's sockets: connect (revocation, accept, welcome and replay), client frames,
//! departures, and revocations pushed to the room. Each socket's state is its attachment.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{web_sys, Env, Error, Result, WebSocket, WebSocketIncomingMessage, WebSocketPair};

use super::RoomObject;
use crate::edge::js;
use crate::edge::log;
use crate::edge::messages::{Joined, JoinedAnswer, PostRequest, RevokeRequest, Ticket, TICKET_HEADER};
use crate::edge::runtime::{self, config};
use crate::protocol::channel::Channel;
use crate::protocol::config::Level;
use crate::protocol::revocation::{directory_shard, lease_trusted_until, Verdict};
use crate::protocol::room::{self, Builds, Effect, Incoming, Member, Posted};
use crate::protocol::token;
use crate::protocol::wire::{close, SUBPROTOCOL};

/// A `/joined` call under way: when it was made, who it recorded, and the shard's answer.
pub(super) type Asking =
    futures::future::Shared<futures::future::LocalBoxFuture<'static, std::result::Result<(i64, Vec<String>, JoinedAnswer), String>>>;

/// `/joined` to a directory shard. Justified failpoint: the runtime cannot hold a call
/// back, and a `/revoke` racing a record needs one held back.
async fn joined(env: &Env, shard: &str, joined: &Joined) -> Result<JoinedAnswer> {
    if config(env).failpoint("slow_join_record") {
        worker::Delay::from(std::time::Duration::from_millis(2_000)).await;
    }
    js::call_method(env, runtime::shard(shard), "joined", joined).await
}

/// A socket's attachment: the member, plus whether the server already closed it.
#[derive(Serialize, Deserialize)]
pub(super) struct Attachment {
    member: Member,
    #[serde(default)]
    closing: bool,
}

impl Attachment {
    /// Stored as JSON text: one string crosses into JS, where a JS object would be built
    /// with a crossing per field (and read back the same way on every frame).
    pub(super) fn save(&self, ws: &WebSocket) -> Result<()> {
        use worker::worker_sys::ext::WebSocketExt;
        let text = serde_json::to_string(self)?;
        ws.as_ref().serialize_attachment(wasm_bindgen::JsValue::from_str(&text)).map_err(Error::from)
    }

    /// Read from bytes, as a connect's ticket is: the same deserializer for the member in both
    /// (`from_str` would be a second copy of it for V8 to optimize).
    pub(super) fn load(ws: &WebSocket) -> Option<Attachment> {
        use worker::worker_sys::ext::WebSocketExt;
        serde_json::from_slice(ws.as_ref().deserialize_attachment().ok()?.as_string()?.as_bytes()).ok()
    }
}

impl RoomObject {
    pub(super) async fn connect(&self, req: &web_sys::Request) -> Result<web_sys::Response> {
        log::flush_refusals();
        let raw = req.headers().get(TICKET_HEADER)?.ok_or_else(|| Error::from("no ticket"))?;
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| Error::from("bad ticket"))?;
        let ticket: Ticket = serde_json::from_slice(&bytes)?;
        let (channel, answers) = (&ticket.channel, &ticket.answers);
        let mut member = ticket.member;
        member.conn = runtime::random_id();

        let now_ms = runtime::now_ms();
        member.joined_ms = now_ms;
        let revoked_before = match self.revocation_of(&member, channel, now_ms).await {
            Ok(verdict) => verdict,
            Err(e) => {
                // Unknown is not "not revoked": no welcome. The client sees 1011 and retries.
                log::internal(&self.env, Some(channel), "directory", e);
                self.connect_line(channel, close::INTERNAL, "internal", now_ms);
                return Ok(runtime::accept_and_close(close::INTERNAL, "internal error", ticket.subprotocol));
            }
        };
        member.revoked_before = revoked_before;
        // A revoked token is refused before the room keeps anything of it.
        if self.memory.borrow().refuses(&member.sub, member.iat, member.revoked_before, now_ms) {
            self.connect_line(channel, close::UNAUTHENTICATED, "revoked", now_ms);
            return Ok(runtime::accept_and_close(close::UNAUTHENTICATED, "token revoked", ticket.subprotocol));
        }

        let others = self.others_for_join(channel, &member.sub);
        let pair = WebSocketPair::new()?;
        let socket = pair.server;
        // Hibernatable accept: the runtime owns the socket from here on.
        self.state.accept_websocket_with_tags(&socket, &[&room::member_tag(&member.sub)]);
        self.memory.borrow_mut().socket_opened();
        let builds =
            Builds { server: runtime::BUILD_ID, client: ticket.build.as_deref(), require_current: config(&self.env).require_current_build };
        match self.admit(&socket, &member, answers, ticket.since, builds, channel, &others, now_ms).await {
            Ok(closed) => {
                let (code, reason) = match closed {
                    None => (101, "welcome"),
                    Some((code @ close::OUTDATED_BUILD, _)) => (code, "outdated_build"),
                    Some((code @ close::RATE_LIMITED, _)) => (code, "too_many_sockets"),
                    Some((code @ close::UNAUTHENTICATED, _)) => (code, "revoked"),
                    Some((code, _)) => (code, "refused"),
                };
                self.connect_line(channel, code, reason, now_ms);
            }
            Err(e) => {
                // A socket the room could not take must not linger: presence and the per-user
                // cap would count it. The client sees 1011 and reconnects.
                log::internal(&self.env, Some(channel), "accept", e);
                self.connect_line(channel, close::INTERNAL, "internal", now_ms);
                // Marked as closing first: until the runtime drops it, the socket is still listed.
                self.close_socket(&socket, close::INTERNAL, "internal error").boxed_local().await;
            }
        }
        Ok(js::upgraded(pair.client.as_ref(), if ticket.subprotocol { SUBPROTOCOL } else { "" }))
    }

    /// A connect's outcome here: a welcome (`code` 101) or the close code, with a reason word.
    fn connect_line(&self, channel: &Channel, code: u16, reason: &'static str, started_ms: i64) {
        let ms = (runtime::now_ms() - started_ms) as f64;
        if code != 101 {
            log::refused(&self.env, Some(channel), code, reason, ms);
        } else if log::enabled(&self.env, Level::Debug) {
            log::write(
                Level::Debug,
                "connect",
                log::with(channel, json!({"outcome": "welcome", "code": code, "reason": reason, "ms": ms})),
            );
        }
        if log::metrics_bound(&self.env) {
            log::point(&self.env, channel.key(), &["connect", channel.kind().as_str(), &code.to_string(), reason], &[1.0, ms]);
        }
    }

    /// Everything after the accept: attachment, what an inbox socket may answer, welcome and
    /// replay, presence, alarm; the close that followed the welcome, if any.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn admit(
        &self,
        socket: &WebSocket,
        member: &Member,
        answers: &[String],
        since: Option<u64>,
        builds: Builds<'_>,
        channel: &Channel,
        others: &[Member],
        now_ms: i64,
    ) -> Result<Option<(u16, &'static str)>> {
        self.remember_channel(channel)?;
        Attachment { member: member.clone(), closing: false }.save(socket)?;
        // Justified failpoint: the runtime cannot be made to fail an attachment write.
        if config(&self.env).failpoint("after_accept") {
            return Err(Error::from("failpoint after_accept"));
        }
        // No await between here and the last replayed frame: nothing can interleave, so a
        // live event published meanwhile is queued behind the replay, never inside it.
        let join = self.with_room(channel, |room| {
            room.keep_answers(&member.conn, answers)?;
            room.join(member, since, builds, others, now_ms)
        })?;
        for frame in &join.frames {
            socket.send_with_str(frame)?;
        }
        if let Some(presence) = &join.broadcast {
            self.fan_out(presence);
        }
        if let Some((code, reason)) = join.close {
            self.close_socket(socket, code, reason).boxed_local().await;
        }
        // The alarm must fire by this token's expiry.
        self.alarm_by(member.exp.saturating_mul(1000)).await?;
        Ok(join.close)
    }

    /// The revocation that applies to the member here. A user the room remembers costs
    /// nothing, nor does any user while the room holds a lease on its shard
    /// (protocol/revocation); any other is recorded in the room's shard first
    /// ([`Self::record`]). From the room's third question on ([`LEASE_FROM_ASK`]), a room
    /// without a lease takes one ([`Self::lease`]): a payment page or a chat never holds one, a
    /// venue's orders at an intermission holds one after its third new user.
    ///
    /// [`LEASE_FROM_ASK`]: crate::protocol::revocation::LEASE_FROM_ASK
    pub(super) async fn revocation_of(&self, member: &Member, channel: &Channel, now_ms: i64) -> Result<Option<i64>> {
        if let Some(settled) = self.settled(member, now_ms) {
            return Ok(settled);
        }
        // While the shard answers, the room's own writes for this connect (its channel's name,
        // the alarm by the token's expiry: a fresh room's first) go out and commit, instead of
        // after the answer, where every welcome waiting on it would wait for them too (a first
        // storm's first batch: 5 ms less, bench/README.md). Both are harmless if the user is
        // refused (an alarm with no socket to close re-arms for nothing); `admit` finds them done.
        self.remember_channel(channel)?;
        let (revoked, alarm) = futures::join!(
            // Boxed: a function of its own, which a storm of known users never makes hot, so V8
            // does not optimize it with every connect (bench/README.md, "What V8 optimizes").
            self.ask_directory(member, channel, now_ms).boxed_local(),
            self.alarm_by(member.exp.saturating_mul(1000)).boxed_local()
        );
        alarm.map_err(|e| Error::from(["alarm: ", &e.to_string()].concat()))?;
        revoked
    }

    /// The revocation that applies to the member as far as the room's memory settles it;
    /// `None`: ask the room's shard.
    fn settled(&self, member: &Member, now_ms: i64) -> Option<Option<i64>> {
        match self.memory.borrow().revocations.verdict(&member.sub, member.iat.is_some(), now_ms) {
            Verdict::Known(revoked) => Some(revoked),
            Verdict::Leased => Some(None),
            Verdict::Ask => None,
        }
    }

    /// [`Self::revocation_of`] for a user the room's memory does not settle.
    async fn ask_directory(&self, member: &Member, channel: &Channel, now_ms: i64) -> Result<Option<i64>> {
        let sub = &member.sub;
        let shard = directory_shard(channel);
        // A record of this user under way is shared rather than leased over (their tabs).
        let recording = self.recording.borrow().contains_key(sub);
        if !recording && member.iat.is_some() && self.memory.borrow_mut().revocations.wants_lease() {
            self.lease(&shard, sub, channel, now_ms).await?;
            // Without a lease (the shard has too many revocations or leaseholders): recorded alone.
            if let Some(settled) = self.settled(member, now_ms) {
                return Ok(settled);
            }
        }
        self.record(&shard, sub, channel, now_ms).await
    }

    /// Asks the room's `shard` for a lease, recording `sub` with it. Connects of new users
    /// arriving meanwhile share the call, and are welcomed under the lease when it comes.
    async fn lease(&self, shard: &str, sub: &str, channel: &Channel, now_ms: i64) -> Result<()> {
        let (asked_at, subs, answer) = self.ask(&self.leasing, shard, shard, sub, channel, now_ms, true).await?;
        // Every sharer applies the answer: learning and granting are idempotent.
        let mut memory = self.memory.borrow_mut();
        for (sub, revoked) in subs.iter().zip(&answer.revoked) {
            memory.revocations.learn(sub, *revoked, now_ms);
        }
        if let Some(lease) = &answer.lease {
            memory.revocations.grant(lease_trusted_until(asked_at, lease.ms), &lease.revoked, now_ms);
        }
        Ok(())
    }

    /// A `/joined` call to `shard` for `sub` (and a lease), shared under `key` in `under_way`
    /// by the connects that need the same answer while it is under way.
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        under_way: &RefCell<HashMap<String, Asking>>,
        key: &str,
        shard: &str,
        sub: &str,
        channel: &Channel,
        now_ms: i64,
        lease: bool,
    ) -> Result<(i64, Vec<String>, JoinedAnswer)> {
        let call = under_way
            .borrow_mut()
            .entry(key.to_owned())
            .or_insert_with(|| {
                let env = self.env.clone();
                let request = Joined { channel: channel.clone(), subs: vec![sub.to_owned()], lease };
                let shard = shard.to_owned();
                async move {
                    let answer = joined(&env, &shard, &request).await.map_err(|e| e.to_string())?;
                    Ok((now_ms, request.subs, answer))
                }
                .boxed_local()
                .shared()
            })
            .clone();
        let answer = call.clone().await;
        {
            // The first to finish clears it: a connect after the answer asks afresh (or not
            // at all: the room now knows the user).
            let mut under_way = under_way.borrow_mut();
            if under_way.get(key).is_some_and(|c| c.ptr_eq(&call)) {
                under_way.remove(key);
            }
        }
        answer.map_err(Error::from)
    }

    /// Records in the directory that `sub` is here (`/joined`, one call to a warm object),
    /// answered with the revocation as of the record: a `/revoke` before it is in the answer,
    /// one after it finds the record and reaches this room. See protocol/revocation.rs.
    ///
    /// Connects of one user arriving while their record is under way share it (a user's
    /// tabs, or every socket of a room woken after a deploy): the record is the same, and a
    /// `/revoke` after it reaches this room, which checks what it learned after the answer.
    async fn record(&self, shard: &str, sub: &str, channel: &Channel, now_ms: i64) -> Result<Option<i64>> {
        let (_, _, answer) = self.ask(&self.recording, sub, shard, sub, channel, now_ms, false).await?;
        Ok(self.memory.borrow_mut().revocations.learn(sub, answer.revoked.first().copied().flatten(), now_ms))
    }

    /// A staying user's record renewed at refresh, before `refreshed`; a revocation in the
    /// answer that covers the refreshed token closes the socket 4401. A renewal that fails
    /// closes it 1011 (the client reconnects): a socket welcomed under a lease is reached by
    /// the shard's pushes only for its first token's life, so the record is what reaches it
    /// after a refresh. Returns whether the socket stays open.
    async fn renew_record(&self, ws: &WebSocket, attachment: &mut Attachment, channel: &Channel, now_ms: i64) -> bool {
        let member = &mut attachment.member;
        let revoked_at = match self.record(&directory_shard(channel), &member.sub, channel, now_ms).await {
            Ok(revoked_at) => revoked_at,
            Err(e) => {
                log::internal(&self.env, Some(channel), "could not renew a user's record in the directory; closing", e);
                self.close_socket(ws, close::INTERNAL, "internal error").await;
                return false;
            }
        };
        member.revoked_before = member.revoked_before.max(revoked_at);
        if self.memory.borrow().refuses(&member.sub, member.iat, member.revoked_before, now_ms) {
            self.close_socket(ws, close::UNAUTHENTICATED, "token revoked").await;
            return false;
        }
        if revoked_at.is_some() {
            if let Err(e) = attachment.save(ws) {
                log::internal(&self.env, None, "revocation not saved on a socket; closing it", e);
                self.close_socket(ws, close::INTERNAL, "internal error").await;
                return false;
            }
        }
        true
    }

    /// A revocation pushed by the directory: closes the sockets it covers; the
    /// user's other sockets here carry it from now on (a refresh with an older token fails).
    pub(super) async fn revoke(&self, request: &RevokeRequest) -> u32 {
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
                log::internal(&self.env, None, "revocation not saved on a socket; closing it", e);
                self.close_socket(&ws, close::INTERNAL, "internal error").await;
            }
        }
        closed
    }

    /// Closes a socket from the server side; its departure is handled once.
    pub(super) async fn close_socket(&self, ws: &WebSocket, code: u16, reason: &str) {
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
            self.depart(ws, &member, code).await;
        }
    }

    /// After a socket left: presence hears of it; when it was the room's last socket, the
    /// alarm is recomputed (it lingers, then goes: an idle room holds none, `room::LINGER_MS`).
    /// The leaving socket is excluded by identity: in its own close handler the runtime may
    /// still list it as open.
    pub(super) async fn depart(&self, ws: &WebSocket, member: &Member, code: u16) {
        let Some(channel) = self.channel() else { return };
        if log::enabled(&self.env, Level::Debug) {
            let secs = ((runtime::now_ms() - member.joined_ms) / 1000).max(0);
            log::write(Level::Debug, "closed", log::with(&channel, json!({"code": code, "secs": secs})));
        }
        if channel.kind().policy().presence {
            let remaining: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).filter(|m| m.conn != member.conn).collect();
            if let Ok(Some(frame)) = self.with_room(&channel, |room| Ok(room.leave(member, &remaining))) {
                // The departed socket is closed: its send fails and it is not counted.
                self.fan_out(&frame);
            }
        }
        if let Err(e) = self.with_room(&channel, |room| room.forget_answers(&member.conn)) {
            log::internal(&self.env, None, "an inbox socket's grant not dropped", e);
        }
        // No call to the directory: the user's record there stays, and expires (revocation.rs).
        let leaving: &wasm_bindgen::JsValue = ws.as_ref();
        let now_ms = runtime::now_ms();
        let emptied =
            self.memory.borrow_mut().socket_left(&member.sub, now_ms, || js::count_open(self.state.as_raw(), "", leaving) as usize);
        if emptied {
            if let Err(e) = self.schedule_alarm(Some(&member.conn)).await {
                log::internal(&self.env, None, "alarm", e);
            }
        }
    }

    pub(super) async fn message(self: &Rc<Self>, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
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
                log::internal(&self.env, None, "room failed on a client frame", e);
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
                        log::internal(&self.env, None, "attachment not saved", e);
                        failed = true;
                    }
                }
                Effect::Reply(frame) => {
                    let _ = ws.send_with_str(&frame);
                }
                effect @ (Effect::Broadcast(_) | Effect::ChatAccepted(_) | Effect::Forward) => {
                    self.room_effect(&channel, effect, now_ms).await?
                }
                Effect::Relay(chat, post) => {
                    // The chat applies its own rules and answers; the message comes back to
                    // this inbox as an event through the link, a refusal as an error frame.
                    let request = PostRequest { channel: chat, post };
                    let posted = match js::call::<_, Posted>(&self.env, runtime::room(&request.channel), "/post", &request).await {
                        Ok(posted) => Some(posted),
                        Err(e) => {
                            log::warning(&self.env, None, "a send through an inbox could not reach its chat", e);
                            None
                        }
                    };
                    for effect in self.with_room(&channel, |room| Ok(room.relayed(posted)))? {
                        match effect {
                            Effect::Reply(frame) => {
                                let _ = ws.send_with_str(&frame);
                            }
                            Effect::Close(code, reason) => self.close_socket(&ws, code, reason).await,
                            _ => {}
                        }
                    }
                }
                Effect::Close(code, reason) => self.close_socket(&ws, code, reason).await,
                Effect::RenewRecord => {
                    if !self.renew_record(&ws, &mut attachment, &channel, now_ms).await {
                        // Closed: no `refreshed` after it.
                        return Ok(());
                    }
                }
            }
        }
        if failed {
            self.close_socket(&ws, close::INTERNAL, "internal error").await;
        }
        Ok(())
    }

    /// A socket closed (by the client with `code`, or dropped) or errored; entry.js has sent
    /// the close frame back.
    pub(super) async fn closed(&self, ws: WebSocket, code: u16) -> Result<()> {
        // No attachment write: nothing else arrives for a socket the client closed.
        let departing = Attachment::load(&ws).filter(|a| !a.closing).map(|a| a.member);
        if let Some(member) = departing {
            self.depart(&ws, &member, code).await;
        }
        Ok(())
    }
}

/// Sockets with their members, without those the server is already closing.
pub(super) fn members(sockets: Vec<WebSocket>) -> Vec<(WebSocket, Member)> {
    sockets
        .into_iter()
        .filter_map(|ws| match Attachment::load(&ws) {
            Some(a) if !a.closing => Some((ws, a.member)),
            _ => None,
        })
        .collect()
}
