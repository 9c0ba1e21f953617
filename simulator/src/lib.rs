//! sluice-sim: a realistic simulated LLM backend for tests, demos and routing benchmarks.
//!
//! It speaks the OpenAI (chat, completions, embeddings, rerank, models), Anthropic Messages and
//! Gemini `generateContent` wire formats; times its answers with a latency model (prefill and
//! per-token costs, slowing with load, queueing beyond `maxNumSeqs`, seeded jitter); keeps a
//! prefix cache whose hits shorten time to first token and show in `usage`; injects faults; and
//! exposes vLLM-style Prometheus metrics.
//!
//! In-process use (what the gateway's `simulated` provider does):
//!
//! ```no_run
//! # async fn demo() -> sluice_sim::Result<()> {
//! use sluice_sim::{Profile, Simulator};
//! let sim = Simulator::new(Profile::default())?;
//! let router: axum::Router = sim.router(); // drive it with tower::ServiceExt::oneshot
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(sluice_sim::Error::Serve)?;
//! sim.serve(listener).await // or serve it on a socket
//! # }
//! ```

pub mod cli;
pub mod error;
pub mod faults;
pub mod fleet;
pub mod profile;
pub mod tls;
pub mod tokenizer;

mod admin;
mod engine;
mod generation;
mod latency;
mod metrics;
mod prefix_cache;
mod prompt;
mod protocol;
mod rng;
mod server;
mod streaming;
mod textgen;

pub use engine::{DETERMINISTIC_CREATED, RecordedRequest, Simulator};
pub use error::{Error, Result};
pub use faults::{ErrorFault, FAULT_HEADER, Fault, FaultConfig};
pub use fleet::{BoundBackend, FleetBackend, FleetConfig, Ready, ReadyBackend, bind_fleet, ready_report, serve_fleet};
pub use profile::{DEFAULT_MODEL, MAX_RECORDED_REQUESTS, Profile};
