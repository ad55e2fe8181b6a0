//! Log markers: the lines a phase's task prints on stdout to report what it learned.
//!
//! Grammar (one marker per line, at the very start of the line; a trailing `\r` is ignored):
//!
//! ```text
//! ::jobforge::commit=<40 or 64 lowercase hex>       the commit `git_ref` resolved to
//! ::jobforge::digest=sha256:<64 lowercase hex>      manifest digest from buildah's --digestfile
//! ::jobforge::reason=<Reason>                       a failure reason from the vocabulary
//! ::jobforge::failed-command=<n>|entry_point        the test command (1-based) or the entry point that failed
//! ::jobforge::base-image=<name>@sha256:<64 hex>     a base image the build used (one line each)
//! ```
//!
//! `base-image` lines accumulate (duplicates dropped, at most [`MAX_BASE_IMAGES`]); `<name>` is
//! 1..=[`MAX_BASE_NAME`] bytes of printable ASCII without spaces. The build script prints them
//! after `buildah bud`, from the build's own image storage (`jobforge/build.rs`), never from
//! the build's output.
//!
//! Anything else (including malformed markers) is ordinary output and ignored. When a marker
//! occurs more than once, the last well-formed occurrence wins, except `commit`, where the FIRST
//! wins: the build script prints it after the checkout and before any user code (the
//! Containerfile's `RUN` steps) runs, so a later `::jobforge::commit=` line is user output and
//! never overrides it (issue 14). The build script also indents every line of `buildah bud`'s
//! output that would start with the marker prefix, and the state machine takes the commit only
//! from the build phase's output (`rules/pipeline.rs`, `succeeded_phase`). Input is arbitrary
//! bytes (task output need not be UTF-8); the parser never fails.

use jobforge_schema::Reason;

const PREFIX: &[u8] = b"::jobforge::";

/// Most `base-image` markers kept (a Containerfile with more stages is cut there).
pub const MAX_BASE_IMAGES: usize = 64;
/// Longest `base-image` name kept, bytes.
pub const MAX_BASE_NAME: usize = 512;

/// What the markers of one phase's output said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Markers {
    /// Full commit SHA (40 hex for SHA-1 repositories, 64 for SHA-256), lowercase.
    pub commit_sha: Option<String>,
    /// Manifest digest `sha256:<64 lowercase hex>`.
    pub digest: Option<String>,
    /// A reason the task reported (for example `GitRevisionNotFound` when `git_ref` is missing).
    pub reason: Option<Reason>,
    /// What the test phase ran when it failed.
    pub failed_command: Option<FailedCommand>,
    /// `(name, digest)` of every base image, in order of first appearance.
    pub base_images: Vec<(String, String)>,
}

/// The test step a `::jobforge::failed-command=` marker names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedCommand {
    /// `spec.test.commands[n - 1]` (the marker's `n`, 1-based, at least 1).
    Command(usize),
    /// The image's entry point (`spec.test.entry_point`).
    EntryPoint,
}

/// Parses the markers in `output` (see the module docs for the grammar).
pub fn parse_markers(output: &[u8]) -> Markers {
    let mut m = Markers::default();
    for line in output.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(PREFIX) else {
            continue;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            continue;
        };
        let Some((name, value)) = rest.split_once('=') else {
            continue;
        };
        match name {
            "commit"
                if m.commit_sha.is_none()
                    && is_lower_hex(value)
                    && (value.len() == 40 || value.len() == 64) =>
            {
                m.commit_sha = Some(value.to_string());
            }
            "digest" if is_sha256_digest(value) => {
                m.digest = Some(value.to_string());
            }
            "base-image" => {
                if let Some((name, digest)) = value.rsplit_once('@')
                    && !name.is_empty()
                    && name.len() <= MAX_BASE_NAME
                    && name.bytes().all(|b| b.is_ascii_graphic())
                    && is_sha256_digest(digest)
                    && m.base_images.len() < MAX_BASE_IMAGES
                    && !m.base_images.iter().any(|(n, d)| n == name && d == digest)
                {
                    m.base_images.push((name.to_string(), digest.to_string()));
                }
            }
            "reason" => {
                if let Some(r) = Reason::ALL.into_iter().find(|r| r.as_str() == value) {
                    m.reason = Some(r);
                }
            }
            "failed-command" if value == "entry_point" => {
                m.failed_command = Some(FailedCommand::EntryPoint);
            }
            "failed-command" => {
                if let Some(n) = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 1 && value.bytes().all(|b| b.is_ascii_digit()))
                {
                    m.failed_command = Some(FailedCommand::Command(n));
                }
            }
            _ => {}
        }
    }
    m
}

fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && is_lower_hex(hex))
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn base_images_accumulate_deduplicated_and_malformed_ones_are_ignored() {
        let d1 = format!("sha256:{}", "a".repeat(64));
        let d2 = format!("sha256:{}", "b".repeat(64));
        let out = format!(
            "::jobforge::base-image=reg:5000/one:1@{d1}\n\
             ::jobforge::base-image=reg:5000/two@{d2}\r\n\
             ::jobforge::base-image=reg:5000/one:1@{d1}\n\
             ::jobforge::base-image=@{d1}\n\
             ::jobforge::base-image=has space@{d1}\n\
             ::jobforge::base-image=x@sha256:ABC\n\
             ::jobforge::base-image=no-digest\n\
              \x20::jobforge::base-image=indented@{d1}\n"
        );
        let m = parse_markers(out.as_bytes());
        assert_eq!(
            m.base_images,
            vec![
                ("reg:5000/one:1".to_string(), d1.clone()),
                ("reg:5000/two".to_string(), d2)
            ]
        );
        let many: String = (0..MAX_BASE_IMAGES + 5)
            .map(|i| format!("::jobforge::base-image=r/i{i}@{d1}\n"))
            .collect();
        assert_eq!(
            parse_markers(many.as_bytes()).base_images.len(),
            MAX_BASE_IMAGES
        );
    }

    #[test]
    fn markers_are_found_among_ordinary_output() {
        let out = format!(
            "Cloning into 'src'...\n::jobforge::commit={SHA}\r\nSTEP 1/3: FROM alpine\n::jobforge::digest={DIGEST}\ndone\n"
        );
        let m = parse_markers(out.as_bytes());
        assert_eq!(m.commit_sha.as_deref(), Some(SHA));
        assert_eq!(m.digest.as_deref(), Some(DIGEST));
        assert_eq!(m.reason, None);
    }

    #[test]
    fn reason_marker_names_a_vocabulary_reason() {
        let m = parse_markers(
            b"fatal: couldn't find remote ref\n::jobforge::reason=GitRevisionNotFound\n",
        );
        assert_eq!(m.reason, Some(Reason::GitRevisionNotFound));
        assert_eq!(parse_markers(b"::jobforge::reason=Bogus\n").reason, None);
    }

    #[test]
    fn failed_command_marker_names_a_command_or_the_entry_point() {
        let m = parse_markers(b"jobforge: test command 2 of 3\n::jobforge::failed-command=2\n");
        assert_eq!(m.failed_command, Some(FailedCommand::Command(2)));
        let m = parse_markers(b"::jobforge::failed-command=entry_point\n");
        assert_eq!(m.failed_command, Some(FailedCommand::EntryPoint));
        for bad in ["0", "-1", "+2", "x", ""] {
            let line = format!("::jobforge::failed-command={bad}\n");
            assert_eq!(parse_markers(line.as_bytes()).failed_command, None, "{bad}");
        }
    }

    #[test]
    fn malformed_or_indented_markers_are_ignored() {
        let out = format!(
            "  ::jobforge::commit={SHA}\n::jobforge::commit=XYZ\n::jobforge::digest=sha256:abc\n::jobforge::digest={}\necho ::jobforge::reason=TestFailed\n",
            DIGEST.to_uppercase()
        );
        assert_eq!(parse_markers(out.as_bytes()), Markers::default());
    }

    #[test]
    fn the_last_well_formed_marker_wins_except_commit_where_the_first_does() {
        let other = "f".repeat(64);
        let out = format!(
            "::jobforge::commit=nope\n::jobforge::commit={SHA}\n::jobforge::commit={other}\n::jobforge::digest={DIGEST}\n::jobforge::digest=sha256:{other}\n"
        );
        let m = parse_markers(out.as_bytes());
        assert_eq!(m.commit_sha.as_deref(), Some(SHA));
        assert_eq!(m.digest, Some(format!("sha256:{other}")));
    }

    fn noise_line() -> impl Strategy<Value = String> {
        // Ordinary output never starts with the marker prefix.
        "[^:\n][^\n]{0,60}".prop_map(|s| s)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_markers(&bytes);
        }

        #[test]
        fn markers_round_trip_through_noise(
            before in proptest::collection::vec(noise_line(), 0..8),
            after in proptest::collection::vec(noise_line(), 0..8),
            sha in "[0-9a-f]{40}|[0-9a-f]{64}",
            hex in "[0-9a-f]{64}",
            reason in proptest::sample::select(Reason::ALL.to_vec()),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut lines = before.clone();
            lines.push(format!("::jobforge::commit={sha}"));
            lines.push(format!("::jobforge::digest=sha256:{hex}"));
            lines.push(format!("::jobforge::reason={reason}"));
            lines.extend(after.clone());
            let text = lines.join(nl);
            let m = parse_markers(text.as_bytes());
            prop_assert_eq!(m.commit_sha, Some(sha));
            prop_assert_eq!(m.digest, Some(format!("sha256:{hex}")));
            prop_assert_eq!(m.reason, Some(reason));
        }

        /// Whatever user code prints after the build's own commit marker (well-formed markers
        /// included), the commit stays the first one.
        #[test]
        fn later_commit_markers_never_override_the_first(
            first in "[0-9a-f]{40}",
            later in proptest::collection::vec(
                prop_oneof![noise_line(), "[0-9a-f]{40}|[0-9a-f]{64}".prop_map(|s| format!("::jobforge::commit={s}"))],
                0..12,
            ),
        ) {
            let mut lines = vec![format!("::jobforge::commit={first}")];
            lines.extend(later);
            let m = parse_markers(lines.join("\n").as_bytes());
            prop_assert_eq!(m.commit_sha, Some(first));
        }
    }
}
