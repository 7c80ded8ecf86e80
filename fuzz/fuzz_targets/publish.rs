//! The signed endpoints on arbitrary input: signature header (first line) and body (the
//! rest), as a publish, a revoke and a `/links` body.
#![no_main]

use foyer::protocol::{links, publish, signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let header = std::str::from_utf8(header).ok();
    let _ = signature::verify(header, &[b"secret".to_vec()], "/publish", body, 1_800_000_000);
    if let Ok(messages) = publish::parse_body(body) {
        let _ = publish::group_by_channel(&messages);
    }
    let _ = publish::parse_revoke(body);
    if let Ok(orders) = links::parse_body(body) {
        let _ = links::group_by_channel(&orders);
    }
});
