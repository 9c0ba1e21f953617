//! Sluice's benchmark suite: gateway overhead and throughput against direct calls to the
//! simulator, a bare hyper pass-through proxy and peer gateways, all measured in one run on one
//! machine so that only ratios and differences within the run are compared.
//!
//! The binary `sluice-bench` ([`bench::Runner`]) starts `sluice-sim` ([`simulator`]), each
//! system under test ([`systems`]; agentgateway is built from its source, [`agentgateway`]) and
//! the load generators: wrk for saturation ([`wrk`]) and an open-loop generator of its own for
//! latency at fixed rates and streaming ([`loadgen`] on a [`schedule`]); it samples CPU and
//! memory from `/proc` ([`procs`]) and writes JSON, markdown and SVG ([`results`], [`report`],
//! [`svg`]). `sluice-bench routing` ([`routing`]) replays one trace through each routing strategy
//! on a simulated heterogeneous fleet; `sluice-bench limits` ([`limits`]) measures the limiter's
//! cost, in-process and through Redis. Nothing here runs under `cargo test` but the unit tests of
//! the pure parts.

pub mod agentgateway;
pub mod bench;
pub mod connections;
pub mod limits;
pub mod loadgen;
pub mod machine;
pub mod procs;
pub mod project;
pub mod report;
pub mod results;
pub mod routing;
pub mod schedule;
pub mod simulator;
pub mod stats;
pub mod svg;
pub mod systems;
pub mod wrk;
