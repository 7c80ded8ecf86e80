//! Revocation and the failed-auth rate, against a real `wrangler dev`.

mod support;

use foyer::devkit::unix_now;
use serde_json::json;
use support::*;

async fn revoke(gw: &Gateway, body: serde_json::Value) -> serde_json::Value {
    let r = gw.signed_post("/revoke", body.to_string().as_bytes(), PUBLISH_SECRET).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// A token issued `age` seconds ago.
fn token_issued(sub: &str, channels: &[&str], age: i64) -> String {
    let mut c = claims(sub, channels);
    c["iat"] = json!(unix_now() - age);
    hs256().mint(Some("hs"), &c)
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_user_closes_their_sockets_4401_and_refuses_older_tokens() {
    let gw = shared();
    let key = unique("rev");
    let (pay, chat) = (format!("payment:{key}"), format!("chat:{key}"));
    let old = token_issued("cust-rev", &[&pay, &chat], 5);
    let mut a = connect(gw, &format!("/ws/payment/{key}"), &old).await;
    let mut b = connect(gw, &format!("/ws/chat/{key}"), &old).await;
    let mut other = connect(gw, &format!("/ws/chat/{key}"), &token("cust-other", &[&chat])).await;
    for c in [&mut a, &mut b, &mut other] {
        assert_eq!(c.frame().await["type"], "welcome");
    }
    assert_eq!(revoke(gw, json!({"sub": "cust-rev"})).await, json!({"closed": 2}));
    assert_eq!(a.close_code().await, Some(4401));
    assert_eq!(b.close_code().await, Some(4401));
    assert!(!matches!(other.next_within(1).await, Some(Got::Closed(_))), "other users stay");

    // Tokens issued before the revocation are refused at connect, in every channel.
    let mut again = connect(gw, &format!("/ws/payment/{key}"), &old).await;
    assert_eq!(again.close_code().await, Some(4401));
    let mut elsewhere = connect(gw, &format!("/ws/orders/{key}"), &token_issued("cust-rev", &[&format!("orders:{key}")], 5)).await;
    assert_eq!(elsewhere.close_code().await, Some(4401));

    // A token issued after it works, and so does its refresh; an old token's refresh does not.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut fresh = connect(gw, &format!("/ws/payment/{key}"), &token("cust-rev", &[&pay])).await;
    assert_eq!(fresh.frame().await["type"], "welcome");
    fresh.send_json(&json!({"type": "refresh", "token": token("cust-rev", &[&pay])})).await;
    assert_eq!(fresh.frame().await["type"], "refreshed");
    fresh.send_json(&json!({"type": "refresh", "token": old})).await;
    assert_eq!(fresh.close_code().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_named_channels_leaves_the_users_other_channels_open() {
    let gw = shared();
    let key = unique("revch");
    let (pay, chat) = (format!("payment:{key}"), format!("chat:{key}"));
    let t = token_issued("cust-part", &[&pay, &chat], 5);
    let mut p = connect(gw, &format!("/ws/payment/{key}"), &t).await;
    let mut c = connect(gw, &format!("/ws/chat/{key}"), &t).await;
    p.frame().await;
    c.frame().await;
    assert_eq!(revoke(gw, json!({"sub": "cust-part", "channels": [&chat]})).await, json!({"closed": 1}));
    assert_eq!(c.close_code().await, Some(4401));
    assert_eq!(gw.publish(&json!({"id": unique("still"), "channels": [&pay], "event": "payment.pending"})).await.status, 200);
    assert_eq!(p.until("event").await.0["seq"], 1, "the payment socket is still open");
    let mut c2 = connect(gw, &format!("/ws/chat/{key}"), &t).await;
    assert_eq!(c2.close_code().await, Some(4401));
    let mut p2 = connect(gw, &format!("/ws/payment/{key}"), &t).await;
    assert_eq!(p2.frame().await["type"], "welcome");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_is_signed_like_publish_over_its_own_path() {
    let gw = shared();
    let body = json!({"sub": "anyone"}).to_string();
    let sig = foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), "/publish", body.as_bytes());
    let r = gw.post("/revoke", body.as_bytes(), &[("Content-Type", "application/json"), ("X-Foyer-Signature", &sig)]).await;
    assert_eq!(r.status, 401, "a /publish signature is not valid on /revoke");
    assert_eq!(gw.post("/revoke", body.as_bytes(), &[("Content-Type", "application/json")]).await.status, 401);
    assert_eq!(gw.signed_post("/revoke", br#"{"channels":["chat:x"]}"#, PUBLISH_SECRET).await.status, 400);
    assert_eq!(gw.get("/revoke").await.unwrap().status, 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_auth_beyond_the_per_client_rate_answers_4429_but_valid_tokens_still_connect() {
    let gw = Gateway::start("authrate", &[("AUTH_FAILURES_PER_MINUTE", "5")]);
    let mut codes = Vec::new();
    for _ in 0..7 {
        let mut c = connect(&gw, "/ws/orders/v1", "not.a.token").await;
        codes.push(c.close_code().await.unwrap_or(0));
    }
    assert_eq!(codes, [4401, 4401, 4401, 4401, 4401, 4429, 4429]);
    let mut ok = connect(&gw, "/ws/orders/v1", &token("staff", &["orders:v1"])).await;
    assert_eq!(ok.frame().await["type"], "welcome");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_racing_the_record_of_a_join_refuses_the_socket_before_any_welcome() {
    // A room records a user it does not know in the directory before the welcome; the
    // failpoint holds that record back 2 s, so this `/revoke` finds no record yet. The
    // record's answer carries the revocation: the socket is refused, never welcomed.
    let gw = Gateway::start("race", &[("TEST_FAILPOINT", "slow_join_record")]);
    let key = unique("race");
    let pay = format!("payment:{key}");
    let token = token_issued("cust-race", &[&pay], 5);
    let path = format!("/ws/payment/{key}");
    let connecting = async { connect(&gw, &path, &token).await.next().await };
    let revoking = async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        revoke(&gw, json!({"sub": "cust-race"})).await
    };
    let (first, revoked) = tokio::join!(connecting, revoking);
    assert_eq!(revoked, json!({"closed": 0}), "the record is not there yet");
    assert_eq!(first, Got::Closed(Some(4401)), "refused, and nothing (no welcome) before the close");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_in_a_room_that_forgot_its_users_renews_their_record_and_keeps_the_socket() {
    // A room renews a staying user's record in the directory at refresh when it cannot date
    // the last one: here the room was evicted (locally after about 10 s idle) and woke empty.
    // The usage meter counts object invocations: the renewal is one more in the directory.
    let gw = &Gateway::start("renewal", &[("METER", "log")]);
    let sub = unique("cust-stay");
    let key = unique("stay");
    let ch = format!("orders:{key}");
    let mut c = connect(gw, &format!("/ws/orders/{key}"), &token_issued(&sub, &[&ch], 5)).await;
    assert_eq!(c.frame().await["type"], "welcome");
    tokio::time::sleep(std::time::Duration::from_secs(13)).await;
    assert_eq!(invocations(gw), vec![1, 1], "the room's connect and the directory's record");
    c.send_json(&json!({"type": "refresh", "token": token_issued(&sub, &[&ch], 1)})).await;
    assert_eq!(c.frame().await["type"], "refreshed");
    assert_eq!(settled_invocations(gw, &[1, 2]).await, vec![1, 2], "the refresh renewed the record: one more directory call");
    assert_eq!(gw.publish(&json!({"id": unique("after"), "channels": [&ch], "event": "x"})).await.status, 200);
    assert_eq!(c.until("event").await.0["seq"], 1, "the socket stays open after the renewal");
    // The record is there: a revocation without channels finds the room.
    assert_eq!(revoke(gw, json!({"sub": sub})).await, json!({"closed": 1}));
    assert_eq!(c.close_code().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_connects_of_a_user_the_room_does_not_know_share_one_directory_record() {
    // The failpoint holds each record back 2 s: every connect below arrives while the first
    // one's record is under way. The usage meter logs one line per object invocation.
    let gw = Gateway::start("shared-record", &[("TEST_FAILPOINT", "slow_join_record"), ("METER", "log")]);
    let key = unique("tabs");
    let ch = format!("orders:{key}");
    let path = format!("/ws/orders/{key}");
    let t = token_issued("staff-tabs", &[&ch], 5);
    let mut tabs = futures_util::future::join_all((0..6).map(|_| connect(&gw, &path, &t))).await;
    for c in &mut tabs {
        assert_eq!(c.frame().await["type"], "welcome");
    }
    // Invocations per object: the room took six connects, the directory one record.
    assert_eq!(invocations(&gw), vec![1, 6], "one directory record for six concurrent connects");

    // And the shared record keeps revocation whole: all six close, the old token is refused.
    assert_eq!(revoke(&gw, json!({"sub": "staff-tabs"})).await, json!({"closed": 6}));
    for c in &mut tabs {
        assert_eq!(c.close_code().await, Some(4401));
    }
    let mut again = connect(&gw, &path, &t).await;
    assert_eq!(again.close_code().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn tabs_welcomed_together_keep_the_alarm_at_the_earliest_expiry() {
    // Six tabs of one user the room does not know share one directory record (held 2 s by
    // the failpoint), so they resume together and each sets the room's alarm for its token.
    // The first tab's token expires in 5 s, the others' in a minute: the alarm must stay at
    // the first, which closes 4401 on time. (The alarm used to end at whichever tab wrote
    // last: a minute.)
    let gw = Gateway::start("tabs-expiry", &[("TEST_FAILPOINT", "slow_join_record")]);
    let key = unique("tabexp");
    let ch = format!("orders:{key}");
    let path = format!("/ws/orders/{key}");
    let sub = unique("staff-tabs");
    let (short, long) = (token_expiring_in(&sub, &ch, 5), token_expiring_in(&sub, &ch, 60));
    let first = connect(&gw, &path, &short);
    let rest = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        futures_util::future::join_all((0..5).map(|_| connect(&gw, &path, &long))).await
    };
    let (mut first, mut rest) = futures_util::future::join(first, rest).await;
    for c in std::iter::once(&mut first).chain(rest.iter_mut()) {
        assert_eq!(c.frame().await["type"], "welcome");
    }
    let code = first.close_code_within(20).await.expect("the 5 s token's socket closed within 20 s");
    assert_eq!(code, Some(4401));
    // The others' tokens are still good: open.
    assert_eq!(rest[0].next_within(1).await, None, "a live token's socket stays open");
}

/// `n` users unique to this run.
fn users(prefix: &str, n: usize) -> Vec<String> {
    let base = unique(prefix);
    (0..n).map(|i| format!("{base}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_updates_the_shards_revocations_in_memory_so_the_next_record_reads_no_table() {
    // A shard used to drop its cached revocations on every `/revoke` and reload the whole
    // table at its next record. The usage meter logs the rows each invocation read.
    let gw = Gateway::start("revoked-cache", &[("METER", "log")]);
    let users = users("gone", 13);
    let revokes = users[..12].iter().map(|user| revoke(&gw, json!({"sub": user})));
    for answer in futures_util::future::join_all(revokes).await {
        assert_eq!(answer, json!({"closed": 0}));
    }
    let key = unique("cache");
    let ch = format!("payment:{key}");
    let mut c = connect(&gw, &format!("/ws/payment/{key}"), &token_issued(&users[12], &[&ch], 5)).await;
    assert_eq!(c.frame().await["type"], "welcome");
    // The shard's invocations: 12 revokes, then the record.
    let per_object = settled_lines(&gw, |per_object| per_object.values().any(|lines| lines.len() == 13)).await;
    let shard = per_object.values().find(|lines| lines.len() == 13).expect("the shard's 13 invocations");
    let record = &shard[12];
    assert!(record["rows_read"].as_u64().is_some_and(|n| n < 12), "the record reloaded the revocations: {record}");
}

/// Meter lines by object.
type PerObject = std::collections::HashMap<String, Vec<serde_json::Value>>;

/// The usage meter's line for each object invocation so far, by object, in order.
fn invocation_lines(gw: &Gateway) -> PerObject {
    let mut per_object = PerObject::new();
    for line in gw.log().lines().filter_map(|l| l.split_once("foyer-meter ").map(|x| x.1)) {
        let line: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        if line["what"] == "object" {
            per_object.entry(line["object"].as_str().unwrap().to_owned()).or_default().push(line);
        }
    }
    per_object
}

/// [`invocation_lines`] once `done` holds of them, or after 5 s: a line reaches the log a
/// moment after its invocation answered (here, 16 shards' at once).
async fn settled_lines(gw: &Gateway, done: impl Fn(&PerObject) -> bool) -> PerObject {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut per_object = invocation_lines(gw);
    while !done(&per_object) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        per_object = invocation_lines(gw);
    }
    per_object
}

/// [`invocations`] once they read `want`, or after 5 s.
async fn settled_invocations(gw: &Gateway, want: &[usize]) -> Vec<usize> {
    counts(&settled_lines(gw, |per_object| counts(per_object) == want).await)
}

/// Invocations per object so far, fewest first.
fn invocations(gw: &Gateway) -> Vec<usize> {
    counts(&invocation_lines(gw))
}

fn counts(per_object: &PerObject) -> Vec<usize> {
    let mut counts: Vec<usize> = per_object.values().map(|lines| lines.len()).collect();
    counts.sort();
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_holding_a_lease_welcomes_new_users_without_asking_and_still_refuses_revoked_ones() {
    let gw = Gateway::start("lease", &[("METER", "log")]);
    let key = unique("venue");
    let ch = format!("orders:{key}");
    let path = format!("/ws/orders/{key}");
    let users = users("guest", 5);
    let mut sockets = Vec::new();
    for user in &users[..4] {
        let mut c = connect(&gw, &path, &token_issued(user, &[&ch], 5)).await;
        assert_eq!(c.frame().await["type"], "welcome");
        sockets.push(c);
    }
    // The first two users were recorded in the room's shard, the third with a lease on it;
    // the fourth was welcomed under the lease: no directory call for it.
    assert_eq!(invocations(&gw), vec![3, 4], "three directory calls for four welcomes");

    // A revocation of a user the room has never seen reaches it at once (every shard takes
    // it, and the room's pushes it to its leaseholders): that user is refused under the
    // lease, not welcomed.
    let absent = &users[4];
    assert_eq!(revoke(&gw, json!({"sub": absent})).await, json!({"closed": 0}));
    let mut refused = connect(&gw, &path, &token_issued(absent, &[&ch], 5)).await;
    assert_eq!(refused.next().await, Got::Closed(Some(4401)), "refused, and nothing (no welcome) before the close");
    // And the user welcomed under the lease, never recorded, is reached.
    assert_eq!(revoke(&gw, json!({"sub": users[3]})).await, json!({"closed": 1}));
    assert_eq!(sockets[3].close_code().await, Some(4401));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_welcomed_under_a_lease_is_reached_after_it_ends_and_recorded_at_their_first_refresh() {
    // Leases last 2 s here (`short_lease`): long after, the shard still pushes to the room
    // for the life of a token welcomed under it, and the first refresh records the user.
    let gw = Gateway::start("lease-ends", &[("TEST_FAILPOINT", "short_lease"), ("METER", "log")]);
    let key = unique("venue");
    let ch = format!("orders:{key}");
    let path = format!("/ws/orders/{key}");
    let users = users("guest", 5);
    let mut sockets = Vec::new();
    for user in &users {
        let mut c = connect(&gw, &path, &token_issued(user, &[&ch], 5)).await;
        assert_eq!(c.frame().await["type"], "welcome");
        sockets.push(c);
    }
    assert_eq!(invocations(&gw), vec![3, 5], "the last two were welcomed under the lease, never asked about");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(revoke(&gw, json!({"sub": users[4]})).await, json!({"closed": 1}), "the lease ended, its pushes did not");
    assert_eq!(sockets[4].close_code().await, Some(4401));
    // The other one refreshes: recorded (one more directory call) before `refreshed`.
    sockets[3].send_json(&json!({"type": "refresh", "token": token_issued(&users[3], &[&ch], 1)})).await;
    assert_eq!(sockets[3].frame().await["type"], "refreshed");
    // The room's shard: three records, the `/revoke`, the refresh's record; the room: five
    // connects and one push; the 15 other shards: the `/revoke` (it goes to every shard).
    let want = [vec![1; 15], vec![5, 6]].concat();
    assert_eq!(settled_invocations(&gw, &want).await, want, "the refresh made a record");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_whose_push_fails_answers_503_pending_and_its_retry_completes_it() {
    // The room's first push fails (the runtime cannot be made to fail one call otherwise).
    let gw = Gateway::start("push-fails", &[("TEST_FAILPOINT", "revoke_push_fails_once")]);
    let key = unique("pf");
    let pay = format!("payment:{key}");
    let old = token_issued("cust-pf", &[&pay], 5);
    let mut a = connect(&gw, &format!("/ws/payment/{key}"), &old).await;
    assert_eq!(a.frame().await["type"], "welcome");
    // One signed request, sent twice as the kit retries it (the same `t`: the same revocation).
    let body = json!({"sub": "cust-pf"}).to_string();
    let sig = foyer::protocol::signature::sign(PUBLISH_SECRET.as_bytes(), unix_now(), "/revoke", body.as_bytes());
    let headers = [("Content-Type", "application/json"), ("X-Foyer-Signature", sig.as_str())];
    let first = gw.post("/revoke", body.as_bytes(), &headers).await;
    assert_eq!(first.status, 503, "a room did not take the push: not done, and said so");
    assert_eq!(first.json()["error"], "pending");
    assert_eq!(first.header("Retry-After"), Some("1"));
    let retry = gw.post("/revoke", body.as_bytes(), &headers).await;
    assert_eq!((retry.status, retry.json()), (200, json!({"closed": 1})));
    assert_eq!(a.close_code().await, Some(4401));
    let mut again = connect(&gw, &format!("/ws/payment/{key}"), &old).await;
    assert_eq!(again.close_code().await, Some(4401));
}
