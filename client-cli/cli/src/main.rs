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
mod version;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::args::{Cli, Command};
use crate::ctx::Ctx;
use crate::error::{CliError, EXIT_FAILURE};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    }
}
