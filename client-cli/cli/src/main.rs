//! The `jobforge` command: submit, watch and manage BuildRequests in Consul KV, and `jobforge mcp`,
//! the same operations for AI agents. It never talks to Nomad (see ARCHITECTURE.md).
//!
//! Exit codes: 0 success, 1 request or input problem (unknown request, invalid file, a build that
//! ended Failed/Cancelled under `--wait`), 2 Consul unreachable.
//!
//! A closed stdout (the reader of a pipe went away, as in `jobforge logs X | head -2`) ends the
//! process at once with status 0 and no message, whatever command was printing: see
//! [`exit_quietly_on_closed_pipe`]. Status 0 rather than 141 (killed by SIGPIPE) so that
//! `set -o pipefail` scripts piping into `head` do not fail; the reader got what it asked for.

mod apply;
mod args;
mod ctx;
mod error;
mod mcp;
mod output;
mod query;
mod render;
mod submit;
mod tenancy;
mod validate;
mod verify;
mod version;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::args::{Cli, Command, normalize_seed_flags};
use crate::ctx::Ctx;
use crate::error::{CliError, EXIT_FAILURE};

fn main() -> ExitCode {
    exit_quietly_on_closed_pipe();
    let cli = parse_cli();
    // The offline document commands (owned by the schema crate's engineer) keep their own exit
    // codes: 0 valid, 1 problems found, 2 when the command itself failed.
    let cli = match cli.command {
        Command::Validate(args) => return offline(validate::run(args, &cli.global)),
        Command::Schema(args) => return offline(schema::run(args)),
        command => Cli { command, ..cli },
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JOBFORGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Finished(_)) => ExitCode::from(EXIT_FAILURE),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Parses the command line (after [`normalize_seed_flags`]), recording whether the namespace was
/// chosen by the user (`-n`/`--namespace` or `JOBFORGE_NAMESPACE`) rather than defaulted.
fn parse_cli() -> Cli {
    let argv = normalize_seed_flags(std::env::args_os().collect());
    let matches = Cli::command().get_matches_from(argv);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Global arguments are recorded on the subcommand's matches too; either one knows the source.
    let chosen = |m: &clap::ArgMatches| {
        matches!(
            m.value_source("namespace"),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    cli.global.namespace_chosen =
        chosen(&matches) || matches.subcommand().is_some_and(|(_, m)| chosen(m));
    cli
}

/// Makes a write to a closed pipe end the process quietly with status 0 (see the crate docs),
/// in one place for every command. Rust ignores SIGPIPE, so the write fails with `EPIPE`; `print!`
/// and `println!` then panic (`failed printing to stdout: Broken pipe (os error 32)`), and so do
/// writers that `expect` success (clap_complete). This panic hook recognises that one panic —
/// an `EPIPE` io::Error in its message, in either its Display or Debug form — and exits; every
/// other panic goes to the default hook unchanged. Commands that return io errors instead go
/// through [`is_closed_pipe`].
fn exit_quietly_on_closed_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("Broken pipe (os error 32)") || text.contains("kind: BrokenPipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// Whether an error is (caused by) writing to a closed pipe.
fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn offline(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobforge: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let g = cli.global;
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "jobforge",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::VersionInfo(a) => version::info(&a.version_file, g.output),
        Command::VersionMajor(a) => version::set_major(&a.version_file, a.value, g.output),
        Command::VersionMinor(a) => version::set_minor(&a.version_file, a.value, g.output),
        Command::Mcp(a) => mcp::serve(Ctx::with_namespaces(&g)?, a).await,
        Command::Submit(a) => submit::run(&Ctx::new(&g)?, a).await,
        Command::Get(a) => query::get(&Ctx::new(&g)?, &a.name).await,
        Command::List(a) => query::list(&Ctx::new(&g)?, a).await,
        Command::Logs(a) => query::logs(&Ctx::new(&g)?, a).await,
        Command::History(a) => query::history(&Ctx::new(&g)?, a).await,
        Command::Cancel(a) => query::cancel(&Ctx::new(&g)?, &a.name).await,
        Command::Delete(a) => query::delete(&Ctx::new(&g)?, &a.name, a.purge).await,
        Command::Watch(a) => watch::run(&Ctx::new(&g)?, a).await,
        Command::Apply(a) => apply::run(&Ctx::new(&g)?, a).await,
        Command::Render(a) => render::run(&Ctx::new(&g)?, a).await,
        Command::Verify(a) => verify::run(a).await,
        // Handled in `main` before the runtime starts.
        Command::Validate(_) | Command::Schema(_) => Ok(()),
    }
}

/// `jobforge schema`: prints the JSON Schema (the same as `crd-schema/buildrequest.schema.json`).
mod schema {
    use std::io::Write;
    use std::process::ExitCode;

    /// Arguments of `jobforge schema` (none yet).
    #[derive(Debug, clap::Args)]
    pub struct Args {}

    /// Writes the pretty-printed schema to stdout.
    pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
        let mut out = std::io::stdout().lock();
        out.write_all(jobforge_schema::schema::request_schema_pretty().as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}
