//! The `sluice-sim` binary: parses the command line, binds every backend, prints the ready
//! line, serves until Ctrl-C or SIGTERM.

// The ready line on stdout is this binary's interface to the tests and benchmarks that start it.
#![allow(clippy::print_stdout)]

use std::path::Path;

use anyhow::Context;
use clap::Parser;
use sluice_sim::cli::Cli;
use sluice_sim::{Ready, bind_fleet, ready_report, serve_fleet};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).context("--log")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let fleet = cli.fleet()?;
    let tls = cli.tls()?;
    let mut backends = bind_fleet(&fleet).await?;
    if let Some(config) = tls {
        backends = backends.into_iter().map(|backend| backend.with_tls(config.clone())).collect();
    }
    let ready = ready_report(&backends);
    for backend in &ready.backends {
        tracing::info!(name = backend.name, url = backend.url, "backend listening");
    }
    let line = serde_json::to_string(&ready)?;
    if let Some(path) = &cli.ready_file {
        write_ready_file(path, &ready)?;
    }
    println!("{line}");
    serve_fleet(backends, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Writes the file whole (temp file, then rename), so a reader polling for it never sees half.
fn write_ready_file(path: &Path, ready: &Ready) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(ready)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
