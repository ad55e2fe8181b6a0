//! Service registration with the local Consul agent (`api-docs/agent/service.mdx`,
//! `api-docs/agent/check.mdx`): the body of `PUT /v1/agent/service/register` with one HTTP check.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::error::go_duration;

/// A service instance with one HTTP check, as `PUT /v1/agent/service/register` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRegistration {
    /// Service ID, unique on the agent (e.g. `jobforge-<identity>`).
    pub id: String,
    /// Service name (e.g. `jobforge`): what the catalog and `consul_sd_configs` look up.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address the service (and its check) answers on; "" = the agent's node address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Free-form meta (identity, version).
    pub meta: BTreeMap<String, String>,
    /// The check's URL (e.g. `http://10.0.0.5:9090/healthz`).
    pub check_url: String,
    /// How often the agent runs the check.
    pub check_interval: Duration,
    /// How long the agent waits for the check's answer before it counts as critical.
    pub check_timeout: Duration,
    /// The check's initial status (`passing` when the caller answers already, so a session
    /// can be bound to it at once; Consul's default is `critical`).
    pub initial_status: Option<&'static str>,
}

impl ServiceRegistration {
    /// The ID Consul gives the single check of a registration: `service:<service id>`
    /// (`agent/structs`, `ServiceDefinition.CheckTypes`).
    pub fn check_id(&self) -> String {
        format!("service:{}", self.id)
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        let mut check = json!({
            "CheckID": self.check_id(),
            "Name": format!("{} /healthz", self.name),
            "HTTP": self.check_url,
            "Interval": go_duration(self.check_interval),
            "Timeout": go_duration(self.check_timeout),
        });
        if let (Some(s), Some(obj)) = (self.initial_status, check.as_object_mut()) {
            obj.insert("Status".into(), json!(s));
        }
        json!({
            "ID": self.id,
            "Name": self.name,
            "Tags": self.tags,
            "Address": self.address,
            "Port": self.port,
            "Meta": self.meta,
            "Check": check,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_one_http_check_with_the_service_check_id() {
        let r = ServiceRegistration {
            id: "jobforge-a".into(),
            name: "jobforge".into(),
            tags: vec![],
            address: "127.0.0.1".into(),
            port: 9090,
            meta: BTreeMap::from([("identity".into(), "a".into())]),
            check_url: "http://127.0.0.1:9090/healthz".into(),
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_millis(500),
            initial_status: Some("passing"),
        };
        let v = r.to_json();
        assert_eq!(v["Check"]["CheckID"], "service:jobforge-a");
        assert_eq!(v["Check"]["Interval"], "1s");
        assert_eq!(v["Check"]["Timeout"], "500ms");
        assert_eq!(v["Check"]["Status"], "passing");
        assert_eq!(v["Meta"]["identity"], "a");
    }
}
