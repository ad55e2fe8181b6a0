//! Nomad's `GET /v1/metrics` (go-metrics in-memory sink JSON, Nomad docs: metrics API): every
//! request counted under `nomad.http.<METHOD>.<route>`; the counting itself is shared with Consul's
//! `/v1/agent/metrics` (see [`crate::consul::http::metrics`]).

/// `router` with `GET /v1/metrics` added and every other request counted.
pub(super) fn instrument(router: axum::Router) -> axum::Router {
    crate::consul::http::metrics::instrument(router, "nomad", "/v1/metrics")
}
