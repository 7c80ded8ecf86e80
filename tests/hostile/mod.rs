//! The hostile variants, as data: forged and malformed tokens, grants that must not grant,
//! odd paths, origins and subprotocol offers, signature headers and publish bodies.
//!
//! Each list is played whole against the pure core on the host (`hostile_core.rs`, in
//! milliseconds) and by representatives against a real gateway (`adversarial.rs`, where
//! only the shell and the runtime can still get them wrong). One list, two players: a
//! variant added here is checked exhaustively at once, and a representative named there
//! that no longer exists here fails loudly ([`pick`]).
//!
//! Token generators take the claims to forge around (valid, granting the target channel)
//! and return labelled tokens whose only fault is the one the label names.
#![allow(dead_code)] // each binary plays a subset

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use foyer::devkit::{b64_json, SigningKey};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{eddsa, es256, hs256, OLD_PUBLISH_SECRET, PUBLISH_SECRET};

/// A labelled variant: what it is, and the thing itself.
pub type Variant<T = String> = (String, T);

/// The representatives a slower player takes from a list: for each needle, the first
/// variant whose label contains it. Panics when a needle matches nothing.
pub fn pick<T: Clone>(variants: &[Variant<T>], needles: &[&str]) -> Vec<Variant<T>> {
    needles
        .iter()
        .map(|needle| {
            variants
                .iter()
                .find(|(label, _)| label.contains(needle))
                .cloned()
                .unwrap_or_else(|| panic!("no variant labelled like {needle:?}"))
        })
        .collect()
}

fn labelled<T>(items: impl IntoIterator<Item = (impl Into<String>, T)>) -> Vec<Variant<T>> {
    items.into_iter().map(|(l, t)| (l.into(), t)).collect()
}

/// The rules the rows check, in PROTOCOL.md's words: `Section: rule (answer)`. Both tables
/// cite these, so a rule reads the same wherever it is checked.
pub mod rule {
    // Tokens
    pub const ALG: &str =
        "Tokens: `alg` outside the configured set, `none`, or an algorithm family that does not match the key: reject (4401)";
    pub const COMPACT: &str = "Tokens: compact serialization exactly, three base64url segments without padding, nothing else (4401)";
    pub const SIGNED: &str = "Tokens: the signature covers header and claims; a token whose signature does not verify is rejected (4401)";
    pub const STRICT_JSON: &str =
        "Tokens: header and claims are JSON objects; a token the gateway cannot parse strictly is refused (4401), never a crash";
    pub const SIZE: &str = "Tokens: tokens over 8 KiB are rejected without being parsed (4401); 8 KiB is within the limit";
    pub const KID: &str = "Tokens: `kid` picks the key; an unknown `kid`, or none while several keys are configured: reject (4401)";
    pub const KEY_PARAMS: &str =
        "Tokens: header parameters `jku`, `jwk`, `x5u`, `x5c` or `crit`: reject (4401); keys come from configuration only";
    pub const TIME: &str =
        "Tokens: `exp` in the past, or `nbf`/`iat` in the future, beyond the 30 s leeway: reject (4401); within it: accept";
    pub const LIFETIME: &str = "Tokens: `exp - iat` (or `exp - now` without `iat`) above the maximum lifetime (900 s): reject (4401)";
    pub const TIME_TYPES: &str = "Tokens: `exp` is required and time claims must be numbers (4401)";
    pub const ISS: &str = "Tokens: `iss` must equal the configured issuer exactly (4401)";
    pub const AUD: &str = "Tokens: `aud` must be or contain the configured audience (4401)";
    pub const SUB: &str = "Tokens: `sub` is required, a non-empty string (4401)";
    pub const GRANT_TYPE: &str = "Tokens: a grant claim of the wrong JSON type makes the token invalid (4401)";
    pub const GRANT: &str = "Connecting 5: the token must grant this exact channel, else accepted and closed with 4403";
    pub const WILDCARD: &str =
        "Tokens: an entry `KIND:*` grants every channel of that kind; only an entry exactly `KIND:*` is a wildcard (4403)";
    pub const PUBLISH_ONLY: &str = "Tokens: a `publish` grant alone does not let the holder subscribe (4403)";
    // Connecting
    pub const PATH: &str = "Connecting 1: an unknown kind is HTTP 404, a malformed key 400, any other path under /ws/ 404";
    pub const SINCE: &str = "Connecting: `since` is a non-negative integer, anything else is HTTP 400";
    pub const ORIGIN: &str =
        "Connecting 3: `Origin`, when present, is an allowed origin or the gateway's own, matched exactly; else HTTP 403, no upgrade";
    pub const OFFER: &str = "Connecting: an offer with a token but without `foyer.v1`, or with two tokens, is malformed (HTTP 400)";
    pub const SELECT: &str = "Connecting: a missing or invalid token is accepted and closed with 4401, selecting `foyer.v1` when offered; the token is never echoed back";
    pub const QUERY_TOKEN: &str = "Connecting: `?token=<JWT>` is accepted only when the deployment sets ALLOW_QUERY_TOKEN=true";
    pub const LOG: &str = "Connecting: the gateway never logs tokens, query strings or subprotocol values (nor publish bodies)";
    // Publishing
    pub const SIGNATURE: &str = "Publishing: X-Foyer-Signature is HMAC-SHA256 over `<t>.<path>.` and the raw body; missing, wrong or stale is 401, one uniform answer";
    pub const SKEW: &str = "Publishing: `t` more than 300 s from the gateway's clock, in either direction: reject (401)";
    pub const T_INTEGER: &str = "Publishing: `t` is an integer (401 otherwise)";
    pub const ROTATION: &str = "Publishing: hex digits in either case; several `v1=` entries may be given, one match suffices";
    pub const NO_SECRET: &str = "Publishing: no publish secret configured: every request is refused";
    pub const ORDER: &str = "Publishing: checks run method (405), content type (415), size (413, 256 KiB), signature (401), body (400)";
    pub const BODY: &str = "Publishing: malformed JSON, a missing field or a malformed channel is 400; a rejected request changes nothing";
    pub const LIMITS: &str = "Publishing: 1..=100 messages a batch, 1..=100 channels a message, at most 100 distinct channels a request, `id` and `event` 1..=128 characters (400)";
    pub const DATA: &str = "Publishing: `data` is optional (default null), any JSON, at most 64 KiB serialized (413)";
    pub const WHOLE: &str = "Publishing: a batch is validated whole before any message of it is delivered";
    // Frames
    pub const FRAME_SIZE: &str =
        "Frames: a client frame over 16 KiB, or any binary frame over that size, is closed with 1009 (others unaffected)";
    pub const MALFORMED: &str =
        "Frames: anything else gets an `error` frame; after more than 10 malformed or unexpected frames: close 4400";
    pub const SEND: &str = "Frames: `send` is chat only and needs a `publish` grant; a refused send gets an `error` frame (`forbidden`)";
    pub const AUTHOR: &str = "Frames: the author (`sub`, `name`, `role`) comes from the token, never from the frame";
    pub const TEXT: &str = "Frames: chat text is 1..=2000 characters; a refused send gets an `error` frame (`too_long`)";
    pub const DEDUPE: &str = "Frames: a repeated `id` from the same `sub` is not delivered twice; another user's id cannot suppress it";
    pub const RATE: &str = "Frames: 20 client messages per 10 s; beyond: `rate_limited`; at twice the limit: close 4429; others unaffected";
    pub const REFRESH: &str = "Frames: `refresh` needs a valid token for the same `sub` that still grants the channel; failure: close 4401";
    // Channels
    pub const NAME: &str = "Channels: a channel is KIND:KEY with KIND orders, payment or chat and KEY matching [A-Za-z0-9_-]{1,64}; anything else is malformed";
}

// ---------- encoding tools ----------

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// The segment's bytes with one bit flipped, canonically re-encoded.
pub fn flip_bit(segment: &str, byte: usize, bit: u8) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(segment).expect("canonical segment");
    bytes[byte] ^= 1 << bit;
    b64(bytes)
}

const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The same segment with its last character's unused low bits set: decodes to the same
/// bytes under a lenient decoder, is not canonical base64url.
pub fn stray_bits(segment: &str) -> String {
    assert!(!segment.len().is_multiple_of(4), "a segment without leftover bits");
    let last = segment.chars().last().unwrap();
    let tweaked = ALPHABET.chars().nth(ALPHABET.find(last).unwrap() ^ 1).unwrap();
    format!("{}{tweaked}", &segment[..segment.len() - 1])
}

/// A token whose first two segments are exactly `h64` and `p64`, correctly signed by `key`
/// over exactly that text: only the encoding is at fault.
pub fn signed_segments(key: &SigningKey, h64: &str, p64: &str) -> String {
    let input = format!("{h64}.{p64}");
    format!("{input}.{}", b64(key.sign(input.as_bytes())))
}

/// A token over raw header and payload bytes (canonically encoded), signed by `key`.
pub fn signed_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    signed_segments(key, &b64(header), &b64(payload))
}

pub fn hs_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": "hs"})
}

/// A token with this header over `c`, signed by the real HS256 key.
pub fn with_header(header: Value, c: &Value) -> String {
    hs256().mint_with_header(&header, c)
}

/// A token from the real HS256 key over `c` edited.
pub fn edited(c: &Value, edit: impl FnOnce(&mut Value)) -> String {
    let mut c = c.clone();
    edit(&mut c);
    hs256().mint(Some("hs"), &c)
}

fn without(c: &Value, claim: &str) -> String {
    edited(c, |c| drop(c.as_object_mut().unwrap().remove(claim)))
}

/// The test deployment's keys, each with its `kid`.
pub fn deployment_keys() -> [(SigningKey, &'static str); 3] {
    [(hs256(), "hs"), (eddsa(), "ed"), (es256(), "es")]
}

/// Every upper/lower-case spelling of `word`.
pub fn casings(word: &str) -> Vec<String> {
    let mut all = vec![String::new()];
    for ch in word.chars() {
        let forms: Vec<char> = if ch.is_ascii_alphabetic() { vec![ch.to_ascii_lowercase(), ch.to_ascii_uppercase()] } else { vec![ch] };
        all = all.iter().flat_map(|prefix| forms.iter().map(move |f| format!("{prefix}{f}"))).collect();
    }
    all
}

// ---------- tokens: PROTOCOL.md "Tokens" ----------

/// `alg` `none` in every casing, with and without `typ` and `kid`, unsigned (empty or no
/// signature segment), signed by the real HS256 key, or with a junk signature.
pub fn alg_none(c: &Value) -> Vec<Variant> {
    let mut v = Vec::new();
    for alg in casings("none") {
        for typ in [false, true] {
            for kid in [None, Some("hs"), Some("ed")] {
                let mut header = json!({"alg": alg});
                if typ {
                    header["typ"] = json!("JWT");
                }
                if let Some(kid) = kid {
                    header["kid"] = json!(kid);
                }
                let label = format!("alg {alg:?}{}, kid {}", if typ { ", typ JWT" } else { "" }, kid.unwrap_or("absent"));
                let unsigned = format!("{}.{}", b64_json(&header), b64_json(c));
                v.push((format!("{label}: empty signature"), format!("{unsigned}.")));
                v.push((format!("{label}: no signature segment"), unsigned.clone()));
                v.push((format!("{label}: signed by the HS256 key"), with_header(header.clone(), c)));
                v.push((format!("{label}: junk signature"), format!("{unsigned}.{}", b64(b"junk"))));
            }
        }
    }
    v
}

/// Every other casing of each configured key's algorithm, signed by that very key.
pub fn alg_casings(c: &Value) -> Vec<Variant> {
    let mut v = Vec::new();
    for (key, kid) in deployment_keys() {
        for alg in casings(key.alg()).into_iter().filter(|a| a != key.alg()) {
            v.push((format!("alg {alg:?} under kid {kid}, signed by its key"), key.mint_with_header(&json!({"alg": alg, "kid": kid}), c)));
        }
    }
    v
}

/// Algorithms outside the configured set (and `alg` values that are no algorithm at all),
/// under kid `hs`, signed by the HS256 key.
pub fn foreign_algs(c: &Value) -> Vec<Variant> {
    let names = [
        "HS384",
        "HS512",
        "HS256 ",
        " HS256",
        "HS256\u{0}",
        "HS256\n",
        "HS-256",
        "HMAC",
        "RS256",
        "PS256",
        "ES384",
        "ES256K",
        "EDDSA",
        "Ed25519",
        "",
        "*",
    ];
    let mut v: Vec<Variant> = names.iter().map(|alg| (format!("alg {alg:?}"), with_header(json!({"alg": alg, "kid": "hs"}), c))).collect();
    for alg in [json!(null), json!(256), json!(true), json!(["HS256"]), json!({"name": "HS256"})] {
        v.push((format!("alg {alg}"), with_header(json!({"alg": alg, "kid": "hs"}), c)));
    }
    v.push(("no alg".into(), with_header(json!({"kid": "hs"}), c)));
    v
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
fn key_material_forms(jwk: &Value, spki: &[u8]) -> Vec<(String, Vec<u8>)> {
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

/// Algorithm confusion: HS256 tokens keyed with every form of the EdDSA and ES256 public
/// keys, under those keys' kids.
pub fn hmac_keyed_with_public_keys(c: &Value) -> Vec<Variant> {
    let mut v = Vec::new();
    let jwk = eddsa().jwk(Some("ed"));
    let x = public_key_bytes(&jwk, "x");
    let spki = [&[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00][..], &x].concat();
    let mut materials = vec![("the raw public key".to_owned(), x.clone())];
    materials.extend(key_material_forms(&jwk, &spki));
    for (what, material) in materials {
        let forger = SigningKey::Hs256(material);
        for header in [json!({"alg": "HS256", "typ": "JWT", "kid": "ed"}), json!({"alg": "HS256", "kid": "ed"})] {
            v.push((format!("HMAC keyed with the EdDSA key's {what}, header {header}"), forger.mint_with_header(&header, c)));
        }
    }
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
        ("uncompressed SEC1 point".to_owned(), uncompressed.clone()),
        ("compressed SEC1 point".to_owned(), compressed),
        ("x || y".to_owned(), [x.clone(), y.clone()].concat()),
        ("x alone".to_owned(), x.clone()),
    ];
    materials.extend(key_material_forms(&jwk, &spki));
    for (what, material) in materials {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "es"});
        v.push((format!("HMAC keyed with the ES256 key's {what}"), SigningKey::Hs256(material).mint_with_header(&header, c)));
    }
    v
}

/// Genuine signatures by one configured key, presented under another key's kid or alg.
pub fn genuine_under_another_kid(c: &Value) -> Vec<Variant> {
    labelled([
        ("ES256 token under kid ed", es256().mint(Some("ed"), c)),
        ("ES256 token under kid hs", es256().mint(Some("hs"), c)),
        ("EdDSA token under kid hs", eddsa().mint(Some("hs"), c)),
        ("HS256 token under kid ed", hs256().mint(Some("ed"), c)),
        ("HS256 token under kid es", hs256().mint(Some("es"), c)),
        ("header says EdDSA/ed, HS256 signature", hs256().mint_with_header(&json!({"alg": "EdDSA", "kid": "ed"}), c)),
        ("header says ES256/es, EdDSA signature", eddsa().mint_with_header(&json!({"alg": "ES256", "kid": "es"}), c)),
        ("header says EdDSA/ed, ES256 signature", es256().mint_with_header(&json!({"alg": "EdDSA", "kid": "ed"}), c)),
        ("header says HS256/hs, EdDSA signature", eddsa().mint_with_header(&json!({"alg": "HS256", "kid": "hs"}), c)),
    ])
}

/// Which bits of a segment to flip.
#[derive(Clone, Copy)]
pub enum Bits {
    /// Every bit of every byte.
    All,
    /// One bit of every `n`th byte, the bit index rotating with the byte.
    Rotating(usize),
    /// Bit `b` of every `n`th byte.
    EveryNth(usize, u8),
    /// A few bits at both ends and in the middle.
    EndsAndMiddle,
}

pub const SEGMENT_NAMES: [&str; 3] = ["header", "payload", "signature"];

/// Single-bit flips of one segment of a valid token by `key` (kid `kid`).
pub fn bit_flips(key: &SigningKey, kid: &str, c: &Value, segment: usize, bits: Bits) -> Vec<Variant> {
    let good = segments(&key.mint(Some(kid), c));
    let len = URL_SAFE_NO_PAD.decode(&good[segment]).unwrap().len();
    let flips: Vec<(usize, u8)> = match bits {
        Bits::All => (0..len).flat_map(|byte| (0..8).map(move |bit| (byte, bit))).collect(),
        Bits::Rotating(n) => (0..len).step_by(n).map(|byte| (byte, (byte % 8) as u8)).collect(),
        Bits::EveryNth(n, bit) => (0..len).step_by(n).map(|byte| (byte, bit)).collect(),
        Bits::EndsAndMiddle => vec![(0, 0), (1, 7), (len / 2, 0), (len / 2 + 1, 3), (len - 2, 1), (len - 1, 0), (len - 1, 7)],
    };
    flips
        .into_iter()
        .map(|(byte, bit)| {
            let mut s = good.clone();
            s[segment] = flip_bit(&good[segment], byte, bit);
            (format!("{}: {} byte {byte} bit {bit}", key.alg(), SEGMENT_NAMES[segment]), s.join("."))
        })
        .collect()
}

/// Each configured key's signature one byte short and one byte long.
pub fn signature_lengths(c: &Value) -> Vec<Variant> {
    let mut v = Vec::new();
    for (key, kid) in deployment_keys() {
        let s = segments(&key.mint(Some(kid), c));
        let raw = URL_SAFE_NO_PAD.decode(&s[2]).unwrap();
        v.push((format!("{kid}: signature one byte short"), format!("{}.{}.{}", s[0], s[1], b64(&raw[..raw.len() - 1]))));
        v.push((format!("{kid}: signature one byte long"), format!("{}.{}.{}", s[0], s[1], b64([raw, vec![0]].concat()))));
    }
    v
}

/// Compact serialization exactly: three segments, none empty. Includes the empty token.
pub fn segment_counts(c: &Value) -> Vec<Variant> {
    let good = hs256().mint(Some("hs"), c);
    let s = segments(&good);
    let (h, p, sig) = (&s[0], &s[1], &s[2]);
    labelled([
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
        ("the empty token", String::new()),
    ])
}

/// A token with `-` and `_` in every segment's encoding (found by varying a claim): the
/// material for alphabet variants.
fn token_with_url_characters(c: &Value) -> (String, String, String) {
    let header = json!({"alg": "HS256", "kid": "hs", "x": "\u{fbff}\u{fbff}?>?>"});
    let h = b64_json(&header);
    for n in 0..1000 {
        let mut payload = c.clone();
        payload["x"] = json!("\u{fbff}\u{fbff}?>?>");
        payload["n"] = json!(n);
        let p = b64_json(&payload);
        let t = signed_segments(&hs256(), &h, &p);
        let sig = segments(&t)[2].clone();
        if sig.contains('-') && sig.contains('_') {
            assert!(h.contains(['-', '_']) && p.contains(['-', '_']), "{h} / {p}");
            return (h, p, sig);
        }
    }
    panic!("no signature with both - and _ in 1000 tokens");
}

/// Only base64url without padding: `=` padding, the standard alphabet's `+` and `/`, and
/// characters of no base64 alphabet, in each segment (header and payload re-signed as sent,
/// so only the encoding is at fault).
pub fn encodings(c: &Value) -> Vec<Variant> {
    let (h, p, sig) = token_with_url_characters(c);
    let key = hs256();
    let mut v = Vec::new();
    let assemble = |i: usize, seg: String| match i {
        0 => signed_segments(&key, &seg, &p),
        1 => signed_segments(&key, &h, &seg),
        _ => format!("{h}.{p}.{seg}"),
    };
    for (i, seg) in [&h, &p, &sig].into_iter().enumerate() {
        let name = SEGMENT_NAMES[i];
        let proper = "=".repeat((4 - seg.len() % 4) % 4);
        if !proper.is_empty() {
            v.push((format!("{name} padded properly"), assemble(i, format!("{seg}{proper}"))));
        }
        for pad in ["=", "==", "==="] {
            v.push((format!("{name} + {pad:?}"), assemble(i, format!("{seg}{pad}"))));
        }
        v.push((format!("{name} in the standard alphabet"), assemble(i, seg.replace('-', "+").replace('_', "/"))));
        for odd in [' ', '\n', '%', '*', '!', '~', 'é'] {
            let mid = seg.len() / 2;
            v.push((format!("{name} with {odd:?} inside"), assemble(i, format!("{}{odd}{}", &seg[..mid], &seg[mid..]))));
        }
    }
    v
}

/// Non-canonical base64url: a segment's last character carries stray low bits.
pub fn stray_trailing_bits(c: &Value) -> Vec<Variant> {
    let mut v = Vec::new();
    for (key, kid) in deployment_keys() {
        let s = segments(&key.mint(Some(kid), c));
        v.push((format!("{kid}: signature (same bytes)"), format!("{}.{}.{}", s[0], s[1], stray_bits(&s[2]))));
    }
    // Header and payload with leftover bits, re-signed as sent.
    let mut c = c.clone();
    let mut header = hs_header();
    for pad in 0..3 {
        let (h, p) = (b64_json(&header), b64_json(&c));
        if !h.len().is_multiple_of(4) {
            v.push((format!("header (pad {pad})"), signed_segments(&hs256(), &stray_bits(&h), &p)));
        }
        if !p.len().is_multiple_of(4) {
            v.push((format!("payload (pad {pad})"), signed_segments(&hs256(), &h, &stray_bits(&p))));
        }
        header["x"] = json!("y".repeat(pad + 1));
        c["x"] = json!("y".repeat(pad + 1));
    }
    v
}

/// Headers that are not a JSON object (validly signed over exactly those bytes).
pub fn non_json_headers(c: &Value) -> Vec<Variant> {
    let payload = c.to_string();
    let headers: [&[u8]; 12] = [
        b"not json",
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
    ];
    headers.iter().map(|h| (format!("header {:?}", String::from_utf8_lossy(h)), signed_raw(&hs256(), h, payload.as_bytes()))).collect()
}

/// Payloads that are not a JSON object of claims (validly signed).
pub fn non_json_payloads(c: &Value) -> Vec<Variant> {
    let header = hs_header().to_string();
    let good = c.to_string();
    labelled([
        ("payload not json", b"not json".to_vec()),
        ("payload truncated", good.as_bytes()[..good.len() - 1].to_vec()),
        ("payload with trailing garbage", format!("{good}garbage").into_bytes()),
        ("payload of two objects", format!("{good}{good}").into_bytes()),
        ("payload an array of the claims", format!("[{good}]").into_bytes()),
        ("payload a JSON string of the claims", serde_json::to_vec(&good).unwrap()),
        ("payload null", b"null".to_vec()),
        ("payload 42", b"42".to_vec()),
        ("payload empty", Vec::new()),
        ("payload with a UTF-8 BOM", [b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat()),
        (
            "payload with invalid UTF-8 in sub",
            good.replacen("\"sub\":\"", "\"sub\":\"\u{1}", 1).into_bytes().into_iter().map(|b| if b == 1 { 0xff } else { b }).collect(),
        ),
    ])
    .into_iter()
    .map(|(l, payload)| (l, signed_raw(&hs256(), header.as_bytes(), &payload)))
    .collect()
}

/// Deeply nested JSON in the header or the claims: refused, never a crash.
pub fn deep_nesting(c: &Value) -> Vec<Variant> {
    let header = r#"{"alg":"HS256","kid":"hs"}"#;
    let claims = c.to_string();
    let arrays = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let objects = |n: usize| r#"{"a":"#.repeat(n) + "1" + &"}".repeat(n);
    let mut v = Vec::new();
    for (what, deep) in [("2000 nested arrays", arrays(2000)), ("500 nested objects", objects(500))] {
        let h = format!(r#"{{"alg":"HS256","kid":"hs","x":{deep}}}"#);
        v.push((format!("header with {what}"), signed_raw(&hs256(), h.as_bytes(), claims.as_bytes())));
        let p = format!(r#"{},"x":{deep}}}"#, &claims[..claims.len() - 1]);
        v.push((format!("claims with {what}"), signed_raw(&hs256(), header.as_bytes(), p.as_bytes())));
        v.push((format!("claims that are {what}"), signed_raw(&hs256(), header.as_bytes(), deep.as_bytes())));
    }
    v
}

/// A validly signed token over `c` (plus padding) of exactly `len` bytes.
pub fn token_of_len(c: &Value, len: usize) -> String {
    let mut c = c.clone();
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

/// Tokens over 8 KiB, validly signed or junk.
pub fn oversize(c: &Value) -> Vec<Variant> {
    labelled([
        ("8193 bytes", token_of_len(c, 8193)),
        ("8194 bytes", token_of_len(c, 8194)),
        ("8200 bytes", token_of_len(c, 8200)),
        ("12 KiB", token_of_len(c, 12 * 1024)),
        ("8193 bytes of junk", "a".repeat(8193)),
    ])
}

/// `kid`s that name no configured key: near misses, empty, long, path- and SQL-like, of
/// other JSON types, and none at all while three keys are configured.
pub fn unknown_kids(c: &Value) -> Vec<Variant> {
    let strings = [
        "zz",
        "",
        "HS",
        "Hs",
        "hs ",
        " hs",
        "hs\u{0}",
        "hs\n",
        "h s",
        "hs,ed",
        "*",
        "hs\u{200b}",
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
        "hs' OR '1'='1",
        "' OR 1=1 --",
        "hs\"; DROP TABLE events; --",
        "hs' UNION SELECT 'k",
        "hs'--",
        "hs%",
        "h_",
    ];
    let mut v: Vec<Variant> =
        strings.iter().map(|kid| (format!("kid {kid:?}"), with_header(json!({"alg": "HS256", "kid": kid}), c))).collect();
    for (label, kid) in [
        ("kid of 4000 characters", "k".repeat(4000)),
        ("kid hs repeated 2000 times", "hs".repeat(2000)),
        ("kid hs then 600 NULs", format!("hs{}", "\u{0}".repeat(600))),
    ] {
        v.push((label.into(), with_header(json!({"alg": "HS256", "kid": kid}), c)));
    }
    for kid in [json!(1), json!(0), json!(1.5), json!(true), json!(null), json!(["hs"]), json!({"kid": "hs"}), json!([])] {
        v.push((format!("kid {kid} (not a string)"), with_header(json!({"alg": "HS256", "kid": kid}), c)));
    }
    v.push(("no kid with three keys configured".into(), with_header(json!({"alg": "HS256", "typ": "JWT"}), c)));
    v
}

/// Header parameters that would let the token choose its key: `jku`, `jwk`, `x5u`, `x5c`,
/// `crit`, each signed by the real key and by an attacker's.
pub fn key_choosing_header_params(c: &Value) -> Vec<Variant> {
    let attacker = SigningKey::hs256(99);
    let params: [(&str, Vec<(&str, Value)>); 5] = [
        ("jku", vec![("an attacker's URL", json!("https://evil.example/jwks.json")), ("empty", json!("")), ("null", json!(null))]),
        (
            "jwk",
            vec![
                ("the attacker's key", attacker.jwk(Some("hs"))),
                ("the real key", hs256().jwk(Some("hs"))),
                ("{}", json!({})),
                ("null", json!(null)),
            ],
        ),
        ("x5u", vec![("an attacker's URL", json!("https://evil.example/cert.pem")), ("empty", json!("")), ("null", json!(null))]),
        ("x5c", vec![("a certificate", json!(["MIIBszCCAVmgAwIBAgIUW"])), ("[]", json!([])), ("null", json!(null))]),
        ("crit", vec![("[exp]", json!(["exp"])), ("[b64]", json!(["b64"])), ("[]", json!([])), ("null", json!(null))]),
    ];
    let mut v = Vec::new();
    for (param, values) in params {
        for (what, value) in values {
            let mut header = hs_header();
            header[param] = value;
            v.push((format!("{param} = {what}, signed by the real key"), with_header(header.clone(), c)));
            v.push((format!("{param} = {what}, signed by the attacker"), attacker.mint_with_header(&header, c)));
        }
    }
    v
}

// ---------- claims ----------

/// Time claims that are not numbers, and a missing `exp`.
pub fn non_numeric_times(c: &Value) -> Vec<Variant> {
    let (exp, iat) = (c["exp"].as_i64().unwrap(), c["iat"].as_i64().unwrap());
    let mut v: Vec<Variant> = [
        ("exp", json!(exp.to_string())),
        ("exp", json!(format!("{exp}.0"))),
        ("exp", json!("1e12")),
        ("iat", json!(iat.to_string())),
        ("nbf", json!((iat - 10).to_string())),
        ("exp", json!(null)),
        ("exp", json!(true)),
        ("exp", json!([exp])),
        ("exp", json!({"t": exp})),
        ("iat", json!([iat])),
        ("iat", json!(null)),
        ("nbf", json!(false)),
        ("nbf", json!(null)),
    ]
    .into_iter()
    .map(|(claim, value)| (format!("{claim}: {value}"), edited(c, |c| c[claim] = value.clone())))
    .collect();
    v.push(("no exp".into(), without(c, "exp")));
    v
}

/// Issuers that are not exactly the configured one (`foyer-test`).
pub fn wrong_issuers(c: &Value) -> Vec<Variant> {
    let mut v: Vec<Variant> = [
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
    ]
    .into_iter()
    .map(|iss| (format!("iss {iss}"), edited(c, |c| c["iss"] = iss.clone())))
    .collect();
    v.push(("no iss".into(), without(c, "iss")));
    v
}

/// Audiences that neither are nor contain the configured one (`foyer`).
pub fn wrong_audiences(c: &Value) -> Vec<Variant> {
    let mut v: Vec<Variant> = [
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
    ]
    .into_iter()
    .map(|aud| (format!("aud {aud}"), edited(c, |c| c["aud"] = aud.clone())))
    .collect();
    v.push(("no aud".into(), without(c, "aud")));
    v
}

/// `sub` missing, empty or not a string.
pub fn bad_subs(c: &Value) -> Vec<Variant> {
    let mut v: Vec<Variant> = [json!(""), json!(null), json!(0), json!(42), json!(true), json!(["u"]), json!({"id": "u"})]
        .into_iter()
        .map(|sub| (format!("sub {sub}"), edited(c, |c| c["sub"] = sub.clone())))
        .collect();
    v.push(("no sub".into(), without(c, "sub")));
    v
}

/// A grant claim (`channels` or `publish`) of the wrong JSON type; `channel` is the one
/// the claims grant.
pub fn mistyped_grants(c: &Value, claim: &str, channel: &str) -> Vec<Variant> {
    [
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
    .into_iter()
    .map(|bad| (format!("{claim} {bad}"), edited(c, |c| c[claim] = bad.clone())))
    .collect()
}

// ---------- grants that do not grant: PROTOCOL.md "Tokens" (grants), "Connecting" step 5 ----------

/// The grant claims of a token: `channels` and `publish` (`None`: the claim is absent).
#[derive(Clone, Debug)]
pub struct GrantClaims {
    pub channels: Option<Value>,
    pub publish: Option<Value>,
}

impl GrantClaims {
    /// `claims` with its grant claims replaced by these (`None`: the claim is absent).
    pub fn applied_to(&self, mut claims: Value) -> Value {
        if let Some(o) = claims.as_object_mut() {
            o.remove("channels");
            o.remove("publish");
            if let Some(channels) = &self.channels {
                o.insert("channels".into(), channels.clone());
            }
            if let Some(publish) = &self.publish {
                o.insert("publish".into(), publish.clone());
            }
        }
        claims
    }
}

fn subscribe(channels: Value) -> GrantClaims {
    GrantClaims { channels: Some(channels), publish: None }
}

/// Grants of channels that are not `kind:key`, though close to it (each beside `chat:*`,
/// which grants no other kind); `kind` must not be chat.
pub fn near_miss_grants(kind: &str, key: &str) -> Vec<Variant<GrantClaims>> {
    assert_ne!(kind, "chat");
    let others: Vec<&str> = ["orders", "payment", "chat"].into_iter().filter(|k| *k != kind).collect();
    [
        format!("{kind}:{key}x"),
        format!("{kind}:{}", &key[..key.len() - 1]),
        format!("{kind}:{}", key.to_uppercase()),
        format!("{kind}:x{key}"),
        format!("{}:{key}", others[0]),
        format!("{}:{key}", others[1]),
        format!("{kind}:{key}/"),
        format!("{kind}: {key}"),
        format!("{kind}:{key} "),
        format!("{}:{key}", kind.to_uppercase()),
    ]
    .into_iter()
    .map(|other| (format!("channels [{other:?}, \"chat:*\"]"), subscribe(json!([other, "chat:*"]))))
    .collect()
}

/// A customer's grants (the order's payment and chat, every payment and chat room, a
/// publish grant on the target) do not grant the venue's `orders:key`.
pub fn customer_grants(key: &str) -> Vec<Variant<GrantClaims>> {
    labelled([
        ("payment and chat of the order", subscribe(json!([format!("payment:{key}"), format!("chat:{key}")]))),
        ("every payment and chat room", subscribe(json!(["payment:*", "chat:*"]))),
        (
            "publish grant on the orders channel",
            GrantClaims { channels: Some(json!([format!("payment:{key}")])), publish: Some(json!([format!("orders:{key}")])) },
        ),
    ])
}

/// A `publish` grant alone does not let the holder subscribe to `channel` (a chat channel).
pub fn publish_only(channel: &str) -> Vec<Variant<GrantClaims>> {
    labelled([
        ("publish [channel], channels []", GrantClaims { channels: Some(json!([])), publish: Some(json!([channel])) }),
        ("publish [chat:*], channels []", GrantClaims { channels: Some(json!([])), publish: Some(json!(["chat:*"])) }),
        ("publish [channel], no channels claim", GrantClaims { channels: None, publish: Some(json!([channel])) }),
    ])
}

/// Wildcards of every other kind, alone and together, do not grant a channel of `kind`.
pub fn other_kind_wildcards(kind: &str) -> Vec<Variant<GrantClaims>> {
    let others: Vec<String> = ["orders", "payment", "chat"].into_iter().filter(|k| *k != kind).map(|k| format!("{k}:*")).collect();
    let mut v: Vec<Variant<GrantClaims>> = others.iter().map(|w| (format!("channels [{w}]"), subscribe(json!([w])))).collect();
    v.push((format!("channels {others:?}"), subscribe(json!(others))));
    v
}

/// Entries that look like wildcards or channels but are neither: only exactly `KIND:*` is
/// a wildcard.
pub fn malformed_wildcards(kind: &str, key: &str) -> Vec<Variant<GrantClaims>> {
    [
        format!("{kind}:{}*", &key[..2]),
        format!("{kind}:{key}*"),
        format!("{kind}:*{}", &key[key.len() - 2..]),
        format!("{kind}:*x"),
        format!("{kind}:**"),
        format!("{kind}:* "),
        format!(" {kind}:*"),
        format!("{kind}:.*"),
        format!("{kind}:%2A"),
        format!("{kind}:"),
        kind.to_owned(),
        format!("{}:*", kind.to_uppercase()),
        format!("{}{}:*", kind[..1].to_uppercase(), &kind[1..]),
        "*".into(),
        "*:*".into(),
        format!("*:{key}"),
        format!("{kind}:*:*"),
        format!("{kind}:{key}?"),
        format!("{kind}:{key}\u{0}"),
    ]
    .into_iter()
    .map(|entry| (format!("channels [{entry:?}]"), subscribe(json!([entry]))))
    .collect()
}

// ---------- connect requests: PROTOCOL.md "Connecting" ----------

/// Paths under `/ws/` that name no channel, or a malformed key, with the status each gets.
pub fn odd_paths(kind: &str, key: &str) -> Vec<Variant<u16>> {
    let upper = kind.to_uppercase();
    labelled([
        (format!("/ws/{kind}/{key}%00"), 400),
        (format!("/ws/{kind}/{key}%20"), 400),
        (format!("/ws/{kind}/{key}%2A"), 400),
        (format!("/ws/{kind}/%2A"), 400),
        (format!("/ws/{kind}/%C3%A9"), 400),
        (format!("/ws/{kind}/{key}.json"), 400),
        (format!("/ws/{kind}/{}", "k".repeat(65)), 400),
        (format!("/ws/{upper}/{key}"), 404),
        (format!("/ws/{}/{key}", &kind[..kind.len() - 1]), 404),
        (format!("/ws/{kind}:{key}"), 404),
        (format!("/ws//{kind}/{key}"), 404),
        (format!("/ws/{kind}/{key}/x"), 404),
        (format!("/ws/{kind}/{key}//"), 404),
    ])
}

/// `since` values that are not a non-negative integer (as sent in the query string).
pub const BAD_SINCE: [&str; 8] = ["1.0", "+1", "%201", "1e3", "", "0x1", "99999999999999999999999", "-0"];

/// Origins that are not the allowed `https://shop.example`, grouped by trick.
pub fn foreign_origins() -> Vec<Variant> {
    let groups: [(&str, &[&str]); 6] = [
        (
            "suffix or prefix",
            &[
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
            ],
        ),
        (
            "scheme or port",
            &[
                "http://shop.example",
                "https://shop.example:443",
                "https://shop.example:8443",
                "wss://shop.example",
                "ws://shop.example",
                "shop.example",
                "//shop.example",
                "file://shop.example",
            ],
        ),
        ("case", &["https://SHOP.EXAMPLE", "HTTPS://shop.example", "https://Shop.Example"]),
        ("no origin", &["null", "NULL", "undefined", "*"]),
        ("path", &["https://shop.example/", "https://shop.example/app", "https://shop.example.", "https://shop.example/."]),
        (
            "list",
            &[
                "https://shop.example https://evil.example",
                "https://evil.example https://shop.example",
                "https://shop.example, https://evil.example",
                "https://shop.example,https://shop.example",
            ],
        ),
    ];
    groups.iter().flat_map(|(group, origins)| origins.iter().map(move |o| (format!("{group}: {o}"), o.to_string()))).collect()
}

/// Near misses of the gateway's own origin `http://127.0.0.1:{port}`.
pub fn own_origin_near_misses(port: u16) -> Vec<Variant> {
    [
        "http://127.0.0.1".into(),
        format!("http://127.0.0.1:{}", port + 1),
        format!("https://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{port}"),
        format!("HTTP://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}/."),
        format!("http://127.0.0.01:{port}"),
        format!("http://2130706433:{port}"),
        format!("http://[::1]:{port}"),
        format!("http://127.0.0.1:0{port}"),
    ]
    .into_iter()
    .map(|o| (format!("own origin near miss {o}"), o))
    .collect()
}

/// Offers with a token but without exactly `foyer.v1` (HTTP 400).
pub fn offers_without_foyer(t: &str) -> Vec<Variant> {
    labelled([
        ("foyer.v2", format!("foyer.v2, bearer.{t}")),
        ("FOYER.V1", format!("FOYER.V1, bearer.{t}")),
        ("foyer.v1x", format!("foyer.v1x, bearer.{t}")),
        ("foyer", format!("foyer, bearer.{t}")),
        ("x-foyer.v1", format!("x-foyer.v1, bearer.{t}")),
        ("foyer.v1.1", format!("bearer.{t}, foyer.v1.1")),
        ("the token alone", format!("bearer.{t}")),
    ])
    .into_iter()
    .map(|(l, o)| (format!("offer {l} with a token"), o))
    .collect()
}

/// Offers with two tokens (HTTP 400), even when one is valid.
pub fn offers_with_two_tokens(t: &str, other: &str) -> Vec<Variant> {
    labelled([
        ("valid then junk", format!("foyer.v1, bearer.{t}, bearer.not-a-token")),
        ("junk first", format!("bearer.not-a-token, foyer.v1, bearer.{t}")),
        ("two valid tokens", format!("foyer.v1, bearer.{t}, bearer.{other}")),
        ("the same token twice", format!("foyer.v1,bearer.{t},bearer.{t}")),
        ("valid then empty", format!("foyer.v1, bearer.{t}, bearer.")),
    ])
}

/// Offers whose bearer token is empty (closed 4401, `foyer.v1` selected).
pub const EMPTY_BEARERS: [&str; 3] = ["foyer.v1, bearer.", "bearer., foyer.v1", "foyer.v1,bearer."];

// ---------- publish forgeries: PROTOCOL.md "Publishing" ----------

/// Hex HMAC-SHA256 over `"<t>.<path>." + body` with `t` exactly as written.
pub fn mac_hex(secret: &str, t: &str, path: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(format!("{t}.{path}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

pub const UNCONFIGURED_SECRET: &str = "not-a-configured-secret";

/// An `X-Foyer-Signature` header from a template, for `body` sent to `/publish` at `now`:
/// `{t}` is `now` and `{t-1}` a second earlier; `{cur}`, `{old}` and `{bad}` are the MAC at
/// `{t}` with the current, the previous and an unconfigured secret; `{CUR}` and `{CuR}`
/// the current one upper- and mixed-case, `{cur62}` its first 62 digits and `{cur~}` it
/// with its first digit changed; `{zeros}` and `{ffs}` 64 of those digits.
pub fn signature_header(template: &str, now: i64, body: &[u8]) -> String {
    let t = now.to_string();
    let cur = mac_hex(PUBLISH_SECRET, &t, "/publish", body);
    let first = if cur.starts_with('0') { '1' } else { '0' };
    let mixed: String = cur.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
    template
        .replace("{t-1}", &(now - 1).to_string())
        .replace("{t}", &t)
        .replace("{cur62}", &cur[..62])
        .replace("{cur~}", &format!("{first}{}", &cur[1..]))
        .replace("{CUR}", &cur.to_uppercase())
        .replace("{CuR}", &mixed)
        .replace("{cur}", &cur)
        .replace("{old}", &mac_hex(OLD_PUBLISH_SECRET, &t, "/publish", body))
        .replace("{bad}", &mac_hex(UNCONFIGURED_SECRET, &t, "/publish", body))
        .replace("{zeros}", &"0".repeat(64))
        .replace("{ffs}", &"f".repeat(64))
}

/// Signature headers that must be refused (401) for the body they are sent with.
pub fn refused_signature_templates() -> Vec<Variant<&'static str>> {
    labelled([
        ("one signature digit changed", "t={t},v1={cur~}"),
        ("t moved by one second", "t={t-1},v1={cur}"),
        ("signature one byte short", "t={t},v1={cur62}"),
        ("an unconfigured secret", "t={t},v1={bad}"),
        ("no v1: t alone", "t={t}"),
        ("no v1: v2 only", "t={t},v2={cur}"),
        ("no v1: v0 only", "t={t},v0={cur}"),
        ("no v1: v1 empty", "t={t},v1="),
        ("no v1: v1 without =", "t={t},v1"),
        ("no v1: the hex without a scheme", "t={t},{cur}"),
        ("no t", "v1={cur}"),
        ("the hex alone", "{cur}"),
        ("an empty header", ""),
        ("garbage", "garbage"),
        ("t twice", "t={t},t={t},v1={cur}"),
        ("v1 twice, both wrong", "t={t},v1={bad},v1={cur~}"),
    ])
}

/// Signature headers that must be accepted: hex in either case, several `v1` entries (one
/// match suffices, with the previous secret during a rotation).
pub fn accepted_signature_templates() -> Vec<Variant<&'static str>> {
    labelled([
        ("the standard header", "t={t},v1={cur}"),
        ("the previous secret", "t={t},v1={old}"),
        ("uppercase hex", "t={t},v1={CUR}"),
        ("mixed-case hex", "t={t},v1={CuR}"),
        ("several v1: wrong then right", "t={t},v1={bad},v1={old}"),
        ("several v1: right then wrong", "t={t},v1={old},v1={bad}"),
        ("several v1: right among four", "t={t},v1={bad},v1={bad},v1={old},v1={zeros}"),
        ("several v1 with spaces", "t={t}, v1={ffs}, v1={old}"),
        ("the same v1 twice", "t={t},v1={cur},v1={cur}"),
    ])
}

/// `t` values that are not an integer (each sent with a MAC over `t` exactly as written).
pub fn non_integer_ts(now: i64) -> Vec<Variant> {
    let ts: [String; 11] = [
        format!("{now}.0"),
        format!("{now}.5"),
        format!("{now}e0"),
        "1.7e9".to_owned(),
        format!("0x{now:x}"),
        format!("-{now}"),
        format!(" {now}x"),
        format!("{now}abc"),
        String::new(),
        "now".into(),
        "99999999999999999999999".into(),
    ];
    ts.into_iter().map(|t| (format!("t = {t:?}"), t)).collect()
}

/// Paths a signature may have been made for, none of them `/publish`.
pub const OTHER_PATHS: [&str; 6] = ["/revoke", "/publish/", "publish", "", "/PUBLISH", "http://127.0.0.1/publish"];

/// Content types other than `application/json` (`None`: no header at all).
pub const WRONG_CONTENT_TYPES: [Option<&str>; 9] = [
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    Some("application/jsonp"),
    Some("application/json-patch+json"),
    Some("text/json"),
    Some("application/javascript"),
    Some(""),
    None,
];

pub fn message(id: &str, channels: &[&str]) -> Value {
    json!({"id": id, "channels": channels, "event": "order.updated", "data": {"order": id, "total": 100}})
}

/// Publish bodies that are malformed (400) although correctly signed; `ch` is a valid
/// channel they target.
pub fn malformed_bodies(ch: &str) -> Vec<Variant<Vec<u8>>> {
    let ok = |id: &str| message(id, &[ch]);
    let mut bodies: Vec<Variant<Vec<u8>>> = labelled([
        ("not JSON", b"{not json".to_vec()),
        ("empty", Vec::new()),
        ("truncated", {
            let s = ok("t").to_string();
            s.as_bytes()[..s.len() - 1].to_vec()
        }),
        ("trailing garbage", format!("{}x", ok("t")).into_bytes()),
        ("two objects", format!("{}{}", ok("t"), ok("u")).into_bytes()),
        ("invalid UTF-8", [ok("t").to_string().as_bytes(), b"\xff"].concat()),
        ("a JSON array", json!([ok("t")]).to_string().into_bytes()),
        ("a JSON string", b"\"x\"".to_vec()),
        ("null", b"null".to_vec()),
    ]);
    let mut values = vec![
        ("no id", json!({"channels": [ch], "event": "e"})),
        ("empty id", json!({"id": "", "channels": [ch], "event": "e"})),
        ("numeric id", json!({"id": 7, "channels": [ch], "event": "e"})),
        ("null id", json!({"id": null, "channels": [ch], "event": "e"})),
        ("boolean id", json!({"id": true, "channels": [ch], "event": "e"})),
        ("array id", json!({"id": ["x"], "channels": [ch], "event": "e"})),
        ("object id", json!({"id": {"id": "x"}, "channels": [ch], "event": "e"})),
        ("id of 129 characters", json!({"id": "i".repeat(129), "channels": [ch], "event": "e"})),
        ("id of 129 two-byte characters", json!({"id": "é".repeat(129), "channels": [ch], "event": "e"})),
        ("id of 1000 characters", json!({"id": "i".repeat(1000), "channels": [ch], "event": "e"})),
        ("no event", json!({"id": "x", "channels": [ch]})),
        ("empty event", json!({"id": "x", "channels": [ch], "event": ""})),
        ("event of 129 characters", json!({"id": "x", "channels": [ch], "event": "e".repeat(129)})),
        ("numeric event", json!({"id": "x", "channels": [ch], "event": 1})),
        ("null event", json!({"id": "x", "channels": [ch], "event": null})),
        ("object event", json!({"id": "x", "channels": [ch], "event": {"name": "e"}})),
        ("no channels", json!({"id": "x", "event": "e"})),
        ("empty channels", json!({"id": "x", "channels": [], "event": "e"})),
        ("channels as a string", json!({"id": "x", "channels": ch, "event": "e"})),
        ("channels as an object", json!({"id": "x", "channels": {ch: true}, "event": "e"})),
        ("channels null", json!({"id": "x", "channels": null, "event": "e"})),
        ("channels nested", json!({"id": "x", "channels": [[ch]], "event": "e"})),
        ("channel that is a number", json!({"id": "x", "channels": [ch, 7], "event": "e"})),
        ("channel that is null", json!({"id": "x", "channels": [ch, null], "event": "e"})),
        ("messages empty", json!({"messages": []})),
        ("messages an object", json!({"messages": ok("x")})),
        ("messages a string", json!({"messages": "x"})),
        ("messages null", json!({"messages": null})),
        ("messages with a number", json!({"messages": [ok("x"), 1]})),
        ("messages with null", json!({"messages": [null]})),
        ("messages with a bad message last", json!({"messages": [ok("x"), {"id": "y", "channels": [ch]}]})),
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
    bodies.extend(values.into_iter().map(|(l, v)| {
        let shown = v.to_string();
        let shown = if shown.len() > 90 { format!("{}…", &shown[..shown.floor_char_boundary(90)]) } else { shown };
        (format!("{l}: {shown}"), v.to_string().into_bytes())
    }));
    bodies
}

/// A batch for `channel` of exactly `len` bytes (JSON padded with trailing spaces) whose
/// five messages each carry under 64 KiB of data.
pub fn batch_of_len(channel: &str, len: usize, ids: &dyn Fn(usize) -> String) -> Vec<u8> {
    let messages: Vec<Value> =
        (0..5).map(|i| json!({"id": ids(i), "channels": [channel], "event": "bulk", "data": "d".repeat(52_000)})).collect();
    let mut body = json!({"messages": messages}).to_string().into_bytes();
    assert!(body.len() <= len, "base batch too large");
    body.resize(len, b' ');
    body
}

/// `data` over 64 KiB serialized (413); a JSON string of n characters serializes to n + 2.
pub fn oversized_data() -> Vec<Variant<Value>> {
    labelled([
        ("65537 bytes serialized", json!("x".repeat(64 * 1024 - 1))),
        ("an object of 70 000 bytes", json!({"blob": "x".repeat(70_000)})),
        ("escapes that grow when serialized", json!("\n".repeat(33_000))),
    ])
}
