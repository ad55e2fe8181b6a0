//! The `jobforge` command: submit, watch and manage BuildRequests in Consul KV, and `jobforge mcp`,
//! the same operations for AI agents. It never talks to Nomad (see ARCHITECTURE.md).
//!
//! Exit codes: 0 success, 1 request or input problem (unknown request, invalid file, a build that
//! ended Failed/Cancelled under `--wait`), 2 Consul unreachable.

mod apply;
mod args;
mod ctx;
mod error;
mod mcp;
mod output;
mod query;
mod render;
mod submit;
mod validate;
mod version;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};
use crate::ctx::Ctx;
use crate::error::{CliError, EXIT_FAILURE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The offline document commands (owned by the schema crate's engineer) keep their own exit
    // codes: 0 valid, 1 problems found, 2 when the command itself failed.
    let cli = match cli.command {
        Command::Validate(args) => return offline(validate::run(args)),
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

fn offline(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
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
        Command::Mcp(a) => mcp::serve(Ctx::new(&g)?, a).await,
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
