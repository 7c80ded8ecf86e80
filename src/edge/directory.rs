//! The revocation directory: a fixed set of Durable Objects
//! ([`DIRECTORY_SHARDS`](crate::protocol::revocation::DIRECTORY_SHARDS)); a room talks to
//! the one named by a hash of its channel. Each holds every revocation (`/revoke` goes to
//! all), its rooms' records of where users joined, and its rooms holding a lease. Its rules are protocol/revocation/directory.rs; this file
//! is its storage (SQLite, [`SqlDirectory`]) and its calls: pushes to rooms, made in
//! parallel, each bounded by [`PUSH_TIMEOUT_MS`], and the one alarm set to the core's
//! `poll_timeout`.
//!
//! Few, warm objects instead of one per user: a storm of new customers costs its room one
//! object that is already running, never a fresh object per customer.

use std::cell::RefCell;

use futures::future::join_all;
use serde::Deserialize;
use wasm_bindgen::prelude::{wasm_bindgen, JsValue};
use worker::{web_sys, Env, Result, SqlStorage, SqlStorageValue, State};

use super::js;
use super::log;
use super::messages::{Joined, JoinedAnswer, RevokeOrder, RevokeReply, RevokeRequest};
use super::meter;
use super::runtime::{self, config, json_error};
use super::sql_store::Num;
use crate::protocol::channel::Channel;
use crate::protocol::handshake;
use crate::protocol::revocation::{Directory, DirectoryStore, Push, KEPT_SECS, LEASE_MS, PUSH_TIMEOUT_MS};

/// Each prune (`DELETE ... WHERE at < ?`) and the alarm's `ORDER BY next_at` use an index.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS joined (sub TEXT NOT NULL, channel TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (sub, channel)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS joined_at ON joined (at);
CREATE TABLE IF NOT EXISTS revoked (sub TEXT NOT NULL, scope TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (sub, scope)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_at ON revoked (at);
CREATE TABLE IF NOT EXISTS watchers (channel TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (sub TEXT NOT NULL, channel TEXT NOT NULL, at INTEGER NOT NULL, attempts INTEGER NOT NULL,
  next_at INTEGER NOT NULL, PRIMARY KEY (sub, channel)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_next ON pending (next_at);
";

/// The shard's [`DirectoryStore`] on the object's SQLite storage.
pub struct SqlDirectory {
    sql: SqlStorage,
}

#[derive(Deserialize)]
struct RevokedRow {
    sub: String,
    scope: String,
    at: f64,
}

#[derive(Deserialize)]
struct WatcherRow {
    channel: String,
    until: f64,
}

#[derive(Deserialize)]
struct PendingRow {
    sub: String,
    channel: String,
    at: f64,
    attempts: f64,
}

impl SqlDirectory {
    fn open(sql: SqlStorage) -> Result<SqlDirectory> {
        meter::run(&sql, SCHEMA, None)?;
        Ok(SqlDirectory { sql })
    }

    fn run(&self, query: &str, bindings: Vec<SqlStorageValue>) -> std::result::Result<(), String> {
        meter::run(&self.sql, query, bindings).map(|_| ()).map_err(|e| e.to_string())
    }

    fn rows<T: serde::de::DeserializeOwned>(&self, query: &str, bindings: Vec<SqlStorageValue>) -> std::result::Result<Vec<T>, String> {
        meter::rows(&self.sql, query, bindings).map_err(|e| e.to_string())
    }
}

impl DirectoryStore for SqlDirectory {
    fn revocations(&mut self) -> std::result::Result<Vec<(String, String, i64)>, String> {
        let rows: Vec<RevokedRow> = self.rows("SELECT sub, scope, at FROM revoked", vec![])?;
        Ok(rows.into_iter().map(|r| (r.sub, r.scope, r.at as i64)).collect())
    }

    fn put_revocation(&mut self, sub: &str, scope: &str, at: i64) -> std::result::Result<(), String> {
        self.run(
            "INSERT INTO revoked (sub, scope, at) VALUES (?, ?, ?) ON CONFLICT (sub, scope) DO UPDATE SET at = MAX(at, excluded.at)",
            vec![sub.into(), scope.into(), at.into()],
        )
    }

    fn put_record(&mut self, sub: &str, channel: &str, at_ms: i64) -> std::result::Result<(), String> {
        self.run(
            "INSERT INTO joined (sub, channel, at) VALUES (?, ?, ?) ON CONFLICT (sub, channel) DO UPDATE SET at = excluded.at",
            vec![sub.into(), channel.into(), at_ms.into()],
        )
    }

    fn rooms_of(&mut self, sub: &str) -> std::result::Result<Vec<String>, String> {
        let rows: Vec<super::sql_store::Text> = self.rows("SELECT channel AS value FROM joined WHERE sub = ?", vec![sub.into()])?;
        Ok(rows.into_iter().map(|t| t.value).collect())
    }

    fn watchers(&mut self) -> std::result::Result<Vec<(String, i64)>, String> {
        let rows: Vec<WatcherRow> = self.rows("SELECT channel, until FROM watchers", vec![])?;
        Ok(rows.into_iter().map(|r| (r.channel, r.until as i64)).collect())
    }

    fn put_watcher(&mut self, channel: &str, until_ms: i64) -> std::result::Result<(), String> {
        self.run(
            "INSERT INTO watchers (channel, until) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET until = MAX(until, excluded.until)",
            vec![channel.into(), until_ms.into()],
        )
    }

    fn prune(&mut self, revoked_before: i64, recorded_before: i64, now_ms: i64) -> std::result::Result<(), String> {
        self.run("DELETE FROM revoked WHERE at < ?", vec![revoked_before.into()])?;
        self.run("DELETE FROM joined WHERE at < ?", vec![recorded_before.into()])?;
        self.run("DELETE FROM watchers WHERE until < ?", vec![now_ms.into()])
    }

    fn queue(&mut self, push: &Push, next_at: i64) -> std::result::Result<(), String> {
        self.run(
            "INSERT INTO pending (sub, channel, at, attempts, next_at) VALUES (?, ?, ?, 0, ?)
             ON CONFLICT (sub, channel) DO UPDATE SET at = MAX(at, excluded.at), attempts = 0, next_at = excluded.next_at",
            vec![push.sub.as_str().into(), push.channel.as_str().into(), push.at.into(), next_at.into()],
        )
    }

    fn queued(&mut self, sub: Option<&str>, due_by: i64, limit: usize) -> std::result::Result<Vec<Push>, String> {
        let rows: Vec<PendingRow> = match sub {
            Some(sub) => self.rows(
                "SELECT sub, channel, at, attempts FROM pending WHERE sub = ? AND next_at <= ? ORDER BY next_at LIMIT ?",
                vec![sub.into(), due_by.into(), (limit as i64).into()],
            )?,
            None => self.rows(
                "SELECT sub, channel, at, attempts FROM pending WHERE next_at <= ? ORDER BY next_at LIMIT ?",
                vec![due_by.into(), (limit as i64).into()],
            )?,
        };
        Ok(rows.into_iter().map(|r| Push { sub: r.sub, channel: r.channel, at: r.at as i64, attempts: r.attempts as u32 }).collect())
    }

    fn unqueue(&mut self, push: &Push) -> std::result::Result<(), String> {
        self.run(
            "DELETE FROM pending WHERE sub = ? AND channel = ? AND at <= ?",
            vec![push.sub.as_str().into(), push.channel.as_str().into(), push.at.into()],
        )
    }

    fn requeue(&mut self, push: &Push, attempts: u32, next_at: i64) -> std::result::Result<(), String> {
        self.run(
            "UPDATE pending SET attempts = ?, next_at = ? WHERE sub = ? AND channel = ?",
            vec![(attempts as i64).into(), next_at.into(), push.sub.as_str().into(), push.channel.as_str().into()],
        )
    }

    fn next_due(&mut self) -> std::result::Result<Option<i64>, String> {
        let next: Vec<Num> = self.rows("SELECT next_at AS value FROM pending ORDER BY next_at LIMIT 1", vec![])?;
        Ok(next.first().map(|n| n.value as i64))
    }
}

/// Written out rather than through workers-rs' `#[durable_object]` (see the room classes in
/// room_object/mod.rs): a record is a call per new user, in the runtime's own types.
#[wasm_bindgen]
pub struct RevocationDirectory {
    state: State,
    env: Env,
    /// The core and its store, once opened in this instance.
    shard: RefCell<Option<(Directory, SqlDirectory)>>,
}

impl RevocationDirectory {
    /// Runs `f` with the core over this object's storage.
    fn with_shard<T>(&self, f: impl FnOnce(&mut Directory, &mut SqlDirectory) -> std::result::Result<T, String>) -> Result<T> {
        let mut slot = self.shard.borrow_mut();
        if slot.is_none() {
            let config = config(&self.env);
            let max_lifetime = config.tokens.as_ref().map_or(KEPT_SECS, |(_, expect)| expect.max_lifetime);
            // Justified failpoint: a test outlives a lease only if it is short.
            let lease_ms = if config.failpoint("short_lease") { 2_000 } else { LEASE_MS };
            *slot = Some((Directory::new(max_lifetime, lease_ms), SqlDirectory::open(self.state.storage().sql())?));
        }
        let (directory, store) = slot.as_mut().ok_or_else(|| worker::Error::from("storage unavailable"))?;
        f(directory, store).map_err(worker::Error::from)
    }

    fn record(&self, q: Joined) -> Result<JoinedAnswer> {
        let channel = q.channel.to_string();
        let (revoked, lease) = self.with_shard(|d, s| d.joined(s, &channel, &q.subs, q.lease, runtime::now_ms()))?;
        Ok(JoinedAnswer { revoked, lease })
    }

    async fn revoke(&self, order: RevokeOrder) -> Result<RevokeReply> {
        let named: Option<Vec<String>> = order.channels.as_ref().map(|list| list.iter().map(Channel::to_string).collect());
        let pushes = self.with_shard(|d, s| d.revoke(s, &order.sub, named.as_deref(), order.at, runtime::now_ms()))?;
        let (closed, pending) = self.reach(pushes, Some(&order.sub)).await?;
        // Fail closed, and say so: a room that did not take the push may still welcome the
        // user from what it remembers, so the answer is `pending` (a 503 from the Worker)
        // until every push landed; the backend retries (same `t`), pushing only those.
        Ok(RevokeReply { closed, pending })
    }

    /// Makes one round of pushes in parallel, hands the outcomes to the core, and sets the
    /// alarm to its deadline. Returns the revoked user's closed sockets, and whether any of
    /// their pushes is still queued.
    async fn reach(&self, pushes: Vec<Push>, revoked: Option<&str>) -> Result<(u32, bool)> {
        let calls = pushes.iter().map(|p| async move {
            let request = RevokeRequest { sub: p.sub.clone(), revoked_at: p.at };
            let channel = Channel::parse(&p.channel).map_err(|_| "unparsable channel".to_owned())?;
            js::call_within::<_, RevokeReply>(&self.env, runtime::room(&channel), "/revoke", &request, PUSH_TIMEOUT_MS)
                .await
                .map(|r| r.closed)
                .map_err(|e| e.to_string())
        });
        let outcomes = pushes.iter().cloned().zip(join_all(calls).await).collect();
        let now = runtime::now_ms();
        let (reached, next) = self.with_shard(|d, s| Ok((d.pushed(s, outcomes, revoked, now)?, d.poll_timeout(s)?)))?;
        for (channel, why) in &reached.failed {
            log::warning(&self.env, None, &format!("revocation not taken by {channel} yet; queued"), why);
        }
        for (channel, why) in &reached.gave_up {
            log::internal(&self.env, None, &format!("revocation given up for {channel} (moot now)"), why);
        }
        let storage = self.state.storage();
        match next {
            // An integer here is an offset from now, not a timestamp.
            Some(at) => storage.set_alarm((at - runtime::now_ms()).max(1)).await?,
            None => storage.delete_alarm().await?,
        }
        Ok((reached.closed, reached.pending))
    }

    fn meter(&self, what: &str) {
        meter::object(&self.env, &self.state, what);
    }

    async fn answer(&self, req: web_sys::Request) -> Result<web_sys::Response> {
        let body = js::text(&req).await?;
        let url = req.url();
        match handshake::split_url(&url).1 {
            "/revoke" => js::json(&self.revoke(serde_json::from_str(&body)?).await?),
            _ => Ok(json_error(404, "not_found", "no such endpoint")?.into()),
        }
    }
}

#[wasm_bindgen(wasm_bindgen_futures = ::worker::wasm_bindgen_futures, js_sys = ::worker::js_sys)]
impl RevocationDirectory {
    #[wasm_bindgen(constructor)]
    pub fn new(state: worker::worker_sys::DurableObjectState, env: Env) -> Self {
        RevocationDirectory { state: State::from(state), env, shard: RefCell::new(None) }
    }

    pub async fn fetch(&self, req: web_sys::Request) -> std::result::Result<JsValue, JsValue> {
        let response = self.answer(req).await;
        self.meter("object");
        response.map(JsValue::from).map_err(JsValue::from)
    }

    /// A room's record of users it does not know (`Joined` as JSON text), over RPC (entry.js):
    /// the `JoinedAnswer` as JSON text. One call per new user on the connect path, so no
    /// Request, Response or body stream on either side.
    pub fn joined(&self, body: String) -> std::result::Result<String, JsValue> {
        let answer = serde_json::from_str(&body).map_err(worker::Error::from).and_then(|q| self.record(q));
        let answer = answer.and_then(|a| serde_json::to_string(&a).map_err(worker::Error::from));
        meter::rpc_answer(&self.env, &self.state, None, "directory record", answer)
    }

    /// Set exactly while pushes are queued: the core's `poll_timeout`.
    pub async fn alarm(&self) -> std::result::Result<JsValue, JsValue> {
        let done = match self.with_shard(|d, s| d.due(s, runtime::now_ms())) {
            Ok(due) => self.reach(due, None).await.map(|_| JsValue::UNDEFINED),
            Err(e) => Err(e),
        };
        self.meter("alarm");
        done.map_err(JsValue::from)
    }
}
