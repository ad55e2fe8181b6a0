//! Request shapes and answer decoding of every endpoint, against wiremock.

use std::time::Duration;

use base64::Engine as _;
use futures::TryStreamExt;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::nomad::job_spec::{Task, TaskGroup};

async fn client(server: &MockServer) -> Client {
    let mut cfg = Config::with_address(&server.uri()).unwrap();
    cfg.token = Some("s3cret".into());
    cfg.namespace = Some("builds".into());
    cfg.region = Some("eu".into());
    Client::new(cfg).unwrap()
}

fn job(id: &str) -> Job {
    Job {
        id: id.into(),
        name: id.into(),
        type_: "batch".into(),
        task_groups: vec![TaskGroup {
            name: "build".into(),
            count: 1,
            tasks: vec![Task {
                name: "build".into(),
                driver: "raw_exec".into(),
                ..Task::default()
            }],
            ..TaskGroup::default()
        }],
        ..Job::default()
    }
}

#[tokio::test]
async fn register_sends_enforce_index_token_namespace_and_region() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/jobs"))
        .and(header("X-Nomad-Token", "s3cret"))
        .and(query_param("namespace", "builds"))
        .and(query_param("region", "eu"))
        .and(body_partial_json(serde_json::json!({
            "EnforceIndex": true, "JobModifyIndex": 0,
            "Job": {"ID": "j1", "Type": "batch", "TaskGroups": [{"Name": "build"}]}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "EvalID": "e1", "EvalCreateIndex": 11, "JobModifyIndex": 10, "Warnings": "",
            "Index": 11, "LastContact": 0, "KnownLeader": false
        })))
        .expect(1)
        .mount(&server)
        .await;
    let r = client(&server)
        .await
        .register_job(&job("j1"), Some(0))
        .await
        .unwrap();
    assert_eq!(r.eval_id, "e1");
    assert_eq!(r.eval_create_index, 11);
    assert_eq!(r.job_modify_index, 10);
}

#[tokio::test]
async fn register_without_enforce_sends_enforce_false() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/jobs"))
        .and(body_partial_json(
            serde_json::json!({"EnforceIndex": false}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "EvalID": "e1", "Warnings": null
        })))
        .expect(1)
        .mount(&server)
        .await;
    let r = client(&server)
        .await
        .register_job(&job("j1"), None)
        .await
        .unwrap();
    assert_eq!(r.warnings, "");
}

#[tokio::test]
async fn enforce_index_zero_conflict_is_job_exists() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/jobs"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_string("Enforcing job modify index 0: job already exists"),
        )
        .mount(&server)
        .await;
    let c = client(&server).await;
    let e = c.register_job(&job("j1"), Some(0)).await.unwrap_err();
    assert!(
        matches!(&e, Error::JobExists { job_id } if job_id == "j1"),
        "{e}"
    );
    assert!(!e.is_transient());
    let e = c.register_job(&job("j1"), Some(7)).await.unwrap_err();
    assert!(
        matches!(&e, Error::IndexConflict { expected: 7, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn plain_text_error_is_kept_as_status_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/jobs"))
        .respond_with(ResponseTemplate::new(400).set_body_string("1 error occurred:\n\t* bad\n"))
        .mount(&server)
        .await;
    let e = client(&server)
        .await
        .register_job(&job("j1"), None)
        .await
        .unwrap_err();
    match e {
        Error::Status {
            code: 400, body, ..
        } => assert_eq!(body, "1 error occurred:\n\t* bad"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn invalid_job_id_is_rejected_before_sending() {
    let server = MockServer::start().await;
    let c = client(&server).await;
    let e = c.register_job(&job("has space"), None).await.unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidInput {
            field: "job id",
            ..
        }
    ));
    assert!(c.get_job("").await.is_err());
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn get_job_decodes_and_404_is_none() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/job/j1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "ID": "j1", "Name": "j1", "Type": "batch", "Status": "dead", "Stop": true,
            "Meta": {"jobforge.phase": "build"}, "ModifyIndex": 20, "JobModifyIndex": 10,
            "TaskGroups": [{"Name": "x"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/job/nope"))
        .respond_with(ResponseTemplate::new(404).set_body_string("job not found"))
        .mount(&server)
        .await;
    let c = client(&server).await;
    let j = c.get_job("j1").await.unwrap().unwrap();
    assert_eq!(j.status, "dead");
    assert!(j.stop);
    assert_eq!(j.meta["jobforge.phase"], "build");
    assert_eq!((j.modify_index, j.job_modify_index), (20, 10));
    assert_eq!(c.get_job("nope").await.unwrap(), None);
}

#[tokio::test]
async fn list_jobs_sends_prefix() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/jobs"))
        .and(query_param("prefix", "jobforge-team-a-"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"ID": "jobforge-team-a-x-1-build", "Status": "running", "Meta": null}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let l = client(&server)
        .await
        .list_jobs("jobforge-team-a-")
        .await
        .unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].status, "running");
    assert!(l[0].meta.is_empty());
}

#[tokio::test]
async fn allocations_blocking_query_sends_index_and_wait_and_reads_x_nomad_index() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/job/j1/allocations"))
        .and(query_param("index", "42"))
        .and(query_param("wait", "1500ms"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Nomad-Index", "57")
                .set_body_json(serde_json::json!([{
                    "ID": "a1", "ClientStatus": "running", "DesiredStatus": "run",
                    "TaskStates": null, "NodeName": "n1"
                }])),
        )
        .expect(1)
        .mount(&server)
        .await;
    let q = QueryOptions {
        index: 42,
        wait: Some(Duration::from_millis(1500)),
    };
    let (idx, allocs) = client(&server)
        .await
        .job_allocations("j1", q)
        .await
        .unwrap();
    assert_eq!(idx, 57);
    assert_eq!(allocs[0].id, "a1");
    assert!(allocs[0].task_states.is_empty());
}

#[tokio::test]
async fn allocations_without_index_send_no_blocking_params() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/job/j1/allocations"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Nomad-Index", "3")
                .set_body_json(serde_json::json!([])),
        )
        .mount(&server)
        .await;
    let (idx, allocs) = client(&server)
        .await
        .job_allocations("j1", QueryOptions::default())
        .await
        .unwrap();
    assert_eq!((idx, allocs.len()), (3, 0));
    let reqs = server.received_requests().await.unwrap();
    let q = reqs[0].url.query().unwrap_or("");
    assert!(!q.contains("index=") && !q.contains("wait="), "{q}");
}

#[tokio::test]
async fn summary_evaluations_and_allocation_decode() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/job/j1/summary"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "JobID": "j1", "Summary": {"build": {"Queued": 0, "Failed": 1, "Complete": 0,
            "Running": 0, "Starting": 0, "Lost": 0, "Unknown": 0}}, "Children": null
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/job/j1/evaluations"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!([{
                "ID": "e1", "Status": "blocked", "StatusDescription": "",
                "FailedTGAllocs": {"build": {"NodesEvaluated": 1, "NodesFiltered": 1,
                    "ConstraintFiltered": {"missing drivers": 1}}}
            }])),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/allocation/a1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "ID": "a1", "ClientStatus": "failed", "TaskStates": {"build": {
                "State": "dead", "Failed": true, "Events": [
                    {"Type": "Terminated", "Time": 1_700_000_000_000_000_000i64, "ExitCode": 3}
                ]}}
        })))
        .mount(&server)
        .await;
    let c = client(&server).await;
    let s = c.job_summary("j1").await.unwrap().unwrap();
    assert_eq!(s.summary["build"].failed, 1);
    let ev = c.job_evaluations("j1").await.unwrap();
    assert_eq!(
        ev[0].failed_tg_allocs["build"].constraint_filtered["missing drivers"],
        1
    );
    let a = c.get_allocation("a1").await.unwrap().unwrap();
    assert_eq!(a.task_states["build"].exit_code(), Some(3));
    assert_eq!(c.get_allocation("a2").await.unwrap(), None);
    assert_eq!(c.job_summary("zz").await.unwrap(), None);
    assert!(c.job_evaluations("zz").await.unwrap().is_empty());
}

#[tokio::test]
async fn deregister_is_idempotent_and_sends_purge() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/v1/job/j1"))
        .and(query_param("purge", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "EvalID": "e9", "EvalCreateIndex": 5, "JobModifyIndex": 5
        })))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/job/gone"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0
        })))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v1/job/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_string("job not found"))
        .mount(&server)
        .await;
    let c = client(&server).await;
    assert_eq!(
        c.deregister_job("j1", true).await.unwrap().as_deref(),
        Some("e9")
    );
    assert_eq!(c.deregister_job("gone", false).await.unwrap(), None);
    assert_eq!(c.deregister_job("missing", true).await.unwrap(), None);
}

fn frame(offset: i64, data: &[u8]) -> String {
    serde_json::json!({
        "Offset": offset,
        "Data": base64::engine::general_purpose::STANDARD.encode(data),
        "File": "alloc/logs/build.stdout.0", "FileEvent": ""
    })
    .to_string()
}

#[tokio::test]
async fn framed_logs_decode_base64_and_skip_heartbeats() {
    let server = MockServer::start().await;
    let body = format!("{}{{}}{}{{}}", frame(6, b"hello\n"), frame(12, b"world\n"));
    Mock::given(method("GET"))
        .and(path("/v1/client/fs/logs/a1"))
        .and(query_param("task", "build"))
        .and(query_param("type", "stderr"))
        .and(query_param("origin", "start"))
        .and(query_param("offset", "0"))
        .and(query_param("follow", "false"))
        .and(query_param("plain", "false"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .expect(1)
        .mount(&server)
        .await;
    let s = client(&server)
        .await
        .alloc_logs("a1", "build", LogStream::Stderr, LogOptions::default())
        .await
        .unwrap();
    let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), b"hello\nworld\n");
}

#[tokio::test]
async fn truncated_frame_stream_is_an_error() {
    let server = MockServer::start().await;
    let mut body = frame(6, b"hello\n");
    body.push_str("{\"Offset\":");
    Mock::given(method("GET"))
        .and(path("/v1/client/fs/logs/a1"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .mount(&server)
        .await;
    let s = client(&server)
        .await
        .alloc_logs("a1", "build", LogStream::Stdout, LogOptions::default())
        .await
        .unwrap();
    let r: Result<Vec<Bytes>> = s.try_collect().await;
    assert!(matches!(r, Err(Error::LogFrame { .. })), "{r:?}");
}

#[tokio::test]
async fn log_tail_reads_both_streams_from_the_end_in_plain_mode() {
    let server = MockServer::start().await;
    for (stream, text) in [("stdout", "out-line\n"), ("stderr", "err-line\n")] {
        Mock::given(method("GET"))
            .and(path("/v1/client/fs/logs/a1"))
            .and(query_param("type", stream))
            .and(query_param("origin", "end"))
            .and(query_param("offset", "65536"))
            .and(query_param("plain", "true"))
            .and(query_param("follow", "false"))
            .respond_with(ResponseTemplate::new(200).set_body_string(text))
            .expect(1)
            .mount(&server)
            .await;
    }
    let tail = client(&server)
        .await
        .log_tail("a1", "build", 65536)
        .await
        .unwrap();
    assert_eq!(tail, b"out-line\nerr-line\n");
}

#[tokio::test]
async fn log_tail_of_a_stream_without_file_is_empty() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/client/fs/logs/a1"))
        .respond_with(ResponseTemplate::new(404).set_body_string("log file not found"))
        .mount(&server)
        .await;
    let tail = client(&server).await.log_tail("a1", "t", 10).await.unwrap();
    assert!(tail.is_empty());
}

#[test]
fn tails_are_trimmed_to_the_budget_keeping_half_for_stderr() {
    assert_eq!(join_tails(b"aaaa", b"bb", 10), b"aaaabb");
    assert_eq!(join_tails(b"aaaaaaaa", b"bbbbbbbb", 10), b"aaaaabbbbb");
    assert_eq!(join_tails(b"aa", b"bbbbbbbbbbbb", 10), b"aabbbbbbbb");
    assert_eq!(join_tails(b"aaaaaaaaaaaa", b"", 10), b"aaaaaaaaaa");
    assert_eq!(join_tails(b"", b"", 0), b"");
}

#[test]
fn wait_is_rendered_as_a_go_duration() {
    assert_eq!(go_duration(Duration::from_secs(5)), "5s");
    assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
}

#[tokio::test]
async fn connection_refused_is_a_transient_transport_error_naming_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = Client::new(Config::with_address(&format!("http://{addr}")).unwrap()).unwrap();
    let e = c.get_job("j1").await.unwrap_err();
    assert!(e.is_transient());
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[tokio::test]
async fn event_stream_sends_topics_and_index_and_yields_batches() {
    let server = MockServer::start().await;
    let body = concat!(
        "{}\n",
        r#"{"Index":9,"Events":[{"Topic":"Job","Type":"JobRegistered","Key":"j1","Index":9,"Payload":{}}]}"#,
        "\n{}\n",
        r#"{"Index":10,"Events":[{"Topic":"Allocation","Type":"AllocationUpdated","Key":"a1","Index":10}]}"#
    );
    Mock::given(method("GET"))
        .and(path("/v1/event/stream"))
        .and(query_param("topic", "Job:j1"))
        .and(query_param("index", "8"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server).await;
    let batches: Vec<EventBatch> = c
        .event_stream(&[("Job", "j1"), ("Allocation", "*")], 8)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let idx: Vec<u64> = batches.iter().map(|b| b.index).collect();
    assert_eq!(idx, [9, 10]);
    assert_eq!(batches[1].events[0].type_, "AllocationUpdated");
    let q = server.received_requests().await.unwrap()[0]
        .url
        .query()
        .unwrap_or("")
        .to_string();
    assert!(q.contains("topic=Allocation%3A*"), "{q}");
    assert!(c.event_stream(&[], 0).await.is_err());
}
