//! The hostile battery on the host: every variant of `hostile/` against the pure core, no
//! gateway, no sockets, a fixed clock. Each row is data (its name, the rule it checks, its
//! input, the answer PROTOCOL.md fixes) and one judge per table plays them all and names
//! every deviating row with its rule.
//!
//! The core is configured exactly like the end-to-end gateway (`Gateway::default_vars`),
//! so a row here and its representative in `adversarial.rs` ask the same question; only
//! the shell around the core differs.

mod hostile;
mod support;

use std::fmt::Debug;
use std::time::Instant;

use foyer::protocol::channel::Channel;
use foyer::protocol::config::Config;
use foyer::protocol::handshake::{self, ConnectRequest, Verdict};
use foyer::protocol::publish::{self, BodyError};
use foyer::protocol::signature;
use hostile::rule::*;
use hostile::*;
use serde_json::{json, Value};
use support::{eddsa, es256, hs256, Gateway, ISSUER, OLD_PUBLISH_SECRET, PUBLISH_SECRET};

/// The clock of every row (Unix seconds).
const NOW: i64 = 1_800_000_000;
/// The gateway's own origin, as the shell derives it from the request URL.
const OWN_ORIGIN: &str = "http://127.0.0.1:8787";
const OWN_PORT: u16 = 8787;

// ---------- the table's shape and its judge ----------

/// One row: an input and the answer PROTOCOL.md fixes for it.
struct Case<I, A> {
    name: String,
    rule: &'static str,
    input: I,
    expect: A,
}

fn case<I, A>(name: impl Into<String>, rule: &'static str, input: I, expect: A) -> Case<I, A> {
    Case { name: name.into(), rule, input, expect }
}

/// Rows from labelled variants, all expecting `expect`.
fn rows<T, I, A: Clone>(rule: &'static str, variants: Vec<Variant<T>>, input: impl Fn(T) -> I, expect: A) -> Vec<Case<I, A>> {
    variants.into_iter().map(|(name, v)| case(name, rule, input(v), expect.clone())).collect()
}

/// Plays a table through `answer`, then fails naming every deviating row and its rule.
fn judge<I, A: PartialEq + Debug>(table: &str, cases: Vec<Case<I, A>>, answer: impl Fn(&I) -> A) {
    let started = Instant::now();
    let total = cases.len();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let got = answer(&c.input);
            (got != c.expect).then(|| format!("{}\n    rule: {}\n    expected {:?}, got {got:?}", c.name, c.rule, c.expect))
        })
        .collect();
    eprintln!("{table}: {total} rows in {:.1?}", started.elapsed());
    assert!(failures.is_empty(), "{table}: {} of {total} rows deviate from PROTOCOL.md:\n\n{}", failures.len(), failures.join("\n\n"));
}

// ---------- connect requests, judged by handshake::check ----------

/// What a connect request gets.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// Handed to the channel's object, `foyer.v1` selected exactly when offered.
    Admit,
    /// Accepted and closed at once with this code, `foyer.v1` selected exactly when offered.
    Close(u16),
    /// An HTTP error, no upgrade.
    Http(u16),
    /// Admitted or closed, but selecting `foyer.v1` when it was not offered or vice versa.
    Misselected,
}
use Answer::{Admit, Close, Http};

#[derive(Clone, Copy, PartialEq)]
enum Deployment {
    /// The test gateway's settings.
    Default,
    /// The same with `ALLOW_QUERY_TOKEN=true`.
    QueryToken,
}

struct Connect {
    /// Path and query as sent.
    url: String,
    origin: Option<String>,
    protocols: Option<String>,
    deployment: Deployment,
    now: i64,
}

fn offering(url: &str, protocols: Option<&str>) -> Connect {
    Connect { url: url.into(), origin: None, protocols: protocols.map(str::to_owned), deployment: Deployment::Default, now: NOW }
}

/// The standard offer: `foyer.v1, bearer.<token>`.
fn bearer(url: &str, token: &str) -> Connect {
    offering(url, Some(&format!("foyer.v1, bearer.{token}")))
}

fn config(deployment: Deployment) -> Config {
    let mut vars = Gateway::default_vars();
    if deployment == Deployment::QueryToken {
        vars.insert("ALLOW_QUERY_TOKEN".into(), "true".into());
    }
    Config::from_lookup(|name| vars.get(name).cloned())
}

/// The core's answer, reached as the shell reaches it: the URL split and its query decoded
/// by the handshake module's own helpers.
fn connect_answer() -> impl Fn(&Connect) -> Answer {
    let (default, query_token) = (config(Deployment::Default), config(Deployment::QueryToken));
    move |c: &Connect| {
        let url = format!("{OWN_ORIGIN}{}", c.url);
        let (own_origin, path, raw_query) = handshake::split_url(&url);
        let query = handshake::query_pairs(raw_query);
        let request = ConnectRequest {
            path,
            query: &query,
            upgrade: true,
            origin: c.origin.as_deref(),
            own_origin,
            protocols: c.protocols.as_deref(),
        };
        let offered = c.protocols.as_deref().is_some_and(|p| p.split(',').any(|item| item.trim() == "foyer.v1"));
        let config = if c.deployment == Deployment::QueryToken { &query_token } else { &default };
        match handshake::check(&request, config, c.now) {
            Verdict::Admit(a) if a.offered_subprotocol == offered => Admit,
            Verdict::Close { code, offered_subprotocol, .. } if offered_subprotocol == offered => Close(code),
            Verdict::Http(status, _) => Http(status),
            _ => Answer::Misselected,
        }
    }
}

/// A channel and its connect path.
struct Target {
    channel: &'static str,
    path: &'static str,
}

const CHAT: Target = Target { channel: "chat:room-1", path: "/ws/chat/room-1" };
const ORDERS: Target = Target { channel: "orders:venue-1", path: "/ws/orders/venue-1" };
const PAYMENT: Target = Target { channel: "payment:o-1001", path: "/ws/payment/o-1001" };

/// Valid claims at `NOW` granting `channel`.
fn claims(channel: &str) -> Value {
    json!({"sub": "hostile-user", "iss": ISSUER, "aud": "foyer", "iat": NOW, "exp": NOW + 600,
           "channels": [channel], "name": "Hostile User", "role": "staff"})
}

fn mint(c: &Value) -> String {
    hs256().mint(Some("hs"), c)
}

/// A token at `NOW` with these grant claims (`None`: the claim is absent).
fn granted(g: &GrantClaims) -> String {
    let c = g.applied_to(claims("orders:unused"));
    mint(&c)
}

// ---------- tokens: PROTOCOL.md "Tokens" ----------

#[test]
fn forged_and_malformed_tokens_close_4401() {
    let c = claims(CHAT.channel);
    let refused = |rule: &'static str, variants: Vec<Variant>| rows(rule, variants, |t| bearer(CHAT.path, &t), Close(4401));
    let mut table = vec![case("the valid token itself (control)", SIGNED, bearer(CHAT.path, &mint(&c)), Admit)];
    for (key, kid) in deployment_keys() {
        table.push(case(format!("a valid {} token (control)", key.alg()), SIGNED, bearer(CHAT.path, &key.mint(Some(kid), &c)), Admit));
    }
    table.extend(refused(ALG, alg_none(&c)));
    table.extend(refused(ALG, alg_casings(&c)));
    table.extend(refused(ALG, foreign_algs(&c)));
    table.extend(refused(ALG, hmac_keyed_with_public_keys(&c)));
    table.extend(refused(ALG, genuine_under_another_kid(&c)));
    table.extend(refused(SIGNED, signature_lengths(&c)));
    table.extend(refused(COMPACT, segment_counts(&c)));
    table.extend(refused(COMPACT, encodings(&c)));
    table.extend(refused(COMPACT, stray_trailing_bits(&c)));
    table.extend(refused(STRICT_JSON, non_json_headers(&c)));
    table.extend(refused(STRICT_JSON, non_json_payloads(&c)));
    table.extend(refused(STRICT_JSON, deep_nesting(&c)));
    table.extend(refused(KID, unknown_kids(&c)));
    table.extend(refused(KEY_PARAMS, key_choosing_header_params(&c)));
    judge("forged and malformed tokens", table, connect_answer());
}

#[test]
fn every_single_bit_flip_of_an_hs256_token_closes_4401() {
    let c = claims(CHAT.channel);
    let mut table = Vec::new();
    for segment in 0..3 {
        table.extend(rows(SIGNED, bit_flips(&hs256(), "hs", &c, segment, Bits::All), |t| bearer(CHAT.path, &t), Close(4401)));
    }
    judge("every bit flip of an HS256 token", table, connect_answer());
}

// The three algorithms share every step up to the signature check (segments, JSON, header,
// the signing input), so the HS256 table above shows every bit of header and payload is
// covered. EdDSA and ES256 verification takes milliseconds per token in a debug build: their
// tables flip bit 0 of every 9th payload byte, a few bits at both ends and in the middle of
// the signature, and one bit of every few bytes of each segment (the bit rotating).

fn asymmetric_flips(key: &foyer::devkit::SigningKey, kid: &str, strides: [usize; 3]) -> Vec<Case<Connect, Answer>> {
    let c = claims(CHAT.channel);
    let valid = bearer(CHAT.path, &key.mint(Some(kid), &c));
    let mut table = vec![case(format!("a valid {} token (control)", key.alg()), SIGNED, valid, Admit)];
    let mut flips: Vec<(usize, Bits)> = strides.into_iter().enumerate().map(|(segment, n)| (segment, Bits::Rotating(n))).collect();
    flips.extend([(1, Bits::EveryNth(9, 0)), (2, Bits::EndsAndMiddle)]);
    for (segment, bits) in flips {
        table.extend(rows(SIGNED, bit_flips(key, kid, &c, segment, bits), |t| bearer(CHAT.path, &t), Close(4401)));
    }
    table
}

#[test]
fn bit_flips_of_an_eddsa_token_close_4401() {
    judge("bit flips of an EdDSA token", asymmetric_flips(&eddsa(), "ed", [16, 32, 4]), connect_answer());
}

#[test]
fn bit_flips_of_an_es256_token_close_4401() {
    judge("bit flips of an ES256 token", asymmetric_flips(&es256(), "es", [8, 16, 2]), connect_answer());
}

#[test]
fn tokens_around_the_8_kib_cap() {
    let c = claims(CHAT.channel);
    let mut table: Vec<_> =
        (8185..=8192).map(|len| case(format!("{len} bytes"), SIZE, bearer(CHAT.path, &token_of_len(&c, len)), Admit)).collect();
    table.extend(rows(SIZE, oversize(&c), |t| bearer(CHAT.path, &t), Close(4401)));
    judge("tokens around 8 KiB", table, connect_answer());
}

// ---------- claims ----------

#[test]
fn claims_outside_the_rules_close_4401() {
    let c = claims(CHAT.channel);
    let with = |edits: &[(&str, Value)]| {
        let mut c = c.clone();
        for (k, v) in edits {
            match v {
                Value::Null if *k == "iat" => drop(c.as_object_mut().unwrap().remove("iat")),
                v => c[*k] = v.clone(),
            }
        }
        bearer(CHAT.path, &mint(&c))
    };
    let within = |ok: bool| if ok { Admit } else { Close(4401) };
    let mut table = Vec::new();
    // The leeway, second by second around its edge.
    for d in 25..=35 {
        table.push(case(format!("exp {d} s ago"), TIME, with(&[("iat", json!(NOW - 400)), ("exp", json!(NOW - d))]), within(d <= 30)));
        table.push(case(format!("nbf {d} s ahead"), TIME, with(&[("nbf", json!(NOW + d))]), within(d <= 30)));
        table.push(case(format!("iat {d} s ahead"), TIME, with(&[("iat", json!(NOW + d)), ("exp", json!(NOW + 600))]), within(d <= 30)));
    }
    // The lifetime, second by second around 900 s.
    for life in 895..=905 {
        table.push(case(
            format!("lifetime {life} s from iat"),
            LIFETIME,
            with(&[("iat", json!(NOW - 100)), ("exp", json!(NOW - 100 + life))]),
            within(life <= 900),
        ));
        table.push(case(
            format!("lifetime {life} s from now, no iat"),
            LIFETIME,
            with(&[("iat", Value::Null), ("exp", json!(NOW + life))]),
            within(life <= 900),
        ));
    }
    // Numbers of every shape: fractions are numbers; extremes are refused by the rules above.
    for (name, exp, expect) in [
        ("exp a fraction", json!(NOW as f64 + 600.5), Admit),
        ("exp in exponent notation", json!(1.8000006e9), Admit),
        ("exp 0", json!(0), Close(4401)),
        ("exp negative", json!(-1), Close(4401)),
        ("exp i64::MIN", json!(i64::MIN), Close(4401)),
        ("exp i64::MAX", json!(i64::MAX), Close(4401)),
        ("exp u64::MAX", json!(u64::MAX), Close(4401)),
        ("exp 1e300", json!(1e300), Close(4401)),
        ("exp -1e300", json!(-1e300), Close(4401)),
    ] {
        table.push(case(name, TIME, with(&[("exp", exp)]), expect));
    }
    table.push(case("iat a fraction", TIME, with(&[("iat", json!(NOW as f64 + 0.5))]), Admit));
    table.push(case("iat 31.5 s ahead", TIME, with(&[("iat", json!(NOW as f64 + 31.5))]), Close(4401)));
    table.push(case("iat 1e300", TIME, with(&[("iat", json!(1e300))]), Close(4401)));
    table.push(case("nbf 1e300", TIME, with(&[("nbf", json!(1e300))]), Close(4401)));
    table.extend(rows(TIME_TYPES, non_numeric_times(&c), |t| bearer(CHAT.path, &t), Close(4401)));
    table.extend(rows(ISS, wrong_issuers(&c), |t| bearer(CHAT.path, &t), Close(4401)));
    table.extend(rows(AUD, wrong_audiences(&c), |t| bearer(CHAT.path, &t), Close(4401)));
    table.push(case("aud [\"other\", \"foyer\"] (control)", AUD, with(&[("aud", json!(["other", "foyer"]))]), Admit));
    table.push(case("aud [\"foyer\"] (control)", AUD, with(&[("aud", json!(["foyer"]))]), Admit));
    table.extend(rows(SUB, bad_subs(&c), |t| bearer(CHAT.path, &t), Close(4401)));
    table.push(case("sub \"u\" (control)", SUB, with(&[("sub", json!("u"))]), Admit));
    table.extend(rows(GRANT_TYPE, mistyped_grants(&c, "channels", CHAT.channel), |t| bearer(CHAT.path, &t), Close(4401)));
    table.extend(rows(GRANT_TYPE, mistyped_grants(&c, "publish", CHAT.channel), |t| bearer(CHAT.path, &t), Close(4401)));
    judge("claims", table, connect_answer());
}

// ---------- grants: PROTOCOL.md "Tokens" (grants), "Connecting" step 5 ----------

#[test]
fn tokens_that_do_not_grant_the_channel_close_4403() {
    let forbidden = |rule, target: &Target, variants| rows(rule, variants, |g: GrantClaims| bearer(target.path, &granted(&g)), Close(4403));
    let grants = |channels: Value| granted(&GrantClaims { channels: Some(channels), publish: None });
    let mut table = vec![
        case("the exact channel (control)", GRANT, bearer(PAYMENT.path, &grants(json!([PAYMENT.channel]))), Admit),
        case("orders:* (control)", WILDCARD, bearer(ORDERS.path, &grants(json!(["orders:*"]))), Admit),
        case("chat:* (control)", WILDCARD, bearer(CHAT.path, &grants(json!(["chat:*"]))), Admit),
        case("no channels claim at all", GRANT, bearer(ORDERS.path, &granted(&GrantClaims { channels: None, publish: None })), Close(4403)),
    ];
    table.extend(forbidden(GRANT, &PAYMENT, near_miss_grants("payment", "o-1001")));
    table.extend(forbidden(GRANT, &ORDERS, near_miss_grants("orders", "venue-1")));
    table.extend(forbidden(GRANT, &ORDERS, customer_grants("venue-1")));
    table.extend(forbidden(PUBLISH_ONLY, &CHAT, publish_only(CHAT.channel)));
    for target in [&ORDERS, &PAYMENT, &CHAT] {
        let kind = target.channel.split(':').next().unwrap();
        table.extend(forbidden(WILDCARD, target, other_kind_wildcards(kind)));
    }
    table.extend(forbidden(WILDCARD, &ORDERS, malformed_wildcards("orders", "venue-1")));
    judge("grants", table, connect_answer());
}

// ---------- connect requests: PROTOCOL.md "Connecting" ----------

#[test]
fn connect_requests_get_the_protocols_answers() {
    let t = mint(&claims(ORDERS.channel));
    let admin = mint(&claims("orders:*"));
    let mut table: Vec<Case<Connect, Answer>> = odd_paths("orders", "venue-1")
        .into_iter()
        .map(|(path, status)| case(path.clone(), PATH, bearer(&path, &admin), Http(status)))
        .collect();
    for since in BAD_SINCE {
        table.push(case(format!("since={since:?}"), SINCE, bearer(&format!("{}?since={since}", ORDERS.path), &t), Http(400)));
    }
    for since in ["0", "18446744073709551615"] {
        table.push(case(format!("since={since} (control)"), SINCE, bearer(&format!("{}?since={since}", ORDERS.path), &t), Admit));
    }
    let with_origin = |origin: &str| Connect { origin: Some(origin.into()), ..bearer(ORDERS.path, &t) };
    table.extend(rows(ORIGIN, foreign_origins(), |o| with_origin(&o), Http(403)));
    table.extend(rows(ORIGIN, own_origin_near_misses(OWN_PORT), |o| with_origin(&o), Http(403)));
    table.push(case("the allowed origin (control)", ORIGIN, with_origin("https://shop.example"), Admit));
    table.push(case("the gateway's own origin (control)", ORIGIN, with_origin(OWN_ORIGIN), Admit));
    table.push(case("no Origin header (control)", ORIGIN, bearer(ORDERS.path, &t), Admit));
    let mut other = claims(ORDERS.channel);
    other["sub"] = json!("other");
    let other = mint(&other);
    table.extend(rows(OFFER, offers_without_foyer(&t), |o| offering(ORDERS.path, Some(&o)), Http(400)));
    table.extend(rows(OFFER, offers_with_two_tokens(&t, &other), |o| offering(ORDERS.path, Some(&o)), Http(400)));
    for offer in EMPTY_BEARERS {
        table.push(case(format!("offer {offer:?}"), SELECT, offering(ORDERS.path, Some(offer)), Close(4401)));
    }
    table.push(case("bearer first, then foyer.v1 (control)", SELECT, offering(ORDERS.path, Some(&format!("bearer.{t}, foyer.v1"))), Admit));
    table.push(case("foyer.v1 alone, no token", SELECT, offering(ORDERS.path, Some("foyer.v1")), Close(4401)));
    table.push(case("no offer at all", SELECT, offering(ORDERS.path, None), Close(4401)));
    // ?token= only where the deployment allows it.
    let query = |url: String, protocols: Option<&str>, deployment| Connect { deployment, ..offering(&url, protocols) };
    for url in [format!("{}?token={t}", ORDERS.path), format!("{}?since=0&token={t}", ORDERS.path), format!("{}/?token={t}", ORDERS.path)] {
        let shown = url.replace(&t, "<valid>");
        table.push(case(
            format!("{shown}, not allowed"),
            QUERY_TOKEN,
            query(url.clone(), Some("foyer.v1"), Deployment::Default),
            Close(4401),
        ));
        table.push(case(format!("{shown}, allowed"), QUERY_TOKEN, query(url, Some("foyer.v1"), Deployment::QueryToken), Admit));
    }
    let junk = Connect { url: format!("{}?token=junk", ORDERS.path), ..bearer(ORDERS.path, &t) };
    table.push(case("a bearer token beside an ignored ?token=junk", QUERY_TOKEN, junk, Admit));
    let allowed = |url: String, protocols: Option<&str>| query(url, protocols, Deployment::QueryToken);
    let forged = foyer::devkit::SigningKey::hs256(99).mint(Some("hs"), &claims(ORDERS.channel));
    let none = format!("{}.{}.", foyer::devkit::b64_json(&json!({"alg": "none"})), foyer::devkit::b64_json(&claims(ORDERS.channel)));
    table.extend([
        case("?token=<forged>, allowed", QUERY_TOKEN, allowed(format!("{}?token={forged}", ORDERS.path), Some("foyer.v1")), Close(4401)),
        case("?token=<alg none>, allowed", QUERY_TOKEN, allowed(format!("{}?token={none}", ORDERS.path), Some("foyer.v1")), Close(4401)),
        case("?token=<valid> with no offer at all, allowed", QUERY_TOKEN, allowed(format!("{}?token={t}", ORDERS.path), None), Admit),
        case(
            "?token= and a bearer token together (two tokens), allowed",
            OFFER,
            allowed(format!("{}?token={t}", ORDERS.path), Some(&format!("foyer.v1, bearer.{t}"))),
            Http(400),
        ),
    ]);
    judge("connect requests", table, connect_answer());
}

// ---------- publish signatures: PROTOCOL.md "Publishing" ----------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Signed {
    Accepted,
    /// HTTP 401: missing, wrong or stale, one uniform answer.
    Refused,
}

struct SignedRequest {
    header: Option<String>,
    body: Vec<u8>,
    now: i64,
    secrets_configured: bool,
}

fn signed(header: String, body: &[u8]) -> SignedRequest {
    SignedRequest { header: Some(header), body: body.to_vec(), now: NOW, secrets_configured: true }
}

fn signature_answer(r: &SignedRequest) -> Signed {
    let secrets =
        if r.secrets_configured { vec![PUBLISH_SECRET.as_bytes().to_vec(), OLD_PUBLISH_SECRET.as_bytes().to_vec()] } else { vec![] };
    match signature::verify(r.header.as_deref(), &secrets, "/publish", &r.body, r.now) {
        Ok(_) => Signed::Accepted,
        Err(_) => Signed::Refused,
    }
}

#[test]
fn publish_signatures_are_exact() {
    let body = message("evt-1", &["payment:o-1001"]).to_string().into_bytes();
    let valid = signature_header("t={t},v1={cur}", NOW, &body);
    let hex = valid.split("v1=").nth(1).unwrap().to_owned();
    let mut table = rows(ROTATION, accepted_signature_templates(), |t| signed(signature_header(t, NOW, &body), &body), Signed::Accepted);
    table.extend(rows(SIGNATURE, refused_signature_templates(), |t| signed(signature_header(t, NOW, &body), &body), Signed::Refused));
    table.push(case("no header", SIGNATURE, SignedRequest { header: None, ..signed(String::new(), &body) }, Signed::Refused));
    for (name, t) in non_integer_ts(NOW) {
        let header = format!("t={t},v1={}", mac_hex(PUBLISH_SECRET, &t, "/publish", &body));
        table.push(case(name, T_INTEGER, signed(header, &body), Signed::Refused));
    }
    for path in OTHER_PATHS {
        table.push(case(
            format!("signed for {path:?}"),
            SIGNATURE,
            signed(signature::sign(PUBLISH_SECRET.as_bytes(), NOW, path, &body), &body),
            Signed::Refused,
        ));
    }
    // The skew, second by second around 300 s, and far off.
    for skew in (-303..=-297).chain(297..=303).chain([-3600, 3600, -NOW, i64::MAX - NOW]) {
        let expect = if skew.abs() <= 300 { Signed::Accepted } else { Signed::Refused };
        let header = signature::sign(PUBLISH_SECRET.as_bytes(), NOW + skew, "/publish", &body);
        table.push(case(format!("t = now {skew:+}"), SKEW, signed(header, &body), expect));
    }
    // Every bit of the body: the MAC covers it all.
    for byte in 0..body.len() {
        for bit in 0..8 {
            let mut tampered = body.clone();
            tampered[byte] ^= 1 << bit;
            table.push(case(format!("body byte {byte} bit {bit} flipped"), SIGNATURE, signed(valid.clone(), &tampered), Signed::Refused));
        }
    }
    table.push(case("one byte appended to the body", SIGNATURE, signed(valid.clone(), &[&body[..], b" "].concat()), Signed::Refused));
    // Every hex digit of the tag changed to every other value, and every truncation.
    for i in 0..hex.len() {
        for d in "0123456789abcdef".chars().filter(|d| !d.eq_ignore_ascii_case(&hex.chars().nth(i).unwrap())) {
            let tag = format!("{}{d}{}", &hex[..i], &hex[i + 1..]);
            table.push(case(
                format!("tag digit {i} changed to {d}"),
                SIGNATURE,
                signed(format!("t={NOW},v1={tag}"), &body),
                Signed::Refused,
            ));
        }
    }
    for len in (0..hex.len()).chain([65, 66]) {
        let tag = if len <= hex.len() { hex[..len].to_owned() } else { format!("{hex}{}", "0".repeat(len - hex.len())) };
        table.push(case(format!("tag of {len} digits"), SIGNATURE, signed(format!("t={NOW},v1={tag}"), &body), Signed::Refused));
    }
    let empty_secret = signature::sign(b"", NOW, "/publish", &body);
    table.push(case(
        "no secret configured",
        NO_SECRET,
        SignedRequest { secrets_configured: false, ..signed(valid.clone(), &body) },
        Signed::Refused,
    ));
    table.push(case(
        "no secret configured, signed with the empty secret",
        NO_SECRET,
        SignedRequest { secrets_configured: false, ..signed(empty_secret, &body) },
        Signed::Refused,
    ));
    judge("publish signatures", table, signature_answer);
}

// ---------- publish bodies: PROTOCOL.md "Publishing" ----------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Body {
    /// Valid, with this many messages.
    Accepted(usize),
    Refused(u16),
}

fn body_answer(body: &[u8]) -> Body {
    match publish::parse_body(body) {
        Ok(messages) => Body::Accepted(messages.len()),
        Err(BodyError::Invalid(_)) => Body::Refused(400),
        Err(BodyError::DataTooLarge(_)) => Body::Refused(413),
    }
}

#[test]
fn publish_bodies_are_validated_whole() {
    let ch = "payment:o-1001";
    let bytes = |v: Value| v.to_string().into_bytes();
    let msg = |id: &str| message(id, &[ch]);
    let batch = |n: usize| json!({"messages": (0..n).map(|i| msg(&format!("m{i}"))).collect::<Vec<_>>()});
    let to = |n: usize| json!({"id": "wide", "channels": (0..n).map(|i| format!("orders:v{i}")).collect::<Vec<_>>(), "event": "e"});
    let spread = |n: usize| json!({"messages": (0..n).map(|i| json!({"id": format!("m{i}"), "channels": [format!("orders:v{}", i % 101), "orders:v0"], "event": "e"})).collect::<Vec<_>>()});
    let data = |d: Value| bytes(json!({"id": "e", "channels": [ch], "event": "x", "data": d}));
    let mut table = rows(BODY, malformed_bodies(ch), |b| b, Body::Refused(400));
    table.extend([
        case("one message (control)", BODY, bytes(msg("a")), Body::Accepted(1)),
        case("100 messages", LIMITS, bytes(batch(100)), Body::Accepted(100)),
        case("101 messages", LIMITS, bytes(batch(101)), Body::Refused(400)),
        case("100 channels", LIMITS, bytes(to(100)), Body::Accepted(1)),
        case("101 channels", LIMITS, bytes(to(101)), Body::Refused(400)),
        case("100 distinct channels over a batch", LIMITS, bytes(spread(100)), Body::Accepted(100)),
        case("101 distinct channels over a batch", LIMITS, bytes(spread(101)), Body::Refused(400)),
        case("id of 128 characters", LIMITS, bytes(msg(&"i".repeat(128))), Body::Accepted(1)),
        case("id of 128 two-byte characters", LIMITS, bytes(msg(&"é".repeat(128))), Body::Accepted(1)),
        case(
            "event of 128 two-byte characters",
            LIMITS,
            bytes(json!({"id": "e", "channels": [ch], "event": "é".repeat(128)})),
            Body::Accepted(1),
        ),
        case("no data", DATA, bytes(json!({"id": "e", "channels": [ch], "event": "x"})), Body::Accepted(1)),
        case("data of 65536 bytes serialized", DATA, data(json!("x".repeat(64 * 1024 - 2))), Body::Accepted(1)),
    ]);
    for d in [json!(null), json!(true), json!(0), json!(-1.5), json!("s"), json!([]), json!({}), json!([{"a": [null]}])] {
        table.push(case(format!("data {d}"), DATA, data(d), Body::Accepted(1)));
    }
    table.extend(rows(DATA, oversized_data(), data, Body::Refused(413)));
    // A bad last message refuses the whole batch (the end-to-end table shows nothing was delivered).
    let with_last = |last: Value| bytes(json!({"messages": [msg("a"), msg("b"), last]}));
    table.extend([
        case(
            "last message with a malformed channel",
            WHOLE,
            with_last(json!({"id": "c", "channels": [ch, "chat:bad key"], "event": "e"})),
            Body::Refused(400),
        ),
        case(
            "last message with data over 64 KiB",
            WHOLE,
            with_last(json!({"id": "c", "channels": [ch], "event": "e", "data": "x".repeat(64 * 1024)})),
            Body::Refused(413),
        ),
        case("last message without event", WHOLE, with_last(json!({"id": "c", "channels": [ch]})), Body::Refused(400)),
    ]);
    judge("publish bodies", table, |b: &Vec<u8>| body_answer(b));
}

// ---------- channel names: PROTOCOL.md "Channels" ----------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Name {
    WellFormed,
    Malformed,
}

#[test]
fn channel_names_at_their_boundaries() {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let verdict = |ok: bool| if ok { Name::WellFormed } else { Name::Malformed };
    let mut table = Vec::new();
    let odd = ['é', 'ß', '\u{200b}', '\u{ff10}', '\u{1f600}', '\u{0}', '\u{7f}', '\u{a0}'];
    for c in (0u8..=127).map(char::from).chain(odd) {
        table.push(case(format!("key {c:?}"), NAME, format!("orders:{c}"), verdict(valid_char(c))));
        table.push(case(format!("key \"a{c}b\""), NAME, format!("orders:a{c}b"), verdict(valid_char(c))));
    }
    for (len, ok) in [(0, false), (1, true), (2, true), (63, true), (64, true), (65, false), (1000, false)] {
        table.push(case(format!("key of {len} characters"), NAME, format!("chat:{}", "k".repeat(len)), verdict(ok)));
    }
    table.push(case("key of 64 two-byte characters", NAME, format!("chat:{}", "é".repeat(64)), Name::Malformed));
    table.push(case("key of 32 two-byte characters", NAME, format!("chat:{}", "é".repeat(32)), Name::Malformed));
    for (name, ok) in [
        ("orders:v-1", true),
        ("payment:o_1", true),
        ("chat:R2-d2_", true),
        ("Orders:v1", false),
        ("ORDERS:v1", false),
        ("order:v1", false),
        ("orderss:v1", false),
        ("news:v1", false),
        ("chat :v1", false),
        (" chat:v1", false),
        (":v1", false),
        ("orders", false),
        ("orders:", false),
        ("orders::v1", false),
        ("orders:v1:", false),
        ("orders:a:b", false),
        ("orders:*", false),
        ("orders/v1", false),
        ("", false),
    ] {
        table.push(case(format!("{name:?}"), NAME, name.to_owned(), verdict(ok)));
    }
    judge("channel names", table, |name: &String| verdict(Channel::parse(name).is_ok()));
}
