//! Properties of the job IDs `render` produces: the one ID rule (`machine::job_id`) gives the
//! job's `ID` and `Name`, the state machine registers the same ID, and long namespace + name pairs
//! stay within Nomad-friendly lengths.

use jobforge_schema::{BuildRequest, PipelinePhase, TestSpec};
use proptest::prelude::*;

use super::*;
use crate::machine::{self, Effect, MAX_JOB_ID_LEN, MachineConfig, Observation, StepInput};

fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
}

fn request(ns: &str, name: &str) -> BuildRequest {
    let mut r = super::snapshot_tests::minimal();
    r.metadata.namespace = ns.to_string();
    r.metadata.name = name.to_string();
    r.spec.test = Some(TestSpec {
        commands: vec!["true".into()],
        ..Default::default()
    });
    r
}

/// The job ID the state machine registers for the build of a fresh request.
fn registered_build_id(req: &BuildRequest, generation: u64) -> Option<String> {
    let observation = Observation::default();
    let config = MachineConfig::default();
    let d = machine::step(
        &StepInput {
            namespace: &req.metadata.namespace,
            name: &req.metadata.name,
            generation,
            spec: Ok(&req.spec),
            status: None,
            observation: &observation,
            config: &config,
        },
        chrono::Utc::now(),
    );
    d.effects.into_iter().find_map(|e| match e {
        Effect::RegisterJob { job_id, .. } => Some(job_id),
        _ => None,
    })
}

proptest! {
    #[test]
    fn every_rendered_job_is_named_by_its_capped_id(
        ns in label(), name in label(), generation in any::<u64>(), attempt in 1u32..=u32::MAX,
    ) {
        let req = request(&ns, &name);
        let jobs = render_all(&req, generation, attempt, &RenderConfig::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(jobs.len(), 3);
        for (job, phase) in jobs.iter().zip(PipelinePhase::ALL) {
            prop_assert_eq!(&job.name, &job.id);
            prop_assert!(job.id.len() <= MAX_JOB_ID_LEN, "{} is {} long", job.id, job.id.len());
            prop_assert_eq!(&job.id, &machine::job_id(&ns, &name, generation, phase, attempt));
        }
    }

    #[test]
    fn the_machine_registers_the_id_render_gives(
        ns in label(), name in label(), generation in 1u64..=u64::MAX,
    ) {
        let req = request(&ns, &name);
        let rendered = render(&req, generation, 1, PipelinePhase::Build, &RenderConfig::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(registered_build_id(&req, generation), Some(rendered.id));
    }
}

#[test]
fn long_namespace_and_name_give_a_capped_id_for_job_and_name() {
    let (ns, name) = ("n".repeat(63), "a".repeat(63));
    let job = render(
        &request(&ns, &name),
        u64::MAX,
        7,
        PipelinePhase::Publish,
        &RenderConfig::default(),
    )
    .expect("renders");
    assert!(job.id.len() <= MAX_JOB_ID_LEN, "{}", job.id);
    assert_eq!(job.name, job.id);
    assert!(
        job.id.ends_with(&format!("-{}-publish-a7", u64::MAX)),
        "{}",
        job.id
    );
    assert_eq!(
        job.meta.get("jobforge.request"),
        Some(&format!("{ns}/{name}"))
    );
}
