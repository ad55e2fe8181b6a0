//! The slot table's rules: caps, round-robin across namespaces, priority within one, first pass.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn k(ns: &str, name: &str) -> RequestKey {
    RequestKey::new(ns, name)
}

fn limits(global: usize, per_ns: usize) -> SlotLimits {
    SlotLimits {
        global,
        namespace_default: per_ns,
        per_namespace: HashMap::new(),
    }
}

#[test]
fn a_request_is_granted_while_there_is_room_and_queued_after() {
    let mut s = Slots::open(limits(2, 2));
    assert_eq!(s.request(&k("a", "1"), 50).0, Admission::Granted);
    assert_eq!(s.request(&k("a", "2"), 50).0, Admission::Granted);
    let (adm, granted) = s.request(&k("a", "3"), 50);
    assert!(granted.is_empty());
    let Admission::Queued(at) = adm else {
        panic!("{adm:?}")
    };
    assert_eq!((at.position, at.waiting), (1, 1));
    assert_eq!(at.blocked_by, Blocked::Namespace { running: 2, cap: 2 });
    assert!(
        at.message("a").contains("position 1 of 1"),
        "{}",
        at.message("a")
    );
    // Asking again is idempotent: same position, nothing granted.
    assert!(matches!(
        s.request(&k("a", "3"), 50).0,
        Admission::Queued(_)
    ));
    assert_eq!(s.waiting(), 1);
    // A slot frees: the waiting one is granted and reported to the caller.
    assert_eq!(s.release(&k("a", "1")), vec![k("a", "3")]);
    assert_eq!(s.request(&k("a", "3"), 50).0, Admission::Granted);
}

#[test]
fn one_namespaces_backlog_does_not_delay_anothers_next_build() {
    let mut s = Slots::open(limits(4, 4));
    for i in 0..100 {
        s.request(&k("a", &format!("r{i}")), 50);
    }
    assert_eq!(s.held_in("a"), 4);
    // B arrives after A's backlog: the next free slot is B's, not A's fifth.
    let (adm, _) = s.request(&k("b", "x"), 50);
    assert!(matches!(adm, Admission::Queued(_)));
    assert_eq!(s.release(&k("a", "r0")), vec![k("b", "x")]);
    // With B waiting again, slots alternate.
    s.request(&k("b", "y"), 50);
    s.request(&k("b", "z"), 50);
    assert_eq!(s.release(&k("a", "r1")), vec![k("a", "r4")]);
    assert_eq!(s.release(&k("a", "r2")), vec![k("b", "y")]);
    assert_eq!(s.release(&k("a", "r3")), vec![k("a", "r5")]);
    assert_eq!(s.release(&k("b", "x")), vec![k("b", "z")]);
}

#[test]
fn the_namespace_cap_holds_even_with_free_global_slots() {
    let mut s = Slots::open(SlotLimits {
        global: 10,
        namespace_default: 2,
        per_namespace: HashMap::from([("big".to_string(), 5)]),
    });
    for i in 0..8 {
        s.request(&k("a", &format!("{i}")), 50);
        s.request(&k("big", &format!("{i}")), 50);
    }
    assert_eq!((s.held_in("a"), s.held_in("big"), s.held()), (2, 5, 7));
}

#[test]
fn higher_priority_starts_first_within_a_namespace_then_arrival_order() {
    let mut s = Slots::open(limits(1, 1));
    s.request(&k("a", "running"), 50);
    s.request(&k("a", "low"), 10);
    s.request(&k("a", "first"), 50);
    s.request(&k("a", "second"), 50);
    let (adm, _) = s.request(&k("a", "urgent"), 90);
    let Admission::Queued(at) = adm else {
        panic!("{adm:?}")
    };
    assert_eq!((at.position, at.waiting), (1, 4));
    let mut order = Vec::new();
    let mut last = k("a", "running");
    for _ in 0..4 {
        let g = s.release(&last);
        assert_eq!(g.len(), 1);
        last = g[0].clone();
        order.push(last.name.clone());
    }
    assert_eq!(order, ["urgent", "first", "second", "low"]);
}

#[test]
fn nothing_is_granted_before_the_first_pass_has_read_every_initial_request() {
    let mut s = Slots::new(limits(2, 2));
    s.expect_initial([(k("a", "running"), 3), (k("a", "new"), 4)]);
    let (adm, _) = s.request_at(&k("a", "new"), 50, Some(4), 4);
    let Admission::Queued(at) = adm else {
        panic!("{adm:?}")
    };
    assert_eq!(at.blocked_by, Blocked::FirstPass);
    assert!(
        s.hold_at(&k("a", "running"), 3).is_empty(),
        "listing not complete yet"
    );
    assert_eq!(s.initial_listing_done(), vec![k("a", "new")]);
    assert_eq!(s.held(), 2);
}

#[test]
fn a_lowered_cap_keeps_running_builds_and_grants_nothing_until_below_it() {
    let mut s = Slots::open(limits(4, 4));
    for i in 0..6 {
        s.request(&k("a", &format!("{i}")), 50);
    }
    assert!(s.set_limits(limits(2, 2)).is_empty());
    assert_eq!(s.held(), 4);
    assert!(s.release(&k("a", "0")).is_empty());
    assert!(s.release(&k("a", "1")).is_empty());
    assert_eq!(s.release(&k("a", "2")), vec![k("a", "4")]);
}

#[test]
fn releasing_a_waiting_request_removes_it_from_the_queue() {
    let mut s = Slots::open(limits(1, 1));
    s.request(&k("a", "1"), 50);
    s.request(&k("a", "2"), 50);
    assert!(s.release(&k("a", "2")).is_empty());
    assert_eq!(s.waiting(), 0);
    assert!(s.release(&k("a", "1")).is_empty());
    assert_eq!(s.held(), 0);
}

/// One operation of the property test.
#[derive(Debug, Clone)]
enum Op {
    Request(u8, u8, u32),
    Release(u8, u8),
    Limits(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..30, 1u32..=100).prop_map(|(n, r, p)| Op::Request(n, r, p)),
        3 => (0u8..4, 0u8..30).prop_map(|(n, r)| Op::Release(n, r)),
        1 => (1usize..8, 1usize..5).prop_map(|(g, n)| Op::Limits(g, n)),
    ]
}

proptest! {
    /// Whatever happens, a grant never takes the global or a namespace's count above its cap
    /// (counts may only be above a cap that was lowered under them, and then nothing is granted).
    #[test]
    fn caps_are_never_exceeded_by_a_grant(ops in proptest::collection::vec(op(), 1..200)) {
        let mut s = Slots::open(limits(3, 2));
        for op in ops {
            let before: HashMap<String, usize> = (0..4).map(|n| {
                let ns = format!("ns{n}");
                let held = s.held_in(&ns);
                (ns, held)
            }).collect();
            let held_before = s.held();
            let granted = match op {
                Op::Request(n, r, p) => {
                    let key = k(&format!("ns{n}"), &format!("r{r}"));
                    let (adm, mut g) = s.request(&key, p);
                    if adm == Admission::Granted && !g.contains(&key) && held_before < s.held() {
                        g.push(key);
                    }
                    g
                }
                Op::Release(n, r) => s.release(&k(&format!("ns{n}"), &format!("r{r}"))),
                Op::Limits(g, n) => s.set_limits(limits(g, n)),
            };
            if !granted.is_empty() {
                prop_assert!(s.held() <= s.limits().global, "global {} > {}", s.held(), s.limits().global);
                for key in &granted {
                    let cap = s.limits().of(&key.namespace);
                    prop_assert!(s.held_in(&key.namespace) <= cap,
                        "{} holds {} > cap {cap} (before {:?})", key.namespace, s.held_in(&key.namespace), before);
                }
            }
            // Waiting implies blocked: a namespace with waiting work and room means no global room.
            for n in 0..4 {
                let ns = format!("ns{n}");
                if s.waiting.contains_key(&ns) && s.held_in(&ns) < s.limits().of(&ns) {
                    prop_assert!(s.held() >= s.limits().global, "{ns} waits with room everywhere");
                }
            }
        }
    }

    /// No namespace starves: with every namespace keeping a backlog and slots freed one at a
    /// time (oldest first), each namespace is granted a slot within `namespaces` consecutive
    /// grants, whatever the backlog sizes and priorities.
    #[test]
    fn no_namespace_starves(
        backlogs in proptest::collection::vec((1usize..40, 1u32..=100), 2..6),
        global in 1usize..6,
    ) {
        let namespaces = backlogs.len();
        let mut s = Slots::open(limits(global, global));
        let mut running = std::collections::VecDeque::new();
        for (n, (len, prio)) in backlogs.iter().enumerate() {
            for r in 0..*len {
                let key = k(&format!("ns{n}"), &format!("r{r}"));
                let (adm, g) = s.request(&key, *prio);
                running.extend(g);
                if adm == Admission::Granted { running.push_back(key); }
            }
        }
        let mut last_grant: HashMap<String, usize> = HashMap::new();
        let mut grants = 0usize;
        while let Some(done) = running.pop_front() {
            for g in s.release(&done) {
                grants += 1;
                let ns = g.namespace.clone();
                if let Some(prev) = last_grant.insert(ns.clone(), grants) {
                    let gap = grants - prev;
                    prop_assert!(gap <= namespaces,
                        "{ns} waited {gap} grants with {namespaces} namespaces");
                }
                running.push_back(g);
            }
        }
        prop_assert_eq!(s.waiting(), 0, "every request was granted in the end");
    }
}

#[test]
fn a_namespace_with_an_unread_request_is_passed_over_until_it_is_read() {
    let mut s = Slots::open(limits(2, 1));
    // The watch reports a1, a2, a3 of team a, and b1 of team b; a3's reconcile comes first.
    for (i, n) in ["a1", "a2", "a3"].iter().enumerate() {
        s.written(&k("a", n), 10 + i as u64);
    }
    s.written(&k("b", "b1"), 20);
    let (adm, granted) = s.request_at(&k("a", "a3"), 50, Some(12), 12);
    assert!(granted.is_empty());
    let Admission::Queued(at) = adm else {
        panic!("a3 granted before a1 and a2 were read: {adm:?}")
    };
    assert_eq!(at.blocked_by, Blocked::Unread { requests: 2 });
    assert!(
        at.message("a").contains("read 2 request(s) of namespace a"),
        "{}",
        at.message("a")
    );
    // Another namespace is not held up by team a's unread requests.
    assert_eq!(
        s.request_at(&k("b", "b1"), 50, Some(20), 20).0,
        Admission::Granted
    );
    // a2 is read: a1 is still unread, so nothing of team a starts yet.
    assert!(matches!(
        s.request_at(&k("a", "a2"), 50, Some(11), 11).0,
        Admission::Queued(_)
    ));
    // a1 is read last and is the oldest: it starts, a2 and a3 keep waiting in age order.
    assert_eq!(
        s.request_at(&k("a", "a1"), 50, Some(10), 10).0,
        Admission::Granted
    );
    assert_eq!(s.release(&k("a", "a1")), vec![k("a", "a2")]);
    assert_eq!(s.release(&k("a", "a2")), vec![k("a", "a3")]);
}

#[test]
fn an_unread_request_of_higher_priority_goes_first_even_if_read_last() {
    let mut s = Slots::open(limits(1, 1));
    s.written(&k("a", "old"), 10);
    s.written(&k("a", "urgent"), 11);
    assert!(matches!(
        s.request_at(&k("a", "old"), 50, Some(10), 10).0,
        Admission::Queued(_)
    ));
    assert_eq!(
        s.request_at(&k("a", "urgent"), 90, Some(11), 11).0,
        Admission::Granted
    );
}

#[test]
fn a_request_read_before_its_newest_write_stays_unread_and_a_deleted_one_does_not_block() {
    let mut s = Slots::open(limits(1, 1));
    s.written(&k("a", "1"), 10);
    s.written(&k("a", "2"), 11);
    // "2" is changed (a new generation) while its reconcile reads the old one.
    s.written(&k("a", "2"), 15);
    assert!(s.decided(&k("a", "2"), 11).is_empty());
    assert!(s.is_unread(&k("a", "2")));
    assert!(matches!(
        s.request_at(&k("a", "1"), 50, Some(10), 10).0,
        Admission::Queued(_)
    ));
    // It is deleted instead: team a is no longer waiting on it.
    assert_eq!(s.gone(&k("a", "2")), vec![k("a", "1")]);
    assert_eq!(s.unread_in("a"), 0);
}

#[test]
fn a_request_that_finished_or_runs_is_read_too() {
    let mut s = Slots::new(limits(1, 1));
    s.expect_initial([
        (k("a", "done"), 5),
        (k("a", "running"), 6),
        (k("a", "next"), 7),
    ]);
    assert!(s.initial_listing_done().is_empty());
    assert!(matches!(
        s.request_at(&k("a", "next"), 50, Some(7), 7).0,
        Admission::Queued(_)
    ));
    assert!(s.hold_at(&k("a", "running"), 6).is_empty());
    // The last one read ends the first pass; the cap is counted with the running one.
    assert!(s.decided(&k("a", "done"), 5).is_empty());
    assert_eq!(s.held(), 1);
    assert_eq!(s.release(&k("a", "running")), vec![k("a", "next")]);
}

#[test]
fn queued_messages_are_told_again_when_they_go_stale() {
    let mut s = Slots::new(limits(1, 1));
    let names: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    s.expect_initial(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (k("a", n), i as u64 + 1)),
    );
    s.initial_listing_done();
    for (i, n) in names.iter().enumerate() {
        let (adm, _) = s.request_at(&k("a", n), 50, Some(i as u64 + 1), i as u64 + 1);
        if i + 1 < names.len() {
            let Admission::Queued(at) = adm else {
                panic!("{adm:?}")
            };
            assert_eq!(at.blocked_by, Blocked::FirstPass);
        }
    }
    // The first pass ended with the last read: r00 starts, everyone told "first pass" (r01 to
    // r38; r39 was told after it ended) is told again.
    assert_eq!(s.held(), 1);
    let stale = s.stale();
    assert_eq!(stale.len(), 38, "{stale:?}");
    assert!(!stale.contains(&k("a", "r39")));
    // They are told again (their reconcile asks again).
    for n in &names[1..] {
        s.request(&k("a", n), 50);
    }
    assert!(s.stale().is_empty());
    // One grant: the first REFRESH_WITHIN positions moved; r39 went from 39 to 38 (not halved).
    let g = s.release(&k("a", "r00"));
    assert_eq!(g, vec![k("a", "r01")]);
    let stale: Vec<String> = s.stale().into_iter().map(|k| k.name).collect();
    assert_eq!(stale, ["r02", "r03", "r04"]);
    // After enough grants r39 halved its position (39 -> 19) and is told again.
    let mut last = k("a", "r01");
    let mut told_r39 = false;
    for _ in 0..20 {
        last = s.release(&last).pop().expect("granted");
        told_r39 |= s.stale().contains(&k("a", "r39"));
    }
    assert!(told_r39);
}

/// One step of the interleaving property test.
#[derive(Debug, Clone)]
enum Step {
    /// The watch reports the next request not written yet.
    Write,
    /// The reconcile of a written request not read yet runs (index among those).
    Read(usize),
    /// The oldest running build ends.
    Finish,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Write),
        3 => any::<usize>().prop_map(Step::Read),
        1 => Just(Step::Finish),
    ]
}

proptest! {
    /// Grant order is a property of the waiting requests, never of the order their reconciles
    /// run in: whatever the interleaving of writes (some in a new leader's initial listing,
    /// some later), reads and finishing builds, every request granted is the first of its
    /// namespace's written, not yet granted requests by priority then age; nothing is granted
    /// before the first pass read every listed request; and in the end everyone ran.
    #[test]
    fn grants_follow_priority_then_age_whatever_order_requests_are_read_in(
        requests in proptest::collection::vec((0u8..3, 1u32..=3), 1..16),
        listed in 0usize..16,
        steps in proptest::collection::vec(step(), 0..80),
        global in 1usize..4,
        per_ns in 1usize..3,
    ) {
        let listed = listed.min(requests.len());
        // Request i: namespace, priority (few values, so ties are common), CreateIndex 100 + i.
        let key_of = |i: usize| k(&format!("ns{}", requests[i].0), &format!("r{i:02}"));
        let order = |i: usize| (std::cmp::Reverse(requests[i].1 * 30), i);
        let mut s = Slots::new(limits(global, per_ns));
        s.expect_initial((0..listed).map(|i| (key_of(i), 100 + i as u64)));
        s.initial_listing_done();
        let mut written = listed;
        let mut unread: Vec<usize> = (0..listed).collect();
        let mut granted: Vec<bool> = vec![false; requests.len()];
        let mut running: std::collections::VecDeque<usize> = Default::default();
        let index_of = |key: &RequestKey| -> usize {
            key.name[1..].parse().expect("rNN")
        };
        // One call's grants, checked in priority-then-age order (one call may grant several).
        let check = |keys: Vec<RequestKey>, written: usize, first_pass_unread: bool,
                     granted: &mut Vec<bool>, running: &mut std::collections::VecDeque<usize>|
                     -> Result<(), TestCaseError> {
            let mut keys = keys;
            keys.sort_by_key(|key| order(index_of(key)));
            for key in keys {
                let g = index_of(&key);
                prop_assert!(!first_pass_unread, "{key} granted during the first pass");
                let ns = requests[g].0;
                let first = (0..written)
                    .filter(|&i| requests[i].0 == ns && !granted[i])
                    .min_by_key(|&i| order(i));
                prop_assert_eq!(first, Some(g), "{} granted out of order", key);
                granted[g] = true;
                running.push_back(g);
            }
            Ok(())
        };
        let drain = steps.into_iter().chain(
            std::iter::repeat_n(Step::Write, requests.len())
                .chain(std::iter::repeat_n(Step::Read(0), requests.len()))
                .chain(std::iter::repeat_n(Step::Finish, requests.len())),
        );
        for st in drain {
            let first_pass = (0..listed).any(|i| unread.contains(&i));
            match st {
                Step::Write if written < requests.len() => {
                    s.written(&key_of(written), 100 + written as u64);
                    unread.push(written);
                    written += 1;
                }
                Step::Read(j) if !unread.is_empty() => {
                    let i = unread.remove(j % unread.len());
                    let key = key_of(i);
                    let index = 100 + i as u64;
                    let (adm, mut g) =
                        s.request_at(&key, requests[i].1 * 30, Some(index), index);
                    if adm == Admission::Granted {
                        g.insert(0, key);
                    }
                    let still_first_pass = (0..listed).any(|i| unread.contains(&i));
                    check(g, written, still_first_pass, &mut granted, &mut running)?;
                }
                Step::Finish => {
                    if let Some(done) = running.pop_front() {
                        let g = s.release(&key_of(done));
                        check(g, written, first_pass, &mut granted, &mut running)?;
                    }
                }
                _ => {}
            }
        }
        prop_assert!(granted.iter().all(|g| *g), "everyone ran: {granted:?}");
        prop_assert_eq!(s.waiting(), 0);
    }
}

#[test]
fn a_burst_is_told_its_lasting_reason_so_few_are_told_again() {
    let mut s = Slots::open(limits(4, 2));
    let key = |i: u64| k("a", &format!("r{i:02}"));
    for i in 0..20 {
        s.written(&key(i), i + 1);
    }
    let mut told = Vec::new();
    for i in 0..20 {
        if let (Admission::Queued(at), _) = s.request_at(&key(i), 50, Some(i + 1), i + 1) {
            told.push((i, at.blocked_by));
        }
    }
    // The two that may start once the burst is read wait for that; everyone behind them waits
    // for the namespace cap in any case, and is told so at once.
    assert_eq!(told[0], (0, Blocked::Unread { requests: 19 }));
    assert_eq!(told[1], (1, Blocked::Unread { requests: 18 }));
    assert!(
        told[2..]
            .iter()
            .all(|(_, b)| matches!(b, Blocked::Namespace { cap: 2, .. })),
        "{told:?}"
    );
    assert_eq!(s.held(), 2);
    // Reading the last one granted r00 and r01; only the new first three positions are told
    // again, not the whole burst.
    let stale: Vec<String> = s.stale().into_iter().map(|k| k.name).collect();
    assert_eq!(stale, ["r02", "r03", "r04"]);
}
