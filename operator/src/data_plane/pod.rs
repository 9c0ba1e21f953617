//! The gateway pod of a project: its container, volumes and placement.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretProjection, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::{ADMIN_PORT, CONFIG_MOUNT, DataPlaneInput, GATEWAY_NAME, GATEWAY_UID, HTTP_PORT, usage_config_map_name};
use crate::config_secret::{PART_FIELD, part_file_name, primary_name, shard_name};
use crate::labels::{NAME_LABEL, PROJECT_LABEL, project_labels};
use crate::settings::{GatewaySettings, OtlpTls, TracingSettings};

/// Seconds a stopping gateway pod gets when the platform sets none: the gateway's drain period
/// (5 s, `/readyz` failing while it still serves) and its grace for in-flight streams (30 s),
/// with a margin before Kubernetes kills it.
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 45;

/// The volume and folder of the collector's CA (and client certificate) in the gateway pods.
const OTLP_TLS_VOLUME: &str = "otlp-tls";
const OTLP_TLS_MOUNT: &str = "/etc/sluice/otlp-tls";

/// The Secret of the trace export's TLS, when the gateways trace and have one.
fn otlp_tls(gateway: &GatewaySettings) -> Option<&OtlpTls> {
    gateway.tracing.as_ref().and_then(|t| t.tls.as_ref())
}

/// The gateway pod: the container locked down, the config Secrets projected as files (the
/// fallback to watching them), and where it may run: the Project's settings over the
/// platform's defaults.
pub fn pod_spec(input: &DataPlaneInput<'_>, name: &str, gateway: &GatewaySettings) -> PodSpec {
    let spec = input.spec;
    let defaults = &gateway.pod;
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
            env: Some(env(input, gateway)),
            ports: Some(vec![container_port("http", HTTP_PORT), container_port("admin", ADMIN_PORT)]),
            liveness_probe: Some(probe("/healthz", 10)),
            readiness_probe: Some(probe("/readyz", 5)),
            resources: Some(
                spec.resources.clone().or_else(|| defaults.resources.clone()).unwrap_or_else(default_resources),
            ),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(
                [
                    VolumeMount {
                        name: "config".to_owned(),
                        mount_path: CONFIG_MOUNT.to_owned(),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    },
                    VolumeMount { name: "tmp".to_owned(), mount_path: "/tmp".to_owned(), ..VolumeMount::default() },
                ]
                .into_iter()
                .chain(otlp_tls(gateway).map(|_| VolumeMount {
                    name: OTLP_TLS_VOLUME.to_owned(),
                    mount_path: OTLP_TLS_MOUNT.to_owned(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                }))
                .collect(),
            ),
            ..Container::default()
        }],
        volumes: Some(
            [
                Volume {
                    name: "config".to_owned(),
                    projected: Some(ProjectedVolumeSource { default_mode: Some(0o440), sources: Some(sources) }),
                    ..Volume::default()
                },
                Volume {
                    name: "tmp".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
            ]
            .into_iter()
            .chain(otlp_tls(gateway).map(|tls| Volume {
                name: OTLP_TLS_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(tls.secret.clone()),
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            }))
            .collect(),
        ),
        node_selector: spec.node_selector.clone().or_else(|| defaults.node_selector.clone()),
        tolerations: spec.tolerations.clone().or_else(|| defaults.tolerations.clone()),
        affinity: spec.affinity.clone().or_else(|| defaults.affinity.clone()),
        priority_class_name: spec.priority_class_name.clone().or_else(|| defaults.priority_class_name.clone()),
        image_pull_secrets: (!defaults.image_pull_secrets.is_empty()).then(|| {
            defaults.image_pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect()
        }),
        topology_spread_constraints: defaults.topology_spread.then(|| spread(input.slug)),
        termination_grace_period_seconds: Some(
            defaults.termination_grace_period_seconds.unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS),
        ),
        ..PodSpec::default()
    }
}

/// The gateway's environment: its pod's name (its entry in the usage ConfigMap), with shared
/// limits the Redis URL from the platform's Secret and the replica count each replica divides
/// the limits by while Redis is away (the most replicas there may be: a fallback that admits
/// less, never more), the proxies whose forwarding headers name clients, and with tracing the
/// `OTEL_*` variables.
fn env(input: &DataPlaneInput<'_>, gateway: &GatewaySettings) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: "POD_NAME".to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".to_owned(), api_version: None }),
            ..EnvVarSource::default()
        }),
        value: None,
    }];
    if let Some(redis) = &gateway.redis {
        env.push(EnvVar {
            name: "SLUICE_REDIS_URL".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: redis.secret.clone(),
                    key: redis.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        });
        let spec = input.spec;
        let most = spec.autoscaling.as_ref().map_or(spec.replicas, |a| a.max_replicas.max(a.min_replicas));
        env.push(EnvVar {
            name: "SLUICE_REPLICAS_HINT".to_owned(),
            value: Some(most.max(1).to_string()),
            value_from: None,
        });
        // Each project's counters apart, whatever the tenants' key names.
        env.push(EnvVar {
            name: "SLUICE_REDIS_KEY_PREFIX".to_owned(),
            value: Some(format!("sluice:{}", input.slug)),
            value_from: None,
        });
    }
    let plain =
        [("SLUICE_TRUSTED_PROXIES", &gateway.trusted_proxies), ("SLUICE_PROXY_PROTOCOL", &gateway.proxy_protocol)];
    for (name, value) in plain {
        if let Some(value) = value {
            env.push(EnvVar { name: name.to_owned(), value: Some(value.clone()), value_from: None });
        }
    }
    if let Some(tracing) = &gateway.tracing {
        env.extend(tracing_env(input, tracing));
    }
    env
}

/// The OpenTelemetry SDK variables the gateway reads. Its resource attributes end with where
/// the pod runs, so that a trace names the pod and project it came from; `$(POD_NAME)` is
/// expanded by the kubelet from the variable defined before it.
fn tracing_env(input: &DataPlaneInput<'_>, tracing: &TracingSettings) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar { name: name.to_owned(), value: Some(value), value_from: None };
    let mut env = vec![
        value("OTEL_EXPORTER_OTLP_ENDPOINT", tracing.endpoint.clone()),
        value("OTEL_EXPORTER_OTLP_PROTOCOL", tracing.protocol.as_str().to_owned()),
        value("OTEL_TRACES_SAMPLER", tracing.sampler.as_str().to_owned()),
    ];
    if let Some(ratio) = tracing.sampler_arg {
        env.push(value("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()));
    }
    if let Some(service) = &tracing.service_name {
        env.push(value("OTEL_SERVICE_NAME", service.clone()));
    }
    if let Some(headers) = &tracing.headers {
        env.push(EnvVar {
            name: "OTEL_EXPORTER_OTLP_HEADERS".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: headers.secret.clone(),
                    key: headers.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        });
    }
    if let Some(tls) = &tracing.tls {
        env.push(value("OTEL_EXPORTER_OTLP_CERTIFICATE", format!("{OTLP_TLS_MOUNT}/ca.crt")));
        if tls.client_certificate {
            env.push(value("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", format!("{OTLP_TLS_MOUNT}/tls.crt")));
            env.push(value("OTEL_EXPORTER_OTLP_CLIENT_KEY", format!("{OTLP_TLS_MOUNT}/tls.key")));
        }
    }
    let own = [
        ("k8s.namespace.name", input.namespace.to_owned()),
        ("k8s.deployment.name", super::workload_name(input.slug)),
        ("k8s.pod.name", "$(POD_NAME)".to_owned()),
        ("sluice.project", input.slug.to_owned()),
    ];
    let attributes: Vec<String> = tracing
        .resource_attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain(own.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(value("OTEL_RESOURCE_ATTRIBUTES", attributes.join(",")));
    env
}

/// One gateway pod per node and per zone as far as the cluster allows: a node or a zone going
/// down takes only its share of the gateway with it. `ScheduleAnyway`: never left pending.
fn spread(slug: &str) -> Vec<TopologySpreadConstraint> {
    let selector = LabelSelector { match_labels: Some(selector(slug)), ..LabelSelector::default() };
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(selector.clone()),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

/// The labels of a project's gateway pods, as its Deployment, Service and policies select them.
pub fn selector(slug: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NAME_LABEL.to_owned(), GATEWAY_NAME.to_owned()), (PROJECT_LABEL.to_owned(), slug.to_owned())])
}

/// The pod template's labels and annotations: the platform's and the Project's extras under the
/// operator's own labels, which always win.
pub fn pod_metadata(input: &DataPlaneInput<'_>, gateway: &GatewaySettings) -> ObjectMeta {
    let mut labels = gateway.pod.pod_labels.clone();
    labels.extend(input.spec.pod_labels.clone().unwrap_or_default());
    labels.extend(project_labels(input.slug, "gateway"));
    labels.extend(selector(input.slug));
    let mut annotations = gateway.pod.pod_annotations.clone();
    annotations.extend(input.spec.pod_annotations.clone().unwrap_or_default());
    ObjectMeta {
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
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
