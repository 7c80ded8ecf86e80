//! Foyer: a real-time gateway at the edge.
//!
//! - [`protocol`]: the rules of `PROTOCOL.md` as plain Rust (sans-IO), unit-tested on the host.
//! - `edge` (wasm only): the thin shell that binds them to the Worker and Durable Objects.
//! - [`devkit`] (host only): signing keys and token minting for tests, tools and the bench.

pub mod protocol;

#[cfg(not(target_arch = "wasm32"))]
pub mod devkit;

#[cfg(target_arch = "wasm32")]
mod edge;
