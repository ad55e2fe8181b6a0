//! Behaviour of the work queue under virtual time (`start_paused`), so every timing is exact.

mod metrics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

fn key(n: &str) -> RequestKey {
    RequestKey::new("ns", n)
}

fn no_jitter() -> QueueConfig {
    QueueConfig {
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(80),
            jitter: 0.0,
        },
        ..QueueConfig::default()
    }
}

/// Records `(key, start instant)` of every reconcile.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(RequestKey, Instant)>>>);

impl Log {
    fn push(&self, k: &RequestKey) {
        self.0
            .lock()
            .expect("log")
            .push((k.clone(), Instant::now()));
    }
    fn starts(&self, k: &RequestKey) -> Vec<Instant> {
        let v = self.0.lock().expect("log");
        v.iter().filter(|(x, _)| x == k).map(|(_, t)| *t).collect()
    }
    fn total(&self) -> usize {
        self.0.lock().expect("log").len()
    }
}

/// Waits (in virtual time) until `cond` holds, or panics after `limit`.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < end,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn duplicate_enqueues_collapse_into_one_reconcile() {
    let q = WorkQueue::new(no_jitter());
    let log = Log::default();
    for _ in 0..5 {
        q.enqueue(key("a"));
    }
    q.enqueue_after(key("a"), Duration::from_secs(3));
    assert_eq!(q.len(), 1);
    let cancel = CancellationToken::new();
    let l = log.clone();
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let l = l.clone();
                    async move {
                        l.push(&k);
                        Ok::<_, String>(Action::AwaitChange)
                    }
                },
                cancel,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(log.starts(&key("a")).len(), 1);
    assert_eq!(q.len(), 0);
    cancel.cancel();
    let report = run.await.expect("run");
    assert_eq!(report, ShutdownReport::default());
}

#[tokio::test(start_paused = true)]
async fn a_key_never_runs_twice_at_once_and_an_enqueue_while_running_runs_once_after() {
    let q = WorkQueue::new(no_jitter());
    let busy = Arc::new(AtomicBool::new(false));
    let log = Log::default();
    let cancel = CancellationToken::new();
    let (b, l) = (busy.clone(), log.clone());
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let (b, l) = (b.clone(), l.clone());
                    async move {
                        assert!(
                            !b.swap(true, Ordering::SeqCst),
                            "two reconciles of {k} at once"
                        );
                        l.push(&k);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        b.store(false, Ordering::SeqCst);
                        Ok::<_, String>(Action::AwaitChange)
                    }
                },
                cancel,
            )
            .await
        }
    });
    q.enqueue(key("a"));
    until(Duration::from_secs(1), || q.in_flight() == 1).await;
    // Three enqueues while it runs: held, collapsed, run exactly once after.
    for _ in 0..3 {
        q.enqueue(key("a"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(q.len(), 1, "held enqueue counts in the depth");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let starts = log.starts(&key("a"));
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1] - starts[0], Duration::from_millis(100));
    cancel.cancel();
    run.await.expect("run");
}

#[tokio::test(start_paused = true)]
async fn concurrency_cap_is_honored() {
    let q = WorkQueue::new(QueueConfig {
        max_concurrent: 3,
        ..no_jitter()
    });
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let log = Log::default();
    for i in 0..10 {
        q.enqueue(key(&format!("k{i}")));
    }
    let cancel = CancellationToken::new();
    let (n, p, l) = (now.clone(), peak.clone(), log.clone());
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let (n, p, l) = (n.clone(), p.clone(), l.clone());
                    async move {
                        let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(c, Ordering::SeqCst);
                        l.push(&k);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        n.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, String>(Action::AwaitChange)
                    }
                },
                cancel,
            )
            .await
        }
    });
    until(Duration::from_secs(5), || {
        log.total() == 10 && q.in_flight() == 0
    })
    .await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    cancel.cancel();
    run.await.expect("run");
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_per_failure_and_resets_on_success() {
    let q = WorkQueue::new(no_jitter());
    let log = Log::default();
    // Fail 4 times, then succeed, then fail once more.
    let calls = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let (l, c) = (log.clone(), calls.clone());
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let (l, c) = (l.clone(), c.clone());
                    async move {
                        l.push(&k);
                        match c.fetch_add(1, Ordering::SeqCst) {
                            0..=3 => Err("boom".to_string()),
                            4 => Ok(Action::Requeue(Duration::from_secs(1))),
                            _ => Err("again".to_string()),
                        }
                    }
                },
                cancel,
            )
            .await
        }
    });
    q.enqueue(key("a"));
    until(Duration::from_secs(10), || log.total() >= 6).await;
    let s = log.starts(&key("a"));
    let gaps: Vec<u128> = s.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert_eq!(gaps, vec![5, 10, 20, 40, 1000]);
    until(Duration::from_secs(1), || q.failures(&key("a")) == 1).await;
    assert_eq!(
        q.failures(&key("a")),
        1,
        "success reset the count; one new failure"
    );
    cancel.cancel();
    run.await.expect("run");
}

/// Issue 14: a reconcile that lost a CAS race and keeps losing is retried after a growing
/// backoff, never at once (a hot loop), and the next ordinary result resets the count.
#[tokio::test(start_paused = true)]
async fn a_conflict_backs_off_like_an_error_and_never_requeues_at_once() {
    let q = WorkQueue::new(no_jitter());
    let log = Log::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let (l, c) = (log.clone(), calls.clone());
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let (l, c) = (l.clone(), c.clone());
                    async move {
                        l.push(&k);
                        match c.fetch_add(1, Ordering::SeqCst) {
                            0..=6 => Ok::<_, String>(Action::Backoff),
                            _ => Ok(Action::AwaitChange),
                        }
                    }
                },
                cancel,
            )
            .await
        }
    });
    q.enqueue(key("a"));
    until(Duration::from_secs(10), || log.total() >= 8).await;
    let s = log.starts(&key("a"));
    let gaps: Vec<u128> = s.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert_eq!(gaps, vec![5, 10, 20, 40, 80, 80, 80], "capped at max");
    until(Duration::from_secs(1), || q.failures(&key("a")) == 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        log.total(),
        8,
        "AwaitChange after the conflicts: nothing more runs"
    );
    cancel.cancel();
    run.await.expect("run");
}

#[tokio::test(start_paused = true)]
async fn requeue_after_fires_at_its_time_and_an_earlier_enqueue_wins() {
    let q = WorkQueue::new(no_jitter());
    let log = Log::default();
    let t0 = Instant::now();
    let cancel = CancellationToken::new();
    let l = log.clone();
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let l = l.clone();
                    async move {
                        l.push(&k);
                        Ok::<_, String>(Action::AwaitChange)
                    }
                },
                cancel,
            )
            .await
        }
    });
    q.enqueue_after(key("a"), Duration::from_secs(30));
    q.enqueue_after(key("b"), Duration::from_secs(30));
    q.enqueue_after(key("b"), Duration::from_secs(60)); // later: ignored
    tokio::time::sleep(Duration::from_secs(5)).await;
    q.enqueue_after(key("a"), Duration::from_secs(2)); // earlier: wins
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(log.starts(&key("a")), vec![t0 + Duration::from_secs(7)]);
    assert_eq!(log.starts(&key("b")), vec![t0 + Duration::from_secs(30)]);
    cancel.cancel();
    run.await.expect("run");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_taking_work_waits_for_in_flight_within_the_grace_and_keeps_the_rest_for_the_next_run()
 {
    let q = WorkQueue::new(QueueConfig {
        max_concurrent: 2,
        shutdown_grace: Duration::from_secs(5),
        ..no_jitter()
    });
    let finished = Log::default();
    let log = Log::default();
    let cancel = CancellationToken::new();
    let (l, f) = (log.clone(), finished.clone());
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let (l, f) = (l.clone(), f.clone());
                    async move {
                        l.push(&k);
                        let d = if k.name == "slow" { 60 } else { 2 };
                        tokio::time::sleep(Duration::from_secs(d)).await;
                        f.push(&k);
                        Ok::<_, String>(Action::AwaitChange)
                    }
                },
                cancel,
            )
            .await
        }
    });
    q.enqueue(key("quick"));
    q.enqueue(key("slow"));
    // Same instant: ties run in key order, so "z-later" is third and must wait for a slot.
    q.enqueue(key("z-later"));
    until(Duration::from_secs(1), || q.in_flight() == 2).await;
    cancel.cancel();
    let report = run.await.expect("run");
    assert_eq!(report.drained, 1);
    assert_eq!(report.abandoned, vec![key("slow")]);
    assert_eq!(finished.starts(&key("quick")).len(), 1);
    assert!(finished.starts(&key("slow")).is_empty());
    assert!(
        log.starts(&key("z-later")).is_empty(),
        "no new work after cancel"
    );
    assert_eq!(q.in_flight(), 0);

    // The next term (a new `run`) starts with the abandoned key and the never-started one.
    assert_eq!(q.len(), 2);
    let cancel = CancellationToken::new();
    let l = log.clone();
    let again = tokio::spawn({
        let (q, cancel) = (q.clone(), cancel.clone());
        async move {
            q.run(
                move |k| {
                    let l = l.clone();
                    async move {
                        l.push(&k);
                        Ok::<_, String>(Action::AwaitChange)
                    }
                },
                cancel,
            )
            .await
        }
    });
    until(Duration::from_secs(1), || {
        q.is_empty() && q.in_flight() == 0
    })
    .await;
    assert_eq!(log.starts(&key("slow")).len(), 2);
    assert_eq!(log.starts(&key("z-later")).len(), 1);
    cancel.cancel();
    again.await.expect("run");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_reconcile_backs_off_instead_of_killing_the_runner() {
    let q = WorkQueue::new(no_jitter());
    let log = Log::default();
    let cancel = CancellationToken::new();
    let l = log.clone();
    let run = tokio::spawn({
        let q = q.clone();
        let cancel = cancel.clone();
        async move {
            q.run(
                move |k| {
                    let l = l.clone();
                    async move {
                        l.push(&k);
                        if l.total() == 1 {
                            panic!("reconcile bug");
                        }
                        Ok::<_, String>(Action::AwaitChange)
                    }
                },
                cancel,
            )
            .await
        }
    });
    q.enqueue(key("a"));
    until(Duration::from_secs(1), || log.total() == 2).await;
    let s = log.starts(&key("a"));
    assert_eq!(s[1] - s[0], Duration::from_millis(5));
    cancel.cancel();
    run.await.expect("run");
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(u8),
    EnqueueAfter(u8, u16),
    Advance(u16),
}

#[derive(Debug, Clone, Copy)]
enum Outcome2 {
    Await,
    Requeue(u16),
    Fail,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5).prop_map(Op::Enqueue),
        (0u8..5, 0u16..500).prop_map(|(k, d)| Op::EnqueueAfter(k, d)),
        (0u16..300).prop_map(Op::Advance),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome2> {
    prop_oneof![
        Just(Outcome2::Await),
        (1u16..200).prop_map(Outcome2::Requeue),
        Just(Outcome2::Fail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the interleaving of enqueues, completions and errors: no key runs twice at
    /// once, the cap holds, and every enqueue is followed by a reconcile that started after it.
    #[test]
    fn random_schedules_keep_the_queue_invariants(
        ops in proptest::collection::vec(op(), 1..40),
        outcomes in proptest::collection::vec(outcome(), 1..20),
        work_ms in 0u64..40,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let q = WorkQueue::new(QueueConfig { max_concurrent: 2, ..no_jitter() });
            let busy: Arc<Mutex<HashMap<RequestKey, bool>>> = Arc::default();
            let running = Arc::new(AtomicUsize::new(0));
            let violations = Arc::new(AtomicUsize::new(0));
            let calls = Arc::new(AtomicUsize::new(0));
            let log = Log::default();
            let cancel = CancellationToken::new();
            let run = tokio::spawn({
                let (q, cancel) = (q.clone(), cancel.clone());
                let (busy, running, violations, calls, log) =
                    (busy.clone(), running.clone(), violations.clone(), calls.clone(), log.clone());
                let outcomes = outcomes.clone();
                async move {
                    q.run(move |k| {
                        let (busy, running, violations, calls, log) =
                            (busy.clone(), running.clone(), violations.clone(), calls.clone(), log.clone());
                        let o = outcomes[calls.fetch_add(1, Ordering::SeqCst) % outcomes.len()];
                        async move {
                            if busy.lock().expect("busy").insert(k.clone(), true) == Some(true) {
                                violations.fetch_add(1, Ordering::SeqCst);
                            }
                            if running.fetch_add(1, Ordering::SeqCst) + 1 > 2 {
                                violations.fetch_add(1, Ordering::SeqCst);
                            }
                            log.push(&k);
                            tokio::time::sleep(Duration::from_millis(work_ms)).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            busy.lock().expect("busy").insert(k, false);
                            match o {
                                Outcome2::Await => Ok(Action::AwaitChange),
                                Outcome2::Requeue(ms) => Ok(Action::Requeue(Duration::from_millis(u64::from(ms)))),
                                Outcome2::Fail => Err("injected"),
                            }
                        }
                    }, cancel).await
                }
            });
            // The last time each key was enqueued.
            let mut wanted: HashMap<RequestKey, Instant> = HashMap::new();
            for op in ops {
                match op {
                    Op::Enqueue(k) => {
                        let k = key(&format!("k{k}"));
                        wanted.insert(k.clone(), Instant::now());
                        q.enqueue(k);
                    }
                    Op::EnqueueAfter(k, d) => {
                        let k = key(&format!("k{k}"));
                        // An earlier pending deadline wins, so what is guaranteed is a run
                        // starting after this call, not after the requested delay.
                        wanted.insert(k.clone(), Instant::now());
                        q.enqueue_after(k, Duration::from_millis(u64::from(d)));
                    }
                    Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
                }
            }
            // Long enough for every wanted run (max 500 ms delay, capped backoff 80 ms, work ≤ 40 ms · keys).
            tokio::time::sleep(Duration::from_secs(5)).await;
            for (k, at) in &wanted {
                let starts = log.starts(k);
                assert!(starts.iter().any(|s| s >= at), "{k} wanted at {at:?} never ran after; starts {starts:?}");
            }
            assert_eq!(violations.load(Ordering::SeqCst), 0);
            cancel.cancel();
            run.await.expect("run");
        });
    }
}
