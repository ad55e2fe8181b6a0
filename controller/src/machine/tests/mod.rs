//! Table tests, one per rule; [`properties`] checks the invariants over random sequences.

mod properties;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobforge_schema::{
    BuildSpec, BuildStatus, ConditionStatus, Phase, PipelinePhase, Reason, TestSpec, WebhookEvent,
    WebhookSpec,
};

use super::*;

const NS: &str = "team-a";
const NAME: &str = "app";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).expect("time")
}

fn spec() -> BuildSpec {
    BuildSpec {
        owner: "team-a".into(),
        repo_url: "https://git.example/app.git".into(),
        git_ref: "main".into(),
        image_name: "app".into(),
        registry_url: "registry.local:5000/team-a".into(),
        test: Some(TestSpec {
            commands: vec!["make test".into()],
            timeout: Some("10m".into()),
            ..TestSpec::default()
        }),
        build_timeout: Some("30m".into()),
        ..BuildSpec::default()
    }
}

fn digest() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

/// Steps one round with `obs` against `status`, for generation `generation`.
fn run(
    spec: &BuildSpec,
    generation: u64,
    status: Option<&BuildStatus>,
    obs: Observation,
    now: DateTime<Utc>,
) -> Decision {
    let cfg = MachineConfig::default();
    step(
        &StepInput {
            namespace: NS,
            name: NAME,
            generation,
            spec: Ok(spec),
            status,
            observation: &obs,
            config: &cfg,
        },
        now,
    )
}

fn job(j: JobObservation) -> Observation {
    Observation {
        job: j,
        ..Observation::default()
    }
}

fn running(started: i64) -> JobObservation {
    JobObservation::Running {
        alloc_id: "alloc-1".into(),
        node: "node-1".into(),
        started_at: t(started),
    }
}

fn finished(started: i64, ended: i64, code: i32) -> JobObservation {
    JobObservation::Finished {
        alloc_id: "alloc-1".into(),
        node: "node-1".into(),
        started_at: t(started),
        finished_at: t(ended),
        exit_code: Some(code),
        failed: code != 0,
        event_message: None,
    }
}

fn cond(s: &BuildStatus) -> (ConditionStatus, Reason, String) {
    let c = s.succeeded_condition().expect("Succeeded condition");
    (c.status, c.reason, c.message.clone())
}

fn registers(d: &Decision) -> Vec<(PipelinePhase, u32, String)> {
    d.effects
        .iter()
        .filter_map(|a| match a {
            Effect::RegisterJob {
                phase,
                attempt,
                job_id,
            } => Some((*phase, *attempt, job_id.clone())),
            _ => None,
        })
        .collect()
}

/// Drives a request from nothing to the given point: build running at t=10.
fn building(spec: &BuildSpec) -> BuildStatus {
    let d = run(spec, 7, None, Observation::default(), t(0));
    let d = run(spec, 7, Some(&d.status), job(running(10)), t(11));
    assert_eq!(d.status.phase, Phase::Building);
    d.status
}

#[test]
fn first_step_registers_the_build_job_with_a_deterministic_id_and_stays_pending() {
    let d = run(&spec(), 7, None, Observation::default(), t(0));
    assert_eq!(
        registers(&d),
        vec![(
            PipelinePhase::Build,
            1,
            "jobforge-team-a-app-7-build".to_string()
        )]
    );
    assert_eq!(d.status.phase, Phase::Pending);
    assert_eq!(d.status.observed_generation, 7);
    assert_eq!(d.status.attempt, 1);
    assert_eq!(d.status.start_time, Some(t(0)));
    assert_eq!(
        target(7, Some(&d.status)).map(|t| t.job_id),
        Some("jobforge-team-a-app-7-build".to_string())
    );
    let (st, reason, msg) = cond(&d.status);
    assert_eq!((st, reason), (ConditionStatus::Unknown, Reason::Pending));
    assert!(msg.contains("jobforge watch app -n team-a"), "{msg}");
}

#[test]
fn invalid_spec_fails_with_every_problem_and_creates_no_job() {
    let problems = vec![
        "spec.repo_url: required".to_string(),
        "spec.image_tags[0]: must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}".to_string(),
    ];
    let cfg = MachineConfig::default();
    let obs = Observation::default();
    let d = step(
        &StepInput {
            namespace: NS,
            name: NAME,
            generation: 3,
            spec: Err(&problems),
            status: None,
            observation: &obs,
            config: &cfg,
        },
        t(0),
    );
    assert_eq!(d.status.phase, Phase::Failed);
    let f = d.status.failure.clone().expect("failure");
    assert_eq!(f.reason, Reason::InvalidSpec);
    for p in &problems {
        assert!(f.message.contains(p), "{} lacks {p}", f.message);
    }
    assert!(registers(&d).is_empty());
    assert_eq!(cond(&d.status).0, ConditionStatus::False);
    assert_eq!(d.requeue_after, Some(cfg.default_ttl_after_finished));
}

#[test]
fn a_spec_found_invalid_while_its_job_runs_stops_the_job() {
    // The tenancy rules in force judge the spec on every reconcile: an operator who tightens
    // them fails a running request, and its job must not keep running.
    let st = building(&spec());
    let problems = vec!["spec.git_credentials_path: outside the namespace".to_string()];
    let cfg = MachineConfig::default();
    let obs = job(running(10));
    let d = step(
        &StepInput {
            namespace: NS,
            name: NAME,
            generation: 7,
            spec: Err(&problems),
            status: Some(&st),
            observation: &obs,
            config: &cfg,
        },
        t(20),
    );
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(
        d.status.failure.as_ref().map(|f| f.reason),
        Some(Reason::InvalidSpec)
    );
    assert!(d.effects.contains(&Effect::DeregisterJob {
        job_id: "jobforge-team-a-app-7-build".into(),
        purge: false
    }));
    assert!(registers(&d).is_empty());
}

#[test]
fn unparsable_timeout_is_an_invalid_spec() {
    let mut s = spec();
    s.build_timeout = Some("soon".into());
    let d = run(&s, 1, None, Observation::default(), t(0));
    assert_eq!(
        d.status.failure.as_ref().map(|f| f.reason),
        Some(Reason::InvalidSpec)
    );
    assert!(registers(&run(&s, 1, None, Observation::default(), t(0))).is_empty());
}

#[test]
fn cancel_deregisters_the_current_job_and_ends_cancelled() {
    let mut s = spec();
    let st = building(&s);
    s.cancel = true;
    let d = run(&s, 7, Some(&st), job(running(10)), t(20));
    assert_eq!(d.status.phase, Phase::Cancelled);
    assert!(d.effects.contains(&Effect::DeregisterJob {
        job_id: "jobforge-team-a-app-7-build".into(),
        purge: false
    }));
    let (cs, reason, _) = cond(&d.status);
    assert_eq!((cs, reason), (ConditionStatus::False, Reason::Cancelled));
    assert_eq!(d.status.completion_time, Some(t(20)));
    assert!(d.status.failure.is_none());
}

#[test]
fn a_status_of_an_older_generation_stops_its_jobs_and_starts_over_at_build() {
    let st = building(&spec());
    let d = run(&spec(), 9, Some(&st), Observation::default(), t(30));
    assert!(d.effects.contains(&Effect::StopGeneration {
        generation: 7,
        job_ids: vec!["jobforge-team-a-app-7-build".into()],
    }));
    assert_eq!(
        registers(&d),
        vec![(
            PipelinePhase::Build,
            1,
            "jobforge-team-a-app-9-build".into()
        )]
    );
    assert_eq!(d.status.observed_generation, 9);
    assert_eq!(d.status.phase, Phase::Pending);
    assert_eq!(d.status.attempt, 1);
}

#[test]
fn the_pipeline_runs_build_test_publish_and_succeeds_with_image_and_commit() {
    let s = spec();
    let st = building(&s);
    assert_eq!(
        st.phases.build.as_ref().and_then(|r| r.node.clone()),
        Some("node-1".into())
    );
    let mut obs = job(finished(10, 100, 0));
    obs.markers = Markers {
        commit_sha: Some(SHA.into()),
        digest: Some(digest()),
        reason: None,
        ..Markers::default()
    };
    let d = run(&s, 7, Some(&st), obs, t(101));
    assert_eq!(d.status.phase, Phase::Testing);
    assert!(d.effects.contains(&Effect::CaptureLogs {
        phase: PipelinePhase::Build,
        job_id: "jobforge-team-a-app-7-build".into()
    }));
    assert_eq!(registers(&d)[0].0, PipelinePhase::Test);
    assert_eq!(
        d.status.source.as_ref().map(|s| s.commit_sha.as_str()),
        Some(SHA)
    );
    let (_, reason, msg) = cond(&d.status);
    assert_eq!(reason, Reason::Testing);
    assert!(
        msg.contains("jobforge logs app -n team-a --phase test"),
        "{msg}"
    );
    let rec = d.status.phases.build.clone().expect("build record");
    assert_eq!((rec.exit_code, rec.finished_at), (Some(0), Some(t(100))));

    let d = run(&s, 7, Some(&d.status), job(finished(110, 120, 0)), t(121));
    assert_eq!(d.status.phase, Phase::Publishing);
    assert_eq!(registers(&d)[0].2, "jobforge-team-a-app-7-publish");

    let d = run(&s, 7, Some(&d.status), job(finished(130, 140, 0)), t(141));
    assert_eq!(d.status.phase, Phase::Succeeded);
    let img = d.status.image.clone().expect("image");
    assert_eq!(
        img.reference,
        format!("registry.local:5000/team-a/app@{}", digest())
    );
    assert_eq!(img.tags, vec!["latest".to_string()]);
    assert_eq!(cond(&d.status).0, ConditionStatus::True);
    assert_eq!(d.status.completion_time, Some(t(141)));
    assert!(d.status.phases.publish.is_some() && d.status.phases.test.is_some());
}

/// Issue 14: a test command printing `::jobforge::commit=` never changes the recorded commit;
/// only the build phase's output names it.
#[test]
fn a_commit_marker_printed_by_a_test_command_does_not_overwrite_the_builds() {
    let s = spec();
    let st = building(&s);
    let mut obs = job(finished(10, 100, 0));
    obs.markers = Markers {
        commit_sha: Some(SHA.into()),
        ..Markers::default()
    };
    let d = run(&s, 7, Some(&st), obs, t(101));
    assert_eq!(d.status.phase, Phase::Testing);
    let mut obs = job(finished(110, 120, 0));
    obs.markers = parse_markers(format!("::jobforge::commit={}\n", "e".repeat(40)).as_bytes());
    assert!(
        obs.markers.commit_sha.is_some(),
        "the line is a well-formed marker"
    );
    let d = run(&s, 7, Some(&d.status), obs, t(121));
    assert_eq!(d.status.phase, Phase::Publishing);
    assert_eq!(
        d.status.source.as_ref().map(|s| s.commit_sha.as_str()),
        Some(SHA)
    );
}

#[test]
fn without_tests_build_is_followed_by_publish() {
    let mut s = spec();
    s.test = Some(TestSpec::default());
    let st = building(&s);
    let d = run(&s, 7, Some(&st), job(finished(10, 20, 0)), t(21));
    assert_eq!(d.status.phase, Phase::Publishing);
    assert_eq!(registers(&d)[0].0, PipelinePhase::Publish);
}

#[test]
fn a_failing_test_without_retries_fails_with_test_failed_and_names_the_logs_command() {
    let s = spec();
    let st = building(&s);
    let st = run(&s, 7, Some(&st), job(finished(10, 20, 0)), t(21)).status;
    let d = run(&s, 7, Some(&st), job(finished(30, 40, 3)), t(41));
    assert_eq!(d.status.phase, Phase::Failed);
    let f = d.status.failure.clone().expect("failure");
    assert_eq!(
        (f.reason, f.phase),
        (Reason::TestFailed, Some(PipelinePhase::Test))
    );
    assert!(f.message.contains("exit code 3"), "{}", f.message);
    assert!(
        f.message
            .contains("jobforge logs app -n team-a --phase test")
    );
    assert_eq!(
        d.status.phases.test.as_ref().and_then(|r| r.exit_code),
        Some(3)
    );
}

#[test]
fn a_failure_with_retries_left_schedules_the_next_attempt_at_build_with_new_job_ids() {
    let mut s = spec();
    s.retries = 1;
    let st = building(&s);
    let d = run(&s, 7, Some(&st), job(finished(10, 20, 1)), t(21));
    assert_eq!(d.status.attempt, 2);
    assert_eq!(d.status.phase, Phase::Pending);
    assert_eq!(
        registers(&d),
        vec![(
            PipelinePhase::Build,
            2,
            "jobforge-team-a-app-7-build-a2".into()
        )]
    );
    let (cs, reason, msg) = cond(&d.status);
    assert_eq!(
        (cs, reason),
        (ConditionStatus::Unknown, Reason::RetryScheduled)
    );
    assert!(msg.contains("attempt 2"), "{msg}");
    // The second attempt fails too: no attempts left.
    let st = run(&s, 7, Some(&d.status), job(running(30)), t(31)).status;
    let d = run(&s, 7, Some(&st), job(finished(30, 40, 1)), t(41));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(
        d.status.failure.as_ref().map(|f| f.reason),
        Some(Reason::BuildFailed)
    );
}

#[test]
fn git_revision_marker_gives_git_revision_not_found() {
    let s = spec();
    let st = building(&s);
    let mut obs = job(finished(10, 12, 128));
    obs.markers = parse_markers(b"::jobforge::reason=GitRevisionNotFound\n");
    let d = run(&s, 7, Some(&st), obs, t(13));
    let f = d.status.failure.expect("failure");
    assert_eq!(f.reason, Reason::GitRevisionNotFound);
    assert!(f.message.contains("\"main\""), "{}", f.message);
}

#[test]
fn build_deadline_is_enforced_from_started_at_and_requeues_until_then() {
    let s = spec(); // build_timeout 30m
    let st = building(&s); // started at t(10)
    let d = run(&s, 7, Some(&st), job(running(10)), t(70));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(1800 - 60)));
    assert!(d.effects.is_empty());
    let d = run(&s, 7, Some(&st), job(running(10)), t(10 + 1800));
    assert!(d.effects.contains(&Effect::DeregisterJob {
        job_id: "jobforge-team-a-app-7-build".into(),
        purge: false
    }));
    assert_eq!(d.status.phase, Phase::Failed);
    let f = d.status.failure.expect("failure");
    assert_eq!(f.reason, Reason::Timeout);
    assert!(f.message.contains("30m"), "{}", f.message);
}

#[test]
fn test_timeout_comes_from_the_test_spec() {
    let s = spec(); // test.timeout 10m
    let st = building(&s);
    let st = run(&s, 7, Some(&st), job(finished(10, 20, 0)), t(21)).status;
    let d = run(&s, 7, Some(&st), job(running(30)), t(31));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(599)));
    let d = run(&s, 7, Some(&d.status), job(running(30)), t(630));
    assert_eq!(
        d.status.failure.as_ref().map(|f| f.reason),
        Some(Reason::Timeout)
    );
}

#[test]
fn placement_failure_keeps_pending_with_unschedulable_and_the_evaluation_reason() {
    let s = spec();
    let st = run(&s, 7, None, Observation::default(), t(0)).status;
    let d = run(
        &s,
        7,
        Some(&st),
        job(JobObservation::Pending {
            placement_failure: Some("missing drivers: 1 node filtered".into()),
        }),
        t(5),
    );
    assert_eq!(d.status.phase, Phase::Pending);
    let (cs, reason, msg) = cond(&d.status);
    assert_eq!(
        (cs, reason),
        (ConditionStatus::Unknown, Reason::Unschedulable)
    );
    assert!(msg.contains("missing drivers: 1 node filtered"), "{msg}");
    assert!(d.effects.is_empty());
    // Placed later: Building.
    let d = run(&s, 7, Some(&d.status), job(running(9)), t(10));
    assert_eq!(
        (d.status.phase, cond(&d.status).1),
        (Phase::Building, Reason::Building)
    );
}

#[test]
fn missing_secrets_fail_before_any_job() {
    let mut s = spec();
    s.git_credentials_path = Some("secret/data/git".into());
    s.registry_credentials_path = Some("secret/data/reg".into());
    let d = run(&s, 7, None, Observation::default(), t(0));
    assert_eq!(
        d.effects,
        vec![Effect::CheckSecrets {
            paths: vec!["secret/data/git".into(), "secret/data/reg".into()]
        }]
    );
    let obs = Observation {
        secrets_missing: Some(vec!["secret/data/reg".into()]),
        ..Observation::default()
    };
    let failed = run(&s, 7, Some(&d.status), obs, t(1));
    assert_eq!(
        failed.status.failure.as_ref().map(|f| f.reason),
        Some(Reason::SecretNotFound)
    );
    assert!(registers(&failed).is_empty());
    let obs = Observation {
        secrets_missing: Some(vec![]),
        ..Observation::default()
    };
    let ok = run(&s, 7, Some(&d.status), obs, t(1));
    assert_eq!(registers(&ok).len(), 1);
}

#[test]
fn nomad_unavailable_keeps_the_phase_and_retries() {
    let s = spec();
    let st = building(&s);
    let mut obs = job(JobObservation::NotFound);
    obs.nomad_unavailable = true;
    let d = run(&s, 7, Some(&st), obs, t(20));
    assert_eq!(d.status.phase, Phase::Building);
    assert_eq!(cond(&d.status).1, Reason::NomadUnavailable);
    assert!(d.effects.is_empty());
    assert_eq!(d.requeue_after, Some(MachineConfig::default().nomad_retry));
}

#[test]
fn nomad_unavailable_past_the_deadline_waits_for_nomad_instead_of_spinning() {
    let s = spec();
    let st = building(&s);
    let obs = Observation {
        nomad_unavailable: true,
        ..Observation::default()
    };
    let d = run(&s, 7, Some(&st), obs, t(10 + 4000));
    assert_eq!(d.requeue_after, Some(MachineConfig::default().nomad_retry));
    assert_eq!(d.status.phase, Phase::Building);
    // Nomad is back: the deadline is enforced.
    let d = run(&s, 7, Some(&d.status), job(running(10)), t(10 + 4001));
    assert_eq!(
        d.status.failure.as_ref().map(|f| f.reason),
        Some(Reason::Timeout)
    );
}

#[test]
fn a_status_of_a_newer_generation_than_the_spec_read_is_left_alone() {
    let st = building(&spec());
    let d = run(&spec(), 6, Some(&st), Observation::default(), t(20));
    assert_eq!(d.status, st);
    assert!(d.effects.is_empty());
}

#[test]
fn a_job_missing_from_nomad_is_registered_again_under_the_same_id() {
    let s = spec();
    let st = run(&s, 7, None, Observation::default(), t(0)).status;
    let d = run(&s, 7, Some(&st), job(JobObservation::NotFound), t(1));
    assert_eq!(
        registers(&d),
        vec![(
            PipelinePhase::Build,
            1,
            "jobforge-team-a-app-7-build".into()
        )]
    );
    assert!(!d.status_changed(Some(&st)));
}

#[test]
fn terminal_requests_requeue_until_ttl_and_are_then_deleted() {
    let mut s = spec();
    s.ttl_after_finished = Some("2s".into());
    s.cancel = true;
    let d = run(&s, 7, None, Observation::default(), t(0));
    assert_eq!(d.status.phase, Phase::Cancelled);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(2)));
    let d2 = run(&s, 7, Some(&d.status), Observation::default(), t(1));
    assert_eq!(d2.requeue_after, Some(Duration::from_secs(1)));
    assert!(!d2.status_changed(Some(&d.status)), "terminal is absorbing");
    let d3 = run(&s, 7, Some(&d.status), Observation::default(), t(2));
    assert_eq!(d3.effects, vec![Effect::DeleteRequest]);
}

#[test]
fn webhooks_fire_once_per_transition_for_subscribed_events() {
    let mut s = spec();
    s.webhook = Some(WebhookSpec {
        url: "https://hooks.example/x".into(),
        on: vec![WebhookEvent::Started, WebhookEvent::Succeeded],
        ..WebhookSpec::default()
    });
    let d = run(&s, 7, None, Observation::default(), t(0));
    assert!(d.effects.contains(&Effect::Webhook {
        event: WebhookEvent::Started,
        id: "started:7:1".into()
    }));
    assert_eq!(
        d.status.webhook.as_ref().and_then(|w| w.last_event.clone()),
        Some("started:7:1".into())
    );
    // Re-deciding from the written status does not emit it again.
    let again = run(&s, 7, Some(&d.status), job(JobObservation::NotFound), t(1));
    assert!(
        !again
            .effects
            .iter()
            .any(|a| matches!(a, Effect::Webhook { .. }))
    );
}

#[test]
fn long_names_give_job_ids_within_the_limit() {
    let id = job_id(
        &"n".repeat(63),
        &"m".repeat(63),
        u64::MAX,
        PipelinePhase::Build,
        2,
    );
    assert!(id.len() <= MAX_JOB_ID_LEN);
}

/// Issue 18, item 13: `jobforge cancel` rewrites the spec (a new generation); the Cancelled
/// status keeps the phases that ran and the real start time instead of an empty, 0 s record.
#[test]
fn cancel_of_a_running_request_keeps_its_phase_records_and_start_time() {
    let mut s = spec();
    let st = building(&s); // generation 7, started at t(0), build running since t(10)
    s.cancel = true;
    let d = run(&s, 8, Some(&st), Observation::default(), t(60));
    assert_eq!(d.status.phase, Phase::Cancelled);
    assert_eq!(d.status.observed_generation, 8);
    assert_eq!(d.status.start_time, Some(t(0)));
    assert_eq!(d.status.completion_time, Some(t(60)));
    let build = d
        .status
        .phases
        .build
        .clone()
        .expect("the build record is kept");
    assert_eq!(build.nomad_job_id, "jobforge-team-a-app-7-build");
    assert_eq!(build.started_at, Some(t(10)));
    assert!(d.effects.contains(&Effect::StopGeneration {
        generation: 7,
        job_ids: vec!["jobforge-team-a-app-7-build".into()],
    }));
    assert!(registers(&d).is_empty());
}

/// Issue 18, item 5: before publish succeeded, `status.image` names nothing (the build's digest
/// belongs to the temporary image, which the final repository does not hold); after a failed
/// test it stays absent, and the `phase.test` webhook is sent without an image.
#[test]
fn only_a_published_image_is_reported() {
    let s = spec();
    let st = building(&s);
    let mut obs = job(finished(10, 100, 0));
    obs.markers = Markers {
        commit_sha: Some(SHA.into()),
        digest: Some(digest()),
        reason: None,
        ..Markers::default()
    };
    let d = run(&s, 7, Some(&st), obs, t(101));
    assert_eq!(d.status.phase, Phase::Testing);
    assert_eq!(d.status.image, None, "no image before publish");
    assert_eq!(
        d.status
            .phases
            .build
            .as_ref()
            .and_then(|r| r.digest.clone()),
        Some(digest()),
        "the temporary image's digest is recorded with the build phase"
    );
    let d = run(&s, 7, Some(&d.status), job(finished(110, 120, 1)), t(121));
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(d.status.image, None, "a failed request has no image");
}

/// Issue 18, item 1: the failure message carries the real error (the tool's line from the
/// output, the failing test command) and then the next step, never Nomad's informational
/// `Task Setup` event.
#[test]
fn failure_messages_carry_the_real_error_and_the_next_step() {
    let s = spec();
    // BuildFailed: a failing RUN; buildah's error line.
    let st = building(&s);
    let mut obs = job(finished(10, 20, 1));
    obs.error_line = Some("Error: building at STEP \"RUN false\": exit status 1".into());
    let f = run(&s, 7, Some(&st), obs, t(21))
        .status
        .failure
        .expect("failure");
    assert_eq!(f.reason, Reason::BuildFailed);
    assert!(
        f.message
            .contains("exit code 1: Error: building at STEP \"RUN false\": exit status 1"),
        "{}",
        f.message
    );
    assert!(
        f.message
            .contains("jobforge logs app -n team-a --phase build"),
        "{}",
        f.message
    );
    assert!(!f.message.contains("Task Setup"), "{}", f.message);

    // BuildFailed at the clone: git's fatal line.
    let mut obs = job(finished(10, 20, 1));
    obs.markers = parse_markers(b"::jobforge::reason=BuildFailed\n");
    obs.error_line = Some(
        "fatal: unable to access 'https://127.0.0.1:1/nope.git/': Failed to connect to 127.0.0.1 port 1".into(),
    );
    let f = run(&s, 7, Some(&st), obs, t(21))
        .status
        .failure
        .expect("failure");
    assert_eq!(f.reason, Reason::BuildFailed);
    assert!(
        f.message
            .contains("fatal: unable to access 'https://127.0.0.1:1/nope.git/'"),
        "{}",
        f.message
    );

    // TestFailed: the failing command (spec.test.commands[n-1]) and its exit code.
    let mut s2 = spec();
    if let Some(t) = s2.test.as_mut() {
        t.commands = vec!["make lint".into(), "make test".into()];
    }
    let st = building(&s2);
    let st = run(&s2, 7, Some(&st), job(finished(10, 20, 0)), t(21)).status;
    let mut obs = job(finished(30, 40, 2));
    obs.markers = parse_markers(b"::jobforge::failed-command=2\n");
    let f = run(&s2, 7, Some(&st), obs, t(41))
        .status
        .failure
        .expect("failure");
    assert_eq!(f.reason, Reason::TestFailed);
    assert!(
        f.message
            .contains("test command 2 (\"make test\") failed with exit code 2"),
        "{}",
        f.message
    );
    assert!(
        f.message
            .contains("jobforge logs app -n team-a --phase test"),
        "{}",
        f.message
    );
    let mut obs = job(finished(30, 40, 1));
    obs.markers = parse_markers(b"::jobforge::failed-command=entry_point\n");
    let f = run(&s2, 7, Some(&st), obs, t(41))
        .status
        .failure
        .expect("failure");
    assert!(
        f.message
            .contains("the image's entry point failed with exit code 1"),
        "{}",
        f.message
    );
}

#[test]
fn a_request_waiting_for_a_build_slot_is_pending_queued_with_no_job() {
    let obs = Observation {
        queued: Some("queued: position 3 of 7 waiting in namespace team-a".into()),
        ..Observation::default()
    };
    let d = run(&spec(), 7, None, obs, t(0));
    assert_eq!(d.status.phase, Phase::Pending);
    assert!(registers(&d).is_empty(), "{:?}", d.effects);
    assert_eq!(d.requeue_after, None, "the slot table wakes it");
    let (status, reason, msg) = cond(&d.status);
    assert_eq!((status, reason), (ConditionStatus::Unknown, Reason::Queued));
    assert!(msg.contains("position 3 of 7"), "{msg}");
    // Granted: the next round registers the build.
    let d = run(&spec(), 7, Some(&d.status), Observation::default(), t(1));
    assert_eq!(registers(&d).len(), 1);
}

#[test]
fn a_superseded_request_stops_its_job_and_ends_cancelled_naming_the_newer_one() {
    let mut s = spec();
    s.concurrency_group = Some("main".into());
    let started = run(&s, 7, None, Observation::default(), t(0));
    let (_, _, id) = registers(&started)[0].clone();
    let obs = Observation {
        job: running(1),
        superseded_by: Some("app-2".into()),
        ..Observation::default()
    };
    let d = run(&s, 7, Some(&started.status), obs, t(2));
    assert_eq!(d.status.phase, Phase::Cancelled);
    assert!(d.effects.contains(&Effect::DeregisterJob {
        job_id: id,
        purge: false
    }));
    let (status, reason, msg) = cond(&d.status);
    assert_eq!(
        (status, reason),
        (ConditionStatus::False, Reason::Superseded)
    );
    assert!(
        msg.contains("superseded by app-2") && msg.contains("group main"),
        "{msg}"
    );
    // Terminal is absorbing: a later round does not undo it.
    let again = run(&s, 7, Some(&d.status), Observation::default(), t(3));
    assert_eq!(again.status.phase, Phase::Cancelled);
}
