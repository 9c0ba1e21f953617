//! The Sluice API (`sluice.dev/v1alpha1` custom resources) and the compiler that turns a set of
//! them into the data plane's configuration.
//!
//! Pure: no network, no Kubernetes client. The operator and the standalone gateway both feed
//! objects in and get [`config::GatewayConfig`]s out.

pub mod api;
pub mod compile;
pub mod config;
pub mod config_secret;
pub mod crd_manifests;
pub mod jwks;
pub mod keys;
pub mod manifests;
pub mod objects;
pub mod schema_validation;
pub mod upstream_tls;

use std::path::Path;

use compile::{CompileErrors, CompileOptions};
use config::GatewayConfig;
use manifests::{LoadError, LoadErrors};

/// What can go wrong between a folder of manifests and a set of configurations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or document could not be read or is not valid against the schema.
    #[error("{0}")]
    Load(#[from] LoadErrors),
    /// The objects do not fit together.
    #[error("{0}")]
    Compile(#[from] CompileErrors),
    /// A compiled configuration is inconsistent, or two configurations serve the same project.
    #[error("invalid GatewayConfig for project {project}:\n  {}", problems.join("\n  "))]
    InvalidConfig {
        /// Slug of the project.
        project: String,
        /// What is wrong.
        problems: Vec<String>,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a standalone gateway serves from a folder.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// One configuration per project, sorted by slug.
    pub configs: Vec<GatewayConfig>,
    /// Documents that were skipped, with why.
    pub warnings: Vec<LoadError>,
}

/// Reads a folder or file of manifests (Sluice objects, Secrets and ConfigMaps, or compiled
/// `GatewayConfig` documents, or both), compiles the objects and validates the result.
pub fn load_and_compile(path: &Path, options: &CompileOptions) -> Result<Loaded> {
    let manifests = manifests::load_path(path)?;
    let mut configs =
        if manifests.objects.is_empty() { Vec::new() } else { compile::compile(&manifests.objects, options)? };
    configs.extend(manifests.compiled);
    let mut seen = std::collections::BTreeSet::new();
    for config in &configs {
        if let Err(problems) = config.validate() {
            return Err(Error::InvalidConfig { project: config.project.slug.clone(), problems });
        }
        if !seen.insert(config.project.slug.clone()) {
            return Err(Error::InvalidConfig {
                project: config.project.slug.clone(),
                problems: vec!["two configurations serve this project slug".into()],
            });
        }
    }
    configs.sort_by(|a, b| a.project.slug.cmp(&b.project.slug));
    Ok(Loaded { configs, warnings: manifests.warnings })
}
