//! The hot paths written in JavaScript, where workers-rs' general wrappers cost more than
//! the work: every crossing between wasm and JS, every `Request`/`Response` conversion and
//! every body read through a Rust stream adapter is paid per socket or per call. Found with
//! a CPU profile of the benchmark (README, "Benchmark"); everything here is tiny on purpose.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::js_sys::Promise;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Error, Result};

#[wasm_bindgen(inline_js = r#"
    export function sockets(state) { return state.getWebSockets(); }

    export function count_tagged(state, tag) { return state.getWebSockets(tag).length; }

    // Sockets still open (a socket being closed is CLOSING, then CLOSED).
    export function count_open(state, tag) {
        let open = 0;
        for (const ws of tag ? state.getWebSockets(tag) : state.getWebSockets()) if (ws.readyState === 1) open++;
        return open;
    }

    // A body read with a byte cap that holds while it arrives: a chunked body (no
    // Content-Length) is cut off at the limit, never buffered whole. null: over the limit.
    export async function read_capped(request, max) {
        if (!request.body) return new Uint8Array(0);
        const reader = request.body.getReader();
        const chunks = [];
        let size = 0;
        for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            size += value.byteLength;
            if (size > max) {
                reader.releaseLock();
                return null;
            }
            chunks.push(value);
        }
        const body = new Uint8Array(size);
        let at = 0;
        for (const chunk of chunks) {
            body.set(chunk, at);
            at += chunk.byteLength;
        }
        return body;
    }

    export function send_all(sockets, frame) {
        let sent = 0;
        for (const ws of sockets) {
            try { ws.send(frame); sent++; } catch (_) { /* closed or closing: not counted */ }
        }
        return sent;
    }

    function stub(env, binding, name) {
        const namespace = env[binding];
        return namespace.get(namespace.idFromName(name));
    }

    export async function post(env, binding, name, url, body) {
        const response = await stub(env, binding, name).fetch(url, { method: "POST", body });
        const text = await response.text();
        if (response.status !== 200) throw new Error(`object answered ${response.status} on ${url}`);
        return text;
    }

    export function refuse(code, reason, subprotocol) {
        const pair = new WebSocketPair();
        pair[1].accept();
        pair[1].close(code, reason);
        const headers = subprotocol ? { "Sec-WebSocket-Protocol": subprotocol } : {};
        return new Response(null, { status: 101, webSocket: pair[0], headers });
    }

    // Keeps the object alive until `promise` settles (work after a response was returned).
    export function wait_until(state, promise) {
        try { state.waitUntil(promise); } catch (_) { /* the promise still runs */ }
    }

    export function open_socket(env, binding, name, ticket_header, ticket) {
        const headers = { Upgrade: "websocket", [ticket_header]: ticket };
        return stub(env, binding, name).fetch("https://room/connect", { headers });
    }
"#)]
extern "C" {
    /// The object's open sockets, as one JS array (no per-socket handle in wasm).
    pub fn sockets(state: &JsValue) -> JsValue;
    /// How many sockets carry `tag` (without a wasm handle for each).
    pub fn count_tagged(state: &JsValue, tag: &str) -> u32;
    /// Open sockets of the object (with `tag`, or all with `""`).
    pub fn count_open(state: &JsValue, tag: &str) -> u32;
    fn read_capped(request: &worker::web_sys::Request, max: u32) -> Promise;
    /// Sends one frame to each socket of `sockets`; returns how many took it. The frame
    /// crosses into JS once, and every socket gets the same string.
    pub fn send_all(sockets: &JsValue, frame: &str) -> u32;
    /// A socket accepted and closed at once with `code` (subprotocol `""` selects none).
    pub fn refuse(code: u16, reason: &str, subprotocol: &str) -> worker::web_sys::Response;
    fn post(env: &JsValue, binding: &str, name: &str, url: &str, body: &str) -> Promise;
    fn open_socket(env: &JsValue, binding: &str, name: &str, ticket_header: &str, ticket: &str) -> Promise;
    #[wasm_bindgen(js_name = wait_until)]
    fn keep_alive(state: &JsValue, promise: &Promise);
}

/// Runs `task` after the current response, with the object kept alive until it ends.
pub fn wait_until(state: &JsValue, task: impl std::future::Future<Output = ()> + 'static) {
    let promise = worker::wasm_bindgen_futures::future_to_promise(async move {
        task.await;
        Ok(JsValue::UNDEFINED)
    });
    keep_alive(state, &promise);
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
    let body = serde_json::to_string(body)?;
    let promise = post(env.as_ref(), to.binding, &to.name, &format!("https://object{path}"), &body);
    let text = JsFuture::from(promise).await.map_err(js_error)?;
    let text = text.as_string().ok_or_else(|| Error::from("object answered a non-text body"))?;
    // serde_json, not `.json()`: event data stays raw JSON text end to end.
    Ok(serde_json::from_str(&text)?)
}

/// Hands a verified socket to its room: the room's answer (101 with the socket) is returned
/// to the client as is, never converted.
pub async fn connect_room(env: &Env, room: Object, ticket_header: &str, ticket: &str) -> Result<worker::web_sys::Response> {
    use wasm_bindgen::JsCast;
    let promise = open_socket(env.as_ref(), room.binding, &room.name, ticket_header, ticket);
    let response = JsFuture::from(promise).await.map_err(js_error)?;
    Ok(response.dyn_into::<worker::web_sys::Response>()?)
}

fn js_error(e: JsValue) -> Error {
    Error::from(e.as_string().or_else(|| worker::js_sys::Error::from(e).message().as_string()).unwrap_or_else(|| "JavaScript error".into()))
}
