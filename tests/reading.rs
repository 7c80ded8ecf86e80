//! Reading channels (PROTOCOL v1.1): the backend reads a channel's state and history without
//! a socket, signed over the request target; and a chat `welcome` lists who is there.

mod support;

use foyer::devkit::unix_now;
use foyer::protocol::signature;
use serde_json::{json, Value};
use support::*;

/// `GET target` signed over the target (path and query) with an empty body.
async fn gw_get(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http(gw.port, "GET", target, headers, b"").await.expect("http")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unused_channel_reads_as_empty() {
    let gw = shared();
    let key = unique("unused");
    let r = gw.read(&format!("/channels/chat/{key}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"channel": format!("chat:{key}"), "seq": 0, "sockets": 0, "users": [], "truncated": false, "next_alarm": null})
    );
    let r = gw.read(&format!("/channels/orders/{key}/history")).await;
    assert_eq!(r.json(), json!({"channel": format!("orders:{key}"), "seq": 0, "reset": false, "events": []}));
}

#[tokio::test(flavor = "multi_thread")]
async fn state_lists_seq_sockets_and_distinct_users() {
    let gw = shared();
    let key = unique("state");
    let ch = format!("chat:{key}");
    assert_eq!(gw.publish(&json!({"id": unique("e"), "channels": [&ch], "event": "x", "data": {"n": 1}})).await.status, 200);
    let mut sockets = Vec::new();
    for sub in ["zed", "ann", "zed"] {
        let mut c = connect(gw, &format!("/ws/chat/{key}"), &token(sub, &[&ch])).await;
        c.until("welcome").await;
        sockets.push(c);
    }
    let v = gw.read(&format!("/channels/chat/{key}")).await.json();
    assert_eq!((v["seq"].as_u64(), v["sockets"].as_u64(), v["truncated"].as_bool()), (Some(1), Some(3), Some(false)));
    assert_eq!(
        v["users"],
        json!([{"sub": "ann", "name": "ann name", "role": "staff", "sockets": 1}, {"sub": "zed", "name": "zed name", "role": "staff", "sockets": 2}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_pages_with_since_and_limit() {
    let gw = shared();
    let key = unique("hist");
    let ch = format!("orders:{key}");
    let messages: Vec<Value> =
        (0..5).map(|i| json!({"id": format!("{key}-{i}"), "channels": [&ch], "event": "order.created", "data": {"i": i}})).collect();
    assert_eq!(gw.publish(&json!({ "messages": messages })).await.status, 200);
    let v = gw.read(&format!("/channels/orders/{key}/history?since=1&limit=2")).await.json();
    assert_eq!((v["seq"].as_u64(), v["reset"].as_bool()), (Some(5), Some(false)));
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(
        (events[0]["id"].as_str(), events[0]["event"].as_str(), &events[0]["data"]),
        (Some(&*format!("{key}-1")), Some("order.created"), &json!({"i": 1}))
    );
    assert!(events[0]["ts"].as_i64().unwrap() > 0);
    assert_eq!(gw.read(&format!("/channels/orders/{key}/history?since=9")).await.json()["events"], json!([]));
    assert_eq!(gw.read(&format!("/channels/orders/{key}/history")).await.json()["events"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_are_refused_in_the_protocols_order() {
    let gw = shared();
    // Method first, then the signature, then the path.
    let r = gw.post("/channels/nope/x", b"", &[("Content-Type", "application/json")]).await;
    assert_eq!(r.status, 405);
    assert_eq!(gw_get(gw, "/channels/nope/x", &[]).await.status, 401, "unsigned: 401 before the path is judged");
    let other_path = signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), "/channels/chat/a", b"");
    assert_eq!(gw_get(gw, "/channels/chat/b", &[("X-Foyer-Signature", &other_path)]).await.status, 401, "bound to its path");
    let no_query = signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), "/channels/chat/a/history", b"");
    assert_eq!(gw_get(gw, "/channels/chat/a/history?since=3", &[("X-Foyer-Signature", &no_query)]).await.status, 401, "and query");
    let stale = signature::sign(PUBLISH_SECRET.as_bytes(), unix_now() - 400, "/channels/chat/a", b"");
    assert_eq!(gw_get(gw, "/channels/chat/a", &[("X-Foyer-Signature", &stale)]).await.status, 401);
    for (target, status) in [
        ("/channels/nope/x", 404),
        ("/channels/chat/bad.key", 400),
        ("/channels/chat/k/history?limit=0", 400),
        ("/channels/chat/k/history?limit=1001", 400),
        ("/channels/chat/k/history?since=-1", 400),
        ("/channels/chat/k/else", 404),
    ] {
        let r = gw.read(target).await;
        assert_eq!(r.status, status, "{target}");
        assert!(r.json()["error"].is_string(), "{target}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_welcome_lists_presence_and_count() {
    let gw = shared();
    let key = unique("presence");
    let ch = format!("chat:{key}");
    let mut bob = connect(gw, &format!("/ws/chat/{key}"), &token("bob", &[&ch])).await;
    let w = bob.frame().await;
    assert_eq!((w["count"].as_u64(), &w["presence"]), (Some(1), &json!([{"sub": "bob", "name": "bob name", "role": "staff"}])));
    let mut ann = connect(gw, &format!("/ws/chat/{key}"), &token("ann", &[&ch])).await;
    let w = ann.frame().await;
    assert_eq!(w["count"], 2);
    assert_eq!(w["presence"].as_array().unwrap().iter().map(|p| p["sub"].as_str().unwrap()).collect::<Vec<_>>(), ["ann", "bob"]);
    let orders = format!("orders:{key}");
    let w = connect(gw, &format!("/ws/orders/{key}"), &token("bob", &[&orders])).await.frame().await;
    assert!(w.get("presence").is_none() && w.get("count").is_none(), "chat only");
}
