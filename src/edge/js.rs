//! The hot paths written in JavaScript, where workers-rs' general wrappers cost more than
//! the work: every crossing between wasm and JS, every `Request`/`Response` conversion and
//! every body read through a Rust stream adapter is paid per socket or per call. Found with
//! a CPU profile of the benchmark (README, "Benchmark"); everything here is tiny on purpose.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::js_sys::Promise;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Error, Result};

#[wasm_bindgen(inline_js = r#"
    export function sockets(state) { return state.getWebSockets(); }

    export function send_all(sockets, frame) {
        let sent = 0;
        for (const ws of sockets) {
            try { ws.send(frame); sent++; } catch (_) { /* closed or closing: not counted */ }
        }
        return sent;
    }

    export async function post(stub, url, body) {
        const response = await stub.fetch(url, { method: "POST", body });
        const text = await response.text();
        if (response.status !== 200) throw new Error(`object answered ${response.status} on ${url}`);
        return text;
    }

    export function open_socket(stub, ticket_header, ticket) {
        return stub.fetch("https://room/connect", { headers: { Upgrade: "websocket", [ticket_header]: ticket } });
    }
"#)]
extern "C" {
    /// The object's open sockets, as one JS array (no per-socket handle in wasm).
    pub fn sockets(state: &JsValue) -> JsValue;
    /// Sends one frame to each socket of `sockets`; returns how many took it. The frame
    /// crosses into JS once, and every socket gets the same string.
    pub fn send_all(sockets: &JsValue, frame: &str) -> u32;
    fn post(stub: &JsValue, url: &str, body: &str) -> Promise;
    fn open_socket(stub: &JsValue, ticket_header: &str, ticket: &str) -> Promise;
}

/// POSTs a JSON body to a Durable Object and returns its 200 answer's body.
pub async fn call_object(stub: worker::Stub, path: &str, body: &str) -> Result<String> {
    let stub: JsValue = stub.into_rpc();
    let text = JsFuture::from(post(&stub, &format!("https://object{path}"), body)).await.map_err(js_error)?;
    text.as_string().ok_or_else(|| Error::from("object answered a non-text body"))
}

/// Hands a verified socket to its room: the room's answer (101 with the socket) is returned
/// to the client as is.
pub async fn connect_room(stub: worker::Stub, ticket_header: &str, ticket: &str) -> Result<worker::Response> {
    use wasm_bindgen::JsCast;
    let stub: JsValue = stub.into_rpc();
    let response = JsFuture::from(open_socket(&stub, ticket_header, ticket)).await.map_err(js_error)?;
    Ok(response.dyn_into::<worker::web_sys::Response>()?.into())
}

fn js_error(e: JsValue) -> Error {
    Error::from(e.as_string().or_else(|| worker::js_sys::Error::from(e).message().as_string()).unwrap_or_else(|| "JavaScript error".into()))
}
