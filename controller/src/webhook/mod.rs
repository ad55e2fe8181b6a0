//! Webhook delivery (`spec.webhook`): at least once, through a fenced outbox in Consul KV.
//!
//! **What a receiver gets.** One JSON `POST` per event with headers
//! `Content-Type: application/json`, `X-Jobforge-Event: <event>`, `X-Jobforge-Delivery: <id>`, the
//! request's own `spec.webhook.headers`, and, when `secret_path` names a Vault KV v2 secret with a
//! `secret` field, `X-Jobforge-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`. The
//! delivery id is `<namespace>/<name>/<event>:<generation>:<attempt>` (for example
//! `team-a/app/succeeded:1234:1`); the generation is a Consul index, so an id is never reused.
//!
//! **At least once.** The state machine emits an event with the status transition that produced
//! it; the reconciler writes the event's [`OutboxRecord`] to
//! `<prefix>/outbox/<namespace>/<name>/<entry>` in the *same* fenced `/v1/txn` as that status
//! ([`outbox_ops`]), so either both are stored or neither. The body is rendered then, once, and
//! stored in the record: every attempt, on any replica, sends the same bytes with the same
//! delivery id, and the signature is recomputed over them with the key Vault holds at send time.
//! The leader's [`Outbox`] worker watches the outbox (blocking queries), sends each record with
//! retries (exponential backoff with jitter, 200 ms doubling to 10 s, 6 attempts, on connection
//! errors, timeouts, 429 and 5xx), and only after a 2xx, or after giving up, removes it — fenced,
//! in one transaction with the outcome it records in the status (`webhook.lastDeliveredAt` /
//! `lastDeliveredEvent`, or `lastError` / `lastErrorEvent`). A leader that dies at any point
//! leaves the record in place, and the next leader's worker starts by listing the outbox: the
//! event is sent again, with the same id. So a receiver sees every event at least once and must
//! **deduplicate on `X-Jobforge-Delivery`**.
//!
//! **Order.** A request's events are sent one at a time, in the order they happened (entries are
//! named `<generation>-<attempt>-<ordinal>-<event>` and sort that way), each after the previous one
//! was delivered or given up. Events of different requests are sent concurrently, in no particular
//! order. After a failover an event that was delivered but not yet removed is sent again, and a
//! deposed leader's in-flight request may still land after the new leader's: a duplicate can
//! arrive after a later event. Receivers that care about order compare `generation`, `attempt`
//! and `occurredAt` in the body.
//!
//! **Where it may go.** The client is [`crate::egress::client`]: loopback, private, link-local and
//! other internal addresses are refused after DNS resolution and at connect time unless the
//! operator allowlists their CIDRs (`tenancy.webhook_allow_cidrs` in `<prefix>/config`; the client
//! is rebuilt when that changes); redirects are not followed. A refused destination is given up at
//! once and recorded as `destination not allowed`. Nothing recorded in the (tenant-readable)
//! status carries controller-internal text: see [`deliver::Failure`].

mod deliver;
mod outbox;
mod worker;

pub use deliver::{Failure, Sender};
pub use outbox::{OutboxRecord, delivery_id, entry_name, outbox_ops};
pub use worker::{Outbox, OutboxDeps};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jobforge_schema::{BuildRequest, BuildStatus, WebhookEvent};
use serde_json::json;
use sha2::Sha256;

use crate::machine::webhook_event_name;

/// The JSON body of an event: what happened (`event`, `id` = the event id
/// `<event>:<generation>:<attempt>`, `deliveryId`), to which request, its phase and outcome, and
/// `occurredAt`, the time the transition was committed (identical on every attempt).
pub fn payload(
    req: &BuildRequest,
    generation: u64,
    status: &BuildStatus,
    event: WebhookEvent,
    event_id: &str,
    occurred_at: DateTime<Utc>,
) -> serde_json::Value {
    json!({
        "event": webhook_event_name(event),
        "id": event_id,
        "deliveryId": delivery_id(&req.metadata.namespace, &req.metadata.name, event_id),
        "request": {
            "namespace": req.metadata.namespace,
            "name": req.metadata.name,
            "generation": generation,
            "labels": req.metadata.labels,
        },
        "phase": status.phase,
        "attempt": status.attempt,
        "status": status.succeeded_condition().map(|c| json!({
            "status": c.status, "reason": c.reason, "message": c.message,
        })),
        "owner": req.spec.owner,
        "repo_url": req.spec.repo_url,
        "git_ref": req.spec.git_ref,
        "commit_sha": status.source.as_ref().map(|s| s.commit_sha.clone()),
        "image_name": req.spec.image_name,
        "image_tags": req.spec.image_tags,
        "image": status.image,
        "failure": status.failure,
        "startTime": status.start_time,
        "completionTime": status.completion_time,
        "occurredAt": occurred_at,
    })
}

/// `sha256=<hex HMAC-SHA256(key, body)>`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_test_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
