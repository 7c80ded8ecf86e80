//! The deployment's settings (PROTOCOL.md "Configuration"), read through a lookup function
//! so that the Worker, the Durable Objects and tests share one parser.
//!
//! A missing or invalid required setting never falls back to an insecure default: the
//! endpoint that needs it refuses every request, and the reason is logged.

use super::room::Limits;
use super::token::{Expectations, KeySet, DEFAULT_MAX_LIFETIME_SECS};

/// How much the gateway logs (`LOG_LEVEL`): lines below the level are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

pub struct Config {
    /// Keys and expectations for tokens, or why sockets are refused.
    pub tokens: Result<(KeySet, Expectations), String>,
    /// Secrets for `/publish` and `/revoke`; empty means every request is refused.
    pub publish_secrets: Vec<Vec<u8>>,
    pub allowed_origins: Vec<String>,
    pub allow_query_token: bool,
    pub require_current_build: bool,
    pub limits: Limits,
    /// Token guesses (malformed, unknown key, bad signature) one client address may make per
    /// minute before further guesses are answered 4429; `None` (the default): no limiter.
    pub auth_failures_per_minute: Option<u32>,
    /// Where client chat messages are POSTed, and the secret that signs them.
    pub webhook: Option<(String, Vec<u8>)>,
    /// `METER=log`: one usage line per invocation (the benchmark's cost scenario).
    pub meter: bool,
    /// `LOG_LEVEL` (default `info`): the least level of the lines written.
    pub log_level: Level,
    /// `TEST_FAILPOINT`: named steps (comma-separated) made to fail or slow down, so tests
    /// can reach paths the real runtime only takes on a failure. Never set in a deployment.
    pub failpoints: Vec<String>,
    /// Settings that were present but invalid (logged; they refuse their endpoint).
    pub problems: Vec<String>,
}

fn list(value: Option<String>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl Config {
    /// Whether the test failpoint `name` is set.
    pub fn failpoint(&self, name: &str) -> bool {
        self.failpoints.iter().any(|f| f == name)
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Config {
        let mut problems = Vec::new();
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut flag = |name: &str| match get(name).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                problems.push(format!("{name} must be true or false; treated as false"));
                false
            }
        };
        let allow_query_token = flag("ALLOW_QUERY_TOKEN");
        let require_current_build = flag("REQUIRE_CURRENT_BUILD");

        let number = |name: &str, default: i64| -> Result<i64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.parse::<i64>().ok().filter(|n| *n > 0).ok_or(format!("{name} must be a positive integer")),
            }
        };
        let tokens = (|| {
            let keys = KeySet::from_jwks(&get("JWT_KEYS").ok_or("JWT_KEYS is not set")?)?;
            let issuer = get("JWT_ISSUER").ok_or("JWT_ISSUER is not set")?;
            let audience = get("JWT_AUDIENCE").unwrap_or_else(|| "foyer".to_owned());
            let max_lifetime = number("TOKEN_MAX_LIFETIME", DEFAULT_MAX_LIFETIME_SECS)?;
            Ok((keys, Expectations::new(issuer, audience, max_lifetime)))
        })();

        let mut limits = Limits::default();
        match (number("RATE_LIMIT_MESSAGES", limits.rate_count as i64), number("RATE_LIMIT_WINDOW", limits.rate_window_ms / 1000)) {
            (Ok(count), Ok(window)) => {
                limits.rate_count = count.min(u32::MAX as i64 / 2) as u32;
                limits.rate_window_ms = window.saturating_mul(1000);
            }
            (Err(e), _) | (_, Err(e)) => problems.push(format!("{e}; the default applies")),
        }
        match number("MAX_SOCKETS_PER_USER", limits.sockets_per_sub as i64) {
            Ok(n) => limits.sockets_per_sub = n as usize,
            Err(e) => problems.push(format!("{e}; the default applies")),
        }
        let auth_failures_per_minute = match get("AUTH_FAILURES_PER_MINUTE").map(|_| number("AUTH_FAILURES_PER_MINUTE", 0)) {
            None => None,
            Some(Ok(n)) => Some(n.min(u32::MAX as i64) as u32),
            Some(Err(e)) => {
                problems.push(format!("{e}; the limiter is off"));
                None
            }
        };

        let log_level = match get("LOG_LEVEL") {
            None => Level::Info,
            Some(v) => Level::parse(&v.to_ascii_lowercase()).unwrap_or_else(|| {
                problems.push("LOG_LEVEL must be debug, info, warn or error; info applies".into());
                Level::Info
            }),
        };
        let webhook = match (get("CHAT_WEBHOOK_URL"), get("CHAT_WEBHOOK_SECRET")) {
            (Some(url), Some(secret)) => Some((url, secret.into_bytes())),
            (None, None) => None,
            (Some(_), None) => {
                problems.push("CHAT_WEBHOOK_URL is set without CHAT_WEBHOOK_SECRET: the webhook is off".into());
                None
            }
            (None, Some(_)) => None,
        };

        Config {
            tokens,
            publish_secrets: list(get("PUBLISH_SECRETS")).into_iter().map(String::into_bytes).collect(),
            allowed_origins: list(get("ALLOWED_ORIGINS")),
            allow_query_token,
            require_current_build,
            limits,
            auth_failures_per_minute,
            webhook,
            meter: get("METER").as_deref() == Some("log"),
            log_level,
            failpoints: list(get("TEST_FAILPOINT")),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkit::{jwks, SigningKey};
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn a_complete_configuration_parses() {
        let keys = jwks(&[(&SigningKey::hs256(1), None)]);
        let c = config(&[
            ("JWT_KEYS", &keys),
            ("JWT_ISSUER", "https://shop"),
            ("PUBLISH_SECRETS", "a, b,"),
            ("ALLOWED_ORIGINS", "https://shop.example,https://staff.example"),
            ("ALLOW_QUERY_TOKEN", "true"),
            ("TOKEN_MAX_LIFETIME", "300"),
        ]);
        let (_, expect) = c.tokens.as_ref().unwrap();
        assert_eq!((expect.issuer.as_str(), expect.audience.as_str(), expect.max_lifetime), ("https://shop", "foyer", 300));
        assert_eq!(c.publish_secrets, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(c.allowed_origins.len(), 2);
        assert!(c.allow_query_token && !c.require_current_build);
        assert!(c.problems.is_empty());
    }

    #[test]
    fn the_log_level_defaults_to_info_and_a_bad_one_is_a_problem() {
        assert_eq!(config(&[]).log_level, Level::Info);
        assert_eq!(config(&[("LOG_LEVEL", "DEBUG")]).log_level, Level::Debug);
        assert_eq!(config(&[("LOG_LEVEL", "warn")]).log_level, Level::Warn);
        let c = config(&[("LOG_LEVEL", "loud")]);
        assert_eq!((c.log_level, c.problems.len()), (Level::Info, 1));
        assert!(Level::Debug < Level::Info && Level::Warn < Level::Error);
    }

    #[test]
    fn test_failpoints_are_a_list_and_none_is_set_by_default() {
        let c = config(&[("TEST_FAILPOINT", "short_lease, slow_join_record")]);
        assert!(c.failpoint("short_lease") && c.failpoint("slow_join_record"));
        assert!(!c.failpoint("short") && !config(&[]).failpoint("short_lease"));
    }

    #[test]
    fn missing_or_invalid_settings_refuse_instead_of_defaulting() {
        let c = config(&[]);
        assert!(c.tokens.is_err());
        assert!(c.publish_secrets.is_empty());
        assert!(!c.allow_query_token);
        let keys = jwks(&[(&SigningKey::hs256(1), None)]);
        assert!(config(&[("JWT_KEYS", &keys)]).tokens.is_err(), "issuer required");
        let c = config(&[("JWT_KEYS", &keys), ("JWT_ISSUER", "i"), ("TOKEN_MAX_LIFETIME", "forever")]);
        assert!(c.tokens.is_err());
        let c = config(&[("ALLOW_QUERY_TOKEN", "yes"), ("PUBLISH_SECRETS", " , ")]);
        assert!(!c.allow_query_token && c.publish_secrets.is_empty() && c.problems.len() == 1);
    }
}
