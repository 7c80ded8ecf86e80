//! `X-Foyer-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<path>." + body)>`.
//!
//! Used on `/publish` and `/revoke` (checked) and on the chat webhook (produced). Binding the
//! path into the MAC makes a signature valid for one endpoint only.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signature whose `t` is further than this from the gateway's clock is stale.
pub const MAX_SKEW_SECS: i64 = 300;

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
    NoSecretConfigured,
}

fn mac(secret: &[u8], t: i64, path: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!()); // ok: infallible for HMAC
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(path.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent to `path` at time `t`.
pub fn sign(secret: &[u8], t: i64, path: &str, body: &[u8]) -> String {
    let tag = mac(secret, t, path, body).finalize().into_bytes();
    format!("t={t},v1={}", hex(&tag))
}

/// Lowercase hex, as signatures (and ids and tags derived from bytes) are written: every
/// connect makes one (its socket id), so one allocation, not a `format!` per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Checks a signature header against every configured secret (rotation): one match suffices.
/// Tags are compared in constant time by `Mac::verify_slice`. Returns the signed `t`: the
/// backend's clock at signing, which is what a revocation's time is (PROTOCOL.md).
pub fn verify(header: Option<&str>, secrets: &[Vec<u8>], path: &str, body: &[u8], now: i64) -> Result<i64, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
            }
            Some(("t", _)) => return Err(SignatureError::Malformed),
            Some(("v1", v)) => tags.extend(decode_hex(v).filter(|tag| tag.len() == 32)),
            // Unknown schemes are ignored so that a future `v2` can be sent alongside `v1`.
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    let matched = secrets.iter().any(|secret| {
        let base = mac(secret, t, path, body);
        // Evaluate every tag (no early exit on the first mismatch of a secret).
        tags.iter().fold(false, |ok, tag| base.clone().verify_slice(tag).is_ok() | ok)
    });
    if matched {
        Ok(t)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
    }

    const NOW: i64 = 1_800_000_000;
    const BODY: &[u8] = br#"{"id":"e1","channels":["orders:v1"],"event":"x"}"#;

    fn secrets() -> Vec<Vec<u8>> {
        vec![b"new-secret".to_vec(), b"old-secret".to_vec()]
    }

    #[test]
    fn a_signature_from_any_configured_secret_verifies() {
        for s in secrets() {
            assert_eq!(verify(Some(&sign(&s, NOW, "/publish", BODY)), &secrets(), "/publish", BODY, NOW), Ok(NOW));
        }
    }

    #[test]
    fn several_v1_entries_need_one_match_and_hex_case_is_free() {
        let good = sign(b"old-secret", NOW, "/publish", BODY);
        let tag = good.split("v1=").nth(1).unwrap();
        let header = format!("t={NOW},v1={},v1={}", "0".repeat(64), tag.to_uppercase());
        assert_eq!(verify(Some(&header), &secrets(), "/publish", BODY, NOW), Ok(NOW));
    }

    #[test]
    fn a_signature_is_bound_to_its_path_body_and_time() {
        let header = sign(b"new-secret", NOW, "/publish", BODY);
        assert_eq!(verify(Some(&header), &secrets(), "/revoke", BODY, NOW), Err(SignatureError::Mismatch));
        let mut tampered = BODY.to_vec();
        tampered[5] ^= 1;
        assert_eq!(verify(Some(&header), &secrets(), "/publish", &tampered, NOW), Err(SignatureError::Mismatch));
        let moved = header.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(verify(Some(&moved), &secrets(), "/publish", BODY, NOW), Err(SignatureError::Mismatch));
        assert_eq!(verify(Some(&header), &[b"other".to_vec()], "/publish", BODY, NOW), Err(SignatureError::Mismatch));
    }

    #[test]
    fn timestamps_beyond_300_seconds_either_way_are_stale() {
        for (t, ok) in [(NOW - 300, true), (NOW + 300, true), (NOW - 301, false), (NOW + 301, false)] {
            let h = sign(b"new-secret", t, "/publish", BODY);
            let got = verify(Some(&h), &secrets(), "/publish", BODY, NOW);
            assert_eq!(got.is_ok(), ok, "t={t}: {got:?}");
        }
    }

    #[test]
    fn malformed_or_missing_headers_are_refused() {
        let tag = "a".repeat(64);
        for h in [
            String::new(),
            format!("v1={tag}"),
            format!("t={NOW}"),
            format!("t={NOW},v1=zz{}", &tag[2..]),
            format!("t={NOW},v1={}", &tag[1..]),
            format!("t=1.5,v1={tag}"),
            format!("t=-{NOW},v1={tag}"),
            format!("t={NOW},t={NOW},v1={tag}"),
            format!("t=99999999999999999999999,v1={tag}"),
        ] {
            assert!(verify(Some(&h), &secrets(), "/publish", BODY, NOW).is_err(), "{h}");
        }
        assert_eq!(verify(None, &secrets(), "/publish", BODY, NOW), Err(SignatureError::Missing));
    }

    #[test]
    fn with_no_secret_configured_everything_is_refused() {
        let h = sign(b"", NOW, "/publish", BODY);
        assert_eq!(verify(Some(&h), &[], "/publish", BODY, NOW), Err(SignatureError::NoSecretConfigured));
    }
}
