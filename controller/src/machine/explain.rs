//! The line of a failed task's output that explains the failure (issue 18, item 1): Nomad's
//! task events only say that the task exited (`Terminated`, exit code); what went wrong is in
//! the output the tools wrote.
//!
//! Which lines explain (the tools the fixed task scripts run, `controller/src/jobspec/`):
//! - buildah and skopeo print their fatal error on stderr as `Error: <what>` (for a failing
//!   `RUN`: `Error: building at STEP "RUN …": exit status 1`; cobra's `Error:` prefix);
//! - git prints `fatal: <what>` (for example `fatal: unable to access '<url>': Failed to connect…`,
//!   `fatal: repository '<url>' not found`) and sometimes `error: <what>` before it.
//!
//! The task stops at the first failure, so the last such line is the one that ended it. The line is
//! returned as text: lossy UTF-8, control characters (ANSI colour codes included) removed, at most
//! [`MAX_EXPLANATION_CHARS`] characters. Input is arbitrary bytes; the function never fails.

/// Longest explanation kept, in characters (the rest is cut and `…` appended).
pub const MAX_EXPLANATION_CHARS: usize = 500;

/// Line prefixes (ASCII case-insensitive, after leading blanks) that state a tool's fatal error.
const ERROR_PREFIXES: [&str; 2] = ["error:", "fatal:"];

/// The last line of `output` that states a tool's fatal error (see the module docs), cleaned;
/// `None` when there is none.
pub fn error_line(output: &[u8]) -> Option<String> {
    output
        .split(|&b| b == b'\n')
        .rev()
        .map(|line| clean(&String::from_utf8_lossy(line)))
        .find(|line| {
            ERROR_PREFIXES.iter().any(|p| {
                line.len() > p.len()
                    && line.is_char_boundary(p.len())
                    && line[..p.len()].eq_ignore_ascii_case(p)
            })
        })
}

/// Removes ANSI escape sequences and other control characters, trims blanks, caps the length.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in 0x40..=0x7e; other escapes: skip one char.
            if chars.next_if_eq(&'[').is_some() {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' {
            out.push(' ');
        } else if !c.is_control() {
            out.push(c);
        }
    }
    let trimmed = out.trim();
    if trimmed.chars().count() > MAX_EXPLANATION_CHARS {
        let mut cut: String = trimmed.chars().take(MAX_EXPLANATION_CHARS).collect();
        cut.push('…');
        cut
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buildahs_error_line_is_found_after_the_steps() {
        let out = b"STEP 1/2: FROM alpine\nSTEP 2/2: RUN false\nsubprocess exited with status 1\n\
            Error: building at STEP \"RUN false\": exit status 1\n";
        assert_eq!(
            error_line(out).as_deref(),
            Some("Error: building at STEP \"RUN false\": exit status 1")
        );
    }

    #[test]
    fn gits_fatal_line_is_found_and_the_last_error_wins() {
        let out = b"jobforge: cloning the repository\r\n\
            error: first\r\n\
            fatal: unable to access 'https://127.0.0.1:1/nope.git/': Failed to connect to 127.0.0.1 port 1\r\n\
            jobforge: git clone failed; check repo_url and git_credentials_path\n";
        assert_eq!(
            error_line(out).as_deref(),
            Some(
                "fatal: unable to access 'https://127.0.0.1:1/nope.git/': Failed to connect to 127.0.0.1 port 1"
            )
        );
    }

    #[test]
    fn output_without_an_error_line_explains_nothing() {
        assert_eq!(error_line(b""), None);
        assert_eq!(error_line(b"all good\nerrors: 0\nError:\n  \n"), None);
    }

    #[test]
    fn colour_codes_and_control_characters_are_removed_and_long_lines_cut() {
        let out = b"\x1b[31mError:\x1b[0m bad\x07 thing\t here\n";
        assert_eq!(error_line(out).as_deref(), Some("Error: bad thing  here"));
        let long = format!("fatal: {}\n", "x".repeat(2000));
        let got = error_line(long.as_bytes()).unwrap_or_default();
        assert_eq!(got.chars().count(), MAX_EXPLANATION_CHARS + 1);
        assert!(got.ends_with('…'));
    }

    proptest! {
        #[test]
        fn arbitrary_output_never_panics_and_the_line_is_clean_and_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096)
        ) {
            if let Some(line) = error_line(&bytes) {
                prop_assert!(line.chars().count() <= MAX_EXPLANATION_CHARS + 1);
                prop_assert!(!line.chars().any(char::is_control));
                let lower = line.to_ascii_lowercase();
                prop_assert!(lower.starts_with("error:") || lower.starts_with("fatal:"));
            }
        }

        #[test]
        fn an_error_line_is_found_among_noise(
            noise in proptest::collection::vec("[a-zA-Z0-9 ]{0,40}", 0..10),
            what in "[a-zA-Z0-9][a-zA-Z0-9 .']{0,60}",
            fatal in any::<bool>(),
        ) {
            let prefix = if fatal { "fatal:" } else { "Error:" };
            let mut lines = noise.clone();
            lines.push(format!("{prefix} {what}"));
            lines.extend(noise.iter().filter(|l| {
                let l = l.trim_start().to_ascii_lowercase();
                !l.starts_with("error:") && !l.starts_with("fatal:")
            }).cloned());
            let text = lines.join("\n");
            prop_assert_eq!(error_line(text.as_bytes()), Some(format!("{prefix} {what}").trim().to_string()));
        }
    }
}
