//! The checks a connect request passes before any Durable Object is touched, in the order
//! PROTOCOL.md "Connecting" fixes: path, upgrade, origin, then token and grant.
//!
//! Failures of the first three are HTTP answers. Token and grant failures are a socket that
//! is accepted and closed at once with 4401/4403, because a browser sees only close codes.

use super::channel::{Channel, ChannelError, Kind};
use super::config::Config;
use super::token::{self, Claims};
use super::wire::{close, BEARER_PREFIX, SUBPROTOCOL};

/// What the Worker saw of the request.
pub struct ConnectRequest<'a> {
    pub path: &'a str,
    /// Query pairs, already percent-decoded.
    pub query: &'a [(String, String)],
    /// `Upgrade: websocket` (case-insensitive) was sent.
    pub upgrade: bool,
    pub origin: Option<&'a str>,
    /// Scheme, host and port of the request URL, serialized as an origin.
    pub own_origin: &'a str,
    /// `Sec-WebSocket-Protocol`, as one comma-separated value.
    pub protocols: Option<&'a str>,
}

/// A request that passed every check.
#[derive(Debug, PartialEq)]
pub struct Admitted {
    pub channel: Channel,
    pub claims: Claims,
    pub since: Option<u64>,
    /// The client's `build=` id, when it sent one.
    pub build: Option<String>,
    /// The client offered `foyer.v1` (a legacy `?token=` client may offer nothing, and
    /// must then be answered without a subprotocol).
    pub offered_subprotocol: bool,
}

#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Hand the socket to the channel's Durable Object (boxed: the refusals stay small).
    Admit(Box<Admitted>),
    /// An HTTP error: no upgrade.
    Http(u16, &'static str),
    /// Accept the socket and close it at once with this code; select `foyer.v1` if offered.
    Close { code: u16, reason: &'static str, offered_subprotocol: bool },
}

/// `/ws/{kind}/{key}` with an optional trailing `/`. Anything else under `/ws/` is 404.
pub fn parse_path(path: &str) -> Result<Channel, Verdict> {
    let rest = path.strip_prefix("/ws/").ok_or(Verdict::Http(404, "not found"))?;
    let (kind, key) = rest.split_once('/').ok_or(Verdict::Http(404, "not found"))?;
    let kind = Kind::parse(kind).ok_or(Verdict::Http(404, "unknown channel kind"))?;
    let key = key.strip_suffix('/').unwrap_or(key);
    if key.contains('/') {
        return Err(Verdict::Http(404, "not found"));
    }
    Channel::new(kind, key).map_err(|e| match e {
        ChannelError::MalformedKey => Verdict::Http(400, "malformed channel key"),
        _ => Verdict::Http(404, "not found"),
    })
}

/// The subprotocol offer: whether `foyer.v1` was offered, and the bearer token if any.
fn parse_protocols(header: Option<&str>) -> Result<(bool, Option<&str>), Verdict> {
    let mut offered = false;
    let mut token = None;
    for item in header.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == SUBPROTOCOL {
            offered = true;
        } else if let Some(t) = item.strip_prefix(BEARER_PREFIX) {
            if token.replace(t).is_some() {
                return Err(Verdict::Http(400, "two tokens offered"));
            }
        }
    }
    if token.is_some() && !offered {
        return Err(Verdict::Http(400, "a token was offered without foyer.v1"));
    }
    Ok((offered, token))
}

fn query<'q>(req: &'q ConnectRequest<'_>, name: &str) -> Option<&'q str> {
    req.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Runs every check in order. `now` is Unix seconds.
pub fn check(req: &ConnectRequest<'_>, config: &Config, now: i64) -> Verdict {
    check_guarded(req, config, now, None)
}

/// The optional limiter on token guessing (`AUTH_FAILURES_PER_MINUTE`, off by default):
/// per client address, it counts only failures that look like guessing (see
/// [`token::TokenError::is_guess`]). Its state is consulted before the token is verified;
/// beyond the limit a guess is answered 4429. An expired, not-yet-valid or revoked token is
/// a normal event and always gets 4401, and a valid token always gets in, so guests sharing
/// a venue's address are never told to back off for someone else's attempts.
pub struct Guard<'g> {
    pub failures: &'g mut AuthFailures,
    pub client: &'g str,
    pub limit: u32,
}

/// [`check`] with the guessing limiter.
pub fn check_guarded(req: &ConnectRequest<'_>, config: &Config, now: i64, guard: Option<Guard<'_>>) -> Verdict {
    let channel = match parse_path(req.path) {
        Ok(channel) => channel,
        Err(verdict) => return verdict,
    };
    let since = match query(req, "since") {
        None => None,
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return Verdict::Http(400, "since is out of range"),
        },
        Some(_) => return Verdict::Http(400, "since must be a non-negative integer"),
    };
    if !req.upgrade {
        return Verdict::Http(426, "this endpoint takes WebSocket upgrades only");
    }
    if let Some(origin) = req.origin {
        if origin != req.own_origin && !config.allowed_origins.iter().any(|o| o == origin) {
            return Verdict::Http(403, "origin not allowed");
        }
    }
    let (offered, bearer) = match parse_protocols(req.protocols) {
        Ok(offer) => offer,
        Err(verdict) => return verdict,
    };
    let query_token = if config.allow_query_token { query(req, "token") } else { None };
    let close = |code, reason| Verdict::Close { code, reason, offered_subprotocol: offered };
    let token = match (bearer, query_token) {
        (Some(_), Some(_)) => return Verdict::Http(400, "two tokens offered"),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return close(close::UNAUTHENTICATED, "token required"),
    };
    let Ok((keys, expect)) = &config.tokens else {
        return close(close::INTERNAL, "gateway misconfigured");
    };
    let over_limit = guard.as_ref().is_some_and(|g| g.failures.is_over(g.client, now, g.limit));
    let claims = match token::verify(token, keys, expect, now) {
        Ok(claims) => claims,
        Err(e) if e.is_guess() => {
            if let Some(g) = guard {
                g.failures.record(g.client, now);
            }
            return if over_limit {
                close(close::RATE_LIMITED, "too many failed attempts")
            } else {
                close(close::UNAUTHENTICATED, e.reason())
            };
        }
        Err(e) => return close(close::UNAUTHENTICATED, e.reason()),
    };
    if !claims.channels.allows(&channel) {
        return close(close::FORBIDDEN, "channel not granted");
    }
    let build = query(req, "build").filter(|b| !b.is_empty()).map(str::to_owned);
    Verdict::Admit(Box::new(Admitted { channel, claims, since, build, offered_subprotocol: offered }))
}

/// Guessing failures per client address in fixed one-minute windows. Per isolate: a bound on
/// one isolate's work, not a census (Cloudflare's rate limiting rules do the global one).
#[derive(Default)]
pub struct AuthFailures {
    windows: std::collections::HashMap<String, (i64, u32)>,
}

const WINDOW_SECS: i64 = 60;
const MAX_TRACKED_CLIENTS: usize = 10_000;

impl AuthFailures {
    /// Whether `client` has made more than `limit` guesses in its current window.
    pub fn is_over(&self, client: &str, now: i64, limit: u32) -> bool {
        self.windows.get(client).is_some_and(|(start, count)| now - start < WINDOW_SECS && *count >= limit)
    }

    /// Records a guess of `client` at `now`.
    pub fn record(&mut self, client: &str, now: i64) {
        if self.windows.len() >= MAX_TRACKED_CLIENTS {
            self.windows.retain(|_, (start, _)| now - *start < WINDOW_SECS);
            if self.windows.len() >= MAX_TRACKED_CLIENTS {
                self.windows.clear();
            }
        }
        let (start, count) = self.windows.entry(client.to_owned()).or_insert((now, 0));
        if now - *start >= WINDOW_SECS {
            (*start, *count) = (now, 0);
        }
        *count = count.saturating_add(1);
    }
}

/// Splits a request URL as the runtime serializes it (absolute, WHATWG) into its origin,
/// path and raw query, without a general URL parser: the runtime has already parsed and
/// normalized it, so the first `/` after `://` starts the path and `?` the query.
pub fn split_url(url: &str) -> (&str, &str, &str) {
    let url = url.split('#').next().unwrap_or("");
    let (before_query, query) = url.split_once('?').unwrap_or((url, ""));
    let host_start = before_query.find("://").map_or(0, |i| i + 3);
    let path_start = before_query[host_start..].find('/').map_or(before_query.len(), |i| host_start + i);
    let (origin, path) = before_query.split_at(path_start);
    (origin, if path.is_empty() { "/" } else { path }, query)
}

/// A raw query's decoded pairs (only the connect path needs them).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; invalid
/// escapes stay as they are and invalid UTF-8 becomes U+FFFD.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkit::{jwks, unix_now, SigningKey};
    use serde_json::json;
    use std::collections::HashMap;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut map: HashMap<String, String> = HashMap::from([
            ("JWT_KEYS".into(), jwks(&[(&SigningKey::hs256(1), None)])),
            ("JWT_ISSUER".into(), "iss".into()),
            ("ALLOWED_ORIGINS".into(), "https://shop.example".into()),
        ]);
        map.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_lookup(|k| map.get(k).cloned())
    }

    fn token(channels: &[&str]) -> String {
        let now = unix_now();
        SigningKey::hs256(1)
            .mint(None, &json!({"sub": "u", "iss": "iss", "aud": "foyer", "iat": now, "exp": now + 300, "channels": channels}))
    }

    struct Req {
        path: &'static str,
        query: Vec<(String, String)>,
        upgrade: bool,
        origin: Option<&'static str>,
        protocols: Option<String>,
    }

    impl Req {
        fn new(path: &'static str, token: &str) -> Req {
            Req { path, query: vec![], upgrade: true, origin: None, protocols: Some(format!("foyer.v1, bearer.{token}")) }
        }
        fn check(&self, config: &Config) -> Verdict {
            let req = ConnectRequest {
                path: self.path,
                query: &self.query,
                upgrade: self.upgrade,
                origin: self.origin,
                own_origin: "http://127.0.0.1:8787",
                protocols: self.protocols.as_deref(),
            };
            check(&req, config, unix_now())
        }
        fn q(mut self, k: &str, v: &str) -> Req {
            self.query.push((k.into(), v.into()));
            self
        }
    }

    fn http(v: &Verdict) -> Option<u16> {
        match v {
            Verdict::Http(status, _) => Some(*status),
            _ => None,
        }
    }

    fn closed(v: &Verdict) -> Option<(u16, bool)> {
        match v {
            Verdict::Close { code, offered_subprotocol, .. } => Some((*code, *offered_subprotocol)),
            _ => None,
        }
    }

    #[test]
    fn a_granted_token_is_admitted_with_since_and_build() {
        let t = token(&["orders:v1"]);
        for path in ["/ws/orders/v1", "/ws/orders/v1/"] {
            let v = Req::new(path, &t).q("since", "42").q("build", "abc").check(&config(&[]));
            let Verdict::Admit(a) = v else { panic!("{v:?}") };
            assert_eq!((a.channel.to_string().as_str(), a.since, a.build.as_deref()), ("orders:v1", Some(42), Some("abc")));
        }
    }

    #[test]
    fn paths_are_checked_first() {
        let c = config(&[]);
        for (path, status) in [
            ("/ws/news/x", 404),
            ("/ws/orders", 404),
            ("/ws/orders/", 400),
            ("/ws/orders/a/b", 404),
            ("/ws/orders/a//", 404),
            ("/ws/", 404),
            ("/ws/orders/bad.key", 400),
            ("/ws/chat/%20", 400),
        ] {
            let mut r = Req::new(path, "x");
            r.upgrade = false;
            r.origin = Some("https://evil.example");
            assert_eq!(http(&r.check(&c)), Some(status), "{path}");
        }
    }

    #[test]
    fn since_must_be_a_non_negative_integer() {
        let t = token(&["orders:v1"]);
        for bad in ["", "-1", "1.5", "abc", "0x10", "+3", "99999999999999999999999"] {
            assert_eq!(http(&Req::new("/ws/orders/v1", &t).q("since", bad).check(&config(&[]))), Some(400), "{bad}");
        }
    }

    #[test]
    fn non_upgrade_requests_get_426_before_origin_is_checked() {
        let mut r = Req::new("/ws/orders/v1", &token(&["orders:v1"]));
        r.upgrade = false;
        r.origin = Some("https://evil.example");
        assert_eq!(http(&r.check(&config(&[]))), Some(426));
    }

    #[test]
    fn origins_match_exactly() {
        let t = token(&["orders:v1"]);
        let c = config(&[]);
        for (origin, ok) in [
            ("https://shop.example", true),
            ("http://127.0.0.1:8787", true),
            ("https://shop.example.evil.com", false),
            ("https://evil-shop.example", false),
            ("https://shop.example:443", false),
            ("http://shop.example", false),
            ("https://SHOP.example", false),
            ("http://127.0.0.1:8788", false),
            // The own origin with another scheme: end to end, `wrangler dev`'s proxy rewrites
            // these to the exact own origin before the Worker sees them (tests/adversarial.rs).
            ("https://127.0.0.1:8787", false),
            ("HTTP://127.0.0.1:8787", false),
            ("null", false),
            ("", false),
        ] {
            let mut r = Req::new("/ws/orders/v1", &t);
            r.origin = Some(origin);
            assert_eq!(http(&r.check(&c)).is_none(), ok, "{origin}");
        }
    }

    #[test]
    fn subprotocol_offers_are_strict() {
        let t = token(&["orders:v1"]);
        let c = config(&[]);
        let with = |p: &str| {
            let mut r = Req::new("/ws/orders/v1", &t);
            r.protocols = Some(p.to_owned());
            r.check(&c)
        };
        assert_eq!(http(&with(&format!("bearer.{t}"))), Some(400), "token without foyer.v1");
        assert_eq!(http(&with(&format!("foyer.v1, bearer.{t}, bearer.{t}"))), Some(400), "two tokens");
        assert!(matches!(with(&format!("bearer.{t},foyer.v1")), Verdict::Admit(_)), "order is free");
        assert_eq!(closed(&with("foyer.v1")), Some((4401, true)), "no token");
        assert_eq!(closed(&with("")), Some((4401, false)));
        assert_eq!(closed(&with("foyer.v1, bearer.")), Some((4401, true)), "empty token");
    }

    #[test]
    fn query_tokens_only_when_the_deployment_allows_them() {
        let t = token(&["orders:v1"]);
        let mut r = Req::new("/ws/orders/v1", "x").q("token", &t);
        r.protocols = Some("foyer.v1".into());
        assert_eq!(closed(&r.check(&config(&[]))), Some((4401, true)));
        assert!(matches!(r.check(&config(&[("ALLOW_QUERY_TOKEN", "true")])), Verdict::Admit(_)));
        let both = Req::new("/ws/orders/v1", &t).q("token", &t);
        assert_eq!(http(&both.check(&config(&[("ALLOW_QUERY_TOKEN", "true")]))), Some(400));
    }

    #[test]
    fn invalid_tokens_close_4401_and_ungranted_channels_4403() {
        let c = config(&[]);
        assert_eq!(closed(&Req::new("/ws/orders/v1", "a.b.c").check(&c)), Some((4401, true)));
        let other_key = SigningKey::hs256(2).mint(None, &json!({"sub": "u"}));
        assert_eq!(closed(&Req::new("/ws/orders/v1", &other_key).check(&c)), Some((4401, true)));
        assert_eq!(closed(&Req::new("/ws/payment/o-2", &token(&["payment:o-1"])).check(&c)), Some((4403, true)));
        assert_eq!(closed(&Req::new("/ws/orders/v1", &token(&["chat:*"])).check(&c)), Some((4403, true)));
    }

    #[test]
    fn guessing_beyond_the_limit_answers_4429_but_expired_tokens_always_4401() {
        let c = config(&[]);
        let mut failures = AuthFailures::default();
        let mut attempt = |token: &str, client: &str| {
            let r = Req::new("/ws/orders/v1", token);
            let req = ConnectRequest {
                path: r.path,
                query: &r.query,
                upgrade: true,
                origin: None,
                own_origin: "http://127.0.0.1:8787",
                protocols: r.protocols.as_deref(),
            };
            let v = check_guarded(&req, &c, unix_now(), Some(Guard { failures: &mut failures, client, limit: 3 }));
            match v {
                Verdict::Admit(_) => 0,
                v => closed(&v).unwrap().0,
            }
        };
        let now = unix_now();
        let forged = SigningKey::hs256(99).mint(None, &json!({"sub": "u", "iss": "iss", "aud": "foyer", "iat": now, "exp": now + 300}));
        let expired = SigningKey::hs256(1).mint(
            None,
            &json!({"sub": "u", "iss": "iss", "aud": "foyer", "iat": now - 3700, "exp": now - 3600, "channels": ["orders:v1"]}),
        );
        // A venue's shared address: many expired tokens are never a reason to back off.
        for _ in 0..50 {
            assert_eq!(attempt(&expired, "10.0.0.1"), 4401);
        }
        let codes: Vec<u16> = (0..5).map(|_| attempt(&forged, "10.0.0.1")).collect();
        assert_eq!(codes, [4401, 4401, 4401, 4429, 4429]);
        assert_eq!(attempt("a.b", "10.0.0.1"), 4429, "malformed: refused before any signature work");
        assert_eq!(attempt(&expired, "10.0.0.1"), 4401, "expired stays 4401 beyond the limit");
        assert_eq!(attempt(&token(&["orders:v1"]), "10.0.0.1"), 0, "a valid token still gets in");
        assert_eq!(attempt(&forged, "10.0.0.2"), 4401, "others unaffected");
    }

    #[test]
    fn a_misconfigured_gateway_closes_1011_rather_than_guessing() {
        let c = Config::from_lookup(|_| None);
        assert_eq!(closed(&Req::new("/ws/orders/v1", &token(&["orders:v1"])).check(&c)), Some((1011, true)));
    }

    #[test]
    fn urls_split_into_origin_path_and_decoded_query() {
        let (origin, path, raw) = split_url("https://foyer.example:8443/ws/orders/v1?since=42&build=ab%2Fc&x=a+b&flag&bad=%zz%4#frag");
        assert_eq!((origin, path), ("https://foyer.example:8443", "/ws/orders/v1"));
        let expect: Vec<(String, String)> = [("since", "42"), ("build", "ab/c"), ("x", "a b"), ("flag", ""), ("bad", "%zz%4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(query_pairs(raw), expect);
        assert_eq!(split_url("http://127.0.0.1:8787"), ("http://127.0.0.1:8787", "/", ""));
        assert_eq!(query_pairs(split_url("http://h/ws?").2), vec![]);
        assert_eq!(query_pairs(split_url("http://h/?t=%C3%A9%FF").2), vec![("t".to_string(), "é\u{FFFD}".to_string())]);
    }
}
