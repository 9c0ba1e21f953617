//! The command line of `sluice-sim`: a single backend (every profile knob as a flag and an
//! environment variable, over an optional profile file) or a fleet from a config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::error::Result;
use crate::faults::ErrorFault;
use crate::fleet::{FleetBackend, FleetConfig};
use crate::profile::Profile;

/// A realistic simulated LLM backend: OpenAI, Anthropic and Gemini APIs with a latency model,
/// prefix cache, faults and vLLM metrics.
#[derive(Debug, Parser)]
#[command(
    name = "sluice-sim",
    version,
    after_help = "Every knob is documented with its default in docs/simulator.md. Flags override \
                  the profile file; the admin API (/_sim/faults, /_sim/reset) and the \
                  x-sim-fault request header switch faults at run time. When listening, one JSON \
                  line {\"ready\":true,\"backends\":[{\"name\",\"addr\",\"url\"}]} is printed on \
                  stdout (and written to --ready-file)."
)]
pub struct Cli {
    /// Run a fleet instead of a single backend.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Single backend: address to listen on (port 0 = any free port).
    #[arg(long, env = "SLUICE_SIM_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Single backend: profile file (YAML or JSON); flags below override its fields.
    #[arg(long, env = "SLUICE_SIM_PROFILE")]
    pub profile: Option<PathBuf>,
    /// Also write the ready JSON to this file once listening (written whole, atomically).
    #[arg(long, env = "SLUICE_SIM_READY_FILE", global = true)]
    pub ready_file: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), logs go to stderr.
    #[arg(long, env = "SLUICE_SIM_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. Every backend
    /// of a fleet uses it.
    #[arg(long, env = "SLUICE_SIM_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "SLUICE_SIM_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by these PEM certificate authorities (mutual TLS);
    /// needs --tls-cert.
    #[arg(long, env = "SLUICE_SIM_TLS_CLIENT_CA", global = true, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Profile knobs.
    #[command(flatten)]
    pub knobs: ProfileArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve N backends on N ports, each with its own profile, from one config file.
    Fleet(FleetArgs),
}

/// `sluice-sim fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Fleet config: `backends: [{name, listen (default 127.0.0.1:0), profile | profileFile}]`.
    #[arg(long, env = "SLUICE_SIM_FLEET_CONFIG")]
    pub config: PathBuf,
}

/// Every profile knob; each unset flag keeps the profile file's value (or the default).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Profile knobs (single backend; override the profile file)")]
pub struct ProfileArgs {
    /// Model names served, comma-separated; empty = any name (listed as sluice-sim). [default: any]
    #[arg(long, env = "SLUICE_SIM_MODELS", value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Require this API key (Bearer, x-api-key, x-goog-api-key or ?key=). [default: none]
    #[arg(long, env = "SLUICE_SIM_API_KEY")]
    pub api_key: Option<String>,
    /// Fixed part of the time to first token, ms. [default: 40]
    #[arg(long, env = "SLUICE_SIM_PREFILL_OVERHEAD_MS")]
    pub prefill_overhead_ms: Option<f64>,
    /// Time to first token per uncached prompt token, ms. [default: 0.2]
    #[arg(long, env = "SLUICE_SIM_PREFILL_PER_TOKEN_MS")]
    pub prefill_per_token_ms: Option<f64>,
    /// Time between output tokens, ms. [default: 10]
    #[arg(long, env = "SLUICE_SIM_INTER_TOKEN_MS")]
    pub inter_token_ms: Option<f64>,
    /// Sequences run at once; more requests queue (FIFO). [default: 256]
    #[arg(long, env = "SLUICE_SIM_MAX_NUM_SEQS")]
    pub max_num_seqs: Option<u32>,
    /// Latency multiplier at max-num-seqs running, linear from 1.0 at one. [default: 2.0]
    #[arg(long, env = "SLUICE_SIM_LOAD_SLOWDOWN")]
    pub load_slowdown: Option<f64>,
    /// Standard deviation of latency noise, as a fraction of each delay. [default: 0.1]
    #[arg(long, env = "SLUICE_SIM_JITTER")]
    pub jitter: Option<f64>,
    /// Seed of generated text, jitter, fault draws and embeddings. [default: 0]
    #[arg(long, env = "SLUICE_SIM_SEED")]
    pub seed: Option<u64>,
    /// Output tokens when the model stops by itself (max_tokens below cuts it). [default: 64]
    #[arg(long, env = "SLUICE_SIM_OUTPUT_TOKENS")]
    pub output_tokens: Option<u32>,
    /// Spread of the natural output length (fraction, deterministic per prompt). [default: 0]
    #[arg(long, env = "SLUICE_SIM_OUTPUT_TOKENS_SPREAD")]
    pub output_tokens_spread: Option<f64>,
    /// Generate exactly max_tokens when a request sets it (vLLM ignore_eos). [default: false]
    #[arg(long, env = "SLUICE_SIM_IGNORE_EOS", num_args = 0..=1, default_missing_value = "true")]
    pub ignore_eos: Option<bool>,
    /// Tokens per prefix-cache block. [default: 16]
    #[arg(long, env = "SLUICE_SIM_PREFIX_CACHE_BLOCK_SIZE")]
    pub prefix_cache_block_size: Option<u32>,
    /// Prefix-cache (and KV-cache) capacity in blocks; 0 disables it. [default: 32768]
    #[arg(long, env = "SLUICE_SIM_PREFIX_CACHE_BLOCKS")]
    pub prefix_cache_blocks: Option<u32>,
    /// Embedding vector length. [default: 1536]
    #[arg(long, env = "SLUICE_SIM_EMBEDDING_DIMENSIONS")]
    pub embedding_dimensions: Option<u32>,
    /// Ids and `created` from seed + prompt, so identical requests give identical bytes. [default: false]
    #[arg(long, env = "SLUICE_SIM_DETERMINISTIC_IDS", num_args = 0..=1, default_missing_value = "true")]
    pub deterministic_ids: Option<bool>,
    /// Answer text requests with their last user message, token by token. [default: false]
    #[arg(long, env = "SLUICE_SIM_ECHO", num_args = 0..=1, default_missing_value = "true")]
    pub echo: Option<bool>,
    /// Keep the last N request bodies for GET /_sim/requests (0 = none). [default: 0]
    #[arg(long, env = "SLUICE_SIM_RECORD_REQUESTS")]
    pub record_requests: Option<u32>,
    /// Error fault STATUS=RATE, repeatable or comma-separated (e.g. 503=0.1,429=0.05). [default: none]
    #[arg(long = "fault-error", env = "SLUICE_SIM_FAULT_ERRORS", value_delimiter = ',', value_parser = parse_error_fault)]
    pub fault_errors: Option<Vec<ErrorFault>>,
    /// Retry-After seconds on 429 and 503 faults. [default: 1]
    #[arg(long, env = "SLUICE_SIM_FAULT_RETRY_AFTER_SECS")]
    pub fault_retry_after_secs: Option<u32>,
    /// Probability of a hang before the first byte. [default: 0]
    #[arg(long, env = "SLUICE_SIM_FAULT_HANG_RATE")]
    pub fault_hang_rate: Option<f64>,
    /// How long a hang lasts, ms. [default: 600000]
    #[arg(long, env = "SLUICE_SIM_FAULT_HANG_MS")]
    pub fault_hang_ms: Option<u64>,
    /// Probability of a connection cut mid-body. [default: 0]
    #[arg(long, env = "SLUICE_SIM_FAULT_RESET_RATE")]
    pub fault_reset_rate: Option<f64>,
    /// Streamed tokens sent before a reset. [default: 4]
    #[arg(long, env = "SLUICE_SIM_FAULT_RESET_AFTER_TOKENS")]
    pub fault_reset_after_tokens: Option<u32>,
    /// Probability of a body that is not valid JSON. [default: 0]
    #[arg(long, env = "SLUICE_SIM_FAULT_MALFORMED_RATE")]
    pub fault_malformed_rate: Option<f64>,
    /// Probability of a slow drip (each event or 16 bytes, drip-interval-ms apart). [default: 0]
    #[arg(long, env = "SLUICE_SIM_FAULT_DRIP_RATE")]
    pub fault_drip_rate: Option<f64>,
    /// Interval of a slow drip, ms. [default: 500]
    #[arg(long, env = "SLUICE_SIM_FAULT_DRIP_INTERVAL_MS")]
    pub fault_drip_interval_ms: Option<u64>,
}

fn parse_error_fault(value: &str) -> Result<ErrorFault, String> {
    let (status, rate) = value.split_once('=').ok_or_else(|| format!("`{value}` is not STATUS=RATE"))?;
    Ok(ErrorFault {
        status: status.trim().parse().map_err(|_| format!("`{status}` is not a status code"))?,
        rate: rate.trim().parse().map_err(|_| format!("`{rate}` is not a rate"))?,
    })
}

impl ProfileArgs {
    /// Sets every knob given on the command line.
    pub fn apply(&self, profile: &mut Profile) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut profile.models, &self.models);
        if self.api_key.is_some() {
            profile.api_key.clone_from(&self.api_key);
        }
        set(&mut profile.prefill_overhead_ms, &self.prefill_overhead_ms);
        set(&mut profile.prefill_per_token_ms, &self.prefill_per_token_ms);
        set(&mut profile.inter_token_ms, &self.inter_token_ms);
        set(&mut profile.max_num_seqs, &self.max_num_seqs);
        set(&mut profile.load_slowdown, &self.load_slowdown);
        set(&mut profile.jitter, &self.jitter);
        set(&mut profile.seed, &self.seed);
        set(&mut profile.output_tokens, &self.output_tokens);
        set(&mut profile.output_tokens_spread, &self.output_tokens_spread);
        set(&mut profile.ignore_eos, &self.ignore_eos);
        set(&mut profile.prefix_cache_block_size, &self.prefix_cache_block_size);
        set(&mut profile.prefix_cache_blocks, &self.prefix_cache_blocks);
        set(&mut profile.embedding_dimensions, &self.embedding_dimensions);
        set(&mut profile.deterministic_ids, &self.deterministic_ids);
        set(&mut profile.echo, &self.echo);
        set(&mut profile.record_requests, &self.record_requests);
        let faults = &mut profile.faults;
        set(&mut faults.errors, &self.fault_errors);
        set(&mut faults.retry_after_secs, &self.fault_retry_after_secs);
        set(&mut faults.hang_rate, &self.fault_hang_rate);
        set(&mut faults.hang_ms, &self.fault_hang_ms);
        set(&mut faults.reset_rate, &self.fault_reset_rate);
        set(&mut faults.reset_after_tokens, &self.fault_reset_after_tokens);
        set(&mut faults.malformed_rate, &self.fault_malformed_rate);
        set(&mut faults.drip_rate, &self.fault_drip_rate);
        set(&mut faults.drip_interval_ms, &self.fault_drip_interval_ms);
    }
}

impl Cli {
    /// The TLS configuration the `--tls-*` flags describe; `None` serves plain HTTP.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                crate::tls::server_config_from_files(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            // clap requires both or neither.
            _ => Ok(None),
        }
    }

    /// The fleet this command line describes: the fleet config, or one backend named `default`
    /// from `--profile` and the knob flags.
    pub fn fleet(&self) -> Result<FleetConfig> {
        if let Some(Command::Fleet(args)) = &self.command {
            return FleetConfig::load(&args.config);
        }
        let mut profile = match &self.profile {
            Some(path) => Profile::load(path)?,
            None => Profile::default(),
        };
        self.knobs.apply(&mut profile);
        profile.validate()?;
        Ok(FleetConfig {
            backends: vec![FleetBackend {
                name: "default".into(),
                listen: self.listen,
                profile: Some(profile),
                profile_file: None,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_profile() {
        let cli = Cli::try_parse_from([
            "sluice-sim",
            "--listen",
            "127.0.0.1:0",
            "--inter-token-ms",
            "3",
            "--models",
            "a,b",
            "--ignore-eos",
            "--fault-error",
            "503=0.25,429=0.5",
            "--fault-hang-ms",
            "7",
        ])
        .expect("parses");
        let fleet = cli.fleet().expect("valid");
        let profile = fleet.backends[0].profile.clone().expect("profile");
        assert_eq!(profile.inter_token_ms, 3.0);
        assert_eq!(profile.models, ["a", "b"]);
        assert!(profile.ignore_eos);
        assert_eq!(profile.faults.errors.len(), 2);
        assert_eq!(profile.faults.errors[1].status, 429);
        assert_eq!(profile.faults.hang_ms, 7);
        assert_eq!(profile.prefill_overhead_ms, Profile::default().prefill_overhead_ms);
    }

    #[test]
    fn every_knob_has_a_flag() {
        // A profile field without a flag would be missing from --help: compare the field names
        // (serialized, camelCase) with the long flags (kebab-case, faults prefixed).
        let mut profile =
            serde_json::to_value(Profile { api_key: Some("k".into()), ..Profile::default() }).expect("serializes");
        let faults = profile.as_object_mut().and_then(|p| p.remove("faults")).expect("faults");
        let kebab = |s: &str| {
            s.chars().fold(String::new(), |mut out, c| {
                if c.is_ascii_uppercase() {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
                out
            })
        };
        let command = Cli::command();
        let flags: Vec<&str> = command.get_arguments().filter_map(|a| a.get_long()).collect();
        let top = profile.as_object().into_iter().flat_map(|o| o.keys()).map(|k| kebab(k));
        let nested = faults
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            // The list of error faults is given one STATUS=RATE at a time.
            .map(|k| format!("fault-{}", kebab(k)).replace("fault-errors", "fault-error"));
        for flag in top.chain(nested) {
            assert!(flags.contains(&flag.as_str()), "no --{flag} flag");
        }
    }
}
