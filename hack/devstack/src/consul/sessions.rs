//! Sessions: the create request (case-insensitive JSON keys, as Consul decodes it), validation,
//! the session record, and lock-delay bookkeeping.
//!
//! Rules from `website/content/api-docs/session.mdx` and `agent/session_endpoint.go`:
//! `LockDelay` defaults to 15s and is capped at 60s; it accepts a Go duration string or a number
//! (a number below 1000 is seconds, otherwise nanoseconds). `TTL` is empty (no TTL) or a Go
//! duration between 10s and 86400s. `Behavior` is `release` (default) or `delete`. `Node` defaults
//! to the agent's node. The server invalidates a TTL session at 2×TTL after its last renewal.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::duration::{format_go_duration, parse_go_duration};

/// Node name of the emulated agent.
pub const NODE_NAME: &str = "jobforge-devstack";
/// Default session lock-delay (session.mdx: 15s).
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// Maximum lock-delay (session.mdx: 60s; larger values are capped).
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// Smallest TTL (session.mdx: 10s).
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// Largest TTL (session.mdx: 86400s).
pub const MAX_TTL: Duration = Duration::from_secs(86400);
/// The server's TTL multiplier: a session expires 2×TTL after its last renewal.
pub const TTL_MULTIPLIER: u32 = 2;

/// Errors of session create.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The body is not a JSON object.
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// `TTL` is not a duration.
    #[error("Session TTL '{0}' invalid: {1}")]
    TtlSyntax(String, String),
    /// `TTL` outside 10s..86400s.
    #[error("Invalid Session TTL '{0}', must be between [10s=24h0m0s]")]
    TtlRange(String),
    /// `LockDelay` is not a duration.
    #[error(
        "Request decode failed: LockDelay {0:?} invalid: expected a duration such as \"15s\" or a number"
    )]
    LockDelay(String),
    /// `Behavior` is neither `release` nor `delete`.
    #[error("Invalid Behavior setting '{0}'")]
    Behavior(String),
    /// `Node` is not this agent's node.
    #[error("Missing node registration")]
    Node(String),
}

/// What invalidation does to the keys a session holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Behavior {
    /// Release the locks (clear `Session`).
    Release,
    /// Delete the keys.
    Delete,
}

impl Behavior {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// UUID.
    pub id: String,
    /// Free-form name.
    pub name: String,
    /// Node the session is tied to.
    pub node: String,
    /// Lock-delay applied to held keys on invalidation (ns precision).
    pub lock_delay: Duration,
    /// What invalidation does to held keys.
    pub behavior: Behavior,
    /// TTL; `None` = no TTL.
    pub ttl: Option<Duration>,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change (= creation; renew is not a raft write).
    pub modify_index: u64,
    /// Node checks it is bound to (`Checks` and `NodeChecks`); invalidated when one turns
    /// critical (`super::catalog`).
    #[serde(default)]
    pub node_checks: Vec<String>,
    /// Service checks it is bound to (`ServiceChecks[].ID`).
    #[serde(default)]
    pub service_checks: Vec<String>,
}

impl Session {
    /// True when the session lists check `id`.
    pub fn lists_check(&self, id: &str) -> bool {
        self.node_checks
            .iter()
            .chain(&self.service_checks)
            .any(|c| c == id)
    }

    /// Every check it lists.
    pub fn checks(&self) -> Vec<String> {
        self.node_checks
            .iter()
            .chain(&self.service_checks)
            .cloned()
            .collect()
    }

    /// The API JSON (`/v1/session/info`): `{ID, Name, Node, LockDelay (ns), Behavior, TTL,
    /// NodeChecks, ServiceChecks, CreateIndex, ModifyIndex}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": u64::try_from(self.lock_delay.as_nanos()).unwrap_or(u64::MAX),
            "Behavior": self.behavior.as_str(),
            "TTL": self.ttl.map(format_go_duration).unwrap_or_default(),
            "NodeChecks": self.node_checks,
            "ServiceChecks": if self.service_checks.is_empty() {
                Value::Null
            } else {
                Value::Array(
                    self.service_checks
                        .iter()
                        .map(|id| serde_json::json!({"ID": id, "Namespace": ""}))
                        .collect(),
                )
            },
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }

    /// When the server invalidates this session if renewed at `renewed` (2×TTL later).
    pub fn deadline(&self, renewed: Instant) -> Option<Instant> {
        self.ttl.map(|t| renewed + t * TTL_MULTIPLIER)
    }
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// Name.
    pub name: String,
    /// Node.
    pub node: String,
    /// Lock-delay, capped at 60s.
    pub lock_delay: Duration,
    /// Behavior.
    pub behavior: Behavior,
    /// TTL.
    pub ttl: Option<Duration>,
    /// Node checks (default `["serfHealth"]`).
    pub node_checks: Vec<String>,
    /// Service checks.
    pub service_checks: Vec<String>,
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Parses a session create body: keys matched case-insensitively (py-consul sends `lockdelay`,
/// `ttl`, `behavior`, `name`), unknown keys (checks) ignored; an empty body means all defaults.
///
/// Errors: [`SessionError`] with Consul's texts.
pub fn parse_create(body: &[u8]) -> Result<CreateRequest, SessionError> {
    let mut req = CreateRequest {
        name: String::new(),
        node: NODE_NAME.to_string(),
        lock_delay: DEFAULT_LOCK_DELAY,
        behavior: Behavior::Release,
        ttl: None,
        node_checks: vec![super::catalog::SERF_CHECK_ID.to_string()],
        service_checks: Vec::new(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(req);
    }
    (req.node_checks, req.service_checks) =
        super::catalog::session_checks(body).map_err(SessionError::Decode)?;
    let obj: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| SessionError::Decode(e.to_string()))?;
    for (k, v) in obj {
        match k.to_ascii_lowercase().as_str() {
            "name" => {
                req.name = as_text(&v)
                    .ok_or_else(|| SessionError::Decode("Name must be a string".into()))?
            }
            "node" => {
                let node = as_text(&v)
                    .ok_or_else(|| SessionError::Decode("Node must be a string".into()))?;
                if !node.is_empty() && node != NODE_NAME {
                    return Err(SessionError::Node(node));
                }
            }
            "behavior" => {
                let b = as_text(&v).ok_or_else(|| SessionError::Behavior(v.to_string()))?;
                req.behavior = match b.as_str() {
                    "" | "release" => Behavior::Release,
                    "delete" => Behavior::Delete,
                    _ => return Err(SessionError::Behavior(b)),
                };
            }
            "lockdelay" => {
                let d = match &v {
                    Value::String(s) => {
                        parse_go_duration(s).map_err(|_| SessionError::LockDelay(s.clone()))?
                    }
                    Value::Number(n) => {
                        let f = n.as_f64().filter(|f| *f >= 0.0 && f.is_finite());
                        let f = f.ok_or_else(|| SessionError::LockDelay(n.to_string()))?;
                        // session_endpoint.go: numbers below 1000 are seconds, else nanoseconds.
                        if f < 1000.0 {
                            Duration::from_secs_f64(f)
                        } else {
                            Duration::from_nanos(f as u64)
                        }
                    }
                    Value::Null => DEFAULT_LOCK_DELAY,
                    other => return Err(SessionError::LockDelay(other.to_string())),
                };
                req.lock_delay = d.min(MAX_LOCK_DELAY);
            }
            "ttl" => {
                let t = as_text(&v)
                    .ok_or_else(|| SessionError::TtlSyntax(v.to_string(), "not a string".into()))?;
                if t.is_empty() {
                    req.ttl = None;
                } else {
                    let d = parse_go_duration(&t)
                        .map_err(|e| SessionError::TtlSyntax(t.clone(), e.to_string()))?;
                    if d.is_zero() {
                        req.ttl = None;
                    } else if !(MIN_TTL..=MAX_TTL).contains(&d) {
                        return Err(SessionError::TtlRange(t));
                    } else {
                        req.ttl = Some(d);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(req)
}

/// Lock-delays per key: until when an `acquire` is refused after an invalidation.
#[derive(Debug, Default)]
pub struct LockDelays {
    until: HashMap<String, Instant>,
}

impl LockDelays {
    /// Sets a lock-delay of `delay` from `now` on `key` (no-op for zero).
    pub fn set(&mut self, key: &str, now: Instant, delay: Duration) {
        if !delay.is_zero() {
            self.until.insert(key.to_string(), now + delay);
        }
    }

    /// True when `key` is still under lock-delay at `now` (expired entries are forgotten).
    pub fn active(&mut self, key: &str, now: Instant) -> bool {
        match self.until.get(key) {
            Some(t) if *t > now => true,
            Some(_) => {
                self.until.remove(key);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_keys_as_py_consul_sends_them() {
        let r = parse_create(br#"{"name":"n","lockdelay":"1s","ttl":"10s","behavior":"delete"}"#)
            .expect("test input");
        assert_eq!(r.name, "n");
        assert_eq!(r.lock_delay, Duration::from_secs(1));
        assert_eq!(r.ttl, Some(Duration::from_secs(10)));
        assert_eq!(r.behavior, Behavior::Delete);
    }

    #[test]
    fn defaults_and_caps() {
        let r = parse_create(b"").expect("test input");
        assert_eq!(r.lock_delay, DEFAULT_LOCK_DELAY);
        assert_eq!(r.ttl, None);
        let r = parse_create(br#"{"LockDelay":"5m"}"#).expect("test input");
        assert_eq!(r.lock_delay, MAX_LOCK_DELAY);
        let r = parse_create(br#"{"LockDelay":7}"#).expect("test input");
        assert_eq!(r.lock_delay, Duration::from_secs(7));
        let r = parse_create(br#"{"LockDelay":2000000000}"#).expect("test input");
        assert_eq!(r.lock_delay, Duration::from_secs(2));
    }

    #[test]
    fn bad_ttl_and_behavior_are_rejected() {
        assert!(matches!(
            parse_create(br#"{"TTL":"5s"}"#),
            Err(SessionError::TtlRange(_))
        ));
        assert!(matches!(
            parse_create(br#"{"TTL":"90000s"}"#),
            Err(SessionError::TtlRange(_))
        ));
        assert!(matches!(
            parse_create(br#"{"TTL":"soon"}"#),
            Err(SessionError::TtlSyntax(..))
        ));
        assert!(matches!(
            parse_create(br#"{"Behavior":"keep"}"#),
            Err(SessionError::Behavior(_))
        ));
    }

    #[test]
    fn lock_delay_expires() {
        let mut d = LockDelays::default();
        let now = Instant::now();
        d.set("k", now, Duration::from_secs(1));
        assert!(d.active("k", now));
        assert!(!d.active("k", now + Duration::from_secs(2)));
        d.set("z", now, Duration::ZERO);
        assert!(!d.active("z", now));
    }
}
