//! Request counters, exposed the way the real products expose telemetry: Consul's
//! `GET /v1/agent/metrics` and Nomad's `GET /v1/metrics` answer go-metrics' in-memory sink JSON
//! (`{"Timestamp", "Gauges", "Points", "Counters": [{"Name", "Count", "Rate", "Sum", "Min", "Max",
//! "Mean", "Stddev", "Labels"}], "Samples"}`; Consul docs, agent/metrics API).
//!
//! Every request is counted under `<product>.http.<METHOD>.<route>`, where `<route>` is the matched
//! route pattern with `/` turned into `.` and each path parameter into `_`
//! (`PUT /v1/kv/jobforge/x` → `consul.http.PUT.v1.kv._`), as Consul's pre-1.9 HTTP telemetry names
//! them. Requests that match no route count under `<product>.http.<METHOD>.unmatched`; requests to
//! the metrics endpoint itself are not counted.
//!
//! Bytes of response bodies are a sample per route in `Samples`, named
//! `<product>.http.<METHOD>.<route>.bytes_out` (`Count` answers, `Sum` bytes; only bodies whose
//! size is known when the answer starts: every KV, catalog and job answer, not streamed logs or
//! events). This one has no counterpart in the real telemetry; it exists so that a benchmark can
//! tell what a client read (issue 17: bytes read per change), and no client of ours reads it.
//!
//! Deviation: the real in-memory sink reports the current 10-second interval; these counters are
//! cumulative since the emulator started (a benchmark takes the difference of two reads), so each
//! counter's `Count` equals its `Sum` and `Rate` is 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Cumulative request counts by metric name (`consul.http.GET.v1.kv._` → 12).
#[derive(Debug, Default)]
pub struct HttpCounters {
    product: &'static str,
    counts: Mutex<BTreeMap<String, u64>>,
    /// `bytes_out` samples: name → (answers, bytes).
    bytes: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl HttpCounters {
    /// Empty counters whose names start with `<product>.http.`.
    pub fn new(product: &'static str) -> HttpCounters {
        HttpCounters {
            product,
            counts: Mutex::new(BTreeMap::new()),
            bytes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one `method` request to the route pattern `route` (`None` when no route matched).
    pub fn record(&self, method: &str, route: Option<&str>) {
        let name = format!(
            "{}.http.{method}.{}",
            self.product,
            route.map(route_label).unwrap_or_else(|| "unmatched".into())
        );
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(name).or_insert(0) += 1;
    }

    /// Adds `bytes` to the `bytes_out` sum of `method` requests to `route`.
    pub fn record_bytes(&self, method: &str, route: Option<&str>, bytes: u64) {
        let name = format!(
            "{}.http.{method}.{}.bytes_out",
            self.product,
            route.map(route_label).unwrap_or_else(|| "unmatched".into())
        );
        let mut all = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        let e = all.entry(name).or_insert((0, 0));
        e.0 += 1;
        e.1 += bytes;
    }

    /// The `bytes_out` samples, by name: (answers, bytes).
    pub fn bytes_snapshot(&self) -> BTreeMap<String, (u64, u64)> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current counts, by name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The go-metrics in-memory sink document (see the module docs).
    pub fn document(&self) -> serde_json::Value {
        let counters: Vec<serde_json::Value> = self
            .snapshot()
            .into_iter()
            .map(|(name, count)| {
                serde_json::json!({
                    "Name": name,
                    "Count": count,
                    "Rate": 0.0,
                    "Sum": count as f64,
                    "Min": 1.0,
                    "Max": 1.0,
                    "Mean": 1.0,
                    "Stddev": 0.0,
                    "Labels": {},
                })
            })
            .collect();
        let samples: Vec<serde_json::Value> = self
            .bytes_snapshot()
            .into_iter()
            .map(|(name, (count, sum))| {
                let mean = if count == 0 {
                    0.0
                } else {
                    sum as f64 / count as f64
                };
                serde_json::json!({
                    "Name": name,
                    "Count": count,
                    "Rate": 0.0,
                    "Sum": sum as f64,
                    "Min": 0.0,
                    "Max": 0.0,
                    "Mean": mean,
                    "Stddev": 0.0,
                    "Labels": {},
                })
            })
            .collect();
        serde_json::json!({
            "Timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%S %z").to_string(),
            "Gauges": [],
            "Points": [],
            "Counters": counters,
            "Samples": samples,
        })
    }
}

/// `/v1/kv/{*key}` → `v1.kv._`.
fn route_label(route: &str) -> String {
    route
        .trim_matches('/')
        .split('/')
        .map(|seg| if seg.starts_with('{') { "_" } else { seg })
        .collect::<Vec<_>>()
        .join(".")
}

/// Adds `GET <metrics_path>` answering the counters' document to `router`, and counts every other
/// request `router` serves (including its fallback) under `<product>.http.…`.
pub fn instrument(router: Router, product: &'static str, metrics_path: &'static str) -> Router {
    let counters = Arc::new(HttpCounters::new(product));
    let read = counters.clone();
    router
        .route(
            metrics_path,
            get(move || {
                let read = read.clone();
                async move { axum::Json(read.document()).into_response() }
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let counters = counters.clone();
                async move { count(&counters, metrics_path, req, next).await }
            },
        ))
}

async fn count(counters: &HttpCounters, metrics_path: &str, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    if route.as_deref() == Some(metrics_path) {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_string();
    counters.record(&method, route.as_deref());
    let resp = next.run(req).await;
    if let Some(n) = axum::body::HttpBody::size_hint(resp.body()).exact() {
        counters.record_bytes(&method, route.as_deref(), n);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_become_dotted_labels_with_parameters_as_underscore() {
        assert_eq!(route_label("/v1/kv/{*key}"), "v1.kv._");
        assert_eq!(
            route_label("/v1/job/{id}/allocations"),
            "v1.job._.allocations"
        );
        assert_eq!(route_label("/v1/jobs"), "v1.jobs");
    }

    #[test]
    fn counters_accumulate_by_method_and_route() {
        let c = HttpCounters::new("consul");
        c.record("GET", Some("/v1/kv/{*key}"));
        c.record("GET", Some("/v1/kv/{*key}"));
        c.record("PUT", None);
        let s = c.snapshot();
        assert_eq!(s.get("consul.http.GET.v1.kv._"), Some(&2));
        assert_eq!(s.get("consul.http.PUT.unmatched"), Some(&1));
        let doc = c.document();
        assert_eq!(doc["Counters"][0]["Name"], "consul.http.GET.v1.kv._");
        assert_eq!(doc["Counters"][0]["Count"], 2);
        assert_eq!(doc["Samples"], serde_json::json!([]));
    }

    #[test]
    fn response_bytes_are_summed_per_route_as_samples() {
        let c = HttpCounters::new("consul");
        c.record_bytes("GET", Some("/v1/kv/{*key}"), 100);
        c.record_bytes("GET", Some("/v1/kv/{*key}"), 23);
        let doc = c.document();
        assert_eq!(
            doc["Samples"][0]["Name"],
            "consul.http.GET.v1.kv._.bytes_out"
        );
        assert_eq!(doc["Samples"][0]["Count"], 2);
        assert_eq!(doc["Samples"][0]["Sum"], 123.0);
        assert!(doc["Counters"].as_array().is_some_and(Vec::is_empty));
    }
}
