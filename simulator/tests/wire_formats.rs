//! Black-box: each wire format, as its provider documents it, from the real binary.

mod common;

use common::{Sim, client, post_json, sse};
use serde_json::{Value, json};

const FAST: &[&str] = &["--prefill-overhead-ms", "1", "--inter-token-ms", "1", "--jitter", "0"];

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "my-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something about rivers."}
        ]
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

#[tokio::test]
async fn openai_chat_plain_echoes_model_and_counts_usage() {
    let sim = Sim::start(FAST);
    let (status, body) = post_json(&sim.at("/v1/chat/completions"), &chat(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "my-model");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let text = choice["message"]["content"].as_str().expect("content");
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 64, "default outputTokens");
    assert_eq!(
        usage["completion_tokens"].as_u64(),
        Some(sluice_sim::tokenizer::count(text) as u64),
        "completion_tokens is the tokenizer's count of the text"
    );
    // Two messages of 3 framing tokens + role + content, and 3 tokens priming the reply.
    let expected_prompt = 3
        + sluice_sim::tokenizer::count("system")
        + sluice_sim::tokenizer::count("You are terse.")
        + 3
        + sluice_sim::tokenizer::count("user")
        + sluice_sim::tokenizer::count("Say something about rivers.")
        + 3;
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(expected_prompt as u64));
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap_or(0) + 64));
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn openai_chat_stream_one_token_per_chunk_with_usage_chunk() {
    let sim = Sim::start(FAST);
    let url = sim.at("/v1/chat/completions");
    let (_, plain) = post_json(&url, &chat(json!({"max_tokens": 10}))).await;
    let request = chat(json!({"max_tokens": 10, "stream": true, "stream_options": {"include_usage": true}}));
    let (events, raw) = sse(client().post(&url).json(&request)).await;
    assert!(raw.ends_with(b"data: [DONE]\n\n"));
    let chunks: Vec<Value> = events.iter().filter(|e| e.data != "[DONE]").map(|e| e.json()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let tokens: Vec<&str> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).filter(|t| !t.is_empty()).collect();
    assert_eq!(tokens.len(), 10, "one token per chunk");
    assert_eq!(
        tokens.concat(),
        plain["choices"][0]["message"]["content"].as_str().unwrap_or_default(),
        "streamed text equals the plain text"
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"], json!([]), "usage chunk has no choices");
    assert_eq!(last["usage"]["completion_tokens"], 10);
    assert_eq!(last["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"]);
    // The same prompt a second time: its whole blocks come from the prefix cache.
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));

    // Without stream_options: no usage chunk, no usage field.
    let (events, _) = sse(client().post(&url).json(&chat(json!({"max_tokens": 3, "stream": true})))).await;
    let chunks: Vec<Value> = events.iter().filter(|e| e.data != "[DONE]").map(|e| e.json()).collect();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(chunks.iter().all(|c| !c["choices"].as_array().is_some_and(Vec::is_empty)));
}

#[tokio::test]
async fn openai_chat_n_stop_and_deterministic_bytes() {
    let sim = Sim::start(&["--deterministic-ids", "--inter-token-ms", "0", "--prefill-overhead-ms", "0"]);
    let url = sim.at("/v1/chat/completions");
    let (_, body) = post_json(&url, &chat(json!({"n": 2}))).await;
    let choices = body["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 2);
    assert_ne!(choices[0]["message"]["content"], choices[1]["message"]["content"]);
    assert_eq!(body["usage"]["completion_tokens"], 128);

    let text = choices[0]["message"]["content"].as_str().unwrap_or_default().to_owned();
    let word = text.split(' ').nth(3).unwrap_or_default().trim_matches(|c: char| !c.is_alphanumeric());
    let (_, stopped) = post_json(&url, &chat(json!({"stop": [word]}))).await;
    let cut = stopped["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(!cut.contains(word) && text.starts_with(cut), "{cut:?} / {word:?}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    let request = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (_, first) = sse(client().post(&url).json(&request)).await;
    let (_, second) = sse(client().post(&url).json(&request)).await;
    assert_eq!(first, second, "same seed and request: same bytes");
    let (_, a) = post_json(&url, &chat(json!({}))).await;
    assert_eq!(a["created"], sluice_sim::DETERMINISTIC_CREATED);
}

#[tokio::test]
async fn openai_tool_calls_and_json_mode() {
    let sim = Sim::start(FAST);
    let url = sim.at("/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}
        }, "required": ["city"]}
    }}]);
    let (_, body) = post_json(&url, &chat(json!({"tools": tools}))).await;
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().is_some_and(|id| id.starts_with("call_")));
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("")).expect("arguments are JSON");
    assert!(args["city"].is_string());

    // Streamed: the id and name first, then argument fragments that add up to the same JSON.
    let (events, _) = sse(client().post(&url).json(&chat(json!({"tools": tools, "stream": true})))).await;
    let chunks: Vec<Value> = events.iter().filter(|e| e.data != "[DONE]").map(|e| e.json()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "get_weather");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap_or_default());
    assert_eq!(chunks.last().map(|c| c["choices"][0]["finish_reason"].clone()), Some(json!("tool_calls")));

    // After the tool answered, the model answers in text; tool_choice none never calls.
    let mut after = chat(json!({"tools": tools}));
    if let Some(messages) = after["messages"].as_array_mut() {
        messages.push(json!({"role": "assistant", "tool_calls": [call]}));
        messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "21C"}));
    }
    let (_, body) = post_json(&url, &after).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let (_, body) = post_json(&url, &chat(json!({"tools": tools, "tool_choice": "none"}))).await;
    assert!(body["choices"][0]["message"]["content"].is_string());

    let (_, body) = post_json(&url, &chat(json!({"response_format": {"type": "json_object"}}))).await;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(serde_json::from_str::<Value>(content).is_ok_and(|v| v.is_object()), "{content}");
    let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"score": {"type": "integer"}}}}});
    let (_, body) = post_json(&url, &chat(json!({"response_format": schema}))).await;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    let doc: Value = serde_json::from_str(content).expect("JSON");
    assert!(doc["score"].is_u64());
}

#[tokio::test]
async fn openai_completions_embeddings_rerank_models() {
    let sim = Sim::start(&[FAST, &["--models", "alpha,beta", "--embedding-dimensions", "64"]].concat());
    let (status, body) =
        post_json(&sim.at("/v1/completions"), &json!({"model": "alpha", "prompt": "Once upon a time"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["usage"]["completion_tokens"], 16, "OpenAI's default max_tokens");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let (events, raw) = sse(client()
        .post(sim.at("/v1/completions"))
        .json(&json!({"model": "alpha", "prompt": "Once", "max_tokens": 4, "stream": true})))
    .await;
    assert!(raw.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(events.iter().filter(|e| e.data != "[DONE]").count(), 5);

    let (status, body) =
        post_json(&sim.at("/v1/embeddings"), &json!({"model": "beta", "input": ["a cat", "a dog"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    let vector = body["data"][0]["embedding"].as_array().expect("floats");
    assert_eq!(vector.len(), 64);
    let norm: f64 = vector.iter().filter_map(Value::as_f64).map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-3);
    assert_ne!(body["data"][0]["embedding"], body["data"][1]["embedding"]);
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    let (_, again) = post_json(
        &sim.at("/v1/embeddings"),
        &json!({"model": "beta", "input": "a cat", "dimensions": 8, "encoding_format": "base64"}),
    )
    .await;
    let b64 = again["data"][0]["embedding"].as_str().expect("base64 string");
    assert_eq!(b64.len(), 8 * 4 * 4 / 3 + 4 - (8 * 4 * 4 / 3) % 4, "8 f32 = 32 bytes = 44 base64 chars");

    let (status, body) = post_json(&sim.at("/v1/rerank"), &json!({"model": "alpha", "query": "the cat sat", "documents": ["taxes rose in march", "the cat sat on the mat"], "top_n": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["results"][0]["index"], 1);

    let list: Value = client().get(sim.at("/v1/models")).send().await.expect("send").json().await.expect("json");
    let ids: Vec<&str> = list["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    let (status, body) = post_json(
        &sim.at("/v1/chat/completions"),
        &json!({"model": "gamma", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn openai_image_generations_answer_a_tiny_png() {
    let sim = Sim::start(&[FAST, &["--models", "painter"]].concat());
    let url = sim.at("/v1/images/generations");
    let (status, body) = post_json(&url, &json!({"model": "painter", "prompt": "a red pixel", "n": 2})).await;
    assert_eq!(status, 200, "{body}");
    let images = body["data"].as_array().expect("data");
    assert_eq!(images.len(), 2);
    assert!(images[0]["b64_json"].as_str().is_some_and(|png| png.starts_with("iVBORw0KGgo")), "{body}");
    assert_eq!(body["usage"]["output_tokens"], 170, "{body}");
    assert!(body["usage"]["input_tokens"].as_u64().is_some_and(|n| n > 0), "{body}");
    let (_, body) = post_json(&url, &json!({"model": "painter", "prompt": "x", "response_format": "url"})).await;
    assert!(body["data"][0]["url"].as_str().is_some_and(|u| u.starts_with("data:image/png;base64,")), "{body}");
    for bad in [json!({"model": "painter", "prompt": "x", "n": 11}), json!({"model": "painter", "prompt": " "})] {
        let (status, body) = post_json(&url, &bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let (status, _) = post_json(&url, &json!({"model": "sculptor", "prompt": "x"})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn anthropic_messages_plain_stream_tools_and_errors() {
    let sim = Sim::start(&[FAST, &["--api-key", "secret"]].concat());
    let url = sim.at("/v1/messages");
    let body = json!({"model": "claude-test", "max_tokens": 20, "system": "Be kind.",
        "messages": [{"role": "user", "content": "Hello"}]});
    let send = |body: &Value| {
        client().post(&url).header("x-api-key", "secret").header("anthropic-version", "2023-06-01").json(body)
    };
    let plain: Value = send(&body).send().await.expect("send").json().await.expect("json");
    assert_eq!(plain["type"], "message");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["model"], "claude-test");
    assert_eq!(plain["content"][0]["type"], "text");
    assert_eq!(plain["stop_reason"], "max_tokens");
    assert_eq!(plain["usage"]["output_tokens"], 20);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (events, _) = sse(send(&streamed)).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap_or_default());
    let delta =
        events.iter().find(|e| e.event.as_deref() == Some("message_delta")).map(|e| e.json()).unwrap_or_default();
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 20);

    let mut tools = body.clone();
    tools["tools"] =
        json!([{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
    let used: Value = send(&tools).send().await.expect("send").json().await.expect("json");
    assert_eq!(used["stop_reason"], "tool_use");
    assert_eq!(used["content"][0]["type"], "tool_use");
    assert_eq!(used["content"][0]["name"], "lookup");
    assert!(used["content"][0]["input"]["q"].is_string());

    let no_key = client().post(&url).header("anthropic-version", "2023-06-01").json(&body).send().await.expect("send");
    assert_eq!(no_key.status().as_u16(), 401);
    let error: Value = no_key.json().await.expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    let no_version = client().post(&url).header("x-api-key", "secret").json(&body).send().await.expect("send");
    assert_eq!(no_version.status().as_u16(), 400);
    let no_max =
        send(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).send().await.expect("send");
    assert_eq!(no_max.status().as_u16(), 400);
    let error: Value = no_max.json().await.expect("json");
    assert_eq!(error["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn gemini_generate_and_stream() {
    let sim = Sim::start(FAST);
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hi there"}]}],
        "generationConfig": {"maxOutputTokens": 5, "candidateCount": 2}});
    let url = sim.at("/v1beta/models/gemini-test:generateContent");
    let (status, plain) = post_json(&url, &body).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["candidates"].as_array().map(Vec::len), Some(2));
    assert_eq!(plain["candidates"][0]["content"]["role"], "model");
    assert_eq!(plain["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(plain["usageMetadata"]["candidatesTokenCount"], 10);
    assert_eq!(plain["modelVersion"], "gemini-test");

    let stream_url = sim.at("/v1beta/models/gemini-test:streamGenerateContent?alt=sse");
    let (events, _) = sse(client().post(&stream_url).json(&body)).await;
    assert_eq!(events.len(), 5, "one chunk per token step");
    let last = events[4].json();
    assert_eq!(last["usageMetadata"]["totalTokenCount"], plain["usageMetadata"]["totalTokenCount"]);
    let text: String = events
        .iter()
        .map(|e| e.json()["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(text, plain["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap_or_default());

    // Without alt=sse: one JSON array, streamed.
    let array_url = sim.at("/v1beta/models/gemini-test:streamGenerateContent");
    let array: Value =
        client().post(&array_url).json(&body).send().await.expect("send").json().await.expect("a JSON array");
    assert_eq!(array.as_array().map(Vec::len), Some(5));

    let tools = json!({"contents": [{"parts": [{"text": "weather?"}]}],
        "tools": [{"functionDeclarations": [{"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]});
    let (_, called) = post_json(&url, &tools).await;
    assert_eq!(called["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "weather");

    let (status, error) = post_json(&sim.at("/v1beta/models/gemini-test:countTokens"), &body).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["status"], "NOT_FOUND");
    let (status, error) = post_json(&url, &json!({"contents": []})).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
}

#[test]
fn help_documents_every_knob_with_its_default() {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-sim")).arg("--help").output().expect("run --help");
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--prefill-overhead-ms",
        "--prefill-per-token-ms",
        "--inter-token-ms",
        "--max-num-seqs",
        "--load-slowdown",
        "--jitter",
        "--seed",
        "--output-tokens",
        "--prefix-cache-block-size",
        "--prefix-cache-blocks",
        "--embedding-dimensions",
        "--deterministic-ids",
        "--fault-error",
        "--fault-hang-rate",
        "--fault-reset-rate",
        "--fault-malformed-rate",
        "--fault-drip-rate",
        "--ready-file",
        "SLUICE_SIM_INTER_TOKEN_MS",
        "[default: 10]",
        "[default: 256]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
