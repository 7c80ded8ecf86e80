//! Client frames on arbitrary input, through the parser and the whole room engine.
#![no_main]

use foyer::protocol::channel::{Channel, Grants};
use foyer::protocol::handshake::parse_path;
use foyer::devkit::MemStore;
use foyer::protocol::room::{Incoming, Limits, Member, Memory, Room};
use foyer::protocol::token::{Claims, TokenError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_path(text);
    let channel = Channel::parse("chat:room").expect("valid");
    let claims = Claims {
        sub: "u".into(),
        exp: 1_800_000_600,
        iat: Some(1_800_000_000),
        channels: Grants::from_entries(["chat:room"]),
        publish: Grants::from_entries(["chat:room"]),
        name: Some("n".into()),
        role: None,
    };
    let mut store = MemStore::default();
    let mut memory = Memory::default();
    let mut room = Room::new(&channel, &mut store, &mut memory, Limits::default());
    let mut member = Member::new("c".into(), &claims, &channel);
    let refresh = |_: &str| -> Result<Claims, TokenError> { Ok(claims.clone()) };
    // Each line is one frame, so one input can drive a short conversation.
    for (i, line) in text.split('\n').enumerate() {
        let _ = room.on_text(&mut member, line, &Incoming { now_ms: 1_800_000_000_000 + i as i64, verify: &refresh });
    }
    let _ = room.on_binary(&mut member, data.len());
});
