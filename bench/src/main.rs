//! Foyer vs a plain-JavaScript Durable Object baseline, same machine, same load generator,
//! same `wrangler dev`. Prints a side-by-side table, the ratios and the budget verdicts.
//! Usage: cargo run --release -- [--quick] [--paired] [--paired-storm]   (scripts/bench does the set-up)

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foyer::devkit::{jwks, SigningKey};
use foyer::protocol::signature;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const ISSUER: &str = "bench";
const SECRET: &str = "bench-publish-secret-0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Foyer's wrangler.toml as the bench runs it: the same Worker, objects and settings, without
/// the `[assets]` table (and the `[build]` step, which the bench has run already). Under
/// `wrangler dev` the assets binding puts an asset router, a Worker of its own, in front of
/// every request in the same workerd process; in production that routing is the platform's,
/// not billed to the Worker, and the baseline serves no assets. Measured (bench/README.md).
fn foyer_config() -> String {
    let source = std::fs::read_to_string(root().join("wrangler.toml")).expect("wrangler.toml");
    let mut out = String::new();
    let mut skipping = false;
    for line in source.lines() {
        if line.starts_with('[') {
            skipping = line == "[assets]" || line == "[build]";
        }
        if skipping {
            continue;
        }
        // Paths in a wrangler config are relative to the file: this one lives in bench/target.
        out += &line.replace("main = \"", "main = \"../../");
        out.push('\n');
    }
    assert!(out.contains("main = \"../../"), "wrangler.toml has no main");
    let path = "bench/target/foyer.wrangler.toml";
    std::fs::write(root().join(path), out).expect("bench config");
    path.to_owned()
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Under BENCH_PROFILE, the start of a phase on stderr (unix ms), so a profile can be cut to
/// one phase (`bench/profile.py ... --from=MS --to=MS`).
fn phase(name: &str) {
    if std::env::var_os("BENCH_PROFILE").is_some() {
        eprintln!("[phase] {name} {}", now_us() / 1000);
    }
}

fn key() -> SigningKey {
    SigningKey::hs256(7)
}

fn token(sub: &str, channels: &[&str], publish: &[&str]) -> String {
    let now = (now_us() / 1_000_000) as i64;
    key().mint(
        Some("k"),
        &json!({"sub": sub, "iss": ISSUER, "aud": "foyer", "iat": now, "exp": now + 900, "channels": channels, "publish": publish}),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A gateway under `wrangler dev`, in its own process group.
struct Gateway {
    name: &'static str,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Gateway {
    fn start(name: &'static str, config: Option<&str>) -> Gateway {
        Self::start_with(name, config, false)
    }

    /// `metered`: the usage meter on (`METER=log`) and worker logs kept, for the cost scenario.
    /// Tried three times: ports are picked free and released before wrangler binds them (and
    /// its runtime binds ports of its own), so gateways started together can lose a race for
    /// one ("Address already in use"), which once ended a 27-round run at its last round.
    fn start_with(name: &'static str, config: Option<&str>, metered: bool) -> Gateway {
        for attempt in 1..=3 {
            match Self::try_start(name, config, metered) {
                Ok(g) => return g,
                Err(log) if attempt < 3 => eprintln!("{name} did not start (attempt {attempt}, see {log}); again"),
                Err(log) => panic!("{name} did not start; see {log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(name: &'static str, config: Option<&str>, metered: bool) -> Result<Gateway, String> {
        let dir = root().join("bench/target/run").join(if metered { format!("{name}-cost") } else { name.to_owned() });
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let env = format!(
            "JWT_KEYS='{}'\nJWT_ISSUER='{ISSUER}'\nPUBLISH_SECRETS='{SECRET}'\nRATE_LIMIT_MESSAGES='100000'\nMAX_SOCKETS_PER_USER='100000'\nAUTH_FAILURES_PER_MINUTE='1000000'\n",
            jwks(&[(&key(), Some("k"))])
        ) + if metered { "METER='log'\n" } else { "" }
            + match std::env::var("BENCH_FLOOR").as_deref() {
                Ok("writes") if name == "floor" => "FLOOR_WRITES='1'\n",
                Ok("contract") if name == "floor" => "FLOOR_WRITES='1'\nFLOOR_SIGNED='1'\n",
                _ => "",
            };
        std::fs::write(dir.join("env"), env).expect("env");
        let port = free_port();
        // scripts/gateway: wrangler dev with the project's Node in a process group of its own
        // (usage() reads its workerd processes by that group), `ready URL` once /healthz answers.
        let mut cmd = Command::new(root().join("scripts/gateway"));
        cmd.args(["--port", &port.to_string(), "--watch", &std::process::id().to_string()])
            .arg("--vars")
            .arg(dir.join("env"))
            .arg("--persist")
            .arg(dir.join("state"))
            .arg("--log")
            .arg(dir.join("log"));
        if let Some(c) = config {
            cmd.args(["--config", c]);
        }
        // BENCH_PROFILE=foyer:9229 (or baseline:9229) puts that gateway's inspector on a known
        // port, for a CPU profile (bench/profile.py).
        if let Some(p) = std::env::var("BENCH_PROFILE").ok().and_then(|v| v.strip_prefix(&format!("{name}:")).map(str::to_owned)) {
            cmd.args(["--inspector-port", &p]);
        }
        cmd.args(["--", "--log-level", if metered { "log" } else { "warn" }])
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("scripts/gateway");
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line);
        let g = Gateway { name, port, child, log: dir.join("log") };
        // Not ready: dropped, which stops its process group.
        if line.starts_with("ready ") {
            Ok(g)
        } else {
            Err(g.log.display().to_string())
        }
    }

    /// Its workerd processes: their /proc directories, with the `stat` fields after the name.
    fn workerd(&self) -> Vec<(PathBuf, Vec<String>)> {
        let pgid = self.child.id().to_string();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r.to_string()) else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            if f.get(2) == Some(&pgid.as_str()) && stat.contains("(workerd)") {
                out.push((entry.path(), f.iter().map(|s| s.to_string()).collect()));
            }
        }
        out
    }

    /// CPU seconds and peak resident memory (MiB) of its workerd processes.
    fn usage(&self) -> (f64, f64) {
        let (mut cpu, mut peak) = (0.0, 0.0);
        for (dir, f) in self.workerd() {
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            cpu += (ticks(11) + ticks(12)) / 100.0;
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            if let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak += kb.trim().trim_end_matches(" kB").trim().parse::<f64>().unwrap_or(0.0) / 1024.0;
            }
        }
        (cpu, peak)
    }

    /// Waits until the gateway is idle: under 5% of a core over a quarter second (at most
    /// 15 s). A scenario's sockets are dropped when it ends, and their departures run for a
    /// while after; the next scenario must not be timed over them.
    async fn settle(&self) {
        let started = Instant::now();
        let mut cpu = self.thread_cpu(|_| true);
        while started.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.thread_cpu(|_| true);
            if now - cpu < 0.0125 {
                eprintln!("[settle] {}: idle after {} ms", self.name, started.elapsed().as_millis());
                return;
            }
            cpu = now;
        }
        eprintln!("[settle] {}: still busy after 15 s", self.name);
    }

    /// CPU seconds (ns resolution) of V8's background threads in its workerd processes: where
    /// V8 compiles hot code with its optimizing compiler (and marks garbage concurrently).
    fn v8_background(&self) -> f64 {
        self.thread_cpu(|name| name.starts_with("V8"))
    }

    /// CPU seconds of the threads that run JavaScript and wasm (the event loop, not V8's helpers).
    fn main_threads(&self) -> f64 {
        self.thread_cpu(|name| name.trim() == "workerd")
    }

    /// CPU seconds (ns resolution) of the workerd threads whose name passes `which`.
    fn thread_cpu(&self, which: impl Fn(&str) -> bool) -> f64 {
        let mut ns = 0.0;
        for (dir, _) in self.workerd() {
            for task in std::fs::read_dir(dir.join("task")).into_iter().flatten().flatten() {
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if which(&name) {
                    let sched = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                    ns += sched.split(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                }
            }
        }
        ns / 1e9
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

async fn publish(port: u16, body: &Value) -> Value {
    signed_post(port, "/publish", body).await
}

/// A signed POST (`/publish`, `/links`); its JSON answer.
async fn signed_post(port: u16, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let sig = signature::sign(SECRET.as_bytes(), (now_us() / 1_000_000) as i64, path, body.as_bytes());
    http_json(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Foyer-Signature: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// Sends one HTTP/1.1 request; its JSON answer (null when there is none).
async fn http_json(port: u16, request: String) -> Value {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..i]).to_lowercase();
            if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()) {
                if raw.len() >= i + 4 + len {
                    return serde_json::from_slice(&raw[i + 4..i + 4 + len]).unwrap_or(Value::Null);
                }
            }
        }
    }
    Value::Null
}

/// EdDSA and ES256 as the gateway checks them (src/edge/hot.js, the runtime's native crypto),
/// timed inside workerd by bench/native: µs per verification, the gateway's and the runtime's
/// own with nothing around it (the floor on this machine).
async fn native_microbench() -> Vec<(&'static str, f64, f64)> {
    let g = Gateway::start("native", Some("bench/native/wrangler.toml"));
    let answer = http_json(g.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into()).await;
    let us = |alg: &str, what: &str| answer[alg][what].as_f64().unwrap_or(f64::NAN);
    ["EdDSA", "ES256"].into_iter().map(|alg| (alg, us(alg, "gateway"), us(alg, "runtime"))).collect()
}

/// A floor of the runtime (bench/floor): ms for parallel first calls to 16 Durable Objects
/// never used before (each creating a table and writing a row), the same 16 again warm, and
/// 16 fresh ones touching no storage. Foyer's first storm wakes its room and 16 directory
/// shards; the baseline's, its room alone.
async fn floor_microbench() -> (f64, f64, f64) {
    let g = Gateway::start("floor", Some("bench/floor/wrangler.toml"));
    let answer = http_json(g.port, "GET /objects HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".into()).await;
    let ms = |what: &str| answer[what].as_f64().unwrap_or(f64::NAN);
    (ms("fresh"), ms("warm"), ms("fresh_no_sql"))
}

fn print_floor((fresh, warm, bare): (f64, f64, f64)) {
    println!("16 objects' first calls in parallel (runtime, ms) {fresh:>10.1}   (the same 16 warm: {warm:.1}; first calls touching no storage: {bare:.1})");
}

/// One publish of 25 events to `channel` (ids `{prefix}{batch}-{i}`), each stamped with the
/// time it was sent, for the receivers' latency.
async fn publish_batch(port: u16, channel: &str, prefix: &str, batch: usize) {
    let msgs: Vec<Value> = (0..25)
        .map(|i| json!({"id": format!("{prefix}{batch}-{i}"), "channels": [channel], "event": "x", "data": {"sent_us": now_us()}}))
        .collect();
    publish(port, &json!({"messages": msgs})).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a socket; returns it after the first frame (welcome), or the close code.
async fn open(port: u16, path: &str, token: &str) -> Result<Ws, Option<u16>> {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request().expect("req");
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&format!("foyer.v1, bearer.{token}")).expect("hdr"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|_| None)?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(_)))) => Ok(ws),
        Ok(Some(Ok(Message::Close(f)))) => Err(f.map(|f| u16::from(f.code))),
        _ => Err(None),
    }
}

/// The middle value (the upper one of an even count); NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Default)]
struct Figures(Vec<(String, f64, bool)>); // name, value, higher is better

impl Figures {
    fn add(&mut self, name: &str, value: f64, higher_better: bool) {
        self.0.push((name.to_owned(), value, higher_better));
    }
    fn combine(rounds: &[Figures]) -> Figures {
        let mut out = Figures::default();
        let Some(first) = rounds.first() else { return out };
        for (name, _, higher_better) in &first.0 {
            let values: Vec<f64> = rounds.iter().map(|f| f.get(name)).collect();
            let value = if name.contains("lost") || name.contains("duplicated") { values.iter().sum() } else { median(values) };
            out.add(name, value, *higher_better);
        }
        out
    }

    fn get(&self, name: &str) -> f64 {
        self.0.iter().find(|(n, ..)| n == name).map_or(f64::NAN, |(_, v, _)| *v)
    }
}

/// Clients on one channel: events received, lost and duplicated, delivery latencies (ms).
async fn clients(port: u16, channel: &str, n: usize) -> Vec<Ws> {
    let (kind, key) = channel.split_once(':').expect("channel");
    let t = token("staff", &[channel], &[]);
    let path = format!("/ws/{kind}/{key}");
    let mut out = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(50) {
        let batch = (chunk * 50..((chunk + 1) * 50).min(n)).map(|_| open(port, &path, &t));
        for ws in futures_util::future::join_all(batch).await {
            out.push(ws.expect("socket"));
        }
    }
    out
}

struct Received {
    count: u64,
    lost: u64,
    dup: u64,
    latencies: Vec<f64>,
}

async fn receive(sockets: Vec<Ws>, expect: u64, quiet: Duration) -> Received {
    receive_after(sockets, 0, expect, quiet).await.0
}

/// Events `after + 1 ..= upto` on each socket; the sockets come back for the next block.
async fn receive_after(sockets: Vec<Ws>, after: u64, upto: u64, quiet: Duration) -> (Received, Vec<Ws>) {
    let tasks = sockets.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let (mut last, mut count, mut lost, mut dup, mut lat) = (after, 0u64, 0u64, 0u64, Vec::new());
            while last < upto {
                let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, ws.next()).await else { break };
                let Message::Text(t) = msg else { continue };
                let at = now_us();
                let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                if v["type"] != "event" {
                    continue;
                }
                let seq = v["seq"].as_u64().unwrap_or(0);
                if seq <= last {
                    dup += 1;
                } else {
                    lost += seq - last - 1;
                    last = seq;
                }
                count += 1;
                if let Some(sent) = v["data"]["sent_us"].as_u64() {
                    lat.push(at.saturating_sub(sent) as f64 / 1000.0);
                }
            }
            lost += upto.saturating_sub(last);
            (count, lost, dup, lat, ws)
        })
    });
    let mut r = Received { count: 0, lost: 0, dup: 0, latencies: Vec::new() };
    let mut back = Vec::new();
    for t in futures_util::future::join_all(tasks).await.into_iter().flatten() {
        r.count += t.0;
        r.lost += t.1;
        r.dup += t.2;
        r.latencies.extend(t.3);
        back.push(t.4);
    }
    r.latencies.sort_by(|a, b| a.total_cmp(b));
    (r, back)
}

/// `n` single-event publishes to `channel`, 16 in flight (a Django backend's workers), ids
/// `<prefix><i>`, each carrying its send time for the delivery latency.
async fn single_publishes(port: u16, channel: &str, n: usize, prefix: &str) {
    let ids = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        loop {
            let i = ids.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            publish(port, &json!({"id": format!("{prefix}{i}"), "channels": [channel], "event": "x", "data": {"sent_us": now_us()}})).await;
        }
    };
    futures_util::future::join_all((0..16).map(|_| worker())).await;
}

/// `each` single-event publishes to every room of `rooms`, round-robin, 16 in flight.
async fn room_publishes(port: u16, rooms: &[String], each: usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= rooms.len() * each {
                break;
            }
            let (room, k) = (&rooms[i % rooms.len()], i / rooms.len());
            publish(port, &json!({"id": format!("r{k}"), "channels": [room], "event": "payment.update", "data": {"sent_us": now_us()}}))
                .await;
        }
    };
    futures_util::future::join_all((0..16).map(|_| worker())).await;
}

/// New payment rooms, one subscriber each (a customer's page), `key_prefix-<i>`.
async fn new_rooms(port: u16, key_prefix: &str, n: usize) -> (Vec<String>, Vec<Ws>) {
    let all: Vec<String> = (0..n).map(|i| format!("payment:{key_prefix}-{i}")).collect();
    let mut sockets = Vec::new();
    for chunk in all.chunks(50) {
        let opens = chunk.iter().map(|c| {
            let key = c.split_once(':').map_or("", |x| x.1).to_owned();
            let t = token(&format!("cust-{key}"), &[c.as_str()], &[]);
            async move { open(port, &format!("/ws/payment/{key}"), &t).await }
        });
        sockets.extend(futures_util::future::join_all(opens).await.into_iter().map(|w| w.expect("socket")));
    }
    (all, sockets)
}

const FANOUT: &str = "fan-out deliveries/s (200 sockets, saturated)";
const FANOUT_CPU: &str = "fan-out server CPU s per 10k deliveries";
const CONNECT_P99: &str = "connect p99 ms (50 concurrent, one user)";
const CONNECT_DISTINCT_P99: &str = "connect p99 ms (50 concurrent, new users)";
const BAD_TOKEN_P99: &str = "bad-token close p99 ms (50 concurrent)";
const PEAK_MEMORY: &str = "server peak memory MiB";
const FIRST_STORM_P50: &str = "first storm p50 ms (new users, closing)";
const FIRST_STORM_P99: &str = "first storm p99 ms (new users, closing)";

/// A first storm's figures: welcome p50 and p99 (ms), server CPU ms per connect, and the CPU
/// of V8's background threads over it (ms).
struct Storm {
    p50: f64,
    p99: f64,
    cpu_ms: f64,
    v8_ms: f64,
    /// CPU ms of the threads that run the Worker and the objects (named `workerd`).
    main_ms: f64,
    /// Each batch's slowest welcome (ms): the first batch meets every cold start.
    batch_max: Vec<f64>,
}

/// An orders channel, named from `prefix`, whose revocation shard is `ch`'s.
fn same_shard_channel(ch: &str, prefix: &str) -> String {
    use foyer::protocol::{channel::Channel, revocation::directory_shard};
    let shard = |name: &str| Channel::parse(name).map(|c| directory_shard(&c)).ok();
    (0..)
        .map(|i| format!("orders:{prefix}-{i}"))
        .find(|name| shard(name) == shard(ch))
        .expect("one of every 16 names shares the shard")
}

/// The interval's first storm: `storm` never-seen users, 50 at a time, to a fresh orders
/// channel, each closing right after its welcome (phones coming and going). Time to welcome.
async fn first_storm(g: &Gateway, storm: usize, tag: &str) -> Storm {
    let port = g.port;
    let ch = format!("orders:first-storm-{tag}");
    let path = format!("/ws/orders/{}", ch.trim_start_matches("orders:"));
    let tokens: Vec<String> = (0..storm).map(|i| token(&format!("fresh-{tag}-{i}"), &[ch.as_str()], &[])).collect();
    // Diagnostic only (BENCH_STORM_WARMUP=N): N users of distinct ids connect to another
    // channel first, on both gateways, so the storm finds the objects it calls (and the
    // code it runs) warm; what it saves is the storm's cold start.
    // With BENCH_STORM_WARMUP_SHARD=1 that channel shares the storm's revocation shard, so
    // the storm finds Foyer's shard warm too, and only its room fresh.
    if let Some(n) = std::env::var("BENCH_STORM_WARMUP").ok().and_then(|v| v.parse::<usize>().ok()) {
        let warm_ch = if std::env::var_os("BENCH_STORM_WARMUP_SHARD").is_some() {
            same_shard_channel(&ch, &format!("warm-storm-{tag}"))
        } else {
            format!("orders:warm-storm-{tag}")
        };
        let warm_path = format!("/ws/orders/{}", warm_ch.trim_start_matches("orders:"));
        for i in 0..n {
            if let Ok(mut ws) = open(port, &warm_path, &token(&format!("warm-{tag}-{i}"), &[warm_ch.as_str()], &[])).await {
                let _ = ws.close(None).await;
            }
        }
    }
    phase("first storm");
    let cpu_before = g.usage().0;
    let v8_before = g.v8_background();
    let main_before = g.main_threads();
    let mut times = Vec::new();
    let mut batch_max = Vec::new();
    for batch in tokens.chunks(50) {
        let opens = batch.iter().map(|t| {
            let path = &path;
            async move {
                let start = Instant::now();
                let r = open(port, path, t).await;
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                // A refusal is no welcome: timing it would flatter a gateway that refuses.
                let Ok(mut ws) = r else { panic!("{}: a storm connect was refused: {r:?}", g.name) };
                let _ = ws.close(None).await;
                ms
            }
        });
        let done = futures_util::future::join_all(opens).await;
        batch_max.push(done.iter().copied().fold(0.0, f64::max));
        if std::env::var_os("BENCH_BATCHES").is_some() {
            let mut ms = done.clone();
            ms.sort_by(f64::total_cmp);
            eprintln!("[batch] first storm: p50 {:.0} max {:.0} ms", pct(&ms, 0.5), pct(&ms, 1.0));
        }
        times.extend(done);
    }
    times.sort_by(f64::total_cmp);
    Storm {
        p50: pct(&times, 0.5),
        p99: pct(&times, 0.99),
        cpu_ms: (g.usage().0 - cpu_before) * 1000.0 / storm as f64,
        v8_ms: (g.v8_background() - v8_before) * 1000.0,
        main_ms: (g.main_threads() - main_before) * 1000.0,
        batch_max,
    }
}

async fn run(g: &Gateway, quick: bool, only: Option<&str>, f: &mut Figures) {
    let port = g.port;
    let tag = format!("{}{}", g.name, now_us() % 1_000_000);
    let want = |scenario: &str| only.is_none_or(|o| o == scenario);
    let (mut lost, mut dup) = (0, 0);

    // The interval's first storm, before anything else ran on this gateway: never-seen users,
    // 50 at a time, to a fresh orders channel, each closing right after its welcome (phones
    // coming and going). Time to welcome.
    if want("storm") {
        let storm = first_storm(g, if quick { 100 } else { 500 }, &tag).await;
        f.add(FIRST_STORM_P50, storm.p50, false);
        f.add(FIRST_STORM_P99, storm.p99, false);
        f.add("first storm server CPU ms per connect", storm.cpu_ms, false);
        // The part of it on V8's background threads: on a fresh isolate, mostly compiling the
        // hot code (bench/README.md, "Where the first storm's extra CPU goes").
        f.add("first storm V8 background CPU ms (compiling, GC)", storm.v8_ms, false);
    }

    // Warm-up, not measured: the first requests compile the Worker (and instantiate the
    // wasm), and the JIT tiers up hot code during the first few hundred; a figure should be
    // the steady state of both gateways, not their start-up.
    let warm = clients(port, "orders:warm-up", 20).await;
    let rx = tokio::spawn(receive(warm, 200, Duration::from_secs(10)));
    for b in 0..8 {
        publish_batch(port, "orders:warm-up", "w", b).await;
    }
    let _ = rx.await;

    // Single-event publishes, the backend's common case (one order change at a time): to one
    // subscriber with 16 requests in flight, and to 200 subscribers; then new payment rooms,
    // one subscriber each, five single publishes each. Server CPU per publish.
    if want("single") {
        for (label, subscribers, n) in
            [("1 subscriber", 1usize, if quick { 200 } else { 600 }), ("200 subscribers", 200, if quick { 100 } else { 400 })]
        {
            let ch = format!("orders:single-{subscribers}-{tag}");
            let sockets = clients(port, &ch, subscribers).await;
            let rx = tokio::spawn(receive(sockets, n as u64, Duration::from_secs(20)));
            phase(&format!("single {label}"));
            let cpu0 = g.usage().0;
            let started = Instant::now();
            single_publishes(port, &ch, n, "s").await;
            let cpu = g.usage().0 - cpu0;
            let r = rx.await.expect("rx");
            let secs = started.elapsed().as_secs_f64();
            f.add(&format!("single publish events/s ({label})"), n as f64 / secs, true);
            f.add(&format!("single publish deliveries/s ({label})"), r.count as f64 / secs, true);
            f.add(&format!("single publish -> delivery p50 ms ({label})"), pct(&r.latencies, 0.5), false);
            f.add(&format!("single publish server CPU ms per publish ({label})"), cpu * 1000.0 / n as f64, false);
            lost += r.lost;
            dup += r.dup;
        }
        let rooms = if quick { 100 } else { 300 };
        let (all, sockets) = new_rooms(port, &format!("single-{tag}"), rooms).await;
        let rx = tokio::spawn(receive(sockets, 5, Duration::from_secs(20)));
        phase("single new rooms");
        let cpu0 = g.usage().0;
        let started = Instant::now();
        room_publishes(port, &all, 5).await;
        let cpu = g.usage().0 - cpu0;
        let r = rx.await.expect("rx");
        let secs = started.elapsed().as_secs_f64();
        f.add(&format!("single publish events/s ({rooms} new rooms, 5 each)"), (rooms * 5) as f64 / secs, true);
        f.add(&format!("single publish -> delivery p99 ms ({rooms} new rooms)"), pct(&r.latencies, 0.99), false);
        f.add(&format!("single publish server CPU ms per publish ({rooms} new rooms)"), cpu * 1000.0 / (rooms * 5) as f64, false);
        lost += r.lost;
        dup += r.dup;
    }

    // Saturated fan-out: 200 sockets, events published back to back in batches.
    if want("fanout") {
        g.settle().await;
        let (sockets_n, batches) = (200usize, if quick { 10 } else { 40 });
        let ch = format!("orders:sat-{tag}");
        let sockets = clients(port, &ch, sockets_n).await;
        let total = (batches * 25) as u64;
        let (cpu0, _) = g.usage();
        let started = Instant::now();
        let rx = tokio::spawn(receive(sockets, total, Duration::from_secs(20)));
        for b in 0..batches {
            publish_batch(port, &ch, "s", b).await;
        }
        let r = rx.await.expect("rx");
        let secs = started.elapsed().as_secs_f64();
        f.add(FANOUT, r.count as f64 / secs, true);
        f.add(FANOUT_CPU, (g.usage().0 - cpu0) / (r.count.max(1) as f64) * 10_000.0, false);
        lost += r.lost;
        dup += r.dup;
    }

    // Steady fan-out: many sockets, 10 events/s, latency publish → delivery.
    if want("steady") {
        g.settle().await;
        let (n, events) = if quick { (200, 30) } else { (1000, 100) };
        let ch = format!("orders:steady-{tag}");
        let sockets = clients(port, &ch, n).await;
        let rx = tokio::spawn(receive(sockets, events, Duration::from_secs(20)));
        for i in 0..events {
            publish(port, &json!({"id": format!("e{i}"), "channels": [&ch], "event": "x", "data": {"sent_us": now_us()}})).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = rx.await.expect("rx");
        f.add(&format!("steady p50 ms ({n} sockets, 10 ev/s)"), pct(&r.latencies, 0.5), false);
        f.add(&format!("steady p99 ms ({n} sockets, 10 ev/s)"), pct(&r.latencies, 0.99), false);
        f.add(&format!("steady max ms ({n} sockets, 10 ev/s)"), pct(&r.latencies, 1.0), false);
        lost += r.lost;
        dup += r.dup;
    }

    // Rooms: many payment channels, one socket each, one batch to all of them. At an
    // intermission each page is a different customer; the reused-user variant is the same
    // customer everywhere (a gateway may remember a user it has seen).
    for (variant, distinct) in [("rooms", true), ("rooms-reused", false)] {
        if !want(variant) {
            continue;
        }
        g.settle().await;
        let rooms = if quick { 100 } else { 1000 };
        phase(&format!("{variant} connect"));
        let all: Vec<String> = (0..rooms).map(|i| format!("payment:{tag}-{variant}-{i}")).collect();
        let mut sockets = Vec::new();
        for (n, chunk) in all.chunks(50).enumerate() {
            let opens = chunk.iter().enumerate().map(|(i, c)| {
                let (_, key) = c.split_once(':').expect("c");
                let sub = if distinct { format!("cust-{tag}-{n}-{i}") } else { "cust".to_owned() };
                let t = token(&sub, &[c.as_str()], &[]);
                async move { open(port, &format!("/ws/payment/{key}"), &t).await }
            });
            sockets.extend(futures_util::future::join_all(opens).await.into_iter().map(|w| w.expect("socket")));
        }
        phase(&format!("{variant} publish"));
        let rx = tokio::spawn(receive(sockets, 1, Duration::from_secs(30)));
        for chunk in all.chunks(100) {
            let msgs: Vec<Value> = chunk
                .iter()
                .map(|c| json!({"id": format!("p-{c}"), "channels": [c], "event": "payment.paid", "data": {"sent_us": now_us()}}))
                .collect();
            publish(port, &json!({"messages": msgs})).await;
        }
        let r = rx.await.expect("rx");
        let who = if distinct { "a new user each" } else { "one user" };
        f.add(&format!("rooms p99 ms ({rooms} payment channels, {who})"), pct(&r.latencies, 0.99), false);
        lost += r.lost;
        dup += r.dup;
    }

    // Connect storms: sockets 50 at a time, time to welcome (one staff user on every
    // socket, then a new user on each), and to the 4401 of a bad token.
    if want("connect") {
        g.settle().await;
        let storm = if quick { 100 } else { 500 };
        let variants = [(CONNECT_P99, Some(false)), (CONNECT_DISTINCT_P99, Some(true)), (BAD_TOKEN_P99, None)];
        // Every socket stays open until all storms are done: a storm must not overlap the
        // closing of the one before it.
        let mut keep = Vec::new();
        for (n, (label, distinct)) in variants.into_iter().enumerate() {
            let ch = format!("orders:storm-{tag}-{n}");
            let key = ch.split_once(':').map_or("", |x| x.1).to_owned();
            // Minted before the clock starts: the figure is the gateway's time.
            let tokens: Vec<String> = (0..storm)
                .map(|i| match distinct {
                    Some(true) => token(&format!("guest-{tag}-{i}"), &[ch.as_str()], &[]),
                    Some(false) => token("staff", &[ch.as_str()], &[]),
                    None => "bad.token.here".to_string(),
                })
                .collect();
            let mut times = Vec::new();
            phase(label);
            let cpu_before = g.usage().0;
            for batch in tokens.chunks(50) {
                let batch = batch.iter().map(|t| {
                    let path = format!("/ws/orders/{key}");
                    async move {
                        let start = Instant::now();
                        let r = open(port, &path, t).await;
                        (start.elapsed().as_secs_f64() * 1000.0, r)
                    }
                });
                let done = futures_util::future::join_all(batch).await;
                if std::env::var_os("BENCH_BATCHES").is_some() {
                    let mut ms: Vec<f64> = done.iter().map(|(ms, _)| *ms).collect();
                    ms.sort_by(|a, b| a.total_cmp(b));
                    eprintln!("[batch] {label}: p50 {:.0} max {:.0} ms", pct(&ms, 0.5), pct(&ms, 1.0));
                }
                for (ms, r) in done {
                    times.push(ms);
                    if let Ok(ws) = r {
                        keep.push(ws);
                    }
                }
            }
            // CPU per connect: steadier than a p99 on a shared 2-core machine, and the
            // figure a change to the connect path should move.
            f.add(&label.replace("p99 ms", "server CPU ms per connect"), (g.usage().0 - cpu_before) * 1000.0 / storm as f64, false);
            times.sort_by(|a, b| a.total_cmp(b));
            f.add(label, pct(&times, 0.99), false);
        }
    }
    f.add("lost events", lost as f64, false);
    f.add("duplicated events", dup as f64, false);
    let (cpu, peak) = g.usage();
    f.add("server CPU s (whole run)", cpu, false);
    f.add(PEAK_MEMORY, peak, false);
}

/// Foyer only: chat users sending through the gateway (the baseline has no chat).
async fn chat(port: u16, quick: bool) -> (f64, u64) {
    let users = 50;
    let per = if quick { 4 } else { 10 };
    let room = format!("chat:bench-{}", now_us() % 1_000_000);
    let mut socks = Vec::new();
    for u in 0..users {
        let t = token(&format!("u{u}"), &[room.as_str()], &[room.as_str()]);
        socks.push(open(port, &format!("/ws/chat/{}", room.split_once(':').map_or("", |x| x.1)), &t).await.expect("chat socket"));
    }
    let expect = (users * per) as u64;
    let started = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (u, ws) in socks.into_iter().enumerate() {
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let sender = tokio::spawn(async move {
                for i in 0..per {
                    let _ = tx.send(Message::text(json!({"type": "send", "id": format!("{u}-{i}"), "text": "hello"}).to_string())).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tx
            });
            let mut got = 0;
            while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
                if t.contains("\"chat.message\"") {
                    got += 1;
                    if got >= expect {
                        break;
                    }
                }
            }
            received.fetch_add(got, Ordering::Relaxed);
            let _ = sender.await;
        }));
    }
    futures_util::future::join_all(tasks).await;
    let total = received.load(Ordering::Relaxed);
    (total as f64 / started.elapsed().as_secs_f64(), expect * users as u64 - total)
}

/// One pass of the inbox scenario: what the customers saw on their own chats, what the staff
/// inbox saw, and the server CPU it took.
struct InboxPass {
    own: Vec<f64>,
    forward: Vec<f64>,
    forwarded: u64,
    lost: u64,
    dup: u64,
    cpu: f64,
}

/// Foyer only: a venue's staff inbox with `chats` linked chats (or none linked), 50 of them
/// with a customer sending a message a second (a fast typist; starts spread over the first
/// second), 10 each. Own delivery: send → the customer's own socket; forward: accepted by
/// the chat (the event's `ts`) → the inbox socket. (At ten a second each, 500 messages a
/// second into one inbox, the local runtime's one thread saturates: bench/README.md.)
///
/// `load`: no links, but as many single-event publishes to an unrelated orders channel, at
/// the same pace as the chat messages: the control that tells the cost of any concurrent work
/// in the local runtime's one thread from a cost of forwarding on the chats' own path.
async fn inbox_pass(g: &Gateway, quick: bool, linked: bool, load: bool, pass: usize) -> InboxPass {
    let port = g.port;
    let (chats, customers, per) = (200, 50, if quick { 4 } else { 10 });
    let pace_ms: u64 = std::env::var("BENCH_INBOX_PACE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let tag = format!("{}-{pass}", now_us() % 1_000_000);
    let inbox = format!("inbox:venue-{tag}");
    let rooms: Vec<String> = (0..chats).map(|i| format!("chat:inb-{tag}-{i}")).collect();
    if linked {
        for chunk in rooms.chunks(100) {
            let links: Vec<Value> = chunk.iter().map(|c| json!({"channel": c, "inbox": inbox})).collect();
            let answer = signed_post(port, "/links", &json!({ "links": links })).await;
            assert!(answer["results"].as_array().is_some_and(|r| r.iter().all(|r| r["linked"] == true)), "links: {answer}");
        }
    }
    // The local runtime evicts objects idle for ~10 s, all together: the 150 chats linked here
    // and never used would go at once, mid-pass, stalling its one thread (the slow messages of
    // linked passes were each customer's 9th and 10th). In a venue, links are made over the
    // evening, one order at a time: both kinds of pass wait until the setup has settled.
    let settle = std::env::var("BENCH_INBOX_SETTLE_S").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick { 0 } else { 12 });
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let staff = open(port, &format!("/ws/inbox/venue-{tag}"), &token("staff", &[inbox.as_str()], &[])).await.expect("inbox socket");
    let expect = (customers * per) as u64;
    let forwards = tokio::spawn(async move {
        let (mut seen, mut times, mut total) = (std::collections::HashSet::new(), Vec::new(), 0u64);
        let mut ws = staff;
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(if linked { 10 } else { 2 }), ws.next()).await {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            if v["type"] != "event" {
                continue;
            }
            total += 1;
            times.push(now_us() as f64 / 1000.0 - v["ts"].as_f64().unwrap_or(0.0));
            seen.insert((v["source"]["channel"].as_str().unwrap_or("").to_owned(), v["source"]["seq"].as_u64().unwrap_or(0)));
            if seen.len() as u64 >= expect && linked {
                break;
            }
        }
        (seen.len() as u64, total, times)
    });
    let mut sockets = Vec::new();
    for (u, room) in rooms.iter().take(customers).enumerate() {
        let t = token(&format!("cust-{tag}-{u}"), &[room.as_str()], &[room.as_str()]);
        sockets.push(open(port, &format!("/ws/chat/{}", room.split_once(':').map_or("", |x| x.1)), &t).await.expect("chat socket"));
    }
    let cpu0 = g.usage().0;
    let unrelated = load.then(|| {
        let channel = format!("orders:inbox-load-{tag}");
        tokio::spawn(async move {
            let gap = Duration::from_micros(pace_ms * 1000 / customers as u64);
            for i in 0..customers * per {
                tokio::time::sleep(gap).await;
                publish(port, &json!({"id": format!("load-{i}"), "channels": [&channel], "event": "x", "data": {}})).await;
            }
        })
    });
    let tasks = sockets.into_iter().enumerate().map(|(u, ws)| async move {
        let (mut tx, mut rx) = ws.split();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(u as u64 * 1000 / customers as u64)).await;
            for i in 0..per {
                let text = format!("{}", now_us());
                let _ = tx.send(Message::text(json!({"type": "send", "id": format!("{u}-{i}"), "text": text}).to_string())).await;
                tokio::time::sleep(Duration::from_millis(pace_ms)).await;
            }
            tx
        });
        let mut own = Vec::new();
        while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            if let Some(sent) = v["data"]["text"].as_str().and_then(|s| s.parse::<u64>().ok()) {
                own.push((now_us() - sent) as f64 / 1000.0);
                if std::env::var_os("BENCH_DEBUG").is_some() && own.last().is_some_and(|ms| *ms > 15.0) {
                    eprintln!("[slow] linked={linked} customer={u} message={} {:.1} ms", own.len() - 1, own.last().unwrap_or(&0.0));
                }
                if own.len() >= per {
                    break;
                }
            }
        }
        let _ = sender.await;
        own
    });
    let mut own: Vec<f64> = futures_util::future::join_all(tasks).await.into_iter().flatten().collect();
    if let Some(unrelated) = unrelated {
        let _ = unrelated.await;
    }
    let (unique, total, mut forward) = forwards.await.expect("inbox");
    let cpu = g.usage().0 - cpu0;
    own.sort_by(f64::total_cmp);
    forward.sort_by(f64::total_cmp);
    let delivered = own.len() as u64;
    let (lost, dup) = if linked {
        (expect - unique.min(expect) + (expect - delivered.min(expect)), total - unique)
    } else {
        (expect - delivered.min(expect), total)
    };
    InboxPass { own, forward, forwarded: unique, lost, dup, cpu }
}

/// The inbox scenario: unlinked and linked passes alternating on one gateway; returns the
/// figures and the budget verdicts. `floor`: on the floor gateway (bench/floor) instead of
/// Foyer, to tell what any forward costs the local runtime's one thread.
async fn inbox(quick: bool, floor: bool) -> (Vec<(String, f64)>, Vec<(&'static str, bool)>) {
    let g = if floor { Gateway::start("floor", Some("bench/floor/wrangler.toml")) } else { Gateway::start("inbox", Some(&foyer_config())) };
    let pairs = if quick { 1 } else { 3 };
    let (mut without, mut with, mut loaded) = (Vec::new(), Vec::new(), Vec::new());
    for pass in 0..pairs {
        without.push(inbox_pass(&g, quick, false, false, 3 * pass).await);
        with.push(inbox_pass(&g, quick, true, false, 3 * pass + 1).await);
        loaded.push(inbox_pass(&g, quick, false, true, 3 * pass + 2).await);
    }
    let own_without = median(without.iter().map(|p| pct(&p.own, 0.99)).collect());
    let own_with = median(with.iter().map(|p| pct(&p.own, 0.99)).collect());
    let own_loaded = median(loaded.iter().map(|p| pct(&p.own, 0.99)).collect());
    let loaded_cpu = (loaded.iter().map(|p| p.cpu).sum::<f64>() - without.iter().map(|p| p.cpu).sum::<f64>()) * 1000.0
        / loaded.iter().map(|p| p.own.len() as f64).sum::<f64>().max(1.0);
    let fwd_p50 = median(with.iter().map(|p| pct(&p.forward, 0.5)).collect());
    let fwd_p99 = median(with.iter().map(|p| pct(&p.forward, 0.99)).collect());
    let forwarded: u64 = with.iter().map(|p| p.forwarded).sum();
    let extra_cpu: f64 = with.iter().map(|p| p.cpu).sum::<f64>() - without.iter().map(|p| p.cpu).sum::<f64>();
    let cpu_per = extra_cpu * 1000.0 / forwarded.max(1) as f64;
    let (lost, dup): (u64, u64) = with.iter().chain(&without).chain(&loaded).fold((0, 0), |(l, d), p| (l + p.lost, d + p.dup));
    let figures = vec![
        ("chat own delivery p99 ms, no links".to_owned(), own_without),
        ("chat own delivery p99 ms, 200 linked".to_owned(), own_with),
        ("chat own delivery p99 ms, no links + unrelated publishes".to_owned(), own_loaded),
        ("server CPU ms per unrelated publish".to_owned(), loaded_cpu),
        ("forward p50 ms (accepted -> inbox socket)".to_owned(), fwd_p50),
        ("forward p99 ms (accepted -> inbox socket)".to_owned(), fwd_p99),
        ("server CPU ms per forwarded event".to_owned(), cpu_per),
        ("inbox lost + duplicated".to_owned(), (lost + dup) as f64),
    ];
    let verdicts = vec![
        ("inbox: chats' own delivery p99 with links <= 1.05x without", own_with <= 1.05 * own_without),
        ("inbox: forward p99 <= 2x the chats' own delivery p99", fwd_p99 <= 2.0 * own_with),
        ("inbox: zero lost or duplicated", lost == 0 && dup == 0),
    ];
    (figures, verdicts)
}

/// Cloudflare Workers Paid prices used for the cost scenario (USD), as published on the
/// Workers and Durable Objects pricing pages, read 2026-11-30. Marginal prices: the plan's
/// included amounts are left out, so a figure is what one more order costs.
mod price {
    pub const WORKER_REQUEST: f64 = 0.30 / 1e6;
    /// Durable Object requests; an alarm invocation is one; incoming WebSocket messages
    /// (and, conservatively here, closes) are billed 20:1.
    pub const OBJECT_REQUEST: f64 = 0.15 / 1e6;
    pub const WS_MESSAGES_PER_REQUEST: f64 = 20.0;
    pub const ROW_READ: f64 = 0.001 / 1e6;
    pub const ROW_WRITTEN: f64 = 1.00 / 1e6;
    pub const GB_MONTH: f64 = 0.20;
}

/// What one gateway's usage meter reported over a window of its log.
#[derive(Default, Debug)]
struct Usage {
    worker: f64,
    object: f64,
    alarm: f64,
    ws: f64,
    rows_read: f64,
    rows_written: f64,
    /// The last reported size of each object.
    bytes: HashMap<String, f64>,
}

impl Usage {
    fn read(log: &std::path::Path, from: usize, to: Option<usize>) -> Usage {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let text = &text[from.min(text.len())..to.unwrap_or(text.len()).min(text.len())];
        let mut u = Usage::default();
        for line in text.lines() {
            let Some(v) = line.split_once("foyer-meter ").and_then(|(_, j)| serde_json::from_str::<Value>(j.trim()).ok()) else {
                continue;
            };
            match v["what"].as_str().unwrap_or("") {
                "worker" => u.worker += 1.0,
                "object" => u.object += 1.0,
                "alarm" => u.alarm += 1.0,
                _ => u.ws += 1.0,
            }
            u.rows_read += v["rows_read"].as_f64().unwrap_or(0.0);
            u.rows_written += v["rows_written"].as_f64().unwrap_or(0.0);
            if let (Some(id), Some(b)) = (v["object"].as_str(), v["bytes"].as_f64()) {
                u.bytes.insert(id.to_owned(), b);
            }
        }
        u
    }

    fn requests_cost(&self) -> f64 {
        self.worker * price::WORKER_REQUEST
            + (self.object + self.alarm + self.ws / price::WS_MESSAGES_PER_REQUEST) * price::OBJECT_REQUEST
            + self.rows_read * price::ROW_READ
            + self.rows_written * price::ROW_WRITTEN
    }
}

fn log_len(g: &Gateway) -> usize {
    std::fs::metadata(&g.log).map(|m| m.len() as usize).unwrap_or(0)
}

/// A theatre evening on a metered gateway: `orders` orders across 10 venues (a staff
/// dashboard per venue; each order opens a payment page and a chat, gets 5 status events,
/// published to the venue and the order, and 3 chat messages from the backend), then
/// `idle` with nothing happening. Returns the usage of the evening and of the idle window.
async fn cost(g: &Gateway, orders: usize, idle: Duration) -> (Usage, Usage, Duration) {
    assert!(orders.is_multiple_of(10), "orders spread evenly over 10 venues");
    let port = g.port;
    let tag = format!("{}{}", g.name, now_us() % 1_000_000);
    let start = log_len(g);
    let mut staff = Vec::new();
    for v in 0..10 {
        staff.extend(clients(port, &format!("orders:{tag}-v{v}"), 1).await);
    }
    // Each venue's dashboard sees seq 1..=5 per order of its venue.
    let staff_rx = tokio::spawn(receive(staff, (orders / 10 * 5) as u64, Duration::from_secs(30)));
    for wave in 0..orders.div_ceil(50) {
        let batch = (wave * 50..((wave + 1) * 50).min(orders)).map(|i| {
            let tag = tag.clone();
            async move {
                let (venue, order) = (format!("orders:{tag}-v{}", i % 10), format!("{tag}-o{i}"));
                let (pay, chat) = (format!("payment:{order}"), format!("chat:{order}"));
                let t = token(&format!("cust-{tag}-{i}"), &[&pay, &chat], &[&chat]);
                let payment = open(port, &format!("/ws/payment/{order}"), &t).await.expect("payment socket");
                let talk = open(port, &format!("/ws/chat/{order}"), &t).await.expect("chat socket");
                let paid = tokio::spawn(receive(vec![payment], 5, Duration::from_secs(10)));
                let chatted = tokio::spawn(receive(vec![talk], 3, Duration::from_secs(10)));
                for s in 0..5 {
                    let m = json!({"id": format!("{order}-s{s}"), "channels": [&venue, &pay], "event": "order.status", "data": {"order": order, "step": s}});
                    publish(port, &m).await;
                }
                for c in 0..3 {
                    let m = json!({"id": format!("{order}-c{c}"), "channels": [&chat], "event": "chat.message", "data": {"text": "Your order is on its way", "from": "staff"}});
                    publish(port, &m).await;
                }
                // A receiver drops its socket once it has every event (or went quiet).
                paid.await.map(|r| r.count).unwrap_or(0) + chatted.await.map(|r| r.count).unwrap_or(0)
            }
        });
        let delivered: u64 = futures_util::future::join_all(batch).await.into_iter().sum();
        assert_eq!(delivered, (((wave + 1) * 50).min(orders) - wave * 50) as u64 * 8, "every customer saw every event");
    }
    let staff_seen = staff_rx.await.map(|r| r.count).unwrap_or(0);
    assert_eq!(staff_seen, (orders * 5) as u64, "every dashboard saw its venue's events");
    // Let the last closes land before the idle window starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let evening_end = log_len(g);
    let evening = Usage::read(&g.log, start, Some(evening_end));
    tokio::time::sleep(idle).await;
    let idle_usage = Usage::read(&g.log, evening_end, None);
    // Stored bytes: each object's last report, whenever it came.
    let mut evening = evening;
    evening.bytes = Usage::read(&g.log, start, None).bytes;
    (evening, idle_usage, idle)
}

/// The cost scenario for both gateways, printed side by side with its verdicts.
async fn cost_report(quick: bool) -> Vec<(&'static str, bool)> {
    let orders =
        std::env::args().find_map(|a| a.strip_prefix("--orders=").and_then(|n| n.parse().ok())).unwrap_or(if quick { 200 } else { 2000 });
    let idle =
        Duration::from_secs(std::env::args().find_map(|a| a.strip_prefix("--idle=").and_then(|n| n.parse().ok())).unwrap_or(if quick {
            90
        } else {
            600
        }));
    let mut rows = Vec::new();
    let foyer = foyer_config();
    for (name, config) in [("foyer", Some(foyer.as_str())), ("baseline", Some("bench/baseline/wrangler.toml"))] {
        println!("cost: {name}, {orders} orders, then {} s idle", idle.as_secs());
        let g = Gateway::start_with(name, config, true);
        rows.push((name, cost(&g, orders, idle).await));
    }
    println!("\n{:<48} {:>12} {:>12}", format!("cost scenario ({orders} orders, 10 venues)"), "foyer", "baseline");
    let per_1000 = 1000.0 / orders as f64;
    let figure = |label: &str, f: &dyn Fn(&(Usage, Usage, Duration)) -> f64| {
        println!("{label:<48} {:>12.1} {:>12.1}", f(&rows[0].1), f(&rows[1].1));
    };
    figure("Worker requests per order", &|r| r.0.worker / orders as f64);
    figure("object requests per order", &|r| r.0.object / orders as f64);
    figure("WebSocket messages and closes per order", &|r| r.0.ws / orders as f64);
    figure("alarm invocations per order (evening)", &|r| r.0.alarm / orders as f64);
    figure("alarm invocations while idle (total)", &|r| r.1.alarm);
    figure("requests of any kind while idle (total)", &|r| r.1.worker + r.1.object + r.1.alarm + r.1.ws);
    figure("SQLite rows read per order", &|r| r.0.rows_read / orders as f64);
    figure("SQLite rows written per order", &|r| r.0.rows_written / orders as f64);
    figure("stored bytes per order", &|r| r.0.bytes.values().sum::<f64>() / orders as f64);
    // Monthly: the evening's requests and rows once, its storage for a month, and whatever
    // the idle window costs, extended to a month.
    let monthly = |r: &(Usage, Usage, Duration)| {
        let idle_month = (r.1.requests_cost()) * (30.0 * 86_400.0 / r.2.as_secs_f64());
        let storage = r.0.bytes.values().sum::<f64>() / 1e9 * price::GB_MONTH;
        (r.0.requests_cost() + storage + idle_month) * per_1000
    };
    println!("{:<48} {:>12.4} {:>12.4}", "USD per month per 1,000 orders", monthly(&rows[0].1), monthly(&rows[1].1));
    println!("  (Workers Paid marginal prices of 2026-11-30: requests, SQLite rows and storage; Durable Object duration is not");
    println!("   metered here: both gateways hibernate their sockets)");
    vec![
        ("zero alarm invocations while idle (cost)", rows[0].1 .1.alarm == 0.0),
        ("cost per order <= baseline (cost)", monthly(&rows[0].1) <= monthly(&rows[1].1)),
    ]
}

fn token_microbench() -> Vec<(&'static str, f64)> {
    use foyer::protocol::token::{verify, Expectations, KeySet};
    let keys = [(SigningKey::hs256(1), "hs"), (SigningKey::eddsa(2), "ed"), (SigningKey::es256(3), "es")];
    let set = KeySet::from_jwks(&jwks(&keys.iter().map(|(k, kid)| (k, Some(*kid))).collect::<Vec<_>>())).expect("keys");
    let expect = Expectations::new(ISSUER.into(), "foyer".into(), 900);
    let now = (now_us() / 1_000_000) as i64;
    keys.iter()
        .map(|(k, kid)| {
            let t = k.mint(
                Some(kid),
                &json!({"sub": "u", "iss": ISSUER, "aud": "foyer", "iat": now, "exp": now + 600, "channels": ["orders:v"]}),
            );
            for _ in 0..200 {
                assert!(verify(&t, &set, &expect, now).is_ok());
            }
            // The median of 7 batches: a stray process on the machine moves one batch, not the figure.
            let n = 1000;
            let mut batches: Vec<f64> = (0..7)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(verify(std::hint::black_box(&t), &set, &expect, now).is_ok());
                    }
                    start.elapsed().as_secs_f64() * 1e6 / n as f64
                })
                .collect();
            batches.sort_by(f64::total_cmp);
            (k.alg(), batches[batches.len() / 2])
        })
        .collect()
}

/// The gateways a run compares: Foyer (its bench config), the baseline and, with
/// `BENCH_FLOOR`, the floor (bench/floor; a floor of the runtime, never part of a verdict).
fn gateways(foyer: &str) -> Vec<(&'static str, &str)> {
    let floor = std::env::var_os("BENCH_FLOOR").is_some().then_some(("floor", "bench/floor/wrangler.toml"));
    [("foyer", foyer), ("baseline", "bench/baseline/wrangler.toml")].into_iter().chain(floor).collect()
}

/// `--paired`: the single-publish scenarios with every gateway up at once (Foyer, the baseline
/// and, with `BENCH_FLOOR`, the floor) and short blocks alternating between them, the order
/// turned each block. This machine's speed drifts by ±25% within minutes, more than a round of
/// one gateway lasts, so rounds of whole gateways compare two different machines; here every
/// block of Foyer has a block of the baseline beside it. A figure's ratio is the median of the
/// per-block ratios (latency percentiles: of all blocks' deliveries pooled per gateway). The
/// first block of each gateway warms it up and is not counted.
async fn paired(blocks: usize) {
    const ONE: usize = 150;
    const MANY: usize = 50;
    const ROOMS: usize = 25;
    let foyer = foyer_config();
    struct Side {
        g: Gateway,
        one: Vec<Ws>,
        many: Vec<Ws>,
        figures: Vec<Figures>,
        one_latencies: Vec<f64>,
        room_latencies: Vec<f64>,
        lost: u64,
        dup: u64,
    }
    let mut sides = Vec::new();
    for (name, config) in gateways(&foyer) {
        let g = Gateway::start(name, Some(config));
        let one = clients(g.port, "orders:paired-1", 1).await;
        let many = clients(g.port, "orders:paired-200", 200).await;
        sides.push(Side { g, one, many, figures: Vec::new(), one_latencies: Vec::new(), room_latencies: Vec::new(), lost: 0, dup: 0 });
    }
    let cpu = |g: &Gateway| g.thread_cpu(|_| true);
    let quiet = Duration::from_secs(20);
    for block in 0..=blocks {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        order.rotate_left(block % sides.len());
        for i in order {
            let side = &mut sides[i];
            let port = side.g.port;
            let mut f = Figures::default();

            let (after, cpu0, started) = ((block * ONE) as u64, cpu(&side.g), Instant::now());
            let rx = tokio::spawn(receive_after(std::mem::take(&mut side.one), after, after + ONE as u64, quiet));
            single_publishes(port, "orders:paired-1", ONE, &format!("b{block}-")).await;
            let (cpu1, (r, back)) = (cpu(&side.g), rx.await.expect("rx"));
            f.add("events/s (1 subscriber)", ONE as f64 / started.elapsed().as_secs_f64(), true);
            f.add("server CPU ms per publish (1 subscriber)", (cpu1 - cpu0) * 1000.0 / ONE as f64, false);
            side.one = back;
            let one = (r.latencies, r.lost, r.dup);

            let (after, cpu0, started) = ((block * MANY) as u64, cpu(&side.g), Instant::now());
            let rx = tokio::spawn(receive_after(std::mem::take(&mut side.many), after, after + MANY as u64, quiet));
            single_publishes(port, "orders:paired-200", MANY, &format!("b{block}-")).await;
            let (cpu1, (r, back)) = (cpu(&side.g), rx.await.expect("rx"));
            f.add("deliveries/s (200 subscribers)", r.count as f64 / started.elapsed().as_secs_f64(), true);
            f.add("server CPU ms per publish (200 subscribers)", (cpu1 - cpu0) * 1000.0 / MANY as f64, false);
            side.many = back;
            let many = (r.lost, r.dup);

            let (all, sockets) = new_rooms(port, &format!("paired-{block}"), ROOMS).await;
            let (cpu0, started) = (cpu(&side.g), Instant::now());
            let rx = tokio::spawn(receive(sockets, 5, quiet));
            room_publishes(port, &all, 5).await;
            let (cpu1, r) = (cpu(&side.g), rx.await.expect("rx"));
            f.add("events/s (new rooms, 5 each)", (ROOMS * 5) as f64 / started.elapsed().as_secs_f64(), true);
            f.add("server CPU ms per publish (new rooms)", (cpu1 - cpu0) * 1000.0 / (ROOMS * 5) as f64, false);

            if block > 0 {
                side.figures.push(f);
                side.one_latencies.extend(one.0);
                side.room_latencies.extend(r.latencies);
                side.lost += one.1 + many.0 + r.lost;
                side.dup += one.2 + many.1 + r.dup;
            }
        }
        eprint!(".");
    }
    eprintln!();

    let base = sides.iter().position(|s| s.g.name == "baseline").expect("baseline");
    let names: Vec<String> = sides[0].figures[0].0.iter().map(|(n, ..)| n.clone()).collect();
    println!("\nsingle-event publishes, {blocks} paired blocks ({ONE}, {MANY} and {ROOMS}x5 publishes a block)");
    let header: Vec<String> = sides.iter().map(|s| format!("{:>10}", s.g.name)).collect();
    let ratios: Vec<String> =
        sides.iter().filter(|s| s.g.name != "baseline").map(|s| format!("{:>16}", format!("{} / base", s.g.name))).collect();
    println!("{:<44} {} {}", "figure (median of blocks)", header.join(" "), ratios.join(" "));
    // Per-figure paired ratios, for the verdicts below.
    let mut paired_ratio: HashMap<(String, &str), f64> = HashMap::new();
    for name in &names {
        let values: Vec<String> =
            sides.iter().map(|s| format!("{:>10.2}", median(s.figures.iter().map(|f| f.get(name)).collect()))).collect();
        let mut cols = Vec::new();
        for s in sides.iter().filter(|s| s.g.name != "baseline") {
            let r = median(s.figures.iter().zip(&sides[base].figures).map(|(a, b)| a.get(name) / b.get(name)).collect());
            paired_ratio.insert((name.clone(), s.g.name), r);
            cols.push(format!("{r:>16.3}"));
        }
        println!("{name:<44} {} {}", values.join(" "), cols.join(" "));
    }
    for (label, p, pick) in [("publish -> delivery p50 ms (1 subscriber)", 0.5, 0), ("publish -> delivery p99 ms (new rooms)", 0.99, 1)] {
        let of = |s: &Side| {
            let mut v = if pick == 0 { s.one_latencies.clone() } else { s.room_latencies.clone() };
            v.sort_by(f64::total_cmp);
            pct(&v, p)
        };
        let values: Vec<String> = sides.iter().map(|s| format!("{:>10.2}", of(s))).collect();
        let mut cols = Vec::new();
        for s in sides.iter().filter(|s| s.g.name != "baseline") {
            let r = of(s) / of(&sides[base]);
            paired_ratio.insert((label.to_owned(), s.g.name), r);
            cols.push(format!("{r:>16.3}"));
        }
        println!("{label:<44} {} {}", values.join(" "), cols.join(" "));
    }
    for s in &sides {
        println!("{:<44} lost {} duplicated {}", s.g.name, s.lost, s.dup);
    }
    // The issue's budgets, on the paired ratios (for each gateway that is not the baseline).
    println!("\nbudgets (paired)");
    for s in sides.iter().filter(|s| s.g.name != "baseline") {
        let r = |name: &str| paired_ratio.get(&(name.to_owned(), s.g.name)).copied().unwrap_or(f64::NAN);
        let verdicts = [
            (
                "1 subscriber: events/s >= 1.10x, p50 <= 0.95x",
                r("events/s (1 subscriber)") >= 1.10 && r("publish -> delivery p50 ms (1 subscriber)") <= 0.95,
            ),
            ("200 subscribers: deliveries/s >= 1.10x", r("deliveries/s (200 subscribers)") >= 1.10),
            (
                "new rooms: events/s >= 1.0x, p99 <= 1.0x",
                r("events/s (new rooms, 5 each)") >= 1.0 && r("publish -> delivery p99 ms (new rooms)") <= 1.0,
            ),
            ("server CPU per publish <= baseline", names.iter().filter(|n| n.starts_with("server CPU")).all(|n| r(n) <= 1.0)),
            ("zero lost or duplicated", s.lost == 0 && s.dup == 0),
        ];
        for (name, ok) in verdicts {
            println!("  {} {:<8} {name}", if ok { "PASS" } else { "MISS" }, s.g.name);
        }
    }
}

/// `--paired-storm[=ROUNDS]`: the first storm, each round on fresh gateways (Foyer, the
/// baseline and, with `BENCH_FLOOR`, the floor) started together and stormed one right after
/// the other, the order turned each round: seconds apart, where a full run's rounds put a
/// gateway's whole run between them. A ratio is the median of the rounds' ratios.
async fn paired_storm(rounds: usize) {
    let foyer = foyer_config();
    let mut configs = gateways(&foyer);
    // BENCH_WASM_FLOOR: also the baseline with its token check in Rust compiled to wasm
    // (bench/wasm-token, built here; it serves only this storm): what running wasm cold costs.
    if std::env::var_os("BENCH_WASM_FLOOR").is_some() {
        let built = Command::new(root().join("bench/wasm-token/build")).status().is_ok_and(|s| s.success());
        assert!(built, "bench/wasm-token/build failed");
        configs.push(("wasm-token", "bench/wasm-token/wrangler.toml"));
    }
    // BENCH_FOYER_B=NAME: also Foyer as snapshotted under NAME (bench/snapshot), for an A/B of
    // two trees side by side in every round.
    let snapshot = std::env::var("BENCH_FOYER_B").ok().map(|name| format!("bench/target/snapshots/{name}/wrangler.toml"));
    if let Some(config) = &snapshot {
        assert!(root().join(config).exists(), "{config}: no such snapshot (bench/snapshot NAME)");
        configs.push(("foyer-b", config.as_str()));
    }
    let mut figures: HashMap<&str, Vec<Storm>> = HashMap::new();
    for round in 0..rounds {
        let gateways: Vec<Gateway> = configs.iter().map(|(name, config)| Gateway::start(name, Some(config))).collect();
        let mut order: Vec<usize> = (0..gateways.len()).collect();
        order.rotate_left(round % gateways.len());
        for i in order {
            let g = &gateways[i];
            let storm = first_storm(g, 500, &format!("{}{}", g.name, now_us() % 1_000_000)).await;
            eprintln!(
                "round {}/{rounds}: {} p50 {:.1} p99 {:.1} ms, CPU {:.2} ms a connect",
                round + 1,
                g.name,
                storm.p50,
                storm.p99,
                storm.cpu_ms
            );
            figures.entry(g.name).or_default().push(storm);
        }
    }
    let base = &figures["baseline"];
    let others: Vec<&str> = configs.iter().map(|(n, _)| *n).filter(|n| *n != "baseline").collect();
    println!("\nthe first storm (500 never-seen users, 50 at a time, closing), {rounds} paired rounds");
    let ratios: Vec<String> = others.iter().map(|n| format!("{:>16}", format!("{n} / base"))).collect();
    let names: Vec<String> = configs.iter().map(|(n, _)| format!("{n:>10}")).collect();
    println!("{:<44} {} {}", "figure (median of rounds)", names.join(" "), ratios.join(" "));
    let mut verdict: HashMap<&str, bool> = HashMap::new();
    let labels = [
        "welcome p50 ms",
        "welcome p99 ms",
        "server CPU ms per connect",
        "V8 background CPU ms (compiling, GC)",
        "main threads CPU ms (Worker and objects)",
        "first batch's slowest welcome ms",
        "other batches' slowest welcome ms (median)",
    ];
    let first_batch = |s: &Storm| s.batch_max.first().copied().unwrap_or(0.0);
    let later_batches = |s: &Storm| median(s.batch_max.iter().skip(1).copied().collect());
    for (i, label) in labels.into_iter().enumerate() {
        let get = |s: &Storm| [s.p50, s.p99, s.cpu_ms, s.v8_ms, s.main_ms, first_batch(s), later_batches(s)][i];
        let values: Vec<String> = configs.iter().map(|(n, _)| format!("{:>10.2}", median(figures[n].iter().map(get).collect()))).collect();
        let mut cols = Vec::new();
        for n in &others {
            let r = median(figures[n].iter().zip(base).map(|(a, b)| get(a) / get(b)).collect());
            if label.starts_with("welcome") {
                *verdict.entry(n).or_insert(true) &= r <= 1.0;
            }
            cols.push(format!("{r:>16.3}"));
        }
        println!("{label:<44} {} {}", values.join(" "), cols.join(" "));
    }
    println!("\nbudgets (paired)");
    for n in others.iter().filter(|n| **n == "foyer") {
        println!("  {} {n:<8} first storm p50 and p99 <= 1.0x baseline (new users, closing)", if verdict[n] { "PASS" } else { "MISS" });
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // --only=storm|single|fanout|steady|rooms|rooms-reused|connect|chat|inbox|cost: one scenario (for profiling).
    // --paired[=BLOCKS]: the single publishes, every gateway up at once, blocks alternating.
    // --paired-storm[=ROUNDS]: the first storm, on fresh gateways started together each round.
    let only = std::env::args().find_map(|a| a.strip_prefix("--only=").map(str::to_owned));
    if std::env::args().any(|a| a == "--micro") {
        for (alg, us) in token_microbench() {
            println!("token verify {alg:<6} (host, µs/op) {us:>8.2}");
        }
        for (alg, us, floor) in native_microbench().await {
            println!("token verify {alg:<6} (gateway, µs/op) {us:>8.2}   (the runtime's own verify alone: {floor:.2})");
        }
        print_floor(floor_microbench().await);
        return;
    }
    if let Some(rounds) =
        std::env::args().find_map(|a| a.strip_prefix("--paired-storm").map(|n| n.trim_start_matches('=').parse().unwrap_or(5)))
    {
        println!("Foyer benchmark (paired storms), same machine, same load generator, wrangler dev");
        paired_storm(rounds.max(1)).await;
        return;
    }
    if let Some(blocks) = std::env::args().find_map(|a| a.strip_prefix("--paired").map(|n| n.trim_start_matches('=').parse().unwrap_or(15)))
    {
        println!("Foyer benchmark (paired), same machine, same load generator, wrangler dev");
        paired(blocks.max(1)).await;
        return;
    }
    println!("Foyer benchmark ({}), same machine, same load generator, wrangler dev", if quick { "quick" } else { "full" });

    // Rounds alternate Foyer and the baseline, each on a fresh gateway; a figure is the
    // median over rounds (lost and duplicated events: the total), so one noisy run of a
    // shared machine does not decide a verdict.
    let rounds = std::env::args()
        .find_map(|a| a.strip_prefix("--rounds=").and_then(|n| n.parse::<usize>().ok()))
        .unwrap_or(if quick { 1 } else { 3 })
        .max(1);
    if only.as_deref() == Some("inbox") {
        // BENCH_FLOOR=1: the same scenario on the floor gateway after Foyer's.
        let floor = std::env::var_os("BENCH_FLOOR").is_some();
        for on_floor in [false, true].into_iter().filter(|f| !f || floor) {
            let (figures, verdicts) = inbox(quick, on_floor).await;
            println!("\n{}", if on_floor { "floor gateway" } else { "foyer" });
            for (name, v) in figures {
                println!("{name:<48} {v:>12.2}");
            }
            println!("\nbudgets");
            for (name, ok) in verdicts {
                println!("  {} {name}", if ok { "PASS" } else { "MISS" });
            }
        }
        return;
    }
    if only.as_deref() == Some("cost") {
        println!("\nbudgets");
        for (name, ok) in cost_report(quick).await {
            println!("  {} {name}", if ok { "PASS" } else { "MISS" });
        }
        return;
    }
    let mut runs: HashMap<&str, Vec<Figures>> = HashMap::new();
    let mut chat_figures = (0.0, 0);
    let foyer = foyer_config();
    for round in 0..rounds {
        // BENCH_FLOOR=1: a third gateway that only moves the bytes (bench/floor).
        for (name, config) in gateways(&foyer) {
            println!("round {}/{rounds}: {name}", round + 1);
            let g = Gateway::start(name, Some(config));
            let mut f = Figures::default();
            run(&g, quick, only.as_deref(), &mut f).await;
            phase("end");
            if std::env::var("BENCH_PROFILE").is_ok_and(|v| v.starts_with(&format!("{name}:"))) {
                // The profiler's window must end while the gateway still runs.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            if name == "foyer" && round == 0 && only.as_deref().is_none_or(|o| o == "chat") {
                chat_figures = chat(g.port, quick).await;
            }
            runs.entry(name).or_default().push(f);
        }
    }
    let results: HashMap<&str, Figures> = runs.iter().map(|(name, rounds)| (*name, Figures::combine(rounds))).collect();
    let (foyer, base) = (&results["foyer"], &results["baseline"]);
    let floor = results.get("floor");
    println!(
        "\n{:<48} {:>12} {:>12} {:>8}{}",
        "figure",
        "foyer",
        "baseline",
        "ratio",
        if floor.is_some() { "        floor  baseline/floor" } else { "" }
    );
    for (name, v, _) in &foyer.0 {
        let b = base.get(name);
        let f = floor.map(|f| f.get(name)).map_or(String::new(), |f| format!(" {f:>12.2} {:>8.2}", b / f));
        println!("{name:<48} {v:>12.2} {b:>12.2} {:>8.2}{f}", v / b);
    }
    println!("{:<48} {:>12.0} {:>12} {:>8}", "chat messages delivered/s (50 users)", chat_figures.0, "n/a", "");
    println!("{:<48} {:>12} {:>12} {:>8}", "chat messages lost", chat_figures.1, "n/a", "");

    let micro = token_microbench();
    for (alg, us) in &micro {
        println!("token verify {alg:<6} (host, µs/op)                  {us:>12.2}");
    }
    let native = native_microbench().await;
    for (alg, us, floor) in &native {
        println!("token verify {alg:<6} (gateway, µs/op)               {us:>12.2}   (the runtime's own verify alone: {floor:.2})");
    }
    if only.as_deref().is_none_or(|o| o == "storm") {
        print_floor(floor_microbench().await);
    }
    let wasm = root().join("build/index_bg.wasm");
    let gz = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -9 -c '{}' | wc -c", wasm.display()))
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / 1024.0;
    println!("gzipped wasm KiB                                 {gz:>12.1}");

    // The budgets of "Faster than plain JavaScript": ratios to the baseline of the same run.
    let named = |prefix: &str| foyer.0.iter().find(|(n, ..)| n.starts_with(prefix)).map(|x| x.0.clone()).unwrap_or_default();
    let rooms_events = foyer
        .0
        .iter()
        .find(|(n, ..)| n.starts_with("single publish events/s") && n.contains("new rooms"))
        .map(|x| x.0.clone())
        .unwrap_or_default();
    let (steady_p99, rooms_p99) = (named("steady p99"), named("rooms p99").replace("one user", "a new user each"));
    let ratio = |name: &str| foyer.get(name) / base.get(name);
    let verdicts = [
        ("fan-out deliveries/s >= 1.10x baseline", ratio(FANOUT) >= 1.10),
        ("steady p99 <= 0.95x baseline", ratio(&steady_p99) <= 0.95),
        ("connect p99 <= 0.95x baseline (one user)", ratio(CONNECT_P99) <= 0.95),
        ("connect p99 <= 0.95x baseline (new users)", ratio(CONNECT_DISTINCT_P99) <= 0.95),
        ("bad-token close p99 <= 0.95x baseline", ratio(BAD_TOKEN_P99) <= 0.95),
        ("rooms p99 <= 1.0x baseline (a new user each)", ratio(&rooms_p99) <= 1.0),
        ("server CPU per 10k deliveries <= baseline", ratio(FANOUT_CPU) <= 1.0),
        ("peak memory <= baseline", ratio(PEAK_MEMORY) <= 1.0),
        ("zero lost or duplicated events", foyer.get("lost events") == 0.0 && foyer.get("duplicated events") == 0.0 && chat_figures.1 == 0),
        // HS256 is the contract's algorithm (and the baseline's); EdDSA and ES256 are options.
        ("token verification <= 10 µs (HS256, host)", micro.iter().any(|(alg, us)| *alg == "HS256" && *us <= 10.0)),
        ("EdDSA and ES256 verification <= 50 µs (gateway)", native.iter().all(|(_, us, _)| *us <= 50.0)),
        ("gzipped wasm <= 300 KiB", gz <= 300.0),
        ("first storm p50 and p99 <= 1.0x baseline (new users, closing)", ratio(FIRST_STORM_P50) <= 1.0 && ratio(FIRST_STORM_P99) <= 1.0),
        (
            "single publish, 1 subscriber: events/s >= 1.10x, p50 <= 0.95x",
            ratio("single publish events/s (1 subscriber)") >= 1.10 && ratio("single publish -> delivery p50 ms (1 subscriber)") <= 0.95,
        ),
        ("single publish, 200 subscribers: deliveries/s >= 1.10x", ratio("single publish deliveries/s (200 subscribers)") >= 1.10),
        (
            "single publish, new rooms: events/s >= 1.0x, p99 <= 1.0x",
            ratio(&rooms_events) >= 1.0 && ratio(&named("single publish -> delivery p99")) <= 1.0,
        ),
        (
            "single publish: server CPU per publish <= baseline",
            foyer.0.iter().filter(|(n, ..)| n.starts_with("single publish server CPU")).all(|(n, ..)| ratio(n) <= 1.0),
        ),
    ];
    let cost_verdicts = if only.is_none() { cost_report(quick).await } else { Vec::new() };
    let (inbox_figures, inbox_verdicts) = if only.is_none() { inbox(quick, false).await } else { (Vec::new(), Vec::new()) };
    for (name, v) in &inbox_figures {
        println!("{name:<48} {v:>12.2}");
    }
    println!("\nbudgets");
    for (name, ok) in verdicts.into_iter().chain(cost_verdicts).chain(inbox_verdicts) {
        println!("  {} {name}", if ok { "PASS" } else { "MISS" });
        if name.starts_with("EdDSA") && native.iter().any(|(_, _, floor)| *floor > 50.0) {
            let floors: Vec<String> = native.iter().map(|(alg, _, floor)| format!("{alg} {floor:.1} µs")).collect();
            println!("       the runtime's own verify alone, on this machine: {}", floors.join(", "));
        }
    }
}
