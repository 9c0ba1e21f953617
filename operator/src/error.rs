//! The operator library's one error type.

/// What can go wrong in a reconcile or while running the controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The compiled configuration could not be serialized.
    #[error("serializing the gateway configuration: {0}")]
    Serialize(#[from] serde_json::Error),
    /// CPU-bound work on the blocking pool panicked or was cancelled.
    #[error("background work: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    /// An object lacks something every object of its kind has.
    #[error("{0} has no {1}")]
    Incomplete(String, &'static str),
    /// Another replica holds the leader Lease and this one lost it.
    #[error("lost the leader Lease {0}")]
    LostLease(String),
    /// The metrics and health server could not start.
    #[error("metrics server on {address}: {source}")]
    MetricsServer {
        /// Listen address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A setting does not make sense.
    #[error("invalid settings: {0}")]
    Settings(String),
}

impl Error {
    /// A short label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "client",
            Self::Serialize(_) => "serialize",
            Self::Blocking(_) => "blocking",
            Self::Incomplete(..) => "incomplete",
            Self::LostLease(_) => "lease",
            Self::MetricsServer { .. } => "metrics",
            Self::Settings(_) => "settings",
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
