//! What an operator reads (docs/operations.md) against a real `wrangler dev`: one JSON log
//! line per thing that happened, with its fixed `event` name and fields, never a secret or a
//! token; `scripts/foyer stats` fed that log; and the Worker with and without the Analytics
//! Engine binding.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const WEBHOOK_SECRET: &str = "ops-test-webhook-secret-4b1d";
const CHAT_TEXT: &str = "my card number is 4242";

/// The gateway's JSON log lines: wrangler dev prints each `console.log` line as is, and
/// warnings and errors framed (a prefix, terminal colours): the object is from the first
/// `{` to the last `}`.
fn lines(gw: &Gateway) -> Vec<Value> {
    gw.log()
        .lines()
        .filter_map(|l| Some(&l[l.find('{')?..=l.rfind('}')?]))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .filter(|v| v["event"].is_string())
        .collect()
}

fn find<'a>(lines: &'a [Value], event: &str, matches: impl Fn(&Value) -> bool) -> &'a Value {
    lines.iter().find(|l| l["event"] == event && matches(l)).unwrap_or_else(|| panic!("no {event} line that matches in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_thing_that_happened_is_one_json_line_with_its_fields_and_no_secret() {
    // A webhook to a port nothing listens on: its attempts fail and are retried.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hook = format!("http://127.0.0.1:{dead}/hooks/chat");
    // Debug: the per-socket lines (welcome, close, delivery) too.
    let gw = Gateway::start("ops", &[("CHAT_WEBHOOK_URL", &hook), ("CHAT_WEBHOOK_SECRET", WEBHOOK_SECRET), ("LOG_LEVEL", "debug")]);
    let venue = unique("venue");
    let orders = format!("orders:{venue}");
    let chat = format!("chat:{}", unique("o"));
    let mut used_tokens = Vec::new();

    // Connects of each outcome: a welcome, a bad token (4401), another channel (4403), a bad path (404).
    let staff = token("staff-1", &[&orders]);
    used_tokens.push(staff.clone());
    let mut live = connect(&gw, &format!("/ws/orders/{venue}"), &staff).await;
    assert_eq!(live.frame().await["type"], "welcome");
    let forged = hs256().mint(Some("hs"), &json!({"sub": "x"}));
    used_tokens.push(forged.clone());
    assert_eq!(connect(&gw, &format!("/ws/orders/{venue}"), &forged).await.close_code().await, Some(4401));
    let elsewhere = token("staff-2", &["orders:elsewhere"]);
    used_tokens.push(elsewhere.clone());
    assert_eq!(connect(&gw, &format!("/ws/orders/{venue}"), &elsewhere).await.close_code().await, Some(4403));
    assert_eq!(connect_raw(&gw, "/ws/news/x", Some("foyer.v1"), &[]).await.status(), Some(404));

    // A publish, a chat message (its webhook call fails), a revoke, a socket closed.
    let r = gw.publish(&json!({"id": "ops-1", "channels": [orders], "event": "order.created", "data": {"order": "o-1"}})).await;
    assert_eq!(r.status, 200);
    live.until("event").await;
    let mut c = claims("cust-ann", &[&chat]);
    c["publish"] = json!([chat]);
    let customer = hs256().mint(Some("hs"), &c);
    used_tokens.push(customer.clone());
    let key = chat.trim_start_matches("chat:").to_owned();
    let mut ann = connect(&gw, &format!("/ws/chat/{key}"), &customer).await;
    ann.until("welcome").await;
    ann.send_json(&json!({"type": "send", "id": "m1", "text": CHAT_TEXT})).await;
    ann.until("event").await;
    let r = gw.signed_post("/revoke", json!({"sub": "cust-ann"}).to_string().as_bytes(), PUBLISH_SECRET).await;
    assert_eq!(r.status, 200);
    assert_eq!(ann.close_code().await, Some(4401));
    live.close().await;

    // The webhook's first attempt (at once) and its retry (1 s later) are logged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !lines(&gw).iter().any(|l| l["event"] == "webhook" && l["attempt"] == 2) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = lines(&gw);
    for l in &all {
        assert!(["debug", "info", "warn", "error"].contains(&l["level"].as_str().unwrap_or("")), "{l}");
        assert!(l["ts"].is_number(), "{l}");
    }
    let welcome = find(&all, "connect", |l| l["outcome"] == "welcome" && l["key"] == venue.as_str());
    assert_eq!(
        (welcome["kind"].as_str(), welcome["code"].as_u64(), welcome["channel"].as_str()),
        (Some("orders"), Some(101), Some(orders.as_str()))
    );
    assert!(welcome["ms"].is_number());
    for (code, reason) in [(4401, "bad_token"), (4403, "not_granted")] {
        let refused = find(&all, "connect", |l| l["code"] == code && l["key"] == venue.as_str());
        assert_eq!(
            (refused["outcome"].as_str(), refused["reason"].as_str(), refused["level"].as_str()),
            (Some("refused"), Some(reason), Some("warn"))
        );
    }
    find(&all, "connect", |l| l["code"] == 404 && l["reason"] == "not_found");
    let publish = find(&all, "publish", |l| l["status"] == 200);
    assert_eq!((publish["messages"].as_u64(), publish["channels"].as_u64(), publish["delivered"].as_u64()), (Some(1), Some(1), Some(1)));
    assert_eq!(publish["duplicates"], 0);
    let attempt = find(&all, "webhook", |l| l["attempt"] == 1);
    assert_eq!(
        (
            attempt["channel"].as_str(),
            attempt["id"].as_str(),
            attempt["status"].as_u64(),
            attempt["outcome"].as_str(),
            attempt["level"].as_str()
        ),
        (Some(chat.as_str()), Some("cust-ann/m1"), Some(0), Some("retry"), Some("warn")),
        "a lost WhatsApp message can be traced by its channel and id"
    );
    let revoke = find(&all, "revoke", |l| l["status"] == 200);
    assert_eq!((revoke["scope"].as_str(), revoke["closed"].as_u64()), (Some("all"), Some(1)));
    let closed = find(&all, "closed", |l| l["channel"] == chat.as_str());
    assert_eq!(closed["code"], 4401);
    assert!(closed["secs"].is_number());
    find(&all, "closed", |l| l["key"] == venue.as_str());

    // Never a token, a secret, a signature, a query string or chat text, in the whole log.
    let log = gw.log();
    let hs_key = hs256().jwk(Some("hs"))["k"].as_str().unwrap().to_owned();
    for secret in [PUBLISH_SECRET, OLD_PUBLISH_SECRET, WEBHOOK_SECRET, CHAT_TEXT, hs_key.as_str()]
        .into_iter()
        .chain(used_tokens.iter().map(String::as_str))
    {
        assert!(!log.contains(secret), "the log holds a secret or a token: {}...", &secret[..secret.len().min(12)]);
    }
    assert!(!log.contains("v1="), "no signature in the log");

    // scripts/foyer stats, fed this log, counts what happened per venue.
    let out =
        Command::new(repo_root().join("scripts/foyer")).args(["stats", "--once"]).arg(gw.log_path()).output().expect("scripts/foyer stats");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let row = text.lines().find(|l| l.starts_with(&venue)).unwrap_or_else(|| panic!("no row for the venue in:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "-", "no socket left open: {row}");
    assert_eq!(cells[2], "3", "three connects to the venue's channel: {row}");
    assert!(cells[3].contains("4401:1") && cells[3].contains("4403:1"), "{row}");
    assert_eq!((cells[4], cells[5]), ("1", "1"), "one event published to the venue, delivered to one socket: {row}");
    let chats = text.lines().find(|l| l.starts_with("(chat)")).unwrap_or_else(|| panic!("no chat row in:\n{text}"));
    // Every failed attempt the log held when the stats read it: at least the two awaited
    // above, and a third when the machine is slow enough for its retry (2 s later) to land.
    let failures: usize = chats.split_whitespace().nth(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    let logged = lines(&gw).iter().filter(|l| l["event"] == "webhook" && l["outcome"] != "delivered").count();
    assert!((2..=logged).contains(&failures), "webhook failures: {chats} (lines of failed attempts: {logged})");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_runs_with_the_metrics_binding_configured() {
    let gw = Gateway::start_with_config("metrics", &[], |toml| {
        toml.replace("# [[analytics_engine_datasets]]", "[[analytics_engine_datasets]]")
            .replace("# binding = \"METRICS\"", "binding = \"METRICS\"")
            .replace("# dataset = \"foyer\"", "dataset = \"foyer\"")
    });
    let config = std::fs::read_to_string(gw.config.as_ref().unwrap()).unwrap();
    assert!(config.contains("\n[[analytics_engine_datasets]]\nbinding = \"METRICS\""), "the binding is configured");
    let venue = unique("venue");
    let mut live = connect(&gw, &format!("/ws/orders/{venue}"), &token("staff-1", &[&format!("orders:{venue}")])).await;
    assert_eq!(live.frame().await["type"], "welcome");
    let r = gw.publish(&json!({"id": "m-1", "channels": [format!("orders:{venue}")], "event": "x"})).await;
    assert_eq!((r.status, r.json()["results"][0]["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(live.until("event").await.0["id"], "m-1");
    assert_eq!(connect(&gw, &format!("/ws/orders/{venue}"), "bad.token.here").await.close_code().await, Some(4401));
    // The log reaches the file a moment after the close reaches the client.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !lines(&gw).iter().any(|l| l["event"] == "connect" && l["code"] == 4401) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = lines(&gw);
    let errors: Vec<&Value> = all.iter().filter(|l| l["level"] == "error").collect();
    assert!(errors.is_empty(), "{errors:?}");
    // At the default level (info) a welcome and an accepted publish are not logged, a refusal is.
    assert!(!all.iter().any(|l| l["event"] == "connect" && l["outcome"] == "welcome"), "{all:?}");
    assert!(all.iter().any(|l| l["event"] == "connect" && l["code"] == 4401));
    assert!(!all.iter().any(|l| l["event"] == "publish"), "an accepted publish is a debug line");

    // A flood of bad tokens at one venue is a line or two, not a line each: the first at once,
    // the rest of its second summed into one line (`count`), written as the next request
    // arrives. Every refusal is counted once, and `scripts/foyer stats` counts them all.
    let flooded = unique("flooded");
    let path = format!("/ws/orders/{flooded}");
    let refusals = futures_util::future::join_all((0..30).map(|_| async {
        let mut socket = connect(&gw, &path, "bad.token.here").await;
        socket.close_code().await
    }))
    .await;
    assert!(refusals.iter().all(|code| *code == Some(4401)), "{refusals:?}");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let healthz = gw.get("/healthz").await.map(|r| r.status);
    assert_eq!(healthz, Ok(200), "a request after the second: the summed line is written then");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refusal_lines =
        || -> Vec<Value> { lines(&gw).into_iter().filter(|l| l["event"] == "connect" && l["key"] == flooded.as_str()).collect() };
    while refusal_lines().iter().map(|l| l["count"].as_u64().unwrap_or(0)).sum::<u64>() < 30 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let flood = refusal_lines();
    assert_eq!(flood.iter().map(|l| l["count"].as_u64().unwrap_or(0)).sum::<u64>(), 30, "{flood:#?}");
    assert!(flood.len() <= 4, "30 refusals in a second or so: {} lines {flood:#?}", flood.len());
    assert!(flood
        .iter()
        .all(|l| (l["code"].as_u64(), l["reason"].as_str(), l["level"].as_str()) == (Some(4401), Some("bad_token"), Some("warn"))));
    let out =
        Command::new(repo_root().join("scripts/foyer")).args(["stats", "--once"]).arg(gw.log_path()).output().expect("scripts/foyer stats");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with(&flooded)).unwrap_or_else(|| panic!("no row for the venue in:\n{text}"));
    assert!(row.contains("4401:30"), "{row}");
}
