//! A Provider's TLS material in the cluster: the CA bundle (a ConfigMap) and the client
//! certificate (a `kubernetes.io/tls` Secret) in the Provider's namespace are compiled into the
//! configuration, a change to either reaches it, and a bundle that breaks leaves the Provider out
//! (its status says why) while the rest of the project is served.

mod common;

use std::time::Duration;

use common::{World, condition, eventually};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sluice_crds::api::Provider;
use sluice_crds::config::UpstreamTls;

const WAIT: Duration = Duration::from_secs(60);

/// A CA's certificate, and a client certificate it signed with its key (PEM).
fn pki(name: &str) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["sluice-gateway".to_owned()]).expect("params").signed_by(&key, &ca);
    (ca.pem(), cert.expect("signed").pem(), key.serialize_pem())
}

/// `text` as a YAML block scalar for a key indented by two spaces.
fn block(text: &str) -> String {
    let lines: Vec<String> = text.trim_end().lines().map(|l| format!("    {l}")).collect();
    format!("|\n{}", lines.join("\n"))
}

fn ca_config_map(pem: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: llm-ca}}\ndata:\n  ca.crt: {}\n", block(pem))
}

fn client_secret(cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: gateway-client}}\nstringData:\n  tls.crt: {}\n  tls.key: {}\n",
        block(cert),
        block(key)
    )
}

#[tokio::test]
async fn ca_bundles_and_client_certificates_are_gathered_and_followed() -> anyhow::Result<()> {
    let world = World::start("upstream-tls").await?;
    world.apply_simulated_tenant("tls").await?;
    let (ca, cert, key) = pki("first CA");
    world.apply(&ca_config_map(&ca)).await?;
    world.apply(&client_secret(&cert, &key)).await?;
    world
        .apply(
            "apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {name: vllm}
spec:
  type: openai
  baseUrl: https://10.1.0.7:8443/v1
  tls:
    caBundle: {configMapKeyRef: {name: llm-ca}}
    clientCertificate: {secretName: gateway-client}
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
    let id = format!("{}/vllm", world.tenant);
    let tls = |want: &'static str| {
        let (world, id) = (&world, id.clone());
        async move {
            eventually(&format!("the Provider's TLS settings to be {want}"), WAIT, || async {
                let config = world.config("tls").await?;
                let tls: Option<UpstreamTls> = config.and_then(|c| c.providers.get(&id)?.tls.clone());
                Ok(tls.ok_or_else(|| "no TLS settings (or no Provider) in the configuration".to_owned()))
            })
            .await
        }
    };
    let first = tls("compiled").await?;
    assert_eq!(first.ca_bundle.as_deref(), Some(ca.as_str()));
    let client = first.client_certificate.expect("a client certificate");
    assert_eq!((client.certificate_chain.as_str(), client.private_key.expose()), (cert.as_str(), key.as_str()));

    // A new CA in the ConfigMap reaches the configuration: the ConfigMap is watched.
    let (rotated, _, _) = pki("second CA");
    world.apply(&ca_config_map(&rotated)).await?;
    eventually("the rotated CA to reach the configuration", WAIT, || async {
        let config = world.config("tls").await?;
        let bundle = config.and_then(|c| c.providers.get(&id)?.tls.clone()?.ca_bundle);
        Ok(if bundle.as_deref() == Some(rotated.as_str()) { Ok(()) } else { Err("the first CA".to_owned()) })
    })
    .await?;

    // A bundle that is not PEM: the Provider is left out and says why; the rest is served.
    world.apply(&ca_config_map("not a certificate")).await?;
    let providers = world.api::<Provider>(&world.tenant);
    let message = eventually("the Provider to be Invalid", WAIT, || async {
        let provider = providers.get("vllm").await?;
        let conditions = provider.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "Ready") {
            Some(c) if c.status == "False" => Ok(c.message.clone()),
            other => Err(format!("{other:?}")),
        })
    })
    .await?;
    assert!(
        message.contains("spec.tls.caBundle.configMapKeyRef")
            && message.contains(&format!("ConfigMap {}/llm-ca key \"ca.crt\" holds no PEM certificate", world.tenant)),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    eventually("the broken Provider to leave the configuration", WAIT, || async {
        let config = world.config("tls").await?.expect("a configuration");
        Ok(if config.providers.contains_key(&id) {
            Err("still there".to_owned())
        } else if config.endpoints.contains_key("chat") {
            Ok(())
        } else {
            Err("the simulated tenant is not served".to_owned())
        })
    })
    .await?;
    Ok(())
}
