//! The body of `POST /publish`: one message or a batch, validated whole before anything is
//! delivered, so a rejected request changes nothing anywhere.

use std::collections::{BTreeMap, HashSet};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::channel::Channel;

pub const MAX_BODY_BYTES: usize = 256 * 1024;
pub const MAX_DATA_BYTES: usize = 64 * 1024;
pub const MAX_BATCH: usize = 100;
pub const MAX_CHANNELS: usize = 100;
pub const MAX_ID_CHARS: usize = 128;
pub const MAX_EVENT_CHARS: usize = 128;

/// One validated message. `data` is kept as serialized JSON: it is stored and sent verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub channels: Vec<Channel>,
    pub event: String,
    pub data: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// HTTP 400 with a message saying what is wrong.
    Invalid(String),
    /// HTTP 413: a message's `data` is too large.
    DataTooLarge(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, BodyError> {
    Err(BodyError::Invalid(msg.into()))
}

/// A bounded, non-empty string field.
fn text_field(obj: &Map<String, Value>, name: &str, max_chars: usize, at: &str) -> Result<String, BodyError> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max_chars => Ok(s.clone()),
        Some(Value::String(_)) => invalid(format!("{at}\"{name}\" must be 1 to {max_chars} characters")),
        Some(_) => invalid(format!("{at}\"{name}\" must be a string")),
        None => invalid(format!("{at}\"{name}\" is required")),
    }
}

fn parse_message(v: &Value, at: &str) -> Result<Message, BodyError> {
    let Value::Object(obj) = v else {
        return invalid(format!("{at}a message must be a JSON object"));
    };
    let id = text_field(obj, "id", MAX_ID_CHARS, at)?;
    let event = text_field(obj, "event", MAX_EVENT_CHARS, at)?;
    let channels = match obj.get("channels") {
        Some(Value::Array(list)) if (1..=MAX_CHANNELS).contains(&list.len()) => list
            .iter()
            .map(|c| match c.as_str().map(Channel::parse) {
                Some(Ok(channel)) => Ok(channel),
                _ => invalid(format!("{at}malformed channel {c}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => return invalid(format!("{at}\"channels\" must list 1 to {MAX_CHANNELS} channels")),
        Some(_) => return invalid(format!("{at}\"channels\" must be an array")),
        None => return invalid(format!("{at}\"channels\" is required")),
    };
    let data = obj.get("data").unwrap_or(&Value::Null).to_string();
    if data.len() > MAX_DATA_BYTES {
        return Err(BodyError::DataTooLarge(format!("{at}\"data\" exceeds {MAX_DATA_BYTES} bytes serialized")));
    }
    Ok(Message { id, channels, event, data })
}

/// Parses and validates a publish body (after its signature has been checked).
pub fn parse_body(body: &[u8]) -> Result<Vec<Message>, BodyError> {
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return invalid("the body must be a JSON object");
    };
    let messages = match root.get("messages") {
        None => vec![parse_message(&Value::Object(root), "")?],
        Some(Value::Array(list)) if (1..=MAX_BATCH).contains(&list.len()) => {
            list.iter().enumerate().map(|(i, m)| parse_message(m, &format!("messages[{i}]: "))).collect::<Result<Vec<_>, _>>()?
        }
        Some(Value::Array(_)) => return invalid(format!("\"messages\" must hold 1 to {MAX_BATCH} messages")),
        Some(_) => return invalid("\"messages\" must be an array"),
    };
    let mut ids = HashSet::new();
    if let Some(dup) = messages.iter().find(|m| !ids.insert(m.id.as_str())) {
        return invalid(format!("id {:?} appears twice in the batch", dup.id));
    }
    // One object call per distinct channel: bounded so a request stays within the
    // platform's subrequest limits and cannot fan out without end.
    let distinct: HashSet<&Channel> = messages.iter().flat_map(|m| &m.channels).collect();
    if distinct.len() > MAX_CHANNELS {
        return invalid(format!("a request may reach at most {MAX_CHANNELS} distinct channels"));
    }
    Ok(messages)
}

/// `POST /revoke`: a user, and optionally the channels to revoke them from (else all).
#[derive(Debug, PartialEq)]
pub struct Revoke {
    pub sub: String,
    pub channels: Option<Vec<Channel>>,
}

pub fn parse_revoke(body: &[u8]) -> Result<Revoke, BodyError> {
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return invalid("the body must be a JSON object");
    };
    let sub = match root.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return invalid("\"sub\" must be a non-empty string"),
    };
    let channels = match root.get("channels") {
        None | Some(Value::Null) => None,
        // An empty list names no scope: a 400 that revokes nothing (PROTOCOL v1.2).
        Some(Value::Array(list)) if (1..=MAX_CHANNELS).contains(&list.len()) => Some(
            list.iter()
                .map(|c| match c.as_str().map(Channel::parse) {
                    Some(Ok(channel)) => Ok(channel),
                    _ => invalid(format!("malformed channel {c}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return invalid(format!("\"channels\" must list 1 to {MAX_CHANNELS} channels (omit it for all)")),
    };
    Ok(Revoke { sub, channels })
}

/// One event as handed to a channel's room: what the room stores and broadcasts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub data: Box<RawValue>,
}

/// The events of a request grouped by channel, each group in request order, with the
/// position of every (message, channel) pair in the response.
pub fn group_by_channel(messages: &[Message]) -> BTreeMap<Channel, Vec<(usize, Delivery)>> {
    let mut groups: BTreeMap<Channel, Vec<(usize, Delivery)>> = BTreeMap::new();
    let mut slot = 0;
    for m in messages {
        for channel in &m.channels {
            // `data` came out of serde_json, so it is valid JSON.
            let data = RawValue::from_string(m.data.clone()).unwrap_or_else(|_| null());
            groups.entry(channel.clone()).or_default().push((slot, Delivery { id: m.id.clone(), event: m.event.clone(), data }));
            slot += 1;
        }
    }
    groups
}

pub fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!()) // ok: literal JSON
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn msg(id: &str) -> Value {
        json!({"id": id, "channels": ["orders:v1", "payment:o-1"], "event": "order.paid", "data": {"status": "paid"}})
    }

    #[test]
    fn a_single_message_parses_with_data_kept_verbatim() {
        let m = parse_body(&body(msg("e1"))).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, "e1");
        assert_eq!(m[0].channels.len(), 2);
        assert_eq!(m[0].data, r#"{"status":"paid"}"#);
    }

    #[test]
    fn data_defaults_to_null() {
        let m = parse_body(&body(json!({"id": "e", "channels": ["chat:r"], "event": "x"}))).unwrap();
        assert_eq!(m[0].data, "null");
    }

    #[test]
    fn a_batch_parses_in_order() {
        let m = parse_body(&body(json!({"messages": [msg("a"), msg("b")]}))).unwrap();
        assert_eq!(m.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn batch_with_one_bad_message_is_refused_whole() {
        let mut bad = msg("b");
        bad["channels"] = json!(["orders:bad key"]);
        assert!(matches!(parse_body(&body(json!({"messages": [msg("a"), bad]}))), Err(BodyError::Invalid(_))));
    }

    #[test]
    fn a_request_reaches_at_most_100_distinct_channels() {
        let to = |i: usize| json!({"id": format!("e{i}"), "channels": [format!("orders:v{i}")], "event": "x"});
        let at_limit: Vec<Value> = (0..100).map(to).collect();
        assert!(parse_body(&body(json!({"messages": at_limit}))).is_ok());
        let mut over: Vec<Value> = (0..99).map(to).collect();
        over.push(json!({"id": "two", "channels": ["orders:v0", "orders:v100", "orders:v101"], "event": "x"}));
        assert!(matches!(parse_body(&body(json!({"messages": over}))), Err(BodyError::Invalid(m)) if m.contains("distinct")));
    }

    #[test]
    fn every_malformed_field_is_a_400() {
        let cases = [
            json!([msg("a")]),
            json!({"messages": []}),
            json!({"messages": msg("a")}),
            json!({"messages": (0..101).map(|i| msg(&format!("e{i}"))).collect::<Vec<_>>()}),
            json!({"messages": [msg("a"), msg("a")]}),
            json!({"messages": [1]}),
            json!({"channels": ["orders:v1"], "event": "x"}),
            json!({"id": "", "channels": ["orders:v1"], "event": "x"}),
            json!({"id": 5, "channels": ["orders:v1"], "event": "x"}),
            json!({"id": "x".repeat(129), "channels": ["orders:v1"], "event": "x"}),
            json!({"id": "e", "channels": ["orders:v1"]}),
            json!({"id": "e", "channels": ["orders:v1"], "event": ""}),
            json!({"id": "e", "channels": ["orders:v1"], "event": "x".repeat(129)}),
            json!({"id": "e", "channels": [], "event": "x"}),
            json!({"id": "e", "channels": "orders:v1", "event": "x"}),
            json!({"id": "e", "channels": ["news:v1"], "event": "x"}),
            json!({"id": "e", "channels": [7], "event": "x"}),
            json!({"id": "e", "channels": (0..101).map(|i| format!("chat:r{i}")).collect::<Vec<_>>(), "event": "x"}),
        ];
        for c in cases {
            assert!(matches!(parse_body(&body(c.clone())), Err(BodyError::Invalid(_))), "{c}");
        }
        for raw in [&b"not json"[..], b"", b"{\"id\":", b"\"str\""] {
            assert!(matches!(parse_body(raw), Err(BodyError::Invalid(_))));
        }
    }

    #[test]
    fn revoke_bodies_parse_with_optional_channels() {
        assert_eq!(parse_revoke(br#"{"sub":"u"}"#).unwrap(), Revoke { sub: "u".into(), channels: None });
        let r = parse_revoke(br#"{"sub":"u","channels":["chat:r"]}"#).unwrap();
        assert_eq!(r.channels.unwrap()[0].to_string(), "chat:r");
        for bad in [
            &br#"{"sub":""}"#[..],
            br#"{"channels":[]}"#,
            br#"{"sub":"u","channels":["x"]}"#,
            br#"{"sub":"u","channels":"chat:r"}"#,
            b"[]",
            br#"{"sub":"u","channels":[]}"#,
        ] {
            assert!(parse_revoke(bad).is_err());
        }
    }

    #[test]
    fn ids_and_events_of_128_characters_are_accepted() {
        let long = "é".repeat(128);
        assert!(parse_body(&body(json!({"id": long, "channels": ["chat:r"], "event": long}))).is_ok());
    }

    #[test]
    fn data_over_64_kib_serialized_is_a_413() {
        let big = json!({"id": "e", "channels": ["chat:r"], "event": "x", "data": "x".repeat(MAX_DATA_BYTES)});
        assert!(matches!(parse_body(&body(big)), Err(BodyError::DataTooLarge(_))));
        let fits = json!({"id": "e", "channels": ["chat:r"], "event": "x", "data": "x".repeat(MAX_DATA_BYTES - 2)});
        assert!(parse_body(&body(fits)).is_ok());
    }

    #[test]
    fn grouping_keeps_request_order_per_channel_and_numbers_every_pair() {
        let mut b = msg("b");
        b["channels"] = json!(["orders:v1"]);
        let m = parse_body(&body(json!({"messages": [msg("a"), b]}))).unwrap();
        let groups = group_by_channel(&m);
        let orders: Vec<(usize, &str)> = groups[&Channel::parse("orders:v1").unwrap()].iter().map(|(i, d)| (*i, d.id.as_str())).collect();
        assert_eq!(orders, [(0, "a"), (2, "b")]);
        assert_eq!(groups[&Channel::parse("payment:o-1").unwrap()][0].0, 1);
    }
}
