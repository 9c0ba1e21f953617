//! `--tls-cert`/`--tls-key` serve HTTPS (the ready line says `https://`), and `--tls-client-ca`
//! requires a client certificate signed by that CA.

mod common;

use std::path::PathBuf;

use common::Sim;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the PEM files of a server certificate for 127.0.0.1 and a client certificate.
struct Pki {
    dir: PathBuf,
    ca: String,
    client: String,
}

impl Pki {
    fn generate(name: &str) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name.push(DnType::CommonName, "sim test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &ca).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            leaf(vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(vec!["gateway".into()], ExtendedKeyUsagePurpose::ClientAuth);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("sluice-sim-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        for (file, text) in [("ca.crt", ca.pem()), ("tls.crt", server_cert), ("tls.key", server_key)] {
            std::fs::write(dir.join(file), text).expect("write");
        }
        Self { dir, ca: ca.pem(), client: format!("{client_cert}{client_key}") }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().expect("utf-8 path").to_owned()
    }

    fn client(&self, with_certificate: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca.as_bytes()).expect("CA")]);
        if with_certificate {
            builder = builder.identity(reqwest::Identity::from_pem(self.client.as_bytes()).expect("identity"));
        }
        builder.build().expect("client")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let pki = Pki::generate("tls");
    let sim = Sim::start(&["--tls-cert", &pki.path("tls.crt"), "--tls-key", &pki.path("tls.key")]);
    assert!(sim.url.starts_with("https://127.0.0.1:"), "{}", sim.url);
    let models = pki.client(false).get(sim.at("/v1/models")).send().await.expect("trusted by the CA");
    assert_eq!(models.status(), 200);
    // Without the CA the certificate is not trusted.
    let untrusted = common::client().get(sim.at("/v1/models")).send().await;
    assert!(untrusted.is_err(), "{untrusted:?}");
}

#[tokio::test]
async fn a_client_ca_requires_client_certificates() {
    let pki = Pki::generate("mtls");
    let sim = Sim::start(&[
        "--tls-cert",
        &pki.path("tls.crt"),
        "--tls-key",
        &pki.path("tls.key"),
        "--tls-client-ca",
        &pki.path("ca.crt"),
    ]);
    let with = pki.client(true).get(sim.at("/v1/models")).send().await.expect("a client certificate opens it");
    assert_eq!(with.status(), 200);
    let without = pki.client(false).get(sim.at("/v1/models")).send().await;
    assert!(without.is_err(), "no client certificate, no answer: {without:?}");
}

#[test]
fn a_key_without_a_certificate_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-sim"))
        .args(["--listen", "127.0.0.1:0", "--tls-key", "/nonexistent.key"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}
