//! Fuzzing of the Consul emulator's request parsing: its router is driven in-process
//! (`tower::ServiceExt::oneshot`, no sockets) with arbitrary methods, KV paths, query strings
//! (every flag Consul's KV endpoint knows, with arbitrary values) and bodies. No request may panic;
//! every answer has a status Consul could give (200, 400, 404, 405, 409, 413, 500), and every KV
//! answer carries `X-Consul-Index` ≥ 1 (api-docs/features/blocking.mdx: the index is never 0).
//!
//! One emulator state serves every case, so later cases meet the keys, sessions and locks earlier
//! ones created. The runtime's clock is paused: a blocking query (`?index=` at or past the current
//! index) completes when its `wait` elapses on the auto-advancing clock, instantly in real time.
//!
//! The number of cases comes from `PROPTEST_CASES` (256 when unset, the CI mode). The long mode
//! (docs/faults.md): `PROPTEST_CASES=100000 cargo test -p jobforge-devstack --release --test consul_fuzz`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use jobforge_devstack::consul::{ConsulState, router};
use proptest::collection::vec;
use proptest::prelude::*;
use tower::ServiceExt;

/// Statuses the Consul HTTP API answers KV, txn and session requests with.
const ALLOWED: &[u16] = &[200, 400, 404, 405, 409, 413, 500];

const FLAGS: &[&str] = &[
    "recurse",
    "keys",
    "raw",
    "stale",
    "consistent",
    "cached",
    "separator",
    "index",
    "wait",
    "cas",
    "flags",
    "acquire",
    "release",
    "dc",
    "ns",
    "near",
    "filter",
];

/// Query values likely to reach parser corners, mixed with arbitrary text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("false".to_string()),
        (0u64..64).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        prop::sample::select(
            &[
                "1ms",
                "10s",
                "5m",
                "10m",
                "11m",
                "1h",
                "1.5s",
                "-1s",
                "1",
                "ms",
                "9223372036854775807ns",
                "1e3s"
            ][..]
        )
        .prop_map(String::from),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[A-Za-z0-9%+/=&._~-]{0,16}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    vec(
        (prop::sample::select(FLAGS), proptest::option::of(value())),
        0..5,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// KV keys: a few stable ones (so writes and reads meet), plus arbitrary URI-safe text with
/// percent escapes, valid or not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "",
                "a",
                "a/",
                "a/b",
                "jobforge/leader",
                "jobforge/requests/",
                "%2F",
                "a//b",
                "%ZZ",
                "%ff%fe"
            ][..]
        )
        .prop_map(String::from),
        "([A-Za-z0-9._~!$'()*,;=:@/-]|%[0-9A-Fa-f]{2}){0,40}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => key().prop_map(|k| format!("/v1/kv/{k}")),
        1 => Just("/v1/kv".to_string()),
        1 => Just("/v1/txn".to_string()),
        1 => Just("/v1/session/create".to_string()),
        1 => "[a-z0-9-]{0,36}".prop_map(|id| format!("/v1/session/renew/{id}")),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::GET,
        Method::PUT,
        Method::PUT,
        Method::DELETE,
        Method::POST,
        Method::HEAD,
        Method::PATCH,
        Method::OPTIONS,
    ])
}

/// Bodies that reach the txn and session parsers' corners.
const BODIES: &[&[u8]] = &[
    b"[]",
    b"[{\"KV\":{\"Verb\":\"set\",\"Key\":\"a\",\"Value\":\"eA==\"}}]",
    b"[{\"KV\":{\"Verb\":\"cas\",\"Key\":\"a\",\"Index\":18446744073709551615}}]",
    b"[{\"KV\":{\"Verb\":\"lock\",\"Key\":\"a\",\"Session\":\"x\"}}]",
    b"{\"TTL\":\"10s\",\"LockDelay\":\"1s\",\"Behavior\":\"delete\"}",
    b"{\"TTL\":\"1s\"}",
    b"{\"TTL\":\"99999999h\"}",
    b"{",
];

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => vec(any::<u8>(), 0..256),
        4 => prop::sample::select(BODIES).prop_map(<[u8]>::to_vec),
        // Past the 512 KiB value limit (413).
        1 => Just(vec![b'x'; 512 * 1024 + 1]),
    ]
}

proptest! {
    // Cases from PROPTEST_CASES (ProptestConfig::default reads it); nothing here overrides it.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_requests_get_a_consul_status_and_an_index(
        reqs in vec((method(), path(), query(), body()), 1..4)
    ) {
        RIG.with(|(rt, app)| {
            for (method, path, query, body) in reqs {
                let uri = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
                let Ok(req) = Request::builder()
                    .method(method.clone())
                    .uri(&uri)
                    .body(Body::from(body))
                else {
                    // Not a URI an HTTP client could send: nothing to test.
                    continue;
                };
                let (status, index, kv) = rt.block_on(async {
                    let resp = app.clone().oneshot(req).await.unwrap();
                    let status = resp.status();
                    let index = resp
                        .headers()
                        .get("x-consul-index")
                        .map(|v| v.to_str().unwrap_or("").to_string());
                    // Read the whole body: encoding it must not panic either.
                    axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
                    (status, index, path.starts_with("/v1/kv"))
                });
                prop_assert!(
                    ALLOWED.contains(&status.as_u16()),
                    "{method} {uri} answered {status}"
                );
                if kv {
                    let index = index.unwrap_or_else(|| panic!("{method} {uri} ({status}) has no X-Consul-Index"));
                    let n: u64 = index.parse().unwrap_or_else(|_| panic!("{method} {uri}: X-Consul-Index {index:?}"));
                    prop_assert!(n >= 1, "{method} {uri}: X-Consul-Index {n}");
                }
                prop_assert!(status != StatusCode::INTERNAL_SERVER_ERROR || !kv || method != Method::GET,
                    "{method} {uri}: a KV read never fails with 500");
            }
            Ok(())
        })?;
    }
}

thread_local! {
    /// One paused-clock runtime and one emulator state for every case of this thread.
    static RIG: (tokio::runtime::Runtime, axum::Router) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let state: Arc<ConsulState> = rt.block_on(async { ConsulState::open(None).unwrap() });
        (rt, router(state))
    };
}
