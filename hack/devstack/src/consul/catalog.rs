//! The agent's services and checks, which on this one-node, one-server emulator are also the
//! catalog: service registration, the check record and its status rules, and the sessions
//! bound to checks.
//!
//! Rules, from hashicorp/consul:
//! - `agent/agent_endpoint.go` (`AgentRegisterService`, `AgentDeregisterService`) and
//!   `agent/structs/structs.go` (`ServiceDefinition.CheckTypes`): the body's keys are matched
//!   case-insensitively; `Name` is required (400 `Missing service name`); `ID` defaults to the
//!   name; one `Check` gets the ID `service:<service id>`, several `Checks` get
//!   `service:<service id>:<n>` (1-based) unless they name `CheckID`/`ID`; a check's `Name`
//!   defaults to `Service '<name>' check`; its initial status is `Status` when given, else
//!   `critical` (`agent.go` `addServiceInternal`: `api.HealthCritical`). An HTTP check needs an
//!   `Interval` (400 `Invalid check: ...`); an interval under 1 s is raised to 1 s
//!   (`checks.MinInterval`); the timeout defaults to 10 s. Deregistering an unknown ID is 404
//!   `Unknown service ID "<id>". Ensure that the service ID is passed, not the service name.`
//!   ACLs: both need `service:write` on the service's name (`vetServiceRegister`,
//!   `vetServiceUpdate` in `agent/acl.go`).
//! - `agent/checks/check.go` (`CheckHTTP.check`): a 2xx answer is `passing`, 429 `warning`,
//!   anything else, an error or a timeout `critical`; the output is `HTTP GET <url>: <status>
//!   Output: <body>` (body cut at 4 KiB). See [`super::checks`] for the runner.
//! - `agent/consul/state/session.go` (`validateSessionChecksTxn`) and `agent/session_endpoint.go`
//!   (`FixupChecks`): a session lists check IDs (`Checks`, default `["serfHealth"]`, replaced
//!   when the body names the key at all, even empty; plus `NodeChecks` and `ServiceChecks[].ID`);
//!   create fails with `Missing check '<id>' registration` or `Check '<id>' is in critical
//!   state`. `agent/consul/state/catalog.go` (`ensureCheckTxn`, `deleteCheckTxn`): when a check
//!   turns critical, or is deregistered, every session listing it is invalidated (its keys
//!   released or deleted per its Behavior, with its lock-delay: `deleteSessionTxn`). A
//!   `warning` check does not invalidate.
//! - The node itself carries the `serfHealth` check (`Serf Health Status`, always passing here:
//!   the agent is the process answering) and the server's `consul` service, which the catalog
//!   lists and the agent's own endpoints do not.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::duration::{format_go_duration, parse_go_duration};
use super::sessions::NODE_NAME;

/// Check ID of the node's Serf health check (`structs.SerfCheckID`).
pub const SERF_CHECK_ID: &str = "serfHealth";
/// Smallest check interval (`checks.MinInterval`).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default HTTP check timeout (`CheckHTTP`: 10 s).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP check output kept (`checks.DefaultBufSize`, 4 KiB).
pub const MAX_OUTPUT: usize = 4 * 1024;
/// The node's address.
pub const NODE_ADDRESS: &str = "127.0.0.1";
/// The node's ID (as `/v1/agent/self` reports it).
pub const NODE_ID: &str = "00000000-0000-4000-8000-000000000001";

/// A check's health (`api.HealthPassing` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// `passing`.
    Passing,
    /// `warning`.
    Warning,
    /// `critical`.
    Critical,
}

impl Health {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Health> {
        match s {
            "passing" => Some(Health::Passing),
            "warning" => Some(Health::Warning),
            "critical" => Some(Health::Critical),
            _ => None,
        }
    }

    /// The status of an HTTP check answered with `code` (`CheckHTTP.check`).
    pub fn of_http_status(code: u16) -> Health {
        match code {
            200..=299 => Health::Passing,
            429 => Health::Warning,
            _ => Health::Critical,
        }
    }
}

/// What runs a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// The node's Serf check (never run; passing while the agent answers).
    Serf,
    /// An HTTP GET of `url` every `interval`, giving up after `timeout`.
    Http {
        /// The URL.
        url: String,
        /// Interval (≥ 1 s).
        interval: Duration,
        /// Timeout.
        timeout: Duration,
    },
    /// A check whose status is set through the API only (TTL-less stand-in for kinds the
    /// emulator does not run: it keeps its initial status).
    Manual,
}

/// One check on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Check ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: Health,
    /// Notes.
    pub notes: String,
    /// Output of the last run.
    pub output: String,
    /// Owning service ID ("" for node checks).
    pub service_id: String,
    /// Owning service name.
    pub service_name: String,
    /// Owning service's tags.
    pub service_tags: Vec<String>,
    /// How it runs.
    pub kind: CheckKind,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last status change.
    pub modify_index: u64,
}

impl Check {
    /// The API JSON (`/v1/agent/checks` values, `/v1/health/*` `Checks` entries).
    pub fn to_json(&self) -> Value {
        let (kind, interval, timeout, definition) = match &self.kind {
            CheckKind::Serf => ("", String::new(), String::new(), json!({})),
            CheckKind::Manual => ("", String::new(), String::new(), json!({})),
            CheckKind::Http {
                url,
                interval,
                timeout,
            } => (
                "http",
                format_go_duration(*interval),
                format_go_duration(*timeout),
                json!({"HTTP": url, "Interval": format_go_duration(*interval), "Timeout": format_go_duration(*timeout)}),
            ),
        };
        json!({
            "Node": NODE_NAME,
            "CheckID": self.id,
            "Name": self.name,
            "Status": self.status.as_str(),
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": self.service_tags,
            "Type": kind,
            "Interval": interval,
            "Timeout": timeout,
            "ExposedPort": 0,
            "Definition": definition,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }
}

/// One service instance on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Service ID.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address ("" = the node's).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Meta.
    pub meta: BTreeMap<String, String>,
    /// Registered by the agent itself (the server's `consul` service): listed by the catalog,
    /// not by `/v1/agent/services`.
    pub builtin: bool,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

impl Service {
    /// The `/v1/agent/services` value.
    pub fn agent_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Service": self.name,
            "Tags": self.tags,
            "Meta": self.meta,
            "Port": self.port,
            "Address": self.address,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": false,
            "Datacenter": super::http::DATACENTER,
        })
    }

    /// The `Service` object of `/v1/health/service/<name>` entries.
    pub fn health_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Service": self.name,
            "Tags": self.tags,
            "Address": self.address,
            "Meta": self.meta,
            "Port": self.port,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": false,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }

    /// A `/v1/catalog/service/<name>` entry (node fields and `Service*` fields).
    pub fn catalog_json(&self) -> Value {
        json!({
            "ID": NODE_ID,
            "Node": NODE_NAME,
            "Address": NODE_ADDRESS,
            "Datacenter": super::http::DATACENTER,
            "TaggedAddresses": {"lan": NODE_ADDRESS, "wan": NODE_ADDRESS},
            "NodeMeta": {"consul-network-segment": ""},
            "ServiceKind": "",
            "ServiceID": self.id,
            "ServiceName": self.name,
            "ServiceTags": self.tags,
            "ServiceAddress": self.address,
            "ServiceMeta": self.meta,
            "ServicePort": self.port,
            "ServiceWeights": {"Passing": 1, "Warning": 1},
            "ServiceEnableTagOverride": false,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }
}

/// The node object of `/v1/health/service/<name>` entries.
pub fn node_json() -> Value {
    json!({
        "ID": NODE_ID,
        "Node": NODE_NAME,
        "Address": NODE_ADDRESS,
        "Datacenter": super::http::DATACENTER,
        "TaggedAddresses": {"lan": NODE_ADDRESS, "wan": NODE_ADDRESS},
        "Meta": {"consul-network-segment": ""},
    })
}

/// Services and checks of the node, with the catalog's index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    /// Services by ID.
    pub services: BTreeMap<String, Service>,
    /// Checks by ID (the `serfHealth` node check included).
    pub checks: BTreeMap<String, Check>,
    /// Index of the last catalog change.
    pub index: u64,
}

impl Catalog {
    /// The catalog of a fresh node at raft index `index`: the `serfHealth` check and the
    /// server's `consul` service.
    pub fn new(index: u64) -> Catalog {
        let mut c = Catalog {
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            index,
        };
        c.checks.insert(
            SERF_CHECK_ID.to_string(),
            Check {
                id: SERF_CHECK_ID.to_string(),
                name: "Serf Health Status".to_string(),
                status: Health::Passing,
                notes: String::new(),
                output: "Agent alive and reachable".to_string(),
                service_id: String::new(),
                service_name: String::new(),
                service_tags: Vec::new(),
                kind: CheckKind::Serf,
                create_index: index,
                modify_index: index,
            },
        );
        c.services.insert(
            "consul".to_string(),
            Service {
                id: "consul".to_string(),
                name: "consul".to_string(),
                tags: Vec::new(),
                address: String::new(),
                port: 8300,
                meta: BTreeMap::from([("raft_version".to_string(), "3".to_string())]),
                builtin: true,
                create_index: index,
                modify_index: index,
            },
        );
        c
    }

    /// The checks of service `id`.
    pub fn service_checks(&self, id: &str) -> impl Iterator<Item = &Check> {
        self.checks.values().filter(move |c| c.service_id == id)
    }

    /// Node checks (no service).
    pub fn node_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values().filter(|c| c.service_id.is_empty())
    }
}

/// Why a registration was refused (400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The body is not a JSON object, or a field has the wrong type.
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// `Name` is missing or empty.
    #[error("Missing service name")]
    MissingName,
    /// A check definition is invalid.
    #[error("Invalid check: {0}")]
    Check(String),
}

/// A parsed service registration: the service and its checks (IDs and defaults applied;
/// indexes 0, set on commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The service.
    pub service: Service,
    /// Its checks.
    pub checks: Vec<Check>,
}

/// The value of `key` in `obj`, matched case-insensitively (Go's `encoding/json`).
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn text_field(obj: &Map<String, Value>, key: &str) -> Result<String, RegisterError> {
    match field(obj, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(RegisterError::Decode(format!(
            "{key}: expected a string, got {other}"
        ))),
    }
}

fn duration_field(obj: &Map<String, Value>, key: &str) -> Result<Option<Duration>, RegisterError> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_go_duration(s)
            .map(Some)
            .map_err(|e| RegisterError::Decode(format!("{key}: {e}"))),
        // Go's time.Duration from a JSON number: nanoseconds.
        Some(Value::Number(n)) => Ok(n.as_u64().map(Duration::from_nanos)),
        Some(other) => Err(RegisterError::Decode(format!(
            "{key}: expected a duration, got {other}"
        ))),
    }
}

/// Parses a `/v1/agent/service/register` body. See the module docs for the rules.
///
/// Errors: [`RegisterError`] (400 with its text).
pub fn parse_registration(body: &[u8]) -> Result<Registration, RegisterError> {
    let obj: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| RegisterError::Decode(e.to_string()))?;
    let name = text_field(&obj, "Name")?;
    if name.is_empty() {
        return Err(RegisterError::MissingName);
    }
    let mut id = text_field(&obj, "ID")?;
    if id.is_empty() {
        id.clone_from(&name);
    }
    let tags = match field(&obj, "Tags") {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| RegisterError::Decode(format!("Tags: {e}")))?,
    };
    let meta: BTreeMap<String, String> = match field(&obj, "Meta") {
        None => BTreeMap::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| RegisterError::Decode(format!("Meta: {e}")))?,
    };
    let port = match field(&obj, "Port") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| RegisterError::Decode(format!("Port: {v} is not a port")))?,
    };
    let service = Service {
        id: id.clone(),
        name: name.clone(),
        tags: tags.clone(),
        address: text_field(&obj, "Address")?,
        port,
        meta,
        builtin: false,
        create_index: 0,
        modify_index: 0,
    };
    let mut defs: Vec<&Map<String, Value>> = Vec::new();
    if let Some(v) = field(&obj, "Check") {
        defs.push(
            v.as_object()
                .ok_or_else(|| RegisterError::Decode("Check: expected an object".into()))?,
        );
    }
    if let Some(v) = field(&obj, "Checks") {
        let list = v
            .as_array()
            .ok_or_else(|| RegisterError::Decode("Checks: expected an array".into()))?;
        for c in list {
            defs.push(
                c.as_object()
                    .ok_or_else(|| RegisterError::Decode("Checks: expected objects".into()))?,
            );
        }
    }
    let several = defs.len() > 1;
    let mut checks = Vec::with_capacity(defs.len());
    for (i, def) in defs.into_iter().enumerate() {
        let mut check_id = text_field(def, "CheckID")?;
        if check_id.is_empty() {
            check_id = text_field(def, "ID")?;
        }
        if check_id.is_empty() {
            check_id = if several {
                format!("service:{id}:{}", i + 1)
            } else {
                format!("service:{id}")
            };
        }
        let mut check_name = text_field(def, "Name")?;
        if check_name.is_empty() {
            check_name = format!("Service '{name}' check");
        }
        let status = match text_field(def, "Status")?.as_str() {
            "" => Health::Critical,
            s => Health::parse(s).ok_or_else(|| {
                RegisterError::Check(format!("Status {s:?} is not passing, warning or critical"))
            })?,
        };
        let url = text_field(def, "HTTP")?;
        let interval = duration_field(def, "Interval")?;
        let kind = if url.is_empty() {
            if field(def, "TTL").is_none() {
                return Err(RegisterError::Check(
                    "this emulator runs HTTP checks (and keeps TTL checks at their status); give HTTP and Interval".into(),
                ));
            }
            CheckKind::Manual
        } else {
            let interval = interval.filter(|d| !d.is_zero()).ok_or_else(|| {
                RegisterError::Check(
                    "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks".into(),
                )
            })?;
            url::Url::parse(&url)
                .map_err(|e| RegisterError::Check(format!("HTTP {url:?}: {e}")))?;
            CheckKind::Http {
                url,
                interval: interval.max(MIN_INTERVAL),
                timeout: duration_field(def, "Timeout")?
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_HTTP_TIMEOUT),
            }
        };
        checks.push(Check {
            id: check_id,
            name: check_name,
            status,
            notes: text_field(def, "Notes")?,
            output: String::new(),
            service_id: id.clone(),
            service_name: name.clone(),
            service_tags: tags.clone(),
            kind,
            create_index: 0,
            modify_index: 0,
        });
    }
    Ok(Registration { service, checks })
}

/// The check IDs a session create body lists (see the module docs) as `(node checks, service
/// checks)`: `Checks` (default `["serfHealth"]`, replaced when the key is present) and
/// `NodeChecks` are node checks, `ServiceChecks[].ID` service checks; each deduplicated, in order.
///
/// Errors: a field of the wrong shape (400 `Request decode failed: …`).
pub fn session_checks(body: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut out = vec![SERF_CHECK_ID.to_string()];
    let mut services = Vec::new();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((out, services));
    }
    let obj: Map<String, Value> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let strings = |v: &Value, key: &str| -> Result<Vec<String>, String> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{key}: expected strings"))
                })
                .collect(),
            _ => Err(format!("{key}: expected an array")),
        }
    };
    if let Some((_, v)) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("checks")) {
        out = strings(v, "Checks")?;
    }
    if let Some(v) = field(&obj, "NodeChecks") {
        out.extend(strings(v, "NodeChecks")?);
    }
    if let Some(v) = field(&obj, "ServiceChecks") {
        let list = v
            .as_array()
            .ok_or_else(|| "ServiceChecks: expected an array".to_string())?;
        for sc in list {
            let id = sc
                .as_object()
                .and_then(|o| field(o, "ID"))
                .and_then(Value::as_str)
                .ok_or_else(|| "ServiceChecks: expected objects with an ID".to_string())?;
            services.push(id.to_string());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.clone()));
    services.retain(|c| seen.insert(c.clone()));
    Ok((out, services))
}

/// Why a session may not be bound to its checks (`validateSessionChecksTxn`; 500 with this text).
pub fn validate_session_checks(catalog: &Catalog, checks: &[String]) -> Result<(), String> {
    for id in checks {
        match catalog.checks.get(id) {
            None => return Err(format!("Missing check '{id}' registration")),
            Some(c) if c.status == Health::Critical => {
                return Err(format!("Check '{id}' is in critical state"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_defaults_follow_consul() {
        let r = parse_registration(
            br#"{"name":"jobforge","meta":{"identity":"a"},"port":9090,
                "check":{"http":"http://127.0.0.1:9090/healthz","interval":"500ms","timeout":"1s"}}"#,
        )
        .expect("valid");
        assert_eq!(r.service.id, "jobforge");
        assert_eq!(r.service.meta["identity"], "a");
        assert_eq!(r.checks.len(), 1);
        let c = &r.checks[0];
        assert_eq!(c.id, "service:jobforge");
        assert_eq!(c.name, "Service 'jobforge' check");
        assert_eq!(c.status, Health::Critical);
        assert_eq!(
            c.kind,
            CheckKind::Http {
                url: "http://127.0.0.1:9090/healthz".into(),
                interval: MIN_INTERVAL,
                timeout: Duration::from_secs(1)
            }
        );
        let r = parse_registration(
            br#"{"Name":"s","ID":"s1","Checks":[{"HTTP":"http://x/","Interval":"2s"},{"HTTP":"http://y/","Interval":"2s","Status":"passing"}]}"#,
        )
        .expect("valid");
        assert_eq!(r.checks[0].id, "service:s1:1");
        assert_eq!(r.checks[1].id, "service:s1:2");
        assert_eq!(r.checks[1].status, Health::Passing);
        assert_eq!(
            parse_registration(br#"{"ID":"x"}"#),
            Err(RegisterError::MissingName)
        );
        assert!(matches!(
            parse_registration(br#"{"Name":"x","Check":{"HTTP":"http://x/"}}"#),
            Err(RegisterError::Check(_))
        ));
    }

    #[test]
    fn http_status_mapping() {
        assert_eq!(Health::of_http_status(200), Health::Passing);
        assert_eq!(Health::of_http_status(204), Health::Passing);
        assert_eq!(Health::of_http_status(429), Health::Warning);
        assert_eq!(Health::of_http_status(503), Health::Critical);
        assert_eq!(Health::of_http_status(301), Health::Critical);
    }

    #[test]
    fn session_check_lists() {
        let serf = vec!["serfHealth".to_string()];
        assert_eq!(session_checks(b"").unwrap(), (serf.clone(), vec![]));
        assert_eq!(
            session_checks(br#"{"Name":"x"}"#).unwrap(),
            (serf.clone(), vec![])
        );
        assert_eq!(
            session_checks(br#"{"Checks":[]}"#).unwrap(),
            (vec![], vec![])
        );
        assert_eq!(
            session_checks(br#"{"NodeChecks":["serfHealth"],"ServiceChecks":[{"ID":"service:a"}],"checks":[]}"#)
                .unwrap(),
            (serf, vec!["service:a".to_string()])
        );
        let mut c = Catalog::new(1);
        assert!(validate_session_checks(&c, &["serfHealth".into()]).is_ok());
        assert_eq!(
            validate_session_checks(&c, &["service:a".into()]),
            Err("Missing check 'service:a' registration".into())
        );
        let r = parse_registration(br#"{"Name":"a","Check":{"HTTP":"http://x/","Interval":"1s"}}"#)
            .unwrap();
        c.checks.insert(r.checks[0].id.clone(), r.checks[0].clone());
        assert_eq!(
            validate_session_checks(&c, &["service:a".into()]),
            Err("Check 'service:a' is in critical state".into())
        );
    }
}
