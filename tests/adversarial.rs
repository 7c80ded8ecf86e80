//! The adversarial battery (issue 7) against a real `wrangler dev`: forged and malformed
//! tokens, grant escalation, Origin and subprotocol tricks, forged publishes and abusive
//! frames. Every case expects exactly the answer PROTOCOL.md names, and checks that the
//! refused request changed nothing: a *witness* socket on the targeted channel sees no one
//! join, and the channel's next event gets the next `seq`, reaches the witness alone, and is
//! all a replay from `since=0` holds.
//!
//! Cases with many variants collect every deviation before failing, so one run names them all.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use foyer::devkit::{b64_json, unix_now, SigningKey};
use foyer::protocol::signature;
use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::*;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

// ---------- gateways ----------

/// Failed handshakes are rate limited per client address; this battery fails hundreds of
/// them from one address on purpose, so its gateways lift that limit out of reach.
const NO_AUTH_FAILURE_LIMIT: (&str, &str) = ("AUTH_FAILURES_PER_MINUTE", "1000000");

/// This binary's gateway: the default test settings (allowed origin `https://shop.example`).
fn gw() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start("adversarial", &[NO_AUTH_FAILURE_LIMIT]))
}

/// A deployment with `ALLOW_QUERY_TOKEN=true` (legacy clients during a migration).
fn query_gw() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start("querytoken", &[("ALLOW_QUERY_TOKEN", "true"), NO_AUTH_FAILURE_LIMIT]))
}

// ---------- outcomes ----------

type Failures = Vec<String>;

fn verdict(failures: Failures) {
    assert!(failures.is_empty(), "{} case(s) deviate from PROTOCOL.md:\n  {}", failures.len(), failures.join("\n  "));
}

fn short(s: &str) -> String {
    if s.len() > 160 {
        format!("{}…", &s[..s.floor_char_boundary(160)])
    } else {
        s.to_owned()
    }
}

fn describe(got: &Option<Got>) -> String {
    match got {
        None => "nothing within the wait".into(),
        Some(Got::Frame(f)) => format!("frame {}", short(&f.to_string())),
        Some(Got::Text(t)) => format!("text {}", short(t)),
        Some(Got::Closed(code)) => format!("close {code:?}"),
    }
}

fn offer(token: &str) -> String {
    format!("foyer.v1, bearer.{token}")
}

fn offers_foyer(protocols: Option<&str>) -> bool {
    protocols.is_some_and(|p| p.split(',').any(|item| item.trim() == "foyer.v1"))
}

/// Like `connect_raw`, but a failed handshake is a value, not a panic.
async fn try_connect(gw: &Gateway, path: &str, protocols: Option<&str>, headers: &[(&str, &str)]) -> Result<Connect, String> {
    let mut req = gw.ws_url(path).into_client_request().map_err(|e| format!("request: {e}"))?;
    if let Some(p) = protocols {
        let value = HeaderValue::from_str(p).map_err(|e| format!("protocol header: {e}"))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", value);
    }
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header name: {e}"))?;
        req.headers_mut().insert(name, HeaderValue::from_str(v).map_err(|e| format!("header value: {e}"))?);
    }
    match tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, response))) => Ok(Connect::Open(Client {
            ws,
            protocol: response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(str::to_owned),
        })),
        Ok(Err(tungstenite::Error::Http(response))) => Ok(Connect::Refused(response.status().as_u16())),
        Ok(Err(e)) => Err(format!("handshake failed: {e}")),
        Err(_) => Err("handshake timed out".into()),
    }
}

/// The socket is accepted, `foyer.v1` is selected when offered (never the token), and the
/// first thing the server sends is a close with `code`.
async fn closed_at_once(gw: &Gateway, path: &str, protocols: Option<&str>, headers: &[(&str, &str)], code: u16) -> Result<(), String> {
    let mut c = match try_connect(gw, path, protocols, headers).await? {
        Connect::Refused(status) => return Err(format!("HTTP {status} instead of an accepted socket closed with {code}")),
        Connect::Open(c) => c,
    };
    if offers_foyer(protocols) && c.protocol.as_deref() != Some("foyer.v1") {
        return Err(format!("selected subprotocol {:?} instead of exactly foyer.v1", c.protocol.as_deref().map(short)));
    }
    match c.next_within(10).await {
        Some(Got::Closed(Some(got))) if got == code => Ok(()),
        other => Err(format!("expected close {code} at once, got {}", describe(&other))),
    }
}

/// The socket is accepted with `foyer.v1` selected (when offered) and welcomed first.
async fn welcomed(gw: &Gateway, path: &str, protocols: Option<&str>, headers: &[(&str, &str)]) -> Result<Client, String> {
    let mut c = match try_connect(gw, path, protocols, headers).await? {
        Connect::Refused(status) => return Err(format!("HTTP {status} instead of a welcome")),
        Connect::Open(c) => c,
    };
    if offers_foyer(protocols) && c.protocol.as_deref() != Some("foyer.v1") {
        return Err(format!("selected subprotocol {:?} instead of exactly foyer.v1", c.protocol.as_deref().map(short)));
    }
    match c.next_within(10).await {
        Some(Got::Frame(f)) if f["type"] == "welcome" => Ok(c),
        other => Err(format!("expected a welcome, got {}", describe(&other))),
    }
}

/// An HTTP error with no upgrade.
async fn refused_http(gw: &Gateway, path: &str, protocols: Option<&str>, headers: &[(&str, &str)], status: u16) -> Result<(), String> {
    match try_connect(gw, path, protocols, headers).await? {
        Connect::Refused(got) if got == status => Ok(()),
        Connect::Refused(got) => Err(format!("HTTP {got} instead of {status}")),
        Connect::Open(mut c) => Err(format!("upgraded (then {}) instead of HTTP {status}", describe(&c.next_within(3).await))),
    }
}

/// Runs labelled checks concurrently; returns the failures, labelled.
async fn all<F: std::future::Future<Output = Result<(), String>>>(checks: Vec<(String, F)>) -> Failures {
    let (labels, futures): (Vec<String>, Vec<F>) = checks.into_iter().unzip();
    labels.into_iter().zip(join_all(futures).await).filter_map(|(label, r)| r.err().map(|e| format!("{label}: {e}"))).collect()
}

/// Offers each labelled token for `w`'s channel; each must be closed at once with `code`.
async fn expect_closes(w: &Witness, cases: Vec<(String, String)>, code: u16) -> Failures {
    let path = w.path.clone();
    all(cases
        .into_iter()
        .map(|(label, t)| {
            let path = path.clone();
            (label, async move { closed_at_once(w.gw, &path, Some(&offer(&t)), &[], code).await })
        })
        .collect())
    .await
}

// ---------- the witness ----------

/// A socket on a fresh channel that proves refused requests changed nothing there.
struct Witness {
    gw: &'static Gateway,
    key: String,
    channel: String,
    path: String,
    token: String,
    client: Client,
    /// Ids of the probe events published so far (the channel's whole history).
    probes: Vec<String>,
}

impl Witness {
    async fn new(kind: &'static str) -> Witness {
        Witness::on(gw(), kind).await
    }

    async fn on(gw: &'static Gateway, kind: &'static str) -> Witness {
        let key = unique("w");
        let channel = format!("{kind}:{key}");
        let path = format!("/ws/{kind}/{key}");
        let token = token(&unique("witness"), &[&channel]);
        let mut client = connect(gw, &path, &token).await;
        let welcome = client.frame().await;
        assert_eq!((welcome["type"].as_str(), welcome["seq"].as_u64()), (Some("welcome"), Some(0)), "witness: {welcome}");
        if kind == "chat" {
            let own = client.frame().await;
            assert_eq!(own["type"], "presence", "the witness's own join: {own}");
        }
        Witness { gw, key, channel, path, token, client, probes: Vec::new() }
    }

    fn seq(&self) -> u64 {
        self.probes.len() as u64
    }

    /// Nothing joined the channel and nothing was added to it: a probe event gets the next
    /// `seq`, reaches exactly one socket (the witness), and is the witness's next frame (no
    /// `presence` of a refused socket, no refused event before it).
    async fn untouched(&mut self) {
        self.untouched_beside(0).await;
    }

    /// As [`Witness::untouched`], with `others` legitimate sockets also in the channel.
    async fn untouched_beside(&mut self, others: u64) {
        let id = unique("probe");
        let r = self.gw.publish(&json!({"id": id, "channels": [self.channel], "event": "probe"})).await;
        assert_eq!(r.status, 200, "probe publish: {}", String::from_utf8_lossy(&r.body));
        let result = r.json()["results"][0].clone();
        assert_eq!(result["seq"].as_u64(), Some(self.seq() + 1), "a refused request moved the seq of {}: {result}", self.channel);
        assert_eq!(result["delivered"].as_u64(), Some(1 + others), "a refused socket joined {}: {result}", self.channel);
        let next = self.client.next_within(10).await;
        match &next {
            Some(Got::Frame(f)) if f["type"] == "event" && f["id"] == id.as_str() => {}
            other => panic!("the witness of {} got {} before the probe", self.channel, describe(other)),
        }
        self.probes.push(id);
    }

    /// A fresh socket replaying from `since=0` gets exactly the probes: nothing refused was
    /// stored.
    async fn replay_holds_only_probes(&self) {
        let mut c = connect(self.gw, &format!("{}?since=0", self.path), &self.token).await;
        let welcome = c.frame().await;
        assert_eq!(welcome["seq"].as_u64(), Some(self.seq()), "history of {}: {welcome}", self.channel);
        for id in &self.probes {
            let f = c.frame().await;
            assert_eq!((f["type"].as_str(), f["id"].as_str()), (Some("event"), Some(id.as_str())), "replay of {}: {f}", self.channel);
        }
        c.close().await;
    }
}

// ---------- tokens ----------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims granting `channel` to a fresh subject.
fn granting(channel: &str) -> Value {
    claims(&unique("u"), &[channel])
}

fn hs_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": "hs"})
}

/// A token with this header, signed by the real HS256 key.
fn with_header(header: Value, channel: &str) -> String {
    hs256().mint_with_header(&header, &granting(channel))
}

/// A token from the real HS256 key with edited claims.
fn edited(channel: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut c = granting(channel);
    edit(&mut c);
    hs256().mint(Some("hs"), &c)
}

/// A token whose first two segments are exactly `h64` and `p64`, correctly signed by `key`
/// over exactly that text: only the encoding is at fault.
fn signed_segments(key: &SigningKey, h64: &str, p64: &str) -> String {
    let input = format!("{h64}.{p64}");
    format!("{input}.{}", b64(key.sign(input.as_bytes())))
}

/// A token over raw header and payload bytes (canonically encoded), signed by `key`.
fn signed_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    signed_segments(key, &b64(header), &b64(payload))
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn flip_bit(segment: &str, byte: usize, bit: u8) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(segment).expect("canonical segment");
    bytes[byte] ^= 1 << bit;
    b64(bytes)
}

/// The same segment with its last character's unused low bits set: decodes to the same
/// bytes under a lenient decoder, is not canonical base64url.
fn stray_bits(segment: &str) -> String {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert!(!segment.len().is_multiple_of(4), "a segment without leftover bits");
    let last = segment.chars().last().unwrap();
    let idx = ALPHABET.find(last).unwrap();
    let tweaked = ALPHABET.chars().nth(idx ^ 1).unwrap();
    format!("{}{tweaked}", &segment[..segment.len() - 1])
}

/// Waits, if needed, until early in a wall-clock second, so that a token minted now is
/// verified within the same second: the ±1 s boundary cases stay exact.
async fn early_in_a_second() {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_millis()).unwrap_or(0);
    if ms > 300 {
        tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 20)).await;
    }
}

fn public_key_bytes(jwk: &Value, coordinate: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(jwk[coordinate].as_str().expect("coordinate")).expect("base64url")
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

/// Forms in which an attacker may feed a public key to HMAC, hoping the verifier does too.
fn key_material_variants(jwk: &Value, spki: &[u8]) -> Vec<(String, Vec<u8>)> {
    let pem = pem(spki);
    vec![
        ("the JWK JSON".into(), jwk.to_string().into_bytes()),
        ("the JWKS JSON".into(), json!({"keys": [jwk]}).to_string().into_bytes()),
        ("x as base64url text".into(), jwk["x"].as_str().unwrap().as_bytes().to_vec()),
        ("the SPKI DER".into(), spki.to_vec()),
        ("the PEM".into(), pem.clone().into_bytes()),
        ("the PEM without its final newline".into(), pem.trim_end().as_bytes().to_vec()),
    ]
}

// ---------- token forgeries: PROTOCOL.md "Tokens" ----------

#[tokio::test]
async fn alg_none_in_any_casing_without_a_signature_closes_4401() {
    // PROTOCOL.md Tokens: `alg` `none` is rejected (4401), and a segment is never empty.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE", "noNe"] {
        for header in [json!({"alg": alg}), json!({"alg": alg, "typ": "JWT", "kid": "hs"}), json!({"alg": alg, "kid": "ed"})] {
            let unsigned = format!("{}.{}.", b64_json(&header), b64_json(&granting(&w.channel)));
            cases.push((format!("{header} with an empty signature"), unsigned.clone()));
            cases.push((format!("{header} with no signature segment"), unsigned.trim_end_matches('.').to_owned()));
        }
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn alg_none_in_any_casing_with_a_signature_closes_4401() {
    // PROTOCOL.md Tokens: `alg` `none` is rejected even when a (valid HMAC) signature is attached.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for kid in [Some("hs"), Some("ed"), None] {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            cases.push((format!("{header} signed by the HS256 key"), with_header(header.clone(), &w.channel)));
            let t = with_header(header.clone(), &w.channel);
            let s = segments(&t);
            cases.push((format!("{header} with a junk signature"), format!("{}.{}.{}", s[0], s[1], b64(b"junk"))));
        }
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn hs256_signed_with_the_eddsa_public_key_under_its_kid_closes_4401() {
    // PROTOCOL.md Tokens: an algorithm family that does not match the key is rejected (algorithm confusion).
    let mut w = Witness::new("chat").await;
    let jwk = eddsa().jwk(Some("ed"));
    let x = public_key_bytes(&jwk, "x");
    let spki = [&[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00][..], &x].concat();
    let mut materials = vec![("the raw public key".to_owned(), x.clone())];
    materials.extend(key_material_variants(&jwk, &spki));
    let mut cases = Vec::new();
    for (what, material) in materials {
        let forger = SigningKey::Hs256(material);
        for header in [json!({"alg": "HS256", "typ": "JWT", "kid": "ed"}), json!({"alg": "HS256", "kid": "ed"})] {
            cases.push((format!("HMAC keyed with {what}, {header}"), forger.mint_with_header(&header, &granting(&w.channel))));
        }
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn hs256_signed_with_the_es256_public_key_under_its_kid_closes_4401() {
    // PROTOCOL.md Tokens: an algorithm family that does not match the key is rejected (algorithm confusion).
    let mut w = Witness::new("chat").await;
    let jwk = es256().jwk(Some("es"));
    let (x, y) = (public_key_bytes(&jwk, "x"), public_key_bytes(&jwk, "y"));
    let uncompressed = [&[0x04][..], &x, &y].concat();
    let compressed = [&[if y[31] % 2 == 0 { 0x02 } else { 0x03 }][..], &x].concat();
    let spki_prefix = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
        0x07, 0x03, 0x42, 0x00,
    ];
    let spki = [&spki_prefix[..], &uncompressed].concat();
    let mut materials = vec![
        ("the uncompressed SEC1 point".to_owned(), uncompressed.clone()),
        ("the compressed SEC1 point".to_owned(), compressed),
        ("x || y".to_owned(), [x.clone(), y.clone()].concat()),
        ("x alone".to_owned(), x.clone()),
    ];
    materials.extend(key_material_variants(&jwk, &spki));
    let mut cases = Vec::new();
    for (what, material) in materials {
        let forger = SigningKey::Hs256(material);
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "es"});
        cases.push((format!("HMAC keyed with {what}"), forger.mint_with_header(&header, &granting(&w.channel))));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_genuine_signature_under_another_algorithms_kid_closes_4401() {
    // PROTOCOL.md Tokens: `kid` picks the key and the key pins the algorithm; a mismatching family is rejected.
    let mut w = Witness::new("chat").await;
    let c = granting(&w.channel);
    let cases = vec![
        ("ES256 token under kid ed".to_owned(), es256().mint(Some("ed"), &c)),
        ("ES256 token under kid hs".to_owned(), es256().mint(Some("hs"), &c)),
        ("EdDSA token under kid hs".to_owned(), eddsa().mint(Some("hs"), &c)),
        ("HS256 token under kid ed".to_owned(), hs256().mint(Some("ed"), &c)),
        ("HS256 token under kid es".to_owned(), hs256().mint(Some("es"), &c)),
        ("header says EdDSA/ed, HS256 signature".to_owned(), hs256().mint_with_header(&json!({"alg": "EdDSA", "kid": "ed"}), &c)),
        ("header says ES256/es, EdDSA signature".to_owned(), eddsa().mint_with_header(&json!({"alg": "ES256", "kid": "es"}), &c)),
        ("header says EdDSA/ed, ES256 signature".to_owned(), es256().mint_with_header(&json!({"alg": "EdDSA", "kid": "ed"}), &c)),
        ("header says HS256/hs, EdDSA signature".to_owned(), eddsa().mint_with_header(&json!({"alg": "HS256", "kid": "hs"}), &c)),
    ];
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn algorithms_outside_the_configured_set_close_4401() {
    // PROTOCOL.md Tokens: `alg` outside the configured set is rejected, whatever the key signed.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for alg in ["HS384", "HS512", "hs256", "Hs256", "HS256 ", "RS256", "PS256", "ES384", "ES256K", "EDDSA", "Ed25519", "", "*"] {
        cases.push((format!("alg {alg:?} under kid hs"), with_header(json!({"alg": alg, "kid": "hs"}), &w.channel)));
    }
    for alg in [json!(null), json!(256), json!(["HS256"]), json!({"name": "HS256"})] {
        cases.push((format!("alg {alg}"), with_header(json!({"alg": alg, "kid": "hs"}), &w.channel)));
    }
    cases.push(("no alg".into(), with_header(json!({"kid": "hs"}), &w.channel)));
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_bit_flip_in_the_header_closes_4401() {
    // PROTOCOL.md Tokens: the signature covers the header; any change invalidates the token.
    let mut w = Witness::new("chat").await;
    let good = hs256().mint(Some("hs"), &granting(&w.channel));
    let s = segments(&good);
    let len = URL_SAFE_NO_PAD.decode(&s[0]).unwrap().len();
    let mut cases = Vec::new();
    for byte in 0..len {
        for bit in [0, 5] {
            cases.push((format!("header byte {byte} bit {bit}"), format!("{}.{}.{}", flip_bit(&s[0], byte, bit), s[1], s[2])));
        }
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_bit_flip_in_the_payload_closes_4401() {
    // PROTOCOL.md Tokens: the signature covers the claims; any change invalidates the token.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for (key, kid) in [(hs256(), "hs"), (eddsa(), "ed"), (es256(), "es")] {
        let good = key.mint(Some(kid), &granting(&w.channel));
        let s = segments(&good);
        let len = URL_SAFE_NO_PAD.decode(&s[1]).unwrap().len();
        for byte in (0..len).step_by(9) {
            cases.push((format!("{kid}: payload byte {byte} bit 0"), format!("{}.{}.{}", s[0], flip_bit(&s[1], byte, 0), s[2])));
        }
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_bit_flip_in_the_signature_closes_4401() {
    // PROTOCOL.md Tokens: a token whose signature does not verify is rejected.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for (key, kid) in [(hs256(), "hs"), (eddsa(), "ed"), (es256(), "es")] {
        let good = key.mint(Some(kid), &granting(&w.channel));
        let s = segments(&good);
        let len = URL_SAFE_NO_PAD.decode(&s[2]).unwrap().len();
        for (byte, bit) in [(0, 0), (1, 7), (len / 2, 0), (len / 2 + 1, 3), (len - 2, 1), (len - 1, 0), (len - 1, 7)] {
            cases.push((format!("{kid}: signature byte {byte} bit {bit}"), format!("{}.{}.{}", s[0], s[1], flip_bit(&s[2], byte, bit))));
        }
        let truncated = b64(&URL_SAFE_NO_PAD.decode(&s[2]).unwrap()[..len - 1]);
        cases.push((format!("{kid}: signature one byte short"), format!("{}.{}.{truncated}", s[0], s[1])));
        let longer = b64([URL_SAFE_NO_PAD.decode(&s[2]).unwrap(), vec![0]].concat());
        cases.push((format!("{kid}: signature one byte long"), format!("{}.{}.{longer}", s[0], s[1])));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn wrong_segment_counts_close_4401() {
    // PROTOCOL.md Tokens: compact serialization exactly, three segments, nothing else.
    let mut w = Witness::new("chat").await;
    let good = hs256().mint(Some("hs"), &granting(&w.channel));
    let s = segments(&good);
    let (h, p, sig) = (&s[0], &s[1], &s[2]);
    let cases: Vec<(String, String)> = [
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{good}.{sig}")),
        ("a trailing dot", format!("{good}.")),
        ("a leading dot", format!(".{good}")),
        ("five segments (JWE shape)", format!("{h}.{p}.{sig}.{p}.{sig}")),
        ("empty header segment", format!(".{p}.{sig}")),
        ("empty payload segment", format!("{h}..{sig}")),
        ("empty signature segment", format!("{h}.{p}.")),
        ("only dots", "..".into()),
        ("one dot", ".".into()),
        ("one segment", h.clone()),
        ("double dot inside", format!("{h}.{p}..{sig}")),
    ]
    .into_iter()
    .map(|(l, t)| (l.to_owned(), t))
    .collect();
    let mut failures = expect_closes(&w, cases, 4401).await;
    // The empty token: `bearer.` with nothing after it.
    if let Err(e) = closed_at_once(gw(), &w.path, Some("foyer.v1, bearer."), &[], 4401).await {
        failures.push(format!("empty token: {e}"));
    }
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn padded_base64url_segments_close_4401() {
    // PROTOCOL.md Tokens: three base64url segments without padding.
    let mut w = Witness::new("chat").await;
    let c = granting(&w.channel);
    let (h, p) = (b64_json(&hs_header()), b64_json(&c));
    let good = signed_segments(&hs256(), &h, &p);
    let sig = segments(&good)[2].clone();
    let pad = |s: &str| format!("{s}{}", "=".repeat(((4 - s.len() % 4) % 4).max(1)));
    let cases = vec![
        ("padded signature (same bytes)".to_owned(), format!("{h}.{p}.{}", pad(&sig))),
        ("padded header, signed as sent".to_owned(), signed_segments(&hs256(), &pad(&h), &p)),
        ("padded payload, signed as sent".to_owned(), signed_segments(&hs256(), &h, &pad(&p))),
        ("double padding on the signature".to_owned(), format!("{h}.{p}.{sig}==")),
    ];
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn the_standard_base64_alphabet_closes_4401() {
    // PROTOCOL.md Tokens: base64url exactly; `+` and `/` are not in its alphabet.
    let mut w = Witness::new("chat").await;
    let std_alphabet = |s: &str| s.replace('-', "+").replace('_', "/");
    let mut cases = Vec::new();
    // A signature with `-` or `_` in it: the same bytes in the standard alphabet.
    let (mut n, mut found) = (0, 0);
    while found < 3 && n < 500 {
        n += 1;
        let t = hs256().mint(Some("hs"), &granting(&w.channel));
        let s = segments(&t);
        if s[2].contains(['-', '_']) {
            found += 1;
            cases.push((format!("signature {}", s[2]), format!("{}.{}.{}", s[0], s[1], std_alphabet(&s[2]))));
        }
    }
    assert!(found > 0, "no signature with - or _ in 500 tokens");
    // A header and a payload containing `-`/`_` in their encoding, re-signed as sent.
    let header = json!({"alg": "HS256", "kid": "hs", "x": "\u{fbff}\u{fbff}?>?>"});
    let payload = {
        let mut c = granting(&w.channel);
        c["x"] = json!("\u{fbff}\u{fbff}?>?>");
        c
    };
    let (h, p) = (b64_json(&header), b64_json(&payload));
    assert!(h.contains(['-', '_']) && p.contains(['-', '_']), "{h} / {p}");
    cases.push(("header in the standard alphabet, signed as sent".into(), signed_segments(&hs256(), &std_alphabet(&h), &p)));
    cases.push(("payload in the standard alphabet, signed as sent".into(), signed_segments(&hs256(), &h, &std_alphabet(&p))));
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn stray_trailing_bits_in_a_segment_close_4401() {
    // PROTOCOL.md Tokens: compact serialization exactly — canonical base64url, no stray trailing bits.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for (key, kid) in [(hs256(), "hs"), (eddsa(), "ed"), (es256(), "es")] {
        let t = key.mint(Some(kid), &granting(&w.channel));
        let s = segments(&t);
        cases.push((format!("{kid}: signature (same bytes)"), format!("{}.{}.{}", s[0], s[1], stray_bits(&s[2]))));
    }
    // Header and payload with leftover bits, re-signed as sent.
    let mut c = granting(&w.channel);
    let mut header = hs_header();
    for pad in 0..3 {
        let h = b64_json(&header);
        let p = b64_json(&c);
        if !h.len().is_multiple_of(4) {
            cases.push((format!("header {h}"), signed_segments(&hs256(), &stray_bits(&h), &p)));
        }
        if !p.len().is_multiple_of(4) {
            cases.push((format!("payload (pad {pad})"), signed_segments(&hs256(), &h, &stray_bits(&p))));
        }
        header["x"] = json!("y".repeat(pad + 1));
        c["x"] = json!("y".repeat(pad + 1));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_non_json_header_closes_4401() {
    // PROTOCOL.md Tokens: compact JWS exactly; a header that is not a JSON object is malformed.
    let mut w = Witness::new("chat").await;
    let payload = granting(&w.channel).to_string();
    let mut cases = Vec::new();
    for header in [
        &b"not json"[..],
        b"{alg:HS256,kid:hs}",
        b"{'alg':'HS256','kid':'hs'}",
        br#"{"alg":"HS256","kid":"hs""#,
        br#"{"alg":"HS256","kid":"hs"}garbage"#,
        br#"{"alg":"HS256","kid":"hs"}{}"#,
        br#"["HS256","hs"]"#,
        br#""HS256""#,
        b"null",
        b"",
        b"\xff\xfe{\"alg\":\"HS256\",\"kid\":\"hs\"}",
        b"{\"alg\":\"HS256\",\"kid\":\"h\xffs\"}",
    ] {
        cases.push((format!("header {:?}", String::from_utf8_lossy(header)), signed_raw(&hs256(), header, payload.as_bytes())));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_non_json_payload_closes_4401() {
    // PROTOCOL.md Tokens: the claims must be a JSON object with the required claims.
    let mut w = Witness::new("chat").await;
    let header = hs_header().to_string();
    let good = granting(&w.channel).to_string();
    let mut cases = Vec::new();
    for payload in [
        b"not json".to_vec(),
        good.as_bytes()[..good.len() - 1].to_vec(),
        format!("{good}garbage").into_bytes(),
        format!("{good}{good}").into_bytes(),
        format!("[{good}]").into_bytes(),
        serde_json::to_vec(&good).unwrap(),
        b"null".to_vec(),
        b"42".to_vec(),
        Vec::new(),
        [b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat(),
        good.replacen("\"sub\":\"", "\"sub\":\"\u{1}", 1).into_bytes().into_iter().map(|b| if b == 1 { 0xff } else { b }).collect(),
    ] {
        cases.push((format!("payload {:?}", short(&String::from_utf8_lossy(&payload))), signed_raw(&hs256(), header.as_bytes(), &payload)));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn deeply_nested_json_in_the_header_or_payload_closes_4401() {
    // PROTOCOL.md Tokens: a token the gateway cannot parse strictly is refused (4401), never a crash.
    let mut w = Witness::new("chat").await;
    let header = r#"{"alg":"HS256","kid":"hs"}"#;
    let claims = granting(&w.channel).to_string();
    let arrays = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let objects = |n: usize| r#"{"a":"#.repeat(n) + "1" + &"}".repeat(n);
    let mut cases = Vec::new();
    for (what, deep) in [("2000 nested arrays", arrays(2000)), ("500 nested objects", objects(500))] {
        let h = format!(r#"{{"alg":"HS256","kid":"hs","x":{deep}}}"#);
        cases.push((format!("header with {what}"), signed_raw(&hs256(), h.as_bytes(), claims.as_bytes())));
        let p = format!(r#"{},"x":{deep}}}"#, &claims[..claims.len() - 1]);
        cases.push((format!("claims with {what}"), signed_raw(&hs256(), header.as_bytes(), p.as_bytes())));
        cases.push((format!("claims that are {what}"), signed_raw(&hs256(), header.as_bytes(), deep.as_bytes())));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    // The gateway survived: a good token still gets in.
    let t = token(&unique("after"), &[&w.channel]);
    let alive = welcomed(gw(), &w.path, Some(&offer(&t)), &[]).await;
    verdict(failures.into_iter().chain(alive.err().map(|e| format!("a valid token afterwards: {e}"))).collect());
}

/// A validly signed token for `channel` of exactly `len` bytes.
fn token_of_len(channel: &str, len: usize) -> String {
    let mut c = granting(channel);
    // A base64url segment is never 1 (mod 4) long: vary the header too to reach every length.
    for extra in 0..4 {
        let mut header = hs_header();
        header["x"] = json!("z".repeat(extra));
        c.as_object_mut().unwrap().remove("pad");
        let base = hs256().mint_with_header(&header, &c).len();
        // Start a little short; each pad character adds 4/3 of a token character.
        let mut pad = (len.saturating_sub(base) * 3 / 4).saturating_sub(12);
        loop {
            c["pad"] = json!("p".repeat(pad));
            let t = hs256().mint_with_header(&header, &c);
            match t.len().cmp(&len) {
                std::cmp::Ordering::Equal => return t,
                std::cmp::Ordering::Greater => break,
                std::cmp::Ordering::Less => pad += 1,
            }
        }
    }
    panic!("no token of exactly {len} bytes");
}

#[tokio::test]
async fn a_token_over_8_kib_closes_4401_even_when_validly_signed() {
    // PROTOCOL.md Tokens: tokens over 8 KiB are rejected without being parsed.
    let mut w = Witness::new("chat").await;
    let cases = vec![
        ("8193 bytes".to_owned(), token_of_len(&w.channel, 8193)),
        ("8200 bytes".to_owned(), token_of_len(&w.channel, 8200)),
        ("12 KiB".to_owned(), token_of_len(&w.channel, 12 * 1024)),
        ("8193 bytes of junk".to_owned(), "a".repeat(8193)),
    ];
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_token_of_exactly_8_kib_is_accepted() {
    // PROTOCOL.md Tokens: only tokens *over* 8 KiB are rejected; 8192 bytes is within the limit.
    let room = unique("t8k");
    let channel = format!("orders:{room}");
    let t = token_of_len(&channel, 8192);
    assert_eq!(t.len(), 8192);
    let c = welcomed(gw(), &format!("/ws/orders/{room}"), Some(&offer(&t)), &[]).await;
    verdict(c.err().into_iter().collect());
}

#[tokio::test]
async fn an_unknown_or_empty_kid_closes_4401() {
    // PROTOCOL.md Tokens: unknown `kid` (or none while several keys are configured): reject.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for kid in ["zz", "", "HS", "Hs", "hs ", " hs", "hs\u{0}", "hs\n", "h s", "hs,ed", "*", "hs\u{200b}"] {
        cases.push((format!("kid {kid:?}"), with_header(json!({"alg": "HS256", "kid": kid}), &w.channel)));
    }
    cases.push(("no kid with three keys configured".into(), with_header(json!({"alg": "HS256", "typ": "JWT"}), &w.channel)));
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_very_long_kid_closes_4401() {
    // PROTOCOL.md Tokens: an unknown `kid` is rejected, however long.
    let mut w = Witness::new("chat").await;
    let cases = vec![
        ("kid of 4000 characters".to_owned(), with_header(json!({"alg": "HS256", "kid": "k".repeat(4000)}), &w.channel)),
        ("kid hs repeated 2000 times".to_owned(), with_header(json!({"alg": "HS256", "kid": "hs".repeat(2000)}), &w.channel)),
        ("kid hs then 600 NULs".to_owned(), with_header(json!({"alg": "HS256", "kid": format!("hs{}", "\u{0}".repeat(600))}), &w.channel)),
    ];
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_path_like_kid_closes_4401() {
    // PROTOCOL.md Tokens: keys come from configuration only; `kid` is matched exactly, never resolved.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for kid in [
        "../hs",
        "./hs",
        "hs/../hs",
        "/hs",
        "../../../../../../etc/passwd",
        "..\\..\\hs",
        "%2e%2e%2fhs",
        "file:///etc/passwd",
        "https://evil.example/jwks.json",
        "/dev/null",
    ] {
        cases.push((format!("kid {kid:?}"), with_header(json!({"alg": "HS256", "kid": kid}), &w.channel)));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn an_sql_like_kid_closes_4401() {
    // PROTOCOL.md Tokens: an unknown `kid` is rejected; it is matched exactly against configured kids.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for kid in ["hs' OR '1'='1", "' OR 1=1 --", "hs\"; DROP TABLE events; --", "hs' UNION SELECT 'k", "hs'--", "hs%", "h_"] {
        cases.push((format!("kid {kid:?}"), with_header(json!({"alg": "HS256", "kid": kid}), &w.channel)));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_non_string_kid_closes_4401() {
    // PROTOCOL.md Tokens: `kid` picks the key; a `kid` that is not a string picks none.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for kid in [json!(1), json!(0), json!(1.5), json!(true), json!(null), json!(["hs"]), json!({"kid": "hs"}), json!([])] {
        cases.push((format!("kid {kid}"), with_header(json!({"alg": "HS256", "kid": kid}), &w.channel)));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

/// Tokens carrying header parameter `param` with each value; signed by the real key and, where
/// the parameter embeds one, by the attacker's key too.
async fn forbidden_header_parameter(param: &str, values: Vec<Value>) {
    let mut w = Witness::new("chat").await;
    let attacker = SigningKey::hs256(99);
    let mut cases = Vec::new();
    for value in values {
        let mut header = hs_header();
        header[param] = value.clone();
        cases.push((format!("{param}: {} signed by the real key", short(&value.to_string())), with_header(header.clone(), &w.channel)));
        cases.push((
            format!("{param}: {} signed by the attacker", short(&value.to_string())),
            attacker.mint_with_header(&header, &granting(&w.channel)),
        ));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_jku_header_parameter_closes_4401() {
    // PROTOCOL.md Tokens: header parameter `jku` is rejected (keys come from configuration only).
    forbidden_header_parameter("jku", vec![json!("https://evil.example/jwks.json"), json!(""), json!(null)]).await;
}

#[tokio::test]
async fn a_jwk_header_parameter_closes_4401() {
    // PROTOCOL.md Tokens: header parameter `jwk` is rejected (keys come from configuration only).
    let attacker = SigningKey::hs256(99).jwk(Some("hs"));
    forbidden_header_parameter("jwk", vec![attacker, hs256().jwk(Some("hs")), json!({}), json!(null)]).await;
}

#[tokio::test]
async fn an_x5u_header_parameter_closes_4401() {
    // PROTOCOL.md Tokens: header parameter `x5u` is rejected (keys come from configuration only).
    forbidden_header_parameter("x5u", vec![json!("https://evil.example/cert.pem"), json!(""), json!(null)]).await;
}

#[tokio::test]
async fn an_x5c_header_parameter_closes_4401() {
    // PROTOCOL.md Tokens: header parameter `x5c` is rejected (keys come from configuration only).
    forbidden_header_parameter("x5c", vec![json!(["MIIBszCCAVmgAwIBAgIUW"]), json!([]), json!(null)]).await;
}

#[tokio::test]
async fn a_crit_header_parameter_closes_4401() {
    // PROTOCOL.md Tokens: header parameter `crit` is rejected.
    forbidden_header_parameter("crit", vec![json!(["exp"]), json!(["b64"]), json!([]), json!(null)]).await;
}

// ---------- time claims: PROTOCOL.md "Tokens", leeway 30 s ----------

/// Connects to a fresh orders channel with a token whose claims `edit` sets, minted early in
/// a second so the boundary holds to the second.
async fn time_case(edit: impl FnOnce(&mut Value, i64)) -> (Witness, String) {
    let w = Witness::new("orders").await;
    early_in_a_second().await;
    let now = unix_now();
    let t = edited(&w.channel, |c| edit(c, now));
    (w, t)
}

async fn time_refused(edit: impl FnOnce(&mut Value, i64)) {
    let (mut w, t) = time_case(edit).await;
    let r = closed_at_once(gw(), &w.path, Some(&offer(&t)), &[], 4401).await;
    w.untouched().await;
    verdict(r.err().into_iter().collect());
}

async fn time_accepted(edit: impl FnOnce(&mut Value, i64)) {
    let (w, t) = time_case(edit).await;
    verdict(welcomed(gw(), &w.path, Some(&offer(&t)), &[]).await.err().into_iter().collect());
}

#[tokio::test]
async fn exp_31_seconds_ago_closes_4401() {
    // PROTOCOL.md Tokens: `exp` in the past beyond the 30 s leeway: reject.
    time_refused(|c, now| {
        c["iat"] = json!(now - 400);
        c["exp"] = json!(now - 31);
    })
    .await;
}

#[tokio::test]
async fn exp_29_seconds_ago_is_accepted() {
    // PROTOCOL.md Tokens: `exp` in the past within the 30 s leeway is accepted.
    time_accepted(|c, now| {
        c["iat"] = json!(now - 400);
        c["exp"] = json!(now - 29);
    })
    .await;
}

#[tokio::test]
async fn nbf_31_seconds_ahead_closes_4401() {
    // PROTOCOL.md Tokens: `nbf` in the future beyond the 30 s leeway: reject.
    time_refused(|c, now| c["nbf"] = json!(now + 31)).await;
}

#[tokio::test]
async fn nbf_29_seconds_ahead_is_accepted() {
    // PROTOCOL.md Tokens: `nbf` in the future within the 30 s leeway is accepted.
    time_accepted(|c, now| c["nbf"] = json!(now + 29)).await;
}

#[tokio::test]
async fn iat_31_seconds_ahead_closes_4401() {
    // PROTOCOL.md Tokens: `iat` in the future beyond the 30 s leeway: reject.
    time_refused(|c, now| {
        c["iat"] = json!(now + 31);
        c["exp"] = json!(now + 600);
    })
    .await;
}

#[tokio::test]
async fn iat_29_seconds_ahead_is_accepted() {
    // PROTOCOL.md Tokens: `iat` in the future within the 30 s leeway is accepted.
    time_accepted(|c, now| {
        c["iat"] = json!(now + 29);
        c["exp"] = json!(now + 600);
    })
    .await;
}

#[tokio::test]
async fn a_lifetime_of_900_seconds_is_accepted() {
    // PROTOCOL.md Tokens: `exp - iat` up to the maximum lifetime (default 900 s) is accepted.
    time_accepted(|c, now| {
        c["iat"] = json!(now - 100);
        c["exp"] = json!(now + 800);
    })
    .await;
}

#[tokio::test]
async fn a_lifetime_of_900_seconds_from_now_without_iat_is_accepted() {
    // PROTOCOL.md Tokens: without `iat`, `exp - now` up to the maximum lifetime is accepted.
    time_accepted(|c, now| {
        c.as_object_mut().unwrap().remove("iat");
        c["exp"] = json!(now + 900);
    })
    .await;
}

#[tokio::test]
async fn a_lifetime_of_901_seconds_closes_4401() {
    // PROTOCOL.md Tokens: `exp - iat` above the maximum lifetime (default 900 s): reject.
    time_refused(|c, now| {
        c["iat"] = json!(now - 100);
        c["exp"] = json!(now + 801);
    })
    .await;
}

#[tokio::test]
async fn a_lifetime_of_901_seconds_from_now_without_iat_closes_4401() {
    // PROTOCOL.md Tokens: without `iat`, `exp - now` above the maximum lifetime: reject.
    time_refused(|c, now| {
        c.as_object_mut().unwrap().remove("iat");
        c["exp"] = json!(now + 901);
    })
    .await;
}

#[tokio::test]
async fn time_claims_as_strings_close_4401() {
    // PROTOCOL.md Tokens: time claims must be numbers.
    let mut w = Witness::new("chat").await;
    let now = unix_now();
    let mut cases = Vec::new();
    for (claim, value) in [
        ("exp", json!((now + 600).to_string())),
        ("exp", json!(format!("{}.0", now + 600))),
        ("exp", json!("1e12")),
        ("iat", json!(now.to_string())),
        ("nbf", json!((now - 10).to_string())),
        ("exp", json!(null)),
        ("exp", json!(true)),
        ("exp", json!([now + 600])),
        ("exp", json!({"t": now + 600})),
        ("iat", json!([now])),
        ("nbf", json!(false)),
    ] {
        cases.push((format!("{claim}: {value}"), edited(&w.channel, |c| c[claim] = value.clone())));
    }
    cases.push(("no exp".into(), edited(&w.channel, |c| drop(c.as_object_mut().unwrap().remove("exp")))));
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

// ---------- issuer, audience, subject, grant types ----------

#[tokio::test]
async fn issuer_near_misses_close_4401() {
    // PROTOCOL.md Tokens: `iss` must equal the configured issuer exactly.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for iss in [
        json!("FOYER-TEST"),
        json!("Foyer-test"),
        json!("foyer-test/"),
        json!("foyer-test "),
        json!(" foyer-test"),
        json!("foyer-test\n"),
        json!("foyer-testx"),
        json!("xfoyer-test"),
        json!("foyer-tes"),
        json!("foyer"),
        json!("https://foyer-test"),
        json!(""),
        json!(["foyer-test"]),
        json!({"foyer-test": true}),
        json!(null),
        json!(1),
    ] {
        cases.push((format!("iss {iss}"), edited(&w.channel, |c| c["iss"] = iss.clone())));
    }
    cases.push(("no iss".into(), edited(&w.channel, |c| drop(c.as_object_mut().unwrap().remove("iss")))));
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn audience_near_misses_close_4401() {
    // PROTOCOL.md Tokens: `aud` must be or contain the configured audience (`foyer`), exactly.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for aud in [
        json!("Foyer"),
        json!("FOYER"),
        json!("foyer/"),
        json!("foyer "),
        json!(" foyer"),
        json!("foyerx"),
        json!("xfoyer"),
        json!("foye"),
        json!("foyer,other"),
        json!("foyer other"),
        json!(""),
        json!(["other"]),
        json!(["Foyer", "foyer/", " foyer"]),
        json!([]),
        json!([["foyer"]]),
        json!([{"aud": "foyer"}]),
        json!({"foyer": true}),
        json!(null),
        json!(1),
    ] {
        cases.push((format!("aud {aud}"), edited(&w.channel, |c| c["aud"] = aud.clone())));
    }
    cases.push(("no aud".into(), edited(&w.channel, |c| drop(c.as_object_mut().unwrap().remove("aud")))));
    let mut failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    // The control: an array that contains the audience is accepted.
    let t = edited(&w.channel, |c| c["aud"] = json!(["other", "foyer"]));
    if let Err(e) = welcomed(gw(), &w.path, Some(&offer(&t)), &[]).await {
        failures.push(format!("aud [\"other\", \"foyer\"] (should be accepted): {e}"));
    }
    verdict(failures);
}

#[tokio::test]
async fn a_missing_empty_or_non_string_sub_closes_4401() {
    // PROTOCOL.md Tokens: `sub` is required and must be a non-empty string.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for sub in [json!(""), json!(null), json!(0), json!(42), json!(true), json!(["u"]), json!({"id": "u"})] {
        cases.push((format!("sub {sub}"), edited(&w.channel, |c| c["sub"] = sub.clone())));
    }
    cases.push(("no sub".into(), edited(&w.channel, |c| drop(c.as_object_mut().unwrap().remove("sub")))));
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

fn wrong_grant_types(channel: &str) -> Vec<Value> {
    vec![
        json!(channel),
        json!({channel: true}),
        json!(1),
        json!(true),
        json!(null),
        json!([1]),
        json!([null]),
        json!([[channel]]),
        json!([{"channel": channel}]),
        json!([channel, 1]),
    ]
}

#[tokio::test]
async fn a_channels_claim_of_the_wrong_type_closes_4401() {
    // PROTOCOL.md Tokens: a grant claim of the wrong JSON type makes the token invalid (4401).
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for bad in wrong_grant_types(&w.channel) {
        cases.push((format!("channels {bad}"), edited(&w.channel, |c| c["channels"] = bad.clone())));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_publish_claim_of_the_wrong_type_closes_4401() {
    // PROTOCOL.md Tokens: a grant claim of the wrong JSON type makes the token invalid (4401), even beside valid `channels`.
    let mut w = Witness::new("chat").await;
    let mut cases = Vec::new();
    for bad in wrong_grant_types(&w.channel) {
        cases.push((format!("publish {bad}"), edited(&w.channel, |c| c["publish"] = bad.clone())));
    }
    let failures = expect_closes(&w, cases, 4401).await;
    w.untouched().await;
    verdict(failures);
}

// ---------- grant escalation: PROTOCOL.md "Tokens" (grants), "Connecting" step 5 ----------

fn granted(sub_prefix: &str, channels: Value, publish: Option<Value>) -> String {
    let mut c = claims(&unique(sub_prefix), &[]);
    c["channels"] = channels;
    if let Some(p) = publish {
        c["publish"] = p;
    }
    hs256().mint(Some("hs"), &c)
}

#[tokio::test]
async fn another_orders_payment_grant_closes_4403() {
    // PROTOCOL.md Tokens/Connecting: the token must grant this exact channel, else 4403.
    let mut w = Witness::new("payment").await;
    let k = w.key.clone();
    let mut cases = Vec::new();
    for other in [
        format!("payment:{k}x"),
        format!("payment:{}", &k[..k.len() - 1]),
        format!("payment:{}", k.to_uppercase()),
        format!("payment:x{k}"),
        format!("chat:{k}"),
        format!("orders:{k}"),
        format!("payment:{k}/"),
        format!("payment: {k}"),
        format!("payment:{k} "),
        format!("PAYMENT:{k}"),
    ] {
        cases.push((format!("channels [{other:?}]"), granted("customer", json!([other, "chat:*"]), None)));
    }
    let failures = expect_closes(&w, cases, 4403).await;
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn a_customer_token_on_a_venues_orders_closes_4403() {
    // PROTOCOL.md Tokens/Connecting: a token granting payment and chat channels does not grant orders (4403).
    let mut w = Witness::new("orders").await;
    let k = w.key.clone();
    let cases = vec![
        ("payment and chat of the order".to_owned(), granted("customer", json!([format!("payment:{k}"), format!("chat:{k}")]), None)),
        ("every payment and chat room".to_owned(), granted("customer", json!(["payment:*", "chat:*"]), None)),
        ("publish grant on the orders channel".to_owned(), granted("customer", json!([format!("payment:{k}")]), Some(json!([w.channel])))),
    ];
    let failures = expect_closes(&w, cases, 4403).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_publish_grant_alone_does_not_allow_subscribing_4403() {
    // PROTOCOL.md Tokens: a `publish` grant alone does not let the holder subscribe (4403).
    let mut w = Witness::new("chat").await;
    let cases = vec![
        ("publish [channel], channels []".to_owned(), granted("poster", json!([]), Some(json!([w.channel])))),
        ("publish [chat:*], channels []".to_owned(), granted("poster", json!([]), Some(json!(["chat:*"])))),
        ("publish [channel], no channels claim".to_owned(), {
            let mut c = claims(&unique("poster"), &[]);
            c.as_object_mut().unwrap().remove("channels");
            c["publish"] = json!([w.channel]);
            hs256().mint(Some("hs"), &c)
        }),
    ];
    let failures = expect_closes(&w, cases, 4403).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_chat_wildcard_does_not_grant_orders_or_payment_4403() {
    // PROTOCOL.md Tokens: `KIND:*` grants every channel of that kind only.
    let mut orders = Witness::new("orders").await;
    let mut payment = Witness::new("payment").await;
    let mut failures = expect_closes(&orders, vec![("chat:*".into(), granted("admin", json!(["chat:*"]), None))], 4403).await;
    failures.extend(
        expect_closes(&payment, vec![("chat:* and orders:*".into(), granted("admin", json!(["chat:*", "orders:*"]), None))], 4403).await,
    );
    orders.untouched().await;
    payment.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn malformed_wildcard_entries_grant_nothing_4403() {
    // PROTOCOL.md Tokens: only an entry exactly `KIND:*` is a wildcard; `orders:v1*`, `orders:*x` and the like grant nothing.
    let mut w = Witness::new("orders").await;
    let k = w.key.clone();
    let mut cases = Vec::new();
    for entry in [
        format!("orders:{}*", &k[..2]),
        format!("orders:{k}*"),
        format!("orders:*{}", &k[k.len() - 2..]),
        "orders:*x".into(),
        "orders:**".into(),
        "orders:* ".into(),
        " orders:*".into(),
        "orders:.*".into(),
        "orders:%2A".into(),
        "orders:".into(),
        "orders".into(),
        "ORDERS:*".into(),
        "Orders:*".into(),
        "*".into(),
        "*:*".into(),
        format!("*:{k}"),
        "orders:*:*".into(),
        format!("orders:{k}?"),
        format!("orders:{k}\u{0}"),
    ] {
        cases.push((format!("channels [{entry:?}]"), granted("admin", json!([entry]), None)));
    }
    let failures = expect_closes(&w, cases, 4403).await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn odd_paths_and_since_values_never_reach_a_channel() {
    // PROTOCOL.md Connecting step 1: unknown kind 404, malformed key 400, any other path under /ws/ 404; `since` not a non-negative integer 400.
    let mut w = Witness::new("orders").await;
    let admin = token(&unique("admin"), &["orders:*"]);
    let k = w.key.clone();
    let mut cases: Vec<(String, u16)> = vec![
        (format!("/ws/orders/{k}%00"), 400),
        (format!("/ws/orders/{k}%20"), 400),
        (format!("/ws/orders/{k}%2A"), 400),
        ("/ws/orders/%2A".into(), 400),
        ("/ws/orders/%C3%A9".into(), 400),
        (format!("/ws/orders/{k}.json"), 400),
        (format!("/ws/orders/{}", "k".repeat(65)), 400),
        (format!("/ws/ORDERS/{k}"), 404),
        (format!("/ws/order/{k}"), 404),
        (format!("/ws/orders:{k}"), 404),
        (format!("/ws//orders/{k}"), 404),
        (format!("/ws/orders/{k}/x"), 404),
        (format!("/ws/orders/{k}//"), 404),
    ];
    for since in ["1.0", "+1", "%201", "1e3", "", "0x1", "99999999999999999999999", "-0"] {
        cases.push((format!("{}?since={since}", w.path), 400));
    }
    let o = offer(&admin);
    let failures = all(cases
        .into_iter()
        .map(|(path, status)| {
            let o = o.clone();
            (path.clone(), async move { refused_http(gw(), &path, Some(&o), &[], status).await })
        })
        .collect())
    .await;
    w.untouched().await;
    verdict(failures);
}

// ---------- Origin: PROTOCOL.md "Connecting" step 3 ----------

/// Every origin must be refused with HTTP 403 and no upgrade, on a witness's channel.
async fn origins_refused(origins: Vec<String>) {
    let mut w = Witness::new("orders").await;
    let t = token(&unique("u"), &[&w.channel]);
    let o = offer(&t);
    let path = w.path.clone();
    let failures = all(origins
        .into_iter()
        .map(|origin| {
            let (o, path) = (o.clone(), path.clone());
            (format!("Origin {origin:?}"), async move { refused_http(gw(), &path, Some(&o), &[("Origin", &origin)], 403).await })
        })
        .collect())
    .await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn origin_suffix_and_prefix_tricks_are_refused_403() {
    // PROTOCOL.md Connecting: exact string match only, no suffix or prefix matching (403, no upgrade).
    origins_refused(
        [
            "https://shop.example.evil.com",
            "https://shop.example.com",
            "https://evil-shop.example",
            "https://evilshop.example",
            "https://sub.shop.example",
            "https://shop.exampl",
            "https://shop.examplee",
            "https://shop.example@evil.com",
            "https://evil.com#https://shop.example",
            "https://evil.com?https://shop.example",
            "https://evil.com/https://shop.example",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
}

#[tokio::test]
async fn origin_with_another_scheme_or_port_is_refused_403() {
    // PROTOCOL.md Connecting: the origin is scheme, host and port, matched exactly (403, no upgrade).
    origins_refused(
        [
            "http://shop.example",
            "https://shop.example:443",
            "https://shop.example:8443",
            "wss://shop.example",
            "ws://shop.example",
            "shop.example",
            "//shop.example",
            "file://shop.example",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
}

#[tokio::test]
async fn origin_case_variants_are_refused_403() {
    // PROTOCOL.md Connecting: exact string match only, so case variants are refused (403).
    origins_refused(["https://SHOP.EXAMPLE", "HTTPS://shop.example", "https://Shop.Example"].map(String::from).to_vec()).await;
}

#[tokio::test]
async fn a_null_origin_is_refused_403() {
    // PROTOCOL.md Connecting: an Origin header, when present, must be in the allow-list or the gateway's own (403); `null` is neither.
    origins_refused(["null", "NULL", "undefined", "*"].map(String::from).to_vec()).await;
}

#[tokio::test]
async fn origin_with_a_trailing_slash_or_path_is_refused_403() {
    // PROTOCOL.md Connecting: exact string match only (an origin has no path), 403.
    origins_refused(
        ["https://shop.example/", "https://shop.example/app", "https://shop.example.", "https://shop.example/."].map(String::from).to_vec(),
    )
    .await;
}

#[tokio::test]
async fn several_origins_in_one_header_are_refused_403() {
    // PROTOCOL.md Connecting: exact string match only; a list containing the allowed origin is not it (403).
    origins_refused(
        [
            "https://shop.example https://evil.example",
            "https://evil.example https://shop.example",
            "https://shop.example, https://evil.example",
            "https://shop.example,https://shop.example",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
}

#[tokio::test]
async fn two_origin_headers_are_refused_403() {
    // PROTOCOL.md Connecting: exact string match only; two Origin headers are not the allowed origin (403).
    let mut w = Witness::new("orders").await;
    let t = token(&unique("u"), &[&w.channel]);
    let mut failures = Vec::new();
    for (first, second) in [("https://shop.example", "https://evil.example"), ("https://evil.example", "https://shop.example")] {
        let protocols = offer(&t);
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", protocols.as_str()),
            ("Origin", first),
            ("Origin", second),
        ];
        match http(gw().port, "GET", &w.path, &headers, b"").await {
            Ok(r) if r.status == 403 => {}
            Ok(r) => failures.push(format!("Origin {first} + Origin {second}: HTTP {} instead of 403", r.status)),
            Err(e) => failures.push(format!("Origin {first} + Origin {second}: {e}")),
        }
    }
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn near_misses_of_the_gateways_own_origin_are_refused_403_and_exact_origins_accepted() {
    // PROTOCOL.md Connecting: the gateway's own origin (scheme, host, port) and allow-listed origins only, exactly.
    // Not here: the own origin with another scheme (`https://`, `HTTP://`). `wrangler dev`'s
    // proxy (4.164; workers-sdk pull request 14658) rewrites every URL in a request header that
    // names its own host and port, scheme included, to the Worker's origin, so the Worker sees
    // the exact own origin; the unit test `origins_match_exactly` covers them instead.
    let port = gw().port;
    origins_refused(vec![
        "http://127.0.0.1".into(),
        format!("http://127.0.0.1:{}", port + 1),
        format!("ws://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.0.0.01:{port}"),
        format!("http://2130706433:{port}"),
        format!("http://[::1]:{port}"),
        format!("http://127.0.0.1:0{port}"),
    ])
    .await;
    // The controls: the exact allowed origin and the exact own origin get in.
    let room = unique("origin-ok");
    let t = token(&unique("u"), &[&format!("orders:{room}")]);
    let own = format!("http://127.0.0.1:{port}");
    let mut failures = Vec::new();
    for origin in ["https://shop.example", own.as_str()] {
        if let Err(e) = welcomed(gw(), &format!("/ws/orders/{room}"), Some(&offer(&t)), &[("Origin", origin)]).await {
            failures.push(format!("Origin {origin} (should be accepted): {e}"));
        }
    }
    verdict(failures);
}

// ---------- subprotocol: PROTOCOL.md "Connecting" ----------

#[tokio::test]
async fn a_token_without_foyer_v1_is_a_400() {
    // PROTOCOL.md Connecting: an offer with a token but without `foyer.v1` is malformed (HTTP 400).
    let mut w = Witness::new("orders").await;
    let t = token(&unique("u"), &[&w.channel]);
    let path = w.path.clone();
    let offers = [
        format!("foyer.v2, bearer.{t}"),
        format!("FOYER.V1, bearer.{t}"),
        format!("foyer.v1x, bearer.{t}"),
        format!("foyer, bearer.{t}"),
        format!("x-foyer.v1, bearer.{t}"),
        format!("bearer.{t}, foyer.v1.1"),
    ];
    let failures = all(offers
        .into_iter()
        .map(|o| {
            let path = path.clone();
            (short(&o.replace(&t, "<token>")), async move { refused_http(gw(), &path, Some(&o), &[], 400).await })
        })
        .collect())
    .await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn two_bearer_tokens_are_a_400() {
    // PROTOCOL.md Connecting: an offer with two tokens is malformed (HTTP 400), even when one is valid.
    let mut w = Witness::new("orders").await;
    let t = token(&unique("u"), &[&w.channel]);
    let other = token(&unique("v"), &[&w.channel]);
    let path = w.path.clone();
    let offers = [
        format!("foyer.v1, bearer.{t}, bearer.not-a-token"),
        format!("bearer.not-a-token, foyer.v1, bearer.{t}"),
        format!("foyer.v1, bearer.{t}, bearer.{other}"),
        format!("foyer.v1,bearer.{t},bearer.{t}"),
        format!("foyer.v1, bearer.{t}, bearer."),
    ];
    let failures = all(offers
        .into_iter()
        .map(|o| {
            let path = path.clone();
            let label = short(&o.replace(&t, "<token>").replace(&other, "<other>"));
            (label, async move { refused_http(gw(), &path, Some(&o), &[], 400).await })
        })
        .collect())
    .await;
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_bearer_with_an_empty_token_closes_4401_with_foyer_v1_selected() {
    // PROTOCOL.md Connecting: a missing/invalid token is accepted-then-closed 4401, selecting `foyer.v1`.
    let mut w = Witness::new("orders").await;
    let mut failures = Vec::new();
    for o in ["foyer.v1, bearer.", "bearer., foyer.v1", "foyer.v1,bearer."] {
        if let Err(e) = closed_at_once(gw(), &w.path, Some(o), &[], 4401).await {
            failures.push(format!("{o:?}: {e}"));
        }
    }
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_query_token_is_ignored_when_the_deployment_does_not_allow_it() {
    // PROTOCOL.md Connecting: `?token=` is accepted only with ALLOW_QUERY_TOKEN=true; by default it is ignored (4401).
    let mut w = Witness::new("orders").await;
    let t = token(&unique("legacy"), &[&w.channel]);
    let mut failures = Vec::new();
    for path in [format!("{}?token={t}", w.path), format!("{}?since=0&token={t}", w.path), format!("{}/?token={t}", w.path)] {
        if let Err(e) = closed_at_once(gw(), &path, Some("foyer.v1"), &[], 4401).await {
            failures.push(format!("{}: {e}", path.replace(&t, "<token>")));
        }
    }
    // Ignored also means: a bearer token next to a junk query token is not "two tokens".
    let good = token(&unique("u"), &[&w.channel]);
    match welcomed(gw(), &format!("{}?token=junk", w.path), Some(&offer(&good)), &[]).await {
        Ok(c) => c.close().await,
        Err(e) => failures.push(format!("bearer with ?token=junk: {e}")),
    }
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_query_token_is_accepted_when_the_deployment_allows_it() {
    // PROTOCOL.md Connecting: with ALLOW_QUERY_TOKEN=true, `?token=<JWT>` is accepted; `foyer.v1` is selected, never the token.
    let qgw = query_gw();
    let mut w = Witness::on(qgw, "orders").await;
    let t = token(&unique("legacy"), &[&w.channel]);
    let mut failures = Vec::new();
    match welcomed(qgw, &format!("{}?token={t}", w.path), Some("foyer.v1"), &[]).await {
        Ok(c) => c.close().await,
        Err(e) => failures.push(format!("?token=<valid> offering foyer.v1: {e}")),
    }
    let forged = SigningKey::hs256(99).mint(Some("hs"), &granting(&w.channel));
    if let Err(e) = closed_at_once(qgw, &format!("{}?token={forged}", w.path), Some("foyer.v1"), &[], 4401).await {
        failures.push(format!("?token=<forged>: {e}"));
    }
    let none = format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(&granting(&w.channel)));
    if let Err(e) = closed_at_once(qgw, &format!("{}?token={none}", w.path), Some("foyer.v1"), &[], 4401).await {
        failures.push(format!("?token=<alg none>: {e}"));
    }
    if let Err(e) = refused_http(qgw, &format!("{}?token={t}", w.path), Some(&offer(&t)), &[], 400).await {
        failures.push(format!("?token= and a bearer token together (two tokens): {e}"));
    }
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_query_token_without_any_subprotocol_offer_is_accepted_when_allowed() {
    // PROTOCOL.md Connecting: ALLOW_QUERY_TOKEN exists for legacy clients; one that offers no subprotocol must still get in (RFC 6455: no subprotocol may be selected that was not offered).
    let qgw = query_gw();
    let room = unique("legacy");
    let t = token(&unique("legacy"), &[&format!("orders:{room}")]);
    let r = welcomed(qgw, &format!("/ws/orders/{room}?token={t}"), None, &[]).await;
    verdict(r.err().map(|e| format!("?token=<valid> with no Sec-WebSocket-Protocol: {e}")).into_iter().collect());
}

#[tokio::test]
async fn the_token_is_never_echoed_in_the_handshake_response() {
    // PROTOCOL.md Connecting: the server selects `foyer.v1` and never echoes the token back.
    let room = unique("echo");
    let channel = format!("orders:{room}");
    let path = format!("/ws/orders/{room}");
    let t = token(&unique("u"), &[&channel]);
    let forged = SigningKey::hs256(99).mint(Some("hs"), &granting(&channel));
    let mut failures = Vec::new();
    for (label, tok) in [("accepted", &t), ("refused 4401", &forged)] {
        for protocols in [format!("bearer.{tok}, foyer.v1"), format!("foyer.v1, bearer.{tok}")] {
            let headers = [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Protocol", protocols.as_str()),
            ];
            match http(gw().port, "GET", &path, &headers, b"").await {
                Ok(r) => {
                    let selected = r.header("Sec-WebSocket-Protocol");
                    if r.status != 101 || selected != Some("foyer.v1") {
                        failures.push(format!("{label}: HTTP {} with Sec-WebSocket-Protocol {selected:?}", r.status));
                    }
                    let sig = segments(tok)[2].clone();
                    if r.headers.iter().any(|(k, v)| k.contains(sig.as_str()) || v.contains(sig.as_str()))
                        || String::from_utf8_lossy(&r.body).contains(&sig)
                    {
                        failures.push(format!("{label}: the token appears in the handshake response"));
                    }
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    verdict(failures);
}

// ---------- publish forgeries: PROTOCOL.md "Publishing" ----------

const JSON_CT: (&str, &str) = ("Content-Type", "application/json");

fn message(id: &str, channels: &[&str]) -> Value {
    json!({"id": id, "channels": channels, "event": "order.updated", "data": {"order": id, "total": 100}})
}

fn sign_at(t: i64, body: &[u8]) -> String {
    signature::sign(PUBLISH_SECRET.as_bytes(), t, "/publish", body)
}

/// The hex HMAC over `"<t>.<path>." + body` with `t` exactly as written.
fn mac_hex(secret: &str, t: &str, path: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(format!("{t}.{path}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

async fn post_signed(body: &[u8], sig: &str) -> HttpResponse {
    gw().post("/publish", body, &[JSON_CT, ("X-Foyer-Signature", sig)]).await
}

/// The status PROTOCOL.md names, and for errors the JSON shape `{"error", "message"}`.
fn expect_status(label: &str, r: &HttpResponse, status: u16) -> Result<(), String> {
    let body = short(&String::from_utf8_lossy(&r.body));
    if r.status != status {
        return Err(format!("{label}: HTTP {} instead of {status} ({body})", r.status));
    }
    if status >= 400 {
        match serde_json::from_slice::<Value>(&r.body) {
            Ok(v) if v["error"].is_string() && v["message"].is_string() => {}
            _ => return Err(format!("{label}: error body is not {{\"error\", \"message\"}}: {body}")),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_publish_with_one_tampered_byte_is_401_and_changes_nothing() {
    // PROTOCOL.md Publishing: the HMAC covers `t`, the path and the raw body; any change is 401.
    let mut w = Witness::new("payment").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let t = unix_now();
    let sig = sign_at(t, body.as_bytes());
    let mut failures = Vec::new();
    let tampered_body = body.replacen("100", "900", 1);
    assert_ne!(tampered_body, body);
    failures.extend(expect_status("one body byte changed", &post_signed(tampered_body.as_bytes(), &sig).await, 401).err());
    let appended = format!("{body} ");
    failures.extend(expect_status("one byte appended to the body", &post_signed(appended.as_bytes(), &sig).await, 401).err());
    let hex = sig.split("v1=").nth(1).unwrap();
    let flipped = format!("{}{}", if hex.starts_with('0') { '1' } else { '0' }, &hex[1..]);
    failures.extend(
        expect_status("one signature digit changed", &post_signed(body.as_bytes(), &format!("t={t},v1={flipped}")).await, 401).err(),
    );
    let moved = format!("t={},v1={hex}", t - 1);
    failures.extend(expect_status("t moved by one second", &post_signed(body.as_bytes(), &moved).await, 401).err());
    let short_tag = format!("t={t},v1={}", &hex[..62]);
    failures.extend(expect_status("signature one byte short", &post_signed(body.as_bytes(), &short_tag).await, 401).err());
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn a_signature_for_another_path_is_401_on_publish_and_changes_nothing() {
    // PROTOCOL.md Publishing: `<path>` is in the HMAC, so a signature is valid for one endpoint only (/revoke's fails on /publish).
    let mut w = Witness::new("payment").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let mut failures = Vec::new();
    for path in ["/revoke", "/publish/", "publish", "", "/PUBLISH", "http://127.0.0.1/publish"] {
        let sig = signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), path, body.as_bytes());
        failures.extend(expect_status(&format!("signed for {path:?}"), &post_signed(body.as_bytes(), &sig).await, 401).err());
    }
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn publish_timestamps_301_seconds_off_are_401_and_change_nothing() {
    // PROTOCOL.md Publishing: `t` more than 300 s from the gateway's clock, in either direction: reject.
    let mut w = Witness::new("payment").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let mut failures = Vec::new();
    early_in_a_second().await;
    for offset in [-301, 301, -3600, 3600, -unix_now()] {
        let sig = sign_at(unix_now() + offset, body.as_bytes());
        failures.extend(expect_status(&format!("t = now {offset:+}"), &post_signed(body.as_bytes(), &sig).await, 401).err());
    }
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn publish_timestamps_299_seconds_off_are_accepted() {
    // PROTOCOL.md Publishing: `t` within 300 s of the gateway's clock, either direction, is accepted.
    let room = unique("skew");
    let channel = format!("payment:{room}");
    let mut failures = Vec::new();
    early_in_a_second().await;
    for (i, offset) in [-299, 299].into_iter().enumerate() {
        let body = message(&unique("e"), &[&channel]).to_string();
        let r = post_signed(body.as_bytes(), &sign_at(unix_now() + offset, body.as_bytes())).await;
        match expect_status(&format!("t = now {offset:+}"), &r, 200) {
            Ok(()) if r.json()["results"][0]["seq"] == i as u64 + 1 => {}
            Ok(()) => failures.push(format!("t = now {offset:+}: unexpected result {}", r.json())),
            Err(e) => failures.push(e),
        }
    }
    verdict(failures);
}

#[tokio::test]
async fn a_non_integer_signature_timestamp_is_401() {
    // PROTOCOL.md Publishing: `t` is an integer; anything else is refused (401), even with a MAC over it as written.
    let mut w = Witness::new("orders").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let now = unix_now();
    let mut failures = Vec::new();
    for t in [
        format!("{now}.0"),
        format!("{now}.5"),
        format!("{}e0", now),
        "1.7e9".to_owned(),
        format!("0x{now:x}"),
        format!("-{now}"),
        format!(" {now}x"),
        format!("{now}abc"),
        String::new(),
        "now".into(),
        "99999999999999999999999".into(),
    ] {
        let header = format!("t={t},v1={}", mac_hex(PUBLISH_SECRET, &t, "/publish", body.as_bytes()));
        failures.extend(expect_status(&format!("t={t:?}"), &post_signed(body.as_bytes(), &header).await, 401).err());
    }
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn a_signature_without_v1_is_401() {
    // PROTOCOL.md Publishing: the header is `t=...,v1=<hex>`; without a `v1` entry it is refused (401).
    let mut w = Witness::new("orders").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let t = unix_now();
    let hex = mac_hex(PUBLISH_SECRET, &t.to_string(), "/publish", body.as_bytes());
    let mut failures = Vec::new();
    for header in [
        format!("t={t}"),
        format!("t={t},v2={hex}"),
        format!("t={t},v0={hex}"),
        format!("t={t},v1="),
        format!("t={t},v1"),
        format!("t={t},{hex}"),
        format!("v1={hex}"),
        hex.clone(),
        String::new(),
    ] {
        failures.extend(
            expect_status(&format!("{:?}", header.replace(&hex, "<hex>")), &post_signed(body.as_bytes(), &header).await, 401).err(),
        );
    }
    w.untouched().await;
    verdict(failures);
}

#[tokio::test]
async fn every_signature_refusal_gets_one_uniform_401() {
    // PROTOCOL.md Publishing: 401 for signature missing, wrong or stale — one uniform answer.
    let w = Witness::new("orders").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let now = unix_now();
    let answers = [
        ("missing", gw().post("/publish", body.as_bytes(), &[JSON_CT]).await),
        ("wrong secret", post_signed(body.as_bytes(), &signature::sign(b"wrong", now, "/publish", body.as_bytes())).await),
        ("stale", post_signed(body.as_bytes(), &sign_at(now - 1000, body.as_bytes())).await),
        ("malformed", post_signed(body.as_bytes(), "garbage").await),
    ];
    let first: Value = serde_json::from_slice(&answers[0].1.body).unwrap_or(Value::Null);
    let mut failures = Vec::new();
    for (label, r) in &answers {
        failures.extend(expect_status(label, r, 401).err());
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status == 401 && v["error"] != first["error"] {
            failures.push(format!("{label}: error {} differs from {}", v["error"], first["error"]));
        }
    }
    verdict(failures);
}

#[tokio::test]
async fn uppercase_signature_hex_is_accepted() {
    // PROTOCOL.md Publishing: hex digits of the signature may be in either case.
    let room = unique("hexcase");
    let channel = format!("orders:{room}");
    let mut failures = Vec::new();
    for (i, case) in ["upper", "mixed"].into_iter().enumerate() {
        let body = message(&unique("e"), &[&channel]).to_string();
        let t = unix_now();
        let hex = mac_hex(PUBLISH_SECRET, &t.to_string(), "/publish", body.as_bytes());
        let hex = match case {
            "upper" => hex.to_uppercase(),
            _ => hex.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect(),
        };
        let r = post_signed(body.as_bytes(), &format!("t={t},v1={hex}")).await;
        match expect_status(case, &r, 200) {
            Ok(()) if r.json()["results"][0]["seq"] == i as u64 + 1 => {}
            Ok(()) => failures.push(format!("{case}: unexpected result {}", r.json())),
            Err(e) => failures.push(e),
        }
    }
    verdict(failures);
}

#[tokio::test]
async fn several_v1_entries_with_one_right_are_accepted() {
    // PROTOCOL.md Publishing: several `v1=` entries may be given (rotation); one match suffices.
    let room = unique("multi");
    let channel = format!("orders:{room}");
    let mut failures = Vec::new();
    type Shape<'a> = &'a dyn Fn(&str, &str, i64) -> String;
    let shapes: [Shape; 4] = [
        &|right, wrong, t| format!("t={t},v1={wrong},v1={right}"),
        &|right, wrong, t| format!("t={t},v1={right},v1={wrong}"),
        &|right, wrong, t| format!("t={t},v1={wrong},v1={wrong},v1={right},v1={}", "0".repeat(64)),
        &|right, _, t| format!("t={t}, v1={}, v1={right}", "f".repeat(64)),
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let body = message(&unique("e"), &[&channel]).to_string();
        let t = unix_now();
        let right = mac_hex(OLD_PUBLISH_SECRET, &t.to_string(), "/publish", body.as_bytes());
        let wrong = mac_hex("not-a-configured-secret", &t.to_string(), "/publish", body.as_bytes());
        let header = shape(&right, &wrong, t);
        let r = post_signed(body.as_bytes(), &header).await;
        match expect_status(&format!("shape {i}"), &r, 200) {
            Ok(()) if r.json()["results"][0]["seq"] == i as u64 + 1 => {}
            Ok(()) => failures.push(format!("shape {i}: unexpected result {}", r.json())),
            Err(e) => failures.push(e),
        }
    }
    verdict(failures);
}

/// A batch for `channel` of exactly `len` bytes (JSON padded with trailing spaces) whose
/// messages each carry under 64 KiB of data.
fn batch_of_len(channel: &str, len: usize) -> Vec<u8> {
    let messages: Vec<Value> = (0..5)
        .map(|i| json!({"id": unique(&format!("big{i}")), "channels": [channel], "event": "bulk", "data": "d".repeat(52_000)}))
        .collect();
    let mut body = json!({"messages": messages}).to_string().into_bytes();
    assert!(body.len() <= len, "base batch too large");
    body.resize(len, b' ');
    body
}

#[tokio::test]
async fn an_oversized_publish_body_is_413_before_the_signature_is_checked() {
    // PROTOCOL.md Publishing: body limit 256 KiB (413), enforced before the signature is computed.
    let mut w = Witness::new("payment").await;
    let mut failures = Vec::new();
    let over = batch_of_len(&w.channel, 256 * 1024 + 1);
    let cases = [
        ("validly signed", sign_at(unix_now(), &over)),
        ("wrongly signed", signature::sign(b"wrong", unix_now(), "/publish", &over)),
        ("unsigned garbage", String::new()),
    ];
    for (label, sig) in cases {
        let r = if sig.is_empty() {
            gw().post("/publish", &vec![b'x'; 256 * 1024 + 1], &[JSON_CT]).await
        } else {
            post_signed(&over, &sig).await
        };
        failures.extend(expect_status(label, &r, 413).err());
    }
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn a_publish_body_of_exactly_256_kib_is_accepted() {
    // PROTOCOL.md Publishing: the body limit is 256 KiB; a body of exactly that size is within it.
    let channel = format!("orders:{}", unique("exact"));
    let body = batch_of_len(&channel, 256 * 1024);
    let r = post_signed(&body, &sign_at(unix_now(), &body)).await;
    verdict(expect_status("262144-byte body", &r, 200).err().into_iter().collect());
}

#[tokio::test]
async fn a_wrong_content_type_is_415_before_the_signature_is_checked() {
    // PROTOCOL.md Publishing: `Content-Type` must be application/json; checks run content type (415) before signature (401).
    let mut w = Witness::new("payment").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let sig = sign_at(unix_now(), body.as_bytes());
    let mut failures = Vec::new();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        Some("application/json-patch+json"),
        Some("text/json"),
        Some("application/javascript"),
        Some(""),
        None,
    ] {
        for (signed, sig) in [("valid signature", Some(sig.as_str())), ("no signature", None)] {
            let mut headers = Vec::new();
            if let Some(ct) = ct {
                headers.push(("Content-Type", ct));
            }
            if let Some(sig) = sig {
                headers.push(("X-Foyer-Signature", sig));
            }
            let r = gw().post("/publish", body.as_bytes(), &headers).await;
            failures.extend(expect_status(&format!("Content-Type {ct:?}, {signed}"), &r, 415).err());
        }
    }
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn non_post_methods_on_publish_are_405() {
    // PROTOCOL.md Publishing: `POST /publish`; the method is checked first (405), even with a valid signed body.
    let mut w = Witness::new("payment").await;
    let body = message(&unique("e"), &[&w.channel]).to_string();
    let sig = sign_at(unix_now(), body.as_bytes());
    let mut failures = Vec::new();
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let payload: &[u8] = if method == "GET" { b"" } else { body.as_bytes() };
        match http(gw().port, method, "/publish", &[JSON_CT, ("X-Foyer-Signature", &sig)], payload).await {
            Ok(r) => failures.extend(expect_status(method, &r, 405).err()),
            Err(e) => failures.push(format!("{method}: {e}")),
        }
    }
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn malformed_publish_bodies_are_400_and_change_nothing() {
    // PROTOCOL.md Publishing: malformed JSON, a missing field or a malformed channel is 400; a rejected request changes nothing.
    let mut w = Witness::new("payment").await;
    let ch = w.channel.clone();
    let ok = |id: &str| message(id, &[&ch]);
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("not JSON".into(), b"{not json".to_vec()),
        ("empty".into(), Vec::new()),
        ("truncated".into(), {
            let s = ok("t").to_string();
            s.as_bytes()[..s.len() - 1].to_vec()
        }),
        ("trailing garbage".into(), format!("{}x", ok("t")).into_bytes()),
        ("two objects".into(), format!("{}{}", ok("t"), ok("u")).into_bytes()),
        ("invalid UTF-8".into(), [ok("t").to_string().as_bytes(), b"\xff"].concat()),
        ("a JSON array".into(), json!([ok("t")]).to_string().into_bytes()),
        ("a JSON string".into(), b"\"x\"".to_vec()),
        ("null".into(), b"null".to_vec()),
    ];
    let mut values = vec![
        ("no id", json!({"channels": [ch], "event": "e"})),
        ("empty id", json!({"id": "", "channels": [ch], "event": "e"})),
        ("numeric id", json!({"id": 7, "channels": [ch], "event": "e"})),
        ("null id", json!({"id": null, "channels": [ch], "event": "e"})),
        ("no event", json!({"id": "x", "channels": [ch]})),
        ("empty event", json!({"id": "x", "channels": [ch], "event": ""})),
        ("event of 129 characters", json!({"id": "x", "channels": [ch], "event": "e".repeat(129)})),
        ("numeric event", json!({"id": "x", "channels": [ch], "event": 1})),
        ("no channels", json!({"id": "x", "event": "e"})),
        ("empty channels", json!({"id": "x", "channels": [], "event": "e"})),
        ("channels as a string", json!({"id": "x", "channels": ch, "event": "e"})),
        ("messages empty", json!({"messages": []})),
        ("messages an object", json!({"messages": ok("x")})),
        ("messages with a number", json!({"messages": [ok("x"), 1]})),
        ("messages with null", json!({"messages": [null]})),
        ("same id twice", json!({"messages": [ok("x"), ok("x")]})),
    ];
    for bad in [
        "orders:*".to_owned(),
        "payment:*".into(),
        format!("payment:{}", "k".repeat(65)),
        "Payment:x".into(),
        "payment:x y".into(),
        "payment:x/y".into(),
        "payment:é".into(),
        "payment:".into(),
        "payment".into(),
        ":x".into(),
        "news:x".into(),
        " payment:x".into(),
    ] {
        values.push(("bad channel", json!({"id": "x", "channels": [ch, bad], "event": "e"})));
    }
    values.push(("channel that is a number", json!({"id": "x", "channels": [ch, 7], "event": "e"})));
    bodies.extend(values.into_iter().map(|(l, v)| (format!("{l}: {}", short(&v.to_string())), v.to_string().into_bytes())));
    let mut failures = Vec::new();
    for (label, body) in bodies {
        let r = post_signed(&body, &sign_at(unix_now(), &body)).await;
        failures.extend(expect_status(&label, &r, 400).err());
    }
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn a_batch_whose_last_message_is_bad_delivers_nothing_on_any_channel() {
    // PROTOCOL.md Publishing: a batch is validated whole before any message of it is delivered.
    let mut a = Witness::new("orders").await;
    let mut b = Witness::new("payment").await;
    let mut c = Witness::new("chat").await;
    let mut failures = Vec::new();
    let first = |i: &str| vec![message(&unique(i), &[&a.channel, &b.channel]), message(&unique(i), &[&c.channel])];
    let mut bad_channel = first("x");
    bad_channel.push(message(&unique("bad"), &[&c.channel, "chat:bad key"]));
    let r = gw().publish(&json!({"messages": bad_channel})).await;
    failures.extend(expect_status("last message with a malformed channel", &r, 400).err());
    let mut too_big = first("y");
    too_big.push(json!({"id": unique("big"), "channels": [a.channel], "event": "e", "data": "x".repeat(64 * 1024)}));
    let r = gw().publish(&json!({"messages": too_big})).await;
    failures.extend(expect_status("last message with data over 64 KiB", &r, 413).err());
    let mut no_event = first("z");
    no_event.push(json!({"id": unique("noevent"), "channels": [b.channel]}));
    let r = gw().publish(&json!({"messages": no_event})).await;
    failures.extend(expect_status("last message without event", &r, 400).err());
    for w in [&mut a, &mut b, &mut c] {
        w.untouched().await;
        w.replay_holds_only_probes().await;
    }
    verdict(failures);
}

#[tokio::test]
async fn a_batch_of_101_messages_is_400_and_delivers_nothing() {
    // PROTOCOL.md Publishing: 1..=100 messages a batch (400 beyond); a rejected request changes nothing.
    let mut w = Witness::new("orders").await;
    let messages: Vec<Value> = (0..101).map(|i| message(&unique(&format!("m{i}")), &[&w.channel])).collect();
    let r = gw().publish(&json!({"messages": messages})).await;
    let mut failures: Failures = expect_status("101 messages", &r, 400).err().into_iter().collect();
    w.untouched().await;
    // The control: exactly 100 is fine.
    let channel = format!("orders:{}", unique("hundred"));
    let messages: Vec<Value> = (0..100).map(|i| message(&unique(&format!("m{i}")), &[&channel])).collect();
    let r = gw().publish(&json!({"messages": messages})).await;
    match expect_status("100 messages", &r, 200) {
        Ok(()) if r.json()["results"].as_array().map(Vec::len) == Some(100) && r.json()["results"][99]["seq"] == 100 => {}
        Ok(()) => failures.push(format!("100 messages: unexpected results {}", short(&r.json().to_string()))),
        Err(e) => failures.push(e),
    }
    verdict(failures);
}

#[tokio::test]
async fn a_message_to_101_channels_is_400_and_delivers_nothing() {
    // PROTOCOL.md Publishing: 1..=100 channels a message (400 beyond); a rejected request changes nothing.
    let mut w = Witness::new("orders").await;
    let mut channels = vec![w.channel.clone()];
    channels.extend((0..100).map(|i| format!("orders:{}-{i}", w.key)));
    let r = gw().publish(&json!({"id": unique("wide"), "channels": channels, "event": "e"})).await;
    let failures: Failures = expect_status("101 channels", &r, 400).err().into_iter().collect();
    w.untouched().await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn an_id_over_128_characters_is_400() {
    // PROTOCOL.md Publishing: `id` is a non-empty string of at most 128 characters.
    let mut w = Witness::new("orders").await;
    let mut failures = Vec::new();
    for (label, id) in [("129 ASCII", "i".repeat(129)), ("129 two-byte characters", "é".repeat(129)), ("1000 characters", "i".repeat(1000))]
    {
        let r = gw().publish(&message(&id, &[&w.channel])).await;
        failures.extend(expect_status(label, &r, 400).err());
    }
    w.untouched().await;
    // The control: 128 characters (256 bytes) is fine.
    let id = "é".repeat(128);
    let r = gw().publish(&message(&id, &[&w.channel])).await;
    match expect_status("128 characters", &r, 200) {
        Ok(()) if r.json()["results"][0]["seq"] == w.seq() + 1 => {}
        Ok(()) => failures.push(format!("128 characters: unexpected result {}", r.json())),
        Err(e) => failures.push(e),
    }
    verdict(failures);
}

#[tokio::test]
async fn data_over_64_kib_is_413_and_changes_nothing() {
    // PROTOCOL.md Publishing: `data` is limited to 64 KiB serialized (413); a rejected request changes nothing.
    let mut w = Witness::new("payment").await;
    let mut failures = Vec::new();
    // A JSON string of n characters serializes to n + 2 bytes.
    for (label, data) in [
        ("65537 bytes serialized", json!("x".repeat(64 * 1024 - 1))),
        ("an object of 70 000 bytes", json!({"blob": "x".repeat(70_000)})),
        ("escapes that grow when serialized", json!("\n".repeat(33_000))),
    ] {
        let r = gw().publish(&json!({"id": unique("big"), "channels": [w.channel], "event": "e", "data": data})).await;
        failures.extend(expect_status(label, &r, 413).err());
    }
    w.untouched().await;
    w.replay_holds_only_probes().await;
    // The control: exactly 65536 bytes serialized is fine.
    let r = gw().publish(&json!({"id": unique("fits"), "channels": [format!("orders:{}", unique("fits"))], "event": "e", "data": "x".repeat(64 * 1024 - 2)})).await;
    failures.extend(expect_status("65536 bytes serialized", &r, 200).err());
    verdict(failures);
}

// ---------- frame abuse on open sockets: PROTOCOL.md "Frames: client to server" ----------

/// A socket on `channel` past its welcome (and its own presence in chat).
async fn member(gw: &Gateway, kind: &str, key: &str, sub: &str, publish: bool) -> Client {
    let channel = format!("{kind}:{key}");
    let mut c = claims(sub, &[&channel]);
    c["name"] = json!(format!("{sub} name"));
    if publish {
        c["publish"] = json!([channel]);
    }
    let mut client = connect(gw, &format!("/ws/{kind}/{key}"), &hs256().mint(Some("hs"), &c)).await;
    assert_eq!(client.frame().await["type"], "welcome");
    if kind == "chat" {
        let (_, _) = client.until("presence").await;
    }
    client
}

/// The next event on `c` (presence frames skipped).
async fn next_event(c: &mut Client) -> Result<Value, String> {
    loop {
        match c.next_within(10).await {
            Some(Got::Frame(f)) if f["type"] == "event" => return Ok(f),
            Some(Got::Frame(f)) if f["type"] == "presence" => continue,
            other => return Err(format!("expected an event, got {}", describe(&other))),
        }
    }
}

/// A client at a limit never degrades others: `peer` still gets the channel's next event.
async fn peer_still_served(peer: &mut Client, channel: &str, seq: u64) -> Result<(), String> {
    let id = unique("after");
    let r = gw().publish(&json!({"id": id, "channels": [channel], "event": "after"})).await;
    if r.status != 200 {
        return Err(format!("publish after the abuse: HTTP {}", r.status));
    }
    let f = next_event(peer).await.map_err(|e| format!("peer after the abuse: {e}"))?;
    if f["id"] != id.as_str() || f["seq"] != seq {
        return Err(format!("peer after the abuse got {f}, expected {id} at seq {seq}"));
    }
    Ok(())
}

async fn expect_error_frame(c: &mut Client, code: &str) -> Result<(), String> {
    match c.next_within(10).await {
        Some(Got::Frame(f)) if f["type"] == "error" && f["code"] == code && f["message"].is_string() => Ok(()),
        other => Err(format!("expected an error frame {code:?}, got {}", describe(&other))),
    }
}

async fn expect_close(c: &mut Client, code: u16) -> Result<(), String> {
    loop {
        match c.next_within(10).await {
            Some(Got::Closed(Some(got))) if got == code => return Ok(()),
            Some(Got::Frame(f)) if f["type"] == "presence" => continue,
            other => return Err(format!("expected close {code}, got {}", describe(&other))),
        }
    }
}

#[tokio::test]
async fn binary_frames_get_binary_unsupported_error_frames() {
    // PROTOCOL.md Frames: anything but the listed frames gets an `error` frame; binary frames up to 16 KiB are not fatal.
    let room = unique("bin");
    let mut c = member(gw(), "orders", &room, &unique("u"), false).await;
    let mut failures = Vec::new();
    for bytes in [vec![1, 2, 3], b"{\"type\":\"send\",\"id\":\"1\",\"text\":\"x\"}".to_vec(), b"ping".to_vec(), vec![0; 16 * 1024]] {
        let len = bytes.len();
        c.send_binary(bytes).await;
        failures.extend(expect_error_frame(&mut c, "binary_unsupported").await.err().map(|e| format!("{len} binary bytes: {e}")));
    }
    c.send_text("ping").await;
    if c.next_within(10).await != Some(Got::Text("pong".into())) {
        failures.push("still open: ping was not answered".into());
    }
    failures.extend(peer_still_served(&mut c, &format!("orders:{room}"), 1).await.err());
    verdict(failures);
}

#[tokio::test]
async fn a_binary_frame_over_16_kib_closes_1009() {
    // PROTOCOL.md Frames: any binary frame over 16 KiB is closed with 1009; other sockets are unaffected.
    let room = unique("bigbin");
    let mut peer = member(gw(), "orders", &room, &unique("peer"), false).await;
    let mut c = member(gw(), "orders", &room, &unique("u"), false).await;
    c.send_binary(vec![7; 16 * 1024 + 1]).await;
    let mut failures: Failures = expect_close(&mut c, 1009).await.err().into_iter().collect();
    failures.extend(peer_still_served(&mut peer, &format!("orders:{room}"), 1).await.err());
    verdict(failures);
}

#[tokio::test]
async fn a_text_frame_over_16_kib_closes_1009() {
    // PROTOCOL.md Frames: a client frame over 16 KiB is closed with 1009 (exactly 16 KiB is merely malformed).
    let room = unique("bigtext");
    let channel = format!("chat:{room}");
    let mut peer = member(gw(), "chat", &room, &unique("peer"), true).await;
    let mut failures = Vec::new();
    let mut at_limit = member(gw(), "chat", &room, &unique("u"), true).await;
    at_limit.send_text(&"x".repeat(16 * 1024)).await;
    failures.extend(expect_error_frame(&mut at_limit, "bad_frame").await.err().map(|e| format!("16384 bytes: {e}")));
    let mut over = member(gw(), "chat", &room, &unique("u"), true).await;
    over.send_text(&"x".repeat(16 * 1024 + 1)).await;
    failures.extend(expect_close(&mut over, 1009).await.err().map(|e| format!("16385 bytes: {e}")));
    // Bytes, not characters: 8193 two-byte characters are 16386 bytes.
    let mut wide = member(gw(), "chat", &room, &unique("u"), true).await;
    wide.send_text(&"é".repeat(8193)).await;
    failures.extend(expect_close(&mut wide, 1009).await.err().map(|e| format!("8193 two-byte characters: {e}")));
    // A well-formed send whose text pushes the frame over the limit.
    let mut send = member(gw(), "chat", &room, &unique("u"), true).await;
    send.send_json(&json!({"type": "send", "id": "big", "text": "y".repeat(16 * 1024)})).await;
    failures.extend(expect_close(&mut send, 1009).await.err().map(|e| format!("a send frame over 16 KiB: {e}")));
    failures.extend(peer_still_served(&mut peer, &channel, 1).await.err());
    verdict(failures);
}

fn malformed_frames() -> Vec<&'static str> {
    vec![
        "hello",
        "{}",
        "[]",
        "null",
        "PING",
        r#"{"type":"subscribe","channel":"orders:*"}"#,
        r#"{"type":5}"#,
        r#"{"type":"refresh"}"#,
        r#"{"type":"send","id":"","text":"x"}"#,
        r#"{"type":"publish","channels":["orders:x"],"event":"e"}"#,
        r#"{"type":"send","id":"1","text":"x"}"#,
    ]
}

#[tokio::test]
async fn ten_malformed_frames_keep_the_socket_open() {
    // PROTOCOL.md Frames: malformed frames get `error` frames; only *more than* 10 close the connection.
    let room = unique("ten");
    let mut c = member(gw(), "orders", &room, &unique("u"), false).await;
    let mut failures = Vec::new();
    for frame in &malformed_frames()[..10] {
        c.send_text(frame).await;
        match c.next_within(10).await {
            Some(Got::Frame(f)) if f["type"] == "error" && f["code"].is_string() => {}
            other => failures.push(format!("{frame}: expected an error frame, got {}", describe(&other))),
        }
    }
    c.send_text("ping").await;
    if c.next_within(10).await != Some(Got::Text("pong".into())) {
        failures.push("after 10 malformed frames the socket no longer answers ping".into());
    }
    failures.extend(peer_still_served(&mut c, &format!("orders:{room}"), 1).await.err());
    verdict(failures);
}

#[tokio::test]
async fn the_eleventh_malformed_frame_closes_4400() {
    // PROTOCOL.md Frames: after more than 10 malformed or unexpected frames the connection is closed with 4400.
    let room = unique("eleven");
    let mut peer = member(gw(), "orders", &room, &unique("peer"), false).await;
    let mut c = member(gw(), "orders", &room, &unique("u"), false).await;
    let mut failures = Vec::new();
    for (i, frame) in malformed_frames().iter().enumerate() {
        c.send_text(frame).await;
        let got = c.next_within(10).await;
        match (i, &got) {
            (0..=9, Some(Got::Frame(f))) if f["type"] == "error" => {}
            (10, Some(Got::Closed(Some(4400)))) => {}
            _ => failures.push(format!("frame {} ({frame}): got {}", i + 1, describe(&got))),
        }
    }
    failures.extend(peer_still_served(&mut peer, &format!("orders:{room}"), 1).await.err());
    verdict(failures);
}

fn send(id: &str, text: &str) -> Value {
    json!({"type": "send", "id": id, "text": text})
}

#[tokio::test]
async fn a_flood_beyond_the_rate_limit_is_refused_then_closed_4429_without_degrading_others() {
    // PROTOCOL.md Frames: 20 client messages per 10 s; beyond: `rate_limited`; at twice the limit: close 4429. Others unaffected.
    let room = unique("flood");
    let channel = format!("chat:{room}");
    let peer_sub = unique("peer");
    let mut peer = member(gw(), "chat", &room, &peer_sub, true).await;
    let mut flooder = member(gw(), "chat", &room, &unique("flooder"), true).await;
    let mut failures = Vec::new();
    for i in 0..39 {
        flooder.send_json(&send(&format!("m{i}"), "spam")).await;
    }
    let (mut delivered, mut limited) = (0, 0);
    while delivered + limited < 39 {
        match flooder.next_within(10).await {
            Some(Got::Frame(f)) if f["type"] == "event" => delivered += 1,
            Some(Got::Frame(f)) if f["type"] == "error" && f["code"] == "rate_limited" => limited += 1,
            Some(Got::Frame(f)) if f["type"] == "presence" => {}
            other => {
                failures.push(format!("after {delivered} delivered and {limited} refused: {}", describe(&other)));
                break;
            }
        }
    }
    if (delivered, limited) != (20, 19) {
        failures.push(format!("39 messages: {delivered} delivered and {limited} rate_limited, expected 20 and 19"));
    }
    flooder.send_text("ping").await;
    if flooder.next_within(10).await != Some(Got::Text("pong".into())) {
        failures.push("at 39 messages (under twice the limit) the socket should still be open".into());
    }
    flooder.send_json(&send("m39", "spam")).await;
    failures.extend(expect_close(&mut flooder, 4429).await.err().map(|e| format!("the 40th message: {e}")));
    // The peer saw exactly the 20 accepted messages, and is still served.
    let mut seqs = Vec::new();
    for _ in 0..20 {
        match next_event(&mut peer).await {
            Ok(f) => seqs.push(f["seq"].as_u64().unwrap_or(0)),
            Err(e) => {
                failures.push(format!("peer: {e}"));
                break;
            }
        }
    }
    if seqs != (1..=20).collect::<Vec<u64>>() {
        failures.push(format!("peer received seqs {seqs:?}, expected 1..=20"));
    }
    failures.extend(peer_still_served(&mut peer, &channel, 21).await.err());
    peer.send_json(&send("mine", "the peer can still talk")).await;
    match next_event(&mut peer).await {
        Ok(f) if f["seq"] == 22 && f["data"]["author"]["sub"] == peer_sub.as_str() => {}
        Ok(f) => failures.push(format!("the peer's own message: {f}")),
        Err(e) => failures.push(format!("the peer's own message: {e}")),
    }
    verdict(failures);
}

#[tokio::test]
async fn a_send_on_orders_or_payment_is_forbidden_and_stores_nothing() {
    // PROTOCOL.md Channels/Frames: orders and payment take nothing but control from clients; a refused send gets `forbidden`.
    let mut failures = Vec::new();
    for kind in ["orders", "payment"] {
        let mut w = Witness::new(kind).await;
        // Even a token with a publish grant for the channel may not post there.
        let mut c = member(gw(), kind, &w.key, &unique("u"), true).await;
        c.send_json(&send("1", "let me in")).await;
        failures.extend(expect_error_frame(&mut c, "forbidden").await.err().map(|e| format!("{kind}: {e}")));
        w.untouched_beside(1).await;
        w.replay_holds_only_probes().await;
    }
    verdict(failures);
}

#[tokio::test]
async fn a_chat_send_without_a_publish_grant_is_forbidden_and_stores_nothing() {
    // PROTOCOL.md Frames: `send` needs a `publish` grant for the room; refused with `forbidden`.
    let mut w = Witness::new("chat").await;
    let mut failures = Vec::new();
    let mut c = claims(&unique("reader"), &[&w.channel]);
    c["publish"] = json!([format!("chat:{}x", w.key), "orders:*"]);
    let mut reader = connect(gw(), &w.path, &hs256().mint(Some("hs"), &c)).await;
    assert_eq!(reader.frame().await["type"], "welcome");
    reader.until("presence").await;
    // The witness sees the reader join (a legitimate socket).
    match w.client.next_within(10).await {
        Some(Got::Frame(f)) if f["type"] == "presence" => {}
        other => failures.push(format!("witness: expected the reader's presence, got {}", describe(&other))),
    }
    reader.send_json(&send("1", "hello")).await;
    failures.extend(expect_error_frame(&mut reader, "forbidden").await.err());
    // Probe: the seq did not move (delivered is 2 here: the witness and the reader).
    let id = unique("probe");
    let r = gw().publish(&json!({"id": id, "channels": [w.channel], "event": "probe"})).await;
    if r.json()["results"][0]["seq"] != 1 {
        failures.push(format!("a refused send moved the seq: {}", r.json()));
    }
    match next_event(&mut w.client).await {
        Ok(f) if f["id"] == id.as_str() => {}
        other => failures.push(format!("witness: expected the probe first, got {other:?}")),
    }
    verdict(failures);
}

#[tokio::test]
async fn a_chat_send_with_a_forged_author_is_attributed_to_the_token() {
    // PROTOCOL.md Frames: the author (`sub`, `name`, `role`) comes from the token, never from the frame.
    let room = unique("forge");
    let channel = format!("chat:{room}");
    let mut peer = member(gw(), "chat", &room, &unique("peer"), false).await;
    let sub = unique("ann");
    let mut c = claims(&sub, &[&channel]);
    c["name"] = json!("Ann Example");
    c["role"] = json!("customer");
    c["publish"] = json!([channel]);
    let mut ann = connect(gw(), &format!("/ws/chat/{room}"), &hs256().mint(Some("hs"), &c)).await;
    assert_eq!(ann.frame().await["type"], "welcome");
    let forged = json!({
        "type": "send", "id": "m1", "text": "refund me",
        "author": {"sub": "admin", "name": "Admin", "role": "owner"},
        "sub": "admin", "name": "Admin", "role": "owner", "client_id": "forged",
        "data": {"author": {"sub": "admin"}}
    });
    ann.send_json(&forged).await;
    let expected = json!({"text": "refund me", "author": {"sub": sub, "name": "Ann Example", "role": "customer"}, "client_id": "m1"});
    let mut failures = Vec::new();
    for (who, client) in [("sender", &mut ann), ("peer", &mut peer)] {
        match next_event(client).await {
            Ok(f) if f["event"] == "chat.message" && f["data"] == expected && f["channel"] == channel.as_str() => {}
            Ok(f) => failures.push(format!("{who}: got {f}, expected data {expected}")),
            Err(e) => failures.push(format!("{who}: {e}")),
        }
    }
    verdict(failures);
}

#[tokio::test]
async fn a_client_cannot_inject_server_frames() {
    // PROTOCOL.md Frames: clients may send only ping/refresh/send; anything else gets an `error` frame and reaches no one.
    let mut w = Witness::new("chat").await;
    let mut c = member(gw(), "chat", &w.key, &unique("u"), true).await;
    let mut failures = Vec::new();
    match w.client.next_within(10).await {
        Some(Got::Frame(f)) if f["type"] == "presence" => {}
        other => failures.push(format!("witness: expected the member's presence, got {}", describe(&other))),
    }
    let ch = w.channel.clone();
    for frame in [
        json!({"type": "event", "channel": ch, "seq": 1, "id": "x", "event": "order.paid", "data": {}, "ts": 0}),
        json!({"type": "presence", "channel": ch, "action": "left", "sub": "witness", "count": 0}),
        json!({"type": "welcome", "channel": ch, "conn": "c", "seq": 99}),
        json!({"type": "reset", "channel": ch, "seq": 99}),
        json!({"type": "publish", "id": "x", "channels": [ch], "event": "e"}),
    ] {
        c.send_json(&frame).await;
        match c.next_within(10).await {
            Some(Got::Frame(f)) if f["type"] == "error" => {}
            other => failures.push(format!("{}: expected an error frame, got {}", frame["type"], describe(&other))),
        }
    }
    // Nothing reached the witness before the probe, and the seq is untouched.
    w.untouched_beside(1).await;
    w.replay_holds_only_probes().await;
    verdict(failures);
}

#[tokio::test]
async fn a_refresh_with_a_forged_or_foreign_token_closes_4401() {
    // PROTOCOL.md Frames: `refresh` needs a valid token for the same `sub` that still grants the channel; failure closes 4401.
    let room = unique("refresh");
    let channel = format!("payment:{room}");
    let path = format!("/ws/payment/{room}");
    let sub = unique("cust");
    let mut peer = member(gw(), "payment", &room, &unique("peer"), false).await;
    let same = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(&sub, &[&channel]);
        edit(&mut c);
        c
    };
    let mut failures = Vec::new();
    // The control: a fresh valid token for the same sub is `refreshed`.
    let mut c = connect(gw(), &path, &hs256().mint(Some("hs"), &same(&|_| {}))).await;
    assert_eq!(c.frame().await["type"], "welcome");
    let fresh = same(&|c| c["exp"] = json!(unix_now() + 700));
    c.send_json(&json!({"type": "refresh", "token": hs256().mint(Some("hs"), &fresh)})).await;
    match c.next_within(10).await {
        Some(Got::Frame(f)) if f["type"] == "refreshed" && f["expires_at"] == fresh["exp"] => {}
        other => failures.push(format!("valid refresh: expected refreshed, got {}", describe(&other))),
    }
    let unsigned = format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(&same(&|_| {})));
    let cases = vec![
        ("alg none, same sub", unsigned),
        ("another key, same sub", SigningKey::hs256(99).mint(Some("hs"), &same(&|_| {}))),
        (
            "HS256 keyed with the EdDSA public key",
            SigningKey::Hs256(public_key_bytes(&eddsa().jwk(None), "x")).mint(Some("ed"), &same(&|_| {})),
        ),
        ("valid token of another sub", token(&unique("other"), &[&channel])),
        ("same sub, channel not granted", hs256().mint(Some("hs"), &same(&|c| c["channels"] = json!([format!("payment:{room}x")])))),
        (
            "same sub, publish grant only",
            hs256().mint(
                Some("hs"),
                &same(&|c| {
                    c["channels"] = json!([]);
                    c["publish"] = json!([channel]);
                }),
            ),
        ),
        (
            "same sub, expired",
            hs256().mint(
                Some("hs"),
                &same(&|c| {
                    c["iat"] = json!(unix_now() - 700);
                    c["exp"] = json!(unix_now() - 60);
                }),
            ),
        ),
        ("same sub, jwk header", hs256().mint_with_header(&json!({"alg": "HS256", "kid": "hs", "jwk": hs256().jwk(None)}), &same(&|_| {}))),
        ("same sub, over 8 KiB", hs256().mint(Some("hs"), &same(&|c| c["pad"] = json!("p".repeat(8200))))),
    ];
    for (label, t) in cases {
        let mut s = connect(gw(), &path, &hs256().mint(Some("hs"), &same(&|_| {}))).await;
        assert_eq!(s.frame().await["type"], "welcome");
        s.send_json(&json!({"type": "refresh", "token": t})).await;
        failures.extend(expect_close(&mut s, 4401).await.err().map(|e| format!("{label}: {e}")));
    }
    failures.extend(peer_still_served(&mut peer, &channel, 1).await.err());
    verdict(failures);
}

#[tokio::test]
async fn a_client_id_reused_by_another_user_is_still_delivered() {
    // PROTOCOL.md Frames: a repeated `id` *from the same `sub`* is not delivered twice; another user's id cannot suppress it.
    let room = unique("dedupe");
    let victim_sub = unique("victim");
    let mut attacker = member(gw(), "chat", &room, &unique("attacker"), true).await;
    let mut victim = member(gw(), "chat", &room, &victim_sub, true).await;
    let mut failures = Vec::new();
    attacker.send_json(&send("m1", "first with this id")).await;
    failures.extend(next_event(&mut victim).await.err().map(|e| format!("the attacker's message: {e}")));
    victim.send_json(&send("m1", "mine")).await;
    match next_event(&mut victim).await {
        Ok(f) if f["seq"] == 2 && f["data"]["author"]["sub"] == victim_sub.as_str() && f["data"]["text"] == "mine" => {}
        Ok(f) => failures.push(format!("the victim's message: got {f}")),
        Err(e) => failures.push(format!("the victim's message was suppressed: {e}")),
    }
    // The same sub repeating its id is deduplicated: nothing more arrives, the seq stays at 2.
    victim.send_json(&send("m1", "mine again")).await;
    let r = gw().publish(&json!({"id": unique("probe"), "channels": [format!("chat:{room}")], "event": "probe"})).await;
    if r.json()["results"][0]["seq"] != 3 {
        failures.push(format!("a repeated id from the same sub was stored again: {}", r.json()));
    }
    drop(attacker);
    verdict(failures);
}

#[tokio::test]
async fn chat_text_over_2000_characters_is_refused_too_long() {
    // PROTOCOL.md Frames: chat text is 1..=2000 characters; a refused send gets an `error` frame (`too_long`) and stores nothing.
    let room = unique("long");
    let mut c = member(gw(), "chat", &room, &unique("u"), true).await;
    let mut failures = Vec::new();
    c.send_json(&send("a", &"x".repeat(2001))).await;
    failures.extend(expect_error_frame(&mut c, "too_long").await.err().map(|e| format!("2001 characters: {e}")));
    c.send_json(&send("b", "")).await;
    match c.next_within(10).await {
        Some(Got::Frame(f)) if f["type"] == "error" => {}
        other => failures.push(format!("empty text: expected an error frame, got {}", describe(&other))),
    }
    // Characters, not bytes: 2000 two-byte characters are fine, and get seq 1.
    c.send_json(&send("c", &"é".repeat(2000))).await;
    match next_event(&mut c).await {
        Ok(f) if f["seq"] == 1 => {}
        other => failures.push(format!("2000 two-byte characters: {other:?}")),
    }
    verdict(failures);
}

// ---------- logs: PROTOCOL.md "Connecting" ----------

#[tokio::test]
async fn the_log_never_holds_tokens_query_values_subprotocols_or_publish_bodies() {
    // PROTOCOL.md Connecting: the gateway never logs tokens, query strings or subprotocol values (nor, per issue 7, publish bodies).
    let gw = gw();
    let mark = unique("M").replace('-', "");
    let room = unique("logs");
    let channel = format!("orders:{room}");
    let path = format!("/ws/orders/{room}");
    let good = token(&format!("good{mark}"), &[&channel]);
    let forged = SigningKey::hs256(99).mint(Some("hs"), &claims(&format!("forged{mark}"), &[&channel]));
    let refresh_forged = SigningKey::hs256(98).mint(Some("hs"), &claims(&format!("refresh{mark}"), &[&channel]));
    let query_token = token(&format!("query{mark}"), &[&channel]);
    let (query_value, bad_since, extra_protocol) = (format!("qv{mark}"), format!("since{mark}"), format!("x-sp{mark}"));
    let mut failures = Vec::new();

    // Sockets: accepted with query values and an extra subprotocol, then refused ones.
    match welcomed(gw, &format!("{path}?since=0&trace={query_value}"), Some(&format!("foyer.v1, bearer.{good}, {extra_protocol}")), &[])
        .await
    {
        Ok(mut c) => {
            c.send_json(&json!({"type": "refresh", "token": refresh_forged})).await;
            failures.extend(expect_close(&mut c, 4401).await.err().map(|e| format!("refresh with a forged token: {e}")));
        }
        Err(e) => failures.push(format!("accepted socket: {e}")),
    }
    failures.extend(closed_at_once(gw, &path, Some(&offer(&forged)), &[], 4401).await.err());
    failures.extend(closed_at_once(gw, &format!("{path}?token={query_token}"), Some("foyer.v1"), &[], 4401).await.err());
    failures.extend(refused_http(gw, &format!("{path}?since={bad_since}"), Some(&offer(&good)), &[], 400).await.err());
    failures.extend(refused_http(gw, &path, Some(&format!("bearer.{good}")), &[], 400).await.err());
    failures.extend(refused_http(gw, &path, Some(&offer(&good)), &[("Origin", "https://evil.example")], 403).await.err());

    // Publish bodies: accepted, malformed, unsigned, too large, wrong type.
    let bodies = [
        (
            200,
            json!({"id": format!("id{mark}"), "channels": [channel], "event": format!("ev{mark}"), "data": {"note": format!("ok{mark}")}})
                .to_string(),
        ),
        (400, format!("{{\"id\": \"bad{mark}\", ")),
        (
            413,
            json!({"id": format!("big{mark}"), "channels": [channel], "event": "e", "data": format!("big{mark}{}", "x".repeat(70_000))})
                .to_string(),
        ),
    ];
    let mut body_markers = vec![format!("id{mark}"), format!("ev{mark}"), format!("ok{mark}"), format!("bad{mark}"), format!("big{mark}")];
    for (status, body) in &bodies {
        failures.extend(
            expect_status(
                &format!("publish {status}"),
                &post_signed(body.as_bytes(), &sign_at(unix_now(), body.as_bytes())).await,
                *status,
            )
            .err(),
        );
    }
    let unsigned = format!("{{\"id\": \"unsigned{mark}\"}}");
    failures.extend(expect_status("unsigned", &gw.post("/publish", unsigned.as_bytes(), &[JSON_CT]).await, 401).err());
    let text = format!("plain{mark}");
    failures.extend(expect_status("text/plain", &gw.post("/publish", text.as_bytes(), &[("Content-Type", "text/plain")]).await, 415).err());
    body_markers.extend([format!("unsigned{mark}"), format!("plain{mark}")]);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = gw.log();
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (what, t) in [("good token", &good), ("forged token", &forged), ("refresh token", &refresh_forged), ("query token", &query_token)] {
        secrets.push((what.into(), t.clone()));
        let s = segments(t);
        secrets.push((format!("{what} claims segment"), s[1].clone()));
        secrets.push((format!("{what} signature"), s[2].clone()));
    }
    secrets.push(("query value".into(), query_value));
    secrets.push(("bad since value".into(), bad_since));
    secrets.push(("subprotocol value".into(), extra_protocol));
    secrets.extend(body_markers.into_iter().map(|m| ("publish body".to_owned(), m)));
    for (what, secret) in secrets {
        if let Some(line) = log.lines().find(|l| l.contains(&secret)) {
            failures.push(format!("the log holds a {what}: {}", short(line)));
        }
    }
    verdict(failures);
}
