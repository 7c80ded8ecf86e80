//! The Worker: the stateless front door. It runs every check that needs no state (path,
//! upgrade, origin, token, grant, publish signature and body) before any Durable Object is
//! touched, so a refused request never creates or wakes an object.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::future::join_all;
use futures::FutureExt;
use serde::Serialize;
use wasm_bindgen::prelude::{wasm_bindgen, JsValue};
use worker::{event, web_sys, Env, Request, Response, Result};

use super::js;
use super::log;
use super::messages::{LinkReply, LinkRequest, PublishReply, PublishRequest, ReadQuery, RevokeOrder, RevokeReply, Ticket, TICKET_HEADER};
use super::meter;
use super::runtime::{self, config, json_error, BUILD_ID};
use crate::protocol::channel::Channel;
use crate::protocol::config::Level;
use crate::protocol::handshake::{self, AuthFailures, ConnectRequest, Guard, Verdict};
use crate::protocol::links;
use crate::protocol::publish::{self, BodyError, MAX_BODY_BYTES};
use crate::protocol::reading::{self, Read};
use crate::protocol::revocation;
use crate::protocol::room::{Member, Verified};
use crate::protocol::signature;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The Worker's entry (what `#[event(fetch)]` would export, without its task): a socket's
/// connect runs to its end here and returns the room's promise or a refusal as they are, so
/// the hot path makes no Rust future, promise or microtask of its own (js::answer_soon).
/// The runtime's own request and response types, unconverted: a socket's connect path makes
/// no copy of either (see Benchmark in the README); other paths convert.
#[wasm_bindgen]
pub fn fetch(req: web_sys::Request, env: Env, _ctx: worker::worker_sys::Context) -> JsValue {
    log::flush_refusals();
    let url = req.url();
    let (origin, path, query) = handshake::split_url(&url);
    if !(path == "/ws" || path.starts_with("/ws/")) {
        let (path, query) = (path.to_owned(), query.to_owned());
        return js::answer_soon(async move {
            let answer = endpoint(req, &env, &path, &query).await;
            meter::line(&env, "worker", || None);
            Ok(answered(answer))
        });
    }
    let answer = connect(&req, origin, path, &handshake::query_pairs(query), &env);
    meter::line(&env, "worker", || None);
    answered(answer)
}

/// An answer, or the 500 that `#[event(fetch)]` gives for an error (logged).
fn answered<T: Into<JsValue>>(answer: Result<T>) -> JsValue {
    match answer {
        Ok(answer) => answer.into(),
        Err(e) => {
            worker::console_error!("{e}");
            match Response::error("INTERNAL SERVER ERROR", 500) {
                Ok(response) => web_sys::Response::from(response).into(),
                Err(_) => JsValue::UNDEFINED,
            }
        }
    }
}

/// Every request but a socket's. Each endpoint's future is boxed: awaited in place, every
/// handler's state machine would be inlined into this one function (20 KB of wasm), and V8
/// compiles a hot function whole (bench/README.md, "Where the first storm's extra CPU goes").
async fn endpoint(req: web_sys::Request, env: &Env, path: &str, query: &str) -> Result<web_sys::Response> {
    match path {
        "/healthz" => Ok(Response::from_json(&serde_json::json!({"ok": true, "build": BUILD_ID}))?.into()),
        "/publish" => logged(env, "publish", &[200], publish(&req, env).boxed_local()).await,
        // A revoke's 503 (`pending`) is logged with its counts where it is decided.
        "/revoke" => logged(env, "revoke", &[200, 503], async { revoke(&req, env).await.map(Into::into) }.boxed_local()).await,
        "/links" => logged(env, "links", &[200], async { link(&req, env).await.map(Into::into) }.boxed_local()).await,
        p if p.starts_with("/channels/") => Ok(read_channel(&req, p, query, env).boxed_local().await?.into()),
        // Everything else is a static asset (the platform serves those before the Worker runs).
        _ => Ok(env.assets("ASSETS")?.fetch_request(Request::from(req)).boxed_local().await?.into()),
    }
}

/// A socket's connect: every check, then the room's promise (js::connect_room) or a refusal.
fn connect(req: &web_sys::Request, own_origin: &str, path: &str, query: &[(String, String)], env: &Env) -> Result<JsValue> {
    let headers = js::handshake_headers(req);
    let mut headers = headers.split('\n').map(|v| (v != "\0").then_some(v));
    let mut header = || headers.next().flatten();
    let (upgrade, origin, protocols, client) = (header(), header(), header(), header());
    let upgrade = upgrade.is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let config = config(env);
    let request = ConnectRequest { path, query, upgrade, origin, own_origin, protocols };
    let now_ms = runtime::now_ms();
    let now = now_ms / 1000;
    let verdict = match config.auth_failures_per_minute {
        None => handshake::check(&request, &config, now),
        Some(limit) => {
            // Guesses are counted per client address (set by Cloudflare's edge).
            let client = client.unwrap_or("unknown");
            AUTH_FAILURES.with(|f| {
                let guard = Guard { failures: &mut f.borrow_mut(), client, limit };
                handshake::check_guarded(&request, &config, now, Some(guard))
            })
        }
    };
    match verdict {
        Verdict::Http(status, message) => {
            refused(env, path, status, now_ms);
            Ok(web_sys::Response::from(json_error(status, "handshake", message)?).into())
        }
        Verdict::Close { code, reason, offered_subprotocol } => {
            refused(env, path, code, now_ms);
            Ok(runtime::accept_and_close(code, reason, offered_subprotocol).into())
        }
        Verdict::Admit(admitted) => {
            // The room checks revocation (from what it knows, or with the directory) and
            // builds its member: see protocol/revocation.rs.
            let mut verified = Verified::new(&admitted.claims, &admitted.channel);
            let answers = std::mem::take(&mut verified.answers);
            let ticket = Ticket {
                member: Member::admit(String::new(), verified),
                answers,
                since: admitted.since,
                build: admitted.build,
                subprotocol: admitted.offered_subprotocol,
                channel: admitted.channel,
            };
            // Base64url: header values must be Latin-1, and names may be any Unicode.
            let ticket_header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&ticket)?);
            Ok(js::connect_room(env, runtime::room(&ticket.channel), TICKET_HEADER, &ticket_header).into())
        }
    }
}

/// A connect the Worker refused (`code`: the HTTP status or close code), logged and counted
/// with a reason word and the channel the path names, when it names one.
fn refused(env: &Env, path: &str, code: u16, started_ms: i64) {
    let reason = match code {
        4401 => "bad_token",
        4403 => "not_granted",
        4429 => "guessing",
        403 => "origin",
        404 => "not_found",
        426 => "not_upgrade",
        _ => "bad_request",
    };
    let ms = (runtime::now_ms() - started_ms) as f64;
    let named = path
        .trim_start_matches("/ws/")
        .trim_end_matches('/')
        .split_once('/')
        .and_then(|(kind, key)| Channel::new(crate::protocol::channel::Kind::parse(kind)?, key).ok());
    log::refused(env, named.as_ref(), code, reason, ms);
    let (kind, key) = named.as_ref().map_or(("", ""), |c| (c.kind().as_str(), c.key()));
    log::point(env, key, &["connect", kind, &code.to_string(), reason], &[1.0, ms]);
}

thread_local! {
    static AUTH_FAILURES: std::cell::RefCell<AuthFailures> = std::cell::RefCell::new(AuthFailures::default());
}

#[derive(Serialize)]
struct PublishResult<'a> {
    id: &'a str,
    channel: String,
    seq: u64,
    delivered: u32,
    duplicate: bool,
}

/// `POST /publish`. Checks run in the order PROTOCOL.md fixes: method, content type, size,
/// signature, body. The body is validated whole before any channel sees any of it.
/// A signed endpoint's answer, with a line for every status the endpoint does not log itself
/// with its counts (`counted`): refusals before its body is read, and failures.
async fn logged(
    env: &Env,
    event: &str,
    counted: &[u16],
    answer: impl std::future::Future<Output = Result<web_sys::Response>>,
) -> Result<web_sys::Response> {
    let started = runtime::now_ms();
    let answer = answer.await?;
    if !counted.contains(&answer.status()) {
        request_line(env, event, answer.status(), started, || serde_json::json!({}));
    }
    Ok(answer)
}

/// A signed endpoint's line and data point: its status, how long it took, and `more`, built
/// only when a line or a data point is written (a publish at the default level: neither).
fn request_line(env: &Env, event: &str, status: u16, started_ms: i64, more: impl FnOnce() -> serde_json::Value) {
    let level = match status {
        // A publish is the backend's everyday call (one per order change): its line is as
        // costly as the publish (bench/README.md), so only `debug` writes it; the metrics count it.
        200 if event == "publish" => Level::Debug,
        200 => Level::Info,
        500.. => Level::Error,
        _ => Level::Warn,
    };
    let point = event != "links" && log::metrics_bound(env);
    if !point && !log::enabled(env, level) {
        return;
    }
    let ms = (runtime::now_ms() - started_ms) as f64;
    let mut fields = serde_json::json!({"status": status, "ms": ms});
    if let (Some(fields), serde_json::Value::Object(more)) = (fields.as_object_mut(), more()) {
        fields.extend(more);
    }
    let count = fields.get("messages").or(fields.get("closed")).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let scope = fields.get("scope").map(|s| s.to_string().trim_matches('"').to_owned()).unwrap_or_default();
    log::line(env, level, event, fields);
    if point {
        log::point(env, event, &[event, "", &status.to_string(), &scope], &[count, ms]);
    }
}

async fn publish(req: &web_sys::Request, env: &Env) -> Result<web_sys::Response> {
    let started = runtime::now_ms();
    let body = match signed_body(req, env, "/publish").await? {
        Ok((body, _)) => body,
        Err(refusal) => return Ok(refusal.into()),
    };
    let messages = match publish::parse_body(&body) {
        Ok(messages) => messages,
        Err(BodyError::Invalid(message)) => return Ok(json_error(400, "bad_request", &message)?.into()),
        Err(BodyError::DataTooLarge(message)) => return Ok(json_error(413, "too_large", &message)?.into()),
    };

    // One request per channel, all channels in parallel; each channel's events keep request
    // order because its object processes one request's events in one go.
    let groups = publish::group_by_channel(&messages);
    let calls = groups.iter().map(|(channel, events)| async move {
        let request = PublishRequest { channel: channel.clone(), events: events.iter().map(|(_, d)| d.clone()).collect() };
        let reply: PublishReply = js::call_method(env, runtime::room(channel), "publish", &request).await?;
        Ok::<_, worker::Error>((channel, reply))
    });
    let replies = join_all(calls).await;

    let mut results: Vec<Option<PublishResult>> = Vec::new();
    results.resize_with(messages.iter().map(|m| m.channels.len()).sum(), || None);
    for ((_, events), reply) in groups.iter().zip(replies) {
        let (channel, reply) = match reply {
            Ok(r) => r,
            Err(e) => {
                // Channels that did accept keep their events; a retry is safe (dedupe by id).
                log::internal(env, None, "publish", e);
                return Ok(json_error(500, "internal", "a channel could not be reached; retrying the same request is safe")?.into());
            }
        };
        for ((slot, delivery), outcome) in events.iter().zip(reply.results) {
            if let Some(entry) = results.get_mut(*slot) {
                *entry = Some(PublishResult {
                    id: &delivery.id,
                    channel: channel.to_string(),
                    seq: outcome.seq,
                    delivered: outcome.delivered,
                    duplicate: outcome.duplicate,
                });
            }
        }
    }
    let results: Vec<PublishResult> = results.into_iter().flatten().collect();
    request_line(env, "publish", 200, started, || {
        let delivered: u32 = results.iter().map(|r| r.delivered).sum();
        let duplicates = results.iter().filter(|r| r.duplicate).count();
        serde_json::json!({"messages": messages.len(), "channels": groups.len(), "delivered": delivered, "duplicates": duplicates})
    });
    // Straight into the runtime's own response: no workers-rs `Response` to convert.
    js::json(&PublishResults { results })
}

#[derive(Serialize)]
struct PublishResults<'a> {
    results: Vec<PublishResult<'a>>,
}

/// `POST /links`: signed like `/publish`, with the same checks in the same order; the body is
/// validated whole, then each source channel's object applies its orders (one call per
/// channel, in parallel) and keeps its links.
async fn link(req: &web_sys::Request, env: &Env) -> Result<Response> {
    let started = runtime::now_ms();
    let body = match signed_body(req, env, "/links").await? {
        Ok((body, _)) => body,
        Err(refusal) => return Ok(refusal),
    };
    let orders = match links::parse_body(&body) {
        Ok(orders) => orders,
        Err(BodyError::Invalid(message) | BodyError::DataTooLarge(message)) => return json_error(400, "bad_request", &message),
    };
    let groups = links::group_by_channel(&orders);
    let calls = groups.iter().map(|(channel, orders)| async move {
        let request = LinkRequest { channel: channel.clone(), orders: orders.iter().map(|(_, o)| o.clone()).collect() };
        js::call::<_, LinkReply>(env, runtime::room(channel), "/links", &request).await
    });
    let mut results = vec![serde_json::Value::Null; orders.len()];
    for ((_, orders), reply) in groups.iter().zip(join_all(calls).await) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                log::internal(env, None, "links", e);
                return json_error(500, "internal", "a channel could not be reached; retrying the same request is safe");
            }
        };
        for ((slot, order), result) in orders.iter().zip(reply.results) {
            if let Some(entry) = results.get_mut(*slot) {
                let mut v = serde_json::json!({"channel": order.channel, "inbox": order.inbox, "linked": result.linked});
                if let Some(error) = result.error {
                    v["error"] = error.into();
                }
                *entry = v;
            }
        }
    }
    let linked = results.iter().filter(|r| r["linked"] == true).count();
    request_line(env, "links", 200, started, || serde_json::json!({"entries": orders.len(), "linked": linked}));
    Response::from_json(&serde_json::json!({ "results": results }))
}

/// `POST /revoke`: signed like `/publish`. Every directory shard the scope reaches
/// (protocol/revocation `revoke_routes`; all of them without `channels`) records the
/// revocation (at the signature's `t`, so a retry never revokes a newer token) and reaches
/// its rooms, all in parallel; the answer is 200 only when every shard's is.
async fn revoke(req: &web_sys::Request, env: &Env) -> Result<Response> {
    let started = runtime::now_ms();
    let (body, t) = match signed_body(req, env, "/revoke").await? {
        Ok(signed) => signed,
        Err(refusal) => return Ok(refusal),
    };
    let order = match publish::parse_revoke(&body) {
        Ok(order) => order,
        Err(BodyError::Invalid(message) | BodyError::DataTooLarge(message)) => return json_error(400, "bad_request", &message),
    };
    let scope = order.channels.as_ref().map_or_else(|| serde_json::json!("all"), |c| serde_json::json!(c.len()));
    let calls = revocation::revoke_routes(order.channels.as_deref()).into_iter().map(|(shard, channels)| {
        let request = RevokeOrder { sub: order.sub.clone(), channels, at: t };
        async move { js::call::<_, RevokeReply>(env, runtime::shard(&shard), "/revoke", &request).await }
    });
    // A shard that failed may or may not have recorded it: a 500, and a retry is safe.
    let replies: Result<Vec<RevokeReply>> = join_all(calls).await.into_iter().collect();
    let merged =
        replies.map(|replies| RevokeReply { closed: replies.iter().map(|r| r.closed).sum(), pending: replies.iter().any(|r| r.pending) });
    match merged {
        Ok(reply) if reply.pending => {
            // Recorded, not yet in force everywhere: the backend retries (the same `t`).
            request_line(env, "revoke", 503, started, || serde_json::json!({"scope": scope, "closed": reply.closed}));
            let mut answer = Response::from_json(&serde_json::json!({
                "error": "pending", "closed": reply.closed,
                "message": "the revocation is recorded, but a room could not be reached yet; retrying the same request is safe",
            }))?
            .with_status(503);
            answer.headers_mut().set("Retry-After", "1")?;
            Ok(answer)
        }
        Ok(reply) => {
            request_line(env, "revoke", 200, started, || serde_json::json!({"scope": scope, "closed": reply.closed}));
            Response::from_json(&serde_json::json!({"closed": reply.closed}))
        }
        Err(e) => {
            log::internal(env, None, "revoke", e);
            json_error(500, "internal", "the revocation could not be recorded; retrying the same request is safe")
        }
    }
}

/// `GET /channels/{kind}/{key}[/history]`: checks in the order PROTOCOL.md fixes (method,
/// signature over the request target, then the path), then asks the channel's room.
async fn read_channel(req: &web_sys::Request, path: &str, query: &str, env: &Env) -> Result<Response> {
    if req.method() != "GET" {
        return method_not_allowed("GET");
    }
    let target = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    if let Err(refusal) = check_signature(req, env, &target, b"")? {
        return Ok(refusal);
    }
    let read = match reading::parse(path, &handshake::query_pairs(query)) {
        Ok(read) => read,
        Err((status, message)) => return json_error(status, if status == 404 { "not_found" } else { "bad_request" }, message),
    };
    let (endpoint, since, limit) = match read.read {
        Read::State => ("/state", 0, 0),
        Read::History { since, limit } => ("/history", since, limit),
    };
    let query = ReadQuery { channel: read.channel.clone(), since, limit };
    match js::call::<_, serde_json::Value>(env, runtime::room(&read.channel), endpoint, &query).await {
        Ok(answer) => Response::from_json(&answer),
        Err(e) => {
            log::internal(env, Some(&read.channel), "read", e);
            json_error(500, "internal", "the channel could not be read; retrying is safe")
        }
    }
}

/// The shared front half of signed POST endpoints: method, content type, size, signature.
/// `Ok(Err(response))` is a refusal to send as is; `Ok(Ok((body, t)))` carries the signed `t`.
async fn signed_body(req: &web_sys::Request, env: &Env, path: &str) -> Result<std::result::Result<(Vec<u8>, i64), Response>> {
    if req.method() != "POST" {
        return Ok(Err(method_not_allowed("POST")?));
    }
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let content_type = header("Content-Type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Ok(Err(json_error(415, "unsupported_media_type", "Content-Type must be application/json")?));
    }
    let too_large = || json_error(413, "too_large", "the body is limited to 256 KiB");
    let declared = header("Content-Length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Ok(Err(too_large()?));
    }
    // Counted as it arrives: a body without Content-Length is cut off at the limit.
    let Some(body) = js::body_capped(req, MAX_BODY_BYTES).await? else {
        return Ok(Err(too_large()?));
    };
    Ok(check_signature(req, env, path, &body)?.map(|t| (body, t)))
}

/// 405 naming the one method the endpoint takes.
fn method_not_allowed(allow: &str) -> Result<Response> {
    let mut r = json_error(405, "method_not_allowed", &format!("use {allow}"))?;
    r.headers_mut().set("Allow", allow)?;
    Ok(r)
}

/// Checks `X-Foyer-Signature` over `target` and `body`; returns the signed `t`.
fn check_signature(req: &web_sys::Request, env: &Env, target: &str, body: &[u8]) -> Result<std::result::Result<i64, Response>> {
    let header = req.headers().get("X-Foyer-Signature").ok().flatten();
    let config = config(env);
    match signature::verify(header.as_deref(), &config.publish_secrets, target, body, runtime::now_secs()) {
        Ok(t) => Ok(Ok(t)),
        Err(e) => {
            if e == signature::SignatureError::NoSecretConfigured {
                log::line(
                    env,
                    Level::Error,
                    "config",
                    serde_json::json!({"problem": "signed endpoints refused: PUBLISH_SECRETS is not set"}),
                );
            }
            // One uniform answer: which part was wrong is not the caller's business.
            Ok(Err(json_error(401, "unauthorized", "signature missing, wrong or stale")?))
        }
    }
}
