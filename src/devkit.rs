//! Host-side helpers for tests, the benchmark and operator tools: signing keys, their public
//! JWKs, token minting with full control over header and claims (so tests can also forge
//! the malformed tokens the gateway must refuse), and an in-memory room store. Never
//! compiled into the Worker.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::protocol::channel::Channel;
use crate::protocol::frame::StoredEvent;
use crate::protocol::links::{Link, LinkStore};
use crate::protocol::room::Store;
use crate::protocol::webhook::{Outbox, Queued, OUTBOX_MAX};

/// A signing key of one of the three supported algorithms.
pub enum SigningKey {
    Hs256(Vec<u8>),
    EdDsa(ed25519_dalek::SigningKey),
    Es256(p256::ecdsa::SigningKey),
}

impl SigningKey {
    /// Deterministic keys from a seed, so tests and tools agree without storing key files.
    pub fn hs256(seed: u8) -> SigningKey {
        SigningKey::Hs256(vec![seed; 32])
    }

    pub fn eddsa(seed: u8) -> SigningKey {
        SigningKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    pub fn es256(seed: u8) -> SigningKey {
        // Any 32 bytes below the group order are a valid scalar; a repeated small byte is.
        let scalar = [seed.clamp(1, 0x7f); 32];
        let key = p256::ecdsa::SigningKey::from_bytes(&scalar.into()).expect("valid scalar"); // ok: host-only, fixed seeds
        SigningKey::Es256(key)
    }

    pub fn alg(&self) -> &'static str {
        match self {
            SigningKey::Hs256(_) => "HS256",
            SigningKey::EdDsa(_) => "EdDSA",
            SigningKey::Es256(_) => "ES256",
        }
    }

    /// The JWK the gateway is configured with (public part only for asymmetric keys).
    pub fn jwk(&self, kid: Option<&str>) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = match self {
            SigningKey::Hs256(secret) => json!({"kty": "oct", "alg": "HS256", "k": b64(secret)}),
            SigningKey::EdDsa(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64(k.verifying_key().as_bytes())})
            }
            SigningKey::Es256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                let (x, y) = (point.x().expect("uncompressed"), point.y().expect("uncompressed")); // ok: host-only, asked uncompressed
                json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "x": b64(x), "y": b64(y)})
            }
        };
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    /// Raw signature over `message` (the JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Hs256(secret) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key size"); // ok: host-only
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
            SigningKey::EdDsa(k) => {
                use ed25519_dalek::Signer;
                k.sign(message).to_bytes().to_vec()
            }
            SigningKey::Es256(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
        }
    }

    /// A token with the standard header (`alg`, `typ`, and `kid` when given).
    pub fn mint(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        self.mint_with_header(&header, claims)
    }

    /// A token with any header at all, signed with this key.
    pub fn mint_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64_json(header), b64_json(claims));
        let sig = URL_SAFE_NO_PAD.encode(self.sign(input.as_bytes()));
        format!("{input}.{sig}")
    }
}

pub fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWKS document from several keys.
pub fn jwks(keys: &[(&SigningKey, Option<&str>)]) -> String {
    json!({"keys": keys.iter().map(|(k, kid)| k.jwk(*kid)).collect::<Vec<_>>()}).to_string()
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// An in-memory [`Store`] for host tests and tools: the same contract as the SQLite one.
#[derive(Default, Debug)]
pub struct MemStore {
    pub latest: u64,
    pub events: Vec<StoredEvent>,
    /// The dedupe key of each retained event.
    pub keys: Vec<(String, u64)>,
    /// Queued webhook calls with when each is next due.
    pub outbox: Vec<(Queued, i64)>,
    /// Upkeep queries asked (pruning and outbox reads): each is a SQL statement in the
    /// Durable Object, so tests can hold the engine to asking only when it must.
    pub upkeep_queries: std::cell::Cell<u32>,
    /// The channel's links into inboxes.
    pub links: Vec<Link>,
    /// An inbox's sockets' chat grants, by connection.
    pub grants: Vec<(String, Vec<String>)>,
}

impl LinkStore for MemStore {
    fn links(&self) -> Result<Vec<Link>, String> {
        Ok(self.links.clone())
    }
    fn put_link(&mut self, link: &Link) -> Result<(), String> {
        match self.links.iter_mut().find(|l| l.inbox == link.inbox) {
            Some(held) => *held = link.clone(),
            None => self.links.push(link.clone()),
        }
        Ok(())
    }
    fn drop_link(&mut self, inbox: &Channel) -> Result<(), String> {
        self.links.retain(|l| &l.inbox != inbox);
        Ok(())
    }
    fn grants_put(&mut self, conn: &str, entries: &[String]) -> Result<(), String> {
        self.grants_drop(conn)?;
        self.grants.push((conn.to_owned(), entries.to_vec()));
        Ok(())
    }
    fn grants_of(&self, conn: &str) -> Result<Vec<String>, String> {
        Ok(self.grants.iter().find(|(c, _)| c == conn).map(|(_, g)| g.clone()).unwrap_or_default())
    }
    fn grants_drop(&mut self, conn: &str) -> Result<(), String> {
        self.grants.retain(|(c, _)| c != conn);
        Ok(())
    }
}

impl MemStore {
    fn upkeep(&self) {
        self.upkeep_queries.set(self.upkeep_queries.get() + 1);
    }
}

impl Outbox for MemStore {
    fn outbox_put(&mut self, id: &str, body: &str, now: i64) -> Result<u64, String> {
        if !self.outbox.iter().any(|(q, _)| q.id == id) {
            self.outbox.push((Queued { id: id.to_owned(), body: body.to_owned(), attempts: 0, created: now }, now));
        }
        let over = self.outbox.len().saturating_sub(OUTBOX_MAX as usize);
        self.outbox.drain(..over);
        Ok(over as u64)
    }
    fn outbox_due(&self, now: i64, limit: u64) -> Result<Vec<Queued>, String> {
        self.upkeep();
        Ok(self.outbox.iter().filter(|(_, due)| *due <= now).take(limit as usize).map(|(q, _)| q.clone()).collect())
    }
    fn outbox_retry(&mut self, id: &str, attempts: u32, next_at: i64) -> Result<(), String> {
        for (q, due) in self.outbox.iter_mut().filter(|(q, _)| q.id == id) {
            (q.attempts, *due) = (attempts, next_at);
        }
        Ok(())
    }
    fn outbox_delete(&mut self, id: &str) -> Result<(), String> {
        self.outbox.retain(|(q, _)| q.id != id);
        Ok(())
    }
    fn outbox_next_due(&self) -> Result<Option<i64>, String> {
        self.upkeep();
        Ok(self.outbox.iter().map(|(_, due)| *due).min())
    }
}

impl Store for MemStore {
    fn latest_seq(&self) -> Result<u64, String> {
        Ok(self.latest)
    }
    fn append_unique(&mut self, key: &str, event: &StoredEvent) -> Result<Option<u64>, String> {
        if let Some((_, earlier)) = self.keys.iter().find(|(k, _)| k == key) {
            return Ok(Some(*earlier));
        }
        self.keys.push((key.to_owned(), event.seq));
        self.latest = event.seq;
        self.events.push(event.clone());
        Ok(None)
    }
    fn events_between(&self, after: u64, upto: u64) -> Result<Vec<StoredEvent>, String> {
        Ok(self.events.iter().filter(|e| e.seq > after && e.seq <= upto).cloned().collect())
    }
    fn oldest_seq(&self) -> Result<Option<u64>, String> {
        Ok(self.events.first().map(|e| e.seq))
    }
    fn prune_events(&mut self, below_seq: u64, before_ts: i64) -> Result<(), String> {
        self.upkeep();
        self.events.retain(|e| e.seq >= below_seq || e.ts >= before_ts);
        let kept: Vec<u64> = self.events.iter().map(|e| e.seq).collect();
        self.keys.retain(|(_, seq)| kept.contains(seq));
        Ok(())
    }
    fn sizes_after(&self, after: u64, count: usize) -> Result<Vec<(u64, usize)>, String> {
        self.upkeep();
        let sizes = self.events.iter().rev().filter(|e| e.seq > after).map(|e| (e.seq, e.data.len() + e.id.len() + e.event.len()));
        Ok(sizes.take(count).collect())
    }
}
