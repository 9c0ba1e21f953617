//! The command line: kubectl's connection and output flags on every command, then one
//! subcommand per thing a tenant does. Each command's help ends with an example.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;

use crate::span::parse_duration;

/// Manage the API keys and endpoints of a Sluice project from kubectl.
///
/// Works on the Project in the current namespace (`-n` to choose another), with the same
/// kubeconfig, context and namespace as kubectl.
#[derive(Parser, Debug)]
#[command(name = "kubectl-sluice", bin_name = "kubectl sluice", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags kubectl users expect, accepted before or after the subcommand. No `env` here:
/// kubectl reads none of them from the environment except `KUBECONFIG`, which kube reads itself.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config; in a pod, its
    /// service account).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace of the project (default: the context's namespace, then `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How a command's result is printed.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, show, rotate and revoke API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// List the project's endpoints.
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
    },
    /// Show usage per key for a period, or per key, endpoint and model from the gateway.
    ///
    /// Without --key: what the gateway replicas reported into the project's usage ConfigMap
    /// (requests, tokens and spend per key and budget period, summed over replicas); this reads
    /// the ConfigMap in the data-plane namespace.
    /// With --key (a key holding the `usage.read` scope): the gateway's own
    /// `GET /<project>/v1/usage`, by key, endpoint and model for a UTC month.
    ///
    /// Example:
    ///   kubectl sluice usage -n team-a
    ///   kubectl sluice usage --key "$READER" --url http://localhost:8080 --period previous
    #[command(verbatim_doc_comment)]
    Usage(UsageArgs),
    /// Send a small streamed chat request to an endpoint and show how it went.
    ///
    /// Prints the time to first token, total time, tokens per second, the backend that served
    /// it, the rate-limit headers and the request id. Exits non-zero with the gateway's message
    /// when the request fails.
    ///
    /// Example:
    ///   kubectl port-forward -n sluice-dataplanes svc/sluice-gw-team-a 8080 &
    ///   kubectl sluice test chat --key "$KEY" --url http://localhost:8080
    #[command(verbatim_doc_comment)]
    Test(TestArgs),
    /// Show the conditions of every object of the project, with their reasons.
    ///
    /// Example:
    ///   kubectl sluice status -n team-a
    #[command(verbatim_doc_comment)]
    Status,
    /// Print a shell completion script.
    ///
    /// Example:
    ///   source <(kubectl sluice completion bash)
    ///   kubectl sluice completion zsh > "${fpath[1]}/_kubectl-sluice"
    ///   kubectl sluice completion fish > ~/.config/fish/completions/kubectl-sluice.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Mint a key, store only its hash in a new ApiKey, and print the key once.
    ///
    /// No Secret is created: copy the key from the output, it is not shown again.
    ///
    /// Example:
    ///   kubectl sluice keys create ci-bot --scopes inference --models gpt-4o-mini \
    ///     --budget-usd 10 --budget-period monthly --expires-in 90d
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// List the API keys: prefix, scopes, tier, expiry, spend, readiness, age.
    ///
    /// Example:
    ///   kubectl sluice keys list -n team-a
    #[command(verbatim_doc_comment)]
    List,
    /// Show one API key (never its key material).
    ///
    /// Example:
    ///   kubectl sluice keys get ci-bot -o yaml
    #[command(verbatim_doc_comment)]
    Get {
        /// The ApiKey's name.
        name: String,
    },
    /// Issue a new key; the old one keeps working for the grace period.
    ///
    /// A key created by `keys create` gets a new key printed once. A key the operator generated
    /// gets a rotation request: the new key appears in the Secret that `keys get` names. A key
    /// from your own Secret (spec.secretRef) is rotated by changing that Secret.
    ///
    /// Example:
    ///   kubectl sluice keys rotate ci-bot --grace 1h
    #[command(verbatim_doc_comment)]
    Rotate {
        /// The ApiKey's name.
        name: String,
        /// How long the old key keeps working (`30s`, `15m`, `24h`, `7d`; at most 30d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        grace: Duration,
    },
    /// Delete an API key: it stops working within seconds.
    ///
    /// Example:
    ///   kubectl sluice keys revoke ci-bot
    #[command(verbatim_doc_comment)]
    Revoke {
        /// The ApiKey's name.
        name: String,
    },
}

/// What `keys create` writes into the new ApiKey.
#[derive(Args, Debug, Clone, Default)]
pub struct CreateArgs {
    /// The ApiKey's name.
    pub name: String,
    /// What the key may do: inference, models.read, usage.read, management.
    #[arg(long, value_delimiter = ',', default_value = "inference")]
    pub scopes: Vec<String>,
    /// Endpoint slugs the key may call (default: all).
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Models (or aliases) the key may use (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// ServiceTier for this key, overriding the endpoint's and the project's.
    #[arg(long)]
    pub tier: Option<String>,
    /// Spending limit in US dollars per budget period.
    #[arg(long, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// The budget's period.
    #[arg(long, value_enum, requires = "budget_usd", default_value_t = PeriodArg::Monthly)]
    pub budget_period: PeriodArg,
    /// When the key stops working (RFC 3339, `2027-01-31T00:00:00Z`).
    #[arg(long, conflicts_with = "expires_in")]
    pub expires_at: Option<Timestamp>,
    /// How long the key works from now (`12h`, `30d`).
    #[arg(long, value_parser = parse_duration)]
    pub expires_in: Option<Duration>,
    /// Source addresses allowed to use the key, as CIDRs (default: any).
    #[arg(long, value_delimiter = ',')]
    pub allowed_cidrs: Vec<String>,
    /// One line about who holds the key and why.
    #[arg(long)]
    pub description: Option<String>,
}

/// A budget period on the command line.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PeriodArg {
    Daily,
    #[default]
    Monthly,
    Total,
}

#[derive(Subcommand, Debug)]
pub enum EndpointsCommand {
    /// List the endpoints: URL, models, tier, readiness.
    ///
    /// Example:
    ///   kubectl sluice endpoints list -n team-a
    #[command(verbatim_doc_comment)]
    List,
}

/// Which usage period to show.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsagePeriod {
    /// The current period (each key's budget period; the current UTC month with --key).
    #[default]
    Current,
    /// The previous UTC month (with --key only).
    Previous,
    /// Every period the replicas still report (without --key only).
    All,
}

#[derive(Args, Debug, Clone, Default)]
pub struct UsageArgs {
    /// Which period.
    #[arg(long, value_enum, default_value_t = UsagePeriod::Current)]
    pub period: UsagePeriod,
    /// Only this ApiKey (by name).
    #[arg(long = "name", value_name = "APIKEY")]
    pub name: Option<String>,
    /// Ask the gateway with this key (scope `usage.read`) for usage by key, endpoint and model.
    /// Not read from $SLUICE_API_KEY, which usually holds an inference key.
    #[arg(long)]
    pub key: Option<String>,
    /// The gateway's base URL with --key (default: from an Endpoint's status.url).
    #[arg(long)]
    pub url: Option<String>,
    /// Where the project's gateways run and report usage.
    #[arg(long, env = "SLUICE_DATAPLANE_NAMESPACE", default_value = "sluice-dataplanes")]
    pub dataplane_namespace: String,
}

#[derive(Args, Debug, Clone, Default)]
pub struct TestArgs {
    /// The Endpoint (its name or slug).
    pub endpoint: String,
    /// The API key to send (or $SLUICE_API_KEY, which keeps it out of shell history).
    #[arg(long, env = "SLUICE_API_KEY", hide_env_values = true)]
    pub key: String,
    /// The model (default: the endpoint's default model, else its first).
    #[arg(long)]
    pub model: Option<String>,
    /// The gateway's base URL (`http://localhost:8080` from a port-forward) instead of the
    /// Endpoint's status.url; the plugin adds `/<project>/<endpoint>/v1`.
    #[arg(long)]
    pub url: Option<String>,
    /// The message to send.
    #[arg(long, default_value = "Say hello in five words.")]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Give up after this long (`30s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}
