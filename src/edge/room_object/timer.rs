//! The room's one timer: an alarm set to the engine's deadline ([`Room::poll_timeout`]) and
//! nothing else. A room with no sockets and no pending call (webhook, forward) holds none once
//! its linger, if it is churning, has passed ([`room::LINGER_MS`]).

use futures::future::{LocalBoxFuture, Shared};
use futures::FutureExt;
use serde_json::json;
use worker::{Error, Result};

use super::RoomObject;
use crate::edge::runtime::config;
use crate::edge::{log, runtime};
use crate::protocol::config::Level;
use crate::protocol::room::{self, Member};
use crate::protocol::wire::close;

/// An alarm write under way, shared with the calls whose time it covers.
type Writing = Shared<LocalBoxFuture<'static, std::result::Result<(), String>>>;

/// An alarm write under way: the time it sets, and its outcome.
pub(super) type AlarmWrite = (i64, Writing);

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

    /// Makes the alarm fire by the engine's next deadline, or drops it. An alarm already set
    /// to fire by then stays (no write): it fires, and the room sets the next one. That is
    /// how a room emptying and filling again in a storm writes no alarm (its linger's alarm
    /// serves them all). `leaving`: the connection of a socket in its own close handler,
    /// where the runtime may still list it.
    pub(super) async fn schedule_alarm(&self, leaving: Option<&str>) -> Result<()> {
        let now = runtime::now_ms();
        let members: Vec<Member> = self.sockets().into_iter().map(|(_, m)| m).filter(|m| Some(m.conn.as_str()) != leaving).collect();
        let deadline = match self.channel() {
            Some(channel) => self.with_room(&channel, |room| room.poll_timeout(members.iter(), now))?,
            None => room::poll_timeout(members.iter(), None),
        };
        match deadline {
            Some(at) => self.alarm_by(at).await,
            // None set, or it fired (an alarm that fired is gone): nothing to drop.
            None if matches!(self.alarm_at.get(), Alarm::None) => Ok(()),
            None => {
                // Known before the delete's await, as a time is (`set_alarm`).
                self.alarm_at.set(Alarm::None);
                self.write_alarm(None, now).await.map_err(|e| {
                    self.alarm_at.set(Alarm::Unknown);
                    Error::from(e)
                })
            }
        }
    }

    /// Sets the alarm to `at`. The new time is known here before the write's await, and the
    /// write is shared with the calls whose time it covers until it lands: a connect that
    /// resumes meanwhile must see this time (or none), never the one it replaces, or it may
    /// rely on an alarm about to move past its token's expiry (a socket's last departure
    /// used to drop the alarm that way under a connect that had just relied on it).
    async fn set_alarm(&self, at: i64, now: i64) -> Result<()> {
        self.alarm_at.set(Alarm::At(at));
        let write = self.write_alarm(Some(at), now);
        *self.alarm_write.borrow_mut() = Some((at, write.clone()));
        let done = write.clone().await;
        // Landed or failed: `alarm_at` says which (unless a newer write took the slot).
        let mut slot = self.alarm_write.borrow_mut();
        if slot.as_ref().is_some_and(|(_, w)| w.ptr_eq(&write)) {
            *slot = None;
        }
        done.map_err(|e| {
            self.alarm_at.set(Alarm::Unknown);
            Error::from(e)
        })
    }

    /// Makes sure the alarm fires no later than `at` (ms), touching storage only when the
    /// known alarm is later, already past, none, or unknown (a freshly woken instance).
    /// Connects that resume together (sharing one directory answer) each come here: the new
    /// time is known before the write's await, and what a read found is checked against
    /// what was set meanwhile, so the earliest time wins, whoever writes last (the alarm
    /// used to end at the last writer's expiry, leaving an earlier token's socket open past
    /// it). A time that a write still under way covers is covered once that write lands: when
    /// it fails, this call writes its own (a failed write used to leave every socket that
    /// relied on it with no alarm, open past its token's expiry).
    pub(super) async fn alarm_by(&self, at: i64) -> Result<()> {
        // A second round only after a write this call relied on failed.
        for _ in 0..2 {
            let now = runtime::now_ms();
            let current = match self.alarm_at.get() {
                // Known and pending: only the runtime could have moved it, by firing it.
                Alarm::At(c) if c > now => Some(c),
                Alarm::None => None,
                Alarm::At(_) | Alarm::Unknown => {
                    // Boxed, as is the write below: rare paths, kept out of what every connect runs
                    // (and V8 optimizes; bench/README.md, "What V8 optimizes").
                    let stored = self.state.storage().get_alarm().boxed_local().await?;
                    // A call that resumed meanwhile (connects sharing one directory answer)
                    // may have set it: that is newer than what was read.
                    match self.alarm_at.get() {
                        Alarm::At(c) if c > now => Some(c),
                        Alarm::None => None,
                        _ => stored,
                    }
                }
            };
            if let Some(c) = current.filter(|c| *c <= at && *c > now) {
                self.alarm_at.set(Alarm::At(c));
                let under_way = self.alarm_write.borrow().as_ref().filter(|(t, _)| *t == c).map(|(_, w)| w.clone());
                if let Some(write) = under_way {
                    if write.await.is_err() {
                        self.alarm_at.set(Alarm::Unknown);
                        continue;
                    }
                }
                return Ok(());
            }
            return self.set_alarm(at, now).boxed_local().await;
        }
        Err(Error::from("the alarm could not be set"))
    }

    /// Starts setting the stored alarm to `at`, or deleting it. Justified failpoints: the
    /// runtime cannot be made to fail an alarm write, nor to hold one back.
    fn write_alarm(&self, at: Option<i64>, now: i64) -> Writing {
        let config = config(&self.env);
        let fail = at.is_some() && config.failpoint("alarm_write_fails_once") && !self.alarm_write_failed.replace(true);
        let held = config.failpoint("alarm_writes_held");
        let storage = self.state.storage();
        async move {
            if fail || held {
                worker::Delay::from(std::time::Duration::from_millis(1_000)).await;
            }
            if fail {
                return Err("failpoint alarm_write_fails_once".to_owned());
            }
            match at {
                // An integer here is an offset from now, not a timestamp.
                Some(at) => storage.set_alarm(at.saturating_sub(now).max(1)).await,
                None => storage.delete_alarm().await,
            }
            .map_err(|e| e.to_string())
        }
        .boxed_local()
        .shared()
    }
}
