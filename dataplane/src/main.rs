//! `sluice-gateway`: parses flags, sets up logging and TLS, and runs the gateway; or, with
//! `audit` as its first argument, runs an audit log tool.

use clap::Parser;
use sluice_gateway::audit::{self, AuditLog};
use sluice_gateway::settings::{AuditAction, AuditCommand, LogFormat, Settings};

// The request path allocates small, short-lived buffers on every request from every worker
// thread; mimalloc's thread-local free lists serve that pattern far better than glibc malloc.
// `--features system-allocator` leaves the C library's malloc in place, for heap profilers
// (heaptrack, valgrind) that see allocations through it.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: sluice_alloc::MiMalloc = sluice_alloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // A subcommand only when named first: the gateway itself takes its flags without one, as
    // every deployment starts it.
    if std::env::args_os().nth(1).is_some_and(|first| first == "audit") {
        let command = AuditCommand::parse_from(std::env::args_os().skip(1));
        std::process::exit(audit_command(command));
    }
    let settings = Settings::parse();
    // One process-wide TLS crypto provider (aws-lc-rs) for every client in the binary.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)?;
    let (writer, _flush) = sluice_gateway::logging::LogWriter::stdout()?;
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match settings.log_format {
        LogFormat::Json => {
            tracing_subscriber::fmt().json().with_env_filter(filter).with_current_span(false).with_writer(writer).init()
        }
        LogFormat::Text => {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(colour)
                .event_format(sluice_gateway::logging::TextFormat::new(colour))
                .with_writer(writer.clone())
                .init();
            // The access line of every answered request, in the same layout, without the
            // subscriber's dispatch.
            sluice_gateway::logging::write_directly(&writer, colour);
        }
    }
    // Loading a large configuration runs on a blocking thread; letting idle ones go after a
    // second returns that thread's parsing memory to the system soon after a load.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()?;
    let audit = runtime.block_on(serve(settings))?;
    // Requests still open when the grace period ended are settled as the runtime drops them, so
    // their records go in before the final checkpoint.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(audit) = audit {
        audit.close();
    }
    Ok(())
}

/// Serves until stopped; returns the audit log to close once every request is settled.
async fn serve(settings: Settings) -> anyhow::Result<Option<AuditLog>> {
    if settings.check || settings.print_config {
        check(&settings)?;
        return Ok(None);
    }
    let running = sluice_gateway::start(settings.clone(), sluice_gateway::server::shutdown_signal()).await?;
    if settings.config.is_none() && settings.config_secret.is_none() {
        tracing::info!(
            base_url = %format!("http://{}/demo/assistant/v1", running.api_addr),
            api_key = "sl_demo_quickstartkey",
            models = "demo-chat, demo-embed, demo-image",
            "serving the embedded quickstart"
        );
    }
    running.done.await?;
    // The spans of the last requests leave before the process does.
    let traces = running.gateway.traces.clone();
    tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    Ok(running.gateway.audit.clone())
}

/// Runs `sluice-gateway audit ...`; returns the exit status: 0 intact, 1 tampered, 2 unreadable.
#[allow(clippy::print_stdout)] // the verifier answers on stdout (and names what is wrong on stderr).
fn audit_command(command: AuditCommand) -> i32 {
    let AuditAction::Verify(args) = command.action;
    let keys = match args.key_files.iter().map(|path| audit::Signer::from_file(path)).collect::<Result<Vec<_>, _>>() {
        Ok(keys) => keys,
        Err(error) => {
            eprintln!("sluice-gateway audit verify: {error}");
            return 2;
        }
    };
    let options = audit::verify::Options { keys, continued: args.continued, require_final: args.require_final };
    match audit::verify::verify_files(&args.files, &options) {
        Ok(audit::verify::Verdict::Intact(summary)) => {
            print!("{summary}");
            0
        }
        Ok(verdict @ audit::verify::Verdict::Tampered(_)) => {
            eprintln!("{verdict}");
            1
        }
        Err(error) => {
            eprintln!("sluice-gateway audit verify: {error}");
            2
        }
    }
}

#[allow(clippy::print_stdout)] // --check and --print-config answer on stdout.
fn check(settings: &Settings) -> anyhow::Result<()> {
    let configs = match sluice_gateway::compile_for_check(settings) {
        Ok(configs) => configs,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    };
    if settings.print_config {
        for config in &configs {
            println!("{}", serde_json::to_string_pretty(&config.redacted())?);
        }
    } else {
        for config in &configs {
            println!(
                "ok: project {} ({}): {} endpoints, {} keys, {} providers",
                config.project.slug,
                config.content_hash()?,
                config.endpoints.len(),
                config.keys.len(),
                config.providers.len()
            );
        }
    }
    Ok(())
}
