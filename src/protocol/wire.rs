//! The wire vocabulary of PROTOCOL.md in one place: the subprotocol and bearer prefix, the
//! keep-alive frames, the close codes, and the codes of `error` frames. A word the protocol
//! fixes is written here once; everything else names it.

use serde::{Deserialize, Serialize};

/// The subprotocol the server selects; a client must offer it.
pub const SUBPROTOCOL: &str = "foyer.v1";
/// A token offered as a subprotocol: `bearer.<JWT>`.
pub const BEARER_PREFIX: &str = "bearer.";

/// The unframed keep-alive, answered with `pong` by the runtime itself (no wake-up).
pub const PING: &str = "ping";
pub const PONG: &str = "pong";

/// Close codes (PROTOCOL.md "Close codes").
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHENTICATED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const OUTDATED_BUILD: u16 = 4426;
    pub const RATE_LIMITED: u16 = 4429;
}

/// The `code` of an `error` frame: a short machine word a client can switch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a JSON object with a string `type`.
    BadFrame,
    /// A known frame type with a missing or ill-typed field.
    BadField,
    UnknownType,
    /// The protocol has no binary frames.
    BinaryUnsupported,
    /// Not allowed here: no `publish` grant, or a channel that takes no client messages.
    Forbidden,
    /// A chat message with no text.
    Empty,
    /// A chat message over 2000 characters.
    TooLong,
    /// Over the message rate (per connection or per user).
    RateLimited,
    /// An inbox `send` that names no well-formed chat channel.
    BadChannel,
    /// The chat a `send` was relayed to could not be reached; retrying the same `id` is safe.
    Unavailable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_the_protocols_words() {
        let words: Vec<String> = [
            ErrorCode::BadFrame,
            ErrorCode::BadField,
            ErrorCode::UnknownType,
            ErrorCode::BinaryUnsupported,
            ErrorCode::Forbidden,
            ErrorCode::Empty,
            ErrorCode::TooLong,
            ErrorCode::RateLimited,
            ErrorCode::BadChannel,
            ErrorCode::Unavailable,
        ]
        .iter()
        .map(|c| serde_json::to_value(c).unwrap().as_str().unwrap().to_owned())
        .collect();
        assert_eq!(
            words,
            [
                "bad_frame",
                "bad_field",
                "unknown_type",
                "binary_unsupported",
                "forbidden",
                "empty",
                "too_long",
                "rate_limited",
                "bad_channel",
                "unavailable"
            ]
        );
    }
}
