//! Properties over random observation sequences: whatever Nomad reports in whatever order, the
//! machine keeps its invariants (see the parent module's docs).

use chrono::{DateTime, TimeDelta, Utc};
use jobforge_schema::status::CONDITION_SUCCEEDED;
use jobforge_schema::{BuildStatus, ConditionStatus, Phase};
use proptest::prelude::*;

use super::{NAME, NS, SHA, digest, run, spec, t};
use crate::machine::rules::rank;
use crate::machine::{Effect, JobObservation, Markers, Observation, job_id};

#[derive(Debug, Clone)]
struct Round {
    job: u8,
    code: i32,
    placement: bool,
    unavailable: bool,
    secrets_ok: Option<bool>,
    advance: u16,
    new_generation: bool,
    cancel: bool,
}

fn round() -> impl Strategy<Value = Round> {
    (
        0u8..4,
        prop_oneof![Just(0), Just(1), Just(137)],
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::option::of(prop::bool::weighted(0.8)),
        0u16..1200,
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.03),
    )
        .prop_map(
            |(job, code, placement, unavailable, secrets_ok, advance, new_generation, cancel)| {
                Round {
                    job,
                    code,
                    placement,
                    unavailable,
                    secrets_ok,
                    advance,
                    new_generation,
                    cancel,
                }
            },
        )
}

fn observation(r: &Round, now: DateTime<Utc>) -> Observation {
    let started = now - TimeDelta::seconds(i64::from(r.advance));
    let job = match r.job {
        0 => JobObservation::NotFound,
        1 => JobObservation::Pending {
            placement_failure: r.placement.then(|| "no nodes".to_string()),
        },
        2 => JobObservation::Running {
            alloc_id: "a".into(),
            node: "n".into(),
            started_at: started,
        },
        _ => JobObservation::Finished {
            alloc_id: "a".into(),
            node: "n".into(),
            started_at: started,
            finished_at: now,
            exit_code: Some(r.code),
            failed: r.code != 0,
            event_message: None,
        },
    };
    Observation {
        job,
        markers: Markers {
            commit_sha: Some(SHA.into()),
            digest: Some(digest()),
            reason: None,
            ..Markers::default()
        },
        secrets_missing: r.secrets_ok.map(|ok| {
            if ok {
                vec![]
            } else {
                vec!["secret/data/x".into()]
            }
        }),
        nomad_unavailable: r.unavailable,
        error_line: None,
        queued: None,
        superseded_by: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_observation_sequences_keep_the_machine_invariants(
        rounds in prop::collection::vec(round(), 1..60),
        retries in 0u32..3,
        with_tests in any::<bool>(),
        with_secrets in any::<bool>(),
    ) {
        let mut s = spec();
        s.retries = retries;
        if !with_tests { s.test = None; }
        if with_secrets { s.git_credentials_path = Some("secret/data/git".into()); }
        let mut generation = 5u64;
        let mut stored: Option<BuildStatus> = None;
        let mut now = t(0);
        for r in rounds {
            now += TimeDelta::seconds(i64::from(r.advance));
            if r.new_generation || r.cancel {
                generation += 1;
                s.cancel = r.cancel;
            }
            let d = run(&s, generation, stored.as_ref(), observation(&r, now), now);
            let new = &d.status;
            prop_assert_eq!(new.observed_generation, generation);
            let conds: Vec<_> = new.conditions.iter().filter(|c| c.type_ == CONDITION_SUCCEEDED).collect();
            prop_assert_eq!(conds.len(), 1);
            let c = conds[0];
            let want = match new.phase {
                Phase::Succeeded => ConditionStatus::True,
                Phase::Failed | Phase::Cancelled => ConditionStatus::False,
                _ => ConditionStatus::Unknown,
            };
            prop_assert_eq!(c.status, want, "phase {} condition {:?}", new.phase, c);
            prop_assert!(c.message.contains("jobforge "), "message names no command: {}", c.message);
            prop_assert!(new.attempt >= 1 && new.attempt <= retries + 1);
            prop_assert_eq!(new.failure.is_some(), new.phase == Phase::Failed);
            if new.phase.is_terminal() {
                prop_assert!(new.completion_time.is_some());
            }
            if let Some(old) = stored.as_ref().filter(|o| o.observed_generation == generation) {
                if old.phase.is_terminal() {
                    prop_assert_eq!(old, new, "terminal is absorbing");
                }
                if old.attempt == new.attempt {
                    prop_assert!(rank(new.phase) >= rank(old.phase), "{} -> {}", old.phase, new.phase);
                } else {
                    prop_assert!(new.attempt == old.attempt + 1, "attempts only grow by one");
                }
            }
            for a in &d.effects {
                if let Effect::RegisterJob { job_id: id, phase, attempt } = a {
                    prop_assert_eq!(id, &job_id(NS, NAME, generation, *phase, *attempt));
                    prop_assert!(!new.phase.is_terminal());
                }
            }
            stored = Some(d.status);
        }
    }
}
