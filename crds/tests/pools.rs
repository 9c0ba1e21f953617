//! Self-hosted pools in the API: a Provider names a Service or a static list of pod addresses;
//! the schema allows at most one of `baseUrl`, `service` and `addresses` (a CEL rule the
//! compiler also checks), the compiler fills `pods` from `addresses`, leaves a Service's to the
//! operator, and refuses a Service in standalone mode.

use std::path::Path;

use sluice_crds::compile::{CompileOptions, GeneratedKeys, ServiceEndpoints, compile};
use sluice_crds::config::GatewayConfig;
use sluice_crds::manifests::load_str;

const MINIMAL: &str = include_str!("fixtures/minimal.yaml");
const PROVIDER: &str = "  baseUrl: https://api.deepseek.com/v1\n";

/// The minimal tenant with its Provider's `baseUrl` line replaced by `with`.
fn tenant(with: &str) -> String {
    assert!(MINIMAL.contains(PROVIDER));
    MINIMAL.replacen(PROVIDER, with, 1)
}

fn compiled(text: &str, options: &CompileOptions) -> Result<Vec<GatewayConfig>, Vec<String>> {
    let manifests =
        load_str(Path::new("test.yaml"), text).map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    compile(&manifests.objects, options).map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn operator() -> CompileOptions {
    CompileOptions {
        generated_keys: GeneratedKeys::Operator,
        services: ServiceEndpoints::Operator,
        ..Default::default()
    }
}

#[test]
fn addresses_become_sorted_pods() {
    let text = tenant(
        "  addresses: [\"http://10.0.0.9:8000/v1/\", \"http://10.0.0.2:8000/v1\"]\n  metrics: {intervalMs: 500}\n",
    );
    let configs = compiled(&text, &CompileOptions::default()).expect("compiles");
    let provider = &configs[0].providers["sluice-system/deepseek"];
    assert_eq!(provider.pods, ["http://10.0.0.2:8000/v1", "http://10.0.0.9:8000/v1"]);
    assert!(provider.is_pool() && provider.base_url.is_none() && provider.service.is_none());
    let metrics = provider.pod_metrics.as_ref().expect("metrics");
    assert_eq!((metrics.path.as_str(), metrics.interval_ms), ("/metrics", 500), "the path defaults");
    assert_eq!(configs[0].validate(), Ok(()));
}

#[test]
fn a_service_is_left_for_the_operator_to_resolve() {
    let text = tenant("  service: {name: vllm, port: 8000}\n");
    let configs = compiled(&text, &operator()).expect("compiles with the operator");
    let provider = &configs[0].providers["sluice-system/deepseek"];
    assert!(provider.pods.is_empty(), "the operator fills pods from EndpointSlices");
    assert!(provider.is_pool(), "a pool even before any pod is ready");
    let service = provider.service.as_ref().expect("service");
    assert_eq!((service.namespace.as_str(), service.name.as_str(), service.port), ("sluice-system", "vllm", 8000));
    assert_eq!(service.pod_url("10.1.2.3"), "http://10.1.2.3:8000/v1");
    assert_eq!(service.pod_url("fd00::3"), "http://[fd00::3]:8000/v1");
    assert_eq!(configs[0].validate(), Ok(()));
}

#[test]
fn a_service_in_standalone_mode_says_to_list_addresses() {
    let text = tenant("  service: {name: vllm, port: 8000, scheme: https, path: /api/v1}\n");
    let errors = compiled(&text, &CompileOptions::default()).expect_err("no cluster");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("Provider sluice-system/deepseek: spec.service: "), "{errors:?}");
    assert!(errors[0].contains("standalone") && errors[0].contains("spec.addresses"), "{errors:?}");
}

#[test]
fn at_most_one_place_to_send_requests() {
    let both = tenant("  baseUrl: https://api.deepseek.com/v1\n  addresses: [\"http://10.0.0.2:8000/v1\"]\n");
    assert_eq!(
        compiled(&both, &operator()).expect_err("two places"),
        ["Provider sluice-system/deepseek: spec: set at most one of spec.baseUrl, spec.service and spec.addresses"]
    );
    let none = tenant("");
    let errors = compiled(&none, &operator()).expect_err("nowhere");
    assert!(errors[0].contains("spec.baseUrl: required for type openai"), "{errors:?}");
    let stray = tenant("  baseUrl: https://api.deepseek.com/v1\n  metrics: {}\n");
    assert_eq!(
        compiled(&stray, &operator()).expect_err("metrics without a pool"),
        ["Provider sluice-system/deepseek: spec.metrics: only for a pool (spec.service or spec.addresses)"]
    );
    let twice = tenant("  addresses: [\"http://10.0.0.2:8000/v1\", \"http://10.0.0.2:8000/v1/\"]\n");
    let errors = compiled(&twice, &operator()).expect_err("a pod twice");
    assert!(errors[0].contains("spec.addresses[1]") && errors[0].contains("listed twice"), "{errors:?}");
}

#[test]
fn the_schema_checks_addresses_and_carries_the_cel_rules() {
    let errors = compiled(&tenant("  addresses: [\"ftp://10.0.0.2/v1\"]\n"), &operator()).expect_err("not http");
    assert!(errors[0].contains("spec.addresses[0]"), "{errors:?}");
    let crd = sluice_crds::crd_manifests::all()
        .into_iter()
        .find(|(file, _)| *file == "providers.sluice.dev.yaml")
        .expect("Provider CRD")
        .1;
    let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()))
        .expect("schema");
    let rules = schema["properties"]["spec"]["x-kubernetes-validations"].as_array().cloned().unwrap_or_default();
    let messages: Vec<&str> = rules.iter().filter_map(|r| r["message"].as_str()).collect();
    assert!(messages.contains(&"set at most one of spec.baseUrl, spec.service and spec.addresses"), "{messages:?}");
    assert!(
        rules.iter().any(|r| r["rule"]
            == "(has(self.baseUrl) ? 1 : 0) + (has(self.service) ? 1 : 0) + (has(self.addresses) ? 1 : 0) <= 1"),
        "{rules:#?}"
    );
    let service = &schema["properties"]["spec"]["properties"]["service"]["properties"];
    assert_eq!(service["port"]["maximum"].as_f64(), Some(65_535.0));
    assert_eq!(service["scheme"]["enum"], serde_json::json!(["http", "https"]));
}
