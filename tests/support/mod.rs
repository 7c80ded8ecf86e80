//! Test harness: a real `wrangler dev` (workerd, the production runtime) per test binary,
//! driven by real WebSocket and HTTP clients. Nothing here mocks the runtime.
//!
//! Each gateway gets its own port, inspector port, persistence directory and settings (an
//! env file written here, with fixed test keys), so tests never touch a developer's
//! `.dev.vars` or `.wrangler/state`. `scripts/gateway` starts it and ends it when the test
//! process goes away, whatever way it ends.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use foyer::devkit::{jwks, unix_now, SigningKey};
use foyer::protocol::signature;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ISSUER: &str = "foyer-test";
pub const PUBLISH_SECRET: &str = "test-publish-secret-current";
pub const OLD_PUBLISH_SECRET: &str = "test-publish-secret-previous";

/// The test deployment's keys: one per algorithm, selected by `kid`.
pub fn hs256() -> SigningKey {
    SigningKey::hs256(11)
}
pub fn eddsa() -> SigningKey {
    SigningKey::eddsa(22)
}
pub fn es256() -> SigningKey {
    SigningKey::es256(33)
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the Worker once per test process (a no-op when nothing changed).
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(repo_root().join("scripts/build")).stdout(Stdio::null()).status().expect("run scripts/build");
        assert!(status.success(), "scripts/build failed");
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct Gateway {
    pub port: u16,
    pub dir: PathBuf,
    pub vars: HashMap<String, String>,
    /// Another wrangler config than the repository's (`--config`).
    pub config: Option<PathBuf>,
    child: Option<Child>,
}

impl Gateway {
    /// The default test settings, overridable per gateway.
    pub fn default_vars() -> HashMap<String, String> {
        let keys = jwks(&[(&hs256(), Some("hs")), (&eddsa(), Some("ed")), (&es256(), Some("es"))]);
        HashMap::from([
            ("JWT_KEYS".into(), keys),
            ("JWT_ISSUER".into(), ISSUER.into()),
            ("JWT_AUDIENCE".into(), "foyer".into()),
            ("PUBLISH_SECRETS".into(), format!("{PUBLISH_SECRET},{OLD_PUBLISH_SECRET}")),
            ("ALLOWED_ORIGINS".into(), "https://shop.example".into()),
        ])
    }

    /// Starts a gateway with the default settings plus `extra`, persisting to a fresh dir.
    pub fn start(name: &str, extra: &[(&str, &str)]) -> Gateway {
        let mut vars = Self::default_vars();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let dir = repo_root().join("target/gateways").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("gateway dir");
        let mut g = Gateway { port: 0, dir, vars, config: None, child: None };
        g.launch();
        g
    }

    /// Starts a gateway on the repository's wrangler.toml changed by `edit` (its `[build]`
    /// step dropped: the tests build first; paths made relative to the copy).
    pub fn start_with_config(name: &str, extra: &[(&str, &str)], edit: impl Fn(&str) -> String) -> Gateway {
        let source = std::fs::read_to_string(repo_root().join("wrangler.toml")).expect("wrangler.toml");
        let dir = repo_root().join("target/gateways");
        std::fs::create_dir_all(&dir).expect("gateways dir");
        let mut out = String::new();
        let mut skipping = false;
        for line in edit(&source).lines() {
            if line.starts_with('[') {
                skipping = line == "[build]";
            }
            if !skipping {
                out += &line.replace("main = \"", "main = \"../../").replace("directory = \"", "directory = \"../../");
                out.push('\n');
            }
        }
        let path = dir.join(format!("{name}-{}.wrangler.toml", std::process::id()));
        std::fs::write(&path, out).expect("config");
        let mut vars = Self::default_vars();
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let state = dir.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).expect("gateway dir");
        let mut g = Gateway { port: 0, dir: state, vars, config: Some(path), child: None };
        g.launch();
        g
    }

    /// Starts wrangler dev; again on another port when the one picked was taken meanwhile
    /// (a free port is found by binding and releasing it, and tests start gateways in
    /// parallel, so another launch can take it first: "Address already in use").
    fn launch(&mut self) {
        for _ in 0..3 {
            if self.try_launch() {
                return;
            }
            let log = self.log();
            if !log.contains("Address already in use") {
                panic!("wrangler dev did not start; log:\n{log}");
            }
            self.stop();
        }
        panic!("wrangler dev did not start (its ports were taken three times); log:\n{}", self.log());
    }

    /// One start; whether it answered `ready`.
    fn try_launch(&mut self) -> bool {
        ensure_built();
        self.port = free_port();
        let env_file = self.dir.join("env");
        let body: String = self.vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
        std::fs::write(&env_file, body).expect("env file");
        // scripts/gateway starts wrangler dev in a process group of its own, prints `ready URL`
        // once /healthz answers, and takes the group down when the test process is gone.
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new(repo_root().join("scripts/gateway"))
                .args(["--port", &self.port.to_string(), "--timeout", "180", "--watch", &std::process::id().to_string()])
                .arg("--vars")
                .arg(&env_file)
                .arg("--persist")
                .arg(self.dir.join("state"))
                .arg("--log")
                .arg(self.log_path())
                .args(self.config.iter().flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .process_group(0)
                .spawn()
                .expect("spawn scripts/gateway")
        };
        // Blocking, as this may run inside a test's async runtime.
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line);
        self.child = Some(child);
        line.starts_with("ready ")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("wrangler.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the gateway (its persisted state stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-s", "TERM", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(15);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Stops and starts again on the same persisted state (a new port).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str) -> Result<HttpResponse, String> {
        http(self.port, "GET", path, &[], b"").await
    }

    /// `POST /publish` signed with the current secret.
    pub async fn publish(&self, body: &Value) -> HttpResponse {
        self.signed_post("/publish", body.to_string().as_bytes(), PUBLISH_SECRET).await
    }

    /// A channel read (`GET /channels/...`), signed over its target like `/publish`.
    pub async fn read(&self, target: &str) -> HttpResponse {
        let sig = signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), target, b"");
        http(self.port, "GET", target, &[("X-Foyer-Signature", &sig)], b"").await.expect("http")
    }

    pub async fn signed_post(&self, path: &str, body: &[u8], secret: &str) -> HttpResponse {
        let sig = signature::sign(secret.as_bytes(), unix_now(), path, body);
        self.post(path, body, &[("Content-Type", "application/json"), ("X-Foyer-Signature", &sig)]).await
    }

    pub async fn post(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> HttpResponse {
        http(self.port, "POST", path, headers, body).await.expect("http")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One gateway shared by all tests of a binary (the watchdog ends it with the process).
pub fn shared() -> &'static Gateway {
    static SHARED: OnceLock<Gateway> = OnceLock::new();
    SHARED.get_or_init(|| Gateway::start("shared", &[]))
}

/// A unique suffix for channel keys and ids, so tests sharing a gateway never collide.
pub fn unique(prefix: &str) -> String {
    static COUNTER: Mutex<u64> = Mutex::new(0);
    let mut n = COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    *n += 1;
    format!("{prefix}-{}-{}-{}", std::process::id(), unix_now() % 100_000, *n)
}

// ---------- tokens ----------

/// Standard claims for `sub` with `channels` (and optional `publish`) grants.
pub fn claims(sub: &str, channels: &[&str]) -> Value {
    let now = unix_now();
    json!({"sub": sub, "iss": ISSUER, "aud": "foyer", "iat": now, "exp": now + 600, "channels": channels, "name": format!("{sub} name"), "role": "staff"})
}

pub fn token(sub: &str, channels: &[&str]) -> String {
    hs256().mint(Some("hs"), &claims(sub, channels))
}

/// A token for `sub` on `channel`, issued 5 s ago, that expires `secs` from now.
pub fn token_expiring_in(sub: &str, channel: &str, secs: i64) -> String {
    let mut c = claims(sub, &[channel]);
    c["iat"] = json!(unix_now() - 5);
    c["exp"] = json!(unix_now() + secs);
    hs256().mint(Some("hs"), &c)
}

// ---------- HTTP ----------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (Connection: close; chunked bodies decoded).
pub async fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    // Read until the body is complete by its own framing: the dev server keeps connections
    // alive regardless of `Connection: close`, so waiting for EOF would wait for its timeout.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_string();
            let mut lines = head.split("\r\n");
            let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).ok_or("bad status")?;
            let headers: Vec<(String, String)> =
                lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
            let find = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
            let rest = &raw[split + 4..];
            let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                rest.windows(5).any(|w| w == b"0\r\n\r\n").then(|| dechunk(rest))
            } else {
                let len: usize = find("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                (rest.len() >= len || method == "HEAD").then(|| rest[..len.min(rest.len())].to_vec())
            };
            if let Some(body) = body {
                return Ok(HttpResponse { status, headers, body });
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response was complete".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

// ---------- WebSocket ----------

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connect attempt ended.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a test helper: one per connect, size is irrelevant
pub enum Connect {
    Open(Client),
    /// HTTP status without an upgrade.
    Refused(u16),
}

impl Connect {
    pub fn client(self) -> Client {
        match self {
            Connect::Open(c) => c,
            Connect::Refused(s) => panic!("refused with HTTP {s}"),
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            Connect::Refused(s) => Some(*s),
            Connect::Open(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct Client {
    pub ws: Ws,
    pub protocol: Option<String>,
}

/// Opens `path` offering `protocols` (comma-joined) and any extra headers.
pub async fn connect_raw(gw: &Gateway, path: &str, protocols: Option<&str>, headers: &[(&str, &str)]) -> Connect {
    let mut req = gw.ws_url(path).into_client_request().expect("request");
    if let Some(p) = protocols {
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).expect("header"));
    }
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    match tokio::time::timeout(Duration::from_secs(30), tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, response))) => Connect::Open(Client {
            ws,
            protocol: response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(str::to_owned),
        }),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => Connect::Refused(response.status().as_u16()),
        Ok(Err(e)) => panic!("connect {path}: {e}"),
        Err(_) => panic!("connect {path}: timeout"),
    }
}

/// Opens a channel socket with a bearer token the standard way.
pub async fn connect(gw: &Gateway, path: &str, token: &str) -> Client {
    connect_raw(gw, path, Some(&format!("foyer.v1, bearer.{token}")), &[]).await.client()
}

/// What the next read on a socket gave.
#[derive(Debug, PartialEq)]
pub enum Got {
    Frame(Value),
    Text(String),
    Closed(Option<u16>),
}

impl Client {
    /// The next server frame, or the close, within `secs` seconds.
    pub async fn next_within(&mut self, secs: u64) -> Option<Got> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(secs), self.ws.next()).await.ok()?;
            return Some(match msg {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(&t) {
                    Ok(v) if v.is_object() => Got::Frame(v),
                    _ => Got::Text(t.to_string()),
                },
                Some(Ok(Message::Close(frame))) => Got::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => Got::Text(format!("{other:?}")),
                Some(Err(_)) | None => Got::Closed(None),
            });
        }
    }

    pub async fn next(&mut self) -> Got {
        self.next_within(15).await.expect("no frame within 15 s")
    }

    /// The next JSON frame (panics on close or timeout).
    pub async fn frame(&mut self) -> Value {
        match self.next().await {
            Got::Frame(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Reads frames until one of `type` arrives (others are returned too, in order).
    pub async fn until(&mut self, ty: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let f = self.frame().await;
            if f["type"] == ty {
                return (f, before);
            }
            before.push(f);
        }
    }

    /// The close code once the socket closes, frames before it skipped; `None` when nothing
    /// arrives for `secs`.
    pub async fn close_code_within(&mut self, secs: u64) -> Option<Option<u16>> {
        loop {
            match self.next_within(secs).await {
                Some(Got::Closed(code)) => return Some(code),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Reads until the socket closes; returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Got::Closed(code) => return code,
                _ => continue,
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Event `seq`s until `count` events arrived (or 30 s passed), then any extra ones that
    /// arrive within `grace` seconds (there should be none).
    pub async fn collect_seqs(&mut self, count: usize, grace: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seqs.len() < count && tokio::time::Instant::now() < deadline {
            match self.next_within(5).await {
                Some(Got::Frame(f)) if f["type"] == "event" => seqs.push(f["seq"].as_u64().expect("seq")),
                Some(Got::Frame(_)) => {}
                _ => break,
            }
        }
        seqs.extend(self.drain_seqs(grace).await);
        seqs
    }

    /// Event `seq`s received until `quiet` seconds pass without a frame.
    pub async fn drain_seqs(&mut self, quiet: u64) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(Got::Frame(f)) = self.next_within(quiet).await {
            if f["type"] == "event" {
                seqs.push(f["seq"].as_u64().expect("seq"));
            }
        }
        seqs
    }
}
