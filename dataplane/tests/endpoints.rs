//! What an Endpoint declares, seen from outside: the APIs it serves (each client protocol has a
//! kind of its own, and a list from before they had one still serves them with chat), image
//! generation passed through to models that can make images, and the default model and
//! parameters a request gets for what it leaves out. The real gateway in front of sluice-sim,
//! and of a recorder that shows what reached the upstream.

mod support;

use serde_json::{Value, json};
use support::{Gateway, Manifests, Recorded, Sim, apikey, client, recorder};

const KEY: &str = "sl_acme_endpoints_0000001";

fn manifests(sim: &str, recorder: &str) -> String {
    format!(
        r#"{}apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: studio, namespace: acme}}
spec:
  type: openai
  baseUrl: {sim}/v1
  models:
    - name: image-up
      capabilities: [images]
      pricing: {{inputPerMillion: 5.0, outputPerMillion: 40.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: recorder, namespace: acme}}
spec:
  type: openai
  baseUrl: {recorder}/v1
  models: [{{name: rec-up}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  defaultModel: m-ok
  defaultParameters: {{temperature: 0.2, max_tokens: 7, stop: ["\n\n"]}}
  models:
    - name: m-ok
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
    - name: m-image
      backends: [{{providerRef: {{name: studio}}, model: image-up}}]
    - name: m-rec
      backends: [{{providerRef: {{name: recorder}}, model: rec-up}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: legacy, namespace: acme}}
spec:
  slug: legacy
  apis: [chatCompletions]
  models:
    - name: m-ok
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
    - name: m-image
      backends: [{{providerRef: {{name: studio}}, model: image-up}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: narrow, namespace: acme}}
spec:
  slug: narrow
  apis: [chatCompletions, responses]
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

/// What the recorder answers: a chat completion.
fn completion() -> Value {
    json!({"id": "chatcmpl-rec", "object": "chat.completion", "created": 1, "model": "rec-up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
}

async fn start() -> (Sim, Recorded, Manifests, Gateway) {
    let sim = Sim::start(Sim::fast()).await;
    let (recorder_url, recorded) = recorder(completion()).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&format!("http://{}", sim.addr), &recorder_url));
    let gateway = Gateway::start(Some(dir.path()), &[]);
    (sim, recorded, dir, gateway)
}

/// POSTs `body` to `path` with the key as a bearer token (every protocol accepts it).
async fn post(gateway: &Gateway, path: &str, id: &str, body: Value) -> (u16, Value) {
    let response = client()
        .post(gateway.url(path))
        .bearer_auth(KEY)
        .header("x-request-id", id)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The last body the recorder received.
fn last_received(recorded: &Recorded) -> Value {
    recorded.lock().unwrap_or_else(|e| e.into_inner()).last().map(|r| r.body.clone()).expect("a request")
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_passed_through_to_models_that_make_them() {
    let (_sim, _recorded, _dir, gateway) = start().await;
    let path = "/acme/chat/v1/images/generations";
    let (status, body) =
        post(&gateway, path, "img-ok", json!({"model": "m-image", "prompt": "a red fox", "n": 2})).await;
    assert_eq!(status, 200, "{body}");
    let images = body["data"].as_array().expect("data");
    assert_eq!(images.len(), 2, "{body}");
    assert!(images[0]["b64_json"].as_str().is_some_and(|png| png.starts_with("iVBORw0KGgo")), "{body}");
    let line = gateway.access_line("img-ok");
    assert_eq!(line["fields"]["backend"], "acme/studio/image-up", "{line}");
    assert_eq!(line["fields"]["prompt_tokens"], body["usage"]["input_tokens"], "{line}");
    assert_eq!(line["fields"]["completion_tokens"], body["usage"]["output_tokens"], "{line}");
    assert!(line["fields"]["cost_usd"].as_f64().is_some_and(|cost| cost > 0.0), "{line}");

    // A chat model makes no images; an unknown one does not exist: OpenAI's shape, naming `model`.
    let (status, body) = post(&gateway, path, "img-chat", json!({"model": "m-ok", "prompt": "a fox"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "model_not_supported", "{body}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("/v1/images/generations")), "{body}");
    let (status, body) = post(&gateway, path, "img-none", json!({"model": "dall-e-3", "prompt": "a fox"})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_fill_what_the_request_leaves_out_and_the_clients_own_win() {
    let (_sim, recorded, _dir, gateway) = start().await;
    let chat = "/acme/chat/v1/chat/completions";
    let hello = json!([{"role": "user", "content": "Say hello"}]);

    // No model: the endpoint's default, and its max_tokens (7) cut the answer.
    let (status, body) = post(&gateway, chat, "def-model", json!({"messages": hello})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 7, "{body}");
    assert_eq!(gateway.access_line("def-model")["fields"]["model"], "m-ok");
    let (_, body) = post(&gateway, chat, "def-own", json!({"messages": hello, "max_completion_tokens": 3})).await;
    assert_eq!(body["usage"]["completion_tokens"], 3, "the client's own limit: {body}");

    // What reached the upstream: the defaults the client left out, the client's own values kept.
    let (status, _) =
        post(&gateway, chat, "def-rec", json!({"model": "m-rec", "messages": hello, "temperature": 1.5})).await;
    assert_eq!(status, 200);
    let sent = last_received(&recorded);
    assert_eq!((sent["temperature"].as_f64(), sent["max_tokens"].as_u64()), (Some(1.5), Some(7)), "{sent}");
    assert_eq!(sent["stop"], json!(["\n\n"]), "{sent}");
    assert_eq!(sent["model"], "rec-up", "{sent}");

    // Translated protocols get them on their chat request: Gemini...
    let gemini = "/acme/chat/v1beta/models/m-rec:generateContent";
    let (status, _) = post(&gateway, gemini, "def-gemini", json!({"contents": [{"parts": [{"text": "Hi"}]}]})).await;
    assert_eq!(status, 200);
    let sent = last_received(&recorded);
    assert_eq!((sent["temperature"].as_f64(), sent["max_tokens"].as_u64()), (Some(0.2), Some(7)), "{sent}");
    // ... Messages, whose max_tokens is required and so always the client's ...
    let messages = json!({"model": "m-rec", "max_tokens": 2, "messages": hello});
    let (status, _) = post(&gateway, "/acme/chat/v1/messages", "def-messages", messages).await;
    assert_eq!(status, 200);
    let sent = last_received(&recorded);
    assert_eq!((sent["temperature"].as_f64(), sent["max_tokens"].as_u64()), (Some(0.2), Some(2)), "{sent}");
    // ... and a Messages or Responses request without a model gets the default model.
    let (status, body) =
        post(&gateway, "/acme/chat/v1/messages", "def-messages-model", json!({"max_tokens": 4, "messages": hello}))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["output_tokens"], 4, "{body}");
    let (status, body) = post(&gateway, "/acme/chat/v1/responses", "def-responses", json!({"input": "Hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["output_tokens"], 7, "the default max_tokens: {body}");
    assert_eq!(gateway.access_line("def-responses")["fields"]["model"], "m-ok");

    // An endpoint without a default model still wants one.
    let (status, body) =
        post(&gateway, "/acme/legacy/v1/chat/completions", "def-none", json!({"messages": hello})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "missing_required_parameter", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_protocol_is_an_api_an_endpoint_may_serve() {
    let (_sim, _recorded, _dir, gateway) = start().await;
    let chat = json!({"model": "m-ok", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]});
    let gemini = json!({"contents": [{"parts": [{"text": "Hi"}]}]});

    // `apis: [chatCompletions]`, written before the protocols had kinds: it still serves them,
    // and nothing else.
    let (status, _) = post(&gateway, "/acme/legacy/v1/messages", "kind-legacy-messages", chat.clone()).await;
    assert_eq!(status, 200);
    let path = "/acme/legacy/v1beta/models/m-ok:generateContent";
    assert_eq!(post(&gateway, path, "kind-legacy-gemini", gemini.clone()).await.0, 200);
    let images = json!({"model": "m-image", "prompt": "a fox"});
    let (status, body) = post(&gateway, "/acme/legacy/v1/images/generations", "kind-legacy-images", images).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "api_not_enabled", "{body}");

    // `apis: [chatCompletions, responses]`: Responses only, each refusal in its client's shape.
    let (status, _) =
        post(&gateway, "/acme/narrow/v1/responses", "kind-responses", json!({"model": "m-ok", "input": "Hi"})).await;
    assert_eq!(status, 200);
    let (status, body) = post(&gateway, "/acme/narrow/v1/messages", "kind-messages", chat.clone()).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!((body["type"].as_str(), body["error"]["type"].as_str()), (Some("error"), Some("not_found_error")));
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("/v1/messages")), "{body}");
    let (status, body) = post(&gateway, "/acme/narrow/v1/messages/count_tokens", "kind-count", chat).await;
    assert_eq!((status, body["error"]["type"].as_str()), (404, Some("not_found_error")), "{body}");
    let (status, body) = post(&gateway, "/acme/narrow/v1beta/models/m-ok:generateContent", "kind-gemini", gemini).await;
    assert_eq!((status, body["error"]["status"].as_str()), (404, Some("NOT_FOUND")), "{body}");
}
