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
fn nothing_is_granted_before_the_first_pass_has_seen_every_initial_request() {
    let mut s = Slots::new(limits(2, 2));
    s.expect_initial([k("a", "running"), k("a", "new")]);
    let (adm, _) = s.request(&k("a", "new"), 50);
    let Admission::Queued(at) = adm else {
        panic!("{adm:?}")
    };
    assert_eq!(at.blocked_by, Blocked::FirstPass);
    assert!(s.seen(&k("a", "new")).is_empty());
    s.hold(&k("a", "running"));
    assert!(
        s.seen(&k("a", "running")).is_empty(),
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
