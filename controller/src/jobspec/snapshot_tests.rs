//! Snapshot tests (insta, JSON) of rendered jobs for representative requests. The fixed scripts
//! are replaced by `<BUILD_SCRIPT>`-style placeholders in the snapshots so a script change shows
//! up once (in its own snapshot) instead of in every job.

use std::collections::BTreeMap;

use jobforge_schema::{
    BuildRequest, BuildSpec, Constraint, PhaseResources, PipelinePhase, ResourceLimits, TestSpec,
    VaultSecret,
};
use serde_json::Value;

use super::*;

pub(super) fn minimal() -> BuildRequest {
    BuildRequest::new(
        "team-a",
        "myapp-42",
        BuildSpec {
            owner: "team-a".into(),
            repo_url: "https://git.example.com/team-a/myapp.git".into(),
            git_ref: "main".into(),
            image_name: "myapp".into(),
            registry_url: "registry.internal:5000/team-a".into(),
            ..Default::default()
        },
    )
}

fn with_tests() -> BuildRequest {
    let mut r = minimal();
    r.spec.image_tags = vec!["v1.4.2".into(), "latest".into()];
    r.spec.test = Some(TestSpec {
        commands: vec!["/app/selftest".into(), "test -f /etc/os-release".into()],
        entry_point: true,
        env: BTreeMap::from([("A".into(), "b".into())]),
        vault_secrets: vec![VaultSecret {
            path: "secret/data/jobforge/team-a/aws-transcription".into(),
            fields: BTreeMap::from([("access_key".into(), "AWS_ACCESS_KEY_ID".into())]),
        }],
        vault_policies: vec!["aws-read".into()],
        constraints: vec![Constraint {
            attribute: "${meta.pool}".into(),
            value: "builders".into(),
            operand: String::new(),
        }],
        ..Default::default()
    });
    r
}

fn with_credentials() -> BuildRequest {
    let mut r = minimal();
    r.spec.git_credentials_path = Some("secret/data/jobforge/team-a/git".into());
    r.spec.registry_credentials_path = Some("secret/data/jobforge/team-a/registry".into());
    r.spec.clear_cache = true;
    r.spec.dockerfile_path = Some("build/Containerfile".into());
    r.spec.dockerfile_context = Some("app".into());
    r
}

/// Serializes jobs with the scripts replaced by their names.
fn snapshot_value(jobs: &[crate::nomad::job_spec::Job]) -> Value {
    let mut v = serde_json::to_value(jobs).unwrap();
    replace_scripts(&mut v);
    v
}

fn replace_scripts(v: &mut Value) {
    match v {
        Value::String(s) => {
            for (name, text) in [
                ("<BUILD_SCRIPT>", build::BUILD_SCRIPT),
                ("<TEST_SCRIPT>", test::TEST_SCRIPT),
                ("<IMAGE_TEST_SCRIPT>", test::IMAGE_TEST_SCRIPT),
                ("<PUBLISH_SCRIPT>", publish::PUBLISH_SCRIPT),
            ] {
                if s == text {
                    *s = name.to_string();
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(replace_scripts),
        Value::Object(o) => o.values_mut().for_each(replace_scripts),
        _ => {}
    }
}

#[test]
fn minimal_request_renders_build_and_publish_only() {
    let jobs = render_all(&minimal(), 1234, 1, &RenderConfig::default()).unwrap();
    assert_eq!(jobs.len(), 2);
    insta::assert_json_snapshot!(snapshot_value(&jobs));
}

#[test]
fn request_with_tests_and_entry_point_renders_three_phases() {
    let jobs = render_all(&with_tests(), 1234, 1, &RenderConfig::default()).unwrap();
    assert_eq!(jobs.len(), 3);
    insta::assert_json_snapshot!(snapshot_value(&jobs));
}

#[test]
fn git_and_registry_credentials_become_vault_templates() {
    let jobs = render_all(&with_credentials(), 7, 1, &RenderConfig::default()).unwrap();
    insta::assert_json_snapshot!(snapshot_value(&jobs));
}

#[test]
fn ssh_git_credentials_write_a_key_file_template() {
    let mut r = with_credentials();
    r.spec.repo_url = "git@git.example.com:team-a/myapp.git".into();
    let job = render(&r, 7, 1, PipelinePhase::Build, &RenderConfig::default()).unwrap();
    insta::assert_json_snapshot!(snapshot_value(&[job]));
}

#[test]
fn per_phase_resources_override_global_and_defaults() {
    let mut r = with_tests();
    r.spec.resource_limits = Some(ResourceLimits {
        cpu: Some("1500".into()),
        memory: Some("3000".into()),
        disk: None,
        build: Some(PhaseResources {
            cpu: Some("4000".into()),
            memory: None,
            disk: Some("20480".into()),
        }),
        test: Some(PhaseResources {
            cpu: Some("700".into()),
            memory: None,
            disk: None,
        }),
        publish: None,
    });
    if let Some(t) = r.spec.test.as_mut() {
        t.resource_limits = Some(PhaseResources {
            cpu: None,
            memory: Some("512".into()),
            disk: None,
        });
    }
    let cfg = RenderConfig::default();
    let res = |p| resolve_resources(&r, p, &cfg).unwrap();
    assert_eq!(
        res(PipelinePhase::Build),
        PhaseDefaults {
            cpu_mhz: 4000,
            memory_mb: 3000,
            disk_mb: 20480
        }
    );
    assert_eq!(
        res(PipelinePhase::Test),
        PhaseDefaults {
            cpu_mhz: 700,
            memory_mb: 512,
            disk_mb: 2048
        }
    );
    assert_eq!(
        res(PipelinePhase::Publish),
        PhaseDefaults {
            cpu_mhz: 1500,
            memory_mb: 3000,
            disk_mb: 2048
        }
    );
    let jobs = render_all(&r, 1234, 1, &cfg).unwrap();
    let summary: Vec<Value> = jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "ID": j.id,
                "Resources": j.task_groups[0].tasks[0].resources,
                "EphemeralDisk": j.task_groups[0].ephemeral_disk,
            })
        })
        .collect();
    insta::assert_json_snapshot!(summary);
}

#[test]
fn resource_that_is_not_a_positive_integer_is_rejected_with_its_field() {
    let mut r = minimal();
    r.spec.resource_limits = Some(ResourceLimits {
        build: Some(PhaseResources {
            cpu: Some("4k".into()),
            memory: None,
            disk: None,
        }),
        ..Default::default()
    });
    let err = render(&r, 1, 1, PipelinePhase::Build, &RenderConfig::default()).unwrap_err();
    assert!(
        err.to_string().contains("spec.resource_limits.build.cpu"),
        "{err}"
    );
}

#[test]
fn docker_profile_runs_tools_in_images_without_privileged() {
    let cfg = RenderConfig {
        profile: Profile::Docker,
        namespace: Some("builds".into()),
        region: Some("eu".into()),
        datacenters: vec!["dc1".into()],
        ..Default::default()
    };
    let jobs = render_all(&with_tests(), 1234, 1, &cfg).unwrap();
    let text = serde_json::to_string(&jobs).unwrap();
    assert!(!text.contains("privileged"));
    insta::assert_json_snapshot!(snapshot_value(&jobs));
}

#[test]
fn docker_profile_gpu_tests_run_the_image_with_the_nvidia_runtime() {
    let cfg = RenderConfig {
        profile: Profile::Docker,
        ..Default::default()
    };
    let mut r = with_tests();
    if let Some(t) = r.spec.test.as_mut() {
        t.entry_point = false;
        t.gpu_required = true;
        t.gpu_count = 1;
    }
    let job = render(&r, 1234, 1, PipelinePhase::Test, &cfg).unwrap();
    insta::assert_json_snapshot!(snapshot_value(&[job]));
}

#[test]
fn gpu_tests_are_unsupported_on_raw_exec() {
    let mut r = with_tests();
    if let Some(t) = r.spec.test.as_mut() {
        t.gpu_required = true;
    }
    let err = render(&r, 1, 1, PipelinePhase::Test, &RenderConfig::default()).unwrap_err();
    assert!(matches!(err, RenderError::Unsupported { .. }), "{err}");
}

#[test]
fn second_attempt_gets_its_own_job_ids_and_temp_tag() {
    let jobs = render_all(&with_tests(), 1234, 2, &RenderConfig::default()).unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "jobforge-team-a-myapp-42-1234-build-a2",
            "jobforge-team-a-myapp-42-1234-test-a2",
            "jobforge-team-a-myapp-42-1234-publish-a2"
        ]
    );
    insta::assert_json_snapshot!(snapshot_value(&jobs));
}

#[test]
fn test_phase_of_a_request_without_tests_is_an_error() {
    let err = render(
        &minimal(),
        1,
        1,
        PipelinePhase::Test,
        &RenderConfig::default(),
    )
    .unwrap_err();
    assert_eq!(err, RenderError::NoTests);
}

#[test]
fn dockerfile_path_escaping_the_repository_is_rejected() {
    let mut r = minimal();
    r.spec.dockerfile_path = Some("../etc/passwd".into());
    let err = render(&r, 1, 1, PipelinePhase::Build, &RenderConfig::default()).unwrap_err();
    assert!(err.to_string().contains("spec.dockerfile_path"), "{err}");
}

#[test]
fn tasks_get_their_namespaces_vault_policy_and_only_allowlisted_extra_policies() {
    let policies = |r: &BuildRequest, cfg: &RenderConfig| -> Vec<String> {
        let job = render(r, 1, 1, PipelinePhase::Test, cfg).unwrap();
        let v = serde_json::to_value(&job).unwrap();
        serde_json::from_value(v["TaskGroups"][0]["Tasks"][0]["Vault"]["Policies"].clone()).unwrap()
    };
    let mut r = with_tests();
    if let Some(t) = r.spec.test.as_mut() {
        t.vault_policies = vec!["aws-read".into(), "root".into()];
    }
    // Default: the namespace's own policy only, whatever the request names.
    assert_eq!(policies(&r, &RenderConfig::default()), ["jobforge-team-a"]);
    // The operator's template and allowlist.
    let cfg = RenderConfig {
        tenancy: jobforge_schema::tenancy::TenancyConfig {
            vault_policy: "ci-{namespace}".into(),
            vault_policies_allowed: BTreeMap::from([(
                "team-a".to_string(),
                vec!["aws-read".to_string()],
            )]),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(policies(&r, &cfg), ["ci-team-a", "aws-read"]);
    // Another namespace's allowlist is not this one's.
    r.metadata.namespace = "team-b".into();
    assert_eq!(policies(&r, &cfg), ["ci-team-b"]);
    let build = render(&with_credentials(), 1, 1, PipelinePhase::Build, &cfg).unwrap();
    let v = serde_json::to_value(&build).unwrap();
    assert_eq!(
        v["TaskGroups"][0]["Tasks"][0]["Vault"]["Policies"],
        serde_json::json!(["ci-team-a"])
    );
}

#[test]
fn every_script_is_snapshotted() {
    insta::assert_snapshot!("build_script", build::BUILD_SCRIPT);
    insta::assert_snapshot!("test_script", test::TEST_SCRIPT);
    insta::assert_snapshot!("image_test_script", test::IMAGE_TEST_SCRIPT);
    insta::assert_snapshot!("publish_script", publish::PUBLISH_SCRIPT);
}

#[test]
fn docker_profile_tests_commands_in_the_built_image_itself() {
    let cfg = RenderConfig {
        profile: Profile::Docker,
        docker_network_mode: Some("host".into()),
        ..Default::default()
    };
    let mut r = with_tests();
    if let Some(t) = r.spec.test.as_mut() {
        t.entry_point = false;
    }
    let job = render(&r, 1234, 1, PipelinePhase::Test, &cfg).unwrap();
    let task = serde_json::to_value(&job).unwrap()["TaskGroups"][0]["Tasks"][0].clone();
    assert_eq!(task["Driver"], "docker");
    let image = task["Config"]["image"].as_str().unwrap();
    assert!(image.contains("/jobforge-tmp/"), "the temp image: {image}");
    assert_eq!(task["Config"]["entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(task["Config"]["args"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        task["Env"]["JF_TEST_CMDS_B64"],
        format!(
            "-{} -{}",
            b64("/app/selftest"),
            b64("test -f /etc/os-release")
        )
    );
    assert!(task["Config"].get("runtime").is_none(), "{task:#}");
    assert!(
        task["Config"].get("network_mode").is_none(),
        "the user's image keeps bridge"
    );
    assert!(task["Config"].get("privileged").is_none());
    // Entry point and commands together: the tool image keeps their order (buildah mode).
    let both = render(&with_tests(), 1234, 1, PipelinePhase::Test, &cfg).unwrap();
    let task = serde_json::to_value(&both).unwrap()["TaskGroups"][0]["Tasks"][0].clone();
    assert_eq!(task["Config"]["image"], cfg.buildah_image.as_str());
    assert_eq!(task["Config"]["network_mode"], "host");
}

/// The strings Nomad interpolates in a job: every task env value, every string in the driver
/// config (command, args, image, ...), every template destination (Nomad `helper/args`,
/// `client/taskenv`). Paired with where they are.
fn interpolated_strings(job: &crate::nomad::job_spec::Job) -> Vec<(String, String)> {
    fn walk(at: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) => out.push((at.to_string(), s.clone())),
            Value::Array(a) => a.iter().for_each(|x| walk(at, x, out)),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| walk(&format!("{at}.{k}"), x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for task in job.task_groups.iter().flat_map(|g| &g.tasks) {
        for (k, v) in &task.env {
            out.push((format!("Env.{k}"), v.clone()));
        }
        walk("Config", &Value::Object(task.config.clone()), &mut out);
        for t in &task.templates {
            out.push(("Template.DestPath".into(), t.dest_path.clone()));
        }
    }
    out
}

/// Issue 14: a request whose every free-text field holds Nomad interpolation reaches no place
/// Nomad interpolates as such (the operator's `${NOMAD_ALLOC_DIR}` work root is the one
/// intended use), the values decode byte for byte, and no task gets `VAULT_TOKEN` in its
/// environment.
#[test]
fn no_request_value_reaches_a_task_where_nomad_interpolates_it() {
    let evil = "${VAULT_TOKEN} ${NOMAD_ALLOC_ID} ${attr.kernel.name}";
    let mut r = with_credentials();
    r.spec.repo_url = format!("https://git.example.com/{evil}.git");
    r.spec.git_ref = format!("main{evil}");
    r.spec.dockerfile_path = Some(format!("d{evil}/Containerfile"));
    r.spec.dockerfile_context = Some(format!("c{evil}"));
    r.spec.test = Some(TestSpec {
        commands: vec![format!("echo '{evil}'"), String::new()],
        env: BTreeMap::from([("GREETING".into(), evil.to_string())]),
        vault_secrets: vec![VaultSecret {
            path: format!("secret/data/jobforge/team-a/{evil}"),
            fields: BTreeMap::from([("f".into(), "SECRET".into())]),
        }],
        ..Default::default()
    });
    for entry_point in [true, false] {
        r.spec.test.as_mut().unwrap().entry_point = entry_point;
        for profile in [Profile::RawExec, Profile::Docker] {
            let cfg = RenderConfig {
                profile,
                ..Default::default()
            };
            for job in render_all(&r, 3, 1, &cfg).unwrap() {
                for (at, s) in interpolated_strings(&job) {
                    let operator = at == "Env.JF_WORK_ROOT" && s == "${NOMAD_ALLOC_DIR}";
                    assert!(
                        operator || !nomad_would_interpolate(&s),
                        "{} {at} = {s:?}",
                        job.id
                    );
                }
                let task = &job.task_groups[0].tasks[0];
                if let Some(v) = &task.vault {
                    assert!(!v.env, "{}: the vault block must set Env false", job.id);
                }
                let text = serde_json::to_string(&job).unwrap();
                assert!(!text.contains("${VAULT_TOKEN}"), "{text}");
            }
        }
    }
    let build = render(&r, 3, 1, PipelinePhase::Build, &RenderConfig::default()).unwrap();
    let env = &build.task_groups[0].tasks[0].env;
    let dec = |k: &str| {
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&env[k])
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(dec("JF_REPO_URL_B64"), r.spec.repo_url);
    assert_eq!(dec("JF_GIT_REF_B64"), r.spec.git_ref);
    assert_eq!(dec("JF_GIT_HOST_B64"), "git.example.com");
}

/// The scripts themselves hold nothing Nomad would replace (they travel in `args`).
#[test]
fn no_script_holds_text_nomad_interpolates() {
    for (name, text) in [
        ("build", build::BUILD_SCRIPT),
        ("test", test::TEST_SCRIPT),
        ("image test", test::IMAGE_TEST_SCRIPT),
        ("publish", publish::PUBLISH_SCRIPT),
        ("env wrapper", test::ENV_WRAPPER),
        ("git credential helper", build::GIT_CREDENTIAL_HELPER),
    ] {
        assert!(!nomad_would_interpolate(text), "{name}");
    }
    assert!(!build::GIT_CREDENTIAL_HELPER.contains('\''));
    assert!(test::TEST_SCRIPT.contains(test::ENV_WRAPPER));
    assert!(build::BUILD_SCRIPT.contains(build::GIT_CREDENTIAL_HELPER));
}

#[test]
fn nomad_would_interpolate_follows_nomads_regexp() {
    for yes in ["${A}", "x${attr.kernel.name}y", "${a ${B}", "${a-b.c_D}"] {
        assert!(nomad_would_interpolate(yes), "{yes}");
    }
    for no in [
        "${}",
        "${a b}",
        "$A",
        "${A",
        "${NOMAD_SECRETS_DIR:-x}",
        "{A}",
        "$ {A}",
    ] {
        assert!(!nomad_would_interpolate(no), "{no}");
    }
}

#[test]
fn test_env_names_with_the_scripts_prefixes_are_refused() {
    for name in ["JF_X", "jf_i", "jobforge_v", "JOBFORGE_F"] {
        let mut r = with_tests();
        r.spec.test.as_mut().unwrap().env = BTreeMap::from([(name.into(), "v".into())]);
        let err = render(&r, 1, 1, PipelinePhase::Test, &RenderConfig::default()).unwrap_err();
        assert!(err.to_string().contains("spec.test.env"), "{name}: {err}");
    }
}

#[test]
fn gpu_entry_point_refuses_an_env_value_nomad_would_interpolate() {
    let cfg = RenderConfig {
        profile: Profile::Docker,
        ..Default::default()
    };
    let mut r = with_tests();
    let t = r.spec.test.as_mut().unwrap();
    t.commands.clear();
    t.gpu_required = true;
    t.env = BTreeMap::from([("A".into(), "${VAULT_TOKEN}".into())]);
    let err = render(&r, 1, 1, PipelinePhase::Test, &cfg).unwrap_err();
    assert!(err.to_string().contains("spec.test.env.A"), "{err}");
    r.spec.test.as_mut().unwrap().env = BTreeMap::from([("A".into(), "$HOME {x}".into())]);
    render(&r, 1, 1, PipelinePhase::Test, &cfg).unwrap();
}

#[test]
fn spec_priority_is_the_nomad_job_priority_lowered_to_the_namespace_cap() {
    let mut r = minimal();
    let cfg = RenderConfig::default();
    let jobs = render_all(&r, 1, 1, &cfg).unwrap();
    assert!(jobs.iter().all(|j| j.priority.is_none()), "Nomad's default");
    r.spec.priority = Some(80);
    let jobs = render_all(&r, 1, 1, &cfg).unwrap();
    assert!(jobs.iter().all(|j| j.priority == Some(80)));
    let capped = RenderConfig {
        max_priority: Some(60),
        ..RenderConfig::default()
    };
    let jobs = render_all(&r, 1, 1, &capped).unwrap();
    assert!(jobs.iter().all(|j| j.priority == Some(60)));
}

/// The operator's registry mirrors reach the build task only as base64 registries.conf text
/// (never Nomad-interpolated, never in the script), and only the build task.
#[test]
fn registry_mirrors_become_the_build_tasks_registries_conf() {
    let cfg = RenderConfig {
        registry_mirrors: vec![
            RegistryMirror {
                prefix: "docker.io".into(),
                location: "mirror.internal:5000/hub".into(),
                insecure: false,
            },
            RegistryMirror {
                prefix: "docker.io".into(),
                location: "127.0.0.1:5000".into(),
                insecure: true,
            },
        ],
        ..Default::default()
    };
    let jobs = render_all(&with_tests(), 1, 1, &cfg).unwrap();
    insta::assert_json_snapshot!(snapshot_value(&jobs[..1]));
    let env = &jobs[0].task_groups[0].tasks[0].env;
    let conf = {
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&env["JF_REGISTRIES_CONF_B64"])
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        Some(conf),
        registries::registries_conf(&cfg.registry_mirrors).unwrap()
    );
    for job in &jobs[1..] {
        assert!(
            !job.task_groups[0].tasks[0]
                .env
                .contains_key("JF_REGISTRIES_CONF_B64"),
            "{}",
            job.id
        );
    }
    let plain = render_all(&with_tests(), 1, 1, &RenderConfig::default()).unwrap();
    assert!(
        !plain[0].task_groups[0].tasks[0]
            .env
            .contains_key("JF_REGISTRIES_CONF_B64")
    );
}
