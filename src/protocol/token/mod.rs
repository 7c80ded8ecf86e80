//! Verification of the backend's short-lived tokens (compact JWS), per PROTOCOL.md "Tokens".
//!
//! Foyer's own rules stand around jsonwebtoken's part, the signature check
//! (`jsonwebtoken::crypto::verify`, through [`provider`], so only HS256, EdDSA and ES256 are
//! linked). Before it: the size cap, the compact form, canonical base64url, refused header
//! parameters, `kid` selection, the key pinning the algorithm, and a header stricter than a
//! JSON object ([`header_members_typed`]). After it, the claims, parsed once: the refusals
//! jsonwebtoken's claim validation made that Foyer's would not ([`library_refusal`]), then
//! Foyer's own: claim types, `sub`, `iss`, `aud`, the time claims and the lifetime, against
//! the one `now` the caller passes (jsonwebtoken 10 reads the wall clock itself, which no
//! test can set to a boundary), and the grants. jsonwebtoken's `decode` would parse the header
//! into its typed `Header` and the claims twice more: code a fresh isolate compiles on its
//! first connects (bench/README.md).

mod provider;

#[cfg(not(target_arch = "wasm32"))]
pub use provider::RustCurves;
pub use provider::{use_curves, Curves};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::channel::Grants;

/// Tokens longer than this are refused without being parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `sub` accepted, measured as JSON text (escapes count): the room keeps it in the
/// socket's hibernation attachment, which the runtime limits to 2 KiB (with the name, role
/// and counters beside it).
pub const MAX_SUB_BYTES: usize = 256;

fn sub_fits(sub: &str) -> bool {
    serde_json::to_string(sub).is_ok_and(|json| json.len() - 2 <= MAX_SUB_BYTES)
}
/// Tolerance for clock skew on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 30;
/// Default for `TOKEN_MAX_LIFETIME`.
pub const DEFAULT_MAX_LIFETIME_SECS: i64 = 900;
/// RFC 7518 §3.2: an HS256 key must have at least as many bits as the hash.
const MIN_HMAC_KEY_BYTES: usize = 32;
/// Header parameters that would let the token choose its own key: never honoured.
const FORBIDDEN_HEADER_PARAMS: [&str; 5] = ["jku", "jwk", "x5u", "x5c", "crit"];

/// An accepted algorithm's name as tokens and JWKS spell it.
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::EdDSA => "EdDSA",
        _ => "ES256",
    }
}

/// One verification key from the configured JWKS. Its algorithm is pinned by configuration.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The configured keys (`JWT_KEYS`, a JSON Web Key Set).
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeySet").field("keys", &self.keys.len()).finish()
    }
}

impl KeySet {
    /// Parses a JWKS: `oct` keys for HS256, `OKP`/`Ed25519` for EdDSA, `EC`/`P-256` for ES256.
    pub fn from_jwks(json: &str) -> Result<KeySet, String> {
        provider::install();
        let set: Value = serde_json::from_str(json).map_err(|_| "JWT_KEYS is not JSON".to_owned())?;
        let entries = set.get("keys").and_then(Value::as_array).ok_or("JWT_KEYS has no \"keys\" array")?;
        if entries.is_empty() {
            return Err("JWT_KEYS has no keys".into());
        }
        let mut keys = Vec::with_capacity(entries.len());
        for (i, jwk) in entries.iter().enumerate() {
            let key = parse_jwk(jwk).map_err(|e| format!("JWT_KEYS key {i}: {e}"))?;
            if entries.len() > 1 && key.kid.is_none() {
                return Err(format!("JWT_KEYS key {i}: a \"kid\" is required when several keys are configured"));
            }
            if key.kid.is_some() && keys.iter().any(|k: &Key| k.kid == key.kid) {
                return Err(format!("JWT_KEYS key {i}: duplicate \"kid\""));
            }
            keys.push(key);
        }
        Ok(KeySet { keys })
    }

    /// The key a token's `kid` picks: by `kid`, or the only key when there is one.
    fn select(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

fn parse_jwk(jwk: &Value) -> Result<Key, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() => Some(kid.clone()),
        Some(_) => return Err("\"kid\" must be a non-empty string".into()),
    };
    let alg = field("alg").ok_or("\"alg\" is required")?;
    // The gateway verifies, it never signs: a private key here is a leak waiting to happen.
    if matches!(field("kty"), Some("OKP" | "EC")) && jwk.get("d").is_some() {
        return Err("holds private key material (\"d\"); configure the public key only".into());
    }
    let b64 = |value: &str, what: &str| URL_SAFE_NO_PAD.decode(value).map_err(|_| format!("{what} is not base64url"));
    let (alg, key) = match (field("kty"), alg) {
        (Some("oct"), "HS256") => {
            let secret = b64(field("k").ok_or("oct key without \"k\"")?, "\"k\"")?;
            if secret.len() < MIN_HMAC_KEY_BYTES {
                return Err(format!("HS256 key shorter than {MIN_HMAC_KEY_BYTES} bytes"));
            }
            (Algorithm::HS256, DecodingKey::from_secret(&secret))
        }
        (Some("OKP"), "EdDSA") if field("crv") == Some("Ed25519") => {
            let x = b64(field("x").ok_or("OKP key without \"x\"")?, "\"x\"")?;
            if x.len() != 32 {
                return Err("\"x\" is not a 32-byte Ed25519 public key".into());
            }
            // jsonwebtoken keeps raw key bytes under the name "DER" (here: Ed25519's 32).
            (Algorithm::EdDSA, DecodingKey::from_ed_der(&x))
        }
        (Some("EC"), "ES256") if field("crv") == Some("P-256") => {
            let (x, y) = (field("x").ok_or("EC key without \"x\"")?, field("y").ok_or("EC key without \"y\"")?);
            let (x, y) = (b64(x, "\"x\"")?, b64(y, "\"y\"")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("EC coordinates must be 32 bytes of base64url".into());
            }
            // The SEC1 uncompressed point.
            (Algorithm::ES256, DecodingKey::from_ec_der(&[&[4u8][..], &x, &y].concat()))
        }
        (kty, alg) => {
            return Err(format!(
                "unsupported key type/algorithm {}/{alg} (HS256 oct, EdDSA OKP Ed25519, ES256 EC P-256)",
                kty.unwrap_or("?")
            ))
        }
    };
    // A key the provider cannot use is refused here, not on every token.
    provider::check_key(alg, &key).map_err(|e| format!("bad {} key: {e}", alg_name(alg)))?;
    Ok(Key { kid, alg, key })
}

/// What a token must satisfy besides its signature.
#[derive(Clone, Debug)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
    pub max_lifetime: i64,
}

impl Expectations {
    pub fn new(issuer: String, audience: String, max_lifetime: i64) -> Expectations {
        Expectations { issuer, audience, max_lifetime }
    }
}

/// The verified content of a token.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    pub iat: Option<i64>,
    pub channels: Grants,
    pub publish: Grants,
    pub name: Option<String>,
    pub role: Option<String>,
}

/// Why a token was refused. Every variant means close 4401; the reason is for logs (which
/// never contain the token itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    Malformed,
    BadHeader,
    ForbiddenHeaderParam,
    UnknownKey,
    AlgorithmMismatch,
    BadSignature,
    BadClaims,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    IssuedInFuture,
    LifetimeTooLong,
}

impl TokenError {
    /// Whether the failure looks like guessing: the token failed before or at its signature
    /// (malformed, unknown key, forged). Every later failure is a token the backend signed
    /// (expired, not yet valid, wrong audience...): a normal event, never an attack.
    pub fn is_guess(self) -> bool {
        matches!(
            self,
            TokenError::TooLarge
                | TokenError::Malformed
                | TokenError::BadHeader
                | TokenError::ForbiddenHeaderParam
                | TokenError::UnknownKey
                | TokenError::AlgorithmMismatch
                | TokenError::BadSignature
        )
    }

    pub fn reason(self) -> &'static str {
        match self {
            TokenError::TooLarge => "token too large",
            TokenError::Malformed => "token is not a compact JWS",
            TokenError::BadHeader => "token header is malformed",
            TokenError::ForbiddenHeaderParam => "token header carries a forbidden parameter",
            TokenError::UnknownKey => "token names no configured key",
            TokenError::AlgorithmMismatch => "token algorithm does not match its key",
            TokenError::BadSignature => "token signature is invalid",
            TokenError::BadClaims => "token claims are malformed",
            TokenError::WrongIssuer => "token issuer is wrong",
            TokenError::WrongAudience => "token audience is wrong",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::IssuedInFuture => "token issued in the future",
            TokenError::LifetimeTooLong => "token lifetime exceeds the maximum",
        }
    }
}

/// Decodes one segment: base64url, no padding, canonical (no stray trailing bits).
fn segment(s: &str) -> Result<Vec<u8>, TokenError> {
    if s.is_empty() {
        return Err(TokenError::Malformed);
    }
    URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)
}

/// A segment's JSON object, parsed once, with the names of the members it repeats (a JSON
/// object keeps the last copy; the rules below refuse a repeat, and which one decides the
/// answer). One pass where checking repeats used to parse each segment again, twice for the
/// claims.
struct Object {
    members: Map<String, Value>,
    repeated: Vec<String>,
}

fn json_object(bytes: &[u8], err: TokenError) -> Result<Object, TokenError> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = Object;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
            let mut object = Object { members: Map::new(), repeated: Vec::new() };
            while let Some(name) = map.next_key::<String>()? {
                let value = map.next_value::<Value>()?;
                if object.members.contains_key(&name) {
                    object.repeated.push(name.clone());
                }
                object.members.insert(name, value);
            }
            Ok(object)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let object = serde::Deserializer::deserialize_map(&mut de, Members).map_err(|_| err)?;
    de.end().map_err(|_| err)?;
    Ok(object)
}

/// Verifies `token` against `keys` and `expect` at time `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, expect: &Expectations, now: i64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let (header, payload, signature) = (segment(h64)?, segment(p64)?, segment(s64)?);

    let Object { members: header, repeated } = json_object(&header, TokenError::BadHeader)?;
    if FORBIDDEN_HEADER_PARAMS.iter().any(|p| header.contains_key(*p)) {
        return Err(TokenError::ForbiddenHeaderParam);
    }
    let alg = header.get("alg").and_then(Value::as_str).ok_or(TokenError::BadHeader)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(TokenError::BadHeader),
    };
    let key = keys.select(kid).ok_or(TokenError::UnknownKey)?;
    // The key pins the algorithm: `none`, another family or another hash never reaches crypto.
    if alg != alg_name(key.alg) {
        return Err(TokenError::AlgorithmMismatch);
    }
    if signature.is_empty() {
        return Err(TokenError::BadSignature);
    }
    if !header_members_typed(&header, &repeated) {
        return Err(TokenError::BadHeader);
    }
    let signed = &token[..h64.len() + 1 + p64.len()];
    match jsonwebtoken::crypto::verify(s64, signed.as_bytes(), &key.key, key.alg) {
        Ok(true) => {}
        Ok(false) => return Err(TokenError::BadSignature),
        Err(_) => return Err(TokenError::Malformed),
    }
    let Object { members: claims, repeated } = json_object(&payload, TokenError::BadClaims)?;
    match library_refusal(&claims, &repeated) {
        // Foyer's rules name the claim first, in their fixed order.
        Some(refused) => Err(check_claims(&claims, expect, now).err().unwrap_or(refused)),
        None if !repeated.is_empty() => Err(TokenError::BadClaims),
        None => check_claims(&claims, expect, now),
    }
}

/// A header stricter than a JSON object (docs/protocol.md, Tokens): no member repeated (two
/// readers could take different copies), the parameters JWS defines as text (`typ`, `cty`,
/// `x5t`, `x5t#S256`, `url`, `nonce`, `enc`, `zip`) a string or null, and any member Foyer
/// does not know a string. `alg` and `kid` are checked where they are read.
fn header_members_typed(header: &Map<String, Value>, repeated: &[String]) -> bool {
    const TEXT: [&str; 8] = ["typ", "cty", "x5t", "x5t#S256", "url", "nonce", "enc", "zip"];
    repeated.is_empty()
        && header.iter().all(|(name, value)| match name.as_str() {
            "alg" | "kid" => true,
            n if TEXT.contains(&n) => value.is_string() || value.is_null(),
            _ => value.is_string(),
        })
}

/// The claims jsonwebtoken's validation refused and Foyer's own checks would not, named as
/// they were then: one of its fields (`exp`, `nbf`, `sub`, `iss`, `aud`) repeated, and an
/// `aud` array holding a non-string. Every other claim it refused, Foyer's checks refuse too,
/// and name first. (Any other member repeated is refused after these: docs/protocol.md,
/// Tokens.)
fn library_refusal(claims: &Map<String, Value>, repeated: &[String]) -> Option<TokenError> {
    if repeated.iter().any(|name| ["exp", "nbf", "sub", "iss", "aud"].contains(&name.as_str())) {
        return Some(TokenError::BadClaims);
    }
    match claims.get("aud") {
        Some(Value::Array(items)) if !items.iter().all(Value::is_string) => Some(TokenError::WrongAudience),
        _ => None,
    }
}

/// A time claim: a JSON number (fractions are truncated), never a string.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64));
            secs.map(Some).ok_or(TokenError::BadClaims)
        }
        Some(_) => Err(TokenError::BadClaims),
    }
}

fn optional_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::BadClaims),
    }
}

/// A grant claim: absent (grants nothing) or an array of strings; any other type is invalid.
fn grants(claims: &Map<String, Value>, name: &str) -> Result<Grants, TokenError> {
    match claims.get(name) {
        None => Ok(Grants::default()),
        Some(Value::Array(items)) => {
            let entries: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            entries.map(Grants::from_entries).ok_or(TokenError::BadClaims)
        }
        Some(_) => Err(TokenError::BadClaims),
    }
}

fn check_claims(claims: &Map<String, Value>, expect: &Expectations, now: i64) -> Result<Claims, TokenError> {
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && sub_fits(s) => s.clone(),
        _ => return Err(TokenError::BadClaims),
    };
    let exp = time_claim(claims, "exp")?.ok_or(TokenError::BadClaims)?;
    let iat = time_claim(claims, "iat")?;
    let nbf = time_claim(claims, "nbf")?;

    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == expect.issuer => {}
        _ => return Err(TokenError::WrongIssuer),
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == expect.audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expect.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }

    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
        return Err(TokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECS)) {
        return Err(TokenError::IssuedInFuture);
    }
    if exp.saturating_sub(iat.unwrap_or(now)) > expect.max_lifetime {
        return Err(TokenError::LifetimeTooLong);
    }

    Ok(Claims {
        sub,
        exp,
        iat,
        channels: grants(claims, "channels")?,
        publish: grants(claims, "publish")?,
        name: optional_string(claims, "name")?,
        role: optional_string(claims, "role")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkit::{b64_json, jwks, SigningKey};
    use crate::protocol::channel::Channel;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn expect() -> Expectations {
        Expectations::new("https://shop.example".into(), "foyer".into(), 900)
    }

    fn claims() -> Value {
        json!({"sub": "u1", "iss": "https://shop.example", "aud": "foyer", "iat": NOW, "exp": NOW + 600,
               "channels": ["orders:v1", "chat:*"], "publish": ["chat:r1"], "name": "Ann", "role": "staff"})
    }

    fn with(mut c: Value, k: &str, v: Value) -> Value {
        c[k] = v;
        c
    }

    fn without(mut c: Value, k: &str) -> Value {
        c.as_object_mut().unwrap().remove(k);
        c
    }

    fn one_key(key: &SigningKey) -> KeySet {
        KeySet::from_jwks(&jwks(&[(key, None)])).unwrap()
    }

    /// A token signed over a header and payload given as raw JSON text (not re-serialized).
    fn sign_raw(key: &SigningKey, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes())))
    }

    fn check(keys: &KeySet, token: &str) -> Result<Claims, TokenError> {
        verify(token, keys, &expect(), NOW)
    }

    #[test]
    fn valid_tokens_of_each_algorithm_verify() {
        for key in [SigningKey::hs256(1), SigningKey::eddsa(2), SigningKey::es256(3)] {
            let c = check(&one_key(&key), &key.mint(None, &claims())).unwrap_or_else(|e| panic!("{}: {e:?}", key.alg()));
            assert_eq!(c.sub, "u1");
            assert_eq!(c.exp, NOW + 600);
            assert_eq!(c.name.as_deref(), Some("Ann"));
            assert!(c.channels.allows(&Channel::parse("orders:v1").unwrap()));
            assert!(c.channels.allows(&Channel::parse("chat:any").unwrap()));
            assert!(!c.channels.allows(&Channel::parse("payment:o1").unwrap()));
            assert!(c.publish.allows(&Channel::parse("chat:r1").unwrap()));
        }
    }

    #[test]
    fn kid_selects_the_key_and_is_required_with_several_keys() {
        let (a, b) = (SigningKey::hs256(1), SigningKey::eddsa(2));
        let keys = KeySet::from_jwks(&jwks(&[(&a, Some("old")), (&b, Some("new"))])).unwrap();
        assert!(check(&keys, &a.mint(Some("old"), &claims())).is_ok());
        assert!(check(&keys, &b.mint(Some("new"), &claims())).is_ok());
        assert_eq!(check(&keys, &a.mint(Some("new"), &claims())), Err(TokenError::AlgorithmMismatch));
        assert_eq!(check(&keys, &a.mint(Some("gone"), &claims())), Err(TokenError::UnknownKey));
        assert_eq!(check(&keys, &a.mint(None, &claims())), Err(TokenError::UnknownKey));
        // A kid of the wrong type is a malformed header.
        let t = a.mint_with_header(&json!({"alg": "HS256", "kid": 1}), &claims());
        assert_eq!(check(&keys, &t), Err(TokenError::BadHeader));
    }

    #[test]
    fn same_algorithm_other_key_is_a_bad_signature() {
        let keys = one_key(&SigningKey::hs256(1));
        assert_eq!(check(&keys, &SigningKey::hs256(9).mint(None, &claims())), Err(TokenError::BadSignature));
        let keys = one_key(&SigningKey::es256(1));
        assert_eq!(check(&keys, &SigningKey::es256(9).mint(None, &claims())), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_in_any_casing_and_foreign_algorithms_are_refused() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        for alg in ["none", "None", "NONE", "nOnE", "HS384", "HS512", "RS256", "ES256", "EdDSA", "hs256"] {
            let t = key.mint_with_header(&json!({"alg": alg}), &claims());
            assert_eq!(check(&keys, &t), Err(TokenError::AlgorithmMismatch), "{alg}");
        }
        let unsigned = format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(&claims()));
        assert_eq!(check(&keys, &unsigned), Err(TokenError::Malformed));
    }

    #[test]
    fn hmac_signed_with_a_public_key_is_refused() {
        // Algorithm confusion: an attacker HMACs with the EdDSA public key bytes.
        let ed = SigningKey::eddsa(2);
        let keys = one_key(&ed);
        let x = URL_SAFE_NO_PAD.decode(ed.jwk(None)["x"].as_str().unwrap()).unwrap();
        let forged = SigningKey::Hs256(x).mint(None, &claims());
        assert_eq!(check(&keys, &forged), Err(TokenError::AlgorithmMismatch));
    }

    #[test]
    fn header_parameters_that_choose_keys_are_refused() {
        let key = SigningKey::hs256(1);
        for p in FORBIDDEN_HEADER_PARAMS {
            let t = key.mint_with_header(&json!({"alg": "HS256", p: "x"}), &claims());
            assert_eq!(check(&one_key(&key), &t), Err(TokenError::ForbiddenHeaderParam), "{p}");
        }
    }

    #[test]
    fn only_compact_serialization_is_accepted() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let good = key.mint(None, &claims());
        let parts: Vec<&str> = good.split('.').collect();
        for bad in [
            parts[..2].join("."),
            format!("{good}."),
            format!("{good}.x"),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
            format!(" {good}"),
            good.replace('-', "+").replace('_', "/") + "+/",
            String::new(),
            "..".into(),
        ] {
            assert!(check(&keys, &bad).is_err(), "{bad}");
        }
        // Non-canonical base64url: the last character carries stray low bits.
        let sig = parts[2];
        let last = sig.chars().last().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.find(last).unwrap();
        let tweaked = alphabet.chars().nth(idx ^ 1).unwrap();
        let non_canonical = format!("{}.{}.{}{}", parts[0], parts[1], &sig[..sig.len() - 1], tweaked);
        assert_eq!(check(&keys, &non_canonical), Err(TokenError::Malformed));
    }

    #[test]
    fn header_and_payload_must_be_json_objects() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let sign = |h: &str, p: &str| sign_raw(&key, h, p);
        let claims = claims().to_string();
        assert_eq!(check(&keys, &sign("not json", &claims)), Err(TokenError::BadHeader));
        assert_eq!(check(&keys, &sign("[\"HS256\"]", &claims)), Err(TokenError::BadHeader));
        assert_eq!(check(&keys, &sign("{\"alg\":\"HS256\"}", "[1]")), Err(TokenError::BadClaims));
        let deep = "[".repeat(1500) + &"]".repeat(1500);
        assert_eq!(check(&keys, &sign("{\"alg\":\"HS256\"}", &deep)), Err(TokenError::BadClaims));
        assert_eq!(check(&keys, &sign(&deep, &claims)), Err(TokenError::BadHeader));
    }

    #[test]
    fn duplicate_members_are_refused_where_a_json_object_would_keep_the_last() {
        // A parser that keeps the last duplicate and one that keeps the first would read two
        // different tokens: jsonwebtoken's typed header and claims refuse duplicates.
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let sign = |h: &str, p: &str| sign_raw(&key, h, p);
        let claims = claims().to_string();
        assert!(check(&keys, &sign(r#"{"alg":"HS256"}"#, &claims)).is_ok());
        let twice = check(&keys, &sign(r#"{"alg":"HS256","alg":"HS256"}"#, &claims));
        assert_eq!(twice, Err(TokenError::BadHeader));
        assert!(TokenError::BadHeader.is_guess(), "refused before the signature counts");
        let sub_twice = claims.replacen('{', r#"{"sub":"admin","#, 1);
        assert_eq!(check(&keys, &sign(r#"{"alg":"HS256"}"#, &sub_twice)), Err(TokenError::BadClaims));
    }

    #[test]
    fn tampering_with_any_segment_breaks_the_token() {
        let key = SigningKey::eddsa(2);
        let keys = one_key(&key);
        let good = key.mint(None, &claims());
        for i in 0..good.len() {
            let mut bytes = good.clone().into_bytes();
            if bytes[i] == b'.' {
                continue;
            }
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bytes).unwrap();
            assert!(check(&keys, &bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn signatures_of_the_wrong_shape_are_refused() {
        // Truncated, extended, and (for ES256) DER instead of the JWS r || s form.
        for key in [SigningKey::hs256(1), SigningKey::eddsa(2), SigningKey::es256(3)] {
            let keys = one_key(&key);
            let good = key.mint(None, &claims());
            let (signed, sig) = good.rsplit_once('.').unwrap();
            let raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
            let mut der = vec![0x30, 0x44, 0x02, 0x20];
            der.extend_from_slice(&raw[..32.min(raw.len())]);
            der.extend_from_slice(&[0x02, 0x20]);
            der.extend_from_slice(&raw[32.min(raw.len())..]);
            for bad in [&raw[..raw.len() - 1], &[&raw[..], &[0]].concat()[..], &der[..], &[0u8; 64][..]] {
                let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bad));
                assert_eq!(check(&keys, &token), Err(TokenError::BadSignature), "{}", key.alg());
            }
        }
    }

    #[test]
    fn oversized_tokens_are_refused_before_parsing() {
        let key = SigningKey::hs256(1);
        let big = with(claims(), "pad", json!("x".repeat(MAX_TOKEN_BYTES)));
        assert_eq!(check(&one_key(&key), &key.mint(None, &big)), Err(TokenError::TooLarge));
        assert_eq!(check(&one_key(&key), &"a".repeat(MAX_TOKEN_BYTES + 1)), Err(TokenError::TooLarge));
    }

    #[test]
    fn required_claims_must_be_present_and_well_typed() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let mint = |c: Value| key.mint(None, &c);
        assert_eq!(check(&keys, &mint(without(claims(), "sub"))), Err(TokenError::BadClaims));
        assert_eq!(check(&keys, &mint(with(claims(), "sub", json!("")))), Err(TokenError::BadClaims));
        assert_eq!(check(&keys, &mint(with(claims(), "sub", json!(7)))), Err(TokenError::BadClaims));
        assert!(check(&keys, &mint(with(claims(), "sub", json!("s".repeat(MAX_SUB_BYTES))))).is_ok());
        assert_eq!(check(&keys, &mint(with(claims(), "sub", json!("s".repeat(MAX_SUB_BYTES + 1))))), Err(TokenError::BadClaims));
        // Escapes count: 43 control characters are 258 bytes of JSON.
        assert_eq!(check(&keys, &mint(with(claims(), "sub", json!("\u{1}".repeat(43))))), Err(TokenError::BadClaims));
        assert_eq!(check(&keys, &mint(without(claims(), "exp"))), Err(TokenError::BadClaims));
        for field in ["exp", "iat", "nbf"] {
            let c = with(claims(), field, json!((NOW + 10).to_string()));
            assert_eq!(check(&keys, &mint(c)), Err(TokenError::BadClaims), "{field} as string");
        }
        assert_eq!(check(&keys, &mint(without(claims(), "iss"))), Err(TokenError::WrongIssuer));
        assert_eq!(check(&keys, &mint(without(claims(), "aud"))), Err(TokenError::WrongAudience));
        for grant in ["channels", "publish"] {
            for bad in [json!("orders:v1"), json!({"orders:v1": true}), json!([1]), json!(null)] {
                let c = with(claims(), grant, bad.clone());
                assert_eq!(check(&keys, &mint(c)), Err(TokenError::BadClaims), "{grant} = {bad}");
            }
        }
        assert_eq!(check(&keys, &mint(with(claims(), "name", json!(["x"])))), Err(TokenError::BadClaims));
        // Fractional seconds are numbers, so they are fine.
        assert!(check(&keys, &mint(with(claims(), "exp", json!(NOW as f64 + 100.5)))).is_ok());
    }

    #[test]
    fn issuer_and_audience_match_exactly() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let mint = |k: &str, v: Value| key.mint(None, &with(claims(), k, v));
        for iss in ["https://shop.example/", "https://shop.example.evil", "HTTPS://SHOP.EXAMPLE", " https://shop.example"] {
            assert_eq!(check(&keys, &mint("iss", json!(iss))), Err(TokenError::WrongIssuer), "{iss}");
        }
        for aud in [json!("foyer2"), json!("Foyer"), json!(["other"]), json!([]), json!(1)] {
            assert_eq!(check(&keys, &mint("aud", aud.clone())), Err(TokenError::WrongAudience), "{aud}");
        }
        assert!(check(&keys, &mint("aud", json!(["other", "foyer"]))).is_ok());
    }

    /// What jsonwebtoken's claim validation refused stays refused, under the same names, now
    /// that Foyer parses the claims once (`library_refusal`); this test passed on the code
    /// that called `jsonwebtoken::jws::decode` too.
    #[test]
    fn claim_refusals_jsonwebtoken_made_are_kept() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let mint = |c: Value| key.mint(None, &c);
        let sign = |h: &str, p: &str| sign_raw(&key, h, p);
        // An audience array holding a non-string, even beside the right one.
        assert_eq!(check(&keys, &mint(with(claims(), "aud", json!(["foyer", 1])))), Err(TokenError::WrongAudience));
        assert_eq!(check(&keys, &mint(with(claims(), "iss", json!(["https://shop.example"])))), Err(TokenError::WrongIssuer));
        // `nbf` is Foyer's to judge: any number in the past passes, anything else does not.
        for nbf in [json!(null), json!("1")] {
            assert_eq!(check(&keys, &mint(with(claims(), "nbf", nbf.clone()))), Err(TokenError::BadClaims), "{nbf}");
        }
        for nbf in [json!(-5), json!(NOW as f64 - 0.5)] {
            assert!(check(&keys, &mint(with(claims(), "nbf", nbf.clone()))).is_ok(), "{nbf}");
        }
        // A repeated `exp`: Foyer's own rules name the claim first, else the repetition.
        let body = claims().to_string();
        let exp_twice = body.replacen('{', &format!(r#"{{"exp":{},"#, NOW + 100), 1);
        assert_eq!(check(&keys, &sign(r#"{"alg":"HS256"}"#, &exp_twice)), Err(TokenError::BadClaims));
        let exp_twice_wrong_iss = exp_twice.replace("https://shop.example", "https://other.example");
        assert_eq!(check(&keys, &sign(r#"{"alg":"HS256"}"#, &exp_twice_wrong_iss)), Err(TokenError::WrongIssuer));
        // Any other repeated member is refused before Foyer's rules, even on an expired token.
        let expired = with(claims(), "exp", json!(NOW - 1_000)).to_string();
        let channels_twice = expired.replacen('{', r#"{"channels":[],"#, 1);
        assert_eq!(check(&keys, &sign(r#"{"alg":"HS256"}"#, &channels_twice)), Err(TokenError::BadClaims));
        // The header: a member Foyer does not know must be a string, a text parameter JWS
        // defines a string or null (and no member repeated: the next test).
        for h in [
            r#"{"alg":"HS256","custom":1}"#,
            r#"{"alg":"HS256","x":null}"#,
            r#"{"alg":"HS256","typ":7}"#,
            r#"{"alg":"HS256","enc":5}"#,
            r#"{"alg":"HS256","url":3}"#,
            r#"{"alg":"HS256","typ":"a","typ":"b"}"#,
        ] {
            assert_eq!(check(&keys, &sign(h, &body)), Err(TokenError::BadHeader), "{h}");
        }
        for h in [
            r#"{"alg":"HS256","custom":"x","typ":"JWT"}"#,
            r#"{"alg":"HS256","typ":null}"#,
            r#"{"alg":"HS256","zip":null}"#,
            r#"{"alg":"HS256","enc":null}"#,
            r#"{"alg":"HS256","x5t#S256":null}"#,
            r#"{"alg":"HS256","nonce":"n","cty":"c","x5t":"t","enc":"e"}"#,
        ] {
            assert!(check(&keys, &sign(h, &body)).is_ok(), "{h}");
        }
    }

    /// docs/protocol.md: a header that repeats a member is invalid. jsonwebtoken's typed
    /// header refused a repeated parameter it knows, but kept the last copy of one it does
    /// not (its unknown members are a map); this failed before the header became Foyer's.
    #[test]
    fn a_header_repeating_any_member_is_refused() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let body = claims().to_string();
        assert_eq!(check(&keys, &sign_raw(&key, r#"{"alg":"HS256","x":"a","x":"b"}"#, &body)), Err(TokenError::BadHeader));
        assert!(check(&keys, &sign_raw(&key, r#"{"alg":"HS256","x":"a","y":"a"}"#, &body)).is_ok());
    }

    #[test]
    fn time_claims_respect_the_leeway_boundary() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let at = |pairs: &[(&str, i64)]| {
            let mut c = claims();
            for (k, v) in pairs {
                c[*k] = json!(v);
            }
            check(&keys, &key.mint(None, &c))
        };
        assert!(at(&[("iat", NOW - 400), ("exp", NOW - LEEWAY_SECS)]).is_ok());
        assert_eq!(at(&[("iat", NOW - 400), ("exp", NOW - LEEWAY_SECS - 1)]), Err(TokenError::Expired));
        assert!(at(&[("nbf", NOW + LEEWAY_SECS)]).is_ok());
        assert_eq!(at(&[("nbf", NOW + LEEWAY_SECS + 1)]), Err(TokenError::NotYetValid));
        assert!(at(&[("iat", NOW + LEEWAY_SECS), ("exp", NOW + 600)]).is_ok());
        assert_eq!(at(&[("iat", NOW + LEEWAY_SECS + 1), ("exp", NOW + 600)]), Err(TokenError::IssuedInFuture));
    }

    #[test]
    fn lifetime_above_the_maximum_is_refused() {
        let key = SigningKey::hs256(1);
        let keys = one_key(&key);
        let c = with(with(claims(), "iat", json!(NOW - 100)), "exp", json!(NOW - 100 + 900));
        assert!(check(&keys, &key.mint(None, &c)).is_ok());
        let c = with(c, "exp", json!(NOW - 100 + 901));
        assert_eq!(check(&keys, &key.mint(None, &c)), Err(TokenError::LifetimeTooLong));
        // Without iat the lifetime counts from now.
        let c = with(without(claims(), "iat"), "exp", json!(NOW + 901));
        assert_eq!(check(&keys, &key.mint(None, &c)), Err(TokenError::LifetimeTooLong));
        let c = with(without(claims(), "iat"), "exp", json!(NOW + 900));
        assert!(check(&keys, &key.mint(None, &c)).is_ok());
    }

    #[test]
    fn jwks_configuration_errors_are_reported() {
        let short = json!({"keys": [{"kty": "oct", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode([1u8; 8])}]});
        assert!(KeySet::from_jwks(&short.to_string()).unwrap_err().contains("shorter"));
        assert!(KeySet::from_jwks("{}").is_err());
        assert!(KeySet::from_jwks("{\"keys\": []}").is_err());
        assert!(KeySet::from_jwks("nope").is_err());
        let mut oct = SigningKey::hs256(1).jwk(None);
        oct["alg"] = json!("HS512");
        assert!(KeySet::from_jwks(&json!({"keys": [oct]}).to_string()).is_err());
        let mut ed = SigningKey::eddsa(1).jwk(None);
        ed["alg"] = json!("ES256");
        assert!(KeySet::from_jwks(&json!({"keys": [ed]}).to_string()).is_err(), "family must match the key");
        let (a, b) = (SigningKey::hs256(1), SigningKey::hs256(2));
        assert!(KeySet::from_jwks(&jwks(&[(&a, None), (&b, Some("b"))])).is_err(), "kid required with several");
        assert!(KeySet::from_jwks(&jwks(&[(&a, Some("x")), (&b, Some("x"))])).is_err(), "duplicate kid");
    }

    #[test]
    fn a_jwks_holding_a_private_key_is_invalid_configuration() {
        for key in [SigningKey::eddsa(1), SigningKey::es256(1)] {
            let mut jwk = key.jwk(Some("k"));
            assert!(KeySet::from_jwks(&json!({"keys": [jwk.clone()]}).to_string()).is_ok());
            jwk["d"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]));
            let err = KeySet::from_jwks(&json!({"keys": [jwk]}).to_string()).unwrap_err();
            assert!(err.contains("private"), "{err}");
        }
    }

    #[test]
    fn a_repeated_claim_is_refused_whichever_copy_would_grant_more() {
        let key = SigningKey::hs256(7);
        let keys = KeySet::from_jwks(&jwks(&[(&key, None)])).unwrap();
        let expect = Expectations::new("i".into(), "foyer".into(), 900);
        let now = 1_800_000_000;
        let head = b64_json(&serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        let sign = |payload: &str| {
            let body = URL_SAFE_NO_PAD.encode(payload);
            let mac = URL_SAFE_NO_PAD.encode(key.sign(format!("{head}.{body}").as_bytes()));
            format!("{head}.{body}.{mac}")
        };
        let base = format!(r#""sub":"u","iss":"i","aud":"foyer","exp":{},"iat":{now}"#, now + 600);
        assert!(verify(&sign(&format!("{{{base},\"channels\":[\"chat:a\"]}}")), &keys, &expect, now).is_ok());
        for repeated in [
            r#""channels":["chat:a"],"channels":["chat:*"]"#,
            r#""publish":[],"publish":["chat:*"]"#,
            r#""name":"Ann","name":"Staff""#,
            r#""role":"customer","role":"staff""#,
            r#""iat":1,"channels":["chat:a"]"#,
            r#""channels":["chat:a"],"chann\u0065ls":["chat:*"]"#,
        ] {
            assert_eq!(verify(&sign(&format!("{{{base},{repeated}}}")), &keys, &expect, now), Err(TokenError::BadClaims), "{repeated}");
        }
    }
}
