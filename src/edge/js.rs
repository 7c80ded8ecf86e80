//! Rust bindings to the shell's JavaScript hot paths (`hot.js`, next to this file, bundled
//! by worker-build; unit-tested in tests/hot.test.mjs). Rust decides; JS moves bytes where
//! workers-rs' general wrappers cost more than the work (see `hot.js`).

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::js_sys::Promise;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Error, Result};

#[wasm_bindgen(module = "/src/edge/hot.js")]
extern "C" {
    /// The object's open sockets, as one JS array (no per-socket handle in wasm).
    pub fn sockets(state: &JsValue) -> JsValue;
    /// How many sockets carry `tag` (without a wasm handle for each).
    pub fn count_tagged(state: &JsValue, tag: &str) -> u32;
    /// Open sockets of the object (with `tag`, or all with `""`) other than `leaving`.
    pub fn count_open(state: &JsValue, tag: &str, leaving: &JsValue) -> u32;
    fn read_capped(request: &worker::web_sys::Request, max: u32) -> Promise;
    /// Sends one frame to each socket of `sockets`; returns how many took it. The frame
    /// crosses into JS once, and every socket gets the same string.
    pub fn send_all(sockets: &JsValue, frame: &str) -> u32;
    /// A socket accepted and closed at once with `code` (subprotocol `""` selects none).
    pub fn refuse(code: u16, reason: &str, subprotocol: &str) -> worker::web_sys::Response;
    /// The 101 answer handing `client` (one end of a socket pair) to the caller.
    pub fn upgraded(client: &worker::web_sys::WebSocket, subprotocol: &str) -> worker::web_sys::Response;
    /// The headers a socket's handshake reads, in one crossing: `Upgrade`, `Origin`,
    /// `Sec-WebSocket-Protocol` and `CF-Connecting-IP`, joined by `\n`, an absent one `\0`.
    pub fn handshake_headers(request: &worker::web_sys::Request) -> String;
    /// A JSON answer between objects: `text` as is, with `status`.
    pub fn json_text(text: &str, status: u16) -> worker::web_sys::Response;
    fn post(env: &JsValue, binding: &str, name: &str, path: &str, body: &str, within_ms: f64) -> Promise;
    #[wasm_bindgen(js_name = call_method)]
    fn call_method_js(env: &JsValue, binding: &str, name: &str, method: &str, body: &str) -> Promise;
    fn open_socket(env: &JsValue, binding: &str, name: &str, ticket_header: &str, ticket: &str) -> Promise;
    /// One Analytics Engine data point to the `METRICS` binding; nothing without it, and
    /// never an error (metrics must not fail a request).
    pub fn metric(env: &JsValue, index: &str, blobs: Vec<String>, doubles: Vec<f64>);
}

/// A Durable Object: its namespace's binding and its name (from which its id derives).
pub struct Object {
    pub binding: &'static str,
    pub name: String,
}

/// The body of `request`, or `None` when it exceeds `max` bytes (counted as it arrives).
pub async fn body_capped(request: &worker::web_sys::Request, max: usize) -> Result<Option<Vec<u8>>> {
    let bytes = JsFuture::from(read_capped(request, max as u32)).await.map_err(js_error)?;
    if bytes.is_null() {
        return Ok(None);
    }
    Ok(Some(worker::js_sys::Uint8Array::new(&bytes).to_vec()))
}

/// A JSON request to a Durable Object, answered with JSON (200, or an error).
pub async fn call<B: serde::Serialize, T: serde::de::DeserializeOwned>(env: &Env, to: Object, path: &str, body: &B) -> Result<T> {
    call_within(env, to, path, body, 0).await
}

/// [`call`], failed when not answered within `within_ms` (0: no bound).
pub async fn call_within<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    env: &Env,
    to: Object,
    path: &str,
    body: &B,
    within_ms: i64,
) -> Result<T> {
    let body = serde_json::to_string(body)?;
    json_answer(post(env.as_ref(), to.binding, &to.name, path, &body, within_ms as f64)).await
}

/// An object's `method` over RPC (entry.js: a room's `publish` and `forward`, a directory
/// shard's `joined`), answered with JSON.
pub async fn call_method<B: serde::Serialize, T: serde::de::DeserializeOwned>(env: &Env, to: Object, method: &str, body: &B) -> Result<T> {
    let body = serde_json::to_string(body)?;
    json_answer(call_method_js(env.as_ref(), to.binding, &to.name, method, &body)).await
}

/// The JSON text an object's promise resolves to, parsed.
async fn json_answer<T: serde::de::DeserializeOwned>(promise: Promise) -> Result<T> {
    let text = JsFuture::from(promise).await.map_err(js_error)?;
    let text = text.as_string().ok_or_else(|| Error::from("object answered a non-text body"))?;
    // serde_json, not `.json()`: event data stays raw JSON text end to end.
    Ok(serde_json::from_str(&text)?)
}

/// The body of a request between objects (small JSON), as text.
pub async fn text(request: &worker::web_sys::Request) -> Result<String> {
    let text = JsFuture::from(request.text().map_err(js_error)?).await.map_err(js_error)?;
    text.as_string().ok_or_else(|| Error::from("a body that is not text"))
}

/// A JSON answer (200) between objects, serialized once, with no conversion on the way out.
pub fn json<T: serde::Serialize>(value: &T) -> Result<worker::web_sys::Response> {
    Ok(json_text(&serde_json::to_string(value)?, 200))
}

/// Hands a verified socket to its room: the promise of the room's answer (101 with the
/// socket), returned to the client as is. Not awaited here: the Worker has nothing left to
/// do with it (a failed call answers 500, hot.js).
pub fn connect_room(env: &Env, room: Object, ticket_header: &str, ticket: &str) -> Promise {
    open_socket(env.as_ref(), room.binding, &room.name, ticket_header, ticket)
}

/// An invocation's answer, run until its first wait. Most answers never wait (a room's
/// connect, a socket's departure): those return as they are, with no promise, no task and no
/// microtask (a promise and a task per call cost 46 µs a connect in a profile, workerd's
/// `queueMicrotask`, which the futures executor schedules each task with, most of it:
/// bench/README.md). An answer that must wait becomes a promise; an error, a rejected one.
pub fn answer_soon<F>(answer: F) -> JsValue
where
    F: std::future::Future<Output = std::result::Result<JsValue, JsValue>> + 'static,
{
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};

    /// Wakes whichever task polls the answer after its first poll: a future may keep the
    /// first poll's waker (workers-rs' `Delay` does), and that poll had no task yet.
    struct Forward(Mutex<Option<Waker>>);
    impl Wake for Forward {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let task = self.0.lock().ok().and_then(|task| task.clone());
            if let Some(task) = task {
                task.wake();
            }
        }
    }

    let forward = Arc::new(Forward(Mutex::new(None)));
    let first = Waker::from(forward.clone());
    let mut answer = Box::pin(answer);
    match answer.as_mut().poll(&mut Context::from_waker(&first)) {
        Poll::Ready(Ok(value)) => value,
        Poll::Ready(Err(error)) => Promise::reject(&error).into(),
        Poll::Pending => worker::wasm_bindgen_futures::future_to_promise(std::future::poll_fn(move |cx| {
            if let Ok(mut task) = forward.0.lock() {
                *task = Some(cx.waker().clone());
            }
            answer.as_mut().poll(cx)
        }))
        .into(),
    }
}

fn js_error(e: JsValue) -> Error {
    Error::from(e.as_string().or_else(|| worker::js_sys::Error::from(e).message().as_string()).unwrap_or_else(|| "JavaScript error".into()))
}
