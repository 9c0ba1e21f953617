//! The objects of one project's data plane in the data-plane namespace, built from the Project
//! and its config Secrets: ServiceAccount, Role and RoleBinding (read the config Secrets and
//! report usage, by name, nothing else), the usage ConfigMap, Deployment, Service and the route
//! that publishes `/<slug>/`. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use sha2::{Digest, Sha256};

use crate::config_secret::{PART_FIELD, part_file_name, primary_name, shard_name};
use crate::labels::{NAME_LABEL, OWNER_ANNOTATION, PROJECT_LABEL, project_labels};
use crate::settings::{GatewaySettings, RouteKind, RouteSettings};

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
    /// Gateway pods.
    pub replicas: u32,
    /// The Project's resources, if any.
    pub resources: Option<&'a ResourceRequirements>,
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
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// The gateway pods.
    pub deployment: Deployment,
    /// In front of the pods.
    pub service: Service,
    /// Publishes `/<slug>/`.
    pub route: Route,
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
pub fn build(input: &DataPlaneInput<'_>, gateway: &GatewaySettings, route: &RouteSettings) -> DataPlaneObjects {
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

    let selector = BTreeMap::from([
        (NAME_LABEL.to_owned(), GATEWAY_NAME.to_owned()),
        (PROJECT_LABEL.to_owned(), input.slug.to_owned()),
    ]);
    let mut pod_labels = project_labels(input.slug, "gateway");
    pod_labels.extend(selector.clone());
    let deployment = Deployment {
        metadata: meta("gateway"),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(input.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(pod_spec(input, &name, gateway)),
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
    let service = Service {
        metadata: meta("gateway"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector),
            ports: Some(vec![port("http", HTTP_PORT), port("admin", ADMIN_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let route = match route.kind {
        RouteKind::None => Route::None,
        RouteKind::Ingress => Route::Ingress(ingress(input, &name, meta("gateway"), route)),
        RouteKind::HttpRoute => Route::HttpRoute(http_route(input, &name, meta("gateway"), route)),
    };
    DataPlaneObjects { service_account, role, usage_config_map, role_binding, deployment, service, route }
}

fn pod_spec(input: &DataPlaneInput<'_>, name: &str, gateway: &GatewaySettings) -> PodSpec {
    let primary = primary_name(input.slug);
    let mut sources = vec![VolumeProjection {
        secret: Some(SecretProjection { name: primary.clone(), ..SecretProjection::default() }),
        ..VolumeProjection::default()
    }];
    for index in 0..input.shards {
        sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                name: shard_name(input.slug, index),
                items: Some(vec![KeyToPath { key: PART_FIELD.to_owned(), path: part_file_name(index), mode: None }]),
                optional: None,
            }),
            ..VolumeProjection::default()
        });
    }
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let container_port = |name: &str, port: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    PodSpec {
        service_account_name: Some(name.to_owned()),
        // The gateway watches its config Secrets through the API with this token.
        automount_service_account_token: Some(true),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(GATEWAY_UID),
            run_as_group: Some(GATEWAY_UID),
            fs_group: Some(GATEWAY_UID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: "gateway".to_owned(),
            image: Some(gateway.image.clone()),
            image_pull_policy: gateway.image_pull_policy.clone(),
            args: Some(vec![
                "--config-secret".to_owned(),
                format!("{}/{primary}", input.namespace),
                "--config".to_owned(),
                CONFIG_MOUNT.to_owned(),
                "--listen".to_owned(),
                format!("0.0.0.0:{HTTP_PORT}"),
                "--admin-listen".to_owned(),
                format!("0.0.0.0:{ADMIN_PORT}"),
                "--log-format".to_owned(),
                "json".to_owned(),
                "--usage-configmap".to_owned(),
                format!("{}/{}", input.namespace, usage_config_map_name(input.slug)),
            ]),
            // The pod's name names its entry in the usage ConfigMap.
            env: Some(vec![EnvVar {
                name: "POD_NAME".to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".to_owned(), api_version: None }),
                    ..EnvVarSource::default()
                }),
                value: None,
            }]),
            ports: Some(vec![container_port("http", HTTP_PORT), container_port("admin", ADMIN_PORT)]),
            liveness_probe: Some(probe("/healthz", 10)),
            readiness_probe: Some(probe("/readyz", 5)),
            resources: Some(input.resources.cloned().unwrap_or_else(default_resources)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "config".to_owned(),
                    mount_path: CONFIG_MOUNT.to_owned(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
                VolumeMount { name: "tmp".to_owned(), mount_path: "/tmp".to_owned(), ..VolumeMount::default() },
            ]),
            ..Container::default()
        }],
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                projected: Some(ProjectedVolumeSource { default_mode: Some(0o440), sources: Some(sources) }),
                ..Volume::default()
            },
            Volume { name: "tmp".to_owned(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        ]),
        ..PodSpec::default()
    }
}

/// Requests and limits of gateway pods whose Project sets none.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("64Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("256Mi".to_owned()))])),
        ..ResourceRequirements::default()
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
    use k8s_openapi::api::core::v1::ResourceRequirements;

    use super::*;
    use crate::settings::ParentRef;

    fn input(shards: usize) -> DataPlaneInput<'static> {
        DataPlaneInput {
            slug: "team-a",
            owner: "team-a/team-a",
            namespace: "sluice-dataplanes",
            replicas: 3,
            resources: None,
            shards,
        }
    }

    fn pod(objects: &DataPlaneObjects) -> &PodSpec {
        objects.deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
    }

    #[test]
    fn the_deployment_runs_the_gateway_locked_down_with_the_config_contract() {
        let objects = build(&input(0), &GatewaySettings::default(), &RouteSettings::default());
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
        let mount = &container.volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (CONFIG_MOUNT, Some(true)));
    }

    #[test]
    fn shards_are_projected_as_numbered_files_and_readable_by_name_only() {
        let objects = build(&input(2), &GatewaySettings::default(), &RouteSettings::default());
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
        let objects = build(&input(0), &GatewaySettings::default(), &RouteSettings::default());
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
        let objects = build(
            &DataPlaneInput { resources: Some(&resources), ..input(0) },
            &GatewaySettings::default(),
            &RouteSettings::default(),
        );
        assert_eq!(pod(&objects).containers[0].resources.as_ref(), Some(&resources));
    }

    #[test]
    fn routes_publish_the_project_path() {
        let settings = RouteSettings {
            ingress_class: Some("nginx".into()),
            host: Some("llm.example.com".into()),
            ..RouteSettings::default()
        };
        let Route::Ingress(ingress) = build(&input(0), &GatewaySettings::default(), &settings).route else {
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
        let Route::HttpRoute(route) = build(&input(0), &GatewaySettings::default(), &settings).route else {
            panic!("an HTTPRoute")
        };
        assert_eq!(route.types.as_ref().map(|t| t.kind.as_str()), Some("HTTPRoute"));
        assert_eq!(route.data["spec"]["parentRefs"][0]["name"], "public");
        assert_eq!(route.data["spec"]["rules"][0]["matches"][0]["path"]["value"], "/team-a/");
        assert_eq!(route.data["spec"]["rules"][0]["backendRefs"][0]["name"], "sluice-gw-team-a");
        assert_eq!(route.data["spec"]["hostnames"][0], "llm.example.com");
        let none = RouteSettings { kind: RouteKind::None, ..RouteSettings::default() };
        assert_eq!(build(&input(0), &GatewaySettings::default(), &none).route, Route::None);
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
}
