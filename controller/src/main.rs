//! `jobforge-controller`: drives BuildRequests stored in Consul KV to completion through Nomad.
//! See `jobforge-controller --help` and the crate docs.

use std::io::IsTerminal;

use clap::Parser;
use jobforge_controller::config::ControllerArgs;
use jobforge_controller::logging;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = ControllerArgs::parse();
    // Colour only on a terminal: a log file or journal gets plain text.
    logging::subscriber(
        args.log_format,
        logging::filter_from_env(),
        std::io::stderr().is_terminal(),
        std::io::stderr,
    )
    .init();
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
