//! A self-hosted pool behind a Service: the operator writes the ready pod addresses of the
//! Service's EndpointSlices into the configuration, and follows them as pods come, go and turn
//! unready.

mod common;

use std::time::Duration;

use common::{World, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// An EndpointSlice of Service `vllm` with `(address, ready)` endpoints.
fn slice(name: &str, endpoints: &[(&str, bool)]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(ip, ready)| format!("  - addresses: [\"{ip}\"]\n    conditions: {{ready: {ready}}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/service-name: vllm}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8000, protocol: TCP}}]\nendpoints:\n{}",
        endpoints.concat()
    )
}

#[tokio::test]
async fn a_pool_follows_the_ready_pods_of_its_service() -> anyhow::Result<()> {
    let world = World::start("pools").await?;
    world.apply_simulated_tenant("pools").await?;
    world
        .apply(
            "apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {name: vllm}
spec:
  type: openai
  service: {name: vllm, port: 8000}
  metrics: {intervalMs: 1000}
  models: [{name: llama}]
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {name: self-hosted}
spec:
  slug: self-hosted
  models: [{name: llama, backends: [{providerRef: {name: vllm}, model: llama}]}]
",
        )
        .await?;
    let pods = |want: &'static [&'static str]| {
        let world = &world;
        let tenant = world.tenant.clone();
        async move {
            eventually(&format!("the pool's pods to be {want:?}"), WAIT, || async {
                let config = world.config("pools").await?;
                let pods =
                    config.as_ref().and_then(|c| c.providers.get(&format!("{tenant}/vllm"))).map(|p| p.pods.clone());
                Ok(match pods {
                    Some(pods) if pods == want => Ok(()),
                    other => Err(format!("{other:?}")),
                })
            })
            .await
        }
    };
    // No slice yet: a pool without pods, served all the same.
    pods(&[]).await?;

    world.apply(&slice("vllm-a", &[("10.1.0.7", true), ("10.1.0.8", false)])).await?;
    world.apply(&slice("vllm-b", &[("10.1.0.9", true)])).await?;
    pods(&["http://10.1.0.7:8000/v1", "http://10.1.0.9:8000/v1"]).await?;

    // A pod turns ready, another goes.
    world.apply(&slice("vllm-a", &[("10.1.0.8", true)])).await?;
    pods(&["http://10.1.0.8:8000/v1", "http://10.1.0.9:8000/v1"]).await?;
    let config = world.config("pools").await?.expect("config");
    let provider = &config.providers[&format!("{}/vllm", world.tenant)];
    assert_eq!(provider.service.as_ref().map(|s| s.name.as_str()), Some("vllm"));
    assert!(config.endpoints.contains_key("self-hosted"));
    Ok(())
}
