//! The derived values of a spec, each with exactly one owner: the tags to publish, the phase
//! deadlines, the TTL, whether the test phase runs, and the resources of each phase. The
//! controller's state machine, its job renderer (`jobforge render` too) and the CLI call these;
//! nothing re-derives them. Validation ([`crate::validate()`]) guarantees the strings parse; the
//! accessors still report what does not, so a caller that skipped validation fails loudly.

use std::time::Duration;

use crate::request::{BuildSpec, PhaseResources, ResourceLimits, TestSpec};
use crate::status::PipelinePhase;

/// The tags published when `image_tags` is empty.
pub const DEFAULT_TAGS: [&str; 1] = ["latest"];

impl BuildSpec {
    /// `build_timeout` parsed as humantime: `Ok(None)` when absent (the controller's default
    /// applies). Errors: the problem line `spec.build_timeout: <why> (a duration such as 30m or
    /// 1h30m)`.
    pub fn build_timeout(&self) -> Result<Option<Duration>, String> {
        parse_duration("spec.build_timeout", self.build_timeout.as_deref())
    }

    /// Whether the build checks out git submodules: `spec.submodules`, `true` when absent.
    pub fn submodules(&self) -> bool {
        self.submodules.unwrap_or(true)
    }

    /// `ttl_after_finished` parsed as humantime: `Ok(None)` when absent (the controller's default
    /// applies). Errors as [`BuildSpec::build_timeout`], for `spec.ttl_after_finished`.
    pub fn ttl_after_finished(&self) -> Result<Option<Duration>, String> {
        parse_duration(
            "spec.ttl_after_finished",
            self.ttl_after_finished.as_deref(),
        )
    }

    /// `test.timeout` parsed as humantime: `Ok(None)` when absent. Errors as
    /// [`BuildSpec::build_timeout`], for `spec.test.timeout`.
    pub fn test_timeout(&self) -> Result<Option<Duration>, String> {
        self.test.as_ref().map_or(Ok(None), TestSpec::timeout)
    }

    /// The deadline the request sets for `phase` (`build_timeout`, `test.timeout`; a request
    /// cannot set the publish deadline), counted from the phase's start; `None` when it sets none
    /// or the value does not parse: the controller's default for the phase applies.
    pub fn phase_timeout(&self, phase: PipelinePhase) -> Option<Duration> {
        match phase {
            PipelinePhase::Build => self.build_timeout().ok().flatten(),
            PipelinePhase::Test => self.test_timeout().ok().flatten(),
            PipelinePhase::Publish => None,
        }
    }

    /// Every duration of the spec that does not parse, one problem line each
    /// (`build_timeout`, `test.timeout`, `ttl_after_finished`, in that order); empty when all do.
    pub fn duration_problems(&self) -> Vec<String> {
        [
            self.build_timeout().err(),
            self.test_timeout().err(),
            self.ttl_after_finished().err(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The tags to publish: `image_tags`, or [`DEFAULT_TAGS`] when empty. Never empty.
    pub fn effective_tags(&self) -> Vec<String> {
        if self.image_tags.is_empty() {
            DEFAULT_TAGS.iter().map(|t| t.to_string()).collect()
        } else {
            self.image_tags.clone()
        }
    }

    /// Whether the test phase runs (a `test` with an entry point or at least one command,
    /// [`TestSpec::has_tests`]); without it the pipeline is build → publish.
    pub fn has_tests(&self) -> bool {
        self.test.as_ref().is_some_and(TestSpec::has_tests)
    }

    /// Resources of `phase` (see [`resolve`]), with `spec.test.resource_limits` as the test
    /// override. Errors: [`InvalidResource`] as [`resolve`].
    pub fn resources(
        &self,
        phase: PipelinePhase,
        defaults: ResolvedResources,
    ) -> Result<ResolvedResources, InvalidResource> {
        let test_override = self.test.as_ref().and_then(|t| t.resource_limits.as_ref());
        resolve(
            self.resource_limits.as_ref(),
            test_override,
            phase,
            defaults,
        )
    }
}

impl TestSpec {
    /// `timeout` parsed as humantime: `Ok(None)` when absent. Errors: the problem line
    /// `spec.test.timeout: <why> (a duration such as 30m or 1h30m)`.
    pub fn timeout(&self) -> Result<Option<Duration>, String> {
        parse_duration("spec.test.timeout", self.timeout.as_deref())
    }
}

fn parse_duration(field: &str, value: Option<&str>) -> Result<Option<Duration>, String> {
    match value {
        None => Ok(None),
        Some(v) => humantime::parse_duration(v)
            .map(Some)
            .map_err(|e| format!("{field}: {e} (a duration such as 30m or 1h30m)")),
    }
}

/// Resources of one Nomad task: CPU in MHz, memory and ephemeral disk in MB (Nomad's `int`s,
/// hence `i64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResolvedResources {
    /// CPU in MHz.
    pub cpu_mhz: i64,
    /// Memory in MB.
    pub memory_mb: i64,
    /// Ephemeral disk in MB.
    pub disk_mb: i64,
}

/// A resource value that is not a positive decimal integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: invalid value {value:?}; expected a positive decimal integer")]
pub struct InvalidResource {
    /// JSON path of the field, for example `spec.resource_limits.build.cpu`.
    pub field: String,
    /// The value.
    pub value: String,
}

/// Resolves the resources of `phase`, field by field, following the seed's rule: the phase's value
/// (for the test phase, `test_override` = `spec.test.resource_limits` first, then
/// `resource_limits.test`), then the global value (`resource_limits.cpu`/`memory`/`disk`), then
/// `defaults`. The first value present is taken.
///
/// Errors: [`InvalidResource`] naming the field when the value taken is not a positive decimal
/// integer (validation rejects such a spec first).
pub fn resolve(
    limits: Option<&ResourceLimits>,
    test_override: Option<&PhaseResources>,
    phase: PipelinePhase,
    defaults: ResolvedResources,
) -> Result<ResolvedResources, InvalidResource> {
    let phase_limits = limits.and_then(|l| match phase {
        PipelinePhase::Build => l.build.as_ref(),
        PipelinePhase::Test => l.test.as_ref(),
        PipelinePhase::Publish => l.publish.as_ref(),
    });
    let test_override = test_override.filter(|_| phase == PipelinePhase::Test);
    let pick = |key: &str,
                field: fn(&PhaseResources) -> Option<&String>,
                global: Option<&String>,
                default: i64| {
        let candidates = [
            test_override
                .and_then(field)
                .map(|v| (format!("spec.test.resource_limits.{key}"), v)),
            phase_limits
                .and_then(field)
                .map(|v| (format!("spec.resource_limits.{phase}.{key}"), v)),
            global.map(|v| (format!("spec.resource_limits.{key}"), v)),
        ];
        match candidates.into_iter().flatten().next() {
            None => Ok(default),
            Some((field, v)) => match v.trim().parse::<i64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(InvalidResource {
                    field,
                    value: v.clone(),
                }),
            },
        }
    };
    Ok(ResolvedResources {
        cpu_mhz: pick(
            "cpu",
            |r| r.cpu.as_ref(),
            limits.and_then(|l| l.cpu.as_ref()),
            defaults.cpu_mhz,
        )?,
        memory_mb: pick(
            "memory",
            |r| r.memory.as_ref(),
            limits.and_then(|l| l.memory.as_ref()),
            defaults.memory_mb,
        )?,
        disk_mb: pick(
            "disk",
            |r| r.disk.as_ref(),
            limits.and_then(|l| l.disk.as_ref()),
            defaults.disk_mb,
        )?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DEFAULTS: ResolvedResources = ResolvedResources {
        cpu_mhz: 500,
        memory_mb: 1024,
        disk_mb: 2048,
    };

    fn phase(cpu: Option<&str>, memory: Option<&str>) -> PhaseResources {
        PhaseResources {
            cpu: cpu.map(Into::into),
            memory: memory.map(Into::into),
            disk: None,
        }
    }

    #[test]
    fn resolution_prefers_phase_then_global_then_default() {
        let limits = ResourceLimits {
            cpu: Some("2000".into()),
            memory: Some("4096".into()),
            build: Some(phase(Some("6000"), None)),
            test: Some(phase(None, Some("2048"))),
            ..Default::default()
        };
        let b = resolve(Some(&limits), None, PipelinePhase::Build, DEFAULTS).unwrap();
        assert_eq!(
            b,
            ResolvedResources {
                cpu_mhz: 6000,
                memory_mb: 4096,
                disk_mb: 2048
            }
        );
        let t = resolve(Some(&limits), None, PipelinePhase::Test, DEFAULTS).unwrap();
        assert_eq!(
            t,
            ResolvedResources {
                cpu_mhz: 2000,
                memory_mb: 2048,
                disk_mb: 2048
            }
        );
        let p = resolve(None, None, PipelinePhase::Publish, DEFAULTS).unwrap();
        assert_eq!(p, DEFAULTS);
    }

    #[test]
    fn test_spec_override_wins_for_the_test_phase_only() {
        let limits = ResourceLimits {
            test: Some(phase(Some("1500"), None)),
            ..Default::default()
        };
        let o = phase(Some("900"), None);
        assert_eq!(
            resolve(Some(&limits), Some(&o), PipelinePhase::Test, DEFAULTS)
                .unwrap()
                .cpu_mhz,
            900
        );
        assert_eq!(
            resolve(Some(&limits), Some(&o), PipelinePhase::Build, DEFAULTS)
                .unwrap()
                .cpu_mhz,
            500
        );
    }

    #[test]
    fn empty_tags_mean_latest_and_durations_parse() {
        let spec = BuildSpec {
            build_timeout: Some("30m".into()),
            ..Default::default()
        };
        assert_eq!(spec.effective_tags(), vec!["latest".to_string()]);
        assert_eq!(spec.build_timeout(), Ok(Some(Duration::from_secs(1800))));
        assert_eq!(
            spec.phase_timeout(PipelinePhase::Build),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(spec.phase_timeout(PipelinePhase::Test), None);
        assert_eq!(spec.phase_timeout(PipelinePhase::Publish), None);
        assert!(spec.duration_problems().is_empty());
        assert!(!spec.has_tests());
    }

    #[test]
    fn unparsable_durations_are_problems_and_no_deadline() {
        let spec = BuildSpec {
            build_timeout: Some("soon".into()),
            ttl_after_finished: Some("1x".into()),
            test: Some(TestSpec {
                timeout: Some("10m".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(spec.phase_timeout(PipelinePhase::Build), None);
        assert_eq!(
            spec.phase_timeout(PipelinePhase::Test),
            Some(Duration::from_secs(600))
        );
        let p = spec.duration_problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("spec.build_timeout: "), "{p:?}");
        assert!(p[1].starts_with("spec.ttl_after_finished: "), "{p:?}");
    }

    #[test]
    fn the_value_taken_must_be_a_positive_integer_and_the_error_names_its_field() {
        let limits = ResourceLimits {
            cpu: Some("0".into()),
            build: Some(phase(Some("abc"), None)),
            ..Default::default()
        };
        let e = resolve(Some(&limits), None, PipelinePhase::Build, DEFAULTS).unwrap_err();
        assert_eq!(e.field, "spec.resource_limits.build.cpu");
        let e = resolve(Some(&limits), None, PipelinePhase::Publish, DEFAULTS).unwrap_err();
        assert_eq!(e.field, "spec.resource_limits.cpu");
        let o = phase(Some("-5"), None);
        let e = resolve(None, Some(&o), PipelinePhase::Test, DEFAULTS).unwrap_err();
        assert_eq!(e.field, "spec.test.resource_limits.cpu");
    }
}
