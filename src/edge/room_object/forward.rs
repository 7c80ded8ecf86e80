//! Inboxes, both ends. A linked channel sends each inbox its oldest pending copies, the
//! batches the engine hands it from the alarm (one call per inbox, all in parallel), and
//! tells the engine how each went: the engine decides retries and bounds
//! (`protocol::links`, `protocol::retry`). An inbox takes copies in, stores each once, and
//! sends them to its sockets.

use futures::future::join_all;
use worker::Result;

use super::RoomObject;
use crate::edge::js;
use crate::edge::messages::{Copy, ForwardReply, ForwardRequest};
use crate::edge::runtime;
use crate::protocol::channel::Channel;
use crate::protocol::frame::StoredEvent;
use crate::protocol::links::Batch;
use crate::protocol::retry::Settled;

impl RoomObject {
    /// Copies were queued with an accepted event: the alarm fires now (unless it already
    /// does) and sends them, after the event went to this room's own sockets.
    pub(super) async fn forwards_queued(&self, now_ms: i64) -> Result<()> {
        let dropped = self.memory.borrow_mut().take_forwards_dropped();
        if dropped > 0 {
            worker::console_error!("forwarding queue full: dropped the {dropped} oldest copies");
        }
        self.alarm_by(now_ms).await
    }

    /// Sends each inbox its batch, in parallel, and tells the engine how each went.
    pub(super) async fn deliver_forwards(&self, channel: &Channel, due: Vec<Batch>) {
        let env = &self.env;
        let calls = due.iter().map(|batch| async move {
            let request =
                ForwardRequest { inbox: batch.inbox.clone(), source: channel.clone(), events: batch.events.iter().map(Copy::of).collect() };
            js::call::<_, ForwardReply>(env, runtime::room(&batch.inbox), "/forward", &request).await
        });
        for (batch, outcome) in due.iter().zip(join_all(calls).await) {
            let delivered = match outcome {
                Ok(_) => true,
                Err(e) => {
                    worker::console_warn!("forwarding to {} failed ({e}); will retry", batch.inbox);
                    false
                }
            };
            match self.with_room(channel, |room| room.forward_attempted(batch, delivered, runtime::now_ms())) {
                Ok(Settled::GaveUp) => {
                    worker::console_error!("forwarding to {} gave up on {} copies after a day", batch.inbox, batch.events.len())
                }
                Ok(_) => {}
                Err(e) => worker::console_error!("forwarding queue: {e}"),
            }
        }
    }

    /// On an inbox: copies from one source, each stored once, sent to every socket.
    pub(super) fn take_copies(&self, request: ForwardRequest) -> Result<ForwardReply> {
        self.remember_channel(&request.inbox)?;
        let copies: Vec<StoredEvent> = request.events.into_iter().map(Copy::stored).collect();
        let frames = self.with_room(&request.inbox, |room| room.accept_copies(&request.source, &copies, runtime::now_ms()))?;
        if !frames.is_empty() {
            let sockets = js::sockets(self.state.as_raw());
            for frame in &frames {
                js::send_all(&sockets, frame);
            }
        }
        Ok(ForwardReply { stored: frames.len() as u32 })
    }
}
