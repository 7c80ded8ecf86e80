//! EdDSA and ES256 token signatures checked by the runtime's native crypto (src/edge/hot.js),
//! installed as the token verifier's curve backend. Native verification is several times
//! faster than the same curves compiled to wasm, and keeps their code out of the module.

use std::cell::RefCell;

use jsonwebtoken::Algorithm;
use wasm_bindgen::prelude::*;

use crate::protocol::token::{alg_name as name, use_curves, Curves};

#[wasm_bindgen(module = "/src/edge/hot.js")]
extern "C" {
    fn public_key(alg: &str, raw: &[u8]) -> JsValue;
    fn verify_signature(alg: &str, key: &JsValue, signed: &[u8], signature: &[u8]) -> bool;
}

thread_local! {
    // The configured keys, imported once each (a JWKS holds a handful).
    static IMPORTED: RefCell<Vec<(Algorithm, Vec<u8>, JsValue)>> = const { RefCell::new(Vec::new()) };
}

/// The imported key for `raw`, importing it on first use; null when it is not a key.
fn imported(alg: Algorithm, raw: &[u8]) -> JsValue {
    IMPORTED.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some((_, _, key)) = keys.iter().find(|(a, bytes, _)| *a == alg && bytes == raw) {
            return key.clone();
        }
        let key = public_key(name(alg), raw);
        if !key.is_null() {
            keys.push((alg, raw.to_vec(), key.clone()));
        }
        key
    })
}

struct NativeCurves;

impl Curves for NativeCurves {
    fn accepts(&self, alg: Algorithm, key: &[u8]) -> bool {
        matches!(alg, Algorithm::EdDSA | Algorithm::ES256) && !imported(alg, key).is_null()
    }

    fn verify(&self, alg: Algorithm, key: &[u8], signed: &[u8], signature: &[u8]) -> bool {
        let key = imported(alg, key);
        !key.is_null() && verify_signature(name(alg), &key, signed, signature)
    }
}

/// Installs the native backend; called before the configuration (and its keys) loads.
pub fn install() {
    use_curves(&NativeCurves);
}
