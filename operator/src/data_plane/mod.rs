//! The objects of one project's data plane in the data-plane namespace, built from the Project
//! and its config Secrets: ServiceAccount, Role and RoleBinding (read the config Secrets and
//! report usage, by name, nothing else), the usage ConfigMap, Deployment ([`pod`]), the API and
//! admin Services, the route that publishes `/<slug>/`, and what keeps it available
//! ([`availability`]: a PodDisruptionBudget, a HorizontalPodAutoscaler when the Project scales,
//! a NetworkPolicy when the platform asks for one). Pure.

mod availability;
mod pod;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    NetworkPolicy, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use sha2::{Digest, Sha256};
use sluice_crds::api::DataPlaneSpec;

pub use self::pod::{default_resources, selector};
use crate::config_secret::{primary_name, shard_name};
use crate::labels::{OWNER_ANNOTATION, project_labels};
use crate::settings::{RouteKind, RouteSettings, Settings};

/// Port of the gateway's API.
pub const HTTP_PORT: i32 = 8080;
/// Port of the gateway's `/healthz`, `/readyz` and `/metrics`.
pub const ADMIN_PORT: i32 = 9090;
/// Where the config Secrets are mounted, as the fallback to watching them.
pub const CONFIG_MOUNT: &str = "/etc/sluice/config";
/// The non-root user and group of gateway pods.
pub const GATEWAY_UID: i64 = 65532;
/// Value of `app.kubernetes.io/name` on gateway pods.
pub const GATEWAY_NAME: &str = "sluice-gateway";

/// Name of a project's Deployment, Service, ServiceAccount, Role, RoleBinding and route:
/// `sluice-gw-<slug>`, shortened with a hash to fit a Service name (63 characters).
pub fn workload_name(slug: &str) -> String {
    short_name("sluice-gw-", slug)
}

/// Name of a project's admin Service (`/metrics`, `/healthz`, `/readyz`), apart from the API's
/// so that publishing the API never publishes the admin port: `sluice-gw-admin-<slug>`.
pub fn admin_service_name(slug: &str) -> String {
    short_name("sluice-gw-admin-", slug)
}

/// Name of a project's usage ConfigMap, where its gateway pods report what each key spent:
/// `sluice-usage-<slug>`, shortened like [`workload_name`].
pub fn usage_config_map_name(slug: &str) -> String {
    short_name("sluice-usage-", slug)
}

/// `<prefix><slug>`, or past 63 characters the slug cut short and an 8-digit hash of it.
fn short_name(prefix: &str, slug: &str) -> String {
    if prefix.len() + slug.len() <= 63 {
        return format!("{prefix}{slug}");
    }
    let hash = hex::encode(Sha256::digest(slug.as_bytes()));
    let keep = 63 - prefix.len() - 9;
    // Slugs are DNS labels (ASCII), so any byte index is a character boundary.
    format!("{prefix}{}-{}", slug[..keep].trim_end_matches('-'), &hash[..8])
}

/// The Gateway API kind of [`Route::HttpRoute`].
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// What a project's data plane is built from.
#[derive(Clone, Debug)]
pub struct DataPlaneInput<'a> {
    /// Project slug.
    pub slug: &'a str,
    /// `<namespace>/<name>` of the Project.
    pub owner: &'a str,
    /// The data-plane namespace.
    pub namespace: &'a str,
    /// The Project's `spec.dataPlane`.
    pub spec: &'a DataPlaneSpec,
    /// Number of config shards (0 when the primary holds the configuration).
    pub shards: usize,
}

/// How a project is published.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// An Ingress.
    Ingress(Ingress),
    /// A Gateway API HTTPRoute.
    HttpRoute(DynamicObject),
    /// Nothing.
    None,
}

/// Every object of a project's data plane.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPlaneObjects {
    /// The gateway pods' identity.
    pub service_account: ServiceAccount,
    /// Read access to the config Secrets and write access to the usage ConfigMap, by name.
    pub role: Role,
    /// Where the gateway pods report usage: metadata only, so that applying it never touches
    /// the pods' data keys.
    pub usage_config_map: ConfigMap,
    /// Write access to the project's ApiKeys, in the tenant's namespace, for the key-management
    /// API: applied when `key_management` is on, removed when the platform turns it off.
    pub key_access: (Role, RoleBinding),
    /// Whether the gateways may manage the project's keys.
    pub key_management: bool,
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// The gateway pods.
    pub deployment: Deployment,
    /// The API port in front of the pods.
    pub service: Service,
    /// The admin port in front of the pods.
    pub admin_service: Service,
    /// Publishes `/<slug>/`.
    pub route: Route,
    /// Voluntary disruptions (node drains) take one gateway pod at a time.
    pub disruption_budget: PodDisruptionBudget,
    /// Present when the Project scales with load; then the Deployment has no `replicas`.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// Present when the platform asks for NetworkPolicies.
    pub network_policy: Option<NetworkPolicy>,
}

/// The gateway's Role: read the config Secrets (the primary and `input.shards` shards) and
/// report usage, by name, nothing else.
pub fn role(input: &DataPlaneInput<'_>) -> Role {
    let secret_names: Vec<String> =
        std::iter::once(primary_name(input.slug)).chain((0..input.shards).map(|i| shard_name(input.slug, i))).collect();
    Role {
        metadata: workload_meta(input, "gateway"),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".to_owned()]),
                resource_names: Some(secret_names),
                verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".to_owned()]),
                resource_names: Some(vec![usage_config_map_name(input.slug)]),
                verbs: vec!["get".to_owned(), "patch".to_owned()],
                ..PolicyRule::default()
            },
        ]),
    }
}

/// Name of the Role and RoleBinding in the tenant's namespace that let the gateway manage keys.
pub fn key_access_name(slug: &str) -> String {
    format!("{}-keys", workload_name(slug))
}

/// The Role (and its binding to the gateway's ServiceAccount) in the tenant's namespace that
/// lets the project's gateways read and write its ApiKeys, for the key-management API: ApiKeys
/// only (no Secrets: a minted key is stored as its hash), in that namespace only.
pub fn key_access(input: &DataPlaneInput<'_>) -> (Role, RoleBinding) {
    let tenant = input.owner.split_once('/').map_or(input.owner, |(namespace, _)| namespace);
    let name = key_access_name(input.slug);
    let metadata =
        ObjectMeta { name: Some(name.clone()), namespace: Some(tenant.to_owned()), ..workload_meta(input, "gateway") };
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["sluice.dev".to_owned()]),
            resources: Some(vec!["apikeys".to_owned()]),
            verbs: ["get", "list", "watch", "create", "update", "patch", "delete"].map(str::to_owned).to_vec(),
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata,
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".to_owned(), kind: "Role".to_owned(), name },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: workload_name(input.slug),
            namespace: Some(input.namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    (role, binding)
}

/// Metadata of the project's workload objects: named after the slug, labelled as its
/// `component`, annotated with the owning Project.
fn workload_meta(input: &DataPlaneInput<'_>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(workload_name(input.slug)),
        namespace: Some(input.namespace.to_owned()),
        labels: Some(project_labels(input.slug, component)),
        annotations: Some(BTreeMap::from([(OWNER_ANNOTATION.to_owned(), input.owner.to_owned())])),
        ..ObjectMeta::default()
    }
}

/// Builds a project's data plane.
pub fn build(input: &DataPlaneInput<'_>, settings: &Settings) -> DataPlaneObjects {
    let (gateway, route) = (&settings.gateway, &settings.route);
    let name = workload_name(input.slug);
    let meta = |component: &str| workload_meta(input, component);
    let usage_name = usage_config_map_name(input.slug);
    let role = role(input);
    let usage_config_map =
        ConfigMap { metadata: ObjectMeta { name: Some(usage_name), ..meta("usage") }, ..ConfigMap::default() };
    let role_binding = RoleBinding {
        metadata: meta("gateway"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.clone(),
            namespace: Some(input.namespace.to_owned()),
            ..Subject::default()
        }]),
    };
    let service_account = ServiceAccount { metadata: meta("gateway"), ..ServiceAccount::default() };

    let selector = selector(input.slug);
    let autoscaler = availability::autoscaler(input, meta("gateway"));
    let deployment = Deployment {
        metadata: meta("gateway"),
        spec: Some(DeploymentSpec {
            // With an autoscaler the field is left out of the apply: the HPA owns it.
            replicas: autoscaler.is_none().then(|| i32::try_from(input.spec.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(pod::pod_metadata(input, gateway)),
                spec: Some(pod::pod_spec(input, &name, gateway)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    let service_of = |metadata: ObjectMeta, ports: Vec<ServicePort>| Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector.clone()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let service = service_of(meta("gateway"), vec![port("http", HTTP_PORT)]);
    let admin_meta = ObjectMeta { name: Some(admin_service_name(input.slug)), ..meta("admin") };
    let admin_service = service_of(admin_meta, vec![port("admin", ADMIN_PORT)]);
    let route = match route.kind {
        RouteKind::None => Route::None,
        RouteKind::Ingress => Route::Ingress(ingress(input, &name, meta("gateway"), route)),
        RouteKind::HttpRoute => Route::HttpRoute(http_route(input, &name, meta("gateway"), route)),
    };
    DataPlaneObjects {
        service_account,
        role,
        key_access: key_access(input),
        key_management: gateway.key_management,
        usage_config_map,
        role_binding,
        deployment,
        service,
        admin_service,
        route,
        disruption_budget: availability::disruption_budget(input, meta("gateway")),
        autoscaler,
        network_policy: settings
            .network_policy
            .as_ref()
            .map(|p| availability::network_policy(input, meta("gateway"), p)),
    }
}

fn route_path(slug: &str) -> String {
    format!("/{slug}/")
}

fn ingress(input: &DataPlaneInput<'_>, name: &str, metadata: ObjectMeta, route: &RouteSettings) -> Ingress {
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: route.ingress_class.clone(),
            rules: Some(vec![IngressRule {
                host: route.host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(route_path(input.slug)),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name.to_owned(),
                                port: Some(ServiceBackendPort { name: Some("http".to_owned()), number: None }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    }
}

fn http_route(input: &DataPlaneInput<'_>, name: &str, metadata: ObjectMeta, route: &RouteSettings) -> DynamicObject {
    let mut parent = serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway"});
    if let Some(gateway) = &route.gateway_parent {
        parent["namespace"] = gateway.namespace.clone().into();
        parent["name"] = gateway.name.clone().into();
        if let Some(section) = &gateway.section_name {
            parent["sectionName"] = section.clone().into();
        }
    }
    let mut spec = serde_json::json!({
        "parentRefs": [parent],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": route_path(input.slug)}}],
            "backendRefs": [{"name": name, "port": HTTP_PORT}],
        }],
    });
    if let Some(host) = &route.host {
        spec["hostnames"] = serde_json::json!([host]);
    }
    let mut object = DynamicObject::new(name, &http_route_resource()).data(serde_json::json!({"spec": spec}));
    object.metadata = metadata;
    object
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, Probe, ResourceRequirements, Toleration};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use sluice_crds::api::AutoscalingSpec;

    use super::*;
    use crate::settings::{
        NetworkPolicySettings, OtlpProtocol, OtlpTls, ParentRef, PodDefaults, SecretKeyRef, TraceSampler,
        TracingSettings,
    };

    /// Three replicas, nothing else set.
    fn three() -> DataPlaneSpec {
        DataPlaneSpec { replicas: 3, ..DataPlaneSpec::default() }
    }

    fn input(spec: &DataPlaneSpec, shards: usize) -> DataPlaneInput<'_> {
        DataPlaneInput { slug: "team-a", owner: "team-a/team-a", namespace: "sluice-dataplanes", spec, shards }
    }

    fn with_route(route: RouteSettings) -> Settings {
        Settings { route, ..Settings::default() }
    }

    fn pod(objects: &DataPlaneObjects) -> &PodSpec {
        objects.deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
    }

    #[test]
    fn the_deployment_runs_the_gateway_locked_down_with_the_config_contract() {
        let objects = build(&input(&three(), 0), &Settings::default());
        let deployment = &objects.deployment;
        assert_eq!(deployment.metadata.name.as_deref(), Some("sluice-gw-team-a"));
        assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(3));
        let pod = pod(&objects);
        assert_eq!(pod.service_account_name.as_deref(), Some("sluice-gw-team-a"));
        let security = pod.security_context.as_ref().expect("pod security");
        assert_eq!((security.run_as_non_root, security.run_as_user), (Some(true), Some(65532)));
        assert_eq!(security.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
        let container = &pod.containers[0];
        assert_eq!(
            container.args.as_deref().expect("args").join(" "),
            "--config-secret sluice-dataplanes/sluice-config-team-a --config /etc/sluice/config \
             --listen 0.0.0.0:8080 --admin-listen 0.0.0.0:9090 --log-format json \
             --usage-configmap sluice-dataplanes/sluice-usage-team-a"
        );
        let env = &container.env.as_deref().expect("env")[0];
        assert_eq!(env.name, "POD_NAME");
        let field = env.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("a field reference");
        assert_eq!(field.field_path, "metadata.name");
        assert!(container.image.as_deref().expect("image").starts_with("ghcr.io/sluice-dev/sluice-gateway:"));
        let locked = container.security_context.as_ref().expect("container security");
        assert_eq!(locked.read_only_root_filesystem, Some(true));
        assert_eq!(locked.allow_privilege_escalation, Some(false));
        assert_eq!(locked.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_owned()]));
        let probe_path = |p: &Option<Probe>| p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone());
        assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(container.resources, Some(default_resources()));
        assert_eq!(pod.termination_grace_period_seconds, Some(45), "above the gateway's drain and grace");
        let mount = &container.volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (CONFIG_MOUNT, Some(true)));
    }

    #[test]
    fn shards_are_projected_as_numbered_files_and_readable_by_name_only() {
        let objects = build(&input(&three(), 2), &Settings::default());
        let volume = &pod(&objects).volumes.as_ref().expect("volumes")[0];
        let sources = volume.projected.as_ref().and_then(|p| p.sources.clone()).expect("sources");
        let secret = |i: usize| sources[i].secret.clone().expect("secret source");
        assert_eq!(secret(0).name, "sluice-config-team-a");
        assert!(secret(0).items.is_none(), "config.json (or shards) and hash as files");
        assert_eq!(secret(2).name, "sluice-config-team-a-shard-1");
        assert_eq!(secret(2).items.expect("items")[0].path, "config.json.part-1");

        let rule = &objects.role.rules.as_ref().expect("rules")[0];
        assert_eq!(rule.resources.as_deref(), Some(&["secrets".to_owned()][..]));
        assert_eq!(
            rule.resource_names.as_deref().expect("names"),
            ["sluice-config-team-a", "sluice-config-team-a-shard-0", "sluice-config-team-a-shard-1"]
        );
        assert_eq!(rule.verbs, ["get", "list", "watch"]);
        assert_eq!(objects.role_binding.subjects.as_ref().expect("subjects")[0].name, "sluice-gw-team-a");
    }

    #[test]
    fn the_usage_config_map_is_metadata_only_and_writable_by_name() {
        let objects = build(&input(&three(), 0), &Settings::default());
        let map = &objects.usage_config_map;
        assert_eq!(map.metadata.name.as_deref(), Some("sluice-usage-team-a"));
        assert_eq!(map.metadata.namespace.as_deref(), Some("sluice-dataplanes"));
        let labels = map.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["app.kubernetes.io/component"], "usage");
        assert_eq!(labels["sluice.dev/project"], "team-a");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "sluice-operator");
        assert_eq!(map.metadata.annotations.as_ref().expect("annotations")[OWNER_ANNOTATION], "team-a/team-a");
        // What the operator applies: without data, so the pods' keys stay theirs.
        let applied = serde_json::to_value(map).expect("serializes");
        let fields: Vec<&str> = applied.as_object().expect("an object").keys().map(String::as_str).collect();
        assert_eq!(fields, ["apiVersion", "kind", "metadata"]);

        let rule = &objects.role.rules.as_ref().expect("rules")[1];
        assert_eq!(rule.resources.as_deref(), Some(&["configmaps".to_owned()][..]));
        assert_eq!(rule.resource_names.as_deref(), Some(&["sluice-usage-team-a".to_owned()][..]));
        assert_eq!(rule.verbs, ["get", "patch"]);
    }

    #[test]
    fn project_resources_replace_the_defaults() {
        let resources = ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("1Gi".to_owned()))])),
            ..ResourceRequirements::default()
        };
        let mut settings = Settings::default();
        settings.gateway.pod.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("2Gi".to_owned()))])),
            ..ResourceRequirements::default()
        });
        let platform = build(&input(&three(), 0), &settings);
        assert_eq!(pod(&platform).containers[0].resources, settings.gateway.pod.resources, "the platform's default");
        let own = DataPlaneSpec { resources: Some(resources.clone()), ..three() };
        let objects = build(&input(&own, 0), &settings);
        assert_eq!(pod(&objects).containers[0].resources.as_ref(), Some(&resources), "the Project's own");
    }

    #[test]
    fn routes_publish_the_project_path() {
        let settings = RouteSettings {
            ingress_class: Some("nginx".into()),
            host: Some("llm.example.com".into()),
            ..RouteSettings::default()
        };
        let Route::Ingress(ingress) = build(&input(&three(), 0), &with_route(settings)).route else {
            panic!("an Ingress by default")
        };
        let spec = ingress.spec.expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.expect("rules")[0];
        assert_eq!(rule.host.as_deref(), Some("llm.example.com"));
        let path = &rule.http.as_ref().expect("http").paths[0];
        assert_eq!((path.path.as_deref(), path.path_type.as_str()), (Some("/team-a/"), "Prefix"));

        let settings = RouteSettings {
            kind: RouteKind::HttpRoute,
            gateway_parent: Some(ParentRef { namespace: "infra".into(), name: "public".into(), section_name: None }),
            host: Some("llm.example.com".into()),
            ..RouteSettings::default()
        };
        let Route::HttpRoute(route) = build(&input(&three(), 0), &with_route(settings)).route else {
            panic!("an HTTPRoute")
        };
        assert_eq!(route.types.as_ref().map(|t| t.kind.as_str()), Some("HTTPRoute"));
        assert_eq!(route.data["spec"]["parentRefs"][0]["name"], "public");
        assert_eq!(route.data["spec"]["rules"][0]["matches"][0]["path"]["value"], "/team-a/");
        assert_eq!(route.data["spec"]["rules"][0]["backendRefs"][0]["name"], "sluice-gw-team-a");
        assert_eq!(route.data["spec"]["hostnames"][0], "llm.example.com");
        let none = RouteSettings { kind: RouteKind::None, ..RouteSettings::default() };
        assert_eq!(build(&input(&three(), 0), &with_route(none)).route, Route::None);
    }

    #[test]
    fn long_slugs_still_give_valid_service_names() {
        let slug = "a".repeat(63);
        let name = workload_name(&slug);
        assert!(name.len() <= 63, "{name}");
        assert_ne!(workload_name(&format!("{}b", "a".repeat(62))), name);
        let usage = usage_config_map_name(&slug);
        assert!(usage.len() <= 63 && usage.starts_with("sluice-usage-aaa"), "{usage}");
        assert_eq!(usage[usage.len() - 8..], name[name.len() - 8..], "the same hash of the slug");
        assert_eq!(usage_config_map_name("team-a"), "sluice-usage-team-a");
    }

    #[test]
    fn placement_takes_the_project_over_the_platform_and_spreads_by_default() {
        let mut settings = Settings::default();
        settings.gateway.pod = PodDefaults {
            node_selector: Some(BTreeMap::from([("pool".to_owned(), "gateways".to_owned())])),
            priority_class_name: Some("platform".to_owned()),
            image_pull_secrets: vec!["registry".to_owned()],
            pod_labels: BTreeMap::from([("team".to_owned(), "platform".to_owned())]),
            termination_grace_period_seconds: Some(90),
            ..PodDefaults::default()
        };
        let toleration =
            Toleration { key: Some("dedicated".into()), operator: Some("Exists".into()), ..Toleration::default() };
        let own = DataPlaneSpec {
            tolerations: Some(vec![toleration.clone()]),
            priority_class_name: Some("tenant-high".to_owned()),
            pod_labels: Some(BTreeMap::from([
                ("team".to_owned(), "a".to_owned()),
                // The operator's own labels win: the selector must keep matching.
                ("sluice.dev/project".to_owned(), "spoofed".to_owned()),
            ])),
            pod_annotations: Some(BTreeMap::from([("example.com/x".to_owned(), "1".to_owned())])),
            ..three()
        };
        let objects = build(&input(&own, 0), &settings);
        let pod = pod(&objects);
        assert_eq!(pod.node_selector.as_ref().map(|n| n["pool"].as_str()), Some("gateways"), "the platform's");
        assert_eq!(pod.tolerations.as_deref(), Some(&[toleration][..]), "the Project's");
        assert_eq!(pod.priority_class_name.as_deref(), Some("tenant-high"), "the Project's over the platform's");
        assert_eq!(pod.image_pull_secrets.as_ref().map(|s| s[0].name.as_str()), Some("registry"));
        assert_eq!(pod.termination_grace_period_seconds, Some(90));
        let spread: Vec<&str> =
            pod.topology_spread_constraints.iter().flatten().map(|c| c.topology_key.as_str()).collect();
        assert_eq!(spread, ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]);
        let template = objects.deployment.spec.as_ref().and_then(|s| s.template.metadata.clone()).expect("meta");
        let labels = template.labels.expect("labels");
        assert_eq!((labels["team"].as_str(), labels["sluice.dev/project"].as_str()), ("a", "team-a"));
        assert_eq!(template.annotations.expect("annotations")["example.com/x"], "1");

        settings.gateway.pod.topology_spread = false;
        assert!(
            build(&input(&three(), 0), &settings)
                .deployment
                .spec
                .and_then(|s| s.template.spec)
                .is_some_and(|p| p.topology_spread_constraints.is_none())
        );
    }

    #[test]
    fn shared_limits_reach_the_pods_through_the_platforms_secret() {
        let env = |objects: &DataPlaneObjects| pod(objects).containers[0].env.clone().unwrap_or_default();
        let names = |objects: &DataPlaneObjects| env(objects).into_iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(names(&build(&input(&three(), 0), &Settings::default())), ["POD_NAME"], "local limits");

        let mut settings = Settings::default();
        settings.gateway.redis = Some("limits-redis:url".parse().expect("redis settings"));
        let objects = build(&input(&three(), 0), &settings);
        let vars = env(&objects);
        let url = vars.iter().find(|e| e.name == "SLUICE_REDIS_URL").expect("the URL");
        assert_eq!(url.value, None, "never written into the pod spec");
        let secret = url.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("from a Secret");
        assert_eq!((secret.name.as_str(), secret.key.as_str()), ("limits-redis", "url"));
        let value = |name: &str| vars.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
        assert_eq!(value("SLUICE_REPLICAS_HINT").as_deref(), Some("3"));
        assert_eq!(value("SLUICE_REDIS_KEY_PREFIX").as_deref(), Some("sluice:team-a"));
        let scaled = DataPlaneSpec {
            autoscaling: Some(AutoscalingSpec {
                min_replicas: 2,
                max_replicas: 8,
                target_cpu_utilization_percent: Some(60),
                target_in_flight_per_pod: None,
            }),
            ..three()
        };
        let hint = env(&build(&input(&scaled, 0), &settings)).into_iter().find(|e| e.name == "SLUICE_REPLICAS_HINT");
        assert_eq!(hint.and_then(|e| e.value).as_deref(), Some("8"), "the most replicas there may be");
    }

    #[test]
    fn trusted_proxies_and_the_proxy_protocol_reach_the_pods() {
        let env = |settings: &Settings| {
            pod(&build(&input(&three(), 0), settings)).containers[0].env.clone().unwrap_or_default()
        };
        let value =
            |settings: &Settings, name: &str| env(settings).into_iter().find(|e| e.name == name).and_then(|e| e.value);
        assert_eq!(value(&Settings::default(), "SLUICE_TRUSTED_PROXIES"), None, "none trusted by default");
        let mut settings = Settings::default();
        settings.gateway.trusted_proxies = Some("10.244.0.0/16,fd00::/8".to_owned());
        settings.gateway.proxy_protocol = Some("optional".to_owned());
        assert_eq!(value(&settings, "SLUICE_TRUSTED_PROXIES").as_deref(), Some("10.244.0.0/16,fd00::/8"));
        assert_eq!(value(&settings, "SLUICE_PROXY_PROTOCOL").as_deref(), Some("optional"));
    }

    #[test]
    fn tracing_reaches_the_pods_as_the_opentelemetry_variables() {
        let env = |settings: &Settings| pod(&build(&input(&three(), 0), settings)).containers[0].env.clone();
        let untraced = env(&Settings::default()).unwrap_or_default();
        assert!(!untraced.iter().any(|e| e.name.starts_with("OTEL_")), "off unless asked for: {untraced:?}");

        let mut settings = Settings::default();
        settings.gateway.tracing = Some(TracingSettings {
            protocol: OtlpProtocol::Grpc,
            headers: Some(SecretKeyRef::parse("otlp-auth", "headers").expect("a Secret")),
            sampler: TraceSampler::ParentBasedTraceIdRatio,
            sampler_arg: Some(0.01),
            service_name: Some("llm-gateway".to_owned()),
            resource_attributes: vec![("deployment.environment.name".to_owned(), "prod".to_owned())],
            ..TracingSettings::new("http://otel-collector.observability:4317")
        });
        let vars = env(&settings).expect("env");
        let value = |name: &str| vars.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
        assert_eq!(value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(), Some("http://otel-collector.observability:4317"));
        assert_eq!(value("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref(), Some("grpc"));
        assert_eq!(value("OTEL_TRACES_SAMPLER").as_deref(), Some("parentbased_traceidratio"));
        assert_eq!(value("OTEL_TRACES_SAMPLER_ARG").as_deref(), Some("0.01"));
        assert_eq!(value("OTEL_SERVICE_NAME").as_deref(), Some("llm-gateway"));
        assert_eq!(
            value("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
            Some(
                "deployment.environment.name=prod,k8s.namespace.name=sluice-dataplanes,\
                 k8s.deployment.name=sluice-gw-team-a,k8s.pod.name=$(POD_NAME),sluice.project=team-a"
            )
        );
        // $(POD_NAME) is expanded by the kubelet only from a variable defined before it.
        let position = |name: &str| vars.iter().position(|e| e.name == name).expect(name);
        assert!(position("POD_NAME") < position("OTEL_RESOURCE_ATTRIBUTES"));
        let headers = vars.iter().find(|e| e.name == "OTEL_EXPORTER_OTLP_HEADERS").expect("the headers");
        assert_eq!(headers.value, None, "a collector's token is never written into the pod spec");
        let secret = headers.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("from a Secret");
        assert_eq!((secret.name.as_str(), secret.key.as_str(), secret.optional), ("otlp-auth", "headers", Some(false)));

        // The gateway's own defaults are left to it.
        settings.gateway.tracing = Some(TracingSettings::new("http://collector:4318"));
        let vars = env(&settings).expect("env");
        let names: Vec<&str> = vars.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "POD_NAME",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_TRACES_SAMPLER",
                "OTEL_RESOURCE_ATTRIBUTES"
            ]
        );
        let volumes = |settings: &Settings| {
            let pod = pod(&build(&input(&three(), 0), settings)).clone();
            let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
            (pod.volumes.unwrap_or_default(), mounts)
        };
        assert!(!volumes(&settings).0.iter().any(|v| v.name == "otlp-tls"), "no TLS Secret, no volume");

        // A private CA, then mutual TLS: the Secret is mounted and its files named.
        let with_tls = |client_certificate| TracingSettings {
            tls: Some(OtlpTls { secret: "collector-tls".to_owned(), client_certificate }),
            ..TracingSettings::new("https://collector:4317")
        };
        settings.gateway.tracing = Some(with_tls(false));
        let vars = env(&settings).expect("env");
        let value = |name: &str| vars.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
        assert_eq!(value("OTEL_EXPORTER_OTLP_CERTIFICATE").as_deref(), Some("/etc/sluice/otlp-tls/ca.crt"));
        assert_eq!(value("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"), None, "no client certificate unless asked");
        let (pod_volumes, mounts) = volumes(&settings);
        let volume = pod_volumes.iter().find(|v| v.name == "otlp-tls").expect("the TLS volume");
        assert_eq!(volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()), Some("collector-tls"));
        let mount = mounts.iter().find(|m| m.name == "otlp-tls").expect("mounted");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/sluice/otlp-tls", Some(true)));
        settings.gateway.tracing = Some(with_tls(true));
        let vars = env(&settings).expect("env");
        let value = |name: &str| vars.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
        assert_eq!(value("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE").as_deref(), Some("/etc/sluice/otlp-tls/tls.crt"));
        assert_eq!(value("OTEL_EXPORTER_OTLP_CLIENT_KEY").as_deref(), Some("/etc/sluice/otlp-tls/tls.key"));
    }

    #[test]
    fn gateway_pods_carry_what_the_charts_pod_monitor_selects() {
        // charts/sluice/templates/monitoring.yaml selects these labels and scrapes this port.
        let objects = build(&input(&three(), 0), &Settings::default());
        let template = &objects.deployment.spec.as_ref().expect("spec").template;
        let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("labels");
        assert_eq!(labels.get("app.kubernetes.io/name").map(String::as_str), Some("sluice-gateway"));
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("sluice-operator"));
        assert_eq!(labels.get("sluice.dev/project").map(String::as_str), Some("team-a"));
        let ports = pod(&objects).containers[0].ports.clone().expect("ports");
        let admin = ports.iter().find(|p| p.name.as_deref() == Some("admin")).expect("a named admin port");
        assert_eq!(admin.container_port, ADMIN_PORT);
    }

    #[test]
    fn an_autoscaled_project_gets_an_autoscaler_and_leaves_replicas_to_it() {
        let fixed = build(&input(&three(), 0), &Settings::default());
        assert!(fixed.autoscaler.is_none());
        let scaled = DataPlaneSpec {
            autoscaling: Some(AutoscalingSpec {
                min_replicas: 2,
                max_replicas: 10,
                target_cpu_utilization_percent: Some(70),
                target_in_flight_per_pod: Some(64),
            }),
            ..three()
        };
        let objects = build(&input(&scaled, 0), &Settings::default());
        assert_eq!(objects.deployment.spec.as_ref().and_then(|s| s.replicas), None, "not applied: the HPA's");
        let applied = serde_json::to_value(&objects.deployment).expect("serializes");
        assert!(applied["spec"].get("replicas").is_none(), "absent from the apply, not null");
        let hpa = objects.autoscaler.expect("an autoscaler").spec.expect("spec");
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 10));
        assert_eq!(hpa.scale_target_ref.name, "sluice-gw-team-a");
        let metrics = hpa.metrics.expect("metrics");
        assert_eq!(metrics[0].resource.as_ref().and_then(|r| r.target.average_utilization), Some(70));
        let pods = metrics[1].pods.as_ref().expect("a pods metric");
        assert_eq!(pods.metric.name, availability::IN_FLIGHT_METRIC);
        assert_eq!(pods.target.average_value, Some(Quantity("64".into())));
    }

    #[test]
    fn the_admin_port_has_its_own_service_a_budget_and_optionally_a_policy() {
        let objects = build(&input(&three(), 0), &Settings::default());
        let ports = |s: &Service| -> Vec<String> {
            s.spec.iter().flat_map(|s| s.ports.iter().flatten()).filter_map(|p| p.name.clone()).collect()
        };
        assert_eq!(ports(&objects.service), ["http"], "the API alone behind the route");
        assert_eq!(objects.admin_service.metadata.name.as_deref(), Some("sluice-gw-admin-team-a"));
        assert_eq!(ports(&objects.admin_service), ["admin"]);
        let budget = objects.disruption_budget.spec.expect("spec");
        assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
        assert!(objects.network_policy.is_none(), "only when asked for");

        let settings = Settings {
            network_policy: Some(NetworkPolicySettings {
                ingress_namespaces: vec!["ingress-nginx".into()],
                monitoring_namespaces: vec!["monitoring".into()],
                operator_namespace: Some("sluice-system".into()),
            }),
            ..Settings::default()
        };
        let policy = build(&input(&three(), 0), &settings).network_policy.expect("a policy").spec.expect("spec");
        let rules = policy.ingress.expect("rules");
        let namespaces = |i: usize| -> Vec<String> {
            rules[i]
                .from
                .iter()
                .flatten()
                .filter_map(|p| p.namespace_selector.clone()?.match_labels?.into_values().next())
                .collect()
        };
        let port = |i: usize| rules[i].ports.as_ref().and_then(|p| p[0].port.clone());
        assert_eq!(
            (namespaces(0), port(0)),
            (vec!["ingress-nginx".to_owned()], Some(IntOrString::String("http".into())))
        );
        assert_eq!(namespaces(1), ["monitoring", "sluice-system"]);
        assert_eq!(port(1), Some(IntOrString::String("admin".into())));
    }
}
