//! `status`: the conditions of every object a project is made of (its Project, the ServiceTiers
//! it uses, its Providers, Endpoints and ApiKeys), with their reasons, so a tenant sees at once
//! what is not Ready and why.

use std::collections::BTreeSet;

use anyhow::Context as _;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use sluice_crds::api::{ApiKey, Condition, Endpoint, Provider, ServiceTier};

use crate::cluster::Cluster;
use crate::output::Report;
use crate::table::Table;

/// One object and its conditions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub kind: String,
    pub name: String,
    /// Empty for a cluster-scoped ServiceTier.
    pub namespace: String,
    pub conditions: Vec<Condition>,
}

fn object<K: Resource<DynamicType = ()>>(object: &K, conditions: &[Condition]) -> ObjectStatus {
    ObjectStatus {
        kind: K::kind(&()).into_owned(),
        name: object.meta().name.clone().unwrap_or_default(),
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        conditions: conditions.to_vec(),
    }
}

/// Reads every object of the namespace's project and reports their conditions.
pub async fn show(cluster: &Cluster) -> anyhow::Result<Report> {
    let project = cluster.project().await?;
    let lp = ListParams::default();
    let mut objects = vec![object(&project, &project.status.clone().unwrap_or_default().conditions)];

    let endpoints = cluster.api::<Endpoint>().list(&lp).await.context("listing Endpoints")?.items;
    let keys = cluster.api::<ApiKey>().list(&lp).await.context("listing ApiKeys")?.items;
    let providers = cluster.api::<Provider>().list(&lp).await.context("listing Providers")?.items;

    // The tiers the project, its endpoints and keys name.
    let tiers: BTreeSet<String> = std::iter::once(project.spec.default_tier.clone())
        .chain(endpoints.iter().filter_map(|e| e.spec.tier.clone()))
        .chain(keys.iter().filter_map(|k| k.spec.tier.clone()))
        .collect();
    let tier_api: Api<ServiceTier> = Api::all(cluster.client.clone());
    for name in &tiers {
        // A tenant may not be allowed to read cluster-scoped tiers: show what can be read.
        if let Ok(Some(tier)) = tier_api.get_opt(name).await {
            objects.push(object(&tier, &tier.status.clone().unwrap_or_default().conditions));
        }
    }
    // Shared Providers in another namespace that the endpoints use, when readable.
    let mut shared = BTreeSet::new();
    for endpoint in &endpoints {
        for backend in endpoint.spec.models.iter().flat_map(|m| &m.backends) {
            if let Some(namespace) = backend.provider_ref.namespace.as_ref().filter(|n| **n != cluster.namespace) {
                shared.insert((namespace.clone(), backend.provider_ref.name.clone()));
            }
        }
    }
    for provider in &providers {
        objects.push(object(provider, &provider.status.clone().unwrap_or_default().conditions));
    }
    for (namespace, name) in shared {
        let api: Api<Provider> = Api::namespaced(cluster.client.clone(), &namespace);
        if let Ok(Some(provider)) = api.get_opt(&name).await {
            objects.push(object(&provider, &provider.status.clone().unwrap_or_default().conditions));
        }
    }
    let mut endpoints = endpoints;
    endpoints.sort_by_key(ResourceExt::name_any);
    for endpoint in &endpoints {
        objects.push(object(endpoint, &endpoint.status.clone().unwrap_or_default().conditions));
    }
    let mut keys = keys;
    keys.sort_by_key(ResourceExt::name_any);
    for key in &keys {
        objects.push(object(key, &key.status.clone().unwrap_or_default().conditions));
    }
    Ok(Report { text: render(&objects), value: json!({"namespace": cluster.namespace, "items": objects}) })
}

/// One row per condition (Ready first), one `<none>` row for an object with none yet.
pub fn render(objects: &[ObjectStatus]) -> String {
    let mut table = Table::new(&["kind", "name", "condition", "status", "reason", "message"]);
    for object in objects {
        let name = if object.namespace.is_empty() || object.kind == "Project" {
            object.name.clone()
        } else {
            format!("{}/{}", object.namespace, object.name)
        };
        let mut conditions: Vec<&Condition> = object.conditions.iter().collect();
        conditions.sort_by_key(|c| (c.type_ != "Ready", c.type_.clone()));
        if conditions.is_empty() {
            table.push(vec![object.kind.clone(), name.clone()]);
        }
        for c in conditions {
            table.push(vec![
                object.kind.clone(),
                name.clone(),
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]);
        }
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn every_condition_is_a_row_with_ready_first() {
        let objects = [
            ObjectStatus {
                kind: "Endpoint".into(),
                name: "chat".into(),
                namespace: "team-a".into(),
                conditions: vec![
                    condition("Degraded", "False", "AsExpected", ""),
                    condition("Ready", "False", "ProviderNotFound", "backend 1 names Provider gone"),
                ],
            },
            ObjectStatus { kind: "ApiKey".into(), name: "new".into(), namespace: "team-a".into(), conditions: vec![] },
        ];
        assert_eq!(
            render(&objects),
            "KIND      NAME         CONDITION  STATUS  REASON            MESSAGE\n\
             Endpoint  team-a/chat  Ready      False   ProviderNotFound  backend 1 names Provider gone\n\
             Endpoint  team-a/chat  Degraded   False   AsExpected        <none>\n\
             ApiKey    team-a/new   <none>     <none>  <none>            <none>\n"
        );
    }
}
