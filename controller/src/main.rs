//! `jobforge-controller`: drives BuildRequests stored in Consul KV to completion through Nomad.
//! See `jobforge-controller --help` and the crate docs.

use clap::Parser;
use jobforge_controller::config::{ControllerArgs, LogFormat};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = ControllerArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBFORGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let cancel = CancellationToken::new();
    let signals = cancel.clone();
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("signal received: shutting down");
        signals.cancel();
    });
    match jobforge_controller::runtime::run(args, cancel).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobforge-controller: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
