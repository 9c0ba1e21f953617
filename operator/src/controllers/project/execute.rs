//! Carries out a Project [`Plan`]: the finalizer, the config Secrets (shards first, the primary
//! last), the data plane, the report, the Events and, in this one place, the status.

use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_crds::api::Project;

use super::State;
use super::applied::Live;
use super::plan::{Cleanup, ConfigWrite, Finalizer, Plan};
use crate::context::{apply, apply_status, is_not_found, set_finalizer};
use crate::data_plane::{DataPlaneObjects, Route, http_route_resource};
use crate::error::{Error, Result};
use crate::labels::{OWNER_ANNOTATION, PROJECT_FINALIZER, PROJECT_LABEL};
use crate::settings::RouteKind;

/// Carries out `plan` for `project`.
pub async fn execute(plan: Plan, project: &Project, state: &State) -> Result<Action> {
    let ctx = state.ctx.as_ref();
    let namespace =
        project.namespace().ok_or_else(|| Error::Incomplete(format!("Project {}", project.name_any()), "namespace"))?;
    let api: Api<Project> = Api::namespaced(ctx.client.clone(), &namespace);
    if plan.finalizer == Finalizer::Add {
        set_finalizer(&api, project, PROJECT_FINALIZER, true).await?;
    }
    if let Some(cleanup) = &plan.cleanup {
        remove_data_plane(cleanup, &namespace, state).await?;
    }
    if let Some(write) = plan.config {
        write_config(project, write, state).await?;
    }
    if let Some(objects) = &plan.data_plane {
        let owner = format!("{namespace}/{}", project.name_any());
        DataPlaneWriter { state, owner: &owner }.apply(objects).await?;
    }
    if let Some(report) = plan.report {
        ctx.reports.publish(&namespace, report);
    }
    for note in plan.events {
        ctx.event(project, note.type_, note.reason, note.message).await;
    }
    if let Some(status) = &plan.status {
        apply_status(&api, project, status).await?;
    }
    if plan.finalizer == Finalizer::Remove {
        set_finalizer(&api, project, PROJECT_FINALIZER, false).await?;
    }
    Ok(plan.requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Writes the config Secrets: a Role that reads old and new shards, the shards, the primary,
/// then removes the shards the new primary no longer names.
async fn write_config(project: &Project, write: ConfigWrite, state: &State) -> Result<()> {
    let ctx = state.ctx.as_ref();
    let slug = project.spec.slug.as_str();
    let namespace = ctx.settings.dataplane_namespace.as_str();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let set = &write.secrets;
    let owner = format!("{}/{}", project.namespace().unwrap_or_default(), project.name_any());
    DataPlaneWriter { state, owner: &owner }
        .write(&Api::<Role>::namespaced(ctx.client.clone(), namespace), &write.role, Some(&ctx.caches.roles))
        .await?;
    for shard in &set.shards {
        apply(&secrets, shard).await?;
    }
    apply(&secrets, &set.primary).await?;
    for name in &write.stale_shards {
        delete_if_present(&secrets, name).await?;
    }
    state.set_config_written(slug, Some(Instant::now()));
    ctx.metrics.config_writes.inc();
    ctx.metrics
        .config_bytes
        .get_or_create(&[("project", slug.to_owned())])
        .set(i64::try_from(set.size).unwrap_or(i64::MAX));
    tracing::info!(project = %format!("{}/{}", project.namespace().unwrap_or_default(), project.name_any()), hash = %set.hash, bytes = set.size, shards = set.shards.len(), "configuration written");
    ctx.event(project, EventType::Normal, "ConfigWritten", write.note).await;
    Ok(())
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(err) if is_not_found(&err) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Writes one Project's data plane, skipping what this process already applied and the watches
/// show unchanged ([`Applied`](super::applied::Applied)).
struct DataPlaneWriter<'a> {
    state: &'a State,
    /// `<namespace>/<name>` of the Project.
    owner: &'a str,
}

impl DataPlaneWriter<'_> {
    /// Applies the ServiceAccount, Role, RoleBinding, usage ConfigMap, Deployment, Services,
    /// disruption budget, autoscaler and network policy (removing the last two when not wanted),
    /// and the route.
    async fn apply(&self, objects: &DataPlaneObjects) -> Result<()> {
        let ctx = self.state.ctx.as_ref();
        let namespace = ctx.settings.dataplane_namespace.as_str();
        let (client, caches) = (&ctx.client, &ctx.caches);
        self.write(
            &Api::namespaced(client.clone(), namespace),
            &objects.service_account,
            Some(&caches.service_accounts),
        )
        .await?;
        self.write(&Api::namespaced(client.clone(), namespace), &objects.role, Some(&caches.roles)).await?;
        self.write(&Api::namespaced(client.clone(), namespace), &objects.role_binding, Some(&caches.role_bindings))
            .await?;
        self.key_access(objects).await?;
        // Metadata only: the data keys are the gateway pods'.
        self.write(
            &Api::namespaced(client.clone(), namespace),
            &objects.usage_config_map,
            Some(&caches.usage_config_maps),
        )
        .await?;
        self.write(&Api::namespaced(client.clone(), namespace), &objects.deployment, Some(&caches.deployments)).await?;
        self.write(&Api::namespaced(client.clone(), namespace), &objects.service, Some(&caches.services)).await?;
        self.write(&Api::namespaced(client.clone(), namespace), &objects.admin_service, Some(&caches.services)).await?;
        self.write::<PodDisruptionBudget>(
            &Api::namespaced(client.clone(), namespace),
            &objects.disruption_budget,
            None,
        )
        .await?;
        let name = objects.deployment.metadata.name.clone().unwrap_or_default();
        let autoscalers = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace);
        match &objects.autoscaler {
            Some(autoscaler) => self.write(&autoscalers, autoscaler, None).await?,
            None => self.remove(&autoscalers, namespace, &name).await?,
        }
        let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
        match &objects.network_policy {
            Some(policy) => self.write(&policies, policy, None).await?,
            None => self.remove(&policies, namespace, &name).await?,
        }
        match &objects.route {
            Route::Ingress(ingress) => {
                self.write(&Api::namespaced(client.clone(), namespace), ingress, Some(&caches.ingresses)).await?;
            }
            Route::HttpRoute(route) => {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &http_route_resource());
                if !self.unchanged(route, None)? {
                    apply(&api, route).await?;
                    self.note(route)?;
                }
            }
            Route::None => {}
        }
        Ok(())
    }

    /// Applies (or, when the platform turns key management off, removes) the gateway's access to
    /// the project's ApiKeys in the tenant's namespace.
    async fn key_access(&self, objects: &DataPlaneObjects) -> Result<()> {
        let client = &self.state.ctx.client;
        let (role, binding) = &objects.key_access;
        let (tenant, name) = (role.namespace().unwrap_or_default(), role.name_any());
        let (roles, bindings) =
            (Api::<Role>::namespaced(client.clone(), &tenant), Api::<RoleBinding>::namespaced(client.clone(), &tenant));
        if objects.key_management {
            self.write(&roles, role, None).await?;
            self.write(&bindings, binding, None).await?;
        } else {
            self.remove(&bindings, &tenant, &name).await?;
            self.remove(&roles, &tenant, &name).await?;
        }
        Ok(())
    }

    /// Applies `object` unless it is unchanged; `live` is the cache of its kind when watched.
    async fn write<K>(&self, api: &Api<K>, object: &K, live: Option<&Store<K>>) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Serialize + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let live = live.map(|store| {
            let (name, namespace) = (object.name_any(), object.namespace().unwrap_or_default());
            store.get(&ObjectRef::new(&name).within(&namespace))
        });
        let live = match live {
            Some(Some(object)) => Some(Some(serde_json::to_value(object.as_ref())?)),
            Some(None) => Some(None),
            None => None,
        };
        if self.unchanged(object, live)? {
            return Ok(());
        }
        apply(api, object).await?;
        self.note(object)
    }

    /// Deletes `name` of `K` unless this process did so already (within [`MAX_AGE`]).
    async fn remove<K>(&self, api: &Api<K>, namespace: &str, name: &str) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let key = object_key::<K>(namespace, name);
        if self.state.applied.unchanged(self.owner, &key, &Value::Null, &Live::Unwatched) {
            return Ok(());
        }
        delete_if_present(api, name).await?;
        self.state.applied.note(self.owner, &key, &Value::Null);
        Ok(())
    }

    fn unchanged<K: Resource + Serialize>(&self, object: &K, live: Option<Option<Value>>) -> Result<bool> {
        let live = live.map_or(Live::Unwatched, Live::Watched);
        let key = object_key::<K>(&object.namespace().unwrap_or_default(), &object.name_any());
        Ok(self.state.applied.unchanged(self.owner, &key, &serde_json::to_value(object)?, &live))
    }

    fn note<K: Resource + Serialize>(&self, object: &K) -> Result<()> {
        let key = object_key::<K>(&object.namespace().unwrap_or_default(), &object.name_any());
        self.state.applied.note(self.owner, &key, &serde_json::to_value(object)?);
        Ok(())
    }
}

/// How [`Applied`](super::applied::Applied) names an object.
fn object_key<K>(namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", std::any::type_name::<K>())
}

/// Deletes every data-plane object the Project owns, and forgets it.
async fn remove_data_plane(cleanup: &Cleanup, namespace: &str, state: &State) -> Result<()> {
    let ctx = state.ctx.as_ref();
    let Cleanup { owner, slug, release } = cleanup;
    state.applied.forget(owner);
    let dataplane = ctx.settings.dataplane_namespace.as_str();
    let selector = format!("{PROJECT_LABEL}={slug}");
    let client = &ctx.client;
    delete_owned(&Api::<Deployment>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<Service>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<PodDisruptionBudget>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<NetworkPolicy>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<Ingress>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    if ctx.settings.route.kind == RouteKind::HttpRoute {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), dataplane, &http_route_resource());
        delete_owned(&api, &selector, owner).await?;
    }
    delete_owned(&Api::<RoleBinding>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<Role>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<RoleBinding>::namespaced(client.clone(), namespace), &selector, owner).await?;
    delete_owned(&Api::<Role>::namespaced(client.clone(), namespace), &selector, owner).await?;
    delete_owned(&Api::<ServiceAccount>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<Secret>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    delete_owned(&Api::<ConfigMap>::namespaced(client.clone(), dataplane), &selector, owner).await?;
    if *release {
        ctx.reports.remove(namespace);
        state.set_config_written(slug, None);
        ctx.metrics.config_bytes.remove(&[("project", slug.clone())]);
        tracing::info!(project = owner, "data plane removed");
    }
    Ok(())
}

async fn delete_owned<K>(api: &Api<K>, selector: &str, owner: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    for object in api.list_metadata(&ListParams::default().labels(selector)).await?.items {
        if object.metadata.annotations.as_ref().and_then(|a| a.get(OWNER_ANNOTATION)).map(String::as_str) != Some(owner)
        {
            continue;
        }
        // Only the version listed: if the Project that serves the slug now has just written the
        // object (same name, its own owner annotation), the precondition fails and it stays.
        let params = DeleteParams {
            preconditions: Some(Preconditions { resource_version: object.resource_version(), uid: object.uid() }),
            ..DeleteParams::default()
        };
        match api.delete(&object.name_any(), &params).await {
            Ok(_) => {}
            Err(err) if is_not_found(&err) || is_conflict(&err) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}
