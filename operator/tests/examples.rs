//! The operator against a real apiserver with `examples/kubernetes/`: the objects it writes and
//! their content, statuses, a broken reference, and cleanup when a Project goes.

mod common;

use std::time::Duration;

use common::{World, condition, describe, eventually, ready, secret_text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use sluice_crds::api::{ApiKey, Endpoint, Project, Provider, ServiceTier};
use sluice_crds::config::hash_key;

const WAIT: Duration = Duration::from_secs(60);

fn example(file: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(sluice_testenv::workspace_root().join("examples/kubernetes").join(file))?)
}

/// Applies `examples/kubernetes/` to the world. ServiceTiers are cluster-wide and every test's
/// operator writes their status, so each test gets its own: `standard-<tenant>` and
/// `premium-<tenant>` ([`tier`]).
async fn apply_example(world: &World) -> anyhow::Result<()> {
    for file in ["10-tiers.yaml", "20-providers.yaml", "30-project.yaml", "40-endpoints.yaml", "50-apikeys.yaml"] {
        let mut yaml = example(file)?;
        for name in ["standard", "premium"] {
            let own = tier(world, name);
            for field in ["name", "defaultTier", "tier"] {
                yaml = yaml.replace(&format!("  {field}: {name}\n"), &format!("  {field}: {own}\n"));
            }
        }
        world.apply(&yaml).await?;
    }
    Ok(())
}

/// This world's copy of the example's ServiceTier `name`.
fn tier(world: &World, name: &str) -> String {
    format!("{name}-{}", world.tenant)
}

async fn ready_project(world: &World, name: &str) -> anyhow::Result<Project> {
    ready(&world.api::<Project>(&world.tenant), name, |p| p.status.clone().map(|s| s.conditions).unwrap_or_default())
        .await
}

/// An Endpoint `typo` whose one backend names Provider `provider`.
fn endpoint_naming(provider: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: typo}}
spec:
  slug: typo
  models: [{{name: m, backends: [{{providerRef: {{name: {provider}}}, model: deepseek-chat}}]}}]
"
    )
}

#[tokio::test]
async fn the_kubernetes_example_becomes_a_data_plane() -> anyhow::Result<()> {
    let world = World::start("example").await?;
    apply_example(&world).await?;
    let project = ready_project(&world, "team-a").await?;
    let dp = world.dataplane.as_str();

    // Every ApiKey is served: wait for the last one to get into the configuration.
    let config = eventually("the configuration to hold the four keys", WAIT, || async {
        let config = world.config("team-a").await?;
        Ok(match config {
            Some(config) if config.keys.len() == 4 => Ok(config),
            Some(config) => Err(format!("{} keys", config.keys.len())),
            None => Err("no config Secret".into()),
        })
    })
    .await?;
    assert_eq!(config.project.slug, "team-a");
    assert_eq!(config.endpoints.keys().collect::<Vec<_>>(), ["chat", "code", "embed"]);
    let ids: Vec<&str> = config.keys.iter().map(|k| k.id.as_str()).collect();
    let tenant = &world.tenant;
    assert_eq!(
        ids,
        [
            format!("{tenant}/ci-bot"),
            format!("{tenant}/dashboard"),
            format!("{tenant}/partner"),
            format!("{tenant}/web-app")
        ]
    );
    assert!(config.providers.keys().all(|id| id.starts_with(&format!("{}/", world.shared))));
    assert_eq!(config.tiers.keys().cloned().collect::<Vec<_>>(), [tier(&world, "premium"), tier(&world, "standard")]);

    // The primary config Secret: labels, hash annotation, hash field; small enough for one Secret.
    let primary = world.api::<Secret>(dp).get("sluice-config-team-a").await?;
    let labels = primary.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "sluice-operator");
    assert_eq!(labels["app.kubernetes.io/part-of"], "sluice");
    assert_eq!(labels["sluice.dev/project"], "team-a");
    let hash = config.content_hash()?;
    assert_eq!(primary.metadata.annotations.as_ref().map(|a| a["sluice.dev/config-hash"].clone()), Some(hash.clone()));
    assert_eq!(secret_text(&primary, "hash"), Some(hash.clone()));
    assert!(secret_text(&primary, "shards").is_none());
    // The status follows the write it reports (a reconcile writes the Secret, then the status).
    let projects = world.api::<Project>(tenant);
    let project_status = eventually("the status to report the written configuration", WAIT, || async {
        let status = projects.get("team-a").await?.status.unwrap_or_default();
        Ok(if status.config_hash.as_deref() == Some(hash.as_str()) {
            Ok(status)
        } else {
            Err(format!("status reports {:?}", status.config_hash))
        })
    })
    .await?;
    ready_project(&world, "team-a").await?;
    assert_eq!((project_status.endpoints, project_status.keys), (Some(3), Some(4)));
    assert_eq!(project_status.observed_generation, project.metadata.generation);

    // Generated keys: a Secret per key in the tenant namespace, owned by its ApiKey; only the
    // hash reaches the configuration; the status shows 12 characters.
    let apikeys: Api<ApiKey> = world.api(tenant);
    for name in ["web-app", "ci-bot", "dashboard"] {
        let secret = world.api::<Secret>(tenant).get(&format!("sluice-key-{name}")).await?;
        let key = secret_text(&secret, "key").expect("a key");
        assert!(key.starts_with("sl_team-a_") && key.len() == "sl_team-a_".len() + 43, "key format");
        let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("ApiKey", name, Some(true)));
        let entry = config.keys.iter().find(|k| k.id == format!("{tenant}/{name}")).expect("in config");
        assert_eq!(entry.hashes[0].sha256, hash_key(key.as_bytes()));
        let apikey = ready(&apikeys, name, |k| k.status.clone().map(|s| s.conditions).unwrap_or_default()).await?;
        let status = apikey.status.expect("status");
        assert_eq!(status.key_prefix.as_deref(), Some(&key[..12]));
        assert_eq!(status.secret_name.as_deref(), Some(format!("sluice-key-{name}").as_str()));
        assert!(status.issued_at.is_some());
        let printed = serde_json::to_string(&status)?;
        assert!(!printed.contains(&key[12..]), "no key material in status");
    }
    // The ci-bot's rotation request predates the key, so the new key already answers it: it was
    // issued after the request and replaced nothing.
    let ci_bot = apikeys.get("ci-bot").await?.status.expect("status");
    let requested: jiff::Timestamp = "2026-11-01T00:00:00Z".parse()?;
    assert!(ci_bot.issued_at.as_ref().is_some_and(|t| t.0 > requested), "issued after the request");
    assert_eq!(ci_bot.rotated_at, None, "a first key is not a rotation");
    // Bring-your-own key: its hash, and a Secret the operator left alone.
    let partner = config.keys.iter().find(|k| k.id == format!("{tenant}/partner")).expect("partner");
    assert_eq!(partner.hashes[0].sha256, hash_key(b"sl_team-a_partner0000000000000000000000000000"));
    assert_eq!(apikeys.get("partner").await?.status.and_then(|s| s.secret_name).as_deref(), Some("partner-key"));
    // A rotation asked of a key the operator does not hold is refused, and says where to rotate.
    let patch = serde_json::json!({"metadata": {"annotations": {"sluice.dev/rotate-at": "2026-11-02T00:00:00Z"}}});
    apikeys.patch("partner", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let degraded = eventually("the BYO key to refuse a rotation", WAIT, || async {
        let conditions = apikeys.get("partner").await?.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "Degraded") {
            Some(c) if c.reason == "RotationNotApplicable" => Ok(c.clone()),
            _ => Err(describe(&conditions)),
        })
    })
    .await?;
    assert!(degraded.message.contains("partner-key"), "{}", degraded.message);
    let partner_status = apikeys.get("partner").await?.status.expect("status");
    assert_eq!(condition(&partner_status.conditions, "Ready").map(|c| c.status.as_str()), Some("True"), "still served");

    // Endpoints know their URL and are served.
    let endpoints: Api<Endpoint> = world.api(tenant);
    for slug in ["chat", "code", "embed"] {
        let endpoint = ready(&endpoints, slug, |e| e.status.clone().map(|s| s.conditions).unwrap_or_default()).await?;
        let status = endpoint.status.expect("status");
        assert_eq!(status.url.expect("url"), format!("http://sluice-gw-team-a.{dp}.svc:8080/team-a/{slug}/v1"));
        let expected = tier(&world, if slug == "code" { "premium" } else { "standard" });
        assert_eq!(status.tier, Some(expected), "its own tier, else the Project's");
    }
    let providers: Api<Provider> = world.api(&world.shared);
    ready(&providers, "deepseek", |p| p.status.clone().map(|s| s.conditions).unwrap_or_default()).await?;
    let tiers: Api<ServiceTier> = Api::all(world.client.clone());
    eventually("ServiceTier premium to count this project", WAIT, || async {
        let premium = tiers.get(&tier(&world, "premium")).await?;
        let projects = premium.status.and_then(|s| s.projects).unwrap_or(0);
        Ok(if projects == 1 { Ok(()) } else { Err(format!("{projects} projects")) })
    })
    .await?;

    // The data plane.
    let deployment = world.api::<Deployment>(dp).get("sluice-gw-team-a").await?;
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod");
    let container = &pod.containers[0];
    assert_eq!(
        container.args.clone().unwrap_or_default().join(" "),
        format!(
            "--config-secret {dp}/sluice-config-team-a --config /etc/sluice/config --listen 0.0.0.0:8080 \
             --admin-listen 0.0.0.0:9090 --log-format json --usage-configmap {dp}/sluice-usage-team-a"
        )
    );
    let resources = container.resources.clone().expect("resources");
    assert_eq!(resources.requests.expect("requests")["cpu"].0, "250m");
    assert_eq!(resources.limits.expect("limits")["memory"].0, "512Mi");
    assert_eq!(pod.service_account_name.as_deref(), Some("sluice-gw-team-a"));
    assert_eq!(pod.security_context.and_then(|s| s.run_as_user), Some(65532));
    assert_eq!(container.security_context.as_ref().and_then(|s| s.read_only_root_filesystem), Some(true));

    let ports = |service: Service| -> Vec<(String, i32)> {
        let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
        ports.into_iter().map(|p| (p.name.unwrap_or_default(), p.port)).collect()
    };
    let services = world.api::<Service>(dp);
    assert_eq!(ports(services.get("sluice-gw-team-a").await?), [("http".to_owned(), 8080)], "the API alone");
    assert_eq!(ports(services.get("sluice-gw-admin-team-a").await?), [("admin".to_owned(), 9090)]);
    let budget = world.api::<PodDisruptionBudget>(dp).get("sluice-gw-team-a").await?.spec.expect("spec");
    assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
    assert!(world.api::<HorizontalPodAutoscaler>(dp).get_opt("sluice-gw-team-a").await?.is_none(), "fixed replicas");
    let ingress = world.api::<Ingress>(dp).get("sluice-gw-team-a").await?.spec.expect("spec");
    let path = &ingress.rules.expect("rules")[0].http.clone().expect("http").paths[0];
    assert_eq!(path.path.as_deref(), Some("/team-a/"));
    assert_eq!(path.backend.service.as_ref().map(|s| s.name.as_str()), Some("sluice-gw-team-a"));
    let role = world.api::<Role>(dp).get("sluice-gw-team-a").await?;
    let rule = &role.rules.expect("rules")[0];
    assert_eq!(rule.resource_names.clone().unwrap_or_default(), ["sluice-config-team-a"]);
    assert_eq!(rule.verbs, ["get", "list", "watch"]);
    world.api::<RoleBinding>(dp).get("sluice-gw-team-a").await?;
    world.api::<ServiceAccount>(dp).get("sluice-gw-team-a").await?;

    // Server-side apply under one field manager.
    let managers: Vec<String> = world
        .api::<Deployment>(dp)
        .get("sluice-gw-team-a")
        .await?
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        // The status is the rollout's (the kubelet stand-in's here).
        .filter(|m| m.subresource.as_deref() != Some("status"))
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["sluice-operator"]);
    Ok(())
}

#[tokio::test]
async fn a_broken_reference_is_a_condition_that_names_it() -> anyhow::Result<()> {
    let world = World::start("broken").await?;
    apply_example(&world).await?;
    ready_project(&world, "team-a").await?;
    world.apply(&endpoint_naming("deepseek-v9")).await?;
    let endpoints: Api<Endpoint> = world.api(&world.tenant);
    let resolved = eventually("Endpoint typo to report its broken reference", WAIT, || async {
        let conditions = endpoints.get("typo").await?.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "ReferencesResolved") {
            Some(c) if c.status == "False" => Ok((c.clone(), conditions.clone())),
            _ => Err(describe(&conditions)),
        })
    })
    .await?;
    let (references, conditions) = resolved;
    assert_eq!(references.reason, "InvalidReferences");
    assert!(
        references.message.contains("spec.models[0].backends[0].providerRef")
            && references.message.contains("no Provider \"deepseek-v9\""),
        "{}",
        references.message
    );
    assert_eq!(condition(&conditions, "Ready").map(|c| c.status.as_str()), Some("False"));
    let status = endpoints.get("typo").await?.status.expect("status");
    assert_eq!(status.url, None, "left out: no URL that would not answer");
    // Said where `kubectl describe endpoint typo` shows it: a Warning Event on the Endpoint.
    let events: Api<Event> = world.api(&world.tenant);
    let event = eventually("a Warning Event on the Endpoint", WAIT, || async {
        let list = events.list(&ListParams::default()).await?;
        let found = list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("typo")
                && e.reason.as_deref() == Some("InvalidReferences")
        });
        Ok(found.ok_or_else(|| "none yet".to_owned()))
    })
    .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.is_some_and(|n| n.contains("no Provider \"deepseek-v9\"")));

    // The rest of the project keeps serving; the Project names what it left out.
    let project = ready_project(&world, "team-a").await?;
    let conditions = project.status.expect("status").conditions;
    let degraded = condition(&conditions, "Degraded").expect("Degraded");
    assert_eq!(degraded.status, "True");
    assert!(degraded.message.contains(&format!("Endpoint {}/typo", world.tenant)), "{}", degraded.message);
    let config = world.config("team-a").await?.expect("config");
    assert_eq!(config.endpoints.keys().collect::<Vec<_>>(), ["chat", "code", "embed"]);

    // Fixing the reference brings the endpoint in.
    world.apply(&endpoint_naming("deepseek")).await?;
    eventually("the fixed endpoint to be served", WAIT, || async {
        let config = world.config("team-a").await?.expect("config");
        Ok(if config.endpoints.contains_key("typo") { Ok(()) } else { Err(format!("{:?}", config.endpoints.keys())) })
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_project_removes_its_data_plane() -> anyhow::Result<()> {
    let world = World::start("delete").await?;
    apply_example(&world).await?;
    ready_project(&world, "team-a").await?;
    let dp = world.dataplane.as_str();
    let selector = ListParams::default().labels("sluice.dev/project=team-a");
    assert_eq!(world.api::<Deployment>(dp).list(&selector).await?.items.len(), 1);
    assert_eq!(world.api::<ConfigMap>(dp).list(&selector).await?.items.len(), 1, "the usage ConfigMap");

    world.api::<Project>(&world.tenant).delete("team-a", &DeleteParams::default()).await?;
    eventually("the Project and its data plane to go", WAIT, || async {
        let mut left = Vec::new();
        left.extend(world.api::<Secret>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name));
        left.extend(
            world.api::<ConfigMap>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name),
        );
        left.extend(
            world.api::<Deployment>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name),
        );
        left.extend(world.api::<Service>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name));
        left.extend(
            world
                .api::<PodDisruptionBudget>(dp)
                .list(&selector)
                .await?
                .items
                .into_iter()
                .filter_map(|o| o.metadata.name),
        );
        left.extend(world.api::<Ingress>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name));
        left.extend(world.api::<Role>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name));
        left.extend(
            world.api::<RoleBinding>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name),
        );
        left.extend(
            world.api::<ServiceAccount>(dp).list(&selector).await?.items.into_iter().filter_map(|o| o.metadata.name),
        );
        if world.api::<Project>(&world.tenant).get_opt("team-a").await?.is_some() {
            left.push("the Project".into());
        }
        Ok(if left.is_empty() { Ok(()) } else { Err(format!("left: {left:?}")) })
    })
    .await?;
    // Generated key Secrets belong to their ApiKeys, not to the Project.
    assert!(world.api::<Secret>(&world.tenant).get_opt("sluice-key-web-app").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn a_provider_in_use_is_deleted_only_once_unused_and_drops_only_its_backends() -> anyhow::Result<()> {
    let world = World::start("in-use").await?;
    apply_example(&world).await?;
    ready_project(&world, "team-a").await?;
    let providers: Api<Provider> = world.api(&world.shared);
    eventually("the Provider to carry the operator's finalizer", WAIT, || async {
        let finalizers = providers.get("deepseek").await?.metadata.finalizers.unwrap_or_default();
        Ok(if finalizers.iter().any(|f| f == "sluice.dev/provider-in-use") {
            Ok(())
        } else {
            Err(format!("{finalizers:?}"))
        })
    })
    .await?;

    // Deleting it is held, and it says by whom.
    providers.delete("deepseek", &DeleteParams::default()).await?;
    let held = eventually("the deletion to be held", WAIT, || async {
        let provider = providers.get("deepseek").await?;
        let conditions = provider.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "Ready") {
            Some(c) if c.reason == "InUse" => Ok(c.message.clone()),
            _ => Err(describe(&conditions)),
        })
    })
    .await?;
    let tenant = &world.tenant;
    assert!(held.contains(&format!("{tenant}/chat (spec.models[0].backends[0])")), "{held}");
    assert!(held.contains(&format!("{tenant}/code (spec.models[0].backends[2])")), "{held}");
    let config = world.config("team-a").await?.expect("config");
    assert_eq!(config.endpoints["code"].models["coder"].backends.len(), 3, "still served as declared");

    // Should it go anyway (its finalizer removed by hand), only the backends that named it go:
    // `code` keeps GLM and Qwen, `chat` keeps its Qwen fallback and loses `reasoner`.
    let patch = serde_json::json!({"metadata": {"finalizers": null}});
    providers.patch("deepseek", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let config = eventually("the configuration without DeepSeek's backends", WAIT, || async {
        let config = world.config("team-a").await?.expect("config");
        Ok(if config.providers.keys().any(|p| p.ends_with("/deepseek")) {
            Err(format!("providers {:?}", config.providers.keys()))
        } else {
            Ok(config)
        })
    })
    .await?;
    let coder: Vec<&str> = config.endpoints["code"].models["coder"].backends.iter().map(|b| b.model.as_str()).collect();
    assert_eq!(coder, ["glm-4.6", "qwen3-coder-plus"]);
    let chat = &config.endpoints["chat"];
    assert_eq!(chat.models.keys().collect::<Vec<_>>(), ["chat-default"]);
    assert_eq!(chat.models["chat-default"].backends.len(), 1);
    let endpoints: Api<Endpoint> = world.api(tenant);
    let degraded = eventually("Endpoint code to say what it is served without", WAIT, || async {
        let conditions = endpoints.get("code").await?.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "Degraded") {
            Some(c) if c.reason == "BackendsLeftOut" => Ok(c.clone()),
            _ => Err(describe(&conditions)),
        })
    })
    .await?;
    assert_eq!(degraded.status, "True");
    assert!(degraded.message.contains("spec.models[0].backends[2].providerRef"), "{}", degraded.message);
    let conditions = endpoints.get("code").await?.status.map(|s| s.conditions).unwrap_or_default();
    assert_eq!(condition(&conditions, "Ready").map(|c| c.status.as_str()), Some("True"), "still served");

    // Once nothing uses a Provider, a held deletion completes by itself.
    providers.delete("glm", &DeleteParams::default()).await?;
    eventually("the GLM deletion to be held", WAIT, || async {
        let conditions = providers.get("glm").await?.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "Ready") {
            Some(c) if c.reason == "InUse" && c.message.contains("/code ") => Ok(()),
            _ => Err(describe(&conditions)),
        })
    })
    .await?;
    let only_qwen = serde_json::json!({"spec": {"models": [{"name": "coder", "backends": [
        {"providerRef": {"name": "qwen", "namespace": world.shared}, "model": "qwen3-coder-plus"}
    ]}]}});
    endpoints.patch("code", &PatchParams::default(), &Patch::Merge(&only_qwen)).await?;
    eventually("Provider glm to be gone once unused", WAIT, || async {
        Ok(match providers.get_opt("glm").await? {
            None => Ok(()),
            Some(p) => Err(format!("still there, finalizers {:?}", p.metadata.finalizers)),
        })
    })
    .await?;
    Ok(())
}
