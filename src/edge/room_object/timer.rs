//! The room's one timer: an alarm set to the engine's deadline ([`Room::poll_timeout`]) and
//! nothing else. A room with no sockets and no pending call (webhook, forward) holds none.

use serde_json::json;
use worker::Result;

use super::RoomObject;
use crate::edge::{log, runtime};
use crate::protocol::config::Level;
use crate::protocol::room::{self, Member};
use crate::protocol::wire::close;

/// What this instance knows of its alarm (storage holds the truth).
#[derive(Clone, Copy, Debug, Default)]
pub(super) enum Alarm {
    /// A freshly woken instance: ask storage.
    #[default]
    Unknown,
    /// None set (dropped here, or fired).
    None,
    /// Set to fire at this time (ms), or being set to it.
    At(i64),
}

impl RoomObject {
    /// The deadline came: closes sockets whose token expired, lets the engine do its part
    /// (pruning, the webhook and forwarding calls due), then waits for the engine's next deadline.
    pub(super) async fn alarm(&self) -> Result<()> {
        self.alarm_at.set(Alarm::None);
        let now_ms = runtime::now_ms();
        let expired: Vec<_> = self.sockets().into_iter().filter(|(_, m)| room::is_expired(m, now_ms / 1000)).collect();
        for (ws, _) in &expired {
            self.close_socket(ws, close::UNAUTHENTICATED, "token expired").await;
        }
        if let Some(channel) = self.channel() {
            let (webhooks, forwards) = match self.with_room(&channel, |room| room.handle_timeout(now_ms)) {
                Ok(due) => {
                    let counts = (due.webhooks.len(), due.forwards.len());
                    // A failed call's retry is the engine's next deadline, set below.
                    let webhooks = self.deliver_webhooks(&channel, due.webhooks, now_ms);
                    let _ = futures::join!(webhooks, self.deliver_forwards(&channel, due.forwards));
                    counts
                }
                Err(e) => {
                    log::internal(&self.env, Some(&channel), "alarm", e);
                    (0, 0)
                }
            };
            let fields = json!({"expired": expired.len(), "webhooks": webhooks, "forwards": forwards, "ms": runtime::now_ms() - now_ms});
            log::line(&self.env, Level::Debug, "alarm", log::with(&channel, fields));
        }
        self.schedule_alarm(None).await
    }

    /// Sets the alarm to the engine's next deadline, or drops it. `leaving`: the connection
    /// of a socket in its own close handler, where the runtime may still list it.
    pub(super) async fn schedule_alarm(&self, leaving: Option<&str>) -> Result<()> {
        let now = runtime::now_ms();
        let members: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).filter(|m| Some(m.conn.as_str()) != leaving).collect();
        let deadline = match self.channel() {
            Some(channel) => self.with_room(&channel, |room| room.poll_timeout(members.iter()))?,
            None => room::poll_timeout(members.iter(), None),
        };
        let storage = self.state.storage();
        match deadline {
            Some(at) => {
                // An integer here is an offset from now, not a timestamp.
                storage.set_alarm(at.saturating_sub(now).max(1)).await?;
                self.alarm_at.set(Alarm::At(at));
            }
            None => {
                storage.delete_alarm().await?;
                self.alarm_at.set(Alarm::None);
            }
        }
        Ok(())
    }

    /// Makes sure the alarm fires no later than `at` (ms), touching storage only when the
    /// known alarm is later, already past, none, or unknown (a freshly woken instance).
    /// Connects that resume together (sharing one directory answer) each come here: the new
    /// time is known before the write's await, and what a read found is checked against
    /// what was set meanwhile, so the earliest time wins, whoever writes last (the alarm
    /// used to end at the last writer's expiry, leaving an earlier token's socket open past
    /// it); a failed write forgets it.
    pub(super) async fn alarm_by(&self, at: i64) -> Result<()> {
        let now = runtime::now_ms();
        let storage = self.state.storage();
        let current = match self.alarm_at.get() {
            Alarm::At(c) if c <= at && c > now => return Ok(()),
            // Known and pending: only the runtime could have moved it, by firing it.
            Alarm::At(c) if c > now => Some(c),
            Alarm::None => None,
            Alarm::At(_) | Alarm::Unknown => {
                let stored = storage.get_alarm().await?;
                // A call that resumed meanwhile (connects sharing one directory answer) may
                // have set it: that is newer than what was read.
                match self.alarm_at.get() {
                    Alarm::At(c) if c > now => Some(c),
                    Alarm::None => None,
                    _ => stored,
                }
            }
        };
        if let Some(c) = current.filter(|c| *c <= at && *c > now) {
            self.alarm_at.set(Alarm::At(c));
            return Ok(());
        }
        self.alarm_at.set(Alarm::At(at));
        if let Err(e) = storage.set_alarm(at.saturating_sub(now).max(1)).await {
            self.alarm_at.set(Alarm::Unknown);
            return Err(e);
        }
        Ok(())
    }
}
