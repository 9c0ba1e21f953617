//! Wire formats: what the gateway reads from request bodies and upstream responses, without
//! deserialising or re-serialising more than a field that must change; an endpoint's defaults
//! written into requests that lack them; Anthropic's Messages API, translated whole to and from
//! OpenAI's chat completions for clients that speak it and for Anthropic upstreams; Gemini's
//! `generateContent`, both ways too, and its `embedContent` into OpenAI's embeddings; and
//! OpenAI's Responses API, translated to and from chat completions for clients that speak it.

pub mod anthropic;
pub mod completion;
pub mod defaults;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod sse;

/// The format an upstream's answer reaches the gateway in, for reading its usage: OpenAI's
/// (an OpenAI-compatible upstream, or any answer translated to it), or Anthropic's or Gemini's
/// own (a Messages or Gemini request passed through to an upstream of its kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnswerFormat {
    /// Chat completions (`usage.prompt_tokens`...).
    #[default]
    OpenAi,
    /// Messages (`usage.input_tokens`..., in `message_start` and `message_delta` when streamed).
    Anthropic,
    /// `GenerateContentResponse` (`usageMetadata`, in every event when streamed).
    Gemini,
}

impl AnswerFormat {
    /// The usage of a whole answer body in this format.
    pub fn read_usage(self, body: &[u8]) -> Option<openai::Usage> {
        match self {
            Self::OpenAi => openai::read_usage(body),
            Self::Anthropic => anthropic::usage::read_usage(body),
            Self::Gemini => {
                let response: serde_json::Value = serde_json::from_slice(body).ok()?;
                response.get("usageMetadata").map(gemini::response::usage)
            }
        }
    }
}

/// Golden files for the translations' unit tests, under `dataplane/tests/fixtures/protocols/`:
/// read as JSON (or as text), and compared; `SLUICE_BLESS=1` writes what the code produces
/// instead, to be reviewed like any change.
#[cfg(test)]
pub(crate) mod golden {
    use std::path::PathBuf;

    use serde_json::Value;

    fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocols").join(name)
    }

    /// A fixture's text.
    pub fn text(name: &str) -> String {
        std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A fixture as JSON.
    pub fn json(name: &str) -> Value {
        serde_json::from_str(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Asserts that `actual` is the fixture `name` (or writes it, blessing).
    pub fn check(name: &str, actual: &Value) {
        if std::env::var_os("SLUICE_BLESS").is_some() {
            let mut text = serde_json::to_string_pretty(actual).unwrap_or_default();
            text.push('\n');
            std::fs::write(path(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
            return;
        }
        assert_eq!(actual, &json(name), "{name} differs (SLUICE_BLESS=1 rewrites it)");
    }

    /// The data of every event of an SSE body, as JSON (`[DONE]` as the string).
    pub fn sse_data(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("utf8: {e}"));
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|event| {
                let data = event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("{event}"));
                serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
            })
            .collect()
    }
}
