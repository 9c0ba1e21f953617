//! The connection kubectl would make: the kubeconfig, context and namespace flags resolved the
//! way kubectl resolves them, and the one Project of the namespace.

use anyhow::{Context as _, bail};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use sluice_crds::api::Project;

use crate::cli::GlobalArgs;

/// A client and the namespace the command works in.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl Cluster {
    /// Connects as kubectl would: `--kubeconfig` if given, else `$KUBECONFIG` or
    /// `~/.kube/config` (in a pod without either, its service account); `--context` picks the
    /// context; the namespace is `-n`, else the context's, else `default`.
    pub async fn connect(args: &GlobalArgs) -> anyhow::Result<Self> {
        let options = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
        let config = match (&args.kubeconfig, &args.context) {
            (Some(path), _) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await?,
            (None, None) => Config::infer().await.context("finding a kubeconfig (or an in-cluster service account)")?,
        };
        let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        Ok(Self { client: Client::try_from(config)?, namespace })
    }

    /// An API for a namespaced kind in the command's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The namespace's Project: there is one per tenant namespace.
    pub async fn project(&self) -> anyhow::Result<Project> {
        let projects = self.api::<Project>().list(&ListParams::default()).await.context("listing Projects")?;
        let mut items = projects.items;
        match items.len() {
            1 => Ok(items.remove(0)),
            0 => bail!("namespace {} has no Sluice Project: pick the project's namespace with -n", self.namespace),
            _ => {
                let names: Vec<String> = items.iter().map(ResourceExt::name_any).collect();
                bail!("namespace {} has several Projects ({}); Sluice expects one", self.namespace, names.join(", "))
            }
        }
    }
}
