//! The runtime-facing shell: binds the sans-IO [`crate::protocol`] to the Worker and the
//! Durable Objects. Nothing here decides protocol rules; it moves bytes and calls the core.
//!
//! - [`gateway`]: the stateless Worker in front (`/ws/*`, `/publish`, `/revoke`, `/channels/*`, `/healthz`).
//! - [`messages`]: what the Worker and the objects say to each other.
//! - [`room_object`]: one Durable Object per channel, four classes (one per kind) over one engine.
//! - [`directory`]: a few Durable Objects for revocation, each room's by its channel's name.
//! - [`sql_store`]: the room's history, sequence and dedupe in the object's SQLite.
//! - [`runtime`]: settings, clock, randomness and responses from the platform.
//! - [`log`]: the structured log lines and Analytics Engine metrics (docs/operations.md).
//! - [`meter`]: the opt-in usage meter (rows, invocations, bytes) for the cost benchmark.
//! - [`js`]: the few hot paths (fan-out, calls between objects) written in JavaScript, and
//!   answers returned without a task when they never wait.
//! - [`crypto`]: EdDSA and ES256 token signatures by the runtime's native crypto.

mod crypto;
mod directory;
mod gateway;
mod js;
mod log;
mod messages;
mod meter;
mod room_object;
mod runtime;
mod sql_store;
