//! The baseline's `verifyToken` (bench/baseline/worker.js) in Rust: the HS256 signature, then
//! the claims the baseline checks. Strings cross through one buffer in the module's memory;
//! no wasm-bindgen, so the JavaScript side is a handful of lines.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    exp: f64,
    #[serde(default)]
    channels: Vec<String>,
}

/// A buffer of at least `len` bytes for the next call's input.
#[no_mangle]
pub extern "C" fn buffer(len: usize) -> *mut u8 {
    BUFFER.with(|b| {
        let mut b = b.borrow_mut();
        b.resize(len, 0);
        b.as_mut_ptr()
    })
}

/// The HMAC key: the buffer's first `len` bytes.
#[no_mangle]
pub extern "C" fn set_key(len: usize) {
    let key = BUFFER.with(|b| b.borrow()[..len].to_vec());
    KEY.with(|k| *k.borrow_mut() = key);
}

/// The buffer holds the token, the channel and the issuer, of these lengths. The token's
/// `exp`, or -4401 (bad token) or -4403 (channel not granted), as the baseline answers.
#[no_mangle]
pub extern "C" fn check(token: usize, channel: usize, issuer: usize, now: f64) -> f64 {
    BUFFER.with(|b| {
        let b = b.borrow();
        let (Some(t), Some(c), Some(i)) = (b.get(..token), b.get(token..token + channel), b.get(token + channel..token + channel + issuer))
        else {
            return -4401.0;
        };
        match verify(t, c, i, now) {
            Ok(exp) => exp,
            Err(code) => -f64::from(code),
        }
    })
}

fn verify(token: &[u8], channel: &[u8], issuer: &[u8], now: f64) -> Result<f64, u16> {
    let mut parts = token.split(|&x| x == b'.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(4401);
    };
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| 4401u16)?;
    let mut mac = KEY.with(|k| Hmac::<Sha256>::new_from_slice(&k.borrow())).map_err(|_| 4401u16)?;
    mac.update(&token[..h.len() + 1 + p.len()]);
    mac.verify_slice(&signature).map_err(|_| 4401u16)?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|_| 4401u16)?).map_err(|_| 4401u16)?;
    if claims.iss.as_bytes() != issuer || claims.aud != "foyer" || claims.exp + 30.0 <= now {
        return Err(4401);
    }
    if claims.channels.iter().any(|g| g.as_bytes() == channel) {
        Ok(claims.exp)
    } else {
        Err(4403)
    }
}
