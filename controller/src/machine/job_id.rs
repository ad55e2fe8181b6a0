//! Deterministic Nomad job IDs: the same (request, generation, phase, attempt) always maps to the
//! same ID, so a registration repeated after a crash or by a deposed leader is idempotent
//! (DESIGN.md § Fencing).

use jobforge_schema::PipelinePhase;
use sha2::{Digest, Sha256};

/// Longest job ID we produce. Nomad itself accepts longer IDs, but 128 keeps them readable in
/// its UI and within common path-length limits.
pub const MAX_JOB_ID_LEN: usize = 128;

/// The Nomad job ID of one phase of one attempt:
/// `jobforge-<namespace>-<name>-<generation>-<phase>` for attempt 1 (and 0), and
/// `jobforge-<namespace>-<name>-<generation>-<phase>-a<attempt>` after.
///
/// Namespace and name are DNS labels (validated by the schema), so the ID has no spaces or NUL,
/// as Nomad requires. When the ID would exceed [`MAX_JOB_ID_LEN`] (two long labels and a large
/// generation), `<namespace>-<name>` is shortened to a prefix of itself followed by the first 16
/// hex digits of SHA-256(`<namespace>/<name>`), keeping the generation/phase/attempt suffix intact.
///
/// The ID alone does not identify the request unambiguously (`a` + `b-1` and `a-b` + `1` give the
/// same text); jobs also carry Meta `jobforge.request`, which is what to compare when in doubt.
pub fn job_id(
    namespace: &str,
    name: &str,
    generation: u64,
    phase: PipelinePhase,
    attempt: u32,
) -> String {
    let suffix = if attempt <= 1 {
        format!("-{generation}-{}", phase.as_str())
    } else {
        format!("-{generation}-{}-a{attempt}", phase.as_str())
    };
    let full = format!("jobforge-{namespace}-{name}{suffix}");
    if full.len() <= MAX_JOB_ID_LEN {
        return full;
    }
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hash = hex::encode(&digest[..8]);
    let ident = format!("{namespace}-{name}");
    // "jobforge-" + prefix + "-" + hash + suffix must fit.
    let room = MAX_JOB_ID_LEN.saturating_sub("jobforge-".len() + 1 + hash.len() + suffix.len());
    let prefix: String = ident.chars().take(room).collect();
    format!("jobforge-{prefix}-{hash}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_attempt_has_no_attempt_suffix_and_later_ones_do() {
        assert_eq!(
            job_id("team-a", "app", 42, PipelinePhase::Build, 1),
            "jobforge-team-a-app-42-build"
        );
        assert_eq!(
            job_id("team-a", "app", 42, PipelinePhase::Test, 3),
            "jobforge-team-a-app-42-test-a3"
        );
    }

    #[test]
    fn long_labels_are_shortened_deterministically_and_stay_distinct() {
        let ns = "n".repeat(63);
        let a = "a".repeat(63);
        let b = format!("{}b", "a".repeat(62));
        let ia = job_id(&ns, &a, u64::MAX, PipelinePhase::Publish, 10);
        let ib = job_id(&ns, &b, u64::MAX, PipelinePhase::Publish, 10);
        assert!(ia.len() <= MAX_JOB_ID_LEN, "{ia} is {} long", ia.len());
        assert!(ia.ends_with(&format!("-{}-publish-a10", u64::MAX)));
        assert_ne!(ia, ib);
        assert_eq!(ia, job_id(&ns, &a, u64::MAX, PipelinePhase::Publish, 10));
        assert!(!ia.contains(' ') && !ia.contains('\0'));
    }
}
