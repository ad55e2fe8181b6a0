//! Deterministic Nomad job IDs: the same (request, generation, phase, attempt) always maps to the
//! same ID, so a registration repeated after a crash or by a deposed leader is idempotent
//! (`docs/consul-nomad-vault-semantics.md` § Fencing).
//!
//! This module is the one owner of the ID rule: [`job_id`] makes an ID (the state machine,
//! `jobspec::render` and so `jobforge render` all call it), [`request_job_prefix`] and
//! [`generation_job_prefix`] give the `?prefix=` to list a request's jobs with, and
//! [`parse_job_id`] tells whether a listed ID really is one of that request's.

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
    let full = format!("{HEAD}{namespace}-{name}{suffix}");
    if full.len() <= MAX_JOB_ID_LEN {
        return full;
    }
    let hash = ident_hash(namespace, name);
    let ident = format!("{namespace}-{name}");
    // "jobforge-" + prefix + "-" + hash + suffix must fit.
    let room = MAX_JOB_ID_LEN.saturating_sub(HEAD.len() + 1 + hash.len() + suffix.len());
    let prefix: String = ident.chars().take(room).collect();
    format!("{HEAD}{prefix}-{hash}{suffix}")
}

/// Every job ID starts with this.
const HEAD: &str = "jobforge-";

/// Longest suffix [`job_id`] appends: `-<u64::MAX>-publish-a<u32::MAX>`.
const MAX_SUFFIX_LEN: usize = 1 + 20 + 1 + 7 + 2 + 10;

/// Characters of `<namespace>-<name>` that every ID of the request keeps, capped or not: a
/// shortened ID keeps at least this many (its room is smallest for the longest suffix).
const KEPT_IDENT_LEN: usize = MAX_JOB_ID_LEN - HEAD.len() - 1 - 16 - MAX_SUFFIX_LEN;

/// First 16 hex digits of SHA-256(`<namespace>/<name>`): what a shortened ID keeps to stay unique.
fn ident_hash(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    hex::encode(&digest[..8])
}

/// A `?prefix=` that lists every job of the request (`GET /v1/jobs?prefix=`), shortened or not:
/// `jobforge-<namespace>-<name>-` when no ID of the request can be shortened, else the part of
/// it every shortened ID keeps. Jobs of other requests may match too (`a` + `b-1` and `a-b` +
/// `1`): filter with [`parse_job_id`], or compare the job's Meta `jobforge.request`.
pub fn request_job_prefix(namespace: &str, name: &str) -> String {
    let ident = format!("{namespace}-{name}");
    if ident.len() <= KEPT_IDENT_LEN {
        format!("{HEAD}{ident}-")
    } else {
        let kept: String = ident.chars().take(KEPT_IDENT_LEN).collect();
        format!("{HEAD}{kept}")
    }
}

/// A `?prefix=` that lists every job of one generation of the request:
/// `jobforge-<namespace>-<name>-<generation>-` when no ID of the request can be shortened, else
/// [`request_job_prefix`]. Jobs of other requests or generations may match too: filter with
/// [`parse_job_id`].
pub fn generation_job_prefix(namespace: &str, name: &str, generation: u64) -> String {
    let ident = format!("{namespace}-{name}");
    if ident.len() <= KEPT_IDENT_LEN {
        format!("{HEAD}{ident}-{generation}-")
    } else {
        request_job_prefix(namespace, name)
    }
}

/// What a job ID of a known request encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobIdParts {
    /// Generation of the spec.
    pub generation: u64,
    /// Pipeline phase.
    pub phase: PipelinePhase,
    /// Attempt (1-based; an ID without `-a<n>` is attempt 1).
    pub attempt: u32,
}

/// The generation, phase and attempt of `id` if it is a job ID of request `<namespace>/<name>`
/// (exactly what [`job_id`] makes for them), else `None`. Exact: a listing by
/// [`request_job_prefix`] that also matched another request's jobs is filtered with this.
pub fn parse_job_id(namespace: &str, name: &str, id: &str) -> Option<JobIdParts> {
    let rest = id.strip_prefix(HEAD)?;
    let ident = format!("{namespace}-{name}");
    let hash = format!("-{}-", ident_hash(namespace, name));
    let tails = [
        rest.strip_prefix(ident.as_str())
            .and_then(|r| r.strip_prefix('-')),
        rest.split_once(hash.as_str()).map(|(_, t)| t),
    ];
    tails.into_iter().flatten().find_map(|tail| {
        let (generation, rest) = tail.split_once('-')?;
        let generation: u64 = generation.parse().ok()?;
        let (phase, attempt) = match rest.split_once("-a") {
            Some((p, a)) => (p, a.parse().ok()?),
            None => (rest, 1),
        };
        let phase = PipelinePhase::parse(phase)?;
        // Only what `job_id` itself makes counts (no `+7`, no `-a1`, no other request's text).
        (job_id(namespace, name, generation, phase, attempt) == id).then_some(JobIdParts {
            generation,
            phase,
            attempt,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = String> {
        // DNS labels, up to 63 characters, as the schema allows.
        "[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
    }

    fn phase() -> impl Strategy<Value = PipelinePhase> {
        prop::sample::select(PipelinePhase::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn ids_are_capped_listed_by_their_prefixes_and_parse_back(
            ns in label(), name in label(), generation in any::<u64>(), phase in phase(),
            attempt in 1u32..=u32::MAX,
        ) {
            let id = job_id(&ns, &name, generation, phase, attempt);
            prop_assert!(id.len() <= MAX_JOB_ID_LEN, "{} is {} long", id, id.len());
            prop_assert!(id.starts_with(&request_job_prefix(&ns, &name)));
            prop_assert!(id.starts_with(&generation_job_prefix(&ns, &name, generation)));
            prop_assert_eq!(
                parse_job_id(&ns, &name, &id),
                Some(JobIdParts { generation, phase, attempt })
            );
        }

        #[test]
        fn another_requests_or_generations_id_does_not_parse_as_ours(
            ns in label(), name in label(), other in label(), generation in 0u64..1000,
            phase in phase(),
        ) {
            prop_assume!(other != name);
            let theirs = job_id(&ns, &other, generation, phase, 1);
            prop_assert_eq!(parse_job_id(&ns, &name, &theirs), None);
        }
    }

    #[test]
    fn a_name_that_extends_ours_is_listed_but_not_parsed_as_ours() {
        // `a`/`b` generation 5 and `a`/`b-5` share the text `jobforge-a-b-5-`.
        let theirs = job_id("a", "b-5", 7, PipelinePhase::Build, 1);
        assert!(theirs.starts_with(&generation_job_prefix("a", "b", 5)));
        assert_eq!(parse_job_id("a", "b", &theirs), None);
        assert_eq!(
            parse_job_id("a", "b-5", &theirs),
            Some(JobIdParts {
                generation: 7,
                phase: PipelinePhase::Build,
                attempt: 1
            })
        );
        assert_eq!(parse_job_id("a", "b", "jobforge-a-b-5-build-a1"), None);
        assert_eq!(parse_job_id("a", "b", "jobforge-a-b-+5-build"), None);
    }

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
