//! One Durable Object per user (`sub`): where revocations live, and which channels the user
//! joined, so `POST /revoke` without a channel list reaches every room that matters.
//!
//! The Worker asks it once per admitted connect (after the token and grant checks, so a
//! refused request never creates one): "record this channel, and tell me the revocation
//! time that applies to it".

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
struct Row {
    value: f64,
}

#[derive(Deserialize)]
struct Name {
    channel: String,
}

#[durable_object]
pub struct Principal {
    sql: SqlStorage,
}

impl DurableObject for Principal {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(SCHEMA, None) {
            worker::console_error!("principal schema: {e}");
        }
        Principal { sql }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/join" => {
                let q: JoinQuery = serde_json::from_str(&req.text().await?)?;
                self.sql.exec(
                    "INSERT INTO joined (channel, at) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET at = excluded.at",
                    vec![q.channel.as_str().into(), q.now.into()],
                )?;
                let rows: Vec<Row> = self
                    .sql
                    .exec("SELECT MAX(at) AS value FROM revoked WHERE scope IN (?, ?)", vec![ALL.into(), q.channel.as_str().into()])?
                    .to_array()
                    .unwrap_or_default();
                Response::from_json(&JoinAnswer { revoked_at: rows.first().map(|r| r.value as i64) })
            }
            "/revoke" => {
                let order: RevokeOrder = serde_json::from_str(&req.text().await?)?;
                let scopes = order.channels.clone().unwrap_or_else(|| vec![ALL.to_owned()]);
                for scope in &scopes {
                    self.sql.exec(
                        "INSERT INTO revoked (scope, at) VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET at = excluded.at",
                        vec![scope.as_str().into(), order.now.into()],
                    )?;
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
