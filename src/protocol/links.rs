//! Inboxes (PROTOCOL.md "Inboxes", v1.2): the `POST /links` body, the link rule, and
//! forwarding: what is copied to an inbox, in which batches, how it is retried and bounded,
//! and how an inbox tells copies apart.
//!
//! A channel's links live in the channel's own object (a channel never linked has no table
//! and pays nothing). Each link is a cursor over the channel's own history: the last `seq`
//! the inbox has ([`Link::sent`]), set to the latest `seq` when the link is made. What the
//! inbox still needs is the history after it, so accepting an event writes nothing more, and
//! one call carries every pending event for that inbox, oldest first, one call per inbox at a
//! time, retried by [`super::retry`] until it lands; then the cursor moves. History is kept
//! for a lagging cursor (up to [`FORWARD_QUEUE_MAX`] events). The inbox stores each copy
//! under the key of its source (`(channel, seq)`), so a copy sent twice is stored once, and
//! one source's copies arrive in that source's `seq` order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::channel::{Channel, Kind};
use super::frame::{Source, StoredEvent};
use super::publish::BodyError;

/// Inboxes one channel may be linked into (a ninth answers `too_many_links`).
pub const MAX_LINKS_PER_CHANNEL: usize = 8;
/// Entries in one `/links` request.
pub const MAX_LINK_ENTRIES: usize = 100;
/// Copies one forwarding call carries at most, and their bytes (event data, id and name):
/// the rest follow in the next call.
pub const FORWARD_BATCH: usize = 100;
pub const FORWARD_BATCH_BYTES: usize = 1024 * 1024;
/// Events a channel keeps beyond its own retention for an inbox that lags; beyond it the
/// oldest are not forwarded (and logged): an unreachable inbox cannot make a channel's
/// storage grow without end.
pub const FORWARD_QUEUE_MAX: u64 = 10_000;
/// A forwarding call not answered within this long may be sent again (the inbox dedupes):
/// a call lost with its instance does not hold an inbox's copies back for ever.
pub const FORWARD_CALL_MS: i64 = 30_000;
/// Copies go out right after the event (the prompt path), and the room's alarm fires no later
/// than this after a call starts: it sends whatever a call lost with its instance left
/// queued (sooner when the channel accepts another event). Long enough that a busy channel
/// pays one alarm per five minutes for it, not one per copy.
pub const FORWARD_BACKSTOP_MS: i64 = 5 * 60 * 1000;

/// One link of a channel into an inbox, as the channel keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub inbox: Channel,
    /// The channel's last `seq` the inbox has (or that was accepted before the link).
    pub sent: u64,
    /// Removed: events up to this `seq` (accepted while the link held) are still forwarded,
    /// then the link goes.
    pub until: Option<u64>,
    /// Failed calls in a row, when the next may go (ms), and when the first of them failed.
    pub attempts: u32,
    pub next_at: i64,
    pub failing_since: Option<i64>,
}

impl Link {
    pub fn new(inbox: Channel, latest: u64) -> Link {
        Link { inbox, sent: latest, until: None, attempts: 0, next_at: 0, failing_since: None }
    }

    /// Whether it holds (forwards what the channel accepts from now on).
    pub fn holds(&self) -> bool {
        self.until.is_none()
    }

    /// The last `seq` this link forwards, given the channel's latest.
    pub fn upto(&self, latest: u64) -> u64 {
        self.until.map_or(latest, |until| until.min(latest))
    }

    /// Whether events wait for the inbox.
    pub fn pending(&self, latest: u64) -> bool {
        self.sent < self.upto(latest)
    }

    /// Whether the link can go: removed, and everything it owed delivered.
    pub fn done(&self) -> bool {
        self.until.is_some_and(|until| self.sent >= until)
    }
}

/// The storage a room needs for inboxes: part of its [`super::room::Store`] port. Rooms that
/// are never linked (and inboxes no one answers from) create none of it.
pub trait LinkStore {
    /// The channel's links into inboxes (none when it never was: no table, and no query
    /// beyond the one the store makes anyway).
    fn links(&self) -> Result<Vec<Link>, String>;
    /// Writes one link as given (a new one, a moved cursor, a retry).
    fn put_link(&mut self, link: &Link) -> Result<(), String>;
    fn drop_link(&mut self, inbox: &Channel) -> Result<(), String>;
    /// An inbox keeps the `publish` grant of each socket that may answer through it (an
    /// attachment is too small for a staff member's list of chats).
    fn grants_put(&mut self, conn: &str, entries: &[String]) -> Result<(), String>;
    fn grants_of(&self, conn: &str) -> Result<Vec<String>, String>;
    fn grants_drop(&mut self, conn: &str) -> Result<(), String>;
}

/// One entry of a `/links` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOrder {
    pub channel: Channel,
    pub inbox: Channel,
    #[serde(default)]
    pub remove: bool,
}

/// What a link order left in place: whether the link holds after it, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkResult {
    pub linked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, BodyError> {
    Err(BodyError::Invalid(msg.into()))
}

/// Parses and validates a `/links` body whole (after its signature was checked): any bad
/// entry is a 400 and nothing is linked.
pub fn parse_body(body: &[u8]) -> Result<Vec<LinkOrder>, BodyError> {
    let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
        return invalid("the body must be a JSON object");
    };
    let list = match root.get("links") {
        Some(Value::Array(list)) if (1..=MAX_LINK_ENTRIES).contains(&list.len()) => list,
        Some(Value::Array(_)) => return invalid(format!("\"links\" must hold 1 to {MAX_LINK_ENTRIES} entries")),
        Some(_) => return invalid("\"links\" must be an array"),
        None => return invalid("\"links\" is required"),
    };
    list.iter().enumerate().map(|(i, entry)| parse_entry(entry, &format!("links[{i}]: "))).collect()
}

fn parse_entry(v: &Value, at: &str) -> Result<LinkOrder, BodyError> {
    let Value::Object(obj) = v else {
        return invalid(format!("{at}an entry must be a JSON object"));
    };
    let channel = |name: &str| match obj.get(name) {
        Some(Value::String(s)) => Channel::parse(s).map_err(|_| BodyError::Invalid(format!("{at}malformed channel in \"{name}\""))),
        Some(_) => invalid(format!("{at}\"{name}\" must be a channel name")),
        None => invalid(format!("{at}\"{name}\" is required")),
    };
    let (source, inbox) = (channel("channel")?, channel("inbox")?);
    if !source.kind().policy().linkable {
        return invalid(format!("{at}\"channel\" must not be an inbox"));
    }
    if inbox.kind() != Kind::Inbox {
        return invalid(format!("{at}\"inbox\" must be an inbox channel"));
    }
    let remove = match obj.get("remove") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return invalid(format!("{at}\"remove\" must be true or false")),
    };
    Ok(LinkOrder { channel: source, inbox, remove })
}

/// The orders of a request grouped by source channel (one object call each), each group in
/// request order, with each order's position in the response.
pub fn group_by_channel(orders: &[LinkOrder]) -> BTreeMap<Channel, Vec<(usize, LinkOrder)>> {
    let mut groups: BTreeMap<Channel, Vec<(usize, LinkOrder)>> = BTreeMap::new();
    for (slot, order) in orders.iter().enumerate() {
        groups.entry(order.channel.clone()).or_default().push((slot, order.clone()));
    }
    groups
}

/// The link rule, applied to a channel's links (`latest`: its latest `seq`): linking twice
/// is one link, a ninth is refused and changes nothing, removing an absent link is harmless.
/// A new link starts after `latest` (what came before is not forwarded); a removed one keeps
/// forwarding what it owes (up to `latest`), and linking it again takes it back.
pub fn apply(links: &mut Vec<Link>, inbox: &Channel, remove: bool, latest: u64) -> LinkResult {
    let held = links.iter().position(|l| &l.inbox == inbox);
    let holding = links.iter().filter(|l| l.holds()).count();
    match (remove, held) {
        (true, Some(i)) => {
            if links[i].holds() {
                links[i].until = Some(latest);
            }
            LinkResult { linked: false, error: None }
        }
        (true, None) => LinkResult { linked: false, error: None },
        (false, Some(i)) if links[i].holds() => LinkResult { linked: true, error: None },
        (false, _) if holding >= MAX_LINKS_PER_CHANNEL => LinkResult { linked: false, error: Some("too_many_links".to_owned()) },
        (false, Some(i)) => {
            links[i].until = None;
            LinkResult { linked: true, error: None }
        }
        (false, None) => {
            links.push(Link::new(inbox.clone(), latest));
            LinkResult { linked: true, error: None }
        }
    }
}

/// The dedupe key an inbox stores a copy under: one per source channel and source `seq`.
/// (Backend events are keyed `p:…` and chat messages `c:…`: the three cannot collide.)
pub fn copy_key(source: &Channel, seq: u64) -> String {
    format!("f:{source}#{seq}")
}

/// The source a stored key names, for a copy (none for the inbox's own events).
pub fn source_of_key(key: &str) -> Option<Source> {
    let (channel, seq) = key.strip_prefix("f:")?.rsplit_once('#')?;
    Some(Source { channel: Channel::parse(channel).ok()?.to_string(), seq: seq.parse().ok()? })
}

/// One call to make: an inbox and its oldest pending events (as the source stored them,
/// `seq` being the source's).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inbox: Channel,
    pub events: Vec<StoredEvent>,
}

impl Batch {
    /// The last source `seq` it carries: a delivered batch drops the copies up to it.
    pub fn upto(&self) -> u64 {
        self.events.last().map_or(0, |e| e.seq)
    }
}

/// The calls under way, by inbox, with the time after which each may be sent again. Memory
/// only: a woken instance has none under way (its calls died with the old one).
#[derive(Debug, Default)]
pub struct InFlight(BTreeMap<String, i64>);

impl InFlight {
    /// Whether a call to `inbox` may start now: one call per inbox at a time keeps a
    /// source's copies in order (a second call could overtake the first).
    pub fn may_send(&self, inbox: &Channel, now: i64) -> bool {
        self.0.get(&inbox.to_string()).is_none_or(|&until| until <= now)
    }

    pub fn start(&mut self, inbox: &Channel, now: i64) {
        self.0.insert(inbox.to_string(), now + FORWARD_CALL_MS);
    }

    pub fn finish(&mut self, inbox: &Channel) {
        self.0.remove(&inbox.to_string());
    }

    /// When pending work next needs the room: an idle link's next try, or the end of the
    /// call under way (when it may be sent again).
    pub fn next_due<'l>(&self, pending: impl Iterator<Item = &'l Link>) -> Option<i64> {
        pending.map(|l| self.0.get(&l.inbox.to_string()).map_or(l.next_at, |&until| until.max(l.next_at))).min()
    }
}

/// The copies of one batch that fit a call: at most [`FORWARD_BATCH`] events and
/// [`FORWARD_BATCH_BYTES`] bytes, and always the first (a call must make progress).
pub fn fit(events: &mut Vec<StoredEvent>) {
    let mut total = 0;
    let keep = events
        .iter()
        .take(FORWARD_BATCH)
        .take_while(|e| {
            total += e.data.len() + e.id.len() + e.event.len();
            total <= FORWARD_BATCH_BYTES
        })
        .count()
        .max(1);
    events.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ch(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn a_links_body_parses_in_order_with_remove_optional() {
        let orders = parse_body(&body(json!({"links": [
            {"channel": "chat:o-1", "inbox": "inbox:v1"},
            {"channel": "orders:v1", "inbox": "inbox:v1", "remove": true},
            {"channel": "payment:p", "inbox": "inbox:v2", "remove": false},
        ]})))
        .unwrap();
        assert_eq!(orders[0], LinkOrder { channel: ch("chat:o-1"), inbox: ch("inbox:v1"), remove: false });
        assert!(orders[1].remove && !orders[2].remove);
    }

    #[test]
    fn every_malformed_links_body_is_a_400() {
        let entry = json!({"channel": "chat:o-1", "inbox": "inbox:v1"});
        let cases = [
            json!([entry]),
            json!({}),
            json!({"links": []}),
            json!({"links": entry}),
            json!({"links": (0..101).map(|_| entry.clone()).collect::<Vec<_>>()}),
            json!({"links": [1]}),
            json!({"links": [{"inbox": "inbox:v1"}]}),
            json!({"links": [{"channel": "chat:o-1"}]}),
            json!({"links": [{"channel": "chat:o 1", "inbox": "inbox:v1"}]}),
            json!({"links": [{"channel": "news:x", "inbox": "inbox:v1"}]}),
            json!({"links": [{"channel": 5, "inbox": "inbox:v1"}]}),
            // From an inbox, or to anything but an inbox.
            json!({"links": [{"channel": "inbox:v2", "inbox": "inbox:v1"}]}),
            json!({"links": [{"channel": "chat:o-1", "inbox": "orders:v1"}]}),
            json!({"links": [{"channel": "chat:o-1", "inbox": "inbox:"}]}),
            json!({"links": [{"channel": "chat:o-1", "inbox": "inbox:v1", "remove": "yes"}]}),
            // One bad entry refuses the whole request.
            json!({"links": [entry, {"channel": "chat:o-1", "inbox": "chat:o-2"}]}),
        ];
        for c in cases {
            assert!(matches!(parse_body(&body(c.clone())), Err(BodyError::Invalid(_))), "{c}");
        }
        for raw in [&b"not json"[..], b"", b"{\"links\":"] {
            assert!(parse_body(raw).is_err());
        }
        assert_eq!(parse_body(&body(json!({"links": (0..100).map(|_| entry.clone()).collect::<Vec<_>>()}))).unwrap().len(), 100);
    }

    #[test]
    fn a_channel_holds_at_most_eight_links_and_linking_twice_is_one_link() {
        let mut links = Vec::new();
        for i in 0..8 {
            assert_eq!(apply(&mut links, &ch(&format!("inbox:v{i}")), false, 5), LinkResult { linked: true, error: None });
        }
        assert_eq!(links[0], Link::new(ch("inbox:v0"), 5), "what came before the link is not forwarded");
        assert_eq!(apply(&mut links, &ch("inbox:v3"), false, 6), LinkResult { linked: true, error: None }, "twice is one link");
        assert_eq!(links[3].sent, 5);
        assert_eq!(
            apply(&mut links, &ch("inbox:v8"), false, 6),
            LinkResult { linked: false, error: Some("too_many_links".into()) },
            "a ninth is refused"
        );
        assert_eq!(links.len(), 8, "and leaves the others in place");
        assert_eq!(apply(&mut links, &ch("inbox:v3"), true, 7), LinkResult { linked: false, error: None });
        assert_eq!(links[3].until, Some(7), "removed: what it owes up to now still goes");
        assert_eq!(apply(&mut links, &ch("inbox:v3"), true, 9), LinkResult { linked: false, error: None }, "removing twice is harmless");
        assert_eq!(links[3].until, Some(7));
        assert!(apply(&mut links, &ch("inbox:v8"), false, 9).linked, "a freed place can be taken");
        assert_eq!(apply(&mut links, &ch("inbox:v3"), false, 9), LinkResult { linked: false, error: Some("too_many_links".into()) });
    }

    #[test]
    fn a_link_owes_what_came_after_its_cursor_up_to_its_removal() {
        let mut link = Link::new(ch("inbox:v"), 3);
        assert!(!link.pending(3) && link.pending(4) && link.upto(9) == 9);
        link.until = Some(6);
        assert_eq!(link.upto(9), 6, "nothing after the removal");
        assert!(link.pending(9) && !link.done());
        link.sent = 6;
        assert!(!link.pending(9) && link.done());
    }

    #[test]
    fn orders_group_by_source_channel_keeping_their_positions() {
        let orders = parse_body(&body(json!({"links": [
            {"channel": "chat:b", "inbox": "inbox:v1"},
            {"channel": "chat:a", "inbox": "inbox:v1"},
            {"channel": "chat:b", "inbox": "inbox:v1", "remove": true},
        ]})))
        .unwrap();
        let groups = group_by_channel(&orders);
        assert_eq!(groups[&ch("chat:b")].iter().map(|(i, o)| (*i, o.remove)).collect::<Vec<_>>(), [(0, false), (2, true)]);
        assert_eq!(groups[&ch("chat:a")][0].0, 1);
    }

    #[test]
    fn a_copy_key_names_its_source_and_nothing_else_does() {
        let key = copy_key(&ch("chat:o-1"), 7);
        assert_eq!(source_of_key(&key), Some(Source { channel: "chat:o-1".into(), seq: 7 }));
        for other in ["p:evt-1", "c:u\u{0}m1", "f:chat:o-1", "f:news:x#1", "f:chat:o-1#x"] {
            assert_eq!(source_of_key(other), None, "{other}");
        }
        // A publish id that looks like a copy key is still a publish: its key starts with p:.
        assert_eq!(source_of_key(&format!("p:{key}")), None);
    }

    #[test]
    fn one_call_per_inbox_at_a_time_until_it_is_answered_or_overdue() {
        let mut flight = InFlight::default();
        let (a, b) = (ch("inbox:a"), ch("inbox:b"));
        assert!(flight.may_send(&a, 0));
        flight.start(&a, 0);
        assert!(!flight.may_send(&a, 1) && flight.may_send(&b, 1));
        assert!(flight.may_send(&a, FORWARD_CALL_MS), "a call lost with no answer is sent again");
        let pending = [Link { next_at: 5, ..Link::new(a.clone(), 0) }, Link { next_at: 900, attempts: 2, ..Link::new(b.clone(), 0) }];
        assert_eq!(flight.next_due(pending.iter()), Some(900), "the call under way times itself");
        flight.finish(&a);
        assert_eq!(flight.next_due(pending.iter()), Some(5));
        assert_eq!(flight.next_due([].iter()), None, "nothing pending: no deadline");
    }

    #[test]
    fn a_batch_is_bounded_in_events_and_bytes_but_always_moves() {
        let event = |seq, size| StoredEvent { seq, id: "i".into(), event: "e".into(), data: "x".repeat(size), ts: 0, source: None };
        let mut many: Vec<StoredEvent> = (1..=150).map(|s| event(s, 10)).collect();
        fit(&mut many);
        assert_eq!(many.len(), FORWARD_BATCH);
        let mut big: Vec<StoredEvent> = (1..=40).map(|s| event(s, 64 * 1024)).collect();
        fit(&mut big);
        assert_eq!(big.len(), 15);
        let mut huge = vec![event(1, 2 * FORWARD_BATCH_BYTES), event(2, 1)];
        fit(&mut huge);
        assert_eq!(huge.len(), 1);
    }
}
