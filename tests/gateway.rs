//! The gateway core against a real `wrangler dev`: handshake answers in PROTOCOL.md order,
//! tokens of each algorithm, ping/pong, publish errors, ordered fan-out and idempotency.

mod support;

use foyer::devkit::unix_now;
use serde_json::{json, Value};
use support::*;

fn orders(venue: &str) -> String {
    format!("/ws/orders/{venue}")
}

#[tokio::test]
async fn healthz_reports_the_build() {
    let r = shared().get("/healthz").await.unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["ok"], true);
    assert!(v["build"].as_str().is_some_and(|b| !b.is_empty()));
}

#[tokio::test]
async fn handshake_http_errors_come_in_protocol_order() {
    let gw = shared();
    let t = token("u", &["orders:v1"]);
    let offer = format!("foyer.v1, bearer.{t}");
    let status = |c: Connect| c.status();
    assert_eq!(status(connect_raw(gw, "/ws/news/v1", Some(&offer), &[]).await), Some(404), "unknown kind");
    assert_eq!(status(connect_raw(gw, "/ws/orders/v1/x", Some(&offer), &[]).await), Some(404), "extra segment");
    assert_eq!(status(connect_raw(gw, "/ws/orders/bad.key", Some(&offer), &[]).await), Some(400), "malformed key");
    assert_eq!(status(connect_raw(gw, "/ws/orders/v1?since=-1", Some(&offer), &[]).await), Some(400), "bad since");
    assert_eq!(status(connect_raw(gw, "/ws/orders/v1?since=abc", Some(&offer), &[]).await), Some(400), "bad since");
    assert_eq!(gw.get("/ws/orders/v1").await.unwrap().status, 426, "not an upgrade");
    let evil = [("Origin", "https://shop.example.evil.com")];
    assert_eq!(status(connect_raw(gw, "/ws/orders/v1", Some(&offer), &evil).await), Some(403), "origin suffix trick");
    assert_eq!(status(connect_raw(gw, "/ws/orders/v1", Some(&offer), &[("Origin", "null")]).await), Some(403));
    assert_eq!(status(connect_raw(gw, "/ws/orders/v1", Some(&format!("bearer.{t}")), &[]).await), Some(400), "no foyer.v1");
    let two = format!("foyer.v1, bearer.{t}, bearer.{t}");
    assert_eq!(status(connect_raw(gw, "/ws/orders/v1", Some(&two), &[]).await), Some(400), "two tokens");
}

#[tokio::test]
async fn allowed_and_own_origins_are_accepted() {
    let gw = shared();
    let t = token("u", &["orders:v1"]);
    let offer = format!("foyer.v1, bearer.{t}");
    let own = format!("http://127.0.0.1:{}", gw.port);
    for origin in ["https://shop.example", own.as_str()] {
        let mut c = connect_raw(gw, "/ws/orders/v1/", Some(&offer), &[("Origin", origin)]).await.client();
        assert_eq!(c.frame().await["type"], "welcome", "{origin}");
    }
}

#[tokio::test]
async fn missing_token_closes_4401_with_foyer_v1_selected() {
    let mut c = connect_raw(shared(), "/ws/orders/v1", Some("foyer.v1"), &[]).await.client();
    assert_eq!(c.protocol.as_deref(), Some("foyer.v1"));
    assert_eq!(c.close_code().await, Some(4401));
}

#[tokio::test]
async fn invalid_token_closes_4401() {
    let forged = foyer::devkit::SigningKey::hs256(99).mint(Some("hs"), &claims("u", &["orders:v1"]));
    let mut expired = claims("u", &["orders:v1"]);
    expired["iat"] = json!(unix_now() - 700);
    expired["exp"] = json!(unix_now() - 60);
    let mut wrong_iss = claims("u", &["orders:v1"]);
    wrong_iss["iss"] = json!("someone-else");
    for t in [forged, hs256().mint(Some("hs"), &expired), hs256().mint(Some("hs"), &wrong_iss), "not.a.jwt".into()] {
        let mut c = connect(shared(), "/ws/orders/v1", &t).await;
        assert_eq!(c.protocol.as_deref(), Some("foyer.v1"), "the token is never echoed back");
        assert_eq!(c.close_code().await, Some(4401));
    }
}

#[tokio::test]
async fn ungranted_channel_closes_4403() {
    let gw = shared();
    let mut c = connect(gw, "/ws/payment/o-2", &token("customer", &["payment:o-1", "chat:o-1"])).await;
    assert_eq!(c.close_code().await, Some(4403), "another order's payment room");
    let mut c = connect(gw, "/ws/orders/v1", &token("customer", &["payment:o-1"])).await;
    assert_eq!(c.close_code().await, Some(4403), "a customer on a venue's orders");
    let mut c = connect(gw, "/ws/orders/v1", &token("publisher", &[])).await;
    assert_eq!(c.close_code().await, Some(4403));
}

#[tokio::test]
async fn tokens_of_each_algorithm_are_accepted_and_welcomed() {
    let gw = shared();
    let venue = unique("alg");
    let channel = format!("orders:{venue}");
    for (key, kid) in [(hs256(), "hs"), (eddsa(), "ed"), (es256(), "es")] {
        let c = claims("staff-1", &[&channel]);
        let mut client = connect(gw, &orders(&venue), &key.mint(Some(kid), &c)).await;
        assert_eq!(client.protocol.as_deref(), Some("foyer.v1"));
        let w = client.frame().await;
        assert_eq!(w["type"], "welcome", "{kid}");
        assert_eq!(w["channel"], channel.as_str());
        assert_eq!(w["seq"], 0);
        assert_eq!(w["expires_at"], c["exp"]);
        assert!(w["conn"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(w["build"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // The right signature under the wrong kid is refused.
    let mut c = connect(gw, &orders(&venue), &eddsa().mint(Some("es"), &claims("u", &[&channel]))).await;
    assert_eq!(c.close_code().await, Some(4401));
}

#[tokio::test]
async fn wildcard_grants_admit_every_channel_of_a_kind() {
    let mut c = connect(shared(), &orders(&unique("any")), &token("admin", &["orders:*"])).await;
    assert_eq!(c.frame().await["type"], "welcome");
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let venue = unique("ping");
    let mut c = connect(shared(), &orders(&venue), &token("u", &[&format!("orders:{venue}")])).await;
    c.frame().await;
    c.send_text("ping").await;
    assert_eq!(c.next().await, Got::Text("pong".into()));
}

/// The runtime does not answer a hibernatable socket's close frame itself: the room must,
/// or the client waits and sees 1006 (a build without it failed here after 3 s).
#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let venue = unique("bye");
    let mut c = connect(shared(), &orders(&venue), &token("u", &[&format!("orders:{venue}")])).await;
    c.frame().await;
    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    c.ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(bye))).await.expect("send close");
    assert_eq!(c.close_code_within(3).await, Some(Some(1000)));
}

#[tokio::test]
async fn malformed_client_frames_get_error_frames() {
    let venue = unique("junk");
    let mut c = connect(shared(), &orders(&venue), &token("u", &[&format!("orders:{venue}")])).await;
    c.frame().await;
    c.send_text("hello").await;
    let e = c.frame().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("bad_frame")));
    c.send_json(&json!({"type": "send", "id": "1", "text": "hi"})).await;
    assert_eq!(c.frame().await["code"], "forbidden", "orders take no client messages");
}

fn event(id: &str, channels: &[&str]) -> Value {
    json!({"id": id, "channels": channels, "event": "order.created", "data": {"order": id, "items": ["tea", "cake"]}})
}

#[tokio::test]
async fn publish_refusals_come_in_protocol_order() {
    let gw = shared();
    let body = event(&unique("e"), &["orders:v1"]).to_string();
    let json_ct = ("Content-Type", "application/json");
    let sig = foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), "/publish", body.as_bytes());

    assert_eq!(gw.get("/publish").await.unwrap().status, 405);
    let r = gw.post("/publish", body.as_bytes(), &[("Content-Type", "text/plain"), ("X-Foyer-Signature", &sig)]).await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"], "unsupported_media_type");
    let huge = vec![b' '; 256 * 1024 + 1];
    assert_eq!(gw.post("/publish", &huge, &[json_ct]).await.status, 413, "size before signature");
    assert_eq!(gw.post("/publish", body.as_bytes(), &[json_ct]).await.status, 401, "no signature");
    let r = gw.signed_post("/publish", body.as_bytes(), "wrong-secret").await;
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("unauthorized")));
    let other_path = foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), "/revoke", body.as_bytes());
    assert_eq!(gw.post("/publish", body.as_bytes(), &[json_ct, ("X-Foyer-Signature", &other_path)]).await.status, 401);
    let stale = foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), unix_now() - 305, "/publish", body.as_bytes());
    assert_eq!(gw.post("/publish", body.as_bytes(), &[json_ct, ("X-Foyer-Signature", &stale)]).await.status, 401);
    let future = foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), unix_now() + 305, "/publish", body.as_bytes());
    assert_eq!(gw.post("/publish", body.as_bytes(), &[json_ct, ("X-Foyer-Signature", &future)]).await.status, 401);
    assert_eq!(gw.signed_post("/publish", b"{not json", PUBLISH_SECRET).await.status, 400, "body last");
    let no_event = json!({"id": "x", "channels": ["orders:v1"]}).to_string();
    assert_eq!(gw.signed_post("/publish", no_event.as_bytes(), PUBLISH_SECRET).await.status, 400);
    let bad_channel = event("x", &["orders:bad key"]).to_string();
    assert_eq!(gw.signed_post("/publish", bad_channel.as_bytes(), PUBLISH_SECRET).await.status, 400);
    let mut big = event("x", &["orders:v1"]);
    big["data"] = json!("x".repeat(64 * 1024));
    assert_eq!(gw.signed_post("/publish", big.to_string().as_bytes(), PUBLISH_SECRET).await.status, 413, "data over 64 KiB");
    let charset =
        gw.post("/publish", body.as_bytes(), &[("Content-Type", "application/json; charset=utf-8"), ("X-Foyer-Signature", &sig)]).await;
    assert_eq!(charset.status, 200, "content type parameters are fine");
}

#[tokio::test]
async fn the_previous_publish_secret_still_verifies_during_rotation() {
    let body = event(&unique("rot"), &["orders:rotation"]).to_string();
    assert_eq!(shared().signed_post("/publish", body.as_bytes(), OLD_PUBLISH_SECRET).await.status, 200);
}

#[tokio::test]
async fn batch_with_one_bad_message_delivers_nothing() {
    let gw = shared();
    let venue = unique("batch-bad");
    let channel = format!("orders:{venue}");
    let mut c = connect(gw, &orders(&venue), &token("u", &[&channel])).await;
    c.frame().await;
    let body = json!({"messages": [event(&unique("ok"), &[&channel]), {"id": "", "channels": [&channel], "event": "x"}]});
    assert_eq!(gw.publish(&body).await.status, 400);
    let dup_ids = json!({"messages": [event("same", &[&channel]), event("same", &[&channel])]});
    assert_eq!(gw.publish(&dup_ids).await.status, 400);
    assert!(c.next_within(2).await.is_none(), "nothing was delivered");
    // And the channel's sequence did not move.
    let r = gw.publish(&event(&unique("after"), &[&channel])).await.json();
    assert_eq!(r["results"][0]["seq"], 1);
}

#[tokio::test]
async fn a_batch_fans_out_to_many_channels_with_results_in_request_order() {
    let gw = shared();
    let venue = unique("venue");
    let orders_ch = format!("orders:{venue}");
    let pay: Vec<String> = (0..5).map(|i| format!("payment:{venue}-o{i}")).collect();
    let mut staff = connect(gw, &orders(&venue), &token("staff", &[&orders_ch])).await;
    staff.frame().await;
    let messages: Vec<Value> = pay.iter().enumerate().map(|(i, p)| event(&format!("{venue}-paid-{i}"), &[&orders_ch, p])).collect();
    let r = gw.publish(&json!({"messages": messages})).await;
    assert_eq!(r.status, 200);
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 10);
    for (i, p) in pay.iter().enumerate() {
        let (a, b) = (&results[2 * i], &results[2 * i + 1]);
        assert_eq!(a["id"], format!("{venue}-paid-{i}"));
        assert_eq!(
            (a["channel"].as_str(), a["seq"].as_u64(), a["delivered"].as_u64()),
            (Some(orders_ch.as_str()), Some(i as u64 + 1), Some(1))
        );
        assert_eq!((b["channel"].as_str(), b["seq"].as_u64(), b["delivered"].as_u64()), (Some(p.as_str()), Some(1), Some(0)));
        assert_eq!(a["duplicate"], false);
    }
    assert_eq!(staff.drain_seqs(2).await, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn republishing_an_id_is_a_duplicate_and_not_delivered_again() {
    let gw = shared();
    let venue = unique("dupe");
    let channel = format!("orders:{venue}");
    let mut c = connect(gw, &orders(&venue), &token("u", &[&channel])).await;
    c.frame().await;
    let e = event(&unique("once"), &[&channel]);
    let first = gw.publish(&e).await.json();
    assert_eq!(first["results"][0]["duplicate"], false);
    assert_eq!(first["results"][0]["delivered"], 1);
    let again = gw.publish(&e).await.json();
    assert_eq!(again["results"][0], json!({"id": e["id"], "channel": channel, "seq": 1, "delivered": 0, "duplicate": true}));
    assert_eq!(c.drain_seqs(2).await, [1]);
}

#[tokio::test]
async fn fan_out_of_200_events_to_50_sockets_keeps_exact_order() {
    let gw = shared();
    let venue = unique("fanout");
    let channel = format!("orders:{venue}");
    let mut clients = Vec::new();
    for n in 0..50 {
        // Fifty staff members (one user may hold only a few sockets per channel).
        let mut c = connect(gw, &orders(&venue), &token(&format!("staff-{n}"), &[&channel])).await;
        assert_eq!(c.frame().await["type"], "welcome");
        clients.push(c);
    }
    // Concurrent publishers: order is the order of arrival at the channel's object.
    let mut publishers = Vec::new();
    for p in 0..4 {
        let (port, channel) = (gw.port, channel.clone());
        publishers.push(tokio::spawn(async move {
            let mut delivered = Vec::new();
            for i in 0..50 {
                let body = json!({"messages": [event(&format!("p{p}-{i}"), &[&channel])]}).to_string();
                let sig = foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), "/publish", body.as_bytes());
                let r =
                    http(port, "POST", "/publish", &[("Content-Type", "application/json"), ("X-Foyer-Signature", &sig)], body.as_bytes())
                        .await
                        .expect("publish");
                assert_eq!(r.status, 200);
                delivered.push(r.json()["results"][0]["delivered"].as_u64().unwrap());
            }
            delivered
        }));
    }
    for p in publishers {
        assert!(p.await.unwrap().iter().all(|d| *d == 50), "every publish reached all 50 sockets");
    }
    let expected: Vec<u64> = (1..=200).collect();
    let received = futures_util::future::join_all(clients.iter_mut().map(|c| c.collect_seqs(200, 1))).await;
    for seqs in received {
        assert_eq!(seqs, expected);
    }
}
