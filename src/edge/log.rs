//! What the gateway tells its operator (docs/operations.md): one JSON object per log line,
//! with a fixed `event` name, a `level` and stable fields (Workers Logs indexes them), and,
//! when an Analytics Engine dataset is bound as `METRICS`, one data point per connect,
//! publish, delivery, webhook attempt and revoke (absent: nothing is written, nothing fails).
//! Callers pass channels, codes and counts: never a token, a secret, a signature, a query
//! string or chat text.

use std::cell::RefCell;

use serde_json::{json, Map, Value};
use worker::Env;

use super::js;
use super::runtime::{self, config};
use crate::protocol::channel::Channel;
use crate::protocol::coalesce::Coalescer;
use crate::protocol::config::Level;

/// One line: `event` and `level` first, then `fields` (an object), then `ts` (ms).
pub fn line(env: &Env, level: Level, event: &str, fields: Value) {
    if enabled(env, level) {
        write(level, event, fields);
    }
}

/// Whether lines of `level` are written (`LOG_LEVEL`): a hot path builds its fields only then.
/// Per-socket lines (a welcome, a close, a delivery) are `debug`: under `wrangler dev` a line
/// costs more CPU than the connect it reports (bench/README.md), and in production their
/// counts are the Analytics Engine's job.
pub fn enabled(env: &Env, level: Level) -> bool {
    level >= config(env).log_level
}

/// A line written before (or without) the settings: configuration problems.
pub fn write(level: Level, event: &str, fields: Value) {
    let mut out = Map::new();
    out.insert("event".into(), event.into());
    out.insert("level".into(), level.as_str().into());
    if let Value::Object(fields) = fields {
        out.extend(fields);
    }
    out.insert("ts".into(), runtime::now_ms().into());
    let text = Value::Object(out).to_string();
    match level {
        Level::Error => worker::console_error!("{text}"),
        Level::Warn => worker::console_warn!("{text}"),
        Level::Info | Level::Debug => worker::console_log!("{text}"),
    }
}

/// `kind`, `key` (for orders and inbox channels: the venue) and `channel` of a line.
pub fn channel(channel: &Channel) -> Value {
    json!({"kind": channel.kind().as_str(), "key": channel.key(), "channel": channel.to_string()})
}

/// `channel`'s fields plus `more`.
pub fn with(channel_: &Channel, more: Value) -> Value {
    let mut fields = channel(channel_);
    if let (Value::Object(fields), Value::Object(more)) = (&mut fields, more) {
        fields.extend(more);
    }
    fields
}

/// A kind of refused connect: the channel its path names (if any), its code and reason word.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Refusal {
    channel: Option<Channel>,
    code: u16,
    reason: &'static str,
}

thread_local! {
    /// This isolate's refusals not yet in a line (protocol/coalesce.rs).
    static REFUSALS: RefCell<Coalescer<Refusal>> = RefCell::new(Coalescer::default());
}

/// A refused connect's `connect` line (warn), with how many refusals it stands for
/// (`count`): in a flood, those of its kind within a second are one line
/// (protocol/coalesce.rs). `ms` is this refusal's.
pub fn refused(env: &Env, channel: Option<&Channel>, code: u16, reason: &'static str, ms: f64) {
    if !enabled(env, Level::Warn) {
        return;
    }
    let kind = Refusal { channel: channel.cloned(), code, reason };
    if let Some(count) = REFUSALS.with(|r| r.borrow_mut().line(&kind, runtime::now_ms())) {
        write(Level::Warn, "connect", refusal_fields(&kind, count, Some(ms)));
    }
}

/// The refusal lines whose second has passed, written as a request arrives (no timer).
pub fn flush_refusals() {
    let due = REFUSALS.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_empty() {
            Vec::new()
        } else {
            r.due(runtime::now_ms())
        }
    });
    for (kind, count) in due {
        write(Level::Warn, "connect", refusal_fields(&kind, count, None));
    }
}

fn refusal_fields(kind: &Refusal, count: u64, ms: Option<f64>) -> Value {
    let mut fields = json!({"outcome": "refused", "code": kind.code, "reason": kind.reason, "count": count});
    if let (Some(ms), Value::Object(f)) = (ms, &mut fields) {
        f.insert("ms".into(), ms.into());
    }
    match &kind.channel {
        Some(channel) => with(channel, fields),
        None => fields,
    }
}

/// Every 1011 and every failed object call, with where and why.
pub fn internal(env: &Env, at: Option<&Channel>, place: &str, reason: impl std::fmt::Display) {
    let more = json!({"where": place, "reason": reason.to_string()});
    line(
        env,
        Level::Error,
        "internal",
        match at {
            Some(c) => with(c, more),
            None => more,
        },
    );
}

/// A failed call that will be tried again (or made later): where and why, at `warn`.
pub fn warning(env: &Env, at: Option<&Channel>, place: &str, reason: impl std::fmt::Display) {
    let more = json!({"where": place, "reason": reason.to_string()});
    line(
        env,
        Level::Warn,
        "internal",
        match at {
            Some(c) => with(c, more),
            None => more,
        },
    );
}

/// One Analytics Engine data point (`index1` = `index`, blobs, doubles), when `METRICS` is bound.
pub fn point(env: &Env, index: &str, blobs: &[&str], doubles: &[f64]) {
    // Unbound (the default): nothing is built and nothing crosses into JS.
    if metrics_bound(env) {
        js::metric(env.as_ref(), index, blobs.iter().map(|b| b.to_string()).collect(), doubles.to_vec());
    }
}

thread_local! {
    /// Whether `METRICS` is bound, looked up once per isolate (bindings are fixed for its life).
    static METRICS_BOUND: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether a data point would be written: callers skip building one when not.
pub fn metrics_bound(env: &Env) -> bool {
    METRICS_BOUND.with(|bound| {
        *bound.get().get_or_insert_with(|| {
            worker::js_sys::Reflect::get(env.as_ref(), &"METRICS".into()).is_ok_and(|v| !v.is_undefined() && !v.is_null())
        })
    })
}
