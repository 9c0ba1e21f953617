//! The OTLP pipeline from the gateway's flags (each also read from the environment variable
//! the OpenTelemetry SDKs read): exporter (gRPC or HTTP/protobuf), headers, sampler and
//! resource. Spans leave in batches from the SDK's own thread, so exporting never runs on
//! the request path; the batch size and delay follow `OTEL_BSP_*`.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use super::Traces;
use crate::settings::{OtlpProtocol, Settings, TraceSampler};

/// The tracer the settings ask for: off without `--otlp-endpoint`. Call it inside the Tokio
/// runtime (the gRPC channel is made on it).
pub fn from_settings(settings: &Settings) -> Result<Traces, String> {
    let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(Traces::off());
    };
    let headers = settings.otlp_headers.as_ref().map(|h| parse_pairs(&h.0)).transpose()?.unwrap_or_default();
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
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_metadata(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(metadata))
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(http_traces_url(endpoint))
            .with_headers(headers.into_iter().collect::<HashMap<_, _>>())
            .build(),
    }
    .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
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
        ratio = settings.traces_sampler_arg, "exporting traces over OTLP");
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
