//! `socketchat`: reads the configuration, sets up logging, runs the server until Ctrl-C or
//! SIGTERM, then drains.

use clap::Parser;
use socketchat::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Migrate => match socketchat::server::migrate(&cli.config).await {
            Ok(applied) => {
                tracing::info!(applied, "migrations applied");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("migrate failed: {e}");
                std::process::ExitCode::from(2)
            }
        },
    }
}

async fn serve(config: socketchat::config::Config) -> std::process::ExitCode {
    let running = match socketchat::server::start(config).await {
        Ok(running) => running,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let terminate = async {
        #[cfg(unix)]
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    std::process::ExitCode::SUCCESS
}
