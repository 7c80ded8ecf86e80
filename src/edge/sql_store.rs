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
use crate::protocol::webhook;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS dedupe_by_ts ON dedupe (ts);
CREATE TABLE IF NOT EXISTS outbox (
  id TEXT PRIMARY KEY, body TEXT NOT NULL, attempts INTEGER NOT NULL, next_at INTEGER NOT NULL, created INTEGER NOT NULL);
";

/// A pending webhook call.
#[derive(Deserialize)]
pub struct OutboxRow {
    pub id: String,
    pub body: String,
    pub attempts: f64,
    pub created: f64,
}

pub struct SqlStore {
    sql: SqlStorage,
    /// `seq` as last read or written: this store is the only writer, so a hot publish path
    /// reads it once per instance, not once per event.
    seq: std::cell::Cell<Option<u64>>,
}

/// A one-column row (`SELECT ... AS value`), for this store and the Principal's.
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
        Ok(SqlStore { sql, seq: Default::default() })
    }

    /// Whether this object ever stored a room (reads only: a read of an unused channel must
    /// create nothing, not even the schema).
    pub fn exists(sql: &SqlStorage) -> bool {
        let rows: Result<Vec<Text>, _> =
            meter::rows(sql, "SELECT name AS value FROM sqlite_master WHERE type = 'table' AND name = 'events'", None);
        rows.is_ok_and(|rows| !rows.is_empty())
    }

    /// The channel this object serves, remembered so alarms know it without a request.
    pub fn channel(&self) -> Option<String> {
        let rows: Vec<Text> = meter::rows(&self.sql, "SELECT value FROM meta WHERE key = 'channel'", None).ok()?;
        rows.into_iter().next().map(|r| r.value)
    }

    pub fn set_channel(&self, name: &str) -> Result<(), String> {
        meter::run(&self.sql, "INSERT OR IGNORE INTO meta (key, value) VALUES ('channel', ?)", vec![name.into()]).map(drop).map_err(err)
    }

    /// Queues a webhook call, due now. The same id is queued once; beyond
    /// [`webhook::OUTBOX_MAX`] the oldest calls are dropped.
    pub fn outbox_put(&self, id: &str, body: &str, now: i64) -> Result<(), String> {
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
        if dropped > 0 {
            worker::console_error!("webhook outbox full: dropped {dropped} oldest messages");
        }
        Ok(())
    }

    pub fn outbox_due(&self, now: i64, limit: u64) -> Result<Vec<OutboxRow>, String> {
        meter::rows(
            &self.sql,
            "SELECT id, body, attempts, created FROM outbox WHERE next_at <= ? ORDER BY created LIMIT ?",
            vec![now.into(), int(limit)],
        )
        .map_err(err)
    }

    pub fn outbox_retry(&self, id: &str, attempts: u32, next_at: i64) -> Result<(), String> {
        meter::run(
            &self.sql,
            "UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?",
            vec![int(attempts as u64), next_at.into(), id.into()],
        )
        .map(drop)
        .map_err(err)
    }

    pub fn outbox_delete(&self, id: &str) -> Result<(), String> {
        meter::run(&self.sql, "DELETE FROM outbox WHERE id = ?", vec![id.into()]).map(drop).map_err(err)
    }

    /// When the next webhook attempt is due, if any is pending.
    pub fn outbox_next_due(&self) -> Result<Option<i64>, String> {
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT next_at AS value FROM outbox ORDER BY next_at LIMIT 1", None).map_err(err)?;
        Ok(rows.first().map(|r| r.value as i64))
    }

    fn rows(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<Vec<StoredEvent>, String> {
        let rows: Vec<Row> = meter::rows(&self.sql, query, bindings).map_err(err)?;
        Ok(rows.into_iter().map(|r| StoredEvent { seq: r.seq as u64, id: r.id, event: r.event, data: r.data, ts: r.ts as i64 }).collect())
    }
}

impl Store for SqlStore {
    fn latest_seq(&self) -> Result<u64, String> {
        if let Some(seq) = self.seq.get() {
            return Ok(seq);
        }
        // Pruning always keeps the newest event, so it holds the latest seq. (Rooms written
        // before this also kept it in `meta`.)
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT COALESCE(MAX(v), 0) AS value FROM (SELECT MAX(seq) AS v FROM events UNION ALL SELECT value FROM meta WHERE key = 'seq')",
                None,)
            .map_err(err)?;
        let seq = rows.first().map_or(0, |r| r.value as u64);
        self.seq.set(Some(seq));
        Ok(seq)
    }

    fn append(&mut self, e: &StoredEvent) -> Result<(), String> {
        meter::run(
            &self.sql,
            "INSERT INTO events (seq, id, event, data, ts) VALUES (?, ?, ?, ?, ?)",
            vec![int(e.seq), e.id.as_str().into(), e.event.as_str().into(), e.data.as_str().into(), e.ts.into()],
        )
        .map_err(err)?;
        self.seq.set(Some(e.seq));
        Ok(())
    }

    fn events_between(&self, after: u64, upto: u64) -> Result<Vec<StoredEvent>, String> {
        self.rows(
            "SELECT seq, id, event, data, ts FROM events WHERE seq > ? AND seq <= ? ORDER BY seq",
            vec![int(after), int(upto.min(i64::MAX as u64))],
        )
    }

    fn oldest_seq(&self) -> Result<Option<u64>, String> {
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT seq AS value FROM events ORDER BY seq LIMIT 1", None).map_err(err)?;
        Ok(rows.first().map(|r| r.value as u64))
    }

    fn prune_events(&mut self, below_seq: u64, before_ts: i64) -> Result<(), String> {
        meter::run(&self.sql, "DELETE FROM events WHERE seq < ? AND ts < ?", vec![int(below_seq), before_ts.into()]).map(drop).map_err(err)
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
                 FROM events WHERE seq > ? ORDER BY seq DESC LIMIT ?",
            vec![int(after), int(count.min(i64::MAX as usize) as u64)],
        )
        .map_err(err)?;
        Ok(rows.into_iter().map(|r| (r.seq as u64, r.size as usize)).collect())
    }

    fn dedupe_claim(&mut self, key: &str, seq: u64, ts: i64) -> Result<Option<u64>, String> {
        let cursor =
            meter::run(&self.sql, "INSERT OR IGNORE INTO dedupe (key, seq, ts) VALUES (?, ?, ?)", vec![key.into(), int(seq), ts.into()])
                .map_err(err)?;
        if cursor.rows_written() > 0 {
            return Ok(None);
        }
        let rows: Vec<Num> = meter::rows(&self.sql, "SELECT seq AS value FROM dedupe WHERE key = ?", vec![key.into()]).map_err(err)?;
        Ok(Some(rows.first().map_or(0, |r| r.value as u64)))
    }

    fn prune_dedupe(&mut self, before_ts: i64) -> Result<(), String> {
        meter::run(&self.sql, "DELETE FROM dedupe WHERE ts < ?", vec![before_ts.into()]).map(drop).map_err(err)
    }
}
