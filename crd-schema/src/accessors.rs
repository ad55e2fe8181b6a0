//! Typed views of spec fields that are stored as strings (durations, resource numbers) and
//! defaults the controller applies. Validation ([`crate::validate()`]) guarantees they parse.

use std::time::Duration;

use crate::request::{BuildSpec, PhaseResources, ResourceLimits, TestSpec};
use crate::status::PipelinePhase;

/// The tags published when `image_tags` is empty.
pub const DEFAULT_TAGS: [&str; 1] = ["latest"];

impl BuildSpec {
    /// `build_timeout` parsed as humantime; `None` when absent (or unparsable, which validation rejects).
    pub fn build_timeout(&self) -> Option<Duration> {
        parse_duration(self.build_timeout.as_deref())
    }

    /// `ttl_after_finished` parsed as humantime; `None` when absent (the controller's default applies).
    pub fn ttl_after_finished(&self) -> Option<Duration> {
        parse_duration(self.ttl_after_finished.as_deref())
    }

    /// The tags to publish: `image_tags`, or `["latest"]` when empty.
    pub fn effective_tags(&self) -> Vec<String> {
        if self.image_tags.is_empty() {
            DEFAULT_TAGS.iter().map(|t| t.to_string()).collect()
        } else {
            self.image_tags.clone()
        }
    }

    /// Whether the test phase runs (a `test` with an entry point or at least one command).
    pub fn has_tests(&self) -> bool {
        self.test.as_ref().is_some_and(TestSpec::has_tests)
    }

    /// Resources of `phase` (see [`resolve`]), with `spec.test.resource_limits` as the test override.
    pub fn resources(
        &self,
        phase: PipelinePhase,
        defaults: ResolvedResources,
    ) -> ResolvedResources {
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
    /// `timeout` parsed as humantime; `None` when absent.
    pub fn timeout(&self) -> Option<Duration> {
        parse_duration(self.timeout.as_deref())
    }
}

fn parse_duration(s: Option<&str>) -> Option<Duration> {
    s.and_then(|s| humantime::parse_duration(s).ok())
}

/// Resources of one Nomad task: CPU in MHz, memory and ephemeral disk in MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResolvedResources {
    /// CPU in MHz.
    pub cpu_mhz: u64,
    /// Memory in MB.
    pub memory_mb: u64,
    /// Ephemeral disk in MB.
    pub disk_mb: u64,
}

/// Resolves the resources of `phase`, field by field, following the seed's rule: the phase's value
/// (for the test phase, `test_override` = `spec.test.resource_limits` first, then
/// `resource_limits.test`), then the global value (`resource_limits.cpu`/`memory`/`disk`), then
/// `defaults`. A value that does not parse as a decimal integer is skipped (validation rejects it).
pub fn resolve(
    limits: Option<&ResourceLimits>,
    test_override: Option<&PhaseResources>,
    phase: PipelinePhase,
    defaults: ResolvedResources,
) -> ResolvedResources {
    let phase_limits = limits.and_then(|l| match phase {
        PipelinePhase::Build => l.build.as_ref(),
        PipelinePhase::Test => l.test.as_ref(),
        PipelinePhase::Publish => l.publish.as_ref(),
    });
    let test_override = test_override.filter(|_| phase == PipelinePhase::Test);
    let pick =
        |field: fn(&PhaseResources) -> Option<&String>, global: Option<&String>, default: u64| {
            [
                test_override.and_then(field),
                phase_limits.and_then(field),
                global,
            ]
            .into_iter()
            .flatten()
            .find_map(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
        };
    ResolvedResources {
        cpu_mhz: pick(
            |r| r.cpu.as_ref(),
            limits.and_then(|l| l.cpu.as_ref()),
            defaults.cpu_mhz,
        ),
        memory_mb: pick(
            |r| r.memory.as_ref(),
            limits.and_then(|l| l.memory.as_ref()),
            defaults.memory_mb,
        ),
        disk_mb: pick(
            |r| r.disk.as_ref(),
            limits.and_then(|l| l.disk.as_ref()),
            defaults.disk_mb,
        ),
    }
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
        let b = resolve(Some(&limits), None, PipelinePhase::Build, DEFAULTS);
        assert_eq!(
            b,
            ResolvedResources {
                cpu_mhz: 6000,
                memory_mb: 4096,
                disk_mb: 2048
            }
        );
        let t = resolve(Some(&limits), None, PipelinePhase::Test, DEFAULTS);
        assert_eq!(
            t,
            ResolvedResources {
                cpu_mhz: 2000,
                memory_mb: 2048,
                disk_mb: 2048
            }
        );
        let p = resolve(None, None, PipelinePhase::Publish, DEFAULTS);
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
            resolve(Some(&limits), Some(&o), PipelinePhase::Test, DEFAULTS).cpu_mhz,
            900
        );
        assert_eq!(
            resolve(Some(&limits), Some(&o), PipelinePhase::Build, DEFAULTS).cpu_mhz,
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
        assert_eq!(spec.build_timeout(), Some(Duration::from_secs(1800)));
        assert!(!spec.has_tests());
    }
}
