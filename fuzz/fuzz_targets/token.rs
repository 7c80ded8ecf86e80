//! The token verifier on arbitrary input: it may refuse, never panic.
#![no_main]

use std::sync::OnceLock;

use foyer::devkit::{jwks, SigningKey};
use foyer::protocol::token::{verify, Expectations, KeySet};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (h, e, s) = (SigningKey::hs256(1), SigningKey::eddsa(2), SigningKey::es256(3));
        KeySet::from_jwks(&jwks(&[(&h, Some("hs")), (&e, Some("ed")), (&s, Some("es"))])).expect("test keys")
    })
}

fuzz_target!(|data: &[u8]| {
    let expect = Expectations::new("i".into(), "foyer".into(), 900);
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verify(token, keys(), &expect, 1_800_000_000);
    }
    // Also as a JWKS document: configuration parsing must not panic either.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = KeySet::from_jwks(text);
    }
});
