//! The OTLP pipeline from the gateway's flags (each also read from the environment variable
//! the OpenTelemetry SDKs read): exporter (gRPC or HTTP/protobuf, over TLS to an `https://`
//! endpoint, with a private CA and a client certificate when given), headers, sampler and
//! resource. Spans leave in batches from the SDK's own thread, so exporting never runs on
//! the request path; the batch size and delay follow `OTEL_BSP_*`. A failed export (a
//! collector down, a certificate not trusted) is logged as a warning, at most once a minute,
//! and the spans are dropped: the gateway serves on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};

use super::Traces;
use crate::settings::{OtlpProtocol, Settings, TraceSampler};

/// The TLS material for the OTLP endpoint, read from the files the settings name.
#[derive(Default)]
struct OtlpTls {
    /// PEM CA certificates trusted in place of the public roots.
    ca: Option<Vec<u8>>,
    /// PEM client certificate chain and key.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl OtlpTls {
    /// The files the settings name (a `_TRACES_` variable over the generic one), read.
    fn from_settings(settings: &Settings) -> Result<Self, String> {
        let pick = |traces: &Option<PathBuf>, generic: &Option<PathBuf>| traces.clone().or_else(|| generic.clone());
        let read = |flag: &str, path: &Path| std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()));
        let ca = pick(&settings.otlp_traces_ca_file, &settings.otlp_ca_file);
        let certificate = pick(&settings.otlp_traces_client_certificate, &settings.otlp_client_certificate);
        let key = pick(&settings.otlp_traces_client_key, &settings.otlp_client_key);
        let identity = match (certificate, key) {
            (Some(certificate), Some(key)) => {
                Some((read("--otlp-client-certificate", &certificate)?, read("--otlp-client-key", &key)?))
            }
            (None, None) => None,
            _ => return Err("--otlp-client-certificate and --otlp-client-key go together".to_owned()),
        };
        let ca = ca.map(|path| read("--otlp-ca-file", &path)).transpose()?;
        Ok(Self { ca, identity })
    }

    fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// The gRPC channel's TLS: the CA given, else the public roots.
    fn grpc(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_webpki_roots(),
        };
        if let Some((certificate, key)) = &self.identity {
            config = config.identity(Identity::from_pem(certificate, key));
        }
        config
    }

    /// The blocking HTTP client, with the CA given (alone) and the client certificate.
    fn http_client(&self) -> Result<reqwest::blocking::Client, String> {
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = &self.ca {
            let certificates = reqwest::Certificate::from_pem_bundle(ca).map_err(|e| format!("--otlp-ca-file: {e}"))?;
            builder = builder.tls_certs_only(certificates);
        }
        if let Some((certificate, key)) = &self.identity {
            let mut pem = key.clone();
            pem.push(b'\n');
            pem.extend_from_slice(certificate);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| format!("--otlp-client-certificate: {e}"))?;
            builder = builder.identity(identity);
        }
        // The blocking client runs a runtime of its own: made (and later used) off Tokio's.
        std::thread::spawn(move || builder.build().map_err(|e| format!("OTLP HTTP client: {e}")))
            .join()
            .map_err(|_| "OTLP HTTP client: its builder panicked".to_owned())?
    }
}

/// An exporter that says when an export fails (the SDK itself logs nothing here), at most once
/// a minute, with the error's whole chain (a TLS failure's reason is at its end).
#[derive(Debug)]
struct Logged<E> {
    inner: E,
    endpoint: String,
    last_warning: Mutex<Option<Instant>>,
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            let mut last = self.last_warning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                *last = Some(Instant::now());
                tracing::warn!(endpoint = %self.endpoint, spans, error = %error,
                    "traces could not be exported (dropped); check the collector and its certificate");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The tracer the settings ask for: off without `--otlp-endpoint`. Call it inside the Tokio
/// runtime (the gRPC channel is made on it).
pub fn from_settings(settings: &Settings) -> Result<Traces, String> {
    let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(Traces::off());
    };
    let headers = settings.otlp_headers.as_ref().map(|h| parse_pairs(&h.0)).transpose()?.unwrap_or_default();
    let tls = OtlpTls::from_settings(settings)?;
    let https = endpoint.starts_with("https://");
    if tls.is_set() && !https {
        return Err(format!("--otlp-endpoint {endpoint}: a CA or client certificate is given, so use https://"));
    }
    let exporter = match settings.otlp_protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = hyper::HeaderMap::new();
            for (name, value) in &headers {
                let name = hyper::header::HeaderName::try_from(name.as_str())
                    .map_err(|e| format!("--otlp-headers: {name:?}: {e}"))?;
                let value = hyper::header::HeaderValue::try_from(value.as_str())
                    .map_err(|e| format!("--otlp-headers: {name}: {e}"))?;
                metadata.insert(name, value);
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_metadata(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(metadata));
            if https {
                builder = builder.with_tls_config(tls.grpc());
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(http_traces_url(endpoint))
                .with_headers(headers.into_iter().collect::<HashMap<_, _>>());
            if https {
                builder = builder.with_http_client(tls.http_client()?);
            }
            builder.build()
        }
    }
    .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let exporter = Logged { inner: exporter, endpoint: endpoint.to_owned(), last_warning: Mutex::new(None) };
    let mut resource = Resource::builder().with_service_name(settings.otel_service_name.clone());
    if let Some(attributes) = &settings.otel_resource_attributes {
        let pairs = parse_pairs(attributes).map_err(|e| format!("--otel-resource-attributes: {e}"))?;
        resource = resource.with_attributes(pairs.into_iter().map(|(k, v)| KeyValue::new(k, v)));
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(settings.traces_sampler, settings.traces_sampler_arg))
        .with_resource(resource.build())
        .build();
    tracing::info!(endpoint, protocol = ?settings.otlp_protocol, sampler = ?settings.traces_sampler,
        ratio = settings.traces_sampler_arg, tls = https, private_ca = tls.ca.is_some(),
        client_certificate = tls.identity.is_some(), "exporting traces over OTLP");
    Ok(Traces::new(provider))
}

/// The traces URL of a generic OTLP/HTTP endpoint: `/v1/traces` added to its path, as the
/// specification says of `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn http_traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// The SDK sampler named as `OTEL_TRACES_SAMPLER` names it.
fn sampler(kind: TraceSampler, ratio: f64) -> Sampler {
    let ratio = ratio.clamp(0.0, 1.0);
    match kind {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentBasedTraceIdRatio => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
    }
}

/// `key=value,...` with percent-encoded values (the W3C Baggage format the OTLP variables use).
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{pair:?} has no key"));
            }
            Ok((key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_split_and_decoded() {
        let pairs = parse_pairs("authorization=Bearer%20abc, x-team = core ,").expect("pairs");
        assert_eq!(pairs, [("authorization".into(), "Bearer abc".into()), ("x-team".into(), "core".into())]);
        assert!(parse_pairs("novalue").is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn the_http_endpoint_gets_the_traces_path() {
        assert_eq!(http_traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
    }
}
