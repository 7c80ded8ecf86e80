//! Channel names (`KIND:KEY`), the four kinds and their room policies, and grants.

use std::fmt;

/// The four kinds of channel. They share one room engine and differ only by [`Policy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Orders,
    Payment,
    Chat,
    /// A venue's staff follow the channels linked into it over one socket (PROTOCOL v1.2).
    Inbox,
}

/// What to replay to a socket that connects without `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    Nothing,
    Everything,
    Last(usize),
}

/// The decisions in which the kinds differ. Everything else is the same engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Clients may post `send` frames (still subject to a `publish` grant).
    pub clients_may_send: bool,
    /// Replay on connect without `since`.
    pub replay_without_since: Replay,
    /// Broadcast `presence` joined/left frames.
    pub presence: bool,
    /// Client `send` frames name the chat they post to (an inbox answers its linked chats).
    pub sends_to_named_chat: bool,
    /// May be linked into an inbox (every kind but the inbox itself: no chains, no loops).
    pub linkable: bool,
}

impl Policy {
    /// What the kinds share: clients only listen, nobody is listed, linkable.
    const QUIET: Policy = Policy {
        clients_may_send: false,
        replay_without_since: Replay::Nothing,
        presence: false,
        sends_to_named_chat: false,
        linkable: true,
    };
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "orders" => Some(Kind::Orders),
            "payment" => Some(Kind::Payment),
            "chat" => Some(Kind::Chat),
            "inbox" => Some(Kind::Inbox),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Orders => "orders",
            Kind::Payment => "payment",
            Kind::Chat => "chat",
            Kind::Inbox => "inbox",
        }
    }

    pub fn policy(self) -> Policy {
        match self {
            // Staff dashboards load the current state from the backend, then follow live.
            Kind::Orders => Policy { replay_without_since: Replay::Nothing, ..Policy::QUIET },
            // A late customer page must see "paid" at once: replay everything retained.
            Kind::Payment => Policy { replay_without_since: Replay::Everything, ..Policy::QUIET },
            Kind::Chat => Policy { clients_may_send: true, replay_without_since: Replay::Last(50), presence: true, ..Policy::QUIET },
            // Copies of the linked channels' events; staff answer a chat by naming it.
            Kind::Inbox => Policy { replay_without_since: Replay::Last(50), sends_to_named_chat: true, linkable: false, ..Policy::QUIET },
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `KEY` matches `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A well-formed channel name. Its `Display` form is the Durable Object's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel {
    kind: Kind,
    key: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ChannelError {
    UnknownKind,
    MalformedKey,
    Malformed,
}

impl Channel {
    pub fn new(kind: Kind, key: &str) -> Result<Channel, ChannelError> {
        if is_valid_key(key) {
            Ok(Channel { kind, key: key.to_owned() })
        } else {
            Err(ChannelError::MalformedKey)
        }
    }

    /// Parses `KIND:KEY`.
    pub fn parse(name: &str) -> Result<Channel, ChannelError> {
        let (kind, key) = name.split_once(':').ok_or(ChannelError::Malformed)?;
        let kind = Kind::parse(kind).ok_or(ChannelError::UnknownKind)?;
        Channel::new(kind, key)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `KEY`: for orders and inbox channels, the venue.
    pub fn key(&self) -> &str {
        &self.key
    }
}

// Piece by piece, not `write!`: every connect and publish names its channel, and this keeps
// the formatting machinery off those paths (V8 no longer optimizes it in a first storm).
impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        f.write_str(":")?;
        f.write_str(&self.key)
    }
}

/// On the wire between the Worker and the objects a channel is its name; reading one back
/// parses it again, so a `Channel` value is well-formed wherever it comes from.
impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Channel, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Channel::parse(&name).map_err(|e| serde::de::Error::custom(format!("not a channel name: {e:?}")))
    }
}

/// One entry of a `channels` or `publish` claim.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Grant {
    One(Channel),
    /// `KIND:*`, every channel of a kind (admin tokens).
    AllOf(Kind),
}

/// A set of grants from a token claim. Entries that name no channel grant nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants(Vec<Grant>);

impl Grants {
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> Grants {
        Grants(
            entries
                .into_iter()
                .filter_map(|entry| match entry.split_once(':') {
                    Some((kind, "*")) => Kind::parse(kind).map(Grant::AllOf),
                    _ => Channel::parse(entry).ok().map(Grant::One),
                })
                .collect(),
        )
    }

    /// The entries that grant channels of `kind`, written as in a claim (`chat:*`, `chat:o-1`).
    pub fn entries_of(&self, kind: Kind) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|grant| match grant {
                Grant::One(channel) if channel.kind() == kind => Some(channel.to_string()),
                Grant::AllOf(k) if *k == kind => Some(format!("{k}:*")),
                _ => None,
            })
            .collect()
    }

    pub fn allows(&self, channel: &Channel) -> bool {
        self.0.iter().any(|grant| match grant {
            Grant::One(granted) => granted == channel,
            Grant::AllOf(kind) => *kind == channel.kind(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_parse_and_print_round_trip() {
        let c = Channel::parse("orders:venue-1").unwrap();
        assert_eq!(c.kind(), Kind::Orders);
        assert_eq!(c.to_string(), "orders:venue-1");
        assert_eq!(Channel::parse("inbox:venue-1").unwrap().kind(), Kind::Inbox);
        assert!(Channel::parse(&format!("chat:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn malformed_channel_names_are_refused() {
        assert_eq!(Channel::parse("orders"), Err(ChannelError::Malformed));
        assert_eq!(Channel::parse("news:x"), Err(ChannelError::UnknownKind));
        assert_eq!(Channel::parse("Orders:x"), Err(ChannelError::UnknownKind));
        for key in ["", "a b", "a:b", "a/b", "é", "a.b", "*"] {
            assert_eq!(Channel::parse(&format!("chat:{key}")), Err(ChannelError::MalformedKey), "{key:?}");
        }
        assert_eq!(Channel::parse(&format!("chat:{}", "a".repeat(65))), Err(ChannelError::MalformedKey));
    }

    #[test]
    fn a_channel_travels_as_its_name_and_is_parsed_again_on_arrival() {
        let c = Channel::parse("payment:o-1").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""payment:o-1""#);
        assert_eq!(serde_json::from_str::<Channel>(r#""payment:o-1""#).unwrap(), c);
        for bad in [r#""news:x""#, r#""payment:""#, r#""payment""#, "42"] {
            assert!(serde_json::from_str::<Channel>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_match_exact_channels_and_kind_wildcards() {
        let g = Grants::from_entries(["payment:o-1", "orders:*", "bogus", "chat:*x"]);
        assert!(g.allows(&Channel::parse("payment:o-1").unwrap()));
        assert!(!g.allows(&Channel::parse("payment:o-2").unwrap()));
        assert!(g.allows(&Channel::parse("orders:any").unwrap()));
        assert!(!g.allows(&Channel::parse("chat:x").unwrap()));
        assert!(!Grants::default().allows(&Channel::parse("chat:x").unwrap()));
        assert_eq!(Grants::from_entries(["chat:a", "orders:*", "chat:*", "bogus"]).entries_of(Kind::Chat), ["chat:a", "chat:*"]);
    }

    #[test]
    fn kinds_differ_only_by_policy() {
        assert!(Kind::Chat.policy().clients_may_send);
        assert!(!Kind::Orders.policy().clients_may_send && !Kind::Payment.policy().clients_may_send);
        assert_eq!(Kind::Payment.policy().replay_without_since, Replay::Everything);
        assert_eq!(Kind::Chat.policy().replay_without_since, Replay::Last(50));
        assert_eq!(Kind::Orders.policy().replay_without_since, Replay::Nothing);
        let inbox = Kind::Inbox.policy();
        assert_eq!(inbox.replay_without_since, Replay::Last(50));
        assert!(inbox.sends_to_named_chat && !inbox.clients_may_send && !inbox.presence && !inbox.linkable);
        assert!([Kind::Orders, Kind::Payment, Kind::Chat].iter().all(|k| k.policy().linkable && !k.policy().sends_to_named_chat));
    }
}
