//! Foyer's `CryptoProvider` for jsonwebtoken: the three algorithms the contract accepts and
//! nothing else (neither of jsonwebtoken's own providers is enabled, so no RSA or P-384 code
//! is linked). It verifies only: the gateway never signs a token.
//!
//! HS256 is checked here in Rust. EdDSA and ES256 go to a [`Curves`] backend: on the host,
//! the pure-Rust [`RustCurves`] (the reference the tests hold everything to); in the Worker,
//! the runtime's native crypto, which the shell installs with [`use_curves`] before any key
//! loads (src/edge/crypto.rs). Without a backend, asymmetric keys are refused at load.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use sha2::Sha256;

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| Err(ErrorKind::Provider("the gateway verifies tokens, it never signs them".into()).into()),
    verifier_factory: verifier,
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes this the process's provider. Called before any key set exists (so before any
/// token is verified); later calls are no-ops, and nothing else in the crate installs one.
pub(super) fn install() {
    let _ = PROVIDER.install_default();
}

/// Checks EdDSA (Ed25519) and ES256 (P-256, SHA-256) signatures. Keys arrive as raw public
/// key bytes: Ed25519's 32, or P-256's SEC1 uncompressed point (65, starting with 4).
pub trait Curves: Sync {
    /// Whether `key` is a usable public key for `alg` (asked once per key, at load).
    fn accepts(&self, alg: Algorithm, key: &[u8]) -> bool;
    /// A JWS signature (raw bytes: R || S for ES256, not DER) over `signed`.
    fn verify(&self, alg: Algorithm, key: &[u8], signed: &[u8], signature: &[u8]) -> bool;
}

static CURVES: OnceLock<&'static dyn Curves> = OnceLock::new();

/// Chooses the backend for EdDSA and ES256, once, before the first key loads.
pub fn use_curves(curves: &'static dyn Curves) {
    let _ = CURVES.set(curves);
}

fn curves() -> Option<&'static dyn Curves> {
    #[cfg(not(target_arch = "wasm32"))]
    return Some(*CURVES.get_or_init(|| &RustCurves));
    #[cfg(target_arch = "wasm32")]
    return CURVES.get().copied();
}

/// A key ready to check one signature.
enum Verifier {
    Hs256(Hmac<Sha256>),
    Curve(Algorithm, &'static dyn Curves, Vec<u8>),
}

/// jsonwebtoken's entry point, and the one judge of key material: configuration runs it
/// once per key at load, so a key that loads is a key that verifies.
pub(super) fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let DecodingKeyKind::SecretOrDer(bytes) = key.kind() else {
        return Err(ErrorKind::InvalidKeyFormat.into());
    };
    let prepared = match alg {
        Algorithm::HS256 => Verifier::Hs256(Hmac::new_from_slice(bytes).map_err(|_| ErrorKind::InvalidKeyFormat)?),
        Algorithm::EdDSA | Algorithm::ES256 => {
            let curves = curves().ok_or(ErrorKind::Provider("no EdDSA/ES256 backend is installed".into()))?;
            Verifier::Curve(*alg, curves, bytes.clone())
        }
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(prepared))
}

/// Whether `key` loads for `alg`, with the reason when it does not.
pub(super) fn check_key(alg: Algorithm, key: &DecodingKey) -> Result<(), String> {
    match (verifier(&alg, key), key.kind()) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(_), DecodingKeyKind::SecretOrDer(bytes)) if alg != Algorithm::HS256 => {
            let curves = curves().ok_or("no EdDSA/ES256 backend is installed")?;
            curves.accepts(alg, bytes).then_some(()).ok_or_else(|| "not a valid public key".into())
        }
        (Ok(_), _) => Ok(()),
    }
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, signed: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match self {
            // Constant-time comparison inside `verify_slice`.
            Verifier::Hs256(mac) => mac.clone().chain_update(signed).verify_slice(signature).is_ok(),
            Verifier::Curve(alg, curves, key) => curves.verify(*alg, key, signed, signature),
        };
        ok.then_some(()).ok_or_else(signature::Error::new)
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        match self {
            Verifier::Hs256(_) => Algorithm::HS256,
            Verifier::Curve(alg, ..) => *alg,
        }
    }
}

/// EdDSA and ES256 in pure Rust (`ed25519-dalek`, `p256`): the host's backend.
#[cfg(not(target_arch = "wasm32"))]
pub struct RustCurves;

#[cfg(not(target_arch = "wasm32"))]
impl Curves for RustCurves {
    fn accepts(&self, alg: Algorithm, key: &[u8]) -> bool {
        match alg {
            Algorithm::EdDSA => <&[u8; 32]>::try_from(key).is_ok_and(|x| ed25519_dalek::VerifyingKey::from_bytes(x).is_ok()),
            // Parsing the SEC1 point checks that it lies on the curve.
            Algorithm::ES256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(key).is_ok(),
            _ => false,
        }
    }

    fn verify(&self, alg: Algorithm, key: &[u8], signed: &[u8], signature: &[u8]) -> bool {
        match alg {
            Algorithm::EdDSA => {
                let Ok(x) = <&[u8; 32]>::try_from(key) else { return false };
                let (Ok(key), Ok(sig)) = (ed25519_dalek::VerifyingKey::from_bytes(x), ed25519_dalek::Signature::from_slice(signature))
                else {
                    return false;
                };
                key.verify_strict(signed, &sig).is_ok()
            }
            Algorithm::ES256 => {
                let (Ok(key), Ok(sig)) = (p256::ecdsa::VerifyingKey::from_sec1_bytes(key), p256::ecdsa::Signature::from_slice(signature))
                else {
                    return false;
                };
                p256::ecdsa::signature::Verifier::verify(&key, signed, &sig).is_ok()
            }
            _ => false,
        }
    }
}
