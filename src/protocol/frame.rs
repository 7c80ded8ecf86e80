//! Wire frames. Server frames are JSON objects with a `type`; each is serialized once and
//! the same string is sent to every socket. Client frames are parsed defensively: nothing a
//! client sends can make this module fail other than with a [`FrameError`].

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::wire::{ErrorCode, PING};

/// Client frames (text or binary) above this size close the socket with 1009.
pub const MAX_CLIENT_FRAME_BYTES: usize = 16 * 1024;
pub const MAX_CLIENT_ID_CHARS: usize = 128;

/// A stored event as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub id: String,
    pub event: String,
    /// Serialized JSON, sent verbatim.
    pub data: String,
    /// Milliseconds since the epoch, stamped when the channel's object accepted the event.
    pub ts: i64,
    /// In an inbox: the channel and `seq` the event was copied from.
    pub source: Option<Source>,
}

/// Where an inbox's copy comes from (`source` in its `event` frames and history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Source {
    pub channel: String,
    pub seq: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerFrame<'a> {
    Welcome {
        channel: &'a str,
        conn: &'a str,
        seq: u64,
        build: &'a str,
        expires_at: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        presence: Option<&'a [Present<'a>]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<usize>,
    },
    Event {
        channel: &'a str,
        seq: u64,
        id: &'a str,
        event: &'a str,
        data: &'a RawValue,
        ts: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'a Source>,
    },
    Reset {
        channel: &'a str,
        seq: u64,
    },
    Refreshed {
        expires_at: i64,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
    },
    Presence {
        channel: &'a str,
        action: &'a str,
        sub: &'a str,
        name: Option<&'a str>,
        role: Option<&'a str>,
        count: usize,
    },
}

fn encode(frame: &ServerFrame<'_>) -> String {
    // Serializing these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_string(frame).unwrap_or_default()
}

/// One user in a chat `welcome`'s `presence` list.
#[derive(Serialize, Debug, PartialEq)]
pub struct Present<'a> {
    pub sub: &'a str,
    pub name: Option<&'a str>,
    pub role: Option<&'a str>,
}

/// Who is in a room as a `welcome` tells it: the listed users (sorted, capped) and the count
/// of all of them.
pub struct Roster<'a> {
    pub present: &'a [Present<'a>],
    pub count: usize,
}

pub fn welcome(channel: &str, conn: &str, seq: u64, build: &str, expires_at: i64, roster: Option<Roster<'_>>) -> String {
    let (presence, count) = roster.map_or((None, None), |r| (Some(r.present), Some(r.count)));
    encode(&ServerFrame::Welcome { channel, conn, seq, build, expires_at, presence, count })
}

pub fn event(channel: &str, e: &StoredEvent) -> String {
    let null = super::publish::null();
    let data: Box<RawValue> = RawValue::from_string(e.data.clone()).unwrap_or(null);
    encode(&ServerFrame::Event { channel, seq: e.seq, id: &e.id, event: &e.event, data: &data, ts: e.ts, source: e.source.as_ref() })
}

pub fn reset(channel: &str, seq: u64) -> String {
    encode(&ServerFrame::Reset { channel, seq })
}

pub fn refreshed(expires_at: i64) -> String {
    encode(&ServerFrame::Refreshed { expires_at })
}

pub fn error(code: ErrorCode, message: &str) -> String {
    encode(&ServerFrame::Error { code, message })
}

pub fn presence(channel: &str, action: &str, sub: &str, name: Option<&str>, role: Option<&str>, count: usize) -> String {
    encode(&ServerFrame::Presence { channel, action, sub, name, role, count })
}

/// A well-formed client frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    Ping,
    Refresh {
        token: String,
    },
    /// `channel`: the chat an inbox socket posts to (absent on a chat's own socket).
    Send {
        id: String,
        text: String,
        channel: Option<String>,
    },
}

/// A frame that is not one of the above; answered with an `error` frame (and counted).
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: &'static str,
}

const fn bad(code: ErrorCode, message: &'static str) -> FrameError {
    FrameError { code, message }
}

pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    if text == PING {
        return Ok(ClientFrame::Ping);
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
        return Err(bad(ErrorCode::BadFrame, "frames are JSON objects with a \"type\""));
    };
    let mut string = |name: &str| match obj.remove(name) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    match string("type").as_deref() {
        Some("refresh") => match string("token") {
            Some(token) if !token.is_empty() => Ok(ClientFrame::Refresh { token }),
            _ => Err(bad(ErrorCode::BadField, "refresh needs a \"token\" string")),
        },
        Some("send") => {
            let id = string("id").filter(|id| !id.is_empty() && id.chars().count() <= MAX_CLIENT_ID_CHARS);
            match (id, string("text")) {
                (Some(id), Some(text)) => Ok(ClientFrame::Send { id, text, channel: string("channel") }),
                (None, _) => Err(bad(ErrorCode::BadField, "send needs an \"id\" string of 1 to 128 characters")),
                (_, None) => Err(bad(ErrorCode::BadField, "send needs a \"text\" string")),
            }
        }
        Some(_) => Err(bad(ErrorCode::UnknownType, "unknown frame type")),
        None => Err(bad(ErrorCode::BadFrame, "frames are JSON objects with a \"type\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_have_the_documented_shape() {
        let w: Value = serde_json::from_str(&welcome("orders:v", "c1", 4, "b1", 99, None)).unwrap();
        assert_eq!(
            w,
            serde_json::json!({"type": "welcome", "channel": "orders:v", "conn": "c1", "seq": 4, "build": "b1", "expires_at": 99})
        );
        let present = [Present { sub: "a", name: Some("Ann"), role: None }];
        let w: Value = serde_json::from_str(&welcome("chat:r", "c1", 0, "b1", 99, Some(Roster { present: &present, count: 3 }))).unwrap();
        assert_eq!(w["presence"], serde_json::json!([{"sub": "a", "name": "Ann", "role": null}]));
        assert_eq!(w["count"], 3);
        let e = StoredEvent { seq: 3, id: "e".into(), event: "order.paid".into(), data: r#"{"a":[1]}"#.into(), ts: 5, source: None };
        let v: Value = serde_json::from_str(&event("orders:v", &e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "event", "channel": "orders:v", "seq": 3, "id": "e", "event": "order.paid", "data": {"a": [1]}, "ts": 5})
        );
        let copy = StoredEvent { seq: 9, source: Some(Source { channel: "orders:v".into(), seq: 3 }), ..e };
        let v: Value = serde_json::from_str(&event("inbox:v", &copy)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "event", "channel": "inbox:v", "seq": 9, "id": "e", "event": "order.paid", "data": {"a": [1]}, "ts": 5,
                               "source": {"channel": "orders:v", "seq": 3}})
        );
        let p: Value = serde_json::from_str(&presence("chat:r", "joined", "u", Some("Ann"), None, 2)).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"type": "presence", "channel": "chat:r", "action": "joined", "sub": "u", "name": "Ann", "role": null, "count": 2})
        );
        let r: Value = serde_json::from_str(&reset("chat:r", 7)).unwrap();
        assert_eq!(r, serde_json::json!({"type": "reset", "channel": "chat:r", "seq": 7}));
    }

    #[test]
    fn client_frames_parse() {
        assert_eq!(parse_client_frame("ping"), Ok(ClientFrame::Ping));
        assert_eq!(parse_client_frame(r#"{"type":"refresh","token":"t"}"#), Ok(ClientFrame::Refresh { token: "t".into() }));
        assert_eq!(
            parse_client_frame(r#"{"type":"send","id":"1","text":"hi","author":{"sub":"admin"}}"#),
            Ok(ClientFrame::Send { id: "1".into(), text: "hi".into(), channel: None })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"send","channel":"chat:o-1","id":"1","text":"hi"}"#),
            Ok(ClientFrame::Send { id: "1".into(), text: "hi".into(), channel: Some("chat:o-1".into()) })
        );
    }

    #[test]
    fn malformed_client_frames_are_named() {
        for (text, code) in [
            ("PING", "bad_frame"),
            ("", "bad_frame"),
            ("[]", "bad_frame"),
            ("{}", "bad_frame"),
            (r#"{"type":5}"#, "bad_frame"),
            (r#"{"type":"subscribe"}"#, "unknown_type"),
            (r#"{"type":"refresh"}"#, "bad_field"),
            (r#"{"type":"refresh","token":""}"#, "bad_field"),
            (r#"{"type":"send","text":"x"}"#, "bad_field"),
            (r#"{"type":"send","id":"","text":"x"}"#, "bad_field"),
            (r#"{"type":"send","id":"1","text":7}"#, "bad_field"),
        ] {
            assert_eq!(serde_json::to_value(parse_client_frame(text).unwrap_err().code).unwrap(), code, "{text}");
        }
        let deep = "[".repeat(10_000);
        assert_eq!(parse_client_frame(&deep).unwrap_err().code, ErrorCode::BadFrame);
    }
}
