//! The queue's metrics, observed through an in-memory `metrics` recorder.

use crate::queue::{DEPTH_EXACT_BELOW, DEPTH_RECOUNT};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{key, no_jitter, until};
use crate::queue::{Action, WorkQueue};

/// A recorder that keeps every value in memory, for asserting what the queue reports.
mod recorder {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };

    #[derive(Debug, Default)]
    pub struct Values {
        /// Counter totals and last gauge values, by `name{label=value,...}`.
        pub last: HashMap<String, f64>,
        /// Highest value each gauge reached.
        pub max: HashMap<String, f64>,
        /// Number of histogram samples.
        pub samples: HashMap<String, usize>,
    }

    #[derive(Debug, Default, Clone)]
    pub struct MemRecorder(pub Arc<Mutex<Values>>);

    struct Handle(String, Arc<Mutex<Values>>);

    fn id(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            *self
                .1
                .lock()
                .expect("values")
                .last
                .entry(self.0.clone())
                .or_default() += value as f64;
        }
        fn absolute(&self, value: u64) {
            self.1
                .lock()
                .expect("values")
                .last
                .insert(self.0.clone(), value as f64);
        }
    }

    impl GaugeFn for Handle {
        fn increment(&self, value: f64) {
            let cur = self
                .1
                .lock()
                .expect("values")
                .last
                .get(&self.0)
                .copied()
                .unwrap_or(0.0);
            self.set(cur + value);
        }
        fn decrement(&self, value: f64) {
            GaugeFn::increment(self, -value);
        }
        fn set(&self, value: f64) {
            let mut v = self.1.lock().expect("values");
            v.last.insert(self.0.clone(), value);
            let m = v.max.entry(self.0.clone()).or_insert(value);
            *m = m.max(value);
        }
    }

    impl HistogramFn for Handle {
        fn record(&self, _value: f64) {
            *self
                .1
                .lock()
                .expect("values")
                .samples
                .entry(self.0.clone())
                .or_default() += 1;
        }
    }

    impl Recorder for MemRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Handle(id(key), self.0.clone())))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Arc::new(Handle(id(key), self.0.clone())))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Handle(id(key), self.0.clone())))
        }
    }
}

#[test]
fn queue_depth_in_flight_results_and_durations_are_recorded() {
    let rec = recorder::MemRecorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&rec, || {
        rt.block_on(async {
            let q = WorkQueue::new(no_jitter());
            let calls = Arc::new(AtomicUsize::new(0));
            let cancel = CancellationToken::new();
            let c = calls.clone();
            let run = tokio::spawn({
                let (q, cancel) = (q.clone(), cancel.clone());
                async move {
                    q.run(
                        move |_k| {
                            let c = c.clone();
                            async move {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                match c.fetch_add(1, Ordering::SeqCst) {
                                    0 => Err("boom"),
                                    1 => Ok(Action::Requeue(Duration::from_millis(1))),
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
            q.enqueue(key("b"));
            until(Duration::from_secs(5), || {
                calls.load(Ordering::SeqCst) >= 4 && q.in_flight() == 0 && q.is_empty()
            })
            .await;
            cancel.cancel();
            run.await.expect("run");
        })
    });
    let v = rec.0.lock().expect("values");
    assert_eq!(
        v.last.get("jobforge_reconcile_total{result=error}"),
        Some(&1.0)
    );
    assert_eq!(
        v.last.get("jobforge_reconcile_total{result=requeue}"),
        Some(&1.0)
    );
    assert_eq!(
        v.last.get("jobforge_reconcile_total{result=await_change}"),
        Some(&2.0)
    );
    assert_eq!(
        v.samples.get("jobforge_reconcile_duration_seconds{}"),
        Some(&4)
    );
    assert_eq!(v.max.get("jobforge_queue_depth{}"), Some(&2.0));
    assert_eq!(v.last.get("jobforge_queue_depth{}"), Some(&0.0));
    assert_eq!(v.max.get("jobforge_reconciles_in_flight{}"), Some(&2.0));
    assert_eq!(v.last.get("jobforge_reconciles_in_flight{}"), Some(&0.0));
}

/// Issue 18, item 14: keys scheduled for later (a finished request waiting for its TTL, a running
/// phase's next log refresh) are not work waiting for a slot: at idle the depth is 0 however many
/// requests are stored, and a due key that cannot start counts.
#[test]
fn queue_depth_counts_only_keys_due_now() {
    let rec = recorder::MemRecorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&rec, || {
        rt.block_on(async {
            let q = WorkQueue::new(no_jitter());
            for name in ["a", "b", "c"] {
                q.enqueue_after(key(name), Duration::from_secs(3600));
            }
            assert_eq!(q.len(), 3, "still scheduled");
            let depth = rec
                .0
                .lock()
                .expect("values")
                .last
                .get("jobforge_queue_depth{}")
                .copied();
            assert_eq!(depth, Some(0.0), "nothing is due");
            q.enqueue(key("d"));
            let depth = rec
                .0
                .lock()
                .expect("values")
                .last
                .get("jobforge_queue_depth{}")
                .copied();
            assert_eq!(depth, Some(1.0), "one key is due and waits for a slot");
        })
    });
}

#[test]
fn a_backlog_of_100_000_enqueues_at_bounded_cost_and_the_depth_gauge_follows_it() {
    let rec = recorder::MemRecorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let gauge = || {
        rec.0
            .lock()
            .expect("values")
            .last
            .get("jobforge_queue_depth{}")
            .copied()
    };
    metrics::with_local_recorder(&rec, || {
        rt.block_on(async {
            let q = WorkQueue::new(no_jitter());
            // A new leader enqueues every stored request at once. Counting the keys due on each
            // enqueue made this quadratic: minutes under the queue's mutex (issue 17).
            let started = std::time::Instant::now();
            for i in 0..100_000 {
                q.enqueue(key(&format!("r{i}")));
            }
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(20),
                "100,000 enqueues took {took:?}"
            );
            assert_eq!(q.len(), 100_000);
            let seen = gauge().expect("the gauge is set");
            assert!(
                seen >= DEPTH_EXACT_BELOW as f64,
                "a large backlog reads large: {seen}"
            );
            // Recounted once the refresh interval has passed.
            tokio::time::advance(DEPTH_RECOUNT).await;
            q.enqueue(key("last"));
            assert_eq!(gauge(), Some(100_001.0));
        })
    });
}
