//! The outbox record: one webhook event waiting for delivery, and the transaction operations that
//! store it with the status transition that produced it.
//!
//! Key: `<prefix>/outbox/<namespace>/<name>/<entry>` ([`jobforge_schema::KeyLayout::outbox_key`]),
//! where `<entry>` is [`entry_name`]: `<generation:020>-<attempt:010>-<ordinal>-<event>`, so a
//! request's entries list in the order its events happen (`started`, `phase.build`,
//! `phase.test`, `phase.publish`, then the terminal event, per attempt, per generation).
//! Value: [`OutboxRecord`] as JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use jobforge_client::consul::TxnOp;
use jobforge_schema::{BuildRequest, BuildStatus, KeyLayout, WebhookEvent};
use serde::{Deserialize, Serialize};

use crate::machine::webhook_event_name;

/// One event waiting for delivery: everything a sender needs, fixed when the event happened (a
/// later spec change does not change where or what an already recorded event is sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRecord {
    /// The `X-Jobforge-Delivery` header: [`delivery_id`].
    pub delivery_id: String,
    /// The event (`X-Jobforge-Event`).
    pub event: WebhookEvent,
    /// `<event>:<generation>:<attempt>`, as in the status's `webhook.lastEvent`.
    pub event_id: String,
    /// The request's namespace.
    pub namespace: String,
    /// The request's name.
    pub name: String,
    /// `spec.webhook.url` when the event happened.
    pub url: String,
    /// `spec.webhook.headers` when the event happened.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `spec.webhook.secret_path` when the event happened (the key itself is read at send time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_path: Option<String>,
    /// The exact body to send, on every attempt (JSON text of [`super::payload`]).
    pub body: String,
    /// When the event was recorded.
    pub created_at: DateTime<Utc>,
}

/// The delivery id of event `event_id` of request `namespace/name`:
/// `<namespace>/<name>/<event>:<generation>:<attempt>`. Stable across attempts and leaders; never
/// reused, since the generation is a Consul index.
pub fn delivery_id(namespace: &str, name: &str, event_id: &str) -> String {
    format!("{namespace}/{name}/{event_id}")
}

/// The outbox entry name of an event id (`<event>:<generation>:<attempt>`, as
/// [`crate::machine::webhook_event_id`] makes it): `<generation:020>-<attempt:010>-<ordinal>-<event>`,
/// where the ordinal orders the events of one attempt (`started` 0, `phase.build` 1,
/// `phase.test` 2, `phase.publish` 3, terminal events 4). `None` for an id of another shape.
pub fn entry_name(event_id: &str) -> Option<String> {
    let mut parts = event_id.split(':');
    let (Some(event), Some(generation), Some(attempt), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let generation: u64 = generation.parse().ok()?;
    let attempt: u32 = attempt.parse().ok()?;
    let ordinal = match event {
        "started" => 0,
        "phase.build" => 1,
        "phase.test" => 2,
        "phase.publish" => 3,
        "succeeded" | "failed" | "cancelled" => 4,
        _ => return None,
    };
    Some(format!("{generation:020}-{attempt:010}-{ordinal}-{event}"))
}

/// The transaction operations that put `events` (the state machine's `Webhook` effects of this
/// step: event and event id) into the outbox of `req`, to be committed in the same fenced
/// transaction as `status` (the status they describe). Events the request does not subscribe to
/// (or all of them, without `spec.webhook`) are skipped; the machine already filters, this is
/// defence in depth. `now` becomes the body's `occurredAt`.
///
/// Errors: a body that cannot be encoded (serde_json), or an event id of an unknown shape.
pub fn outbox_ops(
    keys: &KeyLayout,
    req: &BuildRequest,
    generation: u64,
    status: &BuildStatus,
    events: &[(WebhookEvent, String)],
    now: DateTime<Utc>,
) -> Result<Vec<TxnOp>, String> {
    let Some(hook) = &req.spec.webhook else {
        return Ok(Vec::new());
    };
    let subscribed = |e: &WebhookEvent| {
        if hook.on.is_empty() {
            matches!(e, WebhookEvent::Succeeded | WebhookEvent::Failed)
        } else {
            hook.on.contains(e)
        }
    };
    let (ns, name) = (&req.metadata.namespace, &req.metadata.name);
    let mut ops = Vec::new();
    for (event, event_id) in events.iter().filter(|(e, _)| subscribed(e)) {
        let entry = entry_name(event_id).ok_or_else(|| {
            format!(
                "webhook event id {event_id:?} ({}) has no outbox entry name",
                webhook_event_name(*event)
            )
        })?;
        let body = super::payload(req, generation, status, *event, event_id, now);
        let record = OutboxRecord {
            delivery_id: delivery_id(ns, name, event_id),
            event: *event,
            event_id: event_id.clone(),
            namespace: ns.clone(),
            name: name.clone(),
            url: hook.url.clone(),
            headers: hook.headers.clone(),
            secret_path: hook.secret_path.clone(),
            body: serde_json::to_string(&body).map_err(|e| e.to_string())?,
            created_at: now,
        };
        ops.push(TxnOp::Set {
            key: keys.outbox_key(ns, name, &entry),
            value: serde_json::to_vec(&record).map_err(|e| e.to_string())?,
            flags: 0,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobforge_schema::{BuildSpec, WebhookSpec};

    #[test]
    fn entry_names_sort_in_event_order() {
        let ids = [
            "started:99:1",
            "phase.test:99:1",
            "phase.publish:99:1",
            "failed:99:1",
            "phase.test:99:2",
            "succeeded:99:2",
            "cancelled:100:1",
            "started:1000:1",
        ];
        let entries: Vec<String> = ids.iter().map(|i| entry_name(i).expect(i)).collect();
        let mut sorted = entries.clone();
        sorted.sort();
        assert_eq!(entries, sorted);
        assert_eq!(
            entries[0],
            "00000000000000000099-0000000001-0-started".to_string()
        );
        for bad in ["started", "started:x:1", "nope:1:1", "started:1:1:1", ""] {
            assert_eq!(entry_name(bad), None, "{bad}");
        }
    }

    fn request(on: Vec<WebhookEvent>) -> BuildRequest {
        BuildRequest::new(
            "team-a",
            "app",
            BuildSpec {
                webhook: Some(WebhookSpec {
                    url: "https://hooks.example.com/x".into(),
                    secret_path: Some("secret/data/jobforge/team-a/hook".into()),
                    headers: [("X-Team".to_string(), "a".to_string())].into(),
                    on,
                }),
                ..BuildSpec::default()
            },
        )
    }

    #[test]
    fn outbox_ops_store_one_fixed_record_per_subscribed_event() {
        let keys = KeyLayout::default();
        let req = request(vec![WebhookEvent::Started, WebhookEvent::Succeeded]);
        let now = Utc::now();
        let events = [
            (WebhookEvent::Started, "started:7:1".to_string()),
            (WebhookEvent::Phase, "phase.test:7:1".to_string()),
        ];
        let ops = outbox_ops(&keys, &req, 7, &BuildStatus::default(), &events, now).expect("ops");
        assert_eq!(ops.len(), 1, "phase is not subscribed: {ops:?}");
        let TxnOp::Set { key, value, .. } = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(
            key,
            "jobforge/outbox/team-a/app/00000000000000000007-0000000001-0-started"
        );
        let rec: OutboxRecord = serde_json::from_slice(value).expect("record");
        assert_eq!(rec.delivery_id, "team-a/app/started:7:1");
        assert_eq!(rec.url, "https://hooks.example.com/x");
        let body: serde_json::Value = serde_json::from_str(&rec.body).expect("body");
        assert_eq!(body["deliveryId"], "team-a/app/started:7:1");
        assert_eq!(body["id"], "started:7:1");
        assert_eq!(body["event"], "started");
        assert_eq!(body["request"]["generation"], 7);
        assert!(body["occurredAt"].is_string());

        let unsubscribed = BuildRequest::new("team-a", "app", BuildSpec::default());
        let ops = outbox_ops(
            &keys,
            &unsubscribed,
            7,
            &BuildStatus::default(),
            &events,
            now,
        )
        .expect("ops");
        assert!(ops.is_empty());
    }
}
