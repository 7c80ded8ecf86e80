//! One Durable Object per user (`sub`): where revocations live, and which channels the user
//! joined, so `POST /revoke` without a channel list reaches every room that matters.
//!
//! A room asks it when a user connects whom the room does not already know (after the
//! Worker's token and grant checks, so a refused request never creates one): "record this
//! channel, and tell me the revocation time that applies to it". From then on `/revoke`
//! pushes this user's revocations to the room (protocol/revocation.rs).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use worker::{durable_object, wasm_bindgen, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use super::runtime::json_error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS joined (channel TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (scope TEXT PRIMARY KEY, at INTEGER NOT NULL);
";
/// Revocations apply to every channel when recorded under this scope.
const ALL: &str = "*";

#[derive(Serialize, Deserialize)]
pub struct JoinQuery {
    pub channel: String,
    pub now: i64,
}

#[derive(Serialize, Deserialize)]
pub struct JoinAnswer {
    pub revoked_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
pub struct RevokeOrder {
    pub channels: Option<Vec<String>>,
    pub now: i64,
}

#[derive(Serialize, Deserialize)]
pub struct RevokeTargets {
    pub channels: Vec<String>,
}

#[derive(Deserialize)]
struct Revocation {
    scope: String,
    at: f64,
}

#[derive(Deserialize)]
struct Name {
    channel: String,
}

#[durable_object]
pub struct Principal {
    sql: SqlStorage,
    /// Channels known to be recorded: a reconnect (the common case) writes nothing.
    joined: RefCell<HashSet<String>>,
    /// The `revoked` table, read once per instance and kept in step with every write.
    revoked: RefCell<Option<HashMap<String, i64>>>,
}

impl Principal {
    /// The revocation time that applies to `channel`: its own or the all-channels one.
    fn revoked_at(&self, channel: &str) -> Result<Option<i64>> {
        let mut cache = self.revoked.borrow_mut();
        if cache.is_none() {
            let rows: Vec<Revocation> = self.sql.exec("SELECT scope, at FROM revoked", None)?.to_array()?;
            *cache = Some(rows.into_iter().map(|r| (r.scope, r.at as i64)).collect());
        }
        let revoked = cache.as_ref().map(|map| [ALL, channel].iter().filter_map(|s| map.get(*s).copied()).max());
        Ok(revoked.flatten())
    }
}

impl DurableObject for Principal {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(SCHEMA, None) {
            worker::console_error!("principal schema: {e}");
        }
        Principal { sql, joined: RefCell::default(), revoked: RefCell::default() }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/join" => {
                let q: JoinQuery = serde_json::from_str(&req.text().await?)?;
                if !self.joined.borrow().contains(&q.channel) {
                    self.sql.exec(
                        "INSERT INTO joined (channel, at) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET at = excluded.at",
                        vec![q.channel.as_str().into(), q.now.into()],
                    )?;
                    self.joined.borrow_mut().insert(q.channel.clone());
                }
                Response::from_json(&JoinAnswer { revoked_at: self.revoked_at(&q.channel)? })
            }
            "/revoke" => {
                let order: RevokeOrder = serde_json::from_str(&req.text().await?)?;
                let scopes = order.channels.clone().unwrap_or_else(|| vec![ALL.to_owned()]);
                for scope in &scopes {
                    self.sql.exec(
                        "INSERT INTO revoked (scope, at) VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET at = excluded.at",
                        vec![scope.as_str().into(), order.now.into()],
                    )?;
                    if let Some(map) = self.revoked.borrow_mut().as_mut() {
                        map.insert(scope.clone(), order.now);
                    }
                }
                let channels = match order.channels {
                    Some(channels) => channels,
                    None => self.sql.exec("SELECT channel FROM joined", None)?.to_array::<Name>()?.into_iter().map(|n| n.channel).collect(),
                };
                Response::from_json(&RevokeTargets { channels })
            }
            _ => json_error(404, "not_found", "no such endpoint"),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        Response::ok("no alarms are set here")
    }
}
