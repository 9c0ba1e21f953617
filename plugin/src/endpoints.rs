//! `endpoints list`: each Endpoint's URL, models, tier and readiness, as the operator reports them.

use anyhow::Context as _;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::json;
use sluice_crds::api::Endpoint;

use crate::cluster::Cluster;
use crate::output::Report;
use crate::span::age;
use crate::table::Table;

/// What `endpoints list` shows of an Endpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub name: String,
    pub slug: String,
    pub url: Option<String>,
    /// The exposed models and their aliases.
    pub models: Vec<String>,
    pub tier: Option<String>,
    pub ready: Option<String>,
    pub reason: Option<String>,
    pub created: Option<String>,
}

impl EndpointView {
    pub fn of(endpoint: &Endpoint) -> Self {
        let status = endpoint.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let models = endpoint
            .spec
            .models
            .iter()
            .flat_map(|m| std::iter::once(m.name.clone()).chain(m.aliases.iter().map(|a| a.name.clone())))
            .collect();
        Self {
            name: endpoint.name_any(),
            slug: endpoint.spec.slug.clone(),
            url: status.url.clone(),
            models,
            tier: status.tier.clone().or_else(|| endpoint.spec.tier.clone()),
            ready: ready.map(|c| c.status.clone()),
            reason: ready.map(|c| c.reason.clone()),
            created: endpoint.metadata.creation_timestamp.as_ref().map(|t| format!("{:.0}", t.0)),
        }
    }
}

/// Lists the namespace's Endpoints.
pub async fn list(cluster: &Cluster) -> anyhow::Result<Report> {
    let mut endpoints =
        cluster.api::<Endpoint>().list(&ListParams::default()).await.context("listing Endpoints")?.items;
    endpoints.sort_by_key(ResourceExt::name_any);
    let views: Vec<EndpointView> = endpoints.iter().map(EndpointView::of).collect();
    let now = Timestamp::now();
    let mut table = Table::new(&["name", "url", "models", "tier", "ready", "age"]);
    for view in &views {
        table.push(vec![
            view.name.clone(),
            view.url.clone().unwrap_or_default(),
            view.models.join(","),
            view.tier.clone().unwrap_or_default(),
            view.ready.clone().unwrap_or_default(),
            view.created.as_deref().and_then(|t| t.parse().ok()).map(|t| age(t, now)).unwrap_or_default(),
        ]);
    }
    let text =
        if table.is_empty() { format!("No Endpoints in namespace {}.\n", cluster.namespace) } else { table.render() };
    Ok(Report { text, value: json!({"namespace": cluster.namespace, "items": views}) })
}
