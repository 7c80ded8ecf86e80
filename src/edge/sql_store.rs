//! The room's [`Store`] on the Durable Object's SQLite storage.
//!
//! SQLite in a Durable Object is synchronous and local: every `exec` of one handler runs
//! before the next event is delivered to the object, and writes made without an `await` in
//! between are committed together. That is what keeps `seq` gap-free and events in order.
//! Storage survives hibernation, eviction and restarts; memory does not.

use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

use super::meter;
use crate::protocol::frame::StoredEvent;
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
        Ok(SqlStore { sql, seq: Default::default(), outbox: Default::default() })
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
        Ok(rows.into_iter().map(|r| StoredEvent { seq: r.seq as u64, id: r.id, event: r.event, data: r.data, ts: r.ts as i64 }).collect())
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
        if let Some(seq) = self.seq.get() {
            return Ok(seq);
        }
        // Pruning always keeps the newest event, so it holds the latest seq.
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT COALESCE(MAX(seq), 0) AS value FROM history", None).map_err(err)?;
        let seq = rows.first().map_or(0, |r| r.value as u64);
        self.seq.set(Some(seq));
        Ok(seq)
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
            "SELECT seq, id, event, data, ts FROM history WHERE seq > ? AND seq <= ? ORDER BY seq",
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
