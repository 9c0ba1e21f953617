//! A Provider's `spec.tls`: a CA bundle from a Secret or a ConfigMap and a client certificate
//! compile into the configuration; bad PEM, missing objects and missing keys are problems that
//! name the field, and such a Provider is left out like any broken one. The private key never
//! shows in `Debug` output or a redacted configuration.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sluice_crds::compile::{CompileOptions, compile, compile_partially};
use sluice_crds::manifests::load_str;
use sluice_crds::objects::Object;

const MINIMAL: &str = include_str!("fixtures/minimal.yaml");
const PROVIDER: &str = "sluice-system/deepseek";

/// A CA certificate, and a client certificate it signed with the client's private key (PEM).
struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let client_key = KeyPair::generate().expect("key");
    let client = CertificateParams::new(vec!["gateway".to_owned()]).expect("params");
    let client_cert = client.signed_by(&client_key, &ca).expect("signed");
    Pki { ca: ca.pem(), client_cert: client_cert.pem(), client_key: client_key.serialize_pem() }
}

/// `text` as a YAML block scalar under a key indented by `indent` spaces.
fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent + 2);
    let lines: Vec<String> = text.trim_end().lines().map(|l| format!("{pad}{l}")).collect();
    format!("|\n{}", lines.join("\n"))
}

/// The minimal tenant whose Provider has `tls` (YAML lines under `spec.tls`), with `extra`
/// documents in the Provider's namespace.
fn with_tls(tls: &str, extra: &[String]) -> String {
    let mut text = MINIMAL.replacen(
        "  credentials: {secretKeyRef: {name: upstream, key: token}}\n",
        &format!("  credentials: {{secretKeyRef: {{name: upstream, key: token}}}}\n  tls:\n{tls}\n"),
        1,
    );
    for document in extra {
        text.push_str("\n---\n");
        text.push_str(document);
    }
    text
}

fn secret(name: &str, entries: &[(&str, &str)]) -> String {
    let data: Vec<String> = entries.iter().map(|(k, v)| format!("  {k}: {}", block(v, 2))).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: sluice-system}}\nstringData:\n{}",
        data.join("\n")
    )
}

fn config_map(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: sluice-system}}\ndata:\n  {key}: {}",
        block(value, 2)
    )
}

fn objects(text: &str) -> Vec<Object> {
    load_str(Path::new("test.yaml"), text).expect("documents load").objects
}

fn compile_errors(text: &str) -> Vec<String> {
    match compile(&objects(text), &CompileOptions::default()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_private_ca_and_a_client_certificate_compile_into_the_provider() {
    let pki = pki();
    let text = with_tls(
        "    caBundle: {configMapKeyRef: {name: llm-ca}}\n    clientCertificate: {secretName: gateway-client}\n    serverName: llm.internal",
        &[
            config_map("llm-ca", "ca.crt", &pki.ca),
            secret("gateway-client", &[("tls.crt", &pki.client_cert), ("tls.key", &pki.client_key)]),
        ],
    );
    let configs = compile(&objects(&text), &CompileOptions::default()).expect("compiles");
    let tls = configs[0].providers[PROVIDER].tls.clone().expect("tls settings");
    assert_eq!(tls.ca_bundle.as_deref(), Some(pki.ca.as_str()));
    assert_eq!(tls.server_name.as_deref(), Some("llm.internal"));
    assert!(!tls.system_roots);
    let client = tls.client_certificate.clone().expect("client certificate");
    assert_eq!(client.certificate_chain, pki.client_cert);
    assert_eq!(client.private_key.expose(), pki.client_key);
    assert!(configs[0].validate().is_ok());

    // The key is in the configuration (a Secret), but nowhere it could be shown.
    let key_body = pki.client_key.lines().nth(1).expect("a line of the key");
    assert!(!format!("{configs:?}").contains(key_body), "the private key leaks through Debug");
    let shown = serde_json::to_string(&configs[0].redacted()).expect("serialises");
    assert!(!shown.contains(key_body), "the private key survives redaction");
    assert!(shown.contains("\"privateKey\":\"<redacted>\""), "{shown}");

    // A Secret works as well as a ConfigMap, with any key.
    let text = with_tls(
        "    caBundle: {secretKeyRef: {name: llm-ca, key: bundle.pem}}\n    systemRoots: true",
        &[secret("llm-ca", &[("bundle.pem", &pki.ca)])],
    );
    let configs = compile(&objects(&text), &CompileOptions::default()).expect("compiles");
    let tls = configs[0].providers[PROVIDER].tls.clone().expect("tls settings");
    assert!(tls.system_roots && tls.ca_bundle.is_some() && tls.client_certificate.is_none());
}

#[test]
fn bad_pem_and_missing_objects_or_keys_are_problems_that_name_the_field() {
    let pki = pki();
    let problem = |field: &str, message: &str| format!("Provider {PROVIDER}: spec.tls{field}: {message}");
    let cases = [
        (
            with_tls(
                "    caBundle: {secretKeyRef: {name: llm-ca}}",
                &[secret("llm-ca", &[("ca.crt", "not a certificate")])],
            ),
            problem(
                ".caBundle.secretKeyRef",
                "Secret sluice-system/llm-ca key \"ca.crt\" holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ),
        ),
        (
            with_tls("    caBundle: {configMapKeyRef: {name: llm-ca}}", &[]),
            problem(".caBundle.configMapKeyRef", "no ConfigMap \"llm-ca\" in namespace sluice-system"),
        ),
        (
            with_tls(
                "    caBundle: {configMapKeyRef: {name: llm-ca, key: root.pem}}",
                &[config_map("llm-ca", "ca.crt", &pki.ca)],
            ),
            problem(".caBundle.configMapKeyRef", "ConfigMap sluice-system/llm-ca has no key \"root.pem\""),
        ),
        (
            with_tls(
                "    caBundle: {configMapKeyRef: {name: llm-ca}}",
                &[config_map("llm-ca", "ca.crt", &pki.ca.replace("-----END CERTIFICATE-----", ""))],
            ),
            problem(
                ".caBundle.configMapKeyRef",
                "ConfigMap sluice-system/llm-ca key \"ca.crt\" is not valid PEM: a block has no -----END line",
            ),
        ),
        (
            with_tls(
                "    caBundle: {configMapKeyRef: {name: llm-ca}, secretKeyRef: {name: llm-ca}}",
                &[config_map("llm-ca", "ca.crt", &pki.ca)],
            ),
            problem(".caBundle", "set exactly one of secretKeyRef and configMapKeyRef"),
        ),
        (
            with_tls(
                "    clientCertificate: {secretName: client}",
                &[secret("client", &[("tls.crt", &pki.client_cert)])],
            ),
            problem(
                ".clientCertificate.secretName",
                "Secret sluice-system/client has no key \"tls.key\" (a kubernetes.io/tls Secret holds tls.crt and tls.key)",
            ),
        ),
        (
            with_tls(
                "    clientCertificate: {secretName: client}",
                &[secret("client", &[("tls.crt", &pki.client_cert), ("tls.key", "sk-not-a-key-but-secret")])],
            ),
            problem(
                ".clientCertificate.secretName",
                "Secret sluice-system/client key \"tls.key\" holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            ),
        ),
        (
            with_tls(
                "    clientCertificate: {secretName: client}",
                &[secret("client", &[("tls.crt", &pki.client_key), ("tls.key", &pki.client_key)])],
            ),
            problem(
                ".clientCertificate.secretName",
                "Secret sluice-system/client key \"tls.crt\" holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            ),
        ),
        (
            with_tls("    serverName: not a host", &[]),
            problem(".serverName", "\"not a host\" is not a DNS name or an IP address"),
        ),
        (
            with_tls("    systemRoots: true", &[]).replace("https://api.deepseek.com/v1", "http://10.0.0.7:8000/v1"),
            problem(
                "",
                "the upstream is called over plain http: TLS settings need an https URL (spec.baseUrl, spec.addresses or spec.service.scheme)",
            ),
        ),
    ];
    for (text, expected) in cases {
        let errors = compile_errors(&text);
        assert_eq!(errors, std::slice::from_ref(&expected), "{expected}");
        assert!(!errors[0].contains("sk-not-a-key-but-secret"), "a message quotes the key: {}", errors[0]);
    }
}

#[test]
fn a_provider_whose_tls_cannot_be_set_up_is_left_out() {
    let text = with_tls(
        "    caBundle: {secretKeyRef: {name: llm-ca}}",
        &[secret("llm-ca", &[("ca.crt", "not a certificate")])],
    );
    let objects = objects(&text);
    let Some(Object::Project(project)) = objects.iter().find(|o| matches!(o, Object::Project(_))) else {
        panic!("a Project")
    };
    let partial = compile_partially(project, &objects, &CompileOptions::default());
    // The Endpoint's only backend is gone with its Provider: it has nothing left to serve.
    let config = partial.config.expect("the Project itself compiles");
    assert!(config.providers.is_empty() && config.endpoints.is_empty(), "{config:?}");
    let provider_problems: Vec<&String> =
        partial.problems.iter().filter(|(o, _)| o.kind == "Provider").flat_map(|(_, p)| p).collect();
    assert_eq!(provider_problems.len(), 1);
    assert!(provider_problems[0].starts_with("spec.tls.caBundle.secretKeyRef: "), "{provider_problems:?}");
}

#[test]
fn a_compiled_configuration_with_bad_tls_material_does_not_validate() {
    let pki = pki();
    let text = with_tls("    caBundle: {configMapKeyRef: {name: llm-ca}}", &[config_map("llm-ca", "ca.crt", &pki.ca)]);
    let mut config = compile(&objects(&text), &CompileOptions::default()).expect("compiles").remove(0);
    let provider = config.providers.get_mut(PROVIDER).expect("provider");
    provider.tls.as_mut().expect("tls").ca_bundle = Some("garbage".into());
    provider.tls.as_mut().expect("tls").server_name = Some("no spaces allowed".into());
    assert_eq!(
        config.validate().expect_err("invalid"),
        [
            format!("providers.{PROVIDER}.tls.caBundle: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            format!("providers.{PROVIDER}.tls.serverName: \"no spaces allowed\" is not a DNS name or an IP address"),
        ]
    );
}
