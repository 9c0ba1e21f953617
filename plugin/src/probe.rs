//! `test ENDPOINT --key`: one small streamed chat completion through the gateway, timed: time
//! to first token, total time, tokens per second, and what the gateway said about it (backend,
//! predicted TTFT, rate-limit headers, request id).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kube::ResourceExt;
use kube::api::ListParams;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};
use sluice_crds::api::Endpoint;

use crate::cli::TestArgs;
use crate::cluster::Cluster;
use crate::output::Report;
use crate::table::fields;

/// What one test request measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub endpoint: String,
    pub url: String,
    pub model: String,
    pub status: u16,
    pub ttft_ms: Option<f64>,
    pub total_ms: f64,
    pub completion_tokens: Option<u64>,
    pub tokens_per_second: Option<f64>,
    pub backend: Option<String>,
    pub predicted_ttft_ms: Option<String>,
    pub request_id: Option<String>,
    /// Every `x-ratelimit-*` header, by name.
    pub rate_limits: BTreeMap<String, String>,
    /// The text the model sent back.
    pub reply: String,
}

/// Finds the endpoint, sends the request and reports; an error carries the gateway's message.
pub async fn test(cluster: &Cluster, args: TestArgs) -> anyhow::Result<Report> {
    let endpoints = cluster.api::<Endpoint>().list(&ListParams::default()).await.context("listing Endpoints")?;
    let endpoint = endpoints
        .items
        .into_iter()
        .find(|e| e.name_any() == args.endpoint || e.spec.slug == args.endpoint)
        .with_context(|| format!("no Endpoint {} in namespace {}", args.endpoint, cluster.namespace))?;
    let url = match &args.url {
        Some(base) => {
            let slug = cluster.project().await?.spec.slug;
            format!("{}/{slug}/{}/v1", base.trim_end_matches('/'), endpoint.spec.slug)
        }
        None => endpoint.status.as_ref().and_then(|s| s.url.clone()).with_context(|| {
            format!("Endpoint {} has no status.url yet: pass the gateway's address with --url", endpoint.name_any())
        })?,
    };
    let model = args
        .model
        .clone()
        .or_else(|| endpoint.spec.default_model.clone())
        .or_else(|| endpoint.spec.models.first().map(|m| m.name.clone()))
        .with_context(|| format!("Endpoint {} exposes no model: pass --model", endpoint.name_any()))?;
    let probe = send(&endpoint.spec.slug, &url, &model, &args).await?;
    Ok(Report { text: describe(&probe), value: serde_json::to_value(&probe)? })
}

async fn send(endpoint: &str, url: &str, model: &str, args: &TestArgs) -> anyhow::Result<Probe> {
    let http = reqwest::Client::builder().timeout(args.timeout).build()?;
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": args.prompt}],
        "max_tokens": args.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let started = Instant::now();
    let mut response = http
        .post(format!("{url}/chat/completions"))
        .bearer_auth(&args.key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("sending a chat request to {url}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let request_id = header(&headers, "x-request-id").unwrap_or_else(|| "-".to_owned());
        bail!("the gateway answered {status}: {} (request id {request_id})", error_message(&text));
    }
    let mut stream = SseText::default();
    let mut ttft = None;
    let mut reply = String::new();
    let mut completion_tokens = None;
    while let Some(chunk) = response.chunk().await.context("reading the stream")? {
        for event in stream.push(&chunk) {
            if event == "[DONE]" {
                continue;
            }
            let event: Value = serde_json::from_str(&event).with_context(|| format!("a stream event: {event}"))?;
            if let Some(message) = event.get("error") {
                bail!("the stream ended with an error: {}", error_message(&message.to_string()));
            }
            let content = event["choices"][0]["delta"]["content"].as_str().unwrap_or_default();
            if !content.is_empty() {
                ttft.get_or_insert_with(|| started.elapsed());
                reply.push_str(content);
            }
            if let Some(tokens) = event["usage"]["completion_tokens"].as_u64() {
                completion_tokens = Some(tokens);
            }
        }
    }
    let total = started.elapsed();
    Ok(Probe {
        endpoint: endpoint.to_owned(),
        url: url.to_owned(),
        model: model.to_owned(),
        status: status.as_u16(),
        ttft_ms: ttft.map(ms),
        total_ms: ms(total),
        completion_tokens,
        tokens_per_second: completion_tokens.zip(ttft).and_then(|(tokens, ttft)| rate(tokens, total - ttft)),
        backend: header(&headers, "x-sluice-backend"),
        predicted_ttft_ms: header(&headers, "x-sluice-predicted-ttft-ms"),
        request_id: header(&headers, "x-request-id"),
        rate_limits: headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-ratelimit-"))
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect(),
        reply,
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Tokens per second after the first, over the time they took; none for a stream too short to
/// time.
fn rate(tokens: u64, streaming: Duration) -> Option<f64> {
    let seconds = streaming.as_secs_f64();
    // Token counts are far below 2^53, where f64 stays exact.
    #[allow(clippy::cast_precision_loss)]
    (seconds > 0.0 && tokens > 0).then(|| ((tokens as f64 / seconds) * 10.0).round() / 10.0)
}

/// The `error.message` of an OpenAI error body, else the body itself (cut short).
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| v["error"]["message"].as_str().or(v["message"].as_str()));
    match message {
        Some(message) => message.to_owned(),
        None if body.trim().is_empty() => "(no body)".to_owned(),
        None => body.trim().chars().take(500).collect(),
    }
}

/// Server-sent events split out of a byte stream: the `data:` payload of each complete event.
#[derive(Default)]
pub struct SseText {
    pending: String,
}

impl SseText {
    /// Adds bytes; returns the data of the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let block: String = self.pending.drain(..end + 2).collect();
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        events
    }
}

/// The table-format report of a probe.
pub fn describe(probe: &Probe) -> String {
    let optional = |value: &Option<String>| value.clone().unwrap_or_default();
    let mut pairs = vec![
        ("Endpoint", format!("{} ({})", probe.endpoint, probe.url)),
        ("Model", probe.model.clone()),
        ("Status", probe.status.to_string()),
        ("TTFT", probe.ttft_ms.map(|t| format!("{t} ms")).unwrap_or_default()),
        ("Total", format!("{} ms", probe.total_ms)),
        ("Tokens", probe.completion_tokens.map(|t| t.to_string()).unwrap_or_default()),
        ("Tokens/s", probe.tokens_per_second.map(|t| t.to_string()).unwrap_or_default()),
        ("Backend", optional(&probe.backend)),
        ("Predicted TTFT", probe.predicted_ttft_ms.as_ref().map(|t| format!("{t} ms")).unwrap_or_default()),
        ("Request ID", optional(&probe.request_id)),
    ];
    pairs.extend(probe.rate_limits.iter().map(|(name, value)| (name.as_str(), value.clone())));
    pairs.push(("Reply", probe.reply.clone()));
    fields(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_across_chunks() {
        let mut sse = SseText::default();
        assert!(sse.push(b"data: {\"a\"").is_empty());
        assert_eq!(sse.push(b":1}\n\n: comment\n\ndata: [DONE]\n\n"), ["{\"a\":1}", "[DONE]"]);
        assert!(sse.push(b"event: x\ndata: one\ndata: two\n").is_empty());
        assert_eq!(sse.push(b"\n"), ["one\ntwo"]);
    }

    #[test]
    fn the_gateway_message_is_shown() {
        let body = r#"{"error":{"message":"Invalid API key","type":"invalid_request_error"}}"#;
        assert_eq!(error_message(body), "Invalid API key");
        assert_eq!(error_message("upstream said no"), "upstream said no");
        assert_eq!(error_message(""), "(no body)");
    }

    #[test]
    fn tokens_per_second_need_time_and_tokens() {
        assert_eq!(rate(10, Duration::from_millis(500)), Some(20.0));
        assert_eq!(rate(0, Duration::from_secs(1)), None);
        assert_eq!(rate(5, Duration::ZERO), None);
    }
}
