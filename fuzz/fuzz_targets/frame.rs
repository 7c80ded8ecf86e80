//! Client frames on arbitrary input, through the parser and the whole room engine: on a chat
//! (sends, refreshes, the user's rate) and on an inbox (sends naming a chat, relayed posts
//! answered back), with the chat linked into the inbox (forwarding due after each frame).
#![no_main]

use foyer::devkit::MemStore;
use foyer::protocol::channel::{Channel, Grants};
use foyer::protocol::handshake::parse_path;
use foyer::protocol::links::LinkOrder;
use foyer::protocol::room::{Effect, Incoming, Limits, Member, Memory, Posted, Room, Verified};
use foyer::protocol::token::{Claims, TokenError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_path(text);
    let chat = Channel::parse("chat:room").expect("valid");
    let inbox = Channel::parse("inbox:venue").expect("valid");
    let claims = Claims {
        sub: "u".into(),
        exp: 1_800_000_600,
        iat: Some(1_800_000_000),
        channels: Grants::from_entries(["chat:room", "inbox:venue"]),
        publish: Grants::from_entries(["chat:room", "chat:*"]),
        name: Some("n".into()),
        role: None,
    };
    let (mut chat_store, mut inbox_store) = (MemStore::default(), MemStore::default());
    let (mut chat_memory, mut inbox_memory) = (Memory::default(), Memory::default());
    let mut room = Room::new(&chat, &mut chat_store, &mut chat_memory, Limits::default());
    let mut staff_room = Room::new(&inbox, &mut inbox_store, &mut inbox_memory, Limits::default());
    let _ = room.link(&[LinkOrder { channel: chat.clone(), inbox: inbox.clone(), remove: false }]);
    let mut member = Member::admit("c".into(), Verified::new(&claims, &chat));
    let staff_verified = Verified::new(&claims, &inbox);
    let _ = staff_room.keep_answers("s", &staff_verified.answers);
    let mut staff = Member::admit("s".into(), staff_verified);
    let refresh = |_: &str| -> Result<Claims, TokenError> { Ok(claims.clone()) };
    // Each line is one frame, so one input can drive a short conversation; even lines go to
    // the chat's socket, odd ones to the inbox's (whose sends are relayed to the chat).
    for (i, line) in text.split('\n').enumerate() {
        let now_ms = 1_800_000_000_000 + i as i64;
        let incoming = Incoming { now_ms, verify: &refresh };
        if i % 2 == 0 {
            let _ = room.on_text(&mut member, line, &incoming);
        } else if let Ok(effects) = staff_room.on_text(&mut staff, line, &incoming) {
            for effect in effects {
                if let Effect::Relay(_, post) = effect {
                    let posted = room.post(&post, now_ms).ok().map(|(posted, _)| posted);
                    let _ = staff_room.relayed(posted.or(Some(Posted::Accepted)));
                }
            }
        }
        if let Ok(batches) = room.forwards_due(now_ms) {
            for batch in batches {
                let _ = staff_room.accept_copies(&chat, &batch.events, now_ms);
                let _ = room.forward_attempted(&batch, i % 3 != 0, now_ms);
            }
        }
    }
    let _ = room.on_binary(&mut member, data.len());
});
