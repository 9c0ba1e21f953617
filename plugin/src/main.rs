//! `kubectl-sluice`: parses the command line and runs it; kubectl finds this binary on `PATH`
//! and runs it as `kubectl sluice ...`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use kubectl_sluice::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process-wide TLS crypto provider (aws-lc-rs) for the apiserver and gateway clients.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(kubectl_sluice::run(cli, &mut std::io::stdout().lock())));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
