//! Session types (Consul `api-docs/session`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::duration::parse_go_duration;
use super::error::{ConsulError, Result, go_duration};

/// Shortest session TTL Consul accepts.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
/// Longest session TTL Consul accepts.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(86400);
/// Longest lock-delay Consul accepts.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// What happens to the keys a session holds when it is invalidated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SessionBehavior {
    /// Locks are released (Consul's default).
    #[default]
    Release,
    /// Held keys are deleted.
    Delete,
}

impl SessionBehavior {
    fn as_str(self) -> &'static str {
        match self {
            SessionBehavior::Release => "release",
            SessionBehavior::Delete => "delete",
        }
    }
}

/// Body of `PUT /v1/session/create`. `None` fields are left to Consul's defaults (LockDelay
/// 15 s, NodeChecks `[serfHealth]`, Node = the agent's node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRequest {
    /// Human-readable name.
    pub name: Option<String>,
    /// TTL, 10 s to 86400 s (Consul may invalidate after up to 2×TTL).
    pub ttl: Option<Duration>,
    /// Lock-delay applied to held keys on invalidation, at most 60 s.
    pub lock_delay: Option<Duration>,
    /// Release or delete held keys on invalidation.
    pub behavior: SessionBehavior,
    /// Node to attach to.
    pub node: Option<String>,
    /// Node health checks tied to the session (`Some(vec![])` = none).
    pub node_checks: Option<Vec<String>>,
    /// Service health checks tied to the session (`ServiceChecks`, by check ID): Consul
    /// invalidates the session as soon as one of them turns critical.
    pub service_checks: Vec<String>,
}

impl SessionRequest {
    /// Validates against Consul's limits and renders the JSON body.
    ///
    /// Errors: [`ConsulError::InvalidArgument`] naming `ttl` or `lock_delay`.
    pub(crate) fn to_json(&self) -> Result<Value> {
        let mut body = Map::new();
        if let Some(n) = &self.name {
            body.insert("Name".into(), json!(n));
        }
        if let Some(ttl) = self.ttl {
            if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&ttl) {
                return Err(ConsulError::InvalidArgument {
                    field: "ttl",
                    message: format!("{ttl:?} is outside Consul's 10s..86400s"),
                });
            }
            body.insert("TTL".into(), json!(go_duration(ttl)));
        }
        if let Some(d) = self.lock_delay {
            if d > MAX_LOCK_DELAY {
                return Err(ConsulError::InvalidArgument {
                    field: "lock_delay",
                    message: format!("{d:?} exceeds Consul's maximum of 60s"),
                });
            }
            body.insert("LockDelay".into(), json!(go_duration(d)));
        }
        body.insert("Behavior".into(), json!(self.behavior.as_str()));
        if let Some(n) = &self.node {
            body.insert("Node".into(), json!(n));
        }
        if let Some(c) = &self.node_checks {
            body.insert("NodeChecks".into(), json!(c));
        }
        if !self.service_checks.is_empty() {
            let list: Vec<Value> = self
                .service_checks
                .iter()
                .map(|id| json!({ "ID": id }))
                .collect();
            body.insert("ServiceChecks".into(), Value::Array(list));
        }
        Ok(Value::Object(body))
    }
}

/// A session as `/v1/session/info` and `/v1/session/renew` return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session ID (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Node the session is attached to.
    pub node: String,
    /// Lock-delay.
    pub lock_delay: Duration,
    /// Behavior on invalidation.
    pub behavior: SessionBehavior,
    /// TTL as the server holds it (may be larger than requested), `None` without TTL.
    pub ttl: Option<Duration>,
    /// Raft index that created the session.
    pub create_index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireSession {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    lock_delay: Value,
    #[serde(default)]
    behavior: String,
    #[serde(rename = "TTL", default)]
    ttl: String,
    #[serde(default)]
    create_index: u64,
}

impl WireSession {
    pub(crate) fn decode(self, endpoint: &'static str) -> Result<SessionInfo> {
        let bad = |message: String| ConsulError::Decode { endpoint, message };
        // LockDelay is a Go time.Duration: nanoseconds as a number (or a string from some tools).
        let lock_delay = match &self.lock_delay {
            Value::Number(n) => Duration::from_nanos(n.as_u64().unwrap_or(0)),
            Value::String(s) => parse_go_duration(s).map_err(|e| bad(format!("LockDelay: {e}")))?,
            _ => Duration::ZERO,
        };
        let ttl = if self.ttl.is_empty() {
            None
        } else {
            Some(parse_go_duration(&self.ttl).map_err(|e| bad(format!("TTL: {e}")))?)
        };
        let behavior = match self.behavior.as_str() {
            "delete" => SessionBehavior::Delete,
            _ => SessionBehavior::Release,
        };
        Ok(SessionInfo {
            id: self.id,
            name: self.name,
            node: self.node,
            lock_delay,
            behavior,
            ttl,
            create_index: self.create_index,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn request_renders_durations_and_behavior() {
        let r = SessionRequest {
            name: Some("jobforge-leader".into()),
            ttl: Some(Duration::from_secs(15)),
            lock_delay: Some(Duration::from_millis(1500)),
            behavior: SessionBehavior::Release,
            ..Default::default()
        };
        assert_eq!(
            r.to_json().unwrap(),
            json!({"Name": "jobforge-leader", "TTL": "15s", "LockDelay": "1500ms", "Behavior": "release"})
        );
    }

    #[test]
    fn ttl_outside_consul_limits_is_refused_naming_the_field() {
        let r = SessionRequest {
            ttl: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let e = r.to_json().unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
        let r = SessionRequest {
            lock_delay: Some(Duration::from_secs(61)),
            ..Default::default()
        };
        assert!(r.to_json().unwrap_err().to_string().contains("lock_delay"));
    }

    #[test]
    fn info_decodes_nanosecond_lock_delay_and_string_ttl() {
        let w: WireSession = serde_json::from_str(
            r#"{"ID":"a","Name":"n","Node":"x","LockDelay":15000000000,"Behavior":"delete","TTL":"30s","CreateIndex":9}"#,
        )
        .unwrap();
        let s = w.decode("session_info").unwrap();
        assert_eq!(s.lock_delay, Duration::from_secs(15));
        assert_eq!(s.ttl, Some(Duration::from_secs(30)));
        assert_eq!(s.behavior, SessionBehavior::Delete);
    }
}
