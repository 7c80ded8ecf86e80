//! The rules of PROTOCOL.md as plain Rust: no `worker` types, no I/O, time passed in.
//!
//! The flow of a connection, in file order: [`handshake`] (the checks before any Durable
//! Object is touched) → [`token`] (who is this) → [`channel`] (what may they see) → [`room`]
//! (the channel's engine) → [`frame`] (what goes on the wire). Publishing: [`signature`] →
//! [`publish`] → [`room`]; client chat messages go back out through [`webhook`]. [`wire`] names the protocol's words and codes; [`config`]
//! reads the deployment's settings; [`reading`] is the backend's read of a channel; [`revocation`] is `/revoke`: the directory's rules and a room's memory of them.
//! [`links`] links channels into inboxes and forwards their events; [`retry`] is the one
//! retry rule of every call a room keeps trying (webhook, forwards); [`coalesce`] sums the
//! refusal log lines of a flood.

pub mod channel;
pub mod coalesce;
pub mod config;
pub mod frame;
pub mod handshake;
pub mod links;
pub mod publish;
pub mod reading;
pub mod retry;
pub mod revocation;
pub mod room;
pub mod signature;
pub mod token;
pub mod webhook;
pub mod wire;
