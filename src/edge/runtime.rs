//! Small bindings to the platform: settings, clock, randomness, JSON responses, and the
//! addresses of the Durable Objects.

use std::rc::Rc;

use worker::{Env, Response, Result};

use crate::protocol::channel::{Channel, Kind};
use crate::protocol::config::{Config, Level};
use crate::protocol::wire::SUBPROTOCOL;

/// The deployed build id, stamped at compile time by the asset build step.
pub const BUILD_ID: &str = match option_env!("FOYER_BUILD_ID") {
    Some(id) => id,
    None => "dev",
};

thread_local! {
    // Settings cannot change within an isolate (a new deploy or secret starts new isolates),
    // so they are parsed once and the JWKS is not decoded on every connect.
    static CONFIG: std::cell::OnceCell<Rc<Config>> = const { std::cell::OnceCell::new() };
}

/// The deployment's settings. Problems are logged once, when first read.
pub fn config(env: &Env) -> Rc<Config> {
    CONFIG.with(|cell| cell.get_or_init(|| load(env)).clone())
}

/// The first read, kept out of `config`: every request calls that, so V8 optimizes it, and
/// with this inlined it would compile the whole settings parse that runs once (10 KB of wasm;
/// bench/README.md, "What V8 optimizes over a first storm").
#[cold]
#[inline(never)]
fn load(env: &Env) -> Rc<Config> {
    // The token keys load with the configuration; their curves must be ready first.
    super::crypto::install();
    let config = Config::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()));
    super::meter::set_on(config.meter);
    let problem = |text: String| super::log::write(Level::Error, "config", serde_json::json!({ "problem": text }));
    if let Err(reason) = &config.tokens {
        problem(format!("sockets are refused: {reason}"));
    }
    if config.publish_secrets.is_empty() {
        problem("/publish, /links, /revoke and reads are refused: PUBLISH_SECRETS is not set".into());
    }
    for p in &config.problems {
        problem(p.clone());
    }
    Rc::new(config)
}

/// The clock, without building a JS `Date` object each time (`Date.now()`).
pub fn now_ms() -> i64 {
    worker::js_sys::Date::now() as i64
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// A random connection id (64 bits, hex).
/// Drawn from a pool of random bytes filled 32 ids at a time: each fill is a call into the
/// runtime's `crypto.getRandomValues`, which cost more than the rest of making an id.
pub fn random_id() -> String {
    thread_local! {
        static POOL: std::cell::RefCell<([u8; 256], usize)> = const { std::cell::RefCell::new(([0; 256], 256)) };
    }
    let bytes = POOL.with(|pool| {
        let (bytes, used) = &mut *pool.borrow_mut();
        if *used + 8 > bytes.len() {
            // On failure an id is still unique enough within a room: fall back to the clock.
            if getrandom::getrandom(bytes).is_err() {
                return (now_ms() as u64).to_be_bytes();
            }
            *used = 0;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[*used..*used + 8]);
        *used += 8;
        id
    });
    crate::protocol::signature::hex(&bytes)
}

/// `{"error": code, "message": ...}` with a status.
pub fn json_error(status: u16, code: &str, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({"error": code, "message": message}))?.with_status(status))
}

/// Accepts the socket and closes it at once: a browser sees close codes, never HTTP statuses.
pub fn accept_and_close(code: u16, reason: &str, offered_subprotocol: bool) -> worker::web_sys::Response {
    // Without the subprotocol the browser fails the handshake and never sees the code.
    super::js::refuse(code, reason, if offered_subprotocol { SUBPROTOCOL } else { "" })
}

/// The Durable Object of a channel: one class (binding) per kind, one object per channel,
/// named by the channel's `KIND:KEY`.
pub fn room(channel: &Channel) -> super::js::Object {
    let binding = match channel.kind() {
        Kind::Orders => "ORDERS",
        Kind::Payment => "PAYMENT",
        Kind::Chat => "CHAT",
        Kind::Inbox => "INBOX",
    };
    super::js::Object { binding, name: channel.to_string() }
}

/// A directory shard by name.
pub fn shard(name: &str) -> super::js::Object {
    super::js::Object { binding: "DIRECTORY", name: name.to_owned() }
}
