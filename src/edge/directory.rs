//! The revocation directory: a fixed set of Durable Objects
//! ([`DIRECTORY_SHARDS`](crate::protocol::revocation::DIRECTORY_SHARDS)), a user's
//! in the shard named by a hash of their `sub`. It holds revocations and where each user
//! holds sockets, so `POST /revoke` without a channel list reaches every room that matters.
//!
//! Few, warm objects instead of one per user: a storm of new customers costs one call to an
//! object that is already running, never a fresh object per customer. Before a room
//! welcomes a user it does not know, it records the join (`/joined`), answered with the
//! revocation as of the record: a `/revoke` before the record is in the answer (no
//! `welcome`), one after it finds the record and reaches the room (protocol/revocation.rs).
//! The revocations are held in memory as well as in SQLite (they are few: rare, and pruned),
//! so the answer costs no query. A room that many new users join takes a *lease* instead
//! (`/joined` with `lease`): it is answered with the shard's live revocations that apply to
//! it and registered as a leaseholder (`watchers`, durable, so a restarted shard still knows
//! it), and every `/revoke` of this shard's users pushes to the leaseholders it applies to
//! before it answers; for the lease's length the room welcomes the shard's users from
//! memory and records them after the welcome, many in one call. A departure costs no
//! call: records expire after [`RECORD_KEPT_MS`] (pruned on write), and a room renews a
//! staying user's record at refresh long before that (protocol/revocation.rs).
//!
//! Reaching rooms is bounded: `/revoke` queues every target and reaches a first batch at
//! once (its `closed` is exact for those); the rest, and any room that failed, are reached
//! from this object's alarm, a batch per invocation, retried with backoff. The alarm is set
//! only while rooms remain to be reached.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures::future::join_all;
use serde::Deserialize;
use wasm_bindgen::prelude::{wasm_bindgen, JsValue};
use worker::{web_sys, Env, Result, SqlStorage, State};

use super::js;
use super::log;
use super::messages::{Joined, JoinedAnswer, LeaseGrant, RevokeOrder, RevokeReply, RevokeRequest};
use super::meter;
use super::runtime::{self, config, json_error};
use super::sql_store::{Num, Text};
use crate::protocol::channel::Channel;
use crate::protocol::handshake;
use crate::protocol::revocation::{self, ALL_CHANNELS, KEPT_SECS, LEASE_MS, RECORD_KEPT_MS};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS joined (sub TEXT NOT NULL, channel TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (sub, channel)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked (sub TEXT NOT NULL, scope TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (sub, scope)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watchers (channel TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (sub TEXT NOT NULL, channel TEXT NOT NULL, at INTEGER NOT NULL, attempts INTEGER NOT NULL,
  next_at INTEGER NOT NULL, PRIMARY KEY (sub, channel)) WITHOUT ROWID;
";
/// Rooms reached in one invocation (the answer to `/revoke`, or one alarm).
pub const REACH_BATCH: usize = 32;
/// Retry a room that failed after 1 s, doubling up to a minute.
const RETRY_FIRST_MS: i64 = 1_000;
const RETRY_MAX_MS: i64 = 60_000;
/// Rooms holding a lease at once, at most: beyond, rooms record each new user instead (a
/// `/revoke` reaches every leaseholder before it answers, so their number is bounded).
const MAX_WATCHERS: usize = 500;

#[derive(Deserialize)]
struct Pending {
    sub: String,
    channel: String,
    at: f64,
    attempts: f64,
}

/// Written out rather than through workers-rs' `#[durable_object]` (see the room classes in
/// room_object/mod.rs): a record is a call per new user, in the runtime's own types.
#[wasm_bindgen]
pub struct RevocationDirectory {
    state: State,
    env: Env,
    sql: SqlStorage,
    /// The schema is known to exist in this instance.
    ready: Cell<bool>,
    /// The `revoked` table, loaded once per instance (and again after a `/revoke`).
    revoked: RefCell<Option<Revoked>>,
    /// When expired records were last dropped (ms) in this instance.
    pruned_at: Cell<Option<i64>>,
    /// The `watchers` table (rooms holding a lease: channel → lease end, ms), loaded once.
    watchers: RefCell<Option<HashMap<String, i64>>>,
}

/// Expired records are dropped on a `/joined` at most this often (and before every `/revoke`).
const PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;

/// sub → [(scope, revoked at)].
type Revoked = HashMap<String, Vec<(String, i64)>>;

#[derive(Deserialize)]
struct WatcherRow {
    channel: String,
    until: f64,
}

#[derive(Deserialize)]
struct RevokedRow {
    sub: String,
    scope: String,
    at: f64,
}

impl RevocationDirectory {
    fn ensure_schema(&self) -> Result<()> {
        if !self.ready.get() {
            meter::run(&self.sql, SCHEMA, None)?;
            self.ready.set(true);
        }
        Ok(())
    }

    /// The `revoked` table, loaded once per instance (and again after a `/revoke`).
    fn revoked(&self) -> Result<std::cell::RefMut<'_, Revoked>> {
        let mut cache = self.revoked.borrow_mut();
        if cache.is_none() {
            let rows: Vec<RevokedRow> = meter::rows(&self.sql, "SELECT sub, scope, at FROM revoked", None)?;
            let mut loaded = Revoked::new();
            for row in rows {
                loaded.entry(row.sub).or_default().push((row.scope, row.at as i64));
            }
            *cache = Some(loaded);
        }
        Ok(std::cell::RefMut::map(cache, |c| c.get_or_insert_with(Revoked::new)))
    }

    /// The revocation that applies to `sub` in `channel`: its own or the all-channels one.
    fn revoked_at(&self, sub: &str, channel: &str) -> Result<Option<i64>> {
        let revoked = self.revoked()?;
        let scopes = revoked.get(sub);
        Ok(scopes.into_iter().flatten().filter(|(scope, _)| scope == ALL_CHANNELS || scope == channel).map(|(_, at)| *at).max())
    }

    /// The `watchers` table, loaded once per instance; the table is written on every change.
    fn watchers(&self) -> Result<std::cell::RefMut<'_, HashMap<String, i64>>> {
        let mut cache = self.watchers.borrow_mut();
        if cache.is_none() {
            let rows: Vec<WatcherRow> = meter::rows(&self.sql, "SELECT channel, until FROM watchers", None)?;
            *cache = Some(rows.into_iter().map(|r| (r.channel, r.until as i64)).collect());
        }
        Ok(std::cell::RefMut::map(cache, |c| c.get_or_insert_with(HashMap::new)))
    }

    /// Records where the users joined, answered with the revocation of each as of the
    /// record; and grants the room a lease when it asks and the shard can (see
    /// protocol/revocation.rs): from now until the lease ends, every `/revoke` of this
    /// shard's users that applies in the room is pushed to it before `/revoke` answers.
    fn joined(&self, q: Joined) -> Result<JoinedAnswer> {
        self.ensure_schema()?;
        if self.pruned_at.get().is_none_or(|at| q.at_ms - at >= PRUNE_EVERY_MS) {
            self.prune_records(q.at_ms)?;
        }
        let channel = q.channel.to_string();
        let mut revoked = Vec::with_capacity(q.subs.len());
        for sub in &q.subs {
            meter::run(
                &self.sql,
                "INSERT INTO joined (sub, channel, at) VALUES (?, ?, ?) ON CONFLICT (sub, channel) DO UPDATE SET at = excluded.at",
                vec![sub.as_str().into(), channel.as_str().into(), q.at_ms.into()],
            )?;
            revoked.push(self.revoked_at(sub, &channel)?);
        }
        let lease = if q.lease { self.lease(&channel)? } else { None };
        Ok(JoinedAnswer { revoked, lease })
    }

    /// A lease for the room of `channel`, registered before it is answered; `None` when
    /// the shard has too many live revocations or leaseholders.
    fn lease(&self, channel: &str) -> Result<Option<LeaseGrant>> {
        let now = runtime::now_ms();
        let config = config(&self.env);
        let max_lifetime = config.tokens.as_ref().map_or(KEPT_SECS, |(_, expect)| expect.max_lifetime);
        let Some(live) = revocation::live_revocations(&*self.revoked()?, channel, revocation::oldest_live(now / 1000, max_lifetime)) else {
            return Ok(None);
        };
        let ms = if config.failpoint("short_lease") { 2_000 } else { LEASE_MS };
        let mut watchers = self.watchers()?;
        if watchers.len() >= MAX_WATCHERS && !watchers.contains_key(channel) {
            watchers.retain(|_, until| *until > now);
            if watchers.len() >= MAX_WATCHERS {
                return Ok(None);
            }
        }
        meter::run(
            &self.sql,
            "INSERT INTO watchers (channel, until) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET until = MAX(until, excluded.until)",
            vec![channel.into(), (now + ms).into()],
        )?;
        let until = watchers.entry(channel.to_owned()).or_insert(now + ms);
        *until = (*until).max(now + ms);
        Ok(Some(LeaseGrant { ms, revoked: live }))
    }

    /// Drops records too old to belong to a socket still open (revocation.rs).
    fn prune_records(&self, now_ms: i64) -> Result<()> {
        meter::run(&self.sql, "DELETE FROM joined WHERE at < ?", vec![(now_ms - RECORD_KEPT_MS).into()])?;
        meter::run(&self.sql, "DELETE FROM watchers WHERE until < ?", vec![now_ms.into()])?;
        self.watchers()?.retain(|_, until| *until >= now_ms);
        self.pruned_at.set(Some(now_ms));
        Ok(())
    }

    async fn revoke(&self, order: RevokeOrder) -> Result<RevokeReply> {
        self.ensure_schema()?;
        let named: Option<Vec<String>> = order.channels.as_ref().map(|list| list.iter().map(Channel::to_string).collect());
        let scopes = named.clone().unwrap_or_else(|| vec![ALL_CHANNELS.to_owned()]);
        for scope in &scopes {
            // The later time wins: a retried or replayed older request never moves it back.
            meter::run(
                &self.sql,
                "INSERT INTO revoked (sub, scope, at) VALUES (?, ?, ?) ON CONFLICT (sub, scope) DO UPDATE SET at = MAX(at, excluded.at)",
                vec![order.sub.as_str().into(), scope.as_str().into(), order.at.into()],
            )?;
        }
        // Pruned on write: no timer, and old revocations refuse nothing (see KEPT_SECS).
        meter::run(&self.sql, "DELETE FROM revoked WHERE at < ?", vec![(order.at - KEPT_SECS).into()])?;
        // Reloaded from the table on the next question: the table is the truth.
        *self.revoked.borrow_mut() = None;
        let now = runtime::now_ms();
        self.prune_records(now)?;
        // Leaseholders first, all of them, before the answer: they admit this shard's users
        // without asking. Those reached need no other push; those that failed are queued
        // with the rest (durably: the alarm retries them, and so does a retried `/revoke`).
        let (mut closed, reached, failed) = self.tell_leaseholders(&order, named.as_deref()).await?;
        let mut targets: Vec<String> = match named {
            Some(channels) => channels,
            None => meter::rows::<Text>(&self.sql, "SELECT channel AS value FROM joined WHERE sub = ?", vec![order.sub.as_str().into()])?
                .into_iter()
                .map(|t| t.value)
                .collect(),
        };
        targets.extend(failed.into_iter().filter(|f| !targets.contains(f)).collect::<Vec<_>>());
        for channel in targets.iter().filter(|c| !reached.contains(c)) {
            meter::run(
                &self.sql,
                "INSERT INTO pending (sub, channel, at, attempts, next_at) VALUES (?, ?, ?, 0, ?)
                 ON CONFLICT (sub, channel) DO UPDATE SET at = MAX(at, excluded.at), next_at = excluded.next_at",
                vec![order.sub.as_str().into(), channel.as_str().into(), order.at.into(), now.into()],
            )?;
        }
        let (reached_closed, unreached) = self.reach(Some(&order.sub), now).await?;
        closed += reached_closed;
        // Fail closed, and say so: a room that did not take the push may still welcome the
        // user from what it remembers, so the answer is `pending` (a 503 from the Worker)
        // until every room of the first batch took it; the backend retries (same `t`).
        Ok(RevokeReply { closed, pending: unreached > 0 })
    }

    /// Pushes a revocation to every room holding a lease it applies to (all of them, or
    /// those of the named channels), once, in parallel; returns the sockets closed, the rooms
    /// reached and those that failed (queued by the caller, and the answer is `pending`).
    async fn tell_leaseholders(&self, order: &RevokeOrder, named: Option<&[String]>) -> Result<(u32, Vec<String>, Vec<String>)> {
        let now = runtime::now_ms();
        let holders: Vec<String> = self
            .watchers()?
            .iter()
            .filter(|(channel, until)| **until > now && named.is_none_or(|n| n.contains(channel)))
            .map(|(channel, _)| channel.clone())
            .collect();
        let request = RevokeRequest { sub: order.sub.clone(), revoked_at: order.at };
        let replies = join_all(holders.iter().map(|channel| self.push(channel, &request))).await;
        let (mut closed, mut reached, mut failed) = (0, Vec::new(), Vec::new());
        for (channel, reply) in holders.into_iter().zip(replies) {
            match reply {
                Ok(reply) => {
                    closed += reply.closed;
                    reached.push(channel);
                }
                Err(e) => {
                    log::warning(&self.env, None, "a leaseholder did not take a revocation yet; queued", e);
                    failed.push(channel);
                }
            }
        }
        Ok((closed, reached, failed))
    }

    /// Reaches one batch of due rooms (of `sub` first, when answering its `/revoke`);
    /// failures are retried with backoff from the alarm, set exactly while rooms remain.
    /// Returns the sockets of `sub` closed, and how many of its rooms failed.
    async fn reach(&self, sub: Option<&str>, now: i64) -> Result<(u32, usize)> {
        let due: Vec<Pending> = meter::rows(
            &self.sql,
            "SELECT sub, channel, at, attempts FROM pending WHERE next_at <= ? ORDER BY sub = ? DESC, next_at LIMIT ?",
            vec![now.into(), sub.unwrap_or("").into(), (REACH_BATCH as i64).into()],
        )?;
        let calls = due.iter().map(|p| async move {
            let request = RevokeRequest { sub: p.sub.clone(), revoked_at: p.at as i64 };
            self.push(&p.channel, &request).await
        });
        let max_lifetime = config(&self.env).tokens.as_ref().map_or(KEPT_SECS, |(_, expect)| expect.max_lifetime);
        let (mut closed, mut failed) = (0, 0);
        for (p, reply) in due.iter().zip(join_all(calls).await) {
            match reply {
                Ok(reply) => {
                    if Some(p.sub.as_str()) == sub {
                        closed += reply.closed;
                    }
                    // Only the revocation that was sent: a newer one queued meanwhile stays.
                    meter::run(
                        &self.sql,
                        "DELETE FROM pending WHERE sub = ? AND channel = ? AND at <= ?",
                        vec![p.sub.as_str().into(), p.channel.as_str().into(), p.at.into()],
                    )?;
                }
                Err(e) if !revocation::push_matters(p.at as i64, now / 1000, max_lifetime) => {
                    // Every token it could refuse has expired: nothing left for it to do.
                    log::internal(&self.env, None, "revocation given up for a room it could not reach (moot now)", e);
                    meter::run(
                        &self.sql,
                        "DELETE FROM pending WHERE sub = ? AND channel = ? AND at <= ?",
                        vec![p.sub.as_str().into(), p.channel.as_str().into(), p.at.into()],
                    )?;
                }
                Err(e) => {
                    log::warning(&self.env, None, "revocation could not reach a room yet; will retry", e);
                    if Some(p.sub.as_str()) == sub {
                        failed += 1;
                    }
                    let attempts = p.attempts as u32 + 1;
                    let delay = (RETRY_FIRST_MS << attempts.min(10)).min(RETRY_MAX_MS);
                    meter::run(
                        &self.sql,
                        "UPDATE pending SET attempts = ?, next_at = ? WHERE sub = ? AND channel = ?",
                        vec![(attempts as i64).into(), (now + delay).into(), p.sub.as_str().into(), p.channel.as_str().into()],
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
        Ok((closed, failed))
    }

    /// A revocation pushed to the room of `channel` (a name as stored).
    async fn push(&self, channel: &str, request: &RevokeRequest) -> Result<RevokeReply> {
        let channel = Channel::parse(channel).map_err(|_| worker::Error::from("unparsable channel"))?;
        js::call(&self.env, runtime::room(&channel), "/revoke", request).await
    }

    fn meter(&self, what: &str) {
        meter::line(&self.env, what, || Some((self.state.id().to_string(), self.sql.database_size())));
    }

    async fn answer(&self, req: web_sys::Request) -> Result<web_sys::Response> {
        let body = js::text(&req).await?;
        let url = req.url();
        match handshake::split_url(&url).1 {
            "/joined" => js::json(&self.joined(serde_json::from_str(&body)?)?),
            "/revoke" => js::json(&self.revoke(serde_json::from_str(&body)?).await?),
            _ => Ok(json_error(404, "not_found", "no such endpoint")?.into()),
        }
    }
}

#[wasm_bindgen(wasm_bindgen_futures = ::worker::wasm_bindgen_futures, js_sys = ::worker::js_sys)]
impl RevocationDirectory {
    #[wasm_bindgen(constructor)]
    pub fn new(state: worker::worker_sys::DurableObjectState, env: Env) -> Self {
        let state = State::from(state);
        let sql = state.storage().sql();
        RevocationDirectory {
            state,
            env,
            sql,
            ready: Cell::new(false),
            revoked: RefCell::new(None),
            pruned_at: Cell::new(None),
            watchers: RefCell::new(None),
        }
    }

    pub async fn fetch(&self, req: web_sys::Request) -> std::result::Result<JsValue, JsValue> {
        let response = self.answer(req).await;
        self.meter("object");
        response.map(JsValue::from).map_err(JsValue::from)
    }

    /// Set only while rooms remain to be reached by a revocation.
    pub async fn alarm(&self) -> std::result::Result<JsValue, JsValue> {
        let done = match self.ensure_schema() {
            Ok(()) => self.reach(None, runtime::now_ms()).await.map(|_| JsValue::UNDEFINED),
            Err(e) => Err(e),
        };
        self.meter("alarm");
        done.map_err(JsValue::from)
    }
}
