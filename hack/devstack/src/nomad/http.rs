//! Routes of the Nomad HTTP API subset, blocking queries and headers (Nomad `command/agent/http.go`).
//!
//! Blocking: with `?index=N` a read waits until the index of what it reads exceeds N or `wait`
//! (default 5 min, max 10 min) passes; it wakes on the store's change channel, never by polling.
//! Every read answers `X-Nomad-Index`, `X-Nomad-KnownLeader: true`, `X-Nomad-LastContact: 0`.
//! Errors are plain text. Tokens (`X-Nomad-Token`, `Authorization: Bearer`) are accepted; the
//! emulator runs without ACLs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::NomadState;
use super::logs::{LogsQuery, stream};
use super::query::Params;
use super::spec::{JobSpec, RegisterBody};
use super::store::Store;

type S = State<Arc<NomadState>>;

pub(super) fn router(state: Arc<NomadState>) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/jobs",
            get(list_jobs).post(register_jobs).put(register_jobs),
        )
        .route(
            "/v1/job/{id}",
            get(get_job)
                .post(register_job)
                .put(register_job)
                .delete(deregister),
        )
        .route("/v1/job/{id}/allocations", get(job_allocs))
        .route("/v1/job/{id}/evaluations", get(job_evals))
        .route("/v1/job/{id}/summary", get(job_summary))
        .route("/v1/allocation/{id}", get(get_alloc))
        .route("/v1/allocations", get(list_allocs))
        .route("/v1/evaluation/{id}", get(get_eval))
        .route("/v1/client/fs/logs/{alloc}", get(logs))
        .route("/v1/event/stream", get(super::events::stream))
        .route("/v1/nodes", get(nodes))
        .route("/v1/node/{id}", get(node))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/status/leader", get(leader))
        .with_state(state)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn with_index(index: u64, body: Value) -> Response {
    let mut r = axum::Json(body).into_response();
    let h = r.headers_mut();
    h.insert("X-Nomad-Index", HeaderValue::from(index.max(1)));
    h.insert("X-Nomad-KnownLeader", HeaderValue::from_static("true"));
    h.insert("X-Nomad-LastContact", HeaderValue::from_static("0"));
    r
}

/// Parses Nomad's `wait` (`10s`, `500ms`, `5m`, plain number = seconds); capped at 5 min, as
/// Nomad caps a blocking query (`nomad/rpc.go` `maxQueryTime` = 300 s; Nomad then adds up to
/// wait/16 of jitter, which the emulator leaves out: it answers at the wait's end).
fn parse_wait(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs.clamp(0.0, 300.0)))
}

/// Answers `body` (a value, or the text of a 404) with `index` as a blocking query per `q`.
async fn blocking(
    state: &NomadState,
    q: &Params,
    index: impl Fn(&Store) -> u64,
    body: impl Fn(&Store) -> Result<Value, String>,
) -> Response {
    // The body is built only when answering: waking costs an index lookup, not a listing.
    let answer = || {
        let store = state.store();
        match body(&store) {
            Ok(v) => with_index(index(&store), v),
            Err(msg) => text(StatusCode::NOT_FOUND, msg),
        }
    };
    let min = q
        .get("index")
        .and_then(|i| i.parse::<u64>().ok())
        .unwrap_or(0);
    let wait = match q.get("wait") {
        Some(w) => match parse_wait(w) {
            Some(d) => d,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid wait time {w:?}: use a duration such as 10s or 500ms"),
                );
            }
        },
        None => Duration::from_secs(300),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = state.subscribe();
    loop {
        rx.borrow_and_update();
        let idx = index(&state.store());
        if min == 0 || idx > min || tokio::time::Instant::now() >= deadline {
            return answer();
        }
        let woke = tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.changed()) => r.is_ok(),
            () = state.closing().cancelled() => false,
        };
        if !woke {
            // Deadline or shutdown: answer with the current state.
            return answer();
        }
    }
}

async fn list_jobs(State(st): S, q: Params) -> Response {
    let prefix = q.get("prefix").unwrap_or_default().to_string();
    blocking(
        &st,
        &q,
        |s| s.jobs_index,
        |s| {
            let jobs: Vec<Value> = s
                .jobs
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(_, j)| {
                    let summary = json!({"JobID": j.spec.id, "Namespace": j.namespace(), "Summary": s.summary(j)});
                    j.stub(summary)
                })
                .collect();
            Ok(Value::Array(jobs))
        },
    )
    .await
}

async fn register_jobs(State(st): S, body: Bytes) -> Response {
    do_register(&st, None, &body)
}

async fn register_job(State(st): S, Path(id): Path<String>, body: Bytes) -> Response {
    do_register(&st, Some(&id), &body)
}

fn do_register(st: &Arc<NomadState>, path_id: Option<&str>, body: &[u8]) -> Response {
    let parsed: RegisterBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Failed to decode request body: {e}"),
            );
        }
    };
    let Some(raw) = parsed.job else {
        return text(StatusCode::BAD_REQUEST, "Job must be specified");
    };
    let spec: JobSpec = match serde_json::from_value(raw.clone()) {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Failed to decode job: {e}"),
            );
        }
    };
    if path_id.is_some_and(|id| id != spec.id) {
        return text(StatusCode::BAD_REQUEST, "Job ID does not match name");
    }
    let enforce = parsed.enforce_index.then_some(parsed.job_modify_index);
    let result = {
        let mut store = st.store();
        store.register(&st.node, &st.alloc_root, spec, raw, enforce)
    };
    match result {
        Ok(r) => {
            st.publish(r.job_modify_index);
            let out = json!({
                "EvalID": r.eval_id, "EvalCreateIndex": r.eval_create_index,
                "JobModifyIndex": r.job_modify_index, "Warnings": "", "Index": r.job_modify_index,
                "LastContact": 0, "KnownLeader": false,
            });
            let idx = r.job_modify_index;
            st.launch(r.launches, r.stops);
            with_index(idx, out)
        }
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn job_index(s: &Store, id: &str) -> u64 {
    s.jobs.get(id).map_or(s.jobs_index, |j| j.modify_index)
}

async fn get_job(State(st): S, Path(id): Path<String>, q: Params) -> Response {
    blocking(
        &st,
        &q,
        |s| job_index(s, &id),
        |s| {
            s.jobs
                .get(&id)
                .map(|j| j.to_json())
                .ok_or_else(|| "job not found".into())
        },
    )
    .await
}

async fn deregister(State(st): S, Path(id): Path<String>, q: Params) -> Response {
    let purge = q.flag("purge");
    let (eval, index, kills, purged) = {
        let mut store = st.store();
        let purged: Vec<String> = match store.jobs.get(&id) {
            Some(j) if purge => j.allocs.clone(),
            _ => Vec::new(),
        };
        let (eval, index, kills) = store.deregister(&id, purge);
        (eval, index, kills, purged)
    };
    // Allocations whose runner still runs are collected by it when it ends.
    for a in purged.iter().filter(|a| !st.has_runner(a)) {
        st.gc_alloc(a);
    }
    st.publish(index);
    st.launch(Vec::new(), kills);
    with_index(
        index,
        json!({"EvalID": eval, "EvalCreateIndex": if eval.is_empty() { 0 } else { index },
               "JobModifyIndex": index, "Index": index, "LastContact": 0, "KnownLeader": false}),
    )
}

async fn job_allocs(State(st): S, Path(id): Path<String>, q: Params) -> Response {
    blocking(
        &st,
        &q,
        |s| s.job_allocs_index(&id),
        |s| {
            let allocs: Vec<Value> = s
                .jobs
                .get(&id)
                .map(|j| {
                    j.allocs
                        .iter()
                        .filter_map(|a| s.allocs.get(a))
                        .map(|a| a.to_json(false))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Value::Array(allocs))
        },
    )
    .await
}

fn job_evals_of<'a>(s: &'a Store, id: &str) -> Vec<&'a super::model::EvalRecord> {
    s.jobs
        .get(id)
        .map(|j| j.evals.iter().filter_map(|e| s.evals.get(e)).collect())
        .unwrap_or_default()
}

async fn job_evals(State(st): S, Path(id): Path<String>, q: Params) -> Response {
    blocking(
        &st,
        &q,
        |s| {
            job_evals_of(s, &id)
                .iter()
                .map(|e| e.modify_index)
                .max()
                .unwrap_or(1)
        },
        |s| {
            Ok(Value::Array(
                job_evals_of(s, &id).iter().map(|e| e.to_json()).collect(),
            ))
        },
    )
    .await
}

async fn job_summary(State(st): S, Path(id): Path<String>, q: Params) -> Response {
    blocking(
        &st,
        &q,
        |s| job_index(s, &id),
        |s| match s.jobs.get(&id) {
            Some(j) => Ok(
                json!({"JobID": id, "Namespace": j.namespace(), "Summary": s.summary(j),
                      "Children": {"Pending": 0, "Running": 0, "Dead": 0},
                      "CreateIndex": j.create_index, "ModifyIndex": j.modify_index}),
            ),
            None => Err("job not found".into()),
        },
    )
    .await
}

async fn get_alloc(State(st): S, Path(id): Path<String>, q: Params) -> Response {
    blocking(
        &st,
        &q,
        |s| s.allocs.get(&id).map_or(s.index, |a| a.modify_index),
        |s| {
            s.allocs
                .get(&id)
                .map(|a| a.to_json(true))
                .ok_or_else(|| "alloc not found".into())
        },
    )
    .await
}

async fn list_allocs(State(st): S, q: Params) -> Response {
    let prefix = q.get("prefix").unwrap_or_default().to_string();
    blocking(
        &st,
        &q,
        |s| s.index,
        |s| {
            let mut v: Vec<&super::model::AllocRecord> = s
                .allocs
                .values()
                .filter(|a| a.id.starts_with(&prefix))
                .collect();
            v.sort_by_key(|a| a.create_index);
            Ok(Value::Array(v.iter().map(|a| a.to_json(false)).collect()))
        },
    )
    .await
}

async fn get_eval(State(st): S, Path(id): Path<String>, q: Params) -> Response {
    blocking(
        &st,
        &q,
        |s| s.evals.get(&id).map_or(s.index, |e| e.modify_index),
        |s| {
            s.evals
                .get(&id)
                .map(|e| e.to_json())
                .ok_or_else(|| "eval not found".into())
        },
    )
    .await
}

async fn logs(State(st): S, Path(alloc): Path<String>, q: Params) -> Response {
    let Some(task) = q.get("task").filter(|t| !t.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "must include task name");
    };
    let kind = q.get("type").unwrap_or_default();
    let idx = match kind {
        "stdout" => 0,
        "stderr" => 1,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("invalid log type {other:?}; allowed: stdout, stderr"),
            );
        }
    };
    let from_end = match q.get("origin").unwrap_or("start") {
        "start" => false,
        "end" => true,
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("origin must be start or end, got {other:?}"),
            );
        }
    };
    let offset = match q.get("offset").map(|o| o.parse::<u64>()) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "offset must be a non-negative integer",
            );
        }
    };
    if st.with_alloc(&alloc, |_| ()).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown allocation \"{alloc}\""),
        );
    }
    let sinks = st.sinks(&alloc, task);
    let Some(sink) = sinks.get(idx).cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unknown task name \"{task}\""),
        );
    };
    let q = LogsQuery {
        offset,
        from_end,
        follow: q.flag("follow"),
        plain: q.flag("plain"),
    };
    let ctype = if q.plain {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    };
    let mut r = Response::new(Body::from_stream(stream(sink, q)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

async fn nodes(State(st): S) -> Response {
    let n = &st.node;
    with_index(
        1,
        json!([{"ID": n.id, "Name": n.name, "Datacenter": n.datacenter, "NodeClass": "",
        "NodePool": "default", "Status": "ready", "SchedulingEligibility": "eligible", "Drain": false,
        "Address": "127.0.0.1", "Version": "1.9.0"}]),
    )
}

async fn node(State(st): S, Path(id): Path<String>) -> Response {
    if id == st.node.id || id == "self" {
        with_index(1, st.node.to_json())
    } else {
        text(StatusCode::NOT_FOUND, "node not found")
    }
}

async fn agent_self(State(st): S) -> Response {
    with_index(
        1,
        json!({"config": {"Datacenter": "dc1", "Region": "global", "NodeName": st.node.name,
        "Version": {"Version": "1.9.0"}}, "member": {"Name": st.node.name, "Status": "alive",
        "Tags": {"region": "global", "dc": "dc1"}}, "stats": {}}),
    )
}

async fn leader() -> Response {
    with_index(1, json!("127.0.0.1:4647"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wait_parses_go_style_durations_and_caps_at_five_minutes() {
        assert_eq!(parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_wait("20m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_wait("10m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_wait("x"), None);
    }
}
