//! How the controller logs: to stderr, text or JSON (`--log-format`), filtered by `JOBFORGE_LOG`
//! (an `EnvFilter` directive list) or [`DEFAULT_FILTER`].
//!
//! Colour (ANSI escape codes) only when stderr is a terminal: a log file or a journal gets plain
//! text (issue 18, item 15).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Filter when `JOBFORGE_LOG` is unset or invalid: `info`, and nothing from the Vault client
/// library: vaultrs logs every Vault error answer at ERROR (`Detected errors in API response`,
/// pretty-printed over several lines), even a 404 the controller expects when it checks whether a
/// secret path exists; the controller logs what such an answer means itself (one WARN per
/// missing path, `reconcile.rs`).
pub const DEFAULT_FILTER: &str = "info,vaultrs=off";

/// The filter from `JOBFORGE_LOG`, else [`DEFAULT_FILTER`].
pub fn filter_from_env() -> EnvFilter {
    EnvFilter::try_from_env("JOBFORGE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// The subscriber the controller installs: `format`, `filter`, colour iff `ansi`, into `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(builder.json().finish()),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    fn logged(ansi: bool) -> String {
        let buf = Buf::default();
        let sub = subscriber(
            LogFormat::Text,
            EnvFilter::new(DEFAULT_FILTER),
            ansi,
            buf.clone(),
        );
        tracing::subscriber::with_default(sub, || {
            tracing::error!(target: "vaultrs::api", "Detected errors in API response: [\n    \"x\",\n]");
            tracing::warn!(target: "jobforge_controller::reconcile", path = "secret/data/x", "Vault secret path not found");
            tracing::debug!(target: "jobforge_controller::reconcile", "debug noise");
        });
        let out = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn the_default_filter_drops_the_vault_librarys_noise_and_keeps_jobforges_warning() {
        let out = logged(false);
        assert!(!out.contains("Detected errors"), "{out}");
        assert!(!out.contains("debug noise"), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains("WARN") && out.contains("Vault secret path not found"),
            "{out}"
        );
    }

    #[test]
    fn without_a_terminal_no_colour_codes_are_written() {
        assert!(!logged(false).contains('\u{1b}'));
        assert!(
            logged(true).contains('\u{1b}'),
            "the switch works both ways"
        );
    }
}
