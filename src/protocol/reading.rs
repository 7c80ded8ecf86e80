//! Reading a channel without a socket (PROTOCOL.md "Reading channels"):
//! `GET /channels/{kind}/{key}` (its `seq` and who holds sockets) and
//! `GET /channels/{kind}/{key}/history?since=N&limit=M`. Signed like `/publish` with an empty
//! body over the request target (path and query); the path is judged after the signature.

use super::channel::{Channel, ChannelError, Kind};

pub const DEFAULT_HISTORY_LIMIT: usize = 100;
pub const MAX_HISTORY_LIMIT: usize = 1000;
/// A channel read lists at most this many users (`truncated` says when there are more).
pub const MAX_USERS_LISTED: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The channel's latest `seq`, its open sockets and their users.
    State,
    /// Retained events after `since`, oldest first, at most `limit`.
    History { since: u64, limit: usize },
}

#[derive(Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub channel: Channel,
    pub read: Read,
}

/// A refused read: HTTP status and message.
pub type Refusal = (u16, &'static str);

/// Parses the path and query of a read (`query` already percent-decoded).
pub fn parse(path: &str, query: &[(String, String)]) -> Result<ReadRequest, Refusal> {
    const NOT_FOUND: Refusal = (404, "not found");
    let rest = path.strip_prefix("/channels/").ok_or(NOT_FOUND)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = rest.split('/');
    let (kind, key, tail) = (parts.next().unwrap_or(""), parts.next().ok_or(NOT_FOUND)?, parts.next());
    let history = match (tail, parts.next()) {
        (None, _) => false,
        (Some("history"), None) => true,
        _ => return Err(NOT_FOUND),
    };
    let kind = Kind::parse(kind).ok_or((404, "unknown channel kind"))?;
    let channel = Channel::new(kind, key).map_err(|e| match e {
        ChannelError::MalformedKey => (400, "malformed channel key"),
        _ => NOT_FOUND,
    })?;
    if !history {
        return Ok(ReadRequest { channel, read: Read::State });
    }
    let number = |name: &str| -> Result<Option<u64>, Refusal> {
        match query.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse().map(Some).map_err(|_| (400, "query number out of range"))
            }
            Some(_) => Err((400, "since and limit must be non-negative integers")),
        }
    };
    let since = number("since")?.unwrap_or(0);
    let limit = match number("limit")? {
        None => DEFAULT_HISTORY_LIMIT,
        Some(n) if (1..=MAX_HISTORY_LIMIT as u64).contains(&n) => n as usize,
        Some(_) => return Err((400, "limit must be 1 to 1000")),
    };
    Ok(ReadRequest { channel, read: Read::History { since, limit } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn state_and_history_paths_parse() {
        let r = parse("/channels/chat/o-1001", &[]).unwrap();
        assert_eq!((r.channel.to_string(), r.read), ("chat:o-1001".into(), Read::State));
        assert_eq!(parse("/channels/orders/v1/", &[]).unwrap().read, Read::State);
        let r = parse("/channels/payment/o-1/history", &q(&[("since", "7"), ("limit", "1000")])).unwrap();
        assert_eq!(r.read, Read::History { since: 7, limit: 1000 });
        assert_eq!(parse("/channels/payment/o-1/history", &[]).unwrap().read, Read::History { since: 0, limit: 100 });
    }

    #[test]
    fn bad_reads_get_the_protocols_status() {
        for (path, query, status) in [
            ("/channels/nope/k", q(&[]), 404),
            ("/channels/orders", q(&[]), 404),
            ("/channels/orders/k/other", q(&[]), 404),
            ("/channels/orders/k/history/x", q(&[]), 404),
            ("/channels/orders/bad%20key", q(&[]), 400),
            ("/channels/orders/k.y", q(&[]), 400),
            ("/channels/orders/k/history", q(&[("since", "-1")]), 400),
            ("/channels/orders/k/history", q(&[("since", "")]), 400),
            ("/channels/orders/k/history", q(&[("limit", "0")]), 400),
            ("/channels/orders/k/history", q(&[("limit", "1001")]), 400),
            ("/channels/orders/k/history", q(&[("limit", "ten")]), 400),
            ("/channels/orders/k/history", q(&[("since", "99999999999999999999999")]), 400),
        ] {
            assert_eq!(parse(path, &query).map(|_| ()).unwrap_err().0, status, "{path} {query:?}");
        }
    }
}
