//! Gemini's API on the gateway (`/v1beta/models/{model}:generateContent` and the rest), raw:
//! served by an OpenAI-compatible upstream (translated both ways) and by a Gemini upstream (the
//! client's body passed through), both sluice-sim on a real socket; `:embedContent` and
//! `:batchEmbedContents` by an OpenAI embeddings upstream. Errors must take Google's shape, and
//! a key sent as `?key=` must never reach the log. The `google-genai` SDK is driven in
//! `compat.rs`.

mod support;

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client};

const KEY: &str = "sl_acme_gemini_0000000000001";

fn manifests(sim: &str) -> String {
    format!(
        r#"{}---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: gem, namespace: acme}}
spec:
  type: gemini
  baseUrl: {sim}/v1beta
  models:
    - name: gemini-up
      capabilities: [chat, tools]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: vectors, namespace: acme}}
spec:
  type: openai
  baseUrl: {sim}/v1
  models:
    - name: embed-up
      capabilities: [embeddings]
      pricing: {{inputPerMillion: 0.1}}
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m-ok
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
    - name: gem
      backends: [{{providerRef: {{name: gem}}, model: gemini-up}}]
    - name: m-embed
      backends: [{{providerRef: {{name: vectors}}, model: embed-up}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: openai-vectors, namespace: acme}}
spec:
  slug: openai-vectors
  apis: [embeddings]
  models:
    - name: m-embed
      backends: [{{providerRef: {{name: vectors}}, model: embed-up}}]
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

fn prompt() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Say hello in five words."}]}],
        "generationConfig": {"maxOutputTokens": 5, "temperature": 0.2}
    })
}

/// The `data:` events of an SSE body, as JSON.
fn events(text: &str) -> Vec<Value> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("{e}"));
            serde_json::from_str(data).unwrap_or_else(|_| panic!("{data}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_content_is_served_by_a_chat_upstream_and_accounted() {
    let (_sim, _dir, gateway) = start().await;
    let response = client()
        .post(gateway.url("/acme/chat/v1beta/models/m-ok:generateContent"))
        .header("x-goog-api-key", KEY)
        .header("x-request-id", "gem-whole")
        .json(&prompt())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model", "{body}");
    assert!(candidate["content"]["parts"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(candidate["finishReason"], "MAX_TOKENS", "{body}");
    let usage = &body["usageMetadata"];
    assert_eq!(usage["candidatesTokenCount"], 5, "{body}");
    let line = gateway.access_line("gem-whole");
    assert_eq!(line["fields"]["prompt_tokens"], usage["promptTokenCount"], "{line}");
    assert_eq!(line["fields"]["completion_tokens"], usage["candidatesTokenCount"], "{line}");
    assert_eq!(line["fields"]["status"], 200, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_gemini_events_and_a_query_key_is_never_logged() {
    let (_sim, _dir, gateway) = start().await;
    let url = gateway.url(&format!("/acme/chat/v1beta/models/m-ok:streamGenerateContent?alt=sse&key={KEY}"));
    let response = client().post(&url).header("x-request-id", "gem-stream").json(&prompt()).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("text/event-stream")));
    let events = events(&response.text().await.expect("body"));
    assert!(events.len() >= 2, "{events:?}");
    let text: String = events
        .iter()
        .flat_map(|e| e["candidates"].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["content"]["parts"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect();
    assert!(!text.is_empty(), "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS", "{last}");
    let line = gateway.access_line("gem-stream");
    assert_eq!(line["fields"]["prompt_tokens"], last["usageMetadata"]["promptTokenCount"], "{line}");
    assert_eq!(line["fields"]["completion_tokens"], last["usageMetadata"]["candidatesTokenCount"], "{line}");

    // A wrong key in the query: refused in Google's shape, and neither key is in the log.
    let wrong = "sl_acme_wrong_query_key_77";
    let url = gateway.url(&format!("/acme/chat/v1beta/models/m-ok:generateContent?key={wrong}"));
    let response = client().post(&url).header("x-request-id", "gem-wrong").json(&prompt()).send().await.expect("send");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED", "{body}");
    let url = gateway.url(&format!("/acme/nowhere/v1beta/models/m-ok:generateContent?key={KEY}"));
    let response = client().post(&url).header("x-request-id", "gem-404").json(&prompt()).send().await.expect("send");
    assert_eq!(response.status(), 404);
    let body = response.text().await.expect("body");
    assert!(!body.contains(KEY), "{body}");
    let logs = gateway.logs_with("\"request_id\":\"gem-404\"");
    assert!(logs.contains("gem-wrong") && logs.contains("gem-404"), "{logs}");
    assert!(!logs.contains(KEY) && !logs.contains(wrong), "a key reached the log:\n{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_take_googles_shape() {
    let (_sim, _dir, gateway) = start().await;
    let post = |path: &str, body: Value, key: Option<&str>| {
        let mut request = client().post(gateway.url(path)).json(&body);
        if let Some(key) = key {
            request = request.header("x-goog-api-key", key);
        }
        request.send()
    };
    let cases = [
        (post("/acme/chat/v1beta/models/m-ok:generateContent", prompt(), None).await, 401, "UNAUTHENTICATED"),
        (post("/acme/chat/v1beta/models/nope:generateContent", prompt(), Some(KEY)).await, 404, "NOT_FOUND"),
        (
            post("/acme/chat/v1beta/models/m-ok:generateContent", json!({"contents": 1}), Some(KEY)).await,
            400,
            "INVALID_ARGUMENT",
        ),
        (
            post(
                "/acme/chat/v1beta/models/m-ok:generateContent",
                json!({"contents": [], "tools": [{"codeExecution": {}}]}),
                Some(KEY),
            )
            .await,
            400,
            "INVALID_ARGUMENT",
        ),
    ];
    for (response, status, name) in cases {
        let response = response.expect("send");
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], status, "{body}");
        assert_eq!(body["error"]["status"], name, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_counted_and_models_listed_in_geminis_shape() {
    let (_sim, _dir, gateway) = start().await;
    let response = client()
        .post(gateway.url("/acme/chat/v1beta/models/m-ok:countTokens"))
        .header("x-goog-api-key", KEY)
        .json(&json!({"contents": [{"parts": [{"text": "How many tokens is this?"}]}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body["totalTokens"].as_u64().is_some_and(|n| n > 0), "{body}");

    let list: Value = client()
        .get(gateway.url("/acme/chat/v1beta/models"))
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> =
        list["models"].as_array().expect("models").iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["models/gem", "models/m-embed", "models/m-ok"], "{list}");
    assert_eq!(list["models"][1]["supportedGenerationMethods"], json!(["embedContent", "batchEmbedContents"]));
    let one: Value = client()
        .get(gateway.url("/acme/chat/v1beta/models/m-ok"))
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(one["supportedGenerationMethods"], json!(["generateContent", "streamGenerateContent", "countTokens"]));
    let missing = client()
        .get(gateway.url("/acme/chat/v1beta/models/nope"))
        .header("x-goog-api-key", KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gemini_backend_gets_the_clients_own_body_and_answers_as_it_came() {
    let (sim, _dir, gateway) = start().await;
    let body = prompt();
    let via_gateway = client()
        .post(gateway.url("/acme/chat/v1beta/models/gem:generateContent"))
        .header("x-goog-api-key", KEY)
        .header("x-request-id", "gem-native")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(via_gateway.status(), 200);
    assert_eq!(via_gateway.headers()["x-sluice-backend"], "acme/gem/gemini-up");
    let answer: Value = via_gateway.json().await.expect("json");
    // Gemini's own answer, not a translation of a chat completion: the upstream's model name
    // and every field the simulator writes.
    let direct: Value = client()
        .post(format!("http://{}/v1beta/models/gemini-up:generateContent", sim.addr))
        .json(&body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&answer), keys(&direct), "{answer}\n{direct}");
    assert_eq!(answer["modelVersion"], direct["modelVersion"], "{answer}");
    let line = gateway.access_line("gem-native");
    assert_eq!(line["fields"]["prompt_tokens"], answer["usageMetadata"]["promptTokenCount"], "{line}");

    let stream = client()
        .post(gateway.url("/acme/chat/v1beta/models/gem:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", KEY)
        .header("x-request-id", "gem-native-stream")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(stream.status(), 200);
    let events = events(&stream.text().await.expect("body"));
    let last = events.last().expect("events");
    assert!(last["usageMetadata"]["promptTokenCount"].as_u64().is_some(), "{last}");
    let line = gateway.access_line("gem-native-stream");
    assert_eq!(line["fields"]["prompt_tokens"], last["usageMetadata"]["promptTokenCount"], "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_content_is_served_by_an_embeddings_upstream_and_metered() {
    let (_sim, _dir, gateway) = start().await;
    let response = client()
        .post(gateway.url("/acme/chat/v1beta/models/m-embed:embedContent"))
        .header("x-goog-api-key", KEY)
        .header("x-request-id", "gem-embed")
        .json(&json!({"content": {"parts": [{"text": "The quick brown fox"}]}, "taskType": "RETRIEVAL_QUERY",
            "outputDimensionality": 16}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-backend"], "acme/vectors/embed-up");
    let body: Value = response.json().await.expect("json");
    let values = body["embedding"]["values"].as_array().expect("values");
    assert_eq!(values.len(), 16, "{body}");
    assert!(values.iter().all(Value::is_f64), "{body}");
    let prompt = body["usageMetadata"]["promptTokenCount"].as_u64().expect("usage");
    assert!(prompt > 0, "{body}");
    let line = gateway.access_line("gem-embed");
    assert_eq!(line["fields"]["prompt_tokens"], prompt, "metered like other embeddings: {line}");
    assert_eq!(line["fields"]["completion_tokens"], 0, "{line}");
    assert_eq!(line["fields"]["model"], "m-embed", "{line}");

    // A batch, with the key in the query (the SDK's way for embed_content): one vector per
    // request, in order, and no key in the log.
    let url = gateway.url(&format!("/acme/chat/v1beta/models/m-embed:batchEmbedContents?key={KEY}"));
    let batch = json!({"requests": [
        {"model": "models/m-embed", "content": {"parts": [{"text": "first"}]}},
        {"model": "models/m-embed", "content": {"parts": [{"text": "second text"}]}}
    ]});
    let response = client().post(&url).header("x-request-id", "gem-batch").json(&batch).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let embeddings = body["embeddings"].as_array().expect("embeddings");
    assert_eq!(embeddings.len(), 2, "{body}");
    assert_ne!(embeddings[0], embeddings[1]);
    let line = gateway.access_line("gem-batch");
    assert_eq!(line["fields"]["prompt_tokens"], body["usageMetadata"]["promptTokenCount"], "{line}");
    assert!(!gateway.log_text().contains(KEY), "the key reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn embedding_refusals_take_googles_shape() {
    let (_sim, _dir, gateway) = start().await;
    let post =
        |path: &str, body: Value| client().post(gateway.url(path)).header("x-goog-api-key", KEY).json(&body).send();
    let text = json!({"content": {"parts": [{"text": "hi"}]}});
    let cases = [
        // A chat model has no embeddings.
        (post("/acme/chat/v1beta/models/m-ok:embedContent", text.clone()).await, 400, "INVALID_ARGUMENT", "m-ok"),
        (post("/acme/chat/v1beta/models/nope:embedContent", text.clone()).await, 404, "NOT_FOUND", "nope"),
        (
            post(
                "/acme/chat/v1beta/models/m-embed:embedContent",
                json!({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]}}),
            )
            .await,
            400,
            "INVALID_ARGUMENT",
            "only text parts",
        ),
        (
            post(
                "/acme/chat/v1beta/models/m-embed:batchEmbedContents",
                json!({"requests": [{"model": "models/m-ok", "content": {"parts": [{"text": "a"}]}}]}),
            )
            .await,
            400,
            "INVALID_ARGUMENT",
            "not the model in the URL",
        ),
        // An endpoint that lists its APIs without gemini does not serve Gemini's paths.
        (
            post("/acme/openai-vectors/v1beta/models/m-embed:embedContent", text).await,
            404,
            "NOT_FOUND",
            "does not serve",
        ),
    ];
    for (response, status, name, says) in cases {
        let response = response.expect("send");
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["status"], name, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{says}: {body}");
    }
}
