//! Inboxes, both ends. A linked channel sends each inbox its oldest pending copies, the
//! batches the engine hands it (one call per inbox, all in parallel), and tells the engine
//! how each went: the engine decides retries and bounds (`protocol::links`,
//! `protocol::retry`). An inbox takes copies in, stores each once, and sends them to its
//! sockets.
//!
//! When: right after the invocation that accepted the event sent it to the channel's own
//! sockets, in a task of its own (the invocation answers meanwhile), so a copy costs no
//! alarm invocation; and from the alarm, which is set to each retry and no later than
//! `FORWARD_BACKSTOP_MS` after a call starts: if this instance goes away mid-call, or a call
//! fails, the alarm (or the channel's next event) sends what is still queued. The durable
//! queue is the truth; the task is the prompt path.

use std::rc::Rc;

use futures::future::join_all;
use serde_json::json;
use worker::Result;

use super::RoomObject;
use crate::edge::js;
use crate::edge::log;
use crate::edge::messages::{Copy, ForwardReply, ForwardRequest};
use crate::edge::runtime;
use crate::protocol::channel::Channel;
use crate::protocol::config::Level;
use crate::protocol::frame::StoredEvent;
use crate::protocol::links::{Batch, FORWARD_BACKSTOP_MS};
use crate::protocol::retry::Settled;

impl RoomObject {
    /// Copies were queued with an accepted event (already sent to this room's sockets): they
    /// go now, from a task of its own.
    pub(super) fn forward_soon(self: &Rc<Self>, channel: &Channel) {
        self.log_dropped(channel);
        let (room, channel) = (Rc::clone(self), channel.clone());
        worker::wasm_bindgen_futures::spawn_local(async move { room.forward_due(&channel).await });
    }

    /// Sends what is due until nothing is: copies queued while a call was under way go in the
    /// next call to that inbox (one at a time keeps a channel's copies in order).
    async fn forward_due(&self, channel: &Channel) {
        loop {
            let now_ms = runtime::now_ms();
            let due = match self.with_room(channel, |room| room.forwards_due(now_ms)) {
                Ok(due) if due.is_empty() => return,
                Ok(due) => due,
                Err(e) => return log::internal(&self.env, Some(channel), "forwarding", e),
            };
            // The alarm takes over if this instance goes away before the answers.
            if let Err(e) = self.alarm_by(now_ms + FORWARD_BACKSTOP_MS).await {
                log::internal(&self.env, Some(channel), "alarm", e);
            }
            if let Some(retry_at) = self.deliver_forwards(channel, due).await {
                if let Err(e) = self.alarm_by(retry_at).await {
                    log::internal(&self.env, Some(channel), "alarm", e);
                }
                return;
            }
        }
    }

    /// Sends each inbox its batch, in parallel, and tells the engine how each went; returns
    /// the earliest retry when a call failed.
    pub(super) async fn deliver_forwards(&self, channel: &Channel, due: Vec<Batch>) -> Option<i64> {
        let env = &self.env;
        let calls = due.iter().map(|batch| async move {
            let request =
                ForwardRequest { inbox: batch.inbox.clone(), source: channel.clone(), events: batch.events.iter().map(Copy::of).collect() };
            js::call_method::<_, ForwardReply>(env, runtime::room(&batch.inbox), "forward", &request).await
        });
        let mut retry: Option<i64> = None;
        for (batch, outcome) in due.iter().zip(join_all(calls).await) {
            let failure = outcome.err().map(|e| e.to_string());
            let (outcome, level) = match self.with_room(channel, |room| room.forward_attempted(batch, failure.is_none(), runtime::now_ms()))
            {
                Ok(Settled::GaveUp) => ("gave_up", Level::Error),
                Ok(Settled::RetryAt(at)) => {
                    retry = Some(retry.map_or(at, |r| r.min(at)));
                    ("retry", Level::Warn)
                }
                Ok(Settled::Delivered) => ("delivered", Level::Debug),
                Err(e) => {
                    // Not settled: the alarm tries again rather than this task at once.
                    log::internal(&self.env, Some(channel), "forwarding", e);
                    retry = Some(runtime::now_ms() + 1_000);
                    ("retry", Level::Warn)
                }
            };
            // Built only when written: a delivered batch's line is `debug`.
            if log::enabled(&self.env, level) {
                let fields = json!({"source": channel.to_string(), "inbox": batch.inbox.to_string(), "kind": "inbox",
                    "key": batch.inbox.key(), "events": batch.events.len(), "outcome": outcome, "reason": failure});
                log::write(level, "forward", fields);
            }
        }
        self.log_dropped(channel);
        retry
    }

    /// Events the engine gave up forwarding (a day of failures, or past the bound).
    fn log_dropped(&self, channel: &Channel) {
        let dropped = self.memory.borrow_mut().take_forwards_dropped();
        if dropped > 0 {
            log::line(&self.env, Level::Error, "forward", json!({"source": channel.to_string(), "events": dropped, "outcome": "gave_up"}));
        }
    }

    /// On an inbox: copies from one source (a `ForwardRequest` as JSON text, over RPC from
    /// the source's object: entry.js), each stored once, sent to every socket.
    pub(super) fn take_copies(&self, body: &str) -> Result<String> {
        let request: ForwardRequest = serde_json::from_str(body)?;
        self.remember_channel(&request.inbox)?;
        let copies: Vec<StoredEvent> = request.events.into_iter().map(Copy::stored).collect();
        let frames = self.with_room(&request.inbox, |room| room.accept_copies(&request.source, &copies, runtime::now_ms()))?;
        if !frames.is_empty() {
            let sockets = js::sockets(self.state.as_raw());
            for frame in &frames {
                js::send_all(&sockets, frame);
            }
        }
        Ok(serde_json::to_string(&ForwardReply { stored: frames.len() as u32 })?)
    }
}
