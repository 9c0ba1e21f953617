//! Upstream TLS against real sockets: sluice-sim behind TLS with a freshly generated private CA.
//! A Provider that names the CA bundle (a ConfigMap or a Secret) is served; one that does not
//! fails with a 502 that says the upstream's certificate could not be verified, and a log line
//! that says why. With mutual TLS, a Provider with a client certificate is served and one
//! without is told the upstream requires one (and one with a certificate of another CA that it
//! was refused). `serverName` picks the name the certificate is
//! checked against. A broken CA bundle on reload is rejected and the last good configuration
//! keeps serving; the client's private key shows nowhere.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use support::{Gateway, Manifests, Sim, apikey, chat_body, client, eventually};

const KEY: &str = "sl_acme_upstream_tls_0001";

/// A private CA, a serving certificate it signed for 127.0.0.1 and localhost, a client
/// certificate it signed, and a client certificate another CA signed (all PEM).
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    stranger_cert: String,
    stranger_key: String,
}

impl Pki {
    fn generate() -> Self {
        let ca = |name: &str| {
            let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca.distinguished_name.push(DnType::CommonName, name);
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA")
        };
        let leaf = |ca: &CertifiedIssuer<'_, KeyPair>, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).expect("params");
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, ca).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (private, stranger) = (ca("sluice test private CA"), ca("some other CA"));
        let (server_cert, server_key) =
            leaf(&private, vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth);
        let client = vec!["sluice-gateway".to_owned()];
        let (client_cert, client_key) = leaf(&private, client.clone(), ExtendedKeyUsagePurpose::ClientAuth);
        let (stranger_cert, stranger_key) = leaf(&stranger, client, ExtendedKeyUsagePurpose::ClientAuth);
        Self { ca: private.pem(), server_cert, server_key, client_cert, client_key, stranger_cert, stranger_key }
    }

    /// A line from the middle of the client's private key: must show up nowhere.
    fn client_key_line(&self) -> &str {
        self.client_key.lines().nth(1).expect("a key line")
    }
}

/// sluice-sim serving HTTPS on a loopback port (requiring client certificates from `client_ca`).
struct TlsSim {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsSim {
    async fn start(pki: &Pki, client_ca: Option<&str>) -> Self {
        let config = sluice_sim::tls::server_config(
            pki.server_cert.as_bytes(),
            pki.server_key.as_bytes(),
            client_ca.map(str::as_bytes),
        )
        .expect("server TLS config");
        let sim = sluice_sim::Simulator::new(Sim::fast()).expect("valid profile");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = sim.serve_tls_with_shutdown(listener, config, std::future::pending()).await;
        });
        Self { addr, task }
    }

    fn url(&self) -> String {
        format!("https://{}/v1", self.addr)
    }
}

impl Drop for TlsSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `text` as a YAML block scalar for a key indented by two spaces.
fn block(text: &str) -> String {
    let lines: Vec<String> = text.trim_end().lines().map(|l| format!("    {l}")).collect();
    format!("|\n{}", lines.join("\n"))
}

/// A Provider of the one model `m` at `url`, with `tls` (YAML lines under `spec.tls`, or none).
fn provider(name: &str, url: &str, tls: &str) -> String {
    let tls = if tls.is_empty() { String::new() } else { format!("  tls:\n{tls}\n") };
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  type: openai\n  baseUrl: {url}\n{tls}  models: [{{name: m}}]\n"
    )
}

/// The tenant: one exposed model per Provider, each with that Provider as its only backend.
fn manifests(pki: &Pki, ca_config_map: &str, tls_url: &str, mtls_url: &str) -> String {
    let providers = [
        ("private-ca", tls_url, "    caBundle: {configMapKeyRef: {name: llm-ca}}"),
        ("with-system-roots", tls_url, "    caBundle: {configMapKeyRef: {name: llm-ca}}\n    systemRoots: true"),
        ("public-roots-only", tls_url, ""),
        (
            "by-name",
            tls_url,
            "    caBundle: {secretKeyRef: {name: llm-ca-secret, key: bundle.pem}}\n    serverName: localhost",
        ),
        ("wrong-name", tls_url, "    caBundle: {configMapKeyRef: {name: llm-ca}}\n    serverName: llm.example.com"),
        (
            "mtls",
            mtls_url,
            "    caBundle: {configMapKeyRef: {name: llm-ca}}\n    clientCertificate: {secretName: gateway-client}",
        ),
        ("mtls-without-certificate", mtls_url, "    caBundle: {configMapKeyRef: {name: llm-ca}}"),
        (
            "mtls-untrusted-certificate",
            mtls_url,
            "    caBundle: {configMapKeyRef: {name: llm-ca}}\n    clientCertificate: {secretName: stranger-client}",
        ),
    ];
    let acme = support::ACME_PROJECT;
    let mut text = format!(
        r#"{acme}apiVersion: v1
kind: ConfigMap
metadata: {{name: llm-ca, namespace: acme}}
data:
  ca.crt: {}
---
apiVersion: v1
kind: Secret
metadata: {{name: llm-ca-secret, namespace: acme}}
stringData:
  bundle.pem: {}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: gateway-client, namespace: acme}}
stringData:
  tls.crt: {}
  tls.key: {}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: stranger-client, namespace: acme}}
stringData:
  tls.crt: {}
  tls.key: {}
---
"#,
        block(ca_config_map),
        block(&pki.ca),
        block(&pki.client_cert),
        block(&pki.client_key),
        block(&pki.stranger_cert),
        block(&pki.stranger_key),
    );
    let mut models = String::new();
    for (name, url, tls) in providers {
        text.push_str(&provider(name, url, tls));
        text.push_str("---\n");
        models
            .push_str(&format!("    - name: {name}\n      backends: [{{providerRef: {{name: {name}}}, model: m}}]\n"));
    }
    text.push_str(&format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {{name: chat, namespace: acme}}\nspec:\n  slug: chat\n  models:\n{models}---\n"
    ));
    text.push_str(&apikey("acme", "app", KEY, ""));
    text
}

async fn chat(gateway: &Gateway, model: &str) -> (u16, Value) {
    let response = client()
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat_body(model))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// The gateway's warning about `model`'s backend failing its handshake.
fn tls_failure_log(gateway: &Gateway, model: &str) -> Value {
    let needle = format!("acme/{model}/m");
    let logs = gateway.logs_with(&needle);
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["backend"].as_str() == Some(needle.as_str()))
        .unwrap_or_else(|| panic!("no log line for {needle}:\n{logs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_and_a_client_certificate_reach_self_hosted_backends() {
    let pki = Pki::generate();
    let tls_sim = TlsSim::start(&pki, None).await;
    let mtls_sim = TlsSim::start(&pki, Some(&pki.ca)).await;
    let folder = Manifests::new();
    folder.write("tenant.yaml", &manifests(&pki, &pki.ca, &tls_sim.url(), &mtls_sim.url()));
    let gateway = Gateway::start(Some(folder.path()), &[]);

    // With the CA bundle: served, whether it comes from a ConfigMap or a Secret.
    for model in ["private-ca", "with-system-roots", "by-name", "mtls"] {
        let (status, body) = chat(&gateway, model).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["object"], "chat.completion", "{model}: {body}");
    }

    // Without it, the public roots do not know the private CA: a 502 that says so.
    let (status, body) = chat(&gateway, "public-roots-only").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(body["error"]["code"], "upstream_tls_error", "{body}");
    assert_eq!(
        body["error"]["message"],
        "TLS with the upstream for model 'public-roots-only' failed: its certificate could not be verified \
         (not signed by a trusted certificate authority)."
    );
    let log = tls_failure_log(&gateway, "public-roots-only");
    assert_eq!(log["level"], "WARN");
    assert_eq!(log["fields"]["kind"], "tls");
    let detail = log["fields"]["detail"].as_str().expect("detail");
    assert!(detail.contains("UnknownIssuer"), "the log says why: {detail}");

    // A certificate for other names than the one the Provider checks.
    let (status, body) = chat(&gateway, "wrong-name").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("not valid for the upstream's name")),
        "{body}"
    );

    // Mutual TLS without a client certificate: the upstream refuses the handshake.
    let (status, body) = chat(&gateway, "mtls-without-certificate").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_tls_error", "{body}");
    assert_eq!(
        body["error"]["message"],
        "TLS with the upstream for model 'mtls-without-certificate' failed: the TLS handshake failed: the upstream \
         requires a client certificate."
    );
    // The server's alert, or (when the server's close beats it) what the handshake showed.
    let log = tls_failure_log(&gateway, "mtls-without-certificate");
    assert_eq!(log["fields"]["kind"], "tls");
    let detail = log["fields"]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("CertificateRequired") || detail.contains("asked for a client certificate, none is configured"),
        "the log says why: {detail}"
    );

    // A client certificate the upstream does not trust: refused too.
    let (status, body) = chat(&gateway, "mtls-untrusted-certificate").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["error"]["message"],
        "TLS with the upstream for model 'mtls-untrusted-certificate' failed: the TLS handshake failed: the \
         upstream refused the gateway's client certificate."
    );

    // `--print-config` shows the configuration without the private key.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .arg("--config")
        .arg(folder.path())
        .arg("--print-config")
        .env_remove("SLUICE_CONFIG")
        .output()
        .expect("runs");
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("\"privateKey\": \"<redacted>\""), "{printed}");
    assert!(!printed.contains(pki.client_key_line()), "--print-config shows the private key");

    // A CA bundle that is not PEM: the change is rejected, naming the field, and the last good
    // configuration keeps serving.
    folder.write("tenant.yaml", &manifests(&pki, "not a certificate", &tls_sim.url(), &mtls_sim.url()));
    let rejected = eventually(Duration::from_secs(5), || async {
        gateway.log_text().contains("spec.tls.caBundle.configMapKeyRef")
    })
    .await;
    assert!(rejected.is_some(), "the broken bundle was not reported:\n{}", gateway.log_text());
    assert!(
        gateway.log_text().contains("ConfigMap acme/llm-ca key \\\"ca.crt\\\" holds no PEM certificate"),
        "{}",
        gateway.log_text()
    );
    let (status, body) = chat(&gateway, "private-ca").await;
    assert_eq!(status, 200, "the last good configuration serves: {body}");

    // The client's private key is in the configuration, and nowhere else.
    let admin = client().get(gateway.admin_url("/config")).send().await.expect("admin").text().await.expect("text");
    for (what, text) in [("logs", gateway.log_text()), ("/config", admin)] {
        assert!(!text.contains(pki.client_key_line()), "the client's private key shows in {what}");
    }
}
