//! The runner of the end-to-end hostile battery: the shape of a row (an attempt and the
//! answer PROTOCOL.md fixes), the witness that proves a refused attempt changed nothing,
//! and the log check. The table itself is `adversarial.rs`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foyer::devkit::unix_now;
use foyer::protocol::signature;
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::hostile::rule::LOG;
use crate::hostile::*;
use crate::support::*;

// ---------- gateways ----------

/// Failed handshakes are rate limited per client address; this battery fails hundreds of
/// them from one address on purpose, so its gateways lift that limit out of reach.
const NO_AUTH_FAILURE_LIMIT: (&str, &str) = ("AUTH_FAILURES_PER_MINUTE", "1000000");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gw {
    /// The default test settings (allowed origin `https://shop.example`).
    Default,
    /// A deployment with `ALLOW_QUERY_TOKEN=true` (legacy clients during a migration).
    QueryToken,
}

impl Gw {
    pub fn get(self) -> &'static Gateway {
        use std::sync::OnceLock;
        static DEFAULT: OnceLock<Gateway> = OnceLock::new();
        static QUERY: OnceLock<Gateway> = OnceLock::new();
        match self {
            Gw::Default => DEFAULT.get_or_init(|| Gateway::start("adversarial", &[NO_AUTH_FAILURE_LIMIT])),
            Gw::QueryToken => QUERY.get_or_init(|| Gateway::start("querytoken", &[("ALLOW_QUERY_TOKEN", "true"), NO_AUTH_FAILURE_LIMIT])),
        }
    }
}

/// Starts both gateways side by side, off the async threads (a start blocks for seconds),
/// whichever section runs first: starting them one after the other would add a start.
pub async fn start() {
    let starting: Vec<_> = [Gw::Default, Gw::QueryToken].map(|g| tokio::task::spawn_blocking(move || g.get().port)).into();
    for s in starting {
        s.await.expect("gateway start");
    }
}

// ---------- the table's shape ----------

/// One row: a hostile attempt and the answer PROTOCOL.md fixes for it.
pub struct Case {
    pub name: String,
    /// The PROTOCOL.md section and rule the row checks.
    pub rule: &'static str,
    pub attempt: Attempt,
    pub expect: Expect,
}

pub fn case(name: impl Into<String>, rule: &'static str, attempt: Attempt, expect: Expect) -> Case {
    Case { name: name.into(), rule, attempt, expect }
}

/// Rows from labelled variants, all expecting `expect`.
pub fn rows<T>(rule: &'static str, variants: Vec<Variant<T>>, attempt: impl Fn(T) -> Attempt, expect: Expect) -> Vec<Case> {
    variants.into_iter().map(|(name, v)| case(name, rule, attempt(v), expect.clone())).collect()
}

pub enum Attempt {
    /// A WebSocket upgrade of `path` with this offer and extra headers.
    Connect { path: String, offer: Offer, headers: Vec<(&'static str, String)> },
    /// An upgrade written by hand: headers a WebSocket client will not send twice, and the
    /// handshake's raw answer.
    RawUpgrade { path: String, headers: Vec<(&'static str, String)> },
    /// A request to `/publish`.
    Publish { method: &'static str, content_type: Option<&'static str>, sig: Sig, body: Vec<u8> },
    /// A legitimate member of the witness's channel sending frames; `expect` is its replies.
    Frames { member: Member, frames: Vec<Out> },
}

/// `Sec-WebSocket-Protocol`.
pub enum Offer {
    Nothing,
    /// `foyer.v1, bearer.<token>`, the standard offer.
    Bearer(String),
    /// The standard offer of a token granting the witness's channel, minted at the moment of
    /// the attempt with these time claims (boundary rows a token minted earlier would drift
    /// across).
    Timed(Clock),
    /// This header value exactly.
    Raw(String),
}

/// Time claims in seconds from the attempt (`iat: None`: no `iat` claim).
#[derive(Clone, Copy)]
pub struct Clock {
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub exp: i64,
}

/// `X-Foyer-Signature`, written at the moment of the attempt.
pub enum Sig {
    Missing,
    /// `t` = now + `skew`, signed with `secret` for `path` over the body sent.
    Signed {
        skew: i64,
        secret: &'static str,
        path: &'static str,
    },
    /// The valid header for another body than the one sent.
    Over(Vec<u8>),
    /// A template of [`signature_header`].
    Template(&'static str),
    /// `t` exactly as written, with a valid MAC over it.
    TAsWritten(String),
}

pub fn valid_sig() -> Sig {
    Sig::Signed { skew: 0, secret: PUBLISH_SECRET, path: "/publish" }
}

/// A socket of the witness's channel, its token minted at the attempt.
pub struct Member {
    pub sub: String,
    pub name: Option<&'static str>,
    pub role: Option<&'static str>,
    /// The `publish` claim.
    pub publish: Vec<String>,
}

impl Member {
    pub fn new(sub: String) -> Member {
        Member { sub, name: None, role: None, publish: Vec::new() }
    }
    pub fn publishing(mut self, channel: &str) -> Member {
        self.publish.push(channel.to_owned());
        self
    }
}

/// A client frame.
pub enum Out {
    Text(String),
    Json(Value),
    Binary(Vec<u8>),
}

#[derive(Clone)]
pub enum Expect {
    /// Upgraded, `foyer.v1` selected when offered (nothing when not), `welcome` first.
    Welcome,
    /// Upgraded, `foyer.v1` selected when offered, then closed at once with this code.
    Close(u16),
    /// An HTTP status, no upgrade.
    NoUpgrade(u16),
    /// Switching protocols with exactly `foyer.v1` selected, the token nowhere in the answer.
    OnlyFoyerSelected,
    /// A JSON error `{"error": <word>, "message"}` with this status.
    Error(u16, &'static str),
    /// 200 with this many results, all stored on the witness's channel.
    Published(usize),
    /// The member's replies, one per frame sent.
    Replies(Vec<Reply>),
}

#[derive(Clone, Debug)]
pub enum Reply {
    Error(&'static str),
    AnyError,
    Close(u16),
    Pong,
    /// The frame's own event (with this `data`, when given): it was stored.
    Event(Option<Value>),
    Refreshed(i64),
    /// No answer (a duplicate): the witness shows nothing was stored.
    Silent,
}

/// Rows sharing witnesses, played in order; families run side by side.
pub struct Family {
    pub name: &'static str,
    pub gateway: Gw,
    /// The channels the witnesses hold; attempts target the first.
    pub witnesses: Vec<Target>,
    pub cases: Vec<Case>,
}

pub fn family(name: &'static str, w: &Target, cases: Vec<Case>) -> Family {
    Family { name, gateway: Gw::Default, witnesses: vec![w.clone()], cases }
}

/// A fresh channel of `kind`.
#[derive(Clone)]
pub struct Target {
    pub kind: &'static str,
    pub key: String,
    pub channel: String,
    pub path: String,
}

impl Target {
    pub fn new(kind: &'static str) -> Target {
        let key = unique("w");
        Target { kind, channel: format!("{kind}:{key}"), path: format!("/ws/{kind}/{key}"), key }
    }

    /// Valid claims of a fresh subject granting this channel.
    pub fn claims(&self) -> Value {
        claims(&unique("u"), &[&self.channel])
    }

    pub fn token(&self) -> String {
        hs256().mint(Some("hs"), &self.claims())
    }

    /// The standard offer of `token` on this channel.
    pub fn bearer(&self, token: String) -> Attempt {
        Attempt::Connect { path: self.path.clone(), offer: Offer::Bearer(token), headers: vec![] }
    }

    /// A token with these grant claims, for a fresh subject.
    pub fn granted(&self, g: &GrantClaims) -> Attempt {
        let c = g.applied_to(claims(&unique("u"), &[]));
        self.bearer(hs256().mint(Some("hs"), &c))
    }

    pub fn publish(&self, sig: Sig, body: Vec<u8>) -> Attempt {
        Attempt::Publish { method: "POST", content_type: Some("application/json"), sig, body }
    }

    pub fn frames(&self, member: Member, frames: Vec<Out>) -> Attempt {
        Attempt::Frames { member, frames }
    }
}

// ---------- the runner ----------

/// A legitimate socket on a family's channel, and the battery's account of that channel:
/// what it holds and which sockets are in it.
struct Witness {
    target: Target,
    token: String,
    client: Client,
    seq: u64,
    /// The ids of every event the channel holds, in order.
    history: Vec<String>,
    /// Legitimate sockets the battery keeps open there.
    open: Vec<Client>,
    /// Sockets closed or dropped that the channel may still count for a moment.
    closing: usize,
    /// Legitimate sockets whose token has expired: the room closes them soon (counted in
    /// `closing`), and the battery closes what is left at the end.
    open_expiring: Vec<Client>,
    /// The subjects of legitimate sockets: their `presence` frames are expected.
    subs: HashSet<String>,
}

impl Witness {
    async fn open(gw: &Gateway, target: &Target) -> Witness {
        let sub = unique("witness");
        let token = hs256().mint(Some("hs"), &claims(&sub, &[&target.channel]));
        let mut client = connect(gw, &target.path, &token).await;
        let welcome = client.frame().await;
        assert_eq!((welcome["type"].as_str(), welcome["seq"].as_u64()), (Some("welcome"), Some(0)), "witness: {welcome}");
        if target.kind == "chat" {
            let own = client.frame().await;
            assert_eq!(own["type"], "presence", "the witness's own join: {own}");
        }
        let subs = HashSet::from([sub]);
        Witness {
            target: target.clone(),
            token,
            client,
            seq: 0,
            history: Vec::new(),
            open: Vec::new(),
            closing: 0,
            open_expiring: Vec::new(),
            subs,
        }
    }

    /// Nothing changed beyond the events the attempt's answer admitted (`admitted`: each
    /// with its `id`, and its `data` when the attempt saw it): a probe gets the next `seq`
    /// after them and reaches exactly the sockets the battery holds, and the witness saw
    /// those events, in order, and the `presence` of legitimate sockets, nothing else.
    async fn untouched(&mut self, gw: &Gateway, admitted: &[Value]) -> Result<(), String> {
        let stored = admitted.len();
        let id = unique("probe");
        let r = gw.publish(&json!({"id": id, "channels": [self.target.channel], "event": "probe"})).await;
        if r.status != 200 {
            return Err(format!("the probe publish got HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        let result = r.json()["results"][0].clone();
        let mut problems = Vec::new();
        let expected = self.seq + stored as u64 + 1;
        let seq = result["seq"].as_u64().unwrap_or(0);
        if seq != expected {
            problems.push(format!("the probe got seq {seq}, expected {expected} ({stored} event(s) admitted)"));
        }
        let (fewest, most) = (1 + self.open.len() as u64, 1 + (self.open.len() + self.closing) as u64);
        let delivered = result["delivered"].as_u64().unwrap_or(0);
        if !(fewest..=most).contains(&delivered) {
            problems.push(format!("the probe reached {delivered} sockets, expected {fewest}..={most}"));
        }
        let mut events = Vec::new();
        loop {
            match self.client.next_within(10).await {
                Some(Got::Frame(f)) if f["type"] == "event" && f["id"] == id.as_str() => break,
                Some(Got::Frame(f)) if f["type"] == "event" => events.push(f),
                Some(Got::Frame(f)) if f["type"] == "presence" && f["sub"].as_str().is_some_and(|s| self.subs.contains(s)) => {}
                Some(Got::Frame(f)) => problems.push(format!("the witness got {} before the probe", short(&f.to_string()))),
                other => {
                    problems.push(format!("the witness got {} instead of the probe", describe(&other)));
                    break;
                }
            }
        }
        let seqs: Vec<u64> = events.iter().map(|f| f["seq"].as_u64().unwrap_or(0)).collect();
        if seqs != (self.seq + 1..=self.seq + stored as u64).collect::<Vec<_>>() {
            problems.push(format!("the witness got events {seqs:?} before the probe, expected {stored} after seq {}", self.seq));
        }
        let same = |f: &Value, e: &Value| f["id"] == e["id"] && e.get("data").is_none_or(|d| f["data"] == *d);
        if let Some((f, e)) = events.iter().zip(admitted).find(|(f, e)| !same(f, e)) {
            problems.push(format!("the witness got {} where {} was admitted", short(&f.to_string()), short(&e.to_string())));
        }
        self.history.extend(events.iter().map(|f| f["id"].as_str().unwrap_or("").to_owned()));
        self.history.push(id);
        self.seq = seq;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// A replay from `since=0` holds exactly the history the battery accounted for.
    async fn replay_holds_its_history(&self, gw: &Gateway) -> Result<(), String> {
        let mut c = connect(gw, &format!("{}?since=0", self.target.path), &self.token).await;
        let welcome = c.frame().await;
        if welcome["seq"].as_u64() != Some(self.seq) {
            return Err(format!("the replay's welcome says seq {}, expected {}", welcome["seq"], self.seq));
        }
        let mut ids = Vec::new();
        while ids.len() < self.history.len() {
            match c.next_within(10).await {
                Some(Got::Frame(f)) if f["type"] == "event" => ids.push(f["id"].as_str().unwrap_or("").to_owned()),
                other => return Err(format!("the replay gave {} after {} events", describe(&other), ids.len())),
            }
        }
        c.close().await;
        if ids != self.history {
            return Err(format!("the replay holds other events than the battery accounted for: {ids:?}"));
        }
        Ok(())
    }

    async fn close(self) {
        for c in self.open.into_iter().chain(self.open_expiring) {
            c.close().await;
        }
        self.client.close().await;
    }
}

/// Something a row sent that the gateway must never log.
struct Secret {
    what: &'static str,
    value: String,
}

/// What a row left behind: the events its answers admitted per channel (`id`, and `data`
/// when the attempt saw it), and what must never be logged.
#[derive(Default)]
struct Trace {
    admitted: HashMap<String, Vec<Value>>,
    secrets: Vec<Secret>,
}

impl Trace {
    fn token(&mut self, t: &str) {
        let s = segments(t);
        let mut parts = vec![("a token", t.to_owned())];
        if s.len() >= 3 {
            parts.extend([("a token's claims segment", s[1].clone()), ("a token's signature", s[2].clone())]);
        }
        self.secrets.extend(parts.into_iter().filter(|(_, v)| v.len() >= 16).map(|(what, value)| Secret { what, value }));
    }

    /// The offered subprotocols: tokens and every other value but `foyer.v1`.
    fn offer(&mut self, protocols: &str) {
        for item in protocols.split(',').map(str::trim) {
            match item.strip_prefix("bearer.") {
                Some(t) => self.token(t),
                None if item != "foyer.v1" && item.len() >= 8 => {
                    self.secrets.push(Secret { what: "a subprotocol value", value: item.into() })
                }
                None => {}
            }
        }
    }

    /// The query string's values (a `token=` is a token).
    fn query(&mut self, path: &str) {
        let Some((_, query)) = path.split_once('?') else { return };
        for (k, v) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            match k {
                "token" => self.token(v),
                _ if v.len() >= 8 => self.secrets.push(Secret { what: "a query value", value: v.into() }),
                _ => {}
            }
        }
    }

    /// A publish body's string values (channel names aside), or its words if it is no JSON.
    fn body(&mut self, body: &[u8]) {
        fn strings(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) if s.len() >= 8 => out.push(s.clone()),
                Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
                Value::Object(map) => map.iter().filter(|(k, _)| *k != "channels").for_each(|(_, v)| strings(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => strings(&v, &mut found),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                // Words, channel names (`KIND:KEY`, which the log may name) aside.
                let word = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
                found.extend(text.split(|c: char| !word(c)).filter(|w| w.len() >= 10 && !w.contains(':')).map(str::to_owned));
            }
        }
        self.secrets.extend(found.into_iter().map(|value| Secret { what: "a publish body", value }));
    }
}

fn offers_foyer(protocols: Option<&str>) -> bool {
    protocols.is_some_and(|p| p.split(',').any(|item| item.trim() == "foyer.v1"))
}

/// The claims of a token (unverified: for the battery's own account of legitimate sockets).
fn claims_of(token: &str) -> Option<Value> {
    let payload = segments(token).get(1).and_then(|p| base64_decode(p))?;
    serde_json::from_slice(&payload).ok()
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

/// The token a connect offers, in its subprotocols or its query.
fn offered_token(path: &str, protocols: Option<&str>) -> Option<String> {
    let bearer = protocols.and_then(|p| p.split(',').find_map(|i| i.trim().strip_prefix("bearer.")).map(str::to_owned));
    let query = path.split_once('?').and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix("token=")).map(str::to_owned));
    bearer.or(query)
}

/// Plays one row; the witness's account follows what the gateway answered.
async fn play(gw: &Gateway, w: &mut Witness, case: &Case, trace: &mut Trace) -> Result<(), String> {
    match &case.attempt {
        Attempt::Connect { path, offer, headers } => play_connect(gw, w, case, path, offer, headers, trace).await,
        Attempt::RawUpgrade { path, headers } => play_raw_upgrade(gw, w, case, path, headers, trace).await,
        Attempt::Publish { method, content_type, sig, body } => play_publish(gw, case, method, *content_type, sig, body, trace).await,
        Attempt::Frames { member, frames } => play_frames(gw, w, case, member, frames, trace).await,
    }
}

async fn play_connect(
    gw: &Gateway,
    w: &mut Witness,
    case: &Case,
    path: &str,
    offer: &Offer,
    headers: &[(&'static str, String)],
    trace: &mut Trace,
) -> Result<(), String> {
    let protocols = match offer {
        Offer::Nothing => None,
        Offer::Bearer(t) => Some(format!("foyer.v1, bearer.{t}")),
        Offer::Timed(clock) => {
            early_in_a_second().await;
            let now = unix_now();
            let mut c = w.target.claims();
            match clock.iat {
                Some(iat) => c["iat"] = json!(now + iat),
                None => drop(c.as_object_mut().unwrap().remove("iat")),
            }
            if let Some(nbf) = clock.nbf {
                c["nbf"] = json!(now + nbf);
            }
            c["exp"] = json!(now + clock.exp);
            Some(format!("foyer.v1, bearer.{}", hs256().mint(Some("hs"), &c)))
        }
        Offer::Raw(p) => Some(p.clone()),
    };
    if let Some(p) = &protocols {
        trace.offer(p);
    }
    trace.query(path);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut client = match try_connect(gw, path, protocols.as_deref(), &headers).await? {
        Connect::Refused(status) => {
            return match case.expect {
                Expect::NoUpgrade(want) if want == status => Ok(()),
                _ => Err(format!("HTTP {status} without an upgrade")),
            };
        }
        Connect::Open(c) => c,
    };
    let selected = client.protocol.clone();
    let selected_right = if offers_foyer(protocols.as_deref()) { selected.as_deref() == Some("foyer.v1") } else { selected.is_none() };
    let first = client.next_within(10).await;
    let welcomed = matches!(&first, Some(Got::Frame(f)) if f["type"] == "welcome");
    if welcomed {
        // In the channel now: its presence is expected, and it counts, unless its
        // token has expired (within the leeway), when the room closes it soon.
        let claims = offered_token(path, protocols.as_deref()).and_then(|t| claims_of(&t)).unwrap_or_default();
        w.subs.extend(claims["sub"].as_str().map(str::to_owned));
        if claims["exp"].as_i64().is_some_and(|exp| exp <= unix_now()) {
            w.closing += 1;
            w.open_expiring.push(client);
        } else {
            w.open.push(client);
        }
    } else if !matches!(first, Some(Got::Closed(_))) {
        client.close().await;
        w.closing += 1;
    }
    if !selected_right {
        return Err(format!("upgraded with subprotocol {selected:?}: foyer.v1 exactly when offered, nothing when not"));
    }
    match (&case.expect, &first) {
        (Expect::Welcome, _) if welcomed => Ok(()),
        (Expect::Close(code), Some(Got::Closed(Some(got)))) if got == code => Ok(()),
        (Expect::Close(code), _) => Err(format!("expected close {code} at once, got {}", describe(&first))),
        (Expect::NoUpgrade(status), _) => Err(format!("upgraded (then {}) instead of HTTP {status}", describe(&first))),
        (_, _) => Err(format!("got {}", describe(&first))),
    }
}

async fn play_raw_upgrade(
    gw: &Gateway,
    w: &mut Witness,
    case: &Case,
    path: &str,
    headers: &[(&'static str, String)],
    trace: &mut Trace,
) -> Result<(), String> {
    let mut all = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
    let protocols = headers.iter().find(|(k, _)| *k == "Sec-WebSocket-Protocol").map(|(_, v)| v.as_str());
    if let Some(p) = protocols {
        trace.offer(p);
    }
    let r = http(gw.port, "GET", path, &all, b"").await?;
    if r.status == 101 {
        // The connection is dropped at once: the channel may count it for a moment.
        w.closing += 1;
        w.subs.extend(offered_token(path, protocols).and_then(|t| claims_of(&t)?["sub"].as_str().map(str::to_owned)));
    }
    match case.expect {
        Expect::NoUpgrade(status) if r.status == status => Ok(()),
        Expect::NoUpgrade(status) => Err(format!("HTTP {} instead of {status}", r.status)),
        Expect::OnlyFoyerSelected => {
            let selected = r.header("Sec-WebSocket-Protocol");
            if r.status != 101 || selected != Some("foyer.v1") {
                return Err(format!("HTTP {} with Sec-WebSocket-Protocol {selected:?}", r.status));
            }
            let token = offered_token(path, protocols).unwrap_or_default();
            let signature = segments(&token).pop().unwrap_or_default();
            let echoed = r.headers.iter().any(|(k, v)| k.contains(&signature) || v.contains(&signature))
                || String::from_utf8_lossy(&r.body).contains(&signature);
            if echoed {
                return Err("the token appears in the handshake response".into());
            }
            Ok(())
        }
        _ => panic!("{}: a raw upgrade expects NoUpgrade or OnlyFoyerSelected", case.name),
    }
}

async fn play_publish(
    gw: &Gateway,
    case: &Case,
    method: &str,
    content_type: Option<&str>,
    sig: &Sig,
    body: &[u8],
    trace: &mut Trace,
) -> Result<(), String> {
    trace.body(body);
    if let Sig::Signed { skew, .. } = sig {
        if (298..=302).contains(&skew.abs()) {
            early_in_a_second().await;
        }
    }
    let now = unix_now();
    let header = match sig {
        Sig::Missing => None,
        Sig::Signed { skew, secret, path } => Some(signature::sign(secret.as_bytes(), now + skew, path, body)),
        Sig::Over(other) => Some(signature::sign(PUBLISH_SECRET.as_bytes(), now, "/publish", other)),
        Sig::Template(template) => Some(signature_header(template, now, body)),
        Sig::TAsWritten(t) => Some(format!("t={t},v1={}", mac_hex(PUBLISH_SECRET, t, "/publish", body))),
    };
    let mut headers = Vec::new();
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    if let Some(h) = &header {
        headers.push(("X-Foyer-Signature", h.as_str()));
    }
    let payload: &[u8] = if method == "GET" { b"" } else { body };
    let r = http(gw.port, method, "/publish", &headers, payload).await?;
    let answer: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if r.status == 200 {
        for result in answer["results"].as_array().into_iter().flatten().filter(|r| r["duplicate"] == false) {
            let channel = result["channel"].as_str().unwrap_or("").to_owned();
            trace.admitted.entry(channel).or_default().push(json!({"id": result["id"]}));
        }
    }
    let shown = short(&String::from_utf8_lossy(&r.body));
    match case.expect {
        Expect::Error(status, word) if r.status == status && answer["error"] == word && answer["message"].is_string() => Ok(()),
        Expect::Error(status, word) => Err(format!("HTTP {} {shown}, expected {status} {{\"error\": {word:?}, \"message\"}}", r.status)),
        Expect::Published(n) if r.status == 200 && answer["results"].as_array().map(Vec::len) == Some(n) => Ok(()),
        Expect::Published(n) => Err(format!("HTTP {} {shown}, expected 200 with {n} results", r.status)),
        _ => panic!("{}: a publish expects Error or Published", case.name),
    }
}

async fn play_frames(gw: &Gateway, w: &mut Witness, case: &Case, member: &Member, frames: &[Out], trace: &mut Trace) -> Result<(), String> {
    let Expect::Replies(replies) = &case.expect else { panic!("{}: frames expect Replies", case.name) };
    assert_eq!(frames.len(), replies.len(), "{}: one reply per frame", case.name);
    let mut c = claims(&member.sub, &[&w.target.channel]);
    if let Some(name) = member.name {
        c["name"] = json!(name);
    }
    if let Some(role) = member.role {
        c["role"] = json!(role);
    }
    if !member.publish.is_empty() {
        c["publish"] = json!(member.publish);
    }
    let mut client = connect(gw, &w.target.path, &hs256().mint(Some("hs"), &c)).await;
    let welcome = client.frame().await;
    let replayed_upto = welcome["seq"].as_u64().unwrap_or(0);
    w.subs.insert(member.sub.clone());
    let mut result = Ok(());
    let mut closed = false;
    for (i, (frame, reply)) in frames.iter().zip(replies).enumerate() {
        match frame {
            Out::Text(t) => client.send_text(t).await,
            Out::Json(v) => {
                if let Some(t) = v["token"].as_str() {
                    trace.token(t);
                }
                client.send_json(v).await
            }
            Out::Binary(b) => client.send_binary(b.clone()).await,
        }
        if matches!(reply, Reply::Silent) {
            continue;
        }
        let got = next_reply(&mut client, replayed_upto).await;
        let ok = match (reply, &got) {
            (Reply::Error(code), Some(Got::Frame(f))) => f["type"] == "error" && f["code"] == *code && f["message"].is_string(),
            (Reply::AnyError, Some(Got::Frame(f))) => f["type"] == "error" && f["code"].is_string(),
            (Reply::Close(code), Some(Got::Closed(Some(got)))) => got == code,
            (Reply::Pong, Some(Got::Text(t))) => t == "pong",
            (Reply::Event(data), Some(Got::Frame(f))) => f["type"] == "event" && data.as_ref().is_none_or(|d| f["data"] == *d),
            (Reply::Refreshed(exp), Some(Got::Frame(f))) => f["type"] == "refreshed" && f["expires_at"] == *exp,
            _ => false,
        };
        if let Some(Got::Frame(f)) = &got {
            if f["type"] == "event" {
                trace.admitted.entry(w.target.channel.clone()).or_default().push(json!({"id": f["id"], "data": f["data"]}));
            }
        }
        if matches!(got, Some(Got::Closed(_))) {
            closed = true;
        }
        if !ok {
            result = Err(format!("frame {}: expected {reply:?}, got {}", i + 1, describe(&got)));
            break;
        }
    }
    if closed || result.is_err() {
        if !closed {
            client.close().await;
        }
        w.closing += 1;
    } else {
        w.open.push(client);
    }
    result
}

/// A member's next frame that answers it: `presence` and replayed events skipped.
async fn next_reply(c: &mut Client, replayed_upto: u64) -> Option<Got> {
    loop {
        let got = c.next_within(10).await;
        match &got {
            Some(Got::Frame(f)) if f["type"] == "presence" => continue,
            Some(Got::Frame(f)) if f["type"] == "event" && f["seq"].as_u64().is_some_and(|s| s <= replayed_upto) => continue,
            _ => return got,
        }
    }
}

/// A row's deviation, named.
fn report(family: &str, case: &Case, what: &str) -> String {
    format!("{family} › {}\n    rule: {}\n    {what}", case.name, case.rule)
}

/// Plays a family's rows in order, each followed by its witnesses' check.
async fn play_family(f: Family) -> (Vec<String>, Vec<(Gw, String, Secret)>) {
    let gw = f.gateway.get();
    let mut witnesses = Vec::new();
    for t in &f.witnesses {
        witnesses.push(Witness::open(gw, t).await);
    }
    let (mut failures, mut secrets) = (Vec::new(), Vec::new());
    for case in &f.cases {
        let mut trace = Trace::default();
        if let Err(e) = play(gw, &mut witnesses[0], case, &mut trace).await {
            failures.push(report(f.name, case, &e));
        }
        for w in &mut witnesses {
            let admitted = trace.admitted.get(&w.target.channel).map_or(&[][..], Vec::as_slice);
            if let Err(e) = w.untouched(gw, admitted).await {
                failures.push(report(f.name, case, &format!("changed {}: {e}", w.target.channel)));
            }
        }
        secrets.extend(trace.secrets.into_iter().map(|s| (f.gateway, case.name.clone(), s)));
    }
    for w in witnesses {
        if let Err(e) = w.replay_holds_its_history(gw).await {
            failures.push(format!("{} › the replay of {}\n    {e}", f.name, w.target.channel));
        }
        w.close().await;
    }
    (failures, secrets)
}

/// Plays families side by side, then reads the gateways' logs for anything a row sent
/// that must never be logged; fails naming every deviation.
pub async fn battery(families: Vec<Family>) {
    let started = Instant::now();
    let (rows, count) = (families.iter().map(|f| f.cases.len()).sum::<usize>(), families.len());
    let results = join_all(families.into_iter().map(play_family)).await;
    let mut failures = Vec::new();
    let mut secrets = Vec::new();
    for (f, s) in results {
        failures.extend(f);
        secrets.extend(s);
    }
    // PROTOCOL.md Connecting: the gateway never logs tokens, query strings or subprotocol
    // values (nor publish bodies).
    let gateways: HashSet<Gw> = secrets.iter().map(|(g, _, _)| *g).collect();
    let mut logs: HashMap<Gw, String> = HashMap::new();
    for g in gateways {
        logs.insert(g, flushed_log(g.get()).await);
    }
    let mut seen = HashSet::new();
    let checked = secrets.len();
    for (g, name, secret) in secrets {
        let log = &logs[&g];
        if seen.insert(secret.value.clone()) && log.contains(&secret.value) {
            let line = log.lines().find(|l| l.contains(&secret.value)).unwrap_or("");
            failures.push(format!("the log › {name}\n    rule: {LOG}\n    it holds {}: {}", secret.what, short(line)));
        }
    }
    eprintln!("{rows} rows in {count} families, {checked} values kept out of the log: {:.1?}", started.elapsed());
    assert!(failures.is_empty(), "{} deviation(s) from PROTOCOL.md:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// The gateway's log once it holds everything asked so far: a marker request is logged
/// after them, so the log is read when the marker shows (and a moment later).
async fn flushed_log(gw: &Gateway) -> String {
    let marker = format!("/ws/orders/{}", unique("flush"));
    let _ = gw.get(&marker).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains(&marker) {
        assert!(Instant::now() < deadline, "the gateway's log never showed {marker}: is it written to {:?}?", gw.log_path());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.log()
}

// ---------- helpers ----------

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

/// Waits, if needed, until early in a wall-clock second, so that what is minted or signed
/// now is judged within the same second: the ±1 s boundary rows stay exact.
async fn early_in_a_second() {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_millis()).unwrap_or(0);
    if ms > 300 {
        tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 20)).await;
    }
}

/// The needles `pick` takes, from owned strings.
pub fn needles(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
