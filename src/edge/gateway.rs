//! The Worker: the stateless front door. It runs every check that needs no state (path,
//! upgrade, origin, token, grant, publish signature and body) before any Durable Object is
//! touched, so a refused request never creates or wakes an object.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::future::join_all;
use serde::Serialize;
use worker::{event, web_sys, Context, Env, Method, Request, Response, Result};

use super::js;
use super::principal::{RevokeOrder, RevokeTargets};
use super::room_object::{PublishReply, PublishRequest, RevokeReply, RevokeRequest, Ticket, TICKET_HEADER};
use super::runtime::{self, config, json_error, BUILD_ID};
use crate::protocol::channel::Channel;
use crate::protocol::handshake::{self, AuthFailures, ConnectRequest, Verdict};
use crate::protocol::publish::{self, BodyError, MAX_BODY_BYTES};
use crate::protocol::room::Member;
use crate::protocol::signature;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<web_sys::Response> {
    // The runtime's own request and response types, unconverted: a socket's connect path
    // makes no copy of either (see Benchmark in the README); other paths convert.
    let url = req.url();
    let (origin, path, query) = handshake::split_url(&url);
    match path {
        "/healthz" => Ok(Response::from_json(&serde_json::json!({"ok": true, "build": BUILD_ID}))?.into()),
        "/publish" => Ok(publish(req.into(), &env).await?.into()),
        "/revoke" => Ok(revoke(req.into(), &env).await?.into()),
        p if p == "/ws" || p.starts_with("/ws/") => connect(&req, origin, p, &handshake::query_pairs(query), &env).await,
        // Everything else is a static asset (the platform serves those before the Worker runs).
        _ => Ok(env.assets("ASSETS")?.fetch_request(Request::from(req)).await?.into()),
    }
}

async fn connect(req: &web_sys::Request, own_origin: &str, path: &str, query: &[(String, String)], env: &Env) -> Result<web_sys::Response> {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    let upgrade = header("Upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let origin = header("Origin");
    let protocols = header("Sec-WebSocket-Protocol");
    let config = config(env);
    let request = ConnectRequest { path, query, upgrade, origin: origin.as_deref(), own_origin, protocols: protocols.as_deref() };
    let now = runtime::now_secs();
    let verdict = handshake::check(&request, &config, now);
    // Failed auth is counted per client address (set by Cloudflare's edge).
    let client = header("CF-Connecting-IP").unwrap_or_else(|| "unknown".into());
    let verdict =
        AUTH_FAILURES.with(|f| handshake::limit_failures(verdict, &mut f.borrow_mut(), &client, now, config.auth_failures_per_minute));
    match verdict {
        Verdict::Http(status, message) => Ok(json_error(status, "handshake", message)?.into()),
        Verdict::Close { code, reason, offered_subprotocol } => Ok(runtime::accept_and_close(code, reason, offered_subprotocol)),
        Verdict::Admit(admitted) => {
            // The room checks revocation (with the user's Principal object, or from what it
            // already knows): see protocol/revocation.rs.
            let member = Member::new(runtime::random_id(), &admitted.claims, &admitted.channel);
            let outdated = config.require_current_build && admitted.build.as_deref().is_some_and(|b| b != BUILD_ID);
            let ticket = Ticket {
                channel: admitted.channel.to_string(),
                member,
                since: admitted.since,
                outdated,
                subprotocol: admitted.offered_subprotocol,
            };
            // Base64url: header values must be Latin-1, and names may be any Unicode.
            let ticket_header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&ticket)?);
            js::connect_room(env, runtime::room(&ticket.channel, admitted.channel.kind()), TICKET_HEADER, &ticket_header).await
        }
    }
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
async fn publish(mut req: Request, env: &Env) -> Result<Response> {
    let body = match signed_body(&mut req, env, "/publish").await? {
        Ok(body) => body,
        Err(refusal) => return Ok(refusal),
    };
    let messages = match publish::parse_body(&body) {
        Ok(messages) => messages,
        Err(BodyError::Invalid(message)) => return json_error(400, "bad_request", &message),
        Err(BodyError::DataTooLarge(message)) => return json_error(413, "too_large", &message),
    };

    // One request per channel, all channels in parallel; each channel's events keep request
    // order because its object processes one request's events in one go.
    let groups = publish::group_by_channel(&messages);
    let calls = groups.iter().map(|(channel, events)| async move {
        let channel = Channel::parse(channel).map_err(|_| worker::Error::from("unparsable channel"))?;
        let request = PublishRequest { channel: channel.to_string(), events: events.iter().map(|(_, d)| d.clone()).collect() };
        let reply: PublishReply = js::call(env, runtime::room(&request.channel, channel.kind()), "/publish", &request).await?;
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
                worker::console_error!("publish to a room failed: {e}");
                return json_error(500, "internal", "a channel could not be reached; retrying the same request is safe");
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
    Response::from_json(&PublishResults { results: results.into_iter().flatten().collect() })
}

#[derive(Serialize)]
struct PublishResults<'a> {
    results: Vec<PublishResult<'a>>,
}

/// `POST /revoke`: signed like `/publish`. Records the revocation with the user's object,
/// then closes the user's sockets in every affected room, in parallel.
async fn revoke(mut req: Request, env: &Env) -> Result<Response> {
    let body = match signed_body(&mut req, env, "/revoke").await? {
        Ok(body) => body,
        Err(refusal) => return Ok(refusal),
    };
    let order = match publish::parse_revoke(&body) {
        Ok(order) => order,
        Err(BodyError::Invalid(message) | BodyError::DataTooLarge(message)) => return json_error(400, "bad_request", &message),
    };
    let now = runtime::now_secs();
    let channels = order.channels.map(|list| list.iter().map(Channel::to_string).collect());
    let targets: RevokeTargets = js::call(env, runtime::principal(&order.sub), "/revoke", &RevokeOrder { channels, now }).await?;
    let calls = targets.channels.iter().filter_map(|name| Channel::parse(name).ok()).map(|channel| {
        let request = RevokeRequest { sub: order.sub.clone(), revoked_at: now };
        async move {
            let name = channel.to_string();
            js::call::<_, RevokeReply>(env, runtime::room(&name, channel.kind()), "/revoke", &request).await
        }
    });
    let mut closed = 0;
    for reply in join_all(calls).await {
        match reply {
            Ok(reply) => closed += reply.closed,
            Err(e) => {
                worker::console_error!("revoke in a room failed: {e}");
                return json_error(500, "internal", "a channel could not be reached; retrying the same request is safe");
            }
        }
    }
    Response::from_json(&serde_json::json!({"closed": closed}))
}

/// The shared front half of signed endpoints: method, content type, size, signature.
/// `Ok(Err(response))` is a refusal to send as is.
async fn signed_body(req: &mut Request, env: &Env, path: &str) -> Result<std::result::Result<Vec<u8>, Response>> {
    if req.method() != Method::Post {
        let mut r = json_error(405, "method_not_allowed", "use POST")?;
        r.headers_mut().set("Allow", "POST")?;
        return Ok(Err(r));
    }
    let content_type = req.headers().get("Content-Type")?.unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Ok(Err(json_error(415, "unsupported_media_type", "Content-Type must be application/json")?));
    }
    let declared = req.headers().get("Content-Length")?.and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Ok(Err(json_error(413, "too_large", "the body is limited to 256 KiB")?));
    }
    let body = req.bytes().await?;
    if body.len() > MAX_BODY_BYTES {
        return Ok(Err(json_error(413, "too_large", "the body is limited to 256 KiB")?));
    }
    let header = req.headers().get("X-Foyer-Signature")?;
    let config = config(env);
    if let Err(e) = signature::verify(header.as_deref(), &config.publish_secrets, path, &body, runtime::now_secs()) {
        if e == signature::SignatureError::NoSecretConfigured {
            worker::console_error!("{path} refused: PUBLISH_SECRETS is not set");
        }
        // One uniform answer: which part was wrong is not the caller's business.
        return Ok(Err(json_error(401, "unauthorized", "signature missing, wrong or stale")?));
    }
    Ok(Ok(body))
}
