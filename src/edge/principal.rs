//! One Durable Object per user (`sub`): where revocations live, and which channels the user
//! holds sockets in, so `POST /revoke` without a channel list reaches every room that matters.
//!
//! A room asks it when a user connects whom the room does not already know (after the
//! Worker's token and grant checks, so a refused request never creates one): "record this
//! channel, and tell me the revocation time that applies to it". From then on `/revoke`
//! pushes this user's revocations to the room (protocol/revocation.rs). When the user's last
//! socket in a room closes, the room says so and the channel is forgotten, so the list only
//! holds where the user is now.
//!
//! Reaching rooms is bounded: `/revoke` queues every target and reaches a first batch at
//! once (its `closed` is exact for those); the rest, and any room that failed, are reached
//! from this object's own alarm, a batch per invocation, retried with backoff. Each
//! invocation stays far below the platform's subrequest limit however many rooms there are.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use futures::future::join_all;
use serde::Deserialize;
use worker::{durable_object, wasm_bindgen, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use super::js;
use super::messages::{JoinAnswer, JoinQuery, LeftNotice, RevokeOrder, RevokeReply, RevokeRequest};
use super::meter;
use super::runtime::{self, json_error};
use super::sql_store::{has_table, Num, Text};
use crate::protocol::channel::Channel;
use crate::protocol::revocation::ALL_CHANNELS;

/// Where the user is: every user's object has it.
const JOINED_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS joined (channel TEXT PRIMARY KEY, at INTEGER NOT NULL);";
/// Revocations and the rooms still to reach: created by the user's first revocation only,
/// so the objects of the many users never revoked store one table, not four.
const REVOKE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS revoked (scope TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (channel TEXT PRIMARY KEY, at INTEGER NOT NULL, attempts INTEGER NOT NULL, next_at INTEGER NOT NULL);
";
/// Rooms reached in one invocation (the answer to `/revoke`, or one alarm).
pub const REACH_BATCH: usize = 32;
/// Retry a room that failed after 1 s, doubling up to a minute.
const RETRY_FIRST_MS: i64 = 1_000;
const RETRY_MAX_MS: i64 = 60_000;

#[derive(Deserialize)]
struct Revocation {
    scope: String,
    at: f64,
}

#[derive(Deserialize)]
struct Pending {
    channel: String,
    at: f64,
    attempts: f64,
}

#[durable_object]
pub struct Principal {
    state: State,
    env: Env,
    sql: SqlStorage,
    /// Channels known to be recorded: a reconnect (the common case) writes nothing.
    joined: RefCell<HashSet<String>>,
    /// Which of the two schemas this instance knows to exist.
    has_joined: Cell<bool>,
    has_revoked: Cell<Option<bool>>,
    /// The `revoked` table, read once per instance and kept in step with every write.
    revoked: RefCell<Option<HashMap<String, i64>>>,
}

impl Principal {
    fn ensure_joined(&self) -> Result<()> {
        if !self.has_joined.get() {
            meter::run(&self.sql, JOINED_SCHEMA, None)?;
            self.has_joined.set(true);
        }
        Ok(())
    }

    /// Whether this user was ever revoked (the revocation tables exist).
    fn was_revoked(&self) -> bool {
        let known = self.has_revoked.get().unwrap_or_else(|| has_table(&self.sql, "revoked"));
        self.has_revoked.set(Some(known));
        known
    }

    /// The revocation time that applies to `channel`: its own or the all-channels one.
    fn revoked_at(&self, channel: &str) -> Result<Option<i64>> {
        let mut cache = self.revoked.borrow_mut();
        if cache.is_none() {
            let rows: Vec<Revocation> =
                if self.was_revoked() { meter::rows(&self.sql, "SELECT scope, at FROM revoked", None)? } else { Vec::new() };
            *cache = Some(rows.into_iter().map(|r| (r.scope, r.at as i64)).collect());
        }
        let revoked = cache.as_ref().map(|map| [ALL_CHANNELS, channel].iter().filter_map(|s| map.get(*s).copied()).max());
        Ok(revoked.flatten())
    }

    fn join(&self, q: JoinQuery) -> Result<JoinAnswer> {
        if !self.joined.borrow().contains(&q.channel) {
            self.ensure_joined()?;
            meter::run(
                &self.sql,
                "INSERT INTO joined (channel, at) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET at = excluded.at",
                vec![q.channel.as_str().into(), q.now_ms.into()],
            )?;
            self.joined.borrow_mut().insert(q.channel.clone());
        }
        Ok(JoinAnswer { revoked_at: self.revoked_at(&q.channel)? })
    }

    /// The user's last socket in a room closed. Only a record older than that moment is
    /// dropped: a connect racing the departure has re-recorded the channel after it.
    fn left(&self, notice: LeftNotice) -> Result<()> {
        self.ensure_joined()?;
        meter::run(
            &self.sql,
            "DELETE FROM joined WHERE channel = ? AND at < ?",
            vec![notice.channel.as_str().into(), notice.at_ms.into()],
        )?;
        self.joined.borrow_mut().remove(&notice.channel);
        Ok(())
    }

    async fn revoke(&self, order: RevokeOrder) -> Result<RevokeReply> {
        meter::run(&self.sql, REVOKE_SCHEMA, None)?;
        self.has_revoked.set(Some(true));
        self.ensure_joined()?;
        meter::run(&self.sql, "INSERT OR REPLACE INTO meta (key, value) VALUES ('sub', ?)", vec![order.sub.as_str().into()])?;
        let scopes = order.channels.clone().unwrap_or_else(|| vec![ALL_CHANNELS.to_owned()]);
        for scope in &scopes {
            // The later time wins: a retried or replayed older request never moves it back.
            meter::run(
                &self.sql,
                "INSERT INTO revoked (scope, at) VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET at = MAX(at, excluded.at)",
                vec![scope.as_str().into(), order.at.into()],
            )?;
            if let Some(map) = self.revoked.borrow_mut().as_mut() {
                let entry = map.entry(scope.clone()).or_insert(order.at);
                *entry = (*entry).max(order.at);
            }
        }
        let targets = match order.channels {
            Some(channels) => channels,
            None => meter::rows::<Text>(&self.sql, "SELECT channel AS value FROM joined", None)?.into_iter().map(|t| t.value).collect(),
        };
        let now = runtime::now_ms();
        for channel in &targets {
            meter::run(
                &self.sql,
                "INSERT INTO pending (channel, at, attempts, next_at) VALUES (?, ?, 0, ?)
                 ON CONFLICT (channel) DO UPDATE SET at = MAX(at, excluded.at), next_at = excluded.next_at",
                vec![channel.as_str().into(), order.at.into(), now.into()],
            )?;
        }
        let closed = self.reach(&order.sub, now).await?;
        Ok(RevokeReply { closed })
    }

    /// Reaches one batch of due rooms; failures are retried with backoff from the alarm,
    /// which stays set exactly while rooms remain to be reached.
    async fn reach(&self, sub: &str, now: i64) -> Result<u32> {
        let due: Vec<Pending> = meter::rows(
            &self.sql,
            "SELECT channel, at, attempts FROM pending WHERE next_at <= ? ORDER BY next_at LIMIT ?",
            vec![now.into(), (REACH_BATCH as i64).into()],
        )?;
        let calls = due.iter().map(|p| async move {
            let channel = Channel::parse(&p.channel).map_err(|_| worker::Error::from("unparsable channel"))?;
            let request = RevokeRequest { sub: sub.to_owned(), revoked_at: p.at as i64 };
            js::call::<_, RevokeReply>(&self.env, runtime::room(&channel), "/revoke", &request).await
        });
        let mut closed = 0;
        for (p, reply) in due.iter().zip(join_all(calls).await) {
            match reply {
                Ok(reply) => {
                    closed += reply.closed;
                    // Only the revocation that was sent: a newer one queued meanwhile stays.
                    meter::run(
                        &self.sql,
                        "DELETE FROM pending WHERE channel = ? AND at <= ?",
                        vec![p.channel.as_str().into(), p.at.into()],
                    )?;
                }
                Err(e) => {
                    worker::console_warn!("revocation could not reach a room yet ({e}); will retry");
                    let attempts = p.attempts as u32 + 1;
                    let delay = (RETRY_FIRST_MS << attempts.min(10)).min(RETRY_MAX_MS);
                    meter::run(
                        &self.sql,
                        "UPDATE pending SET attempts = ?, next_at = ? WHERE channel = ?",
                        vec![(attempts as i64).into(), (now + delay).into(), p.channel.as_str().into()],
                    )?;
                }
            }
        }
        let next: Vec<Num> = meter::rows(&self.sql, "SELECT next_at AS value FROM pending ORDER BY next_at LIMIT 1", None)?;
        let storage = self.state.storage();
        match next.first() {
            // An integer here is an offset from now, not a timestamp.
            Some(n) => storage.set_alarm((n.value as i64 - runtime::now_ms()).max(1)).await?,
            None => storage.delete_alarm().await?,
        }
        Ok(closed)
    }
}

impl DurableObject for Principal {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        Principal {
            state,
            env,
            sql,
            joined: RefCell::default(),
            has_joined: Cell::new(false),
            has_revoked: Cell::new(None),
            revoked: RefCell::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let response = self.answer(req).await;
        self.meter("object");
        response
    }

    /// Set only while rooms remain to be reached by a revocation.
    async fn alarm(&self) -> Result<Response> {
        let response = self.reach_pending().await;
        self.meter("alarm");
        response
    }
}

impl Principal {
    fn meter(&self, what: &str) {
        meter::line(&self.env, what, || Some((self.state.id().to_string(), self.sql.database_size())));
    }

    async fn answer(&self, mut req: Request) -> Result<Response> {
        let body = req.text().await?;
        match req.path().as_str() {
            "/join" => Response::from_json(&self.join(serde_json::from_str(&body)?)?),
            "/left" => {
                self.left(serde_json::from_str(&body)?)?;
                Response::from_json(&serde_json::json!({}))
            }
            "/revoke" => Response::from_json(&self.revoke(serde_json::from_str(&body)?).await?),
            _ => json_error(404, "not_found", "no such endpoint"),
        }
    }

    async fn reach_pending(&self) -> Result<Response> {
        if !self.was_revoked() {
            self.state.storage().delete_alarm().await?;
            return Response::ok("nothing to reach");
        }
        let rows: Vec<Text> = meter::rows(&self.sql, "SELECT value FROM meta WHERE key = 'sub'", None)?;
        match rows.first() {
            Some(sub) => {
                self.reach(&sub.value, runtime::now_ms()).await?;
            }
            None => self.state.storage().delete_alarm().await?,
        }
        Response::ok("ok")
    }
}
