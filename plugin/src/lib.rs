//! `kubectl sluice`: the tenant's view of a Sluice project from the command line. API keys minted
//! here are stored only as their hash (`ApiKey.spec.keyHash`) and shown once; endpoints, usage
//! and status are read from the objects the operator and the gateways write; `test` sends one
//! streamed request through the gateway and shows what it measured.
//!
//! Errors are `anyhow` throughout: this crate is a command-line tool whose every error ends as
//! one message to a person, and the library half exists so that tests can drive it.

pub mod cli;
pub mod cluster;
pub mod endpoints;
pub mod keys;
pub mod output;
pub mod probe;
pub mod span;
pub mod status;
pub mod table;
pub mod usage;

use std::io::Write;

use clap::CommandFactory as _;

use crate::cli::{Cli, Command, KeysCommand};
use crate::cluster::Cluster;

/// Runs one command line, writing what it shows to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let format = cli.global.output;
    let report = match cli.command {
        Command::Completion { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "kubectl-sluice", out);
            return Ok(());
        }
        Command::Keys { command } => {
            let cluster = Cluster::connect(&cli.global).await?;
            match command {
                KeysCommand::Create(args) => keys::create(&cluster, args).await?,
                KeysCommand::List => keys::list(&cluster).await?,
                KeysCommand::Get { name } => keys::get(&cluster, &name).await?,
                KeysCommand::Rotate { name, grace } => keys::rotate(&cluster, &name, grace).await?,
                KeysCommand::Revoke { name } => keys::revoke(&cluster, &name).await?,
            }
        }
        Command::Endpoints { command: cli::EndpointsCommand::List } => {
            endpoints::list(&Cluster::connect(&cli.global).await?).await?
        }
        Command::Usage(args) => usage::show(&Cluster::connect(&cli.global).await?, args).await?,
        Command::Test(args) => probe::test(&Cluster::connect(&cli.global).await?, args).await?,
        Command::Status => status::show(&Cluster::connect(&cli.global).await?).await?,
    };
    output::emit(&report, format, out)
}
