//! What keeps a project's gateway available and contained: a PodDisruptionBudget, a
//! HorizontalPodAutoscaler when the Project scales with load, and a NetworkPolicy when the
//! platform asks for one.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::{DataPlaneInput, selector, workload_name};
use crate::settings::NetworkPolicySettings;

/// The metric an in-flight target scales on, as the gateway exports it per pod.
pub const IN_FLIGHT_METRIC: &str = "sluice_requests_in_flight";

/// Node drains and other voluntary disruptions evict one gateway pod at a time.
pub fn disruption_budget(input: &DataPlaneInput<'_>, metadata: ObjectMeta) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector(input.slug)), ..LabelSelector::default() }),
            // A pod that never became ready may be evicted whatever the budget says.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The HorizontalPodAutoscaler of a Project with `spec.dataPlane.autoscaling`: CPU utilisation
/// and/or requests in flight per pod.
pub fn autoscaler(input: &DataPlaneInput<'_>, metadata: ObjectMeta) -> Option<HorizontalPodAutoscaler> {
    let scaling = input.spec.autoscaling.as_ref()?;
    let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let mut metrics = Vec::new();
    if let Some(percent) = scaling.target_cpu_utilization_percent {
        metrics.push(MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: "cpu".to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(to_i32(percent)),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    if let Some(per_pod) = scaling.target_in_flight_per_pod {
        metrics.push(MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier { name: IN_FLIGHT_METRIC.to_owned(), selector: None },
                target: MetricTarget {
                    type_: "AverageValue".to_owned(),
                    average_value: Some(Quantity(per_pod.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: workload_name(input.slug),
            },
            min_replicas: Some(to_i32(scaling.min_replicas)),
            max_replicas: to_i32(scaling.max_replicas.max(scaling.min_replicas)),
            metrics: Some(metrics),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        status: None,
    })
}

/// Who may reach the gateway pods: the API port from the ingress controller's namespaces, the
/// admin port from the monitoring namespaces and the operator's; nothing else.
pub fn network_policy(
    input: &DataPlaneInput<'_>,
    metadata: ObjectMeta,
    policy: &NetworkPolicySettings,
) -> NetworkPolicy {
    let from = |namespaces: &[String]| -> Vec<NetworkPolicyPeer> {
        namespaces
            .iter()
            .map(|ns| NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some([("kubernetes.io/metadata.name".to_owned(), ns.clone())].into()),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            })
            .collect()
    };
    let port = |name: &str| {
        vec![NetworkPolicyPort {
            port: Some(IntOrString::String(name.to_owned())),
            protocol: Some("TCP".to_owned()),
            ..NetworkPolicyPort::default()
        }]
    };
    let mut admin_from = policy.monitoring_namespaces.clone();
    admin_from.extend(policy.operator_namespace.clone());
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(selector(input.slug)), ..LabelSelector::default() }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule { from: Some(from(&policy.ingress_namespaces)), ports: Some(port("http")) },
                NetworkPolicyIngressRule { from: Some(from(&admin_from)), ports: Some(port("admin")) },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}
