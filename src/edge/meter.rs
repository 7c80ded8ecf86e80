//! The opt-in usage meter (`METER=log`): one log line per invocation with what it puts on
//! the bill — which invocation it was, the SQLite rows it read and wrote (as the storage
//! API's cursors report them), and the object's stored bytes. The benchmark's cost scenario
//! sums these lines. Off by default: a line per invocation is noise in production.

use std::cell::Cell;

use serde::de::DeserializeOwned;
use worker::{Env, Result, SqlCursor, SqlStorage, SqlStorageValue, State};

use crate::protocol::channel::Channel;

thread_local! {
    /// Rows read and written since the last line. Invocations of one isolate may interleave
    /// at an await, so a line's share can be off; the sum over lines is exact.
    static ROWS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// Whether statements are counted: until the settings are read, yes; then only with
    /// `METER=log` (two calls into JS per statement otherwise spent for nothing).
    static ON: Cell<bool> = const { Cell::new(true) };
}

/// Set once the settings are read (runtime::config).
pub fn set_on(on: bool) {
    ON.with(|o| o.set(on));
}

fn count(cursor: &SqlCursor) {
    if !ON.with(Cell::get) {
        return;
    }
    ROWS.with(|r| {
        let (read, written) = r.get();
        r.set((read + cursor.rows_read(), written + cursor.rows_written()));
    });
}

/// A statement whose result rows are wanted.
pub fn rows<T: DeserializeOwned>(sql: &SqlStorage, query: &str, bindings: impl Into<Option<Vec<SqlStorageValue>>>) -> Result<Vec<T>> {
    let cursor = sql.exec(query, bindings)?;
    let rows = cursor.to_array()?;
    count(&cursor);
    Ok(rows)
}

/// A statement run for its effect (it runs to completion when executed).
pub fn run(sql: &SqlStorage, query: &str, bindings: impl Into<Option<Vec<SqlStorageValue>>>) -> Result<SqlCursor> {
    let cursor = sql.exec(query, bindings)?;
    count(&cursor);
    Ok(cursor)
}

/// Ends an invocation: logs its line when metering is on. `stored` gives the object's id and
/// its SQLite database size (objects only); it is asked only then, off the hot path.
pub fn line(env: &Env, what: &str, stored: impl FnOnce() -> Option<(String, usize)>) {
    let (read, written) = ROWS.with(|r| r.replace((0, 0)));
    if !super::runtime::config(env).meter {
        return;
    }
    let line = match stored() {
        Some((id, bytes)) => serde_json::json!({"what": what, "rows_read": read, "rows_written": written, "object": id, "bytes": bytes}),
        None => serde_json::json!({"what": what, "rows_read": read, "rows_written": written}),
    };
    worker::console_log!("foyer-meter {line}");
}

/// Ends an object's invocation ([`line`], with the object's id and stored bytes).
pub fn object(env: &Env, state: &State, what: &str) {
    line(env, what, || Some((state.id().to_string(), state.storage().sql().database_size())));
}

/// Ends an object's RPC invocation (entry.js): a failure is logged where it happened
/// (`place`, in channel `at`) and rejects the caller's promise; either way the invocation
/// is metered.
pub fn rpc_answer(
    env: &Env,
    state: &State,
    at: Option<&Channel>,
    place: &str,
    reply: Result<String>,
) -> std::result::Result<String, wasm_bindgen::JsValue> {
    if let Err(e) = &reply {
        super::log::internal(env, at, place, e);
    }
    object(env, state, "object");
    reply.map_err(wasm_bindgen::JsValue::from)
}
