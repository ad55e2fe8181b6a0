//! Our Nomad client against the dev stack's Nomad emulator (real `raw_exec` processes).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use futures::{FutureExt, StreamExt, TryStreamExt};
use jobforge_controller::nomad::job_spec::{
    Job, NS_PER_SEC, ReschedulePolicy, RestartPolicy, Task, TaskGroup,
};
use jobforge_controller::nomad::{
    Allocation, AllocationStub, Client, Config, Error, LogOptions, LogStream, QueryOptions,
};
use jobforge_devstack::{DevStack, DevStackConfig};

/// Runs `body` against a fresh Nomad emulator and shuts the emulator down (killing every task
/// it started) whether the body passes or panics.
async fn with_nomad<F, Fut>(body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut cfg = DevStackConfig::ephemeral();
    cfg.consul_addr = None;
    let stack = DevStack::start(cfg).await.expect("dev stack starts");
    let client = Client::new(Config::with_address(&stack.nomad_url()).unwrap()).unwrap();
    let res = std::panic::AssertUnwindSafe(body(client))
        .catch_unwind()
        .await;
    stack.shutdown().await;
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
}

fn raw_exec_job(id: &str, command: &str, args: &[&str]) -> Job {
    let mut config = serde_json::Map::new();
    config.insert("command".into(), command.into());
    config.insert(
        "args".into(),
        serde_json::Value::from(args.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
    );
    Job {
        id: id.into(),
        name: id.into(),
        type_: "batch".into(),
        datacenters: vec!["*".into()],
        meta: BTreeMap::from([("jobforge.phase".to_string(), "build".to_string())]),
        task_groups: vec![TaskGroup {
            name: "main".into(),
            count: 1,
            // As jobforge renders them: no restarts, no rescheduling (the controller retries).
            restart_policy: Some(RestartPolicy {
                attempts: 0,
                interval: 3600 * NS_PER_SEC,
                delay: 0,
                mode: "fail".into(),
            }),
            reschedule_policy: Some(ReschedulePolicy {
                attempts: 0,
                interval: 3600 * NS_PER_SEC,
                unlimited: false,
            }),
            tasks: vec![Task {
                name: "main".into(),
                driver: "raw_exec".into(),
                config,
                kill_timeout: Some(2 * NS_PER_SEC),
                ..Task::default()
            }],
            ..TaskGroup::default()
        }],
        ..Job::default()
    }
}

/// Blocks on the job's allocations until `done` holds for the first one, or `limit` passes.
async fn wait_alloc(
    c: &Client,
    job: &str,
    limit: Duration,
    done: impl Fn(&AllocationStub) -> bool,
) -> (u64, AllocationStub) {
    let deadline = Instant::now() + limit;
    let mut index = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "allocation of {job} never matched within {limit:?}"
        );
        let q = QueryOptions {
            index,
            wait: Some(left.max(Duration::from_millis(10))),
        };
        let (i, allocs) = c.job_allocations(job, q).await.unwrap();
        if let Some(a) = allocs.first().filter(|a| done(a)) {
            return (i, a.clone());
        }
        index = if i < index { 0 } else { i };
    }
}

async fn get_alloc(c: &Client, id: &str) -> Allocation {
    c.get_allocation(id)
        .await
        .unwrap()
        .expect("allocation exists")
}

#[tokio::test]
async fn raw_exec_job_exiting_3_fails_with_terminated_event_and_readable_logs() {
    with_nomad(|c| async move {
        let job = raw_exec_job(
            "exit-three",
            "/bin/sh",
            &["-c", "echo out-line; echo err-line >&2; exit 3"],
        );
        let reg = c.register_job(&job, Some(0)).await.unwrap();
        assert!(!reg.eval_id.is_empty());
        let (_, stub) = wait_alloc(&c, "exit-three", Duration::from_secs(30), |a| {
            a.is_terminal()
        })
        .await;
        assert_eq!(stub.client_status, "failed");

        let alloc = get_alloc(&c, &stub.id).await;
        let task = &alloc.task_states["main"];
        assert_eq!(task.state, "dead");
        assert!(task.failed);
        assert!(task.started_at.is_some() && task.finished_at.is_some());
        let term = task
            .events
            .iter()
            .find(|e| e.type_ == "Terminated")
            .expect("a Terminated event");
        assert_eq!(term.exit_code, 3);
        assert_eq!(task.exit_code(), Some(3));

        for (stream, want) in [
            (LogStream::Stdout, "out-line\n"),
            (LogStream::Stderr, "err-line\n"),
        ] {
            for plain in [true, false] {
                let opts = LogOptions {
                    plain,
                    ..LogOptions::default()
                };
                let chunks: Vec<bytes::Bytes> = c
                    .alloc_logs(&stub.id, "main", stream, opts)
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&chunks.concat()),
                    want,
                    "{stream:?} plain={plain}"
                );
            }
        }
        let tail = c.log_tail(&stub.id, "main", 64 * 1024).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&tail), "out-line\nerr-line\n");
        let short = c.log_tail(&stub.id, "main", 4).await.unwrap();
        assert_eq!(short, b"e\ne\n", "4-byte budget: 2 bytes of each stream");
        let job = c.get_job("exit-three").await.unwrap().unwrap();
        assert_eq!(job.status, "dead");
        assert_eq!(job.meta["jobforge.phase"], "build");
    })
    .await;
}

#[tokio::test]
async fn deregister_kills_a_sleep_600_job_within_kill_timeout() {
    with_nomad(|c| async move {
        // The task prints its pid, then becomes `sleep 600` (same pid).
        let job = raw_exec_job("sleeper", "/bin/sh", &["-c", "echo $$; exec sleep 600"]);
        c.register_job(&job, Some(0)).await.unwrap();
        let (_, stub) = wait_alloc(&c, "sleeper", Duration::from_secs(30), |a| {
            a.client_status == "running"
        })
        .await;

        let follow = LogOptions {
            follow: true,
            plain: true,
            ..LogOptions::default()
        };
        let mut logs = c
            .alloc_logs(&stub.id, "main", LogStream::Stdout, follow)
            .await
            .unwrap();
        let mut out = Vec::new();
        while !out.contains(&b'\n') {
            let chunk = tokio::time::timeout(Duration::from_secs(10), logs.next())
                .await
                .expect("pid printed within 10 s")
                .expect("log stream open")
                .unwrap();
            out.extend_from_slice(&chunk);
        }
        drop(logs);
        let pid: u32 = String::from_utf8_lossy(&out).trim().parse().unwrap();
        let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists(), "task process {pid} runs");

        let started = Instant::now();
        let eval = c.deregister_job("sleeper", false).await.unwrap();
        assert!(
            eval.is_some(),
            "stopping a running job creates an evaluation"
        );
        let (_, stub) =
            wait_alloc(&c, "sleeper", Duration::from_secs(10), |a| a.is_terminal()).await;
        assert_eq!(stub.desired_status, "stop");
        // KillTimeout is 2 s; the process must be gone (reaped) by KillTimeout + 1 s.
        while proc_dir.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "pid {pid} still alive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let alloc = get_alloc(&c, &stub.id).await;
        let types: Vec<&str> = alloc.task_states["main"]
            .events
            .iter()
            .map(|e| e.type_.as_str())
            .collect();
        assert!(
            types.contains(&"Killing") || types.contains(&"Killed"),
            "{types:?}"
        );
        let job = c.get_job("sleeper").await.unwrap().unwrap();
        assert!(job.stop);
        c.deregister_job("sleeper", true).await.unwrap();
        assert_eq!(c.get_job("sleeper").await.unwrap(), None, "purged");
        assert_eq!(
            c.deregister_job("sleeper", true).await.unwrap(),
            None,
            "idempotent"
        );
    })
    .await;
}

#[tokio::test]
async fn blocking_allocations_query_returns_promptly_on_change_and_not_otherwise() {
    with_nomad(|c| async move {
        let job = raw_exec_job("blocker", "/bin/sh", &["-c", "exec sleep 600"]);
        c.register_job(&job, Some(0)).await.unwrap();
        let (index, _) = wait_alloc(&c, "blocker", Duration::from_secs(30), |a| {
            a.client_status == "running"
        })
        .await;
        assert!(index > 0);

        // Nothing changes: the query holds for the whole wait and answers the same index.
        let t = Instant::now();
        let q = QueryOptions {
            index,
            wait: Some(Duration::from_millis(1500)),
        };
        let (same, _) = c.job_allocations("blocker", q).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(1400),
            "returned after {:?}",
            t.elapsed()
        );
        assert_eq!(same, index);

        // A change (deregister) wakes a long query at once.
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                let q = QueryOptions {
                    index,
                    wait: Some(Duration::from_secs(60)),
                };
                let t = Instant::now();
                let r = c.job_allocations("blocker", q).await.unwrap();
                (t.elapsed(), r)
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await; // let the query reach the server
        c.deregister_job("blocker", false).await.unwrap();
        let (elapsed, (new_index, allocs)) = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(elapsed < Duration::from_secs(5), "woke after {elapsed:?}");
        assert!(new_index > index);
        assert_eq!(allocs[0].desired_status, "stop");
    })
    .await;
}

#[tokio::test]
async fn register_with_enforce_index_zero_twice_is_job_exists() {
    with_nomad(|c| async move {
        let job = raw_exec_job("once", "/bin/true", &[]);
        let first = c.register_job(&job, Some(0)).await.unwrap();
        let err = c.register_job(&job, Some(0)).await.unwrap_err();
        assert!(
            matches!(&err, Error::JobExists { job_id } if job_id == "once"),
            "{err}"
        );
        assert!(!err.is_transient());
        // Updating with the right index works; with a stale one it conflicts.
        let info = c.get_job("once").await.unwrap().unwrap();
        assert_eq!(info.job_modify_index, first.job_modify_index);
        let second = c
            .register_job(&job, Some(info.job_modify_index))
            .await
            .unwrap();
        let err = c
            .register_job(&job, Some(info.job_modify_index))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::IndexConflict { .. }), "{err}");
        assert!(second.job_modify_index >= first.job_modify_index);
    })
    .await;
}

#[tokio::test]
async fn docker_job_gets_no_allocation_and_a_blocked_evaluation_naming_the_missing_driver() {
    with_nomad(|c| async move {
        let mut job = raw_exec_job("dockerish", "/bin/true", &[]);
        job.task_groups[0].tasks[0].driver = "docker".into();
        job.task_groups[0].tasks[0].config =
            serde_json::from_value(serde_json::json!({"image": "alpine:3"})).unwrap();
        c.register_job(&job, Some(0)).await.unwrap();
        // The scheduler may process the evaluation after the register call returns.
        let evals = (|| async {
            let evals = c.job_evaluations("dockerish").await?;
            if evals.iter().any(|e| !e.failed_tg_allocs.is_empty()) {
                Ok(evals)
            } else {
                Err(Error::Status {
                    endpoint: "test",
                    code: 0,
                    body: format!("{evals:?}"),
                })
            }
        })
        .retry(ExponentialBuilder::default().with_total_delay(Some(Duration::from_secs(10))))
        .await
        .unwrap();
        let failure = evals
            .iter()
            .find_map(|e| e.failed_tg_allocs.get("main"))
            .unwrap_or_else(|| panic!("no FailedTGAllocs in {evals:#?}"));
        assert_eq!(
            failure.constraint_filtered.get("missing drivers"),
            Some(&1),
            "{failure:?}"
        );
        assert!(evals.iter().any(|e| e.placement_failure().is_some()));
        let (_, allocs) = c
            .job_allocations("dockerish", QueryOptions::default())
            .await
            .unwrap();
        assert!(allocs.is_empty());
        assert_eq!(
            c.get_job("dockerish").await.unwrap().unwrap().status,
            "pending"
        );
        let summary = c.job_summary("dockerish").await.unwrap().unwrap();
        assert_eq!(summary.summary["main"].running, 0);
    })
    .await;
}

#[tokio::test]
async fn unknown_job_reads_as_absent_and_lists_filter_by_prefix() {
    with_nomad(|c| async move {
        assert_eq!(c.get_job("nope").await.unwrap(), None);
        let (_, allocs) = c
            .job_allocations("nope", QueryOptions::default())
            .await
            .unwrap();
        assert!(allocs.is_empty());
        assert_eq!(c.deregister_job("nope", true).await.unwrap(), None);
        c.register_job(&raw_exec_job("jobforge-a-1", "/bin/true", &[]), None)
            .await
            .unwrap();
        c.register_job(&raw_exec_job("other-1", "/bin/true", &[]), None)
            .await
            .unwrap();
        let listed = c.list_jobs("jobforge-").await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["jobforge-a-1"]);
    })
    .await;
}

#[tokio::test]
async fn followed_framed_log_delivers_output_written_later_across_heartbeats() {
    with_nomad(|c| async move {
        let job = raw_exec_job(
            "talker",
            "/bin/sh",
            &["-c", "echo first; sleep 1.5; echo second"],
        );
        c.register_job(&job, Some(0)).await.unwrap();
        let (_, stub) = wait_alloc(&c, "talker", Duration::from_secs(30), |a| {
            a.client_status != "pending"
        })
        .await;
        let follow = LogOptions {
            follow: true,
            ..LogOptions::default()
        };
        let mut logs = c
            .alloc_logs(&stub.id, "main", LogStream::Stdout, follow)
            .await
            .unwrap();
        let mut out = Vec::new();
        while out != b"first\nsecond\n" {
            let chunk = tokio::time::timeout(Duration::from_secs(10), logs.next())
                .await
                .unwrap_or_else(|_| panic!("no output within 10 s; got {out:?}"))
                .unwrap_or_else(|| panic!("stream ended early; got {out:?}"))
                .unwrap();
            assert!(
                !chunk.is_empty(),
                "heartbeats never surface as empty chunks"
            );
            out.extend_from_slice(&chunk);
            assert!(b"first\nsecond\n".starts_with(&out), "{out:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn event_stream_reports_a_registered_job_and_its_allocation() {
    with_nomad(|c| async move {
        let mut events = c
            .event_stream(&[("Job", "evented"), ("Allocation", "*")], 0)
            .await
            .unwrap();
        let job = raw_exec_job("evented", "/bin/true", &[]);
        c.register_job(&job, Some(0)).await.unwrap();
        let mut seen: Vec<(String, String)> = Vec::new();
        while !(seen.iter().any(|(_, t)| t == "JobRegistered")
            && seen.iter().any(|(topic, _)| topic == "Allocation"))
        {
            let batch = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap_or_else(|_| panic!("no event within 10 s; saw {seen:?}"))
                .expect("stream open")
                .unwrap();
            assert!(batch.index > 0);
            seen.extend(batch.events.into_iter().map(|e| (e.topic, e.type_)));
        }
    })
    .await;
}
