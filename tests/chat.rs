//! Chat rooms against a real `wrangler dev`: server-stamped messages, limits, presence, and
//! the signed webhook to the backend (with a receiver that fails its first attempts).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use foyer::devkit::unix_now;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A chat token: subscribe and post in `channel`.
fn chat_token(sub: &str, name: &str, channel: &str) -> String {
    let mut c = claims(sub, &[channel]);
    c["publish"] = json!([channel]);
    c["name"] = json!(name);
    c["role"] = json!(if sub.starts_with("staff") { "staff" } else { "customer" });
    hs256().mint(Some("hs"), &c)
}

fn send(id: &str, text: &str) -> Value {
    json!({"type": "send", "id": id, "text": text})
}

/// Opens a chat socket and reads past its welcome and replay.
async fn join(gw: &Gateway, room: &str, token: &str) -> Client {
    let mut c = connect(gw, &format!("/ws/chat/{room}"), token).await;
    assert_eq!(c.frame().await["type"], "welcome");
    c
}

async fn next_of(c: &mut Client, ty: &str) -> Value {
    c.until(ty).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_chat_and_the_author_always_comes_from_the_token() {
    let gw = shared();
    let room = unique("room");
    let ch = format!("chat:{room}");
    let mut ann = join(gw, &room, &chat_token("cust-ann", "Ann", &ch)).await;
    let mut bob = join(gw, &room, &chat_token("staff-bob", "Bob", &ch)).await;
    ann.send_json(
        &json!({"type": "send", "id": "m1", "text": "Where is my tea?", "author": {"sub": "staff-bob", "name": "Bob", "role": "staff"}}),
    )
    .await;
    for c in [&mut ann, &mut bob] {
        let e = next_of(c, "event").await;
        assert_eq!((e["event"].as_str(), e["seq"].as_u64(), e["channel"].as_str()), (Some("chat.message"), Some(1), Some(ch.as_str())));
        assert_eq!(
            e["data"],
            json!({"text": "Where is my tea?", "author": {"sub": "cust-ann", "name": "Ann", "role": "customer"}, "client_id": "m1"})
        );
    }
    bob.send_json(&send("r1", "On its way!")).await;
    assert_eq!(next_of(&mut ann, "event").await["data"]["author"]["sub"], "staff-bob");
    // The backend's messages come through /publish on the same channel and look the same.
    let data = json!({"text": "Your order is ready", "author": {"sub": "whatsapp", "name": "Venue", "role": "staff"}});
    assert_eq!(gw.publish(&json!({"id": unique("wa"), "channels": [&ch], "event": "chat.message", "data": data})).await.status, 200);
    let e = next_of(&mut ann, "event").await;
    assert_eq!((e["seq"].as_u64(), e["event"].as_str(), &e["data"]), (Some(3), Some("chat.message"), &data));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_client_id_is_delivered_once() {
    let gw = shared();
    let room = unique("dedupe");
    let ch = format!("chat:{room}");
    let mut ann = join(gw, &room, &chat_token("cust-ann", "Ann", &ch)).await;
    ann.send_json(&send("same", "hello")).await;
    ann.send_json(&send("same", "hello again")).await;
    ann.send_json(&send("other", "bye")).await;
    let seqs = ann.collect_seqs(2, 1).await;
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_sends_get_error_frames() {
    let gw = shared();
    let room = unique("refused");
    let ch = format!("chat:{room}");
    let mut reader = join(gw, &room, &token("reader", &[&ch])).await;
    reader.send_json(&send("1", "hi")).await;
    assert_eq!(next_of(&mut reader, "error").await["code"], "forbidden", "no publish grant");
    let mut writer = join(gw, &room, &chat_token("cust-w", "W", &ch)).await;
    writer.send_json(&send("2", &"x".repeat(2001))).await;
    assert_eq!(next_of(&mut writer, "error").await["code"], "too_long");
    writer.send_json(&send("3", "")).await;
    assert_eq!(next_of(&mut writer, "error").await["code"], "empty");
    writer.send_json(&send("4", &"é".repeat(2000))).await;
    assert_eq!(next_of(&mut writer, "event").await["seq"], 1, "2000 characters is fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_client_is_limited_then_closed_4429_and_others_keep_chatting() {
    let gw = shared();
    let room = unique("flood");
    let ch = format!("chat:{room}");
    let mut calm = join(gw, &room, &chat_token("cust-calm", "Calm", &ch)).await;
    let mut flood = join(gw, &room, &chat_token("cust-flood", "Flood", &ch)).await;
    for i in 0..40 {
        flood.send_json(&send(&format!("f{i}"), "spam")).await;
    }
    let (mut events, mut limited, mut code) = (0, 0, None);
    while code.is_none() {
        match flood.next().await {
            Got::Frame(f) if f["type"] == "event" => events += 1,
            Got::Frame(f) if f["code"] == "rate_limited" => limited += 1,
            Got::Closed(c) => code = c,
            _ => {}
        }
    }
    assert_eq!((events, limited, code), (20, 19, Some(4429)));
    calm.send_json(&send("c1", "still here")).await;
    let (e, _) = calm.until("event").await;
    let mut last = e;
    while last["data"]["author"]["sub"] != "cust-calm" {
        last = next_of(&mut calm, "event").await;
    }
    assert_eq!(last["seq"], 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_counts_users_across_tabs_and_dropped_connections() {
    let gw = shared();
    let room = unique("presence");
    let ch = format!("chat:{room}");
    let (ann_t, bob_t) = (chat_token("cust-ann", "Ann", &ch), chat_token("staff-bob", "Bob", &ch));
    let mut bob = join(gw, &room, &bob_t).await;
    let p = next_of(&mut bob, "presence").await;
    assert_eq!((p["action"].as_str(), p["sub"].as_str(), p["count"].as_u64()), (Some("joined"), Some("staff-bob"), Some(1)));

    let tab1 = join(gw, &room, &ann_t).await;
    let p = next_of(&mut bob, "presence").await;
    assert_eq!(
        (p["action"].as_str(), p["sub"].as_str(), p["name"].as_str(), p["role"].as_str(), p["count"].as_u64()),
        (Some("joined"), Some("cust-ann"), Some("Ann"), Some("customer"), Some(2))
    );
    let tab2 = join(gw, &room, &ann_t).await;
    tab1.close().await;
    assert!(bob.next_within(2).await.is_none(), "a second tab joins and the first leaves silently");

    // The last tab drops without a close frame (the TCP connection just goes away).
    drop(tab2);
    let p = next_of(&mut bob, "presence").await;
    assert_eq!((p["action"].as_str(), p["sub"].as_str(), p["count"].as_u64()), (Some("left"), Some("cust-ann"), Some(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_beyond_the_socket_cap_is_closed_4429() {
    let gw = shared();
    let room = unique("cap");
    let ch = format!("chat:{room}");
    let t = chat_token("cust-tabs", "Tabs", &ch);
    let mut tabs = Vec::new();
    for _ in 0..8 {
        tabs.push(join(gw, &room, &t).await);
    }
    let mut ninth = connect(gw, &format!("/ws/chat/{room}"), &t).await;
    assert_eq!(ninth.close_code().await, Some(4429));
    let mut other = join(gw, &room, &chat_token("cust-other", "Other", &ch)).await;
    other.send_json(&send("x", "others are unaffected")).await;
    assert_eq!(next_of(&mut other, "event").await["seq"], 1);
}

/// A local backend that verifies the webhook signature and fails the first `fail_first`
/// attempts of every message.
async fn webhook_receiver(secret: &'static str, fail_first: usize) -> (u16, Arc<Mutex<Vec<(String, bool, u16)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Arc<Mutex<Vec<(String, bool, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                let (head, body) = loop {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..i]).to_lowercase();
                        let len: usize =
                            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                        if raw.len() >= i + 4 + len {
                            break (String::from_utf8_lossy(&raw[..i]).to_string(), raw[i + 4..i + 4 + len].to_vec());
                        }
                    }
                };
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let sig = head.lines().find_map(|l| {
                    l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("x-foyer-signature")).map(|(_, v)| v.trim().to_string())
                });
                let valid = path == "/hooks/chat"
                    && foyer::protocol::signature::verify(sig.as_deref(), &[secret.as_bytes().to_vec()], &path, &body, unix_now()).is_ok();
                let id = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["id"].as_str().map(str::to_owned)).unwrap_or_default();
                let status = {
                    let mut seen = seen.lock().unwrap();
                    let attempts = seen.iter().filter(|(i, ..)| *i == id).count();
                    let status = if attempts < fail_first { 500 } else { 200 };
                    seen.push((id, valid, status));
                    status
                };
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_messages_reach_the_backend_webhook_signed_and_retried_until_accepted() {
    const SECRET: &str = "test-webhook-secret";
    let (port, log) = webhook_receiver(SECRET, 2).await;
    let url = format!("http://127.0.0.1:{port}/hooks/chat");
    let gw = Gateway::start("webhook", &[("CHAT_WEBHOOK_URL", &url), ("CHAT_WEBHOOK_SECRET", SECRET)]);
    let room = unique("hook");
    let ch = format!("chat:{room}");
    let mut ann = join(&gw, &room, &chat_token("cust-ann", "Ann", &ch)).await;
    ann.send_json(&send("m1", "Table for two?")).await;
    ann.send_json(&send("m2", "And a window seat")).await;
    // Delivery to the room never waits for the webhook.
    assert_eq!(ann.collect_seqs(2, 0).await, [1, 2]);

    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let accepted: Vec<String> = log.lock().unwrap().iter().filter(|(_, _, s)| *s == 200).map(|(i, ..)| i.clone()).collect();
        if accepted.len() >= 2 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = log.lock().unwrap().clone();
    assert!(log.iter().all(|(_, valid, _)| *valid), "every call is signed over the webhook's path: {log:?}");
    for id in ["cust-ann/m1", "cust-ann/m2"] {
        let attempts: Vec<u16> = log.iter().filter(|(i, ..)| i == id).map(|(.., s)| *s).collect();
        assert_eq!(attempts, [500, 500, 200], "{id}: retried with the same id, accepted once");
    }
    // The messages never went to the webhook with other ids.
    assert_eq!(log.len(), 6);
}
