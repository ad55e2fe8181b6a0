//! Issue 14, "Keys and names are checked at every boundary", on the dev stack: keys under
//! `requests/` that are not `<namespace>/<name>` with both segments DNS labels — written the way
//! only `/v1/txn` can write them, with the literal key (`requests/../x`, which a `/v1/kv/` URL
//! would have normalised), or one level too deep (`requests/a/b/c`) — are never reconciled, each
//! gets exactly one warning in the controller's log however often it is written,
//! `jobforge_ignored_keys_total` counts them, the controller stays idle (its CPU time, read from
//! `/proc/<pid>/stat`, barely moves), and a real request next to them still succeeds.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, request_json, wait_until,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);
const BAD: [&str; 2] = ["jobforge/requests/../x", "jobforge/requests/a/b/c"];

/// Sum of every sample of metric `name` on a Prometheus page.
fn sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn metrics(http: &str) -> String {
    reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Writes every key of `keys` with `value` in one `/v1/txn` (literal keys, no URL involved).
async fn txn_set(consul: &str, keys: &[&str], value: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let ops: Vec<Value> = keys
        .iter()
        .map(|k| json!({"KV": {"Verb": "set", "Key": k, "Value": b64}}))
        .collect();
    let r = reqwest::Client::new()
        .put(format!("{consul}/v1/txn"))
        .json(&ops)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "txn: {status} {body}");
}

/// utime + stime of `pid` in clock ticks (`proc(5)`: fields 14 and 15 of `/proc/<pid>/stat`,
/// counted after the parenthesised command name, which may contain spaces).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_written_keys_that_are_not_requests_get_one_warning_a_count_and_no_cpu() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("controller.log");
    let mut ctl = ControllerProcess::start_logged(&stack, &[], &log)
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let pid = ctl.process().pid();
    let page = metrics(&ctl.http).await;
    let reconciles_before = sum(&page, "jobforge_reconcile_total");
    assert_eq!(sum(&page, "jobforge_ignored_keys_total"), 0.0, "{page}");

    // Each key written three times (three watch wake-ups), as a request document would be.
    let doc = request_json("default", "x", json!({}));
    for _ in 0..3 {
        txn_set(&stack.consul, &BAD, &doc).await;
    }
    let kv = stack.kv();
    // Listed (a keys listing, no key in the URL path): Consul kept the literal keys.
    let listed = kv.keys("jobforge/requests/").await.unwrap();
    for key in BAD {
        assert!(listed.iter().any(|k| k == key), "{key} not in {listed:?}");
    }
    let http = ctl.http.clone();
    wait_until(T, "jobforge_ignored_keys_total reaches 2", || {
        let http = http.clone();
        async move {
            let page = reqwest::get(format!("{http}/metrics"))
                .await?
                .text()
                .await?;
            Ok(sum(&page, "jobforge_ignored_keys_total") >= 2.0)
        }
    })
    .await
    .expect("counted");

    // Idle: over 4 s the controller uses at most 0.4 s of CPU (a requeue loop would use ~4 s).
    // proc(5): clock ticks of sysconf(_SC_CLK_TCK), which is USER_HZ, 100 on Linux.
    let ticks_per_second = 100;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let used = cpu_ticks(pid) - before;
    assert!(
        used * 10 <= 4 * ticks_per_second,
        "the controller used {used} ticks ({ticks_per_second}/s) in 4 s while idle"
    );

    let page = metrics(&ctl.http).await;
    assert_eq!(
        sum(&page, "jobforge_ignored_keys_total"),
        2.0,
        "once per key, not per write:\n{page}"
    );
    assert_eq!(
        sum(&page, "jobforge_reconcile_total"),
        reconciles_before,
        "a key that is not a request was reconciled:\n{page}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    // `requests/../x` is reported as its folder `requests/..`: the watch never reads a folder a
    // URL would resolve to another prefix (`requests/../` is all of `jobforge/`).
    for key in ["jobforge/requests/..", BAD[1]] {
        let warnings = text
            .lines()
            .filter(|l| {
                l.contains("WARN") && l.contains("not a request") && l.contains(&format!("{key}\""))
            })
            .count();
        assert_eq!(warnings, 1, "warnings about {key}:\n{text}");
    }

    // A real request next to them still succeeds, and only it has a status.
    let repo = GitRepo::hello_world().expect("repo");
    kv.put(
        "jobforge/requests/default/ok",
        &request_json("default", "ok", json!({"repo_url": repo.url})),
    )
    .await
    .unwrap();
    kv.wait_json("jobforge/status/default/ok", T, |v| {
        v["phase"] == "Succeeded"
    })
    .await
    .expect("the real request succeeds");
    assert_eq!(
        kv.keys("jobforge/status/").await.unwrap(),
        vec!["jobforge/status/default/ok".to_string()],
        "only the real request has a status"
    );
    drop(ctl);
    drop(stack);
}
