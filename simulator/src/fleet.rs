//! Fleet mode: one process serving N simulated backends, each on its own loopback port with
//! its own profile, from one config file (the routing benchmark's heterogeneous fleet).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::engine::Simulator;
use crate::error::{Error, Result, invalid};
use crate::profile::Profile;

/// A fleet config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetConfig {
    /// The backends, each with a unique name.
    pub backends: Vec<FleetBackend>,
}

/// One backend of a fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetBackend {
    /// Unique name, used in logs and in the ready line.
    pub name: String,
    /// Address to listen on. Default `127.0.0.1:0` (a free port, reported when ready).
    #[serde(default = "loopback_any_port")]
    pub listen: SocketAddr,
    /// The profile, inline. Default: the default profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Or a profile file, relative to the fleet config's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_file: Option<PathBuf>,
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

impl FleetConfig {
    /// Parses a fleet config, resolves `profileFile`s against `base_dir`, and validates it.
    pub fn from_yaml(text: &str, what: &str, base_dir: &Path) -> Result<Self> {
        let mut config: Self =
            serde_saphyr::from_str(text).map_err(|e| Error::Parse { what: what.to_owned(), message: e.to_string() })?;
        if config.backends.is_empty() {
            return Err(invalid(what, "backends must list at least one backend"));
        }
        for (i, backend) in config.backends.iter_mut().enumerate() {
            let name = &backend.name;
            if name.is_empty() {
                return Err(invalid(what, format!("backends[{i}].name is empty")));
            }
            let profile = match (backend.profile.take(), backend.profile_file.take()) {
                (Some(_), Some(_)) => {
                    return Err(invalid(format!("fleet backend \"{name}\""), "set profile or profileFile, not both"));
                }
                (Some(profile), None) => profile,
                (None, Some(file)) => Profile::load(&base_dir.join(file))?,
                (None, None) => Profile::default(),
            };
            profile.validate().map_err(|e| invalid(format!("fleet backend \"{name}\""), e.to_string()))?;
            backend.profile = Some(profile);
        }
        let mut names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(invalid(what, format!("backend name \"{}\" is used twice", pair[0])));
        }
        Ok(config)
    }

    /// Reads a fleet config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, &path.display().to_string(), base)
    }
}

/// A backend bound to its address, not yet serving.
#[derive(Debug)]
pub struct BoundBackend {
    /// Its name.
    pub name: String,
    /// The address it is bound to (the real port when 0 was asked).
    pub addr: SocketAddr,
    /// Its engine (for in-process control: faults, reset, metrics).
    pub simulator: Simulator,
    listener: TcpListener,
    /// Served over TLS with this configuration; plain HTTP without.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl BoundBackend {
    /// Builds the simulator for `profile` and binds `listen`.
    pub async fn bind(name: &str, listen: SocketAddr, profile: Profile) -> Result<Self> {
        let simulator = Simulator::new(profile)?;
        let listener = TcpListener::bind(listen).await.map_err(|source| Error::Bind { addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: listen, source })?;
        Ok(Self { name: name.to_owned(), addr, simulator, listener, tls: None })
    }

    /// Serves it over TLS ([`crate::tls::server_config`]).
    #[must_use]
    pub fn with_tls(self, config: Arc<rustls::ServerConfig>) -> Self {
        Self { tls: Some(config), ..self }
    }

    /// Its base URL (append `/v1`): `https://` when served over TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// What a ready line or ready file says: which backend listens where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Always true; lets a reader tell the ready line from log lines.
    pub ready: bool,
    /// One entry per backend, in config order.
    pub backends: Vec<ReadyBackend>,
}

/// One backend in a [`Ready`] report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyBackend {
    /// Its name.
    pub name: String,
    /// `ip:port`.
    pub addr: SocketAddr,
    /// `http://ip:port` (`https://` over TLS), the base URL (append `/v1`).
    pub url: String,
}

/// Binds every backend of a fleet.
pub async fn bind_fleet(config: &FleetConfig) -> Result<Vec<BoundBackend>> {
    let mut bound = Vec::with_capacity(config.backends.len());
    for backend in &config.backends {
        let profile = backend.profile.clone().unwrap_or_default();
        bound.push(BoundBackend::bind(&backend.name, backend.listen, profile).await?);
    }
    Ok(bound)
}

/// The ready report of bound backends.
pub fn ready_report(backends: &[BoundBackend]) -> Ready {
    Ready {
        ready: true,
        backends: backends.iter().map(|b| ReadyBackend { name: b.name.clone(), addr: b.addr, url: b.url() }).collect(),
    }
}

/// Serves every bound backend until `shutdown` completes (then drains in-flight requests) or
/// one of them fails.
pub async fn serve_fleet(
    backends: Vec<BoundBackend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = JoinSet::new();
    for backend in backends {
        let mut stop = stop_rx.clone();
        let stopped = async move {
            // Either a stop signal or the sender gone: both mean shut down.
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let BoundBackend { simulator, listener, tls, .. } = backend;
        match tls {
            None => servers.spawn(simulator.serve_with_shutdown(listener, stopped)),
            Some(config) => servers.spawn(simulator.serve_tls_with_shutdown(listener, config, stopped)),
        };
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    while let Some(joined) = servers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(Error::Serve(std::io::Error::other(e))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_and_file_profiles() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let yaml = "backends:\n  - name: a\n    profile: {interTokenMs: 5}\n  - name: b\n    listen: 127.0.0.1:0\n    profileFile: fast-small.yaml\n  - name: c\n";
        let config = FleetConfig::from_yaml(yaml, "test", &dir).expect("valid");
        assert_eq!(config.backends.len(), 3);
        assert_eq!(config.backends[0].profile.as_ref().map(|p| p.inter_token_ms), Some(5.0));
        assert!(config.backends[1].profile.is_some());
        assert_eq!(config.backends[2].profile, Some(Profile::default()));
        assert_eq!(config.backends[2].listen, loopback_any_port());
    }

    #[test]
    fn shipped_fleet_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleets/benchmark.yaml");
        let config = FleetConfig::load(&path).expect("valid");
        assert!(config.backends.len() >= 3);
        assert!(config.backends.iter().all(|b| b.profile.is_some()));
    }

    #[test]
    fn rejects_bad_fleets() {
        let base = Path::new(".");
        for (yaml, expected) in [
            ("backends: []\n", "at least one"),
            ("backends:\n  - name: a\n  - name: a\n", "used twice"),
            ("backends:\n  - {name: a, profile: {}, profileFile: x.yaml}\n", "not both"),
            ("backends:\n  - {name: a, port: 3}\n", "port"),
            ("backends:\n  - {name: a, profile: {maxNumSeqs: 0}}\n", "maxNumSeqs"),
        ] {
            let err = FleetConfig::from_yaml(yaml, "test", base).expect_err(yaml);
            assert!(err.to_string().contains(expected), "{yaml}: {err}");
        }
    }
}
