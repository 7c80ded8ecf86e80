//! Inboxes (PROTOCOL.md "Inboxes", v1.2) against a real `wrangler dev`: `POST /links` and
//! its answers, forwarding with `source` in order and exactly once, and staff answering a
//! chat over the inbox socket.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A staff token: follows `inbox`, may answer the chats in `publish`.
fn staff_token(sub: &str, inbox: &str, publish: &[&str]) -> String {
    let mut c = claims(sub, &[inbox]);
    c["publish"] = json!(publish);
    hs256().mint(Some("hs"), &c)
}

/// A customer's chat token: subscribe and post in `chat`.
fn customer_token(sub: &str, chat: &str) -> String {
    let mut c = claims(sub, &[chat]);
    c["publish"] = json!([chat]);
    c["role"] = json!("customer");
    hs256().mint(Some("hs"), &c)
}

async fn links(gw: &Gateway, entries: Value) -> HttpResponse {
    gw.signed_post("/links", json!({ "links": entries }).to_string().as_bytes(), PUBLISH_SECRET).await
}

async fn link(gw: &Gateway, channel: &str, inbox: &str) {
    let r = links(gw, json!([{"channel": channel, "inbox": inbox}])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["results"][0]["linked"], true, "{}", String::from_utf8_lossy(&r.body));
}

async fn publish(gw: &Gateway, id: &str, channels: &[&str]) {
    let r = gw.publish(&json!({"id": id, "channels": channels, "event": "order.updated", "data": {"n": id}})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Opens a socket and reads past its welcome (and replay, if any within a moment).
async fn follow(gw: &Gateway, path: &str, token: &str) -> Client {
    let mut c = connect(gw, path, token).await;
    assert_eq!(c.frame().await["type"], "welcome");
    c
}

/// Events received until `quiet` seconds pass without a frame.
async fn events(c: &mut Client, quiet: u64) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(Got::Frame(f)) = c.next_within(quiet).await {
        if f["type"] == "event" {
            out.push(f);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn links_are_checked_like_publish_and_a_bad_body_changes_nothing() {
    let gw = shared();
    let (venue, order) = (unique("venue"), unique("o"));
    let (inbox, chat) = (format!("inbox:{venue}"), format!("chat:{order}"));
    let good = json!({"links": [{"channel": chat, "inbox": inbox}]}).to_string();
    // Method, content type, size, signature: the order and answers of /publish.
    assert_eq!(http(gw.port, "GET", "/links", &[], b"").await.unwrap().status, 405);
    assert_eq!(gw.post("/links", good.as_bytes(), &[("Content-Type", "text/plain")]).await.status, 415);
    let big = format!(r#"{{"links": [], "pad": "{}"}}"#, "x".repeat(300 * 1024));
    assert_eq!(gw.signed_post("/links", big.as_bytes(), PUBLISH_SECRET).await.status, 413);
    assert_eq!(gw.post("/links", good.as_bytes(), &[("Content-Type", "application/json")]).await.status, 401);
    assert_eq!(gw.signed_post("/links", good.as_bytes(), "wrong secret").await.status, 401);
    let sig_for_publish =
        foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), foyer::devkit::unix_now(), "/publish", good.as_bytes());
    let r = gw.post("/links", good.as_bytes(), &[("Content-Type", "application/json"), ("X-Foyer-Signature", &sig_for_publish)]).await;
    assert_eq!(r.status, 401, "a /publish signature is not valid for /links");
    // Bodies: every bad one is a 400, even beside good entries, and links nothing.
    let ok = json!({"channel": chat, "inbox": inbox});
    for bad in [
        json!([]),
        json!([ok, {"channel": format!("inbox:{venue}-2"), "inbox": inbox}]),
        json!([ok, {"channel": chat, "inbox": format!("orders:{venue}")}]),
        json!([ok, {"channel": "chat:bad key", "inbox": inbox}]),
        json!([ok, {"channel": chat}]),
        json!([ok, {"channel": chat, "inbox": inbox, "remove": "yes"}]),
        json!((0..101).map(|_| ok.clone()).collect::<Vec<_>>()),
        json!({"channel": chat, "inbox": inbox}),
    ] {
        let r = links(gw, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"], "bad_request");
    }
    let mut staff = follow(gw, &format!("/ws/inbox/{venue}"), &staff_token("staff-1", &inbox, &[])).await;
    publish(gw, &unique("e"), &[&chat]).await;
    assert!(events(&mut staff, 2).await.is_empty(), "nothing was linked");
    assert_eq!(gw.read(&format!("/channels/inbox/{venue}")).await.json()["seq"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inbox_receives_what_its_channels_accept_after_the_link_with_their_source() {
    let gw = shared();
    let (venue, order) = (unique("venue"), unique("o"));
    let (inbox, chat, orders) = (format!("inbox:{venue}"), format!("chat:{order}"), format!("orders:{venue}"));
    publish(gw, "before-the-link", &[&orders]).await;
    let r =
        links(gw, json!([{"channel": chat, "inbox": inbox}, {"channel": orders, "inbox": inbox}, {"channel": chat, "inbox": inbox}])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"results": [
            {"channel": chat, "inbox": inbox, "linked": true},
            {"channel": orders, "inbox": inbox, "linked": true},
            {"channel": chat, "inbox": inbox, "linked": true},
        ]}),
        "linking twice is one link"
    );
    let mut staff = follow(gw, &format!("/ws/inbox/{venue}"), &staff_token("staff-1", &inbox, &[])).await;
    let mut customer = follow(gw, &format!("/ws/chat/{order}"), &customer_token("cust-ann", &chat)).await;
    publish(gw, "order-1", &[&orders, &chat]).await;
    customer.send_json(&json!({"type": "send", "id": "m1", "text": "Extra ice, please"})).await;
    let got = events(&mut staff, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let sources: Vec<(String, u64)> =
        got.iter().map(|e| (e["source"]["channel"].as_str().unwrap().to_owned(), e["source"]["seq"].as_u64().unwrap())).collect();
    // One publish naming two linked channels gives the inbox two events with that id.
    assert_eq!(got.iter().filter(|e| e["id"] == "order-1").count(), 2);
    assert!(sources.contains(&(orders.clone(), 2)), "the orders channel's seq 2 (seq 1 came before the link): {sources:?}");
    assert!(sources.contains(&(chat.clone(), 1)) && sources.contains(&(chat.clone(), 2)), "{sources:?}");
    assert_eq!(got.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3], "the inbox's own seq");
    assert!(got.iter().all(|e| e["channel"] == inbox.as_str()));
    let message = got.iter().find(|e| e["event"] == "chat.message").expect("the chat message");
    assert_eq!(message["id"], "cust-ann/m1");
    assert_eq!(message["data"]["text"], "Extra ice, please");
    assert_eq!(message["data"]["author"]["sub"], "cust-ann");
    // Same id, event, data and ts as on the source.
    let (on_chat, _) = customer.until("event").await;
    let copy = got.iter().find(|e| e["source"]["channel"] == chat.as_str() && e["source"]["seq"] == on_chat["seq"]).unwrap();
    for field in ["id", "event", "data", "ts"] {
        assert_eq!(copy[field], on_chat[field], "{field}");
    }
    // History and replay carry the source; the inbox replays its last 50 without since.
    let history = gw.read(&format!("/channels/inbox/{venue}/history")).await.json();
    assert_eq!(history["events"].as_array().unwrap().len(), 3);
    assert!(history["events"].as_array().unwrap().iter().all(|e| e["source"]["channel"].is_string()));
    let mut again = connect(gw, &format!("/ws/inbox/{venue}?since=1"), &staff_token("staff-2", &inbox, &[])).await;
    assert_eq!(again.frame().await["type"], "welcome");
    let replayed = events(&mut again, 2).await;
    assert_eq!(replayed.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert!(replayed.iter().all(|e| e["source"].is_object()));
    let mut fresh = follow(gw, &format!("/ws/inbox/{venue}"), &staff_token("staff-3", &inbox, &[])).await;
    assert_eq!(events(&mut fresh, 2).await.len(), 3);
    // A reader of the inbox state sees it like any channel.
    let state = gw.read(&format!("/channels/inbox/{venue}")).await.json();
    assert_eq!((state["seq"].as_u64(), state["sockets"].as_u64()), (Some(3), Some(3)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ninth_link_is_refused_and_a_removed_link_forwards_nothing_more() {
    let gw = shared();
    let order = unique("o");
    let chat = format!("chat:{order}");
    let inboxes: Vec<String> = (0..9).map(|i| format!("inbox:{}", unique(&format!("v{i}")))).collect();
    let entries: Vec<Value> = inboxes.iter().map(|i| json!({"channel": chat, "inbox": i})).collect();
    let r = links(gw, json!(entries)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let results = r.json()["results"].as_array().unwrap().clone();
    assert!(results[..8].iter().all(|r| r["linked"] == true));
    assert_eq!(results[8], json!({"channel": chat, "inbox": inboxes[8], "linked": false, "error": "too_many_links"}));
    let key = |i: &str| i.trim_start_matches("inbox:").to_owned();
    let mut first = follow(gw, &format!("/ws/inbox/{}", key(&inboxes[0])), &staff_token("s", &inboxes[0], &[])).await;
    let mut ninth = follow(gw, &format!("/ws/inbox/{}", key(&inboxes[8])), &staff_token("s", &inboxes[8], &[])).await;
    publish(gw, "while-linked", &[&chat]).await;
    assert_eq!(events(&mut first, 2).await.len(), 1);
    assert!(events(&mut ninth, 1).await.is_empty(), "the refused link forwards nothing");
    let r = links(gw, json!([{"channel": chat, "inbox": inboxes[0], "remove": true}, {"channel": chat, "inbox": inboxes[8]}])).await;
    assert_eq!(
        r.json()["results"],
        json!([{"channel": chat, "inbox": inboxes[0], "linked": false}, {"channel": chat, "inbox": inboxes[8], "linked": true}])
    );
    publish(gw, "after-removal", &[&chat]).await;
    assert!(events(&mut first, 2).await.is_empty(), "removed: nothing more");
    let got = events(&mut ninth, 1).await;
    assert_eq!(got.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), ["after-removal"], "accepted after its link only");
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_reach_the_inbox_once_each_and_in_each_sources_order_under_concurrent_publishes() {
    let gw = shared();
    let venue = unique("venue");
    let inbox = format!("inbox:{venue}");
    let sources: Vec<String> = (0..3).map(|i| format!("chat:{}", unique(&format!("o{i}")))).collect();
    for s in &sources {
        link(gw, s, &inbox).await;
    }
    let mut staff = follow(gw, &format!("/ws/inbox/{venue}"), &staff_token("staff-1", &inbox, &[])).await;
    let per_source = 25;
    let mut tasks = Vec::new();
    for s in sources.clone() {
        tasks.push(tokio::spawn(async move {
            let gw = shared();
            for i in 0..per_source {
                let id = format!("{s}-{i}");
                let r = gw.publish(&json!({"id": id, "channels": [s], "event": "x", "data": i})).await;
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 3 * per_source && tokio::time::Instant::now() < deadline {
        got.extend(events(&mut staff, 3).await);
    }
    got.extend(events(&mut staff, 2).await);
    assert_eq!(got.len(), 3 * per_source, "every copy once");
    assert_eq!(got.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=75).collect::<Vec<_>>());
    let mut by_source: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &got {
        by_source.entry(e["source"]["channel"].as_str().unwrap().to_owned()).or_default().push(e["source"]["seq"].as_u64().unwrap());
    }
    for s in &sources {
        assert_eq!(by_source[s], (1..=per_source as u64).collect::<Vec<_>>(), "{s}: in its seq order, none twice");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_answer_a_chat_over_the_inbox_and_refusals_come_back_as_errors() {
    let gw = shared();
    let (venue, order, other) = (unique("venue"), unique("o"), unique("o"));
    let (inbox, chat) = (format!("inbox:{venue}"), format!("chat:{order}"));
    link(gw, &chat, &inbox).await;
    let mut staff = follow(gw, &format!("/ws/inbox/{venue}"), &staff_token("staff-sam", &inbox, &[&chat])).await;
    let mut customer = follow(gw, &format!("/ws/chat/{order}"), &customer_token("cust-ann", &chat)).await;
    staff.send_json(&json!({"type": "send", "channel": chat, "id": "r1", "text": "On its way!", "author": {"sub": "boss"}})).await;
    let (on_chat, _) = customer.until("event").await;
    assert_eq!(on_chat["event"], "chat.message");
    assert_eq!(on_chat["id"], "staff-sam/r1");
    assert_eq!(
        on_chat["data"],
        json!({"text": "On its way!", "author": {"sub": "staff-sam", "name": "staff-sam name", "role": "staff"}, "client_id": "r1"})
    );
    // Through the link, back to the inbox.
    let (back, _) = staff.until("event").await;
    assert_eq!((back["source"]["channel"].as_str(), back["id"].as_str()), (Some(chat.as_str()), Some("staff-sam/r1")));
    // The same id again: delivered once.
    staff.send_json(&json!({"type": "send", "channel": chat, "id": "r1", "text": "On its way!"})).await;
    // Refusals: a chat the token may not post to, no chat at all, the chat's own text rule.
    staff.send_json(&json!({"type": "send", "channel": format!("chat:{other}"), "id": "r2", "text": "hi"})).await;
    assert_eq!(staff.until("error").await.0["code"], "forbidden");
    staff.send_json(&json!({"type": "send", "channel": format!("orders:{venue}"), "id": "r3", "text": "hi"})).await;
    assert_eq!(staff.until("error").await.0["code"], "bad_channel");
    staff.send_json(&json!({"type": "send", "id": "r4", "text": "hi"})).await;
    assert_eq!(staff.until("error").await.0["code"], "bad_channel");
    staff.send_json(&json!({"type": "send", "channel": chat, "id": "r5", "text": "x".repeat(2001)})).await;
    assert_eq!(staff.until("error").await.0["code"], "too_long");
    assert!(events(&mut customer, 2).await.is_empty(), "nothing else reached the chat");
    assert_eq!(gw.read(&format!("/channels/chat/{order}")).await.json()["seq"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_through_an_inbox_hits_the_chats_rate_then_4429() {
    let gw = shared();
    let (venue, order) = (unique("venue"), unique("o"));
    let (inbox, chat) = (format!("inbox:{venue}"), format!("chat:{order}"));
    let mut staff = follow(gw, &format!("/ws/inbox/{venue}"), &staff_token("staff-fast", &inbox, &[&chat])).await;
    // The user's rate in the chat counts their own chat socket and the inbox alike.
    let mut own = follow(gw, &format!("/ws/chat/{order}"), &customer_token("staff-fast", &chat)).await;
    for i in 0..10 {
        own.send_json(&json!({"type": "send", "id": format!("own{i}"), "text": "x"})).await;
    }
    assert_eq!(own.collect_seqs(10, 0).await.len(), 10);
    let mut codes = Vec::new();
    for i in 0..40 {
        staff.send_json(&json!({"type": "send", "channel": chat, "id": format!("f{i}"), "text": "x"})).await;
    }
    let closed = loop {
        match staff.next().await {
            Got::Frame(f) if f["type"] == "error" => codes.push(f["code"].as_str().unwrap().to_owned()),
            Got::Closed(code) => break code,
            _ => {}
        }
    };
    assert_eq!(closed, Some(4429));
    assert!(!codes.is_empty() && codes.iter().all(|c| c == "rate_limited"), "{codes:?}");
    let seq = gw.read(&format!("/channels/chat/{order}")).await.json()["seq"].as_u64().unwrap();
    assert_eq!(seq, 20, "the chat took 20 in the window, across the user's sockets");
}

#[tokio::test(flavor = "multi_thread")]
async fn links_survive_a_restart() {
    let mut gw = Gateway::start("inbox-restart", &[]);
    let (venue, order) = (unique("venue"), unique("o"));
    let (inbox, chat) = (format!("inbox:{venue}"), format!("chat:{order}"));
    link(&gw, &chat, &inbox).await;
    publish(&gw, "before", &[&chat]).await;
    gw.restart();
    let mut staff = connect(&gw, &format!("/ws/inbox/{venue}?since=0"), &staff_token("staff-1", &inbox, &[])).await;
    assert_eq!(staff.frame().await["type"], "welcome");
    publish(&gw, "after", &[&chat]).await;
    let got = events(&mut staff, 3).await;
    assert_eq!(got.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), ["before", "after"]);
    assert_eq!(got.iter().map(|e| e["source"]["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_pending_when_the_gateway_stops_arrive_after_it_restarts_once_each_and_in_order() {
    let mut gw = Gateway::start("inbox-stop", &[]);
    let venue = unique("venue");
    let inbox = format!("inbox:{venue}");
    let sources: Vec<String> = (0..2).map(|i| format!("chat:{}", unique(&format!("o{i}")))).collect();
    for s in &sources {
        link(&gw, s, &inbox).await;
    }
    // Batches to both channels back to back, then the gateway stops at once: copies are
    // still queued (or their calls under way) in the channels' objects.
    let (batches, per) = (8, 25);
    for b in 0..batches {
        let messages: Vec<Value> = (0..per)
            .map(|i| json!({"id": format!("b{b}-{i}"), "channels": sources.clone(), "event": "x", "data": {"b": b, "i": i}}))
            .collect();
        let r = gw.publish(&json!({ "messages": messages })).await;
        assert_eq!(r.status, 200);
    }
    gw.restart();
    let mut staff = connect(&gw, &format!("/ws/inbox/{venue}?since=0"), &staff_token("staff-1", &inbox, &[])).await;
    assert_eq!(staff.frame().await["type"], "welcome");
    let expect = 2 * batches * per;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < expect && tokio::time::Instant::now() < deadline {
        got.extend(events(&mut staff, 5).await);
    }
    got.extend(events(&mut staff, 2).await);
    let mut by_source: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &got {
        by_source.entry(e["source"]["channel"].as_str().unwrap().to_owned()).or_default().push(e["source"]["seq"].as_u64().unwrap());
    }
    for s in &sources {
        assert_eq!(
            by_source.get(s).cloned().unwrap_or_default(),
            (1..=(batches * per) as u64).collect::<Vec<_>>(),
            "{s}: nothing lost, nothing twice, in order"
        );
    }
    assert_eq!(got.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=expect as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_with_an_empty_channel_list_is_a_400() {
    let gw = shared();
    let r = gw.signed_post("/revoke", json!({"sub": "u", "channels": []}).to_string().as_bytes(), PUBLISH_SECRET).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "bad_request");
}
