//! The hostile battery, end to end: a table of attempts against a real `wrangler dev`.
//!
//! Every row is data: its name, the rule it checks (PROTOCOL.md), the attempt, and the
//! answer the contract fixes. One runner plays a family's rows in order against a
//! *witness*, a legitimate socket on the targeted channel: after every attempt a probe
//! event must get the next `seq` and reach exactly the sockets the battery holds there, and
//! the witness must have seen nothing but what the attempt's answer admitted (no refused
//! socket joining, no refused event stored). At the end of a family a replay from
//! `since=0` holds exactly that history, and after a section no token, query value,
//! subprotocol value or publish body of any of its rows may appear in the gateway's log.
//!
//! The rows here are what only the shell and the runtime can break: the witness, HTTP
//! codes and the order of the publish checks, subprotocol selection, frames on live
//! sockets, the log. The exhaustive variants of the pure rules (every bit flip, every `alg`
//! casing, every mistyped claim or body field) are played against the core on the host by
//! `hostile_core.rs`, from the same lists (`hostile/`); each family of them keeps
//! representatives here ([`pick`]).
//!
//! Families run side by side; a failure names the family, the row and its rule. The shape
//! of a row and the runner are `adversarial/runner.rs`.

mod hostile;
#[path = "adversarial/runner.rs"]
mod runner;
mod support;

use foyer::devkit::{b64_json, unix_now, SigningKey};
use hostile::rule::*;
use hostile::*;
use runner::*;
use serde_json::{json, Value};
use support::*;

// ---------- forged and malformed tokens: PROTOCOL.md "Tokens" ----------

#[tokio::test]
async fn forged_and_malformed_tokens_close_4401() {
    start().await;
    let closes = |w: &Target, rule, variants| rows(rule, variants, |t| w.bearer(t), Expect::Close(4401));

    let w = Target::new("chat");
    let c = w.claims();
    let mut algorithms = closes(
        &w,
        ALG,
        pick(
            &alg_none(&c),
            &[
                r#"alg "none", kid absent: empty signature"#,
                r#"alg "NONE", typ JWT, kid hs: no signature segment"#,
                r#"alg "None", typ JWT, kid hs: signed by the HS256 key"#,
                r#"alg "nOnE", kid ed: junk signature"#,
            ],
        ),
    );
    algorithms.extend(closes(&w, ALG, pick(&alg_casings(&c), &[r#"alg "hs256""#, r#"alg "Hs256""#, r#"alg "EDDSA""#, r#"alg "es256""#])));
    algorithms.extend(closes(&w, ALG, pick(&foreign_algs(&c), &[r#"alg "HS384""#, r#"alg "HS256 ""#, "alg 256", "no alg"])));
    let algorithms = family("alg none, casings, foreign algorithms", &w, algorithms);

    let w = Target::new("chat");
    let c = w.claims();
    let mut confusion = closes(
        &w,
        ALG,
        pick(
            &hmac_keyed_with_public_keys(&c),
            &["EdDSA key's the raw public key", "EdDSA key's the PEM", "ES256 key's uncompressed SEC1 point", "ES256 key's the SPKI DER"],
        ),
    );
    confusion.extend(closes(
        &w,
        ALG,
        pick(&genuine_under_another_kid(&c), &["ES256 token under kid ed", "header says HS256/hs, EdDSA signature"]),
    ));
    let confusion = family("algorithm confusion", &w, confusion);

    let w = Target::new("chat");
    let c = w.claims();
    let mut flips = Vec::new();
    for (key, kid) in deployment_keys() {
        flips.extend(closes(&w, SIGNED, pick(&bit_flips(&key, kid, &c, 0, Bits::All), &["byte 0 bit 0"])));
        flips.extend(closes(&w, SIGNED, pick(&bit_flips(&key, kid, &c, 1, Bits::EveryNth(9, 0)), &["byte 18 bit 0"])));
        flips.extend(closes(&w, SIGNED, pick(&bit_flips(&key, kid, &c, 2, Bits::EndsAndMiddle), &["byte 0 bit 0", "bit 7"])));
    }
    flips.extend(closes(&w, SIGNED, pick(&signature_lengths(&c), &["hs: signature one byte short", "es: signature one byte long"])));
    let flips = family("bit flips", &w, flips);

    let w = Target::new("chat");
    let c = w.claims();
    let mut encoding =
        closes(&w, COMPACT, pick(&segment_counts(&c), &["two segments", "four segments", "empty signature segment", "the empty token"]));
    encoding.extend(closes(
        &w,
        COMPACT,
        pick(
            &encodings(&c),
            &[
                "signature padded properly",
                r#"payload + "=""#,
                "signature in the standard alphabet",
                "payload in the standard alphabet",
                "header with ' ' inside",
            ],
        ),
    ));
    encoding.extend(closes(&w, COMPACT, pick(&stray_trailing_bits(&c), &["hs: signature", "es: signature", "payload (pad"])));
    let encoding = family("encodings", &w, encoding);

    let w = Target::new("chat");
    let c = w.claims();
    let mut json_rows = closes(&w, STRICT_JSON, pick(&non_json_headers(&c), &[r#"header "not json""#, r#"header "[\"HS256"#]));
    json_rows.extend(closes(
        &w,
        STRICT_JSON,
        pick(&non_json_payloads(&c), &["payload not json", "payload an array", "payload with a UTF-8 BOM"]),
    ));
    // The runtime's own limits: every nesting variant, and the gateway survives them all.
    json_rows.extend(closes(&w, STRICT_JSON, deep_nesting(&c)));
    json_rows.push(case("a valid token after all of these (control)", STRICT_JSON, w.bearer(w.token()), Expect::Welcome));
    let json_rows = family("not JSON, deep nesting", &w, json_rows);

    // The 8 KiB cap, all of it: a header that large also meets the runtime's own limits.
    let w = Target::new("orders");
    let c = w.claims();
    let mut size = closes(&w, SIZE, oversize(&c));
    size.push(case("exactly 8192 bytes (control)", SIZE, w.bearer(token_of_len(&w.claims(), 8192)), Expect::Welcome));
    let size = family("the 8 KiB cap", &w, size);

    let w = Target::new("chat");
    let c = w.claims();
    let mut kids = closes(
        &w,
        KID,
        pick(
            &unknown_kids(&c),
            &[
                r#"kid "zz""#,
                r#"kid """#,
                "kid of 4000 characters",
                r#"kid "../hs""#,
                r#"kid "https://evil"#,
                r#"kid "hs' OR"#,
                "kid 1 (not a string)",
                r#"kid ["hs"] (not a string)"#,
                "no kid with three keys configured",
            ],
        ),
    );
    kids.extend(closes(
        &w,
        KEY_PARAMS,
        pick(
            &key_choosing_header_params(&c),
            &[
                "jku = an attacker's URL, signed by the real key",
                "jwk = the attacker's key, signed by the attacker",
                "jwk = the real key, signed by the real key",
                "x5u = an attacker's URL, signed by the real key",
                "x5c = a certificate, signed by the attacker",
                "crit = [exp], signed by the real key",
            ],
        ),
    ));
    let kids = family("kid and key-choosing header parameters", &w, kids);

    battery(vec![algorithms, confusion, flips, encoding, json_rows, size, kids]).await;
}

// ---------- claims: PROTOCOL.md "Tokens" ----------

#[tokio::test]
async fn claims_outside_the_rules_close_4401() {
    start().await;
    let closes = |w: &Target, rule, variants| rows(rule, variants, |t| w.bearer(t), Expect::Close(4401));
    // The leeway and lifetime boundaries to the second, minted at the attempt; one family per
    // claim so the waits for the start of a second run side by side.
    let timed = |rule, clock, expect| (rule, Offer::Timed(clock), expect);
    let boundaries = [
        (
            "exp",
            [
                ("exp 31 s ago", timed(TIME, Clock { iat: Some(-400), nbf: None, exp: -31 }, Expect::Close(4401))),
                ("exp 29 s ago", timed(TIME, Clock { iat: Some(-400), nbf: None, exp: -29 }, Expect::Welcome)),
            ],
        ),
        (
            "nbf",
            [
                ("nbf 31 s ahead", timed(TIME, Clock { iat: Some(0), nbf: Some(31), exp: 600 }, Expect::Close(4401))),
                ("nbf 29 s ahead", timed(TIME, Clock { iat: Some(0), nbf: Some(29), exp: 600 }, Expect::Welcome)),
            ],
        ),
        (
            "iat",
            [
                ("iat 31 s ahead", timed(TIME, Clock { iat: Some(31), nbf: None, exp: 600 }, Expect::Close(4401))),
                ("iat 29 s ahead", timed(TIME, Clock { iat: Some(29), nbf: None, exp: 600 }, Expect::Welcome)),
            ],
        ),
        (
            "lifetime from iat",
            [
                ("a lifetime of 901 s", timed(LIFETIME, Clock { iat: Some(-100), nbf: None, exp: 801 }, Expect::Close(4401))),
                ("a lifetime of 900 s", timed(LIFETIME, Clock { iat: Some(-100), nbf: None, exp: 800 }, Expect::Welcome)),
            ],
        ),
        (
            "lifetime from now",
            [
                ("901 s from now without iat", timed(LIFETIME, Clock { iat: None, nbf: None, exp: 901 }, Expect::Close(4401))),
                ("900 s from now without iat", timed(LIFETIME, Clock { iat: None, nbf: None, exp: 900 }, Expect::Welcome)),
            ],
        ),
    ];
    let mut families: Vec<Family> = boundaries
        .into_iter()
        .map(|(name, pair)| {
            let w = Target::new("orders");
            let cases = pair
                .into_iter()
                .map(|(label, (rule, offer, expect))| {
                    case(label, rule, Attempt::Connect { path: w.path.clone(), offer, headers: vec![] }, expect)
                })
                .collect();
            family(name, &w, cases)
        })
        .collect();

    let w = Target::new("chat");
    let c = w.claims();
    let mut types = closes(&w, TIME_TYPES, pick(&non_numeric_times(&c), &["exp: \"", "iat: [", "nbf: false", "no exp"]));
    types.extend(closes(
        &w,
        ISS,
        pick(&wrong_issuers(&c), &[r#"iss "FOYER-TEST""#, r#"iss "foyer-test ""#, r#"iss ["foyer-test"]"#, "no iss"]),
    ));
    types.extend(closes(&w, SUB, pick(&bad_subs(&c), &[r#"sub """#, "sub 42", "no sub"])));
    families.push(family("time claim types, issuer, subject", &w, types));

    let w = Target::new("orders");
    let c = w.claims();
    let mut audience = closes(&w, AUD, pick(&wrong_audiences(&c), &[r#"aud "Foyer""#, r#"aud ["Foyer","#, "aud []", "aud 1", "no aud"]));
    let mut listed = w.claims();
    listed["aud"] = json!(["other", "foyer"]);
    audience.push(case("aud [\"other\", \"foyer\"] (control)", AUD, w.bearer(hs256().mint(Some("hs"), &listed)), Expect::Welcome));
    families.push(family("audience", &w, audience));

    let w = Target::new("chat");
    let c = w.claims();
    let mut grant_types =
        closes(&w, GRANT_TYPE, pick(&mistyped_grants(&c, "channels", &w.channel), &["channels \"", "channels [1]", "\",1]"]));
    grant_types.extend(closes(&w, GRANT_TYPE, pick(&mistyped_grants(&c, "publish", &w.channel), &["publish \"", "publish {"])));
    families.push(family("grant claim types", &w, grant_types));

    battery(families).await;
}

// ---------- grants: PROTOCOL.md "Tokens" (grants), "Connecting" step 5 ----------

#[tokio::test]
async fn tokens_that_do_not_grant_the_channel_close_4403() {
    start().await;
    let forbidden = |w: &Target, rule, variants| rows(rule, variants, |g: GrantClaims| w.granted(&g), Expect::Close(4403));

    let w = Target::new("payment");
    let reps = [format!("{}x\"", w.key), w.key.to_uppercase(), format!("\"chat:{}\"", w.key), format!("payment: {}", w.key)];
    let near = family("near misses", &w, forbidden(&w, GRANT, pick(&near_miss_grants("payment", &w.key), &needles(&reps))));

    let w = Target::new("orders");
    let customer = family("a customer's grants", &w, forbidden(&w, GRANT, customer_grants(&w.key)));

    let w = Target::new("chat");
    let publish = family("a publish grant alone", &w, forbidden(&w, PUBLISH_ONLY, publish_only(&w.channel)));

    let (o, p) = (Target::new("orders"), Target::new("payment"));
    let wildcards_o = family("other kinds' wildcards on orders", &o, forbidden(&o, WILDCARD, other_kind_wildcards("orders")));
    let wildcards_p = family("other kinds' wildcards on payment", &p, forbidden(&p, WILDCARD, other_kind_wildcards("payment")));

    let w = Target::new("orders");
    let reps = [r#""orders:*x""#.to_owned(), r#""ORDERS:*""#.into(), r#"["*"]"#.into(), format!("{}*", w.key), r#""orders:%2A""#.into()];
    let malformed =
        family("malformed wildcards", &w, forbidden(&w, WILDCARD, pick(&malformed_wildcards("orders", &w.key), &needles(&reps))));

    battery(vec![near, customer, publish, wildcards_o, wildcards_p, malformed]).await;
}

// ---------- connect requests: PROTOCOL.md "Connecting" ----------

#[tokio::test]
async fn connect_requests_get_the_protocols_answers() {
    start().await;
    let connect = |path: String, offer: Offer, headers: Vec<(&'static str, String)>| Attempt::Connect { path, offer, headers };
    let mark = unique("M").replace('-', "");

    // Paths and since: the runtime parses the URL before the core sees it, so every variant.
    let w = Target::new("orders");
    let admin = token(&unique("admin"), &["orders:*"]);
    let mut paths: Vec<Case> = odd_paths("orders", &w.key)
        .into_iter()
        .map(|(path, status)| case(path.clone(), PATH, connect(path, Offer::Bearer(admin.clone()), vec![]), Expect::NoUpgrade(status)))
        .collect();
    for since in BAD_SINCE.iter().map(|s| s.to_string()).chain([format!("since{mark}")]) {
        let path = format!("{}?since={since}", w.path);
        paths.push(case(format!("since={since:?}"), SINCE, connect(path, Offer::Bearer(admin.clone()), vec![]), Expect::NoUpgrade(400)));
    }
    // Accepted with query values and an extra subprotocol the log must not hold.
    let offer = format!("foyer.v1, bearer.{}, x-sp{mark}", w.token());
    let path = format!("{}?since=0&trace=qv{mark}", w.path);
    paths.push(case(
        "since=0 with a trace value and an extra subprotocol (control)",
        SINCE,
        connect(path, Offer::Raw(offer), vec![]),
        Expect::Welcome,
    ));
    let paths = family("paths and since", &w, paths);

    // Origins: representatives of each trick, and the gateway's own origin's every near miss
    // (the shell derives it from the request URL).
    let w = Target::new("orders");
    let with_origin = |w: &Target, origin: String| connect(w.path.clone(), Offer::Bearer(w.token()), vec![("Origin", origin)]);
    let reps = [
        "suffix or prefix: https://shop.example.evil.com",
        "https://shop.example@evil.com",
        "scheme or port: http://shop.example",
        "https://shop.example:443",
        "case: https://SHOP.EXAMPLE",
        "no origin: null",
        "path: https://shop.example/",
        "list: https://shop.example, https://evil.example",
    ];
    let mut origins = rows(ORIGIN, pick(&foreign_origins(), &reps), |o| with_origin(&w, o), Expect::NoUpgrade(403));
    for (first, second) in [("https://shop.example", "https://evil.example"), ("https://evil.example", "https://shop.example")] {
        let headers = vec![
            ("Sec-WebSocket-Protocol", format!("foyer.v1, bearer.{}", w.token())),
            ("Origin", first.into()),
            ("Origin", second.into()),
        ];
        origins.push(case(
            format!("two Origin headers: {first}, then {second}"),
            ORIGIN,
            Attempt::RawUpgrade { path: w.path.clone(), headers },
            Expect::NoUpgrade(403),
        ));
    }
    origins.push(case("the allowed origin (control)", ORIGIN, with_origin(&w, "https://shop.example".into()), Expect::Welcome));
    let origins = family("origins", &w, origins);

    // Not here: the own origin with another scheme (`https://`, `HTTP://`). `wrangler dev`'s
    // proxy (4.164; workers-sdk pull request 14658) rewrites every URL in a request header that
    // names its own host and port, scheme included, to the Worker's origin, so the Worker sees
    // the exact own origin; the host table judges them.
    let w = Target::new("orders");
    let port = Gw::Default.get().port;
    let rewritten = |o: &str| ["http", "https"].iter().any(|scheme| o.eq_ignore_ascii_case(&format!("{scheme}://127.0.0.1:{port}")));
    let near_misses = own_origin_near_misses(port).into_iter().filter(|(_, o)| !rewritten(o)).collect();
    let mut own = rows(ORIGIN, near_misses, |o| with_origin(&w, o), Expect::NoUpgrade(403));
    own.push(case("the gateway's own origin (control)", ORIGIN, with_origin(&w, format!("http://127.0.0.1:{port}")), Expect::Welcome));
    let own = family("the gateway's own origin", &w, own);

    // Subprotocol offers: every variant (the runtime passes the header on).
    let w = Target::new("orders");
    let (t, other) = (w.token(), w.token());
    let raw = |o: String| connect(w.path.clone(), Offer::Raw(o), vec![]);
    let mut offers = rows(OFFER, offers_without_foyer(&t), raw, Expect::NoUpgrade(400));
    offers.extend(rows(OFFER, offers_with_two_tokens(&t, &other), raw, Expect::NoUpgrade(400)));
    for o in EMPTY_BEARERS {
        offers.push(case(format!("offer {o:?}"), SELECT, raw(o.into()), Expect::Close(4401)));
    }
    let forged = SigningKey::hs256(99).mint(Some("hs"), &w.claims());
    for (label, tok) in [("a valid token", w.token()), ("a forged token (closed 4401)", forged)] {
        for protocols in [format!("bearer.{tok}, foyer.v1"), format!("foyer.v1, bearer.{tok}")] {
            let order = if protocols.starts_with("bearer") { "bearer first" } else { "foyer.v1 first" };
            let headers = vec![("Sec-WebSocket-Protocol", protocols)];
            offers.push(case(
                format!("the raw handshake answer to {label}, {order}"),
                SELECT,
                Attempt::RawUpgrade { path: w.path.clone(), headers },
                Expect::OnlyFoyerSelected,
            ));
        }
    }
    let offers = family("subprotocol offers", &w, offers);

    // ?token= where the deployment does not allow it: ignored (so no token: 4401).
    let w = Target::new("orders");
    let t = w.token();
    let mut ignored: Vec<Case> =
        [format!("{}?token={t}", w.path), format!("{}?since=0&token={t}", w.path), format!("{}/?token={t}", w.path)]
            .into_iter()
            .map(|path| {
                case(path.replace(&t, "<valid>"), QUERY_TOKEN, connect(path, Offer::Raw("foyer.v1".into()), vec![]), Expect::Close(4401))
            })
            .collect();
    ignored.push(case(
        "a bearer token beside an ignored ?token=junk (control)",
        QUERY_TOKEN,
        connect(format!("{}?token=junk", w.path), Offer::Bearer(w.token()), vec![]),
        Expect::Welcome,
    ));
    let ignored = family("?token= not allowed", &w, ignored);

    // ?token= where it is allowed.
    let w = Target::new("orders");
    let t = w.token();
    let forged = SigningKey::hs256(99).mint(Some("hs"), &w.claims());
    let none = format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(&w.claims()));
    let q = |tok: &str| format!("{}?token={tok}", w.path);
    let foyer = || Offer::Raw("foyer.v1".into());
    let allowed = Family {
        name: "?token= allowed",
        gateway: Gw::QueryToken,
        witnesses: vec![w.clone()],
        cases: vec![
            case("?token=<valid> offering foyer.v1", QUERY_TOKEN, connect(q(&t), foyer(), vec![]), Expect::Welcome),
            case("?token=<forged>", QUERY_TOKEN, connect(q(&forged), foyer(), vec![]), Expect::Close(4401)),
            case("?token=<alg none>", QUERY_TOKEN, connect(q(&none), foyer(), vec![]), Expect::Close(4401)),
            case(
                "?token= and a bearer token together (two tokens)",
                OFFER,
                connect(q(&t), Offer::Bearer(w.token()), vec![]),
                Expect::NoUpgrade(400),
            ),
            case(
                "?token=<valid> with no subprotocol offer (a legacy client)",
                QUERY_TOKEN,
                connect(q(&w.token()), Offer::Nothing, vec![]),
                Expect::Welcome,
            ),
        ],
    };

    battery(vec![paths, origins, own, offers, ignored, allowed]).await;
}

// ---------- publish forgeries: PROTOCOL.md "Publishing" ----------

const UNAUTHORIZED: Expect = Expect::Error(401, "unauthorized");

#[tokio::test]
async fn publish_forgeries_and_malformed_bodies_change_nothing() {
    start().await;
    let body = |w: &Target| message(&unique("e"), &[&w.channel]).to_string().into_bytes();

    // Tampering: the MAC covers the body, the path and `t`.
    let w = Target::new("payment");
    let original = body(&w);
    let tampered = String::from_utf8(original.clone()).unwrap().replacen("100", "900", 1).into_bytes();
    let mut tampering = vec![
        case("one body byte changed", SIGNATURE, w.publish(Sig::Over(original.clone()), tampered), UNAUTHORIZED),
        case(
            "one byte appended to the body",
            SIGNATURE,
            w.publish(Sig::Over(original.clone()), [&original[..], b" "].concat()),
            UNAUTHORIZED,
        ),
    ];
    tampering.extend(rows(
        SIGNATURE,
        pick(&refused_signature_templates(), &["one signature digit changed", "t moved by one second", "signature one byte short"]),
        |t| w.publish(Sig::Template(t), body(&w)),
        UNAUTHORIZED,
    ));
    for path in OTHER_PATHS {
        tampering.push(case(
            format!("signed for {path:?}"),
            SIGNATURE,
            w.publish(Sig::Signed { skew: 0, secret: PUBLISH_SECRET, path }, body(&w)),
            UNAUTHORIZED,
        ));
    }
    let tampering = family("tampering", &w, tampering);

    // The clock, to the second, and `t` that is no integer.
    let w = Target::new("payment");
    let signed_at = |skew| Sig::Signed { skew, secret: PUBLISH_SECRET, path: "/publish" };
    let mut clock: Vec<Case> = [-301, 301, -3600, 3600, -unix_now()]
        .into_iter()
        .map(|skew| case(format!("t = now {skew:+}"), SKEW, w.publish(signed_at(skew), body(&w)), UNAUTHORIZED))
        .collect();
    for skew in [-299, 299] {
        clock.push(case(format!("t = now {skew:+} (control)"), SKEW, w.publish(signed_at(skew), body(&w)), Expect::Published(1)));
    }
    clock.extend(rows(
        T_INTEGER,
        pick(&non_integer_ts(unix_now()), &[".0\"", "0x", "t = \"\"", "e0\""]),
        |t| w.publish(Sig::TAsWritten(t), body(&w)),
        UNAUTHORIZED,
    ));
    let clock = family("the signature's clock", &w, clock);

    // One uniform 401, whatever is wrong; and what a rotation may send.
    let w = Target::new("orders");
    let mut uniform = vec![
        case("signature missing", SIGNATURE, w.publish(Sig::Missing, body(&w)), UNAUTHORIZED),
        case("a wrong secret", SIGNATURE, w.publish(Sig::Signed { skew: 0, secret: "wrong", path: "/publish" }, body(&w)), UNAUTHORIZED),
        case("stale", SIGNATURE, w.publish(signed_at(-1000), body(&w)), UNAUTHORIZED),
    ];
    uniform.extend(rows(
        SIGNATURE,
        pick(&refused_signature_templates(), &["garbage", "no v1: t alone", "no v1: v2 only", "no t"]),
        |t| w.publish(Sig::Template(t), body(&w)),
        UNAUTHORIZED,
    ));
    uniform.extend(rows(
        ROTATION,
        pick(
            &accepted_signature_templates(),
            &["uppercase hex", "mixed-case hex", "the previous secret", "several v1: wrong then right", "several v1 with spaces"],
        ),
        |t| w.publish(Sig::Template(t), body(&w)),
        Expect::Published(1),
    ));
    let uniform = family("one uniform 401, rotation", &w, uniform);

    // The order of the checks: method, content type, size, signature (the shell's, all of it).
    let w = Target::new("payment");
    let b = body(&w);
    let over = batch_of_len(&w.channel, 256 * 1024 + 1, &|i| unique(&format!("big{i}")));
    let mut order = vec![
        case("a body over 256 KiB, validly signed", ORDER, w.publish(valid_sig(), over.clone()), Expect::Error(413, "too_large")),
        case(
            "a body over 256 KiB, wrongly signed",
            ORDER,
            w.publish(Sig::Signed { skew: 0, secret: "wrong", path: "/publish" }, over),
            Expect::Error(413, "too_large"),
        ),
        case(
            "a body over 256 KiB, unsigned garbage",
            ORDER,
            w.publish(Sig::Missing, vec![b'x'; 256 * 1024 + 1]),
            Expect::Error(413, "too_large"),
        ),
    ];
    for ct in WRONG_CONTENT_TYPES {
        for (signed, sig) in [("valid signature", true), ("no signature", false)] {
            let attempt =
                Attempt::Publish { method: "POST", content_type: ct, sig: if sig { valid_sig() } else { Sig::Missing }, body: b.clone() };
            order.push(case(format!("Content-Type {ct:?}, {signed}"), ORDER, attempt, Expect::Error(415, "unsupported_media_type")));
        }
    }
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let attempt = Attempt::Publish { method, content_type: Some("application/json"), sig: valid_sig(), body: b.clone() };
        order.push(case(format!("{method} /publish, validly signed"), ORDER, attempt, Expect::Error(405, "method_not_allowed")));
    }
    let exact = batch_of_len(&w.channel, 256 * 1024, &|i| unique(&format!("fit{i}")));
    order.push(case("a body of exactly 256 KiB (control)", ORDER, w.publish(valid_sig(), exact), Expect::Published(5)));
    let order = family("the order of the checks", &w, order);

    // Malformed bodies: representatives (the host judges every one).
    let w = Target::new("payment");
    let reps = [
        "not JSON",
        "invalid UTF-8",
        "numeric id",
        "id of 129 two-byte characters",
        "event of 129 characters",
        "channels as a string",
        "messages empty",
        "messages with a bad message last",
        "same id twice",
        r#""orders:*"]"#,
        r#"x y"]"#,
    ];
    let bad = family(
        "malformed bodies",
        &w,
        rows(BODY, pick(&malformed_bodies(&w.channel), &reps), |b| w.publish(valid_sig(), b), Expect::Error(400, "bad_request")),
    );

    // Limits, with their controls stored on the witness's channel.
    let w = Target::new("orders");
    let batch = |n: usize| json!({"messages": (0..n).map(|i| message(&unique(&format!("m{i}")), &[&w.channel])).collect::<Vec<_>>()});
    let mut wide = vec![w.channel.clone()];
    wide.extend((0..100).map(|i| format!("orders:{}-{i}", w.key)));
    let signed = |v: Value| w.publish(valid_sig(), v.to_string().into_bytes());
    let mut limits = vec![
        case("101 messages", LIMITS, signed(batch(101)), Expect::Error(400, "bad_request")),
        case("exactly 100 messages (control)", LIMITS, signed(batch(100)), Expect::Published(100)),
        case(
            "a message to 101 channels",
            LIMITS,
            signed(json!({"id": unique("wide"), "channels": wide, "event": "e"})),
            Expect::Error(400, "bad_request"),
        ),
        case("id of 129 characters", LIMITS, signed(message(&"i".repeat(129), &[&w.channel])), Expect::Error(400, "bad_request")),
        case("id of 1000 characters", LIMITS, signed(message(&"i".repeat(1000), &[&w.channel])), Expect::Error(400, "bad_request")),
        case("id of 128 two-byte characters (control)", LIMITS, signed(message(&"é".repeat(128), &[&w.channel])), Expect::Published(1)),
    ];
    limits.extend(rows(
        DATA,
        oversized_data(),
        |d| signed(json!({"id": unique("big"), "channels": [w.channel], "event": "e", "data": d})),
        Expect::Error(413, "too_large"),
    ));
    let fits = json!({"id": unique("fits"), "channels": [w.channel], "event": "e", "data": "x".repeat(64 * 1024 - 2)});
    limits.push(case("data of 65536 bytes serialized (control)", DATA, signed(fits), Expect::Published(1)));
    let limits = family("limits", &w, limits);

    // A batch is validated whole: three witnesses, a bad last message, nothing anywhere.
    let (a, b2, c) = (Target::new("orders"), Target::new("payment"), Target::new("chat"));
    let first = |i: &str| vec![message(&unique(i), &[&a.channel, &b2.channel]), message(&unique(i), &[&c.channel])];
    let batch_with = |i: &str, last: Value| {
        let mut messages = first(i);
        messages.push(last);
        a.publish(valid_sig(), json!({"messages": messages}).to_string().into_bytes())
    };
    let whole = Family {
        name: "a batch validated whole",
        gateway: Gw::Default,
        witnesses: vec![a.clone(), b2.clone(), c.clone()],
        cases: vec![
            case(
                "last message with a malformed channel",
                WHOLE,
                batch_with("x", message(&unique("bad"), &[&c.channel, "chat:bad key"])),
                Expect::Error(400, "bad_request"),
            ),
            case(
                "last message with data over 64 KiB",
                WHOLE,
                batch_with("y", json!({"id": unique("big"), "channels": [a.channel], "event": "e", "data": "x".repeat(64 * 1024)})),
                Expect::Error(413, "too_large"),
            ),
            case(
                "last message without event",
                WHOLE,
                batch_with("z", json!({"id": unique("noevent"), "channels": [b2.channel]})),
                Expect::Error(400, "bad_request"),
            ),
        ],
    };

    battery(vec![tampering, clock, uniform, order, bad, limits, whole]).await;
}

// ---------- frames on open sockets: PROTOCOL.md "Frames: client to server" ----------

fn send(id: &str, text: &str) -> Out {
    Out::Json(json!({"type": "send", "id": id, "text": text}))
}

fn text(t: &str) -> Out {
    Out::Text(t.into())
}

/// Malformed or unexpected frames for a socket without a `publish` grant.
fn malformed_frames() -> Vec<Out> {
    [
        "hello",
        "{}",
        "[]",
        "null",
        "PING",
        r#"{"type":"subscribe","channel":"orders:*"}"#,
        r#"{"type":5}"#,
        r#"{"type":"refresh"}"#,
        r#"{"type":"send","id":"","text":"x"}"#,
        r#"{"type":"publish","channels":["orders:x"],"event":"e"}"#,
        r#"{"type":"send","id":"1","text":"x"}"#,
    ]
    .into_iter()
    .map(text)
    .collect()
}

fn replies(r: Reply, n: usize) -> Vec<Reply> {
    vec![r; n]
}

#[tokio::test]
async fn abusive_frames_get_the_protocols_answers() {
    start().await;
    let u = |p: &str| Member::new(unique(p));

    let w = Target::new("orders");
    let mut ten = malformed_frames();
    ten.truncate(10);
    ten.push(text("ping"));
    let mut ten_replies = replies(Reply::AnyError, 10);
    ten_replies.push(Reply::Pong);
    let mut eleven_replies = replies(Reply::AnyError, 10);
    eleven_replies.push(Reply::Close(4400));
    let binary = vec![
        Out::Binary(vec![1, 2, 3]),
        Out::Binary(br#"{"type":"send","id":"1","text":"x"}"#.to_vec()),
        Out::Binary(b"ping".to_vec()),
        Out::Binary(vec![0; 16 * 1024]),
        text("ping"),
    ];
    let mut binary_replies = replies(Reply::Error("binary_unsupported"), 4);
    binary_replies.push(Reply::Pong);
    let orders = family(
        "frames on orders",
        &w,
        vec![
            case("binary frames up to 16 KiB get binary_unsupported", MALFORMED, w.frames(u("u"), binary), Expect::Replies(binary_replies)),
            case(
                "a binary frame of 16 KiB + 1",
                FRAME_SIZE,
                w.frames(u("u"), vec![Out::Binary(vec![7; 16 * 1024 + 1])]),
                Expect::Replies(vec![Reply::Close(1009)]),
            ),
            case("ten malformed frames keep the socket open", MALFORMED, w.frames(u("u"), ten), Expect::Replies(ten_replies)),
            case(
                "the eleventh malformed frame closes it",
                MALFORMED,
                w.frames(u("u"), malformed_frames()),
                Expect::Replies(eleven_replies),
            ),
            case(
                "a send on orders, even with a publish grant",
                SEND,
                w.frames(u("u").publishing(&w.channel), vec![send("1", "let me in")]),
                Expect::Replies(vec![Reply::Error("forbidden")]),
            ),
        ],
    );

    let w = Target::new("payment");
    let mut payment = vec![case(
        "a send on payment, even with a publish grant",
        SEND,
        w.frames(u("u").publishing(&w.channel), vec![send("1", "let me in")]),
        Expect::Replies(vec![Reply::Error("forbidden")]),
    )];
    let refresh = |t: String| Out::Json(json!({"type": "refresh", "token": t}));
    let sub = unique("cust");
    let mut fresh = claims(&sub, &[&w.channel]);
    fresh["exp"] = json!(unix_now() + 700);
    let exp = fresh["exp"].as_i64().unwrap();
    payment.push(case(
        "a fresh token for the same sub (control)",
        REFRESH,
        w.frames(Member::new(sub), vec![refresh(hs256().mint(Some("hs"), &fresh))]),
        Expect::Replies(vec![Reply::Refreshed(exp)]),
    ));
    // Each refused refresh on its own socket, whose `sub` the forged token names (or not).
    let ed_public = base64_decode(eddsa().jwk(None)["x"].as_str().unwrap()).unwrap();
    let refused = |label: &str, forge: &dyn Fn(&mut Value) -> String| {
        let sub = unique("cust");
        let mut c = claims(&sub, &[&w.channel]);
        let t = forge(&mut c);
        case(label, REFRESH, w.frames(Member::new(sub), vec![refresh(t)]), Expect::Replies(vec![Reply::Close(4401)]))
    };
    let hs = |c: &Value| hs256().mint(Some("hs"), c);
    payment.extend([
        refused("alg none, same sub", &|c| format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(c))),
        refused("another key, same sub", &|c| SigningKey::hs256(99).mint(Some("hs"), c)),
        refused("HS256 keyed with the EdDSA public key", &|c| SigningKey::Hs256(ed_public.clone()).mint(Some("ed"), c)),
        refused("a valid token of another sub", &|_| token(&unique("other"), &[&w.channel])),
        refused("same sub, channel not granted", &|c| {
            c["channels"] = json!([format!("{}x", w.channel)]);
            hs(c)
        }),
        refused("same sub, publish grant only", &|c| {
            c["channels"] = json!([]);
            c["publish"] = json!([w.channel]);
            hs(c)
        }),
        refused("same sub, expired", &|c| {
            c["iat"] = json!(unix_now() - 700);
            c["exp"] = json!(unix_now() - 60);
            hs(c)
        }),
        refused("same sub, jwk header", &|c| hs256().mint_with_header(&json!({"alg": "HS256", "kid": "hs", "jwk": hs256().jwk(None)}), c)),
        refused("same sub, over 8 KiB", &|c| {
            c["pad"] = json!("p".repeat(8200));
            hs(c)
        }),
    ]);
    let payment = family("frames on payment, refresh", &w, payment);

    let w = Target::new("chat");
    let poster = |p: &str| u(p).publishing(&w.channel);
    let mut flood: Vec<Out> = (0..39).map(|i| send(&format!("m{i}"), "spam")).collect();
    flood.push(text("ping"));
    flood.push(send("m39", "spam"));
    let mut flood_replies = replies(Reply::Event(None), 20);
    flood_replies.extend(replies(Reply::Error("rate_limited"), 19));
    flood_replies.extend([Reply::Pong, Reply::Close(4429)]);
    let sizes = family(
        "chat: frame sizes, flood",
        &w,
        vec![
            case(
                "a text frame of exactly 16 KiB is merely malformed",
                FRAME_SIZE,
                w.frames(poster("u"), vec![text(&"x".repeat(16 * 1024))]),
                Expect::Replies(vec![Reply::Error("bad_frame")]),
            ),
            case(
                "a text frame of 16 KiB + 1",
                FRAME_SIZE,
                w.frames(poster("u"), vec![text(&"x".repeat(16 * 1024 + 1))]),
                Expect::Replies(vec![Reply::Close(1009)]),
            ),
            case(
                "8193 two-byte characters (bytes count, not characters)",
                FRAME_SIZE,
                w.frames(poster("u"), vec![text(&"é".repeat(8193))]),
                Expect::Replies(vec![Reply::Close(1009)]),
            ),
            case(
                "a send frame over 16 KiB",
                FRAME_SIZE,
                w.frames(poster("u"), vec![send("big", &"y".repeat(16 * 1024))]),
                Expect::Replies(vec![Reply::Close(1009)]),
            ),
            case(
                "a flood: 20 delivered, 19 rate_limited, the 40th closes 4429",
                RATE,
                w.frames(poster("flooder"), flood),
                Expect::Replies(flood_replies),
            ),
            case(
                "after the flood another user still talks",
                RATE,
                w.frames(poster("peer"), vec![send("mine", "still here")]),
                Expect::Replies(vec![Reply::Event(None)]),
            ),
        ],
    );

    let w = Target::new("chat");
    let poster = |p: &str| u(p).publishing(&w.channel);
    let ann = unique("ann");
    let forged_author = Out::Json(json!({
        "type": "send", "id": "m1", "text": "refund me",
        "author": {"sub": "admin", "name": "Admin", "role": "owner"},
        "sub": "admin", "name": "Admin", "role": "owner", "client_id": "forged",
        "data": {"author": {"sub": "admin"}}
    }));
    let ann_data = json!({"text": "refund me", "author": {"sub": ann, "name": "Ann Example", "role": "customer"}, "client_id": "m1"});
    let ann_member = Member { sub: ann, name: Some("Ann Example"), role: Some("customer"), publish: vec![w.channel.clone()] };
    let ch = w.channel.clone();
    let inject: Vec<Out> = [
        json!({"type": "event", "channel": ch, "seq": 1, "id": "x", "event": "order.paid", "data": {}, "ts": 0}),
        json!({"type": "presence", "channel": ch, "action": "left", "sub": "witness", "count": 0}),
        json!({"type": "welcome", "channel": ch, "conn": "c", "seq": 99}),
        json!({"type": "reset", "channel": ch, "seq": 99}),
        json!({"type": "publish", "id": "x", "channels": [ch], "event": "e"}),
    ]
    .into_iter()
    .map(Out::Json)
    .collect();
    let victim = unique("victim");
    let victim_data =
        json!({"text": "mine", "author": {"sub": victim, "name": format!("{victim} name"), "role": "staff"}, "client_id": "m1"});
    let reader = Member { publish: vec![format!("{}x", w.channel), "orders:*".into()], ..u("reader") };
    let chat = family(
        "chat: grants, authors, injection, dedupe, text",
        &w,
        vec![
            case(
                "a send without a publish grant for the room",
                SEND,
                w.frames(reader, vec![send("1", "hello")]),
                Expect::Replies(vec![Reply::Error("forbidden")]),
            ),
            case(
                "a send with a forged author",
                AUTHOR,
                w.frames(ann_member, vec![forged_author]),
                Expect::Replies(vec![Reply::Event(Some(ann_data))]),
            ),
            case("server frames from a client", MALFORMED, w.frames(poster("u"), inject), Expect::Replies(replies(Reply::AnyError, 5))),
            case(
                "an attacker sends id m1 first",
                DEDUPE,
                w.frames(poster("attacker"), vec![send("m1", "first with this id")]),
                Expect::Replies(vec![Reply::Event(None)]),
            ),
            case(
                "the victim's own m1 is delivered, its repeat is not",
                DEDUPE,
                w.frames(Member::new(victim).publishing(&w.channel), vec![send("m1", "mine"), send("m1", "mine again")]),
                Expect::Replies(vec![Reply::Event(Some(victim_data)), Reply::Silent]),
            ),
            case(
                "text of 2001 characters, empty text, 2000 two-byte characters",
                TEXT,
                w.frames(poster("u"), vec![send("a", &"x".repeat(2001)), send("b", ""), send("c", &"é".repeat(2000))]),
                Expect::Replies(vec![Reply::Error("too_long"), Reply::AnyError, Reply::Event(None)]),
            ),
        ],
    );

    battery(vec![orders, payment, sizes, chat]).await;
}
