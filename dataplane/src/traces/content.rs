//! Prompts and completions on a request span, for a Project that opts in
//! (`spec.tracing.recordContent`), as the OpenTelemetry GenAI conventions record them:
//! `gen_ai.input.messages` and `gen_ai.output.messages`, each a JSON array of messages
//! (`{"role", "parts": [{"type": "text", "content"}...], "finish_reason"}`). Text parts, tool
//! calls and tool results are kept; images, audio and files are left out. Each attribute holds
//! at most [`LIMIT_BYTES`] of text: the text is cut there (on a character boundary), later
//! messages are dropped, and `sluice.content.truncated` is set. A streamed answer is assembled
//! from its events as they pass the tap, up to the same limit; without the opt-in nothing is
//! parsed or copied. Credentials never get here: only the request body and the answer are read.

use serde_json::{Map, Value, json};

use crate::protocol::AnswerFormat;

/// The input messages' attribute.
pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// The output messages' attribute.
pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// Set (true) when either was cut at [`LIMIT_BYTES`].
pub const TRUNCATED: &str = "sluice.content.truncated";
/// Most bytes of text each of the two attributes holds (16 KiB): enough for most prompts,
/// small enough for collectors' attribute limits and the span's memory until export.
pub const LIMIT_BYTES: usize = 16 * 1024;

/// Messages ready for a span attribute.
#[derive(Debug)]
pub struct Messages {
    /// The JSON array.
    pub json: String,
    /// Whether text was cut or messages dropped at the limit.
    pub truncated: bool,
}

/// What is left of the limit.
#[derive(Debug)]
struct Budget {
    left: usize,
    truncated: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Self { left: LIMIT_BYTES, truncated: false }
    }
}

impl Budget {
    /// As much of `text` as fits.
    fn take<'a>(&mut self, text: &'a str) -> &'a str {
        if text.len() <= self.left {
            self.left -= text.len();
            return text;
        }
        self.truncated = true;
        let mut end = self.left;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.left = 0;
        &text[..end]
    }

    fn spent(&mut self) -> bool {
        if self.left == 0 {
            self.truncated = true;
        }
        self.left == 0
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "content": text})
}

/// The messages of a chat completions request body; `None` when it has none to read.
pub fn input_messages(body: &[u8]) -> Option<Messages> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let messages = request.get("messages")?.as_array()?;
    let mut budget = Budget::default();
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        if budget.spent() {
            break;
        }
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        let mut parts = Vec::new();
        let content = message.get("content");
        if role == "tool" {
            let response = content.and_then(Value::as_str).unwrap_or_default();
            let mut part = Map::new();
            part.insert("type".into(), "tool_call_response".into());
            if let Some(id) = message.get("tool_call_id") {
                part.insert("id".into(), id.clone());
            }
            part.insert("response".into(), budget.take(response).into());
            parts.push(Value::Object(part));
        } else {
            match content {
                Some(Value::String(text)) => parts.push(text_part(budget.take(text))),
                Some(Value::Array(items)) => {
                    for item in items {
                        if item.get("type").and_then(Value::as_str) == Some("text")
                            && let Some(text) = item.get("text").and_then(Value::as_str)
                        {
                            parts.push(text_part(budget.take(text)));
                        }
                    }
                }
                _ => {}
            }
            for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let function = call.get("function");
                let name = function.and_then(|f| f.get("name")).cloned().unwrap_or_default();
                let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
                parts.push(json!({"type": "tool_call", "id": call.get("id").cloned().unwrap_or_default(),
                    "name": name, "arguments": budget.take(arguments)}));
            }
        }
        out.push(json!({"role": role, "parts": parts}));
    }
    Some(Messages { json: Value::Array(out).to_string(), truncated: budget.truncated })
}

/// One choice of an answer, as read so far.
#[derive(Debug, Default)]
struct Choice {
    text: String,
    finish_reason: Option<String>,
}

/// The text of an answer in `format`: read whole, or assembled event by event from a stream.
#[derive(Debug)]
pub struct Output {
    format: AnswerFormat,
    choices: Vec<Choice>,
    budget: Budget,
}

impl Output {
    /// An answer in `format`, to be read.
    pub fn reading(format: AnswerFormat) -> Self {
        Self { format, choices: Vec::new(), budget: Budget::default() }
    }

    /// The text of a whole answer.
    pub fn whole(format: AnswerFormat, body: &[u8]) -> Self {
        let mut output = Self::reading(format);
        if let Ok(answer) = serde_json::from_slice::<Value>(body) {
            output.read(&answer, false);
        }
        output
    }

    /// Reads one event of a stream (the JSON after `data:`).
    pub fn event(&mut self, data: &[u8]) {
        if let Ok(event) = serde_json::from_slice::<Value>(data) {
            self.read(&event, true);
        }
    }

    fn read(&mut self, value: &Value, streamed: bool) {
        let str_at = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        match self.format {
            AnswerFormat::OpenAi => {
                for choice in value.get("choices").and_then(Value::as_array).into_iter().flatten() {
                    let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let message = choice.get(if streamed { "delta" } else { "message" });
                    if let Some(text) = message.and_then(|m| m.get("content")).and_then(Value::as_str) {
                        self.push(index, text);
                    }
                    self.finish(index, str_at(choice, "finish_reason"));
                }
            }
            AnswerFormat::Anthropic => {
                // A whole message's text blocks, or a stream's text deltas and its stop reason.
                for block in value.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(text) = block.get("text").and_then(Value::as_str) {
                        self.push(0, text);
                    }
                }
                if let Some(delta) = value.get("delta") {
                    if let Some(text) = delta.get("text").and_then(Value::as_str) {
                        self.push(0, text);
                    }
                    self.finish(0, str_at(delta, "stop_reason"));
                }
                self.finish(0, str_at(value, "stop_reason"));
            }
            AnswerFormat::Gemini => {
                for (position, candidate) in
                    value.get("candidates").and_then(Value::as_array).into_iter().flatten().enumerate()
                {
                    let index = candidate.get("index").and_then(Value::as_u64).map_or(position, |i| i as usize);
                    let parts = candidate.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array);
                    for part in parts.into_iter().flatten() {
                        if let Some(text) = part.get("text").and_then(Value::as_str) {
                            self.push(index, text);
                        }
                    }
                    self.finish(index, str_at(candidate, "finishReason"));
                }
            }
        }
    }

    fn choice(&mut self, index: usize) -> &mut Choice {
        // An index past any sensible `n` is folded into the last choice rather than allocated.
        let index = index.min(15);
        if self.choices.len() <= index {
            self.choices.resize_with(index + 1, Choice::default);
        }
        &mut self.choices[index]
    }

    fn push(&mut self, index: usize, text: &str) {
        if text.is_empty() || self.budget.spent() {
            return;
        }
        let kept = self.budget.take(text);
        self.choice(index).text.push_str(kept);
    }

    fn finish(&mut self, index: usize, reason: Option<String>) {
        if let Some(reason) = reason {
            self.choice(index).finish_reason = Some(reason);
        }
    }

    /// The answer's messages, one per choice.
    pub fn into_messages(self) -> Messages {
        let messages: Vec<Value> = self
            .choices
            .into_iter()
            .map(|choice| {
                let mut message = json!({"role": "assistant", "parts": [text_part(&choice.text)]});
                if let (Some(reason), Some(fields)) = (choice.finish_reason, message.as_object_mut()) {
                    fields.insert("finish_reason".into(), reason.into());
                }
                message
            })
            .collect();
        Messages { json: Value::Array(messages).to_string(), truncated: self.budget.truncated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(messages: &Messages) -> Value {
        serde_json::from_str(&messages.json).expect("valid JSON")
    }

    #[test]
    fn chat_messages_become_parts() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "rain"}
        ]});
        let messages = input_messages(body.to_string().as_bytes()).expect("messages");
        assert!(!messages.truncated);
        assert_eq!(
            parsed(&messages),
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "weather",
                    "arguments": "{\"city\":\"Oslo\"}"}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "rain"}]}
            ])
        );
    }

    #[test]
    fn text_is_cut_at_the_limit_on_a_character_boundary() {
        let long = "é".repeat(LIMIT_BYTES); // two bytes each
        let body = json!({"messages": [{"role": "user", "content": long}, {"role": "user", "content": "later"}]});
        let messages = input_messages(body.to_string().as_bytes()).expect("messages");
        assert!(messages.truncated);
        let value = parsed(&messages);
        assert_eq!(value.as_array().map(Vec::len), Some(1), "later messages are dropped");
        assert_eq!(value[0]["parts"][0]["content"].as_str().map(str::len), Some(LIMIT_BYTES));
    }

    #[test]
    fn answers_are_read_in_each_format() {
        let openai = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"},
            "finish_reason": "stop"}]});
        let whole = Output::whole(AnswerFormat::OpenAi, openai.to_string().as_bytes()).into_messages();
        assert_eq!(
            parsed(&whole),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "yes"}], "finish_reason": "stop"}])
        );

        let mut stream = Output::reading(AnswerFormat::Anthropic);
        for event in [
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "he"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "llo"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
        ] {
            stream.event(event.to_string().as_bytes());
        }
        let value = parsed(&stream.into_messages());
        assert_eq!(
            (value[0]["parts"][0]["content"].as_str(), value[0]["finish_reason"].as_str()),
            (Some("hello"), Some("end_turn"))
        );

        let gemini = json!({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]});
        let value = parsed(&Output::whole(AnswerFormat::Gemini, gemini.to_string().as_bytes()).into_messages());
        assert_eq!(value[0]["parts"][0]["content"], "ok");
    }

    #[test]
    fn a_stream_is_assembled_up_to_the_limit() {
        let mut output = Output::reading(AnswerFormat::OpenAi);
        let chunk = "x".repeat(1000);
        for _ in 0..20 {
            output.event(json!({"choices": [{"index": 0, "delta": {"content": chunk}}]}).to_string().as_bytes());
        }
        let messages = output.into_messages();
        assert!(messages.truncated);
        assert_eq!(parsed(&messages)[0]["parts"][0]["content"].as_str().map(str::len), Some(LIMIT_BYTES));
    }
}
