//! Checks the PEM material of a Provider's TLS settings (CA bundles, client certificates) and its
//! server name, with the parsers rustls itself uses but no crypto provider, so what the compiler
//! accepts is what the gateway loads. Messages never quote the material.

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The certificates of a CA bundle, each a valid trust anchor; returns the bundle as text.
pub fn check_ca_bundle(bytes: &[u8]) -> Result<String, String> {
    let text = pem_text(bytes)?;
    let certificates = certificates(bytes)?;
    for (i, certificate) in certificates.iter().enumerate() {
        webpki::anchor_from_trusted_cert(certificate)
            .map_err(|e| format!("certificate {} is not a valid X.509 certificate ({e})", i + 1))?;
    }
    Ok(text)
}

/// A certificate chain (leaf first) and the private key that goes with it; returns both as text.
/// Whether the key matches the certificate takes a crypto provider: the gateway checks that when
/// it loads the configuration.
pub fn check_client_certificate(chain: &[u8], key: &[u8]) -> Result<(String, String), ClientCertificateError> {
    let chain_text = pem_text(chain).map_err(ClientCertificateError::Chain)?;
    let certificates = certificates(chain).map_err(ClientCertificateError::Chain)?;
    if let Some(leaf) = certificates.first() {
        webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| ClientCertificateError::Chain(format!("the first certificate is not valid ({e})")))?;
    }
    // Nothing of the key's parse error is shown: it could quote the key.
    let key_text = pem_text(key).map_err(|_| ClientCertificateError::Key)?;
    PrivateKeyDer::from_pem_slice(key).map_err(|_| ClientCertificateError::Key)?;
    Ok((chain_text, key_text))
}

/// What is wrong with a client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCertificateError {
    /// The certificate chain, and why.
    Chain(String),
    /// The private key is not a PEM private key.
    Key,
}

/// A DNS name or an IP address, as rustls takes it for verification and SNI.
pub fn check_server_name(name: &str) -> Result<(), String> {
    ServerName::try_from(name).map(|_| ()).map_err(|_| format!("{name:?} is not a DNS name or an IP address"))
}

fn pem_text(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not PEM text (binary data)".to_owned())?;
    Ok(text.trim().to_owned() + "\n")
}

fn certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {}", describe(&e)))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certificates)
}

fn describe(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a block has no -----END line",
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        _ => "it cannot be read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_garbage_are_told_apart() {
        assert!(check_server_name("llm.internal").is_ok());
        assert!(check_server_name("10.0.0.7").is_ok());
        assert!(check_server_name("not a name").is_err());
        assert_eq!(
            check_ca_bundle(b"hello").expect_err("refused"),
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        );
        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert_eq!(check_ca_bundle(truncated).expect_err("refused"), "is not valid PEM: a block has no -----END line");
        let not_x509 = b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(
            check_ca_bundle(not_x509)
                .expect_err("refused")
                .starts_with("certificate 1 is not a valid X.509 certificate")
        );
        assert_eq!(check_ca_bundle(&[0xff, 0xfe]).expect_err("refused"), "is not PEM text (binary data)");
        let secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            check_client_certificate(b"", secret).expect_err("refused"),
            ClientCertificateError::Chain("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into())
        );
    }
}
