//! The room's [`Store`] on the Durable Object's SQLite storage.
//!
//! SQLite in a Durable Object is synchronous and local: every `exec` of one handler runs
//! before the next event is delivered to the object, and writes made without an `await` in
//! between are committed together. That is what keeps `seq` gap-free and events in order.
//! Storage survives hibernation, eviction and restarts; memory does not.

use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

use super::meter;
use crate::protocol::channel::Channel;
use crate::protocol::frame::StoredEvent;
use crate::protocol::links::{self, Link, LinkStore};
use crate::protocol::room::Store;
use crate::protocol::webhook::{self, Outbox, Queued};

/// Every room: its channel name, and its history, where each event also holds its dedupe
/// key (one row and one statement per event; an id is remembered while its event is).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS history (
  seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, id TEXT NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL, ts INTEGER NOT NULL);
";
/// Only rooms that queue a webhook call (chat, with the webhook on) ever create it: every
/// table is stored bytes on the bill of every object.
const OUTBOX_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
  id TEXT PRIMARY KEY, body TEXT NOT NULL, attempts INTEGER NOT NULL, next_at INTEGER NOT NULL, created INTEGER NOT NULL);
";

/// Only channels linked into an inbox ever create it: one row per link, its cursor over
/// the history (the events themselves are the history's) and its retry state.
const LINKS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS links (
  inbox TEXT PRIMARY KEY, sent INTEGER NOT NULL, until INTEGER, attempts INTEGER NOT NULL, next_at INTEGER NOT NULL, failing_since INTEGER);
";
/// Only inboxes whose sockets may answer chats create it: each such socket's chat grants.
const GRANTS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS grants (conn TEXT PRIMARY KEY, entries TEXT NOT NULL);";

/// A pending webhook call as stored.
#[derive(Deserialize)]
struct OutboxRow {
    id: String,
    body: String,
    attempts: f64,
    created: f64,
}

pub struct SqlStore {
    sql: SqlStorage,
    /// `seq` as last read or written: this store is the only writer, so a hot publish path
    /// reads it once per instance, not once per event.
    seq: std::cell::Cell<Option<u64>>,
    /// Whether the outbox table exists, once known.
    outbox: std::cell::Cell<Option<bool>>,
    /// Whether this channel was ever linked (the links tables exist), learnt with the first
    /// `seq` read: a channel never linked pays no query for it.
    linked: std::cell::Cell<Option<bool>>,
    /// Its links, once read (this store is their only writer).
    links: std::cell::RefCell<Option<Vec<Link>>>,
    grants: std::cell::Cell<Option<bool>>,
}

/// A one-column row (`SELECT ... AS value`), for this store and the directory's.
#[derive(Deserialize)]
pub struct Num {
    pub value: f64,
}

#[derive(Deserialize)]
pub struct Text {
    pub value: String,
}

#[derive(Deserialize)]
struct Row {
    seq: f64,
    key: String,
    id: String,
    event: String,
    data: String,
    ts: f64,
}

fn err(e: worker::Error) -> String {
    e.to_string()
}

fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::from(n as i64)
}

impl SqlStore {
    pub fn open(sql: SqlStorage) -> Result<SqlStore, String> {
        meter::run(&sql, SCHEMA, None).map_err(err)?;
        Ok(SqlStore {
            sql,
            seq: Default::default(),
            outbox: Default::default(),
            linked: Default::default(),
            links: Default::default(),
            grants: Default::default(),
        })
    }

    /// Whether this object ever stored a room (reads only: a read of an unused channel must
    /// create nothing, not even the schema).
    pub fn exists(sql: &SqlStorage) -> bool {
        has_table(sql, "history")
    }

    /// Whether the outbox exists (read once per instance; it is created by the first call).
    fn has_outbox(&self) -> bool {
        let known = self.outbox.get().unwrap_or_else(|| has_table(&self.sql, "outbox"));
        self.outbox.set(Some(known));
        known
    }

    /// The channel this object serves, remembered so alarms know it without a request.
    pub fn channel(&self) -> Option<String> {
        let rows: Vec<Text> = meter::rows(&self.sql, "SELECT value FROM meta WHERE key = 'channel'", None).ok()?;
        rows.into_iter().next().map(|r| r.value)
    }

    pub fn set_channel(&self, name: &str) -> Result<(), String> {
        meter::run(&self.sql, "INSERT OR IGNORE INTO meta (key, value) VALUES ('channel', ?)", vec![name.into()]).map(drop).map_err(err)
    }

    fn rows(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<Vec<StoredEvent>, String> {
        let rows: Vec<Row> = meter::rows(&self.sql, query, bindings).map_err(err)?;
        // An inbox's copy is stored under its source's key: the source comes back from it.
        Ok(rows
            .into_iter()
            .map(|r| StoredEvent {
                seq: r.seq as u64,
                source: links::source_of_key(&r.key),
                id: r.id,
                event: r.event,
                data: r.data,
                ts: r.ts as i64,
            })
            .collect())
    }

    /// The latest `seq`, and whether the channel was ever linked, in one statement (the one
    /// every instance makes anyway).
    fn probe(&self) -> Result<u64, String> {
        #[derive(Deserialize)]
        struct Probe {
            value: f64,
            linked: f64,
        }
        // Pruning always keeps the newest event, so it holds the latest seq.
        let rows: Vec<Probe> = meter::rows(
            &self.sql,
            "SELECT COALESCE(MAX(seq), 0) AS value,
                    EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'links') AS linked FROM history",
            None,
        )
        .map_err(err)?;
        let (seq, linked) = rows.first().map_or((0, false), |r| (r.value as u64, r.linked > 0.0));
        self.seq.set(Some(seq));
        self.linked.set(Some(linked));
        Ok(seq)
    }

    fn is_linked(&self) -> Result<bool, String> {
        if self.linked.get().is_none() {
            self.probe()?;
        }
        Ok(self.linked.get() == Some(true))
    }

    fn has_grants(&self) -> bool {
        let known = self.grants.get().unwrap_or_else(|| has_table(&self.sql, "grants"));
        self.grants.set(Some(known));
        known
    }

    fn run(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<u64, String> {
        Ok(meter::run(&self.sql, query, bindings).map_err(err)?.rows_written() as u64)
    }
}

/// Created by the first link, so channels never linked store no table for it.
impl LinkStore for SqlStore {
    fn links(&self) -> Result<Vec<Link>, String> {
        if !self.is_linked()? {
            return Ok(Vec::new());
        }
        if let Some(links) = self.links.borrow().as_ref() {
            return Ok(links.clone());
        }
        #[derive(Deserialize)]
        struct LinkRow {
            inbox: String,
            sent: f64,
            until: Option<f64>,
            attempts: f64,
            next_at: f64,
            failing_since: Option<f64>,
        }
        let rows: Vec<LinkRow> =
            meter::rows(&self.sql, "SELECT inbox, sent, until, attempts, next_at, failing_since FROM links ORDER BY rowid", None)
                .map_err(err)?;
        let links: Vec<Link> = rows
            .into_iter()
            .filter_map(|r| {
                Some(Link {
                    inbox: Channel::parse(&r.inbox).ok()?,
                    sent: r.sent as u64,
                    until: r.until.map(|u| u as u64),
                    attempts: r.attempts as u32,
                    next_at: r.next_at as i64,
                    failing_since: r.failing_since.map(|f| f as i64),
                })
            })
            .collect();
        *self.links.borrow_mut() = Some(links.clone());
        Ok(links)
    }

    fn put_link(&mut self, link: &Link) -> Result<(), String> {
        let mut links = self.links()?;
        if !self.is_linked()? {
            meter::run(&self.sql, LINKS_SCHEMA, None).map_err(err)?;
            self.linked.set(Some(true));
        }
        let opt = |v: Option<i64>| v.map_or(SqlStorageValue::Null, SqlStorageValue::from);
        self.run(
            "INSERT OR REPLACE INTO links (inbox, sent, until, attempts, next_at, failing_since) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                link.inbox.to_string().into(),
                int(link.sent),
                opt(link.until.map(|u| u as i64)),
                int(link.attempts as u64),
                link.next_at.into(),
                opt(link.failing_since),
            ],
        )?;
        match links.iter_mut().find(|l| l.inbox == link.inbox) {
            Some(held) => *held = link.clone(),
            None => links.push(link.clone()),
        }
        *self.links.borrow_mut() = Some(links);
        Ok(())
    }

    fn drop_link(&mut self, inbox: &Channel) -> Result<(), String> {
        if !self.is_linked()? {
            return Ok(());
        }
        self.run("DELETE FROM links WHERE inbox = ?", vec![inbox.to_string().into()])?;
        let mut links = self.links()?;
        links.retain(|l| &l.inbox != inbox);
        *self.links.borrow_mut() = Some(links);
        Ok(())
    }

    fn grants_put(&mut self, conn: &str, entries: &[String]) -> Result<(), String> {
        if !self.has_grants() {
            meter::run(&self.sql, GRANTS_SCHEMA, None).map_err(err)?;
            self.grants.set(Some(true));
        }
        let entries = serde_json::to_string(entries).map_err(|e| e.to_string())?;
        self.run("INSERT OR REPLACE INTO grants (conn, entries) VALUES (?, ?)", vec![conn.into(), entries.into()]).map(drop)
    }

    fn grants_of(&self, conn: &str) -> Result<Vec<String>, String> {
        if !self.has_grants() {
            return Ok(Vec::new());
        }
        let rows: Vec<Text> =
            meter::rows(&self.sql, "SELECT entries AS value FROM grants WHERE conn = ?", vec![conn.into()]).map_err(err)?;
        Ok(rows.first().and_then(|r| serde_json::from_str(&r.value).ok()).unwrap_or_default())
    }

    fn grants_drop(&mut self, conn: &str) -> Result<(), String> {
        if self.has_grants() {
            self.run("DELETE FROM grants WHERE conn = ?", vec![conn.into()])?;
        }
        Ok(())
    }
}

/// Created by the first call queued, so rooms that never queue one store no outbox table.
impl Outbox for SqlStore {
    fn outbox_put(&mut self, id: &str, body: &str, now: i64) -> Result<u64, String> {
        if !self.has_outbox() {
            meter::run(&self.sql, OUTBOX_SCHEMA, None).map_err(err)?;
            self.outbox.set(Some(true));
        }
        meter::run(
            &self.sql,
            "INSERT OR IGNORE INTO outbox (id, body, attempts, next_at, created) VALUES (?, ?, 0, ?, ?)",
            vec![id.into(), body.into(), now.into(), now.into()],
        )
        .map_err(err)?;
        let dropped = meter::run(
            &self.sql,
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY created DESC LIMIT -1 OFFSET ?)",
            vec![int(webhook::OUTBOX_MAX)],
        )
        .map_err(err)?
        .rows_written();
        Ok(dropped as u64)
    }

    fn outbox_due(&self, now: i64, limit: u64) -> Result<Vec<Queued>, String> {
        if !self.has_outbox() {
            return Ok(Vec::new());
        }
        let rows: Vec<OutboxRow> = meter::rows(
            &self.sql,
            "SELECT id, body, attempts, created FROM outbox WHERE next_at <= ? ORDER BY created LIMIT ?",
            vec![now.into(), int(limit)],
        )
        .map_err(err)?;
        Ok(rows.into_iter().map(|r| Queued { id: r.id, body: r.body, attempts: r.attempts as u32, created: r.created as i64 }).collect())
    }

    fn outbox_retry(&mut self, id: &str, attempts: u32, next_at: i64) -> Result<(), String> {
        meter::run(
            &self.sql,
            "UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?",
            vec![int(attempts as u64), next_at.into(), id.into()],
        )
        .map(drop)
        .map_err(err)
    }

    fn outbox_delete(&mut self, id: &str) -> Result<(), String> {
        meter::run(&self.sql, "DELETE FROM outbox WHERE id = ?", vec![id.into()]).map(drop).map_err(err)
    }

    fn outbox_next_due(&self) -> Result<Option<i64>, String> {
        if !self.has_outbox() {
            return Ok(None);
        }
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT next_at AS value FROM outbox ORDER BY next_at LIMIT 1", None).map_err(err)?;
        Ok(rows.first().map(|r| r.value as i64))
    }
}

impl Store for SqlStore {
    fn latest_seq(&self) -> Result<u64, String> {
        match self.seq.get() {
            Some(seq) => Ok(seq),
            None => self.probe(),
        }
    }

    /// Claim and append are one statement (the key is a unique column of the event's own
    /// row), so SQLite commits both or neither: an id can never be claimed with no event.
    fn append_unique(&mut self, key: &str, e: &StoredEvent) -> Result<Option<u64>, String> {
        let written = meter::run(
            &self.sql,
            "INSERT INTO history (seq, key, id, event, data, ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            vec![int(e.seq), key.into(), e.id.as_str().into(), e.event.as_str().into(), e.data.as_str().into(), e.ts.into()],
        )
        .map_err(err)?
        .rows_written();
        if written > 0 {
            self.seq.set(Some(e.seq));
            return Ok(None);
        }
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT seq AS value FROM history WHERE key = ?", vec![key.into()]).map_err(err)?;
        Ok(Some(rows.first().map_or(0, |r| r.value as u64)))
    }

    fn events_between(&self, after: u64, upto: u64) -> Result<Vec<StoredEvent>, String> {
        self.rows(
            "SELECT seq, key, id, event, data, ts FROM history WHERE seq > ? AND seq <= ? ORDER BY seq",
            vec![int(after), int(upto.min(i64::MAX as u64))],
        )
    }

    fn oldest_seq(&self) -> Result<Option<u64>, String> {
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT seq AS value FROM history ORDER BY seq LIMIT 1", None).map_err(err)?;
        Ok(rows.first().map(|r| r.value as u64))
    }

    fn prune_events(&mut self, below_seq: u64, before_ts: i64) -> Result<(), String> {
        meter::run(&self.sql, "DELETE FROM history WHERE seq < ? AND ts < ?", vec![int(below_seq), before_ts.into()]).map(drop).map_err(err)
    }

    fn sizes_after(&self, after: u64, count: usize) -> Result<Vec<(u64, usize)>, String> {
        #[derive(Deserialize)]
        struct Size {
            seq: f64,
            size: f64,
        }
        // Bytes, not characters: the bound is on frame bytes.
        let rows: Vec<Size> = meter::rows(
            &self.sql,
            "SELECT seq, length(CAST(data AS BLOB)) + length(CAST(id AS BLOB)) + length(CAST(event AS BLOB)) AS size
                 FROM history WHERE seq > ? ORDER BY seq DESC LIMIT ?",
            vec![int(after), int(count.min(i64::MAX as usize) as u64)],
        )
        .map_err(err)?;
        Ok(rows.into_iter().map(|r| (r.seq as u64, r.size as usize)).collect())
    }
}

/// Whether `name` is a table of this database (a read: creates nothing).
pub fn has_table(sql: &SqlStorage, name: &str) -> bool {
    let rows: Result<Vec<Text>, _> =
        meter::rows(sql, "SELECT name AS value FROM sqlite_master WHERE type = 'table' AND name = ?", vec![name.into()]);
    rows.is_ok_and(|rows| !rows.is_empty())
}
