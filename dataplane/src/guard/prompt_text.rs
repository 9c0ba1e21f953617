//! Where the prompt text is in an OpenAI request body, by API: what content rules read and
//! redaction rewrites. Every format the gateway translates (Messages, Responses, Gemini) is a
//! chat request by the time this reads it, so the chat walk covers their system prompts, messages
//! and tool results too.

use serde_json::Value;

use crate::route::Api;

/// Who wrote a text: content rules look for prompt injection only in what a user or a tool
/// (an outside document) wrote, not in the operator's own system prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaker {
    /// A `system` or `developer` message.
    System,
    /// A `user` message.
    User,
    /// An `assistant` message (text or a tool call's arguments from an earlier turn).
    Assistant,
    /// A `tool` or `function` message: a tool's result.
    Tool,
    /// The input of a request that has no messages (completions, embeddings, rerank, images).
    Input,
}

impl Speaker {
    fn of_role(role: Option<&str>) -> Self {
        match role {
            Some("system" | "developer") => Self::System,
            Some("assistant") => Self::Assistant,
            Some("tool" | "function") => Self::Tool,
            _ => Self::User,
        }
    }
}

/// Calls `visit` on every prompt text of a request to `api` (a parsed JSON body), in the order
/// the model reads them, and returns whether any call returned `true` (changed its text).
///
/// - chat: each message's `content` (a string, or the `text` of each part), and the
///   `arguments` of an assistant message's `tool_calls` (and legacy `function_call`);
/// - completions: `prompt` and `suffix`; embeddings: `input` (token-id arrays carry no text);
///   rerank: `query` and `documents` (strings, or objects with `text`); images: `prompt`.
pub fn visit(api: Api, body: &mut Value, visit: &mut dyn FnMut(Speaker, &mut String) -> bool) -> bool {
    let mut changed = false;
    let mut each = |speaker, value: Option<&mut Value>| {
        if let Some(value) = value {
            changed |= strings(speaker, value, &mut *visit);
        }
    };
    match api {
        Api::ChatCompletions => {
            for message in body.get_mut("messages").and_then(Value::as_array_mut).into_iter().flatten() {
                let speaker = Speaker::of_role(message.get("role").and_then(Value::as_str));
                each(speaker, message.get_mut("content"));
                for call in message.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
                    each(speaker, call.get_mut("function").and_then(|f| f.get_mut("arguments")));
                }
                each(speaker, message.get_mut("function_call").and_then(|f| f.get_mut("arguments")));
            }
        }
        Api::Completions => {
            each(Speaker::Input, body.get_mut("prompt"));
            each(Speaker::Input, body.get_mut("suffix"));
        }
        Api::Embeddings => each(Speaker::Input, body.get_mut("input")),
        Api::Rerank => {
            each(Speaker::Input, body.get_mut("query"));
            each(Speaker::Input, body.get_mut("documents"));
        }
        Api::Images => each(Speaker::Input, body.get_mut("prompt")),
    }
    changed
}

/// A string, or the strings of a list: each item itself, or its `text` (content parts, rerank
/// documents). Numbers (token ids), images and audio are no text.
fn strings(speaker: Speaker, value: &mut Value, visit: &mut dyn FnMut(Speaker, &mut String) -> bool) -> bool {
    match value {
        Value::String(text) => visit(speaker, text),
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                match item {
                    Value::String(text) => changed |= visit(speaker, text),
                    Value::Object(part) => {
                        if let Some(Value::String(text)) = part.get_mut("text") {
                            changed |= visit(speaker, text);
                        }
                    }
                    _ => {}
                }
            }
            changed
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn texts(api: Api, body: Value) -> Vec<(Speaker, String)> {
        let mut body = body;
        let mut seen = Vec::new();
        visit(api, &mut body, &mut |speaker, text| {
            seen.push((speaker, text.clone()));
            false
        });
        seen
    }

    #[test]
    fn chat_texts_are_every_message_part_and_tool_call_in_order() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "result"},
            {"role": "developer", "content": "dev"},
        ]});
        use Speaker::*;
        let expected =
            [(System, "be brief"), (User, "look"), (Assistant, "{\"q\":1}"), (Tool, "result"), (System, "dev")];
        let expected: Vec<(Speaker, String)> = expected.iter().map(|(s, t)| (*s, (*t).to_owned())).collect();
        assert_eq!(texts(Api::ChatCompletions, body), expected);
    }

    #[test]
    fn other_apis_read_their_inputs_but_no_token_ids() {
        let input = |api, body| texts(api, body).into_iter().map(|(_, t)| t).collect::<Vec<_>>();
        assert_eq!(input(Api::Completions, json!({"prompt": ["a", "b"], "suffix": "c"})), ["a", "b", "c"]);
        assert_eq!(input(Api::Embeddings, json!({"input": [[1, 2, 3]]})), Vec::<String>::new());
        assert_eq!(input(Api::Embeddings, json!({"input": "e"})), ["e"]);
        assert_eq!(input(Api::Rerank, json!({"query": "q", "documents": ["d", {"text": "t"}]})), ["q", "d", "t"]);
        assert_eq!(input(Api::Images, json!({"prompt": "p"})), ["p"]);
    }

    #[test]
    fn the_walk_reports_whether_a_text_changed() {
        let mut body = json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]});
        let changed = visit(Api::ChatCompletions, &mut body, &mut |_, text| {
            if text == "b" {
                text.push('!');
                return true;
            }
            false
        });
        assert!(changed);
        assert_eq!(body["messages"][1]["content"], "b!");
        assert!(!visit(Api::ChatCompletions, &mut body, &mut |_, _| false));
    }
}
