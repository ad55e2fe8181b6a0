//! The `jobforge` command.
//!
//! Structure: one module per subcommand, each with an `Args` struct (clap) and a
//! `run(args) -> anyhow::Result<ExitCode>`; [`Command`] lists them and `main` dispatches. To add a
//! subcommand, add a module, a variant and a match arm.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod validate;

/// Submit, watch and manage jobforge BuildRequests.
#[derive(Debug, Parser)]
#[command(name = "jobforge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check BuildRequest files (YAML or JSON) or seed job_config files; exit 1 listing every problem.
    Validate(validate::Args),
    /// Print the JSON Schema of the BuildRequest document.
    Schema(schema::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jobforge: {e:#}");
            ExitCode::from(2)
        }
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
