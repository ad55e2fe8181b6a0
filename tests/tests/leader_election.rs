//! Leader election with three in-process candidates against the dev stack's Consul emulator:
//! never two leaders, failover after shutdown / deposition / crash within the documented bounds,
//! and fencing that refuses a deposed leader's writes.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobforge_client::consul::leader::{FencedWrite, LeaderConfig, LeaderState, Leadership};
use jobforge_client::consul::{Client, Config, QueryOptions, TxnOp, TxnResult};
use jobforge_devstack::{DevStack, DevStackConfig};
use tokio_util::sync::CancellationToken;

const KEY: &str = "jobforge/leader";
const TTL: Duration = Duration::from_secs(10);
const LOCK_DELAY: Duration = Duration::from_secs(1);

type Candidates = Arc<Mutex<Vec<(usize, Leadership)>>>;

fn start(client: &Client, id: usize, cancel: &CancellationToken) -> Leadership {
    let mut cfg = LeaderConfig::new(KEY, format!("{{\"id\":{id}}}").into_bytes());
    cfg.ttl = TTL;
    cfg.lock_delay = LOCK_DELAY;
    Leadership::start(client.clone(), cfg, cancel.clone()).unwrap()
}

/// Waits (on the candidates' state channels, no polling) until one of them is leader with a
/// session other than `not_session`; returns its id and session.
async fn wait_for_leader(
    c: &Candidates,
    not_session: Option<&str>,
    within: Duration,
) -> (usize, String) {
    let receivers: Vec<(usize, tokio::sync::watch::Receiver<LeaderState>)> = c
        .lock()
        .unwrap()
        .iter()
        .map(|(id, l)| (*id, l.subscribe()))
        .collect();
    let waits = receivers.into_iter().map(|(id, mut rx)| {
        let not = not_session.map(str::to_string);
        Box::pin(async move {
            let s = rx
                .wait_for(|s| matches!(s, LeaderState::Leader { session } if Some(session) != not.as_ref()))
                .await
                .unwrap()
                .clone();
            match s {
                LeaderState::Leader { session } => (id, session),
                _ => unreachable!(),
            }
        })
    });
    tokio::time::timeout(within, futures::future::select_all(waits))
        .await
        .unwrap_or_else(|_| panic!("no new leader within {within:?}"))
        .0
}

fn take(c: &Candidates, id: usize) -> Leadership {
    let mut list = c.lock().unwrap();
    let pos = list.iter().position(|(i, _)| *i == id).unwrap();
    list.remove(pos).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_with_failover_and_fencing() {
    let stack = DevStack::start(DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        ..DevStackConfig::ephemeral()
    })
    .await
    .unwrap();
    let client = Client::new(Config::new(&stack.consul_url()).unwrap()).unwrap();
    let cancel = CancellationToken::new();
    let candidates: Candidates = Arc::new(Mutex::new(
        (0..3).map(|id| (id, start(&client, id, &cancel))).collect(),
    ));

    // Sample every 10 ms: never more than one candidate may believe it leads.
    let stop = Arc::new(AtomicBool::new(false));
    let max_leaders = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (c, stop, max_leaders, samples) = (
            candidates.clone(),
            stop.clone(),
            max_leaders.clone(),
            samples.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let n = c
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, l)| l.is_leader())
                    .count();
                max_leaders.fetch_max(n, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let started = Instant::now();

    // 1. A leader emerges; its fenced writes commit (create-only, then CAS on the new index).
    let (first, first_session) = wait_for_leader(&candidates, None, Duration::from_secs(5)).await;
    let fence_target = "jobforge/status/ns/app";
    let first_fence = {
        let list = candidates.lock().unwrap();
        let leader = &list.iter().find(|(i, _)| *i == first).unwrap().1;
        leader.fence().unwrap()
    };
    let w = first_fence.cas_put(fence_target, b"s1", 0).await.unwrap();
    let FencedWrite::Committed { modify_index } = w else {
        panic!("leader write refused: {w:?}")
    };
    assert_eq!(
        first_fence.cas_put(fence_target, b"s1b", 0).await.unwrap(),
        FencedWrite::Conflict
    );
    let (_, pair) = client.kv_get(KEY, QueryOptions::default()).await.unwrap();
    assert_eq!(
        pair.unwrap().value,
        format!("{{\"id\":{first}}}").into_bytes()
    );

    // 2. Graceful step-down: release means no lock-delay, a standby takes over at once.
    take(&candidates, first).shutdown().await;
    let stepped = Instant::now();
    let (second, second_session) =
        wait_for_leader(&candidates, Some(&first_session), Duration::from_secs(3)).await;
    assert!(
        stepped.elapsed() < Duration::from_secs(2),
        "takeover after release took {:?}",
        stepped.elapsed()
    );
    candidates
        .lock()
        .unwrap()
        .push((3, start(&client, 3, &cancel)));
    assert_eq!(
        first_fence
            .cas_put(fence_target, b"stale", modify_index)
            .await
            .unwrap(),
        FencedWrite::NotLeader,
        "a fence of a session that resigned must refuse"
    );

    // 3. Deposition: the leader's session is destroyed behind its back (as an operator or a
    // failed health check would). The key is released with lock-delay; the deposed leader steps
    // down and its fence refuses even though its process keeps running.
    let deposed_fence = {
        let list = candidates.lock().unwrap();
        list.iter()
            .find(|(i, _)| *i == second)
            .unwrap()
            .1
            .fence()
            .unwrap()
    };
    assert!(client.session_destroy(&second_session).await.unwrap());
    let deposed = Instant::now();
    let (third, third_session) = wait_for_leader(
        &candidates,
        Some(&second_session),
        LOCK_DELAY + Duration::from_secs(4),
    )
    .await;
    assert!(
        deposed.elapsed() >= LOCK_DELAY,
        "lock-delay was not respected: {:?}",
        deposed.elapsed()
    );
    assert_eq!(
        deposed_fence
            .cas_put(fence_target, b"deposed", modify_index)
            .await
            .unwrap(),
        FencedWrite::NotLeader
    );
    let (_, pair) = client
        .kv_get(fence_target, QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(
        pair.unwrap().value,
        b"s1",
        "a deposed leader's write must not land"
    );
    {
        let list = candidates.lock().unwrap();
        let leader = &list.iter().find(|(i, _)| *i == third).unwrap().1;
        assert_eq!(leader.session_id().as_deref(), Some(third_session.as_str()));
    }

    // 4. Crash: the leader stops renewing without releasing. Consul invalidates the session
    // between TTL and 2×TTL after its last renewal, then lock-delay; a standby then acquires
    // (within one acquire retry, lock-delay + 50 ms).
    let crashed_fence = {
        let list = candidates.lock().unwrap();
        list.iter()
            .find(|(i, _)| *i == third)
            .unwrap()
            .1
            .fence()
            .unwrap()
    };
    take(&candidates, third).abandon();
    let crashed = Instant::now();
    let (fourth, _) = wait_for_leader(
        &candidates,
        Some(&third_session),
        2 * TTL + LOCK_DELAY + Duration::from_secs(3),
    )
    .await;
    let failover = crashed.elapsed();
    assert!(
        failover <= 2 * TTL + LOCK_DELAY + Duration::from_secs(1),
        "crash failover took {failover:?}, bound 2×TTL + lock-delay (+ one acquire retry)"
    );
    assert!(
        failover >= TTL,
        "the session expired before its TTL: {failover:?}"
    );
    assert_eq!(
        crashed_fence
            .cas_put(fence_target, b"zombie", modify_index)
            .await
            .unwrap(),
        FencedWrite::NotLeader
    );
    // The new leader writes with the index it read.
    let (_, pair) = client
        .kv_get(fence_target, QueryOptions::default())
        .await
        .unwrap();
    let current = pair.unwrap().modify_index;
    let w = {
        let l = take(&candidates, fourth);
        let w = l
            .fenced_cas_put(fence_target, b"s2", current)
            .await
            .unwrap();
        candidates.lock().unwrap().push((fourth, l));
        w
    };
    assert!(matches!(w, FencedWrite::Committed { .. }), "{w:?}");

    // Keep sampling for at least 20 s in all.
    tokio::time::sleep_until((started + Duration::from_secs(20)).into()).await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let total = started.elapsed();
    let n_samples = samples.load(Ordering::SeqCst);
    assert_eq!(
        max_leaders.load(Ordering::SeqCst),
        1,
        "two candidates led at once"
    );
    assert!(
        total >= Duration::from_secs(20),
        "scenario ran only {total:?}"
    );
    assert!(
        n_samples as f64 >= total.as_secs_f64() * 50.0,
        "only {n_samples} samples in {total:?}"
    );

    let rest: Vec<_> = candidates
        .lock()
        .unwrap()
        .drain(..)
        .map(|(_, l)| l)
        .collect();
    for l in rest {
        l.shutdown().await;
    }
    let (_, pair) = client.kv_get(KEY, QueryOptions::default()).await.unwrap();
    assert_eq!(
        pair.unwrap().session,
        None,
        "shutdown must release the leader key"
    );
    cancel.cancel();
    stack.shutdown().await;
}

/// The holder must step down as soon as the key shows another session, not only when its own
/// session is lost: here an operator, in one transaction, force-releases the key (unlock with the
/// holder's session) and has another session acquire it, so no read can see the key free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_steps_down_when_the_key_shows_a_different_session() {
    let stack = DevStack::start(DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        ..DevStackConfig::ephemeral()
    })
    .await
    .unwrap();
    let client = Client::new(Config::new(&stack.consul_url()).unwrap()).unwrap();
    let cancel = CancellationToken::new();
    let holder = start(&client, 0, &cancel);
    let mut state = holder.subscribe();
    let session = tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(LeaderState::is_leader),
    )
    .await
    .expect("the only candidate leads within 5 s")
    .unwrap()
    .session()
    .unwrap()
    .to_string();
    let fence = holder.fence().unwrap();

    let operator = client
        .session_create(&jobforge_client::consul::SessionRequest {
            ttl: Some(TTL),
            ..Default::default()
        })
        .await
        .unwrap();
    let takeover = [
        TxnOp::Unlock {
            key: KEY.into(),
            value: b"forced".to_vec(),
            session: session.clone(),
        },
        TxnOp::Lock {
            key: KEY.into(),
            value: b"operator".to_vec(),
            session: operator.clone(),
        },
    ];
    let forced = Instant::now();
    match client.txn(&takeover).await.unwrap() {
        TxnResult::Committed(_) => {}
        other => panic!("force release + acquire refused: {other:?}"),
    }
    let (_, pair) = client.kv_get(KEY, QueryOptions::default()).await.unwrap();
    assert_eq!(pair.unwrap().session.as_deref(), Some(operator.as_str()));

    let seen = tokio::time::timeout(Duration::from_secs(3), state.wait_for(|s| !s.is_leader()))
        .await
        .expect("the holder stepped down within 3 s")
        .unwrap()
        .clone();
    assert!(
        forced.elapsed() < Duration::from_secs(2),
        "stepping down took {:?}",
        forced.elapsed()
    );
    match seen {
        LeaderState::Standby {
            session: own,
            leader_identity,
        } => {
            assert_eq!(own, session, "its own session is still alive");
            assert_eq!(leader_identity.as_deref(), Some(&b"operator"[..]));
        }
        other => panic!("expected standby, got {other:?}"),
    }
    assert!(!holder.is_leader());
    assert_eq!(
        fence
            .cas_put("jobforge/status/ns/x", b"late", 0)
            .await
            .unwrap(),
        FencedWrite::NotLeader,
        "the deposed holder's fenced write must be refused"
    );
    holder.shutdown().await;
    let (_, pair) = client.kv_get(KEY, QueryOptions::default()).await.unwrap();
    assert_eq!(
        pair.unwrap().session.as_deref(),
        Some(operator.as_str()),
        "the deposed holder's shutdown must not release someone else's lock"
    );
    assert!(client.session_destroy(&operator).await.unwrap());
    cancel.cancel();
    stack.shutdown().await;
}
