//! OpenAI's Responses API on the gateway (`/v1/responses`), raw: translated to chat for an
//! OpenAI-compatible upstream (sluice-sim on a real socket) and back into response objects and
//! Responses events, stateless (`store: false`), with errors in OpenAI's shape. The `openai`
//! SDKs are driven in `compat.rs`.

mod support;

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client};

const KEY: &str = "sl_acme_responses_00000000001";

fn manifests(sim: &str) -> String {
    format!(
        r#"{}---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m-ok
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
---
{}
"#,
        support::acme_tenant(sim),
        apikey("acme", "full", KEY, ""),
    )
}

async fn start() -> (Sim, Manifests, Gateway) {
    let sim = Sim::start(Sim::fast()).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&format!("http://{}", sim.addr)));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    (sim, dir, gateway)
}

async fn post(gateway: &Gateway, id: &str, body: Value) -> reqwest::Response {
    client()
        .post(gateway.url("/acme/chat/v1/responses"))
        .bearer_auth(KEY)
        .header("x-request-id", id)
        .json(&body)
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_chat_completions_in_between_and_accounted() {
    let (_sim, _dir, gateway) = start().await;
    let response = post(
        &gateway,
        "resp-whole",
        json!({"model": "m-ok", "instructions": "Be terse.", "input": [
            {"role": "user", "content": "What is the weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"}
        ], "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}],
        "max_output_tokens": 6, "store": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "response", "{body}");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("resp_")), "{body}");
    assert_eq!(body["store"], false, "nothing is stored: {body}");
    assert_eq!(body["status"], "incomplete", "{body}");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens", "{body}");
    assert_eq!(body["instructions"], "Be terse.");
    let message = &body["output"][0];
    assert_eq!(message["type"], "message", "{body}");
    assert!(message["content"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(body["usage"]["output_tokens"], 6, "{body}");
    let line = gateway.access_line("resp-whole");
    assert_eq!(line["fields"]["prompt_tokens"], body["usage"]["input_tokens"], "{line}");
    assert_eq!(line["fields"]["completion_tokens"], body["usage"]["output_tokens"], "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_responses_events_ending_with_usage() {
    let (_sim, _dir, gateway) = start().await;
    let response = post(&gateway, "resp-stream", json!({"model": "m-ok", "input": "Hello", "stream": true})).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_else(|| panic!("{e}"));
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("{e}"));
            (name.to_owned(), serde_json::from_str(data).expect("json"))
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert!(names.contains(&"response.output_text.delta"), "{names:?}");
    assert_eq!(
        names[names.len() - 4..],
        ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    );
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    let (_, completed) = events.last().expect("events");
    assert_eq!(completed["response"]["output"][0]["content"][0]["text"], deltas.as_str());
    let line = gateway.access_line("resp-stream");
    assert_eq!(line["fields"]["prompt_tokens"], completed["response"]["usage"]["input_tokens"], "{line}");
    assert_eq!(line["fields"]["completion_tokens"], completed["response"]["usage"]["output_tokens"], "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_state_is_refused_in_openais_shape() {
    let (_sim, _dir, gateway) = start().await;
    let response =
        post(&gateway, "resp-prev", json!({"model": "m-ok", "input": "Again", "previous_response_id": "resp_1"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], "previous_response_id", "{body}");
    assert_eq!(body["error"]["code"], "unsupported_parameter", "{body}");
    let response = post(&gateway, "resp-nomodel", json!({"model": "nope", "input": "x"})).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    let unauthenticated =
        client().post(gateway.url("/acme/chat/v1/responses")).json(&json!({})).send().await.expect("send");
    assert_eq!(unauthenticated.status(), 401);
}
