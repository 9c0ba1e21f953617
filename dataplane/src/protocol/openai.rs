//! OpenAI-compatible request bodies: the few fields the gateway needs (`model`, `stream`,
//! `stream_options`, `max_tokens`, and where the prompt's text is), read in place, and byte-exact rewrites of only those fields.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// The fields of a request body that routing, limits and usage accounting need.
#[derive(Debug)]
pub struct RequestFields<'a> {
    /// The requested model name (unescaped).
    pub model: Cow<'a, str>,
    model_span: Range<usize>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    stream_options_span: Option<Range<usize>>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Where `messages` (chat) or `prompt` (completions) is, as JSON text.
    prompt_span: Option<Range<usize>>,
}

impl RequestFields<'_> {
    /// The JSON text of the prompt (`messages` or `prompt`) in `body`, the body these fields
    /// were read from.
    pub fn prompt<'b>(&self, body: &'b [u8]) -> Option<&'b [u8]> {
        self.prompt_span.clone().and_then(|span| body.get(span))
    }
}

#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    // Borrowed, not parsed: serde skips over them either way.
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Where `inner` (a slice of `outer`) starts and ends within `outer`.
fn span_of(outer: &[u8], inner: &str) -> Range<usize> {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    start..start + inner.len()
}

/// Reads the fields from a JSON body. Other fields are skipped without being materialised; a
/// duplicated `model` is an error, so the gateway and the upstream can never disagree on it.
pub fn read_fields(body: &[u8]) -> Result<RequestFields<'_>, ApiError> {
    let top: TopLevel<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() && e.to_string().contains("expected struct TopLevel") {
            ApiError::InvalidJson("the body must be a JSON object".into())
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })?;
    // serde reads a struct from a JSON array too (its fields in order), which would be routed
    // and then rewritten into invalid JSON; a request is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::InvalidJson("the body must be a JSON object".into()));
    }
    let raw_model = top.model.ok_or_else(|| ApiError::InvalidParam {
        param: "model",
        code: "missing_required_parameter",
        message: "you must provide a model parameter".into(),
    })?;
    let model: Cow<'_, str> = serde_json::from_str(raw_model.get()).map_err(|_| ApiError::InvalidParam {
        param: "model",
        code: "invalid_type",
        message: "model must be a string".into(),
    })?;
    let include_usage = match top.stream_options {
        Some(raw) => {
            serde_json::from_str::<StreamOptions>(raw.get())
                .map_err(|e| ApiError::InvalidParam {
                    param: "stream_options",
                    code: "invalid_type",
                    message: format!("stream_options: {e}"),
                })?
                .include_usage
                == Some(true)
        }
        None => false,
    };
    Ok(RequestFields {
        model_span: span_of(body, raw_model.get()),
        model,
        stream: top.stream == Some(true),
        include_usage,
        stream_options_span: top.stream_options.map(|raw| span_of(body, raw.get())),
        max_tokens: top.max_completion_tokens.or(top.max_tokens),
        prompt_span: top.messages.or(top.prompt).map(|raw| span_of(body, raw.get())),
    })
}

/// What to change in a body before it goes upstream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rewrite<'a> {
    /// Replace `model` with this upstream name.
    pub model: Option<&'a str>,
    /// Ask for `stream_options.include_usage: true`.
    pub include_usage: bool,
}

/// Applies `rewrite` to `body`, leaving every other byte as it was. Returns `body` itself (no
/// copy) when nothing changes.
pub fn rewrite_body(body: &Bytes, fields: &RequestFields<'_>, rewrite: Rewrite<'_>) -> Bytes {
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::with_capacity(2);
    if let Some(model) = rewrite.model {
        // Serialising a &str to JSON cannot fail.
        let quoted = serde_json::to_vec(model).unwrap_or_default();
        edits.push((fields.model_span.clone(), quoted));
    }
    if rewrite.include_usage && !fields.include_usage {
        match &fields.stream_options_span {
            Some(span) => {
                let mut options: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&body[span.clone()]).unwrap_or_default();
                options.insert("include_usage".into(), serde_json::Value::Bool(true));
                edits.push((span.clone(), serde_json::to_vec(&options).unwrap_or_default()));
            }
            None => {
                // Insert right after the opening brace of the top-level object.
                let brace = body.iter().position(|b| *b == b'{').unwrap_or(0);
                let needs_comma = body[brace + 1..].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}');
                let mut insert = br#""stream_options":{"include_usage":true}"#.to_vec();
                if needs_comma {
                    insert.push(b',');
                }
                edits.push((brace + 1..brace + 1, insert));
            }
        }
    }
    if edits.is_empty() {
        return body.clone();
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at = 0;
    for (range, replacement) in edits {
        out.extend_from_slice(&body[at..range.start]);
        out.extend_from_slice(&replacement);
        at = range.end;
    }
    out.extend_from_slice(&body[at..]);
    Bytes::from(out)
}

/// A rough prompt size in tokens for admission (about four bytes per token), corrected later
/// with the upstream's real usage.
pub fn estimate_prompt_tokens(body_len: usize) -> u64 {
    (body_len as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &[u8]) -> RequestFields<'_> {
        read_fields(body).expect("valid body")
    }

    #[test]
    fn reads_only_what_it_needs() {
        let body = br#"{"messages":[{"role":"user","content":"hi \"model\": x"}], "model" : "gpt-4o", "stream":true,"max_tokens":5}"#;
        let f = fields(body);
        assert_eq!(f.model, "gpt-4o");
        assert!(f.stream);
        assert!(!f.include_usage);
        assert_eq!(f.max_tokens, Some(5));
        assert_eq!(f.prompt(body), Some(&br#"[{"role":"user","content":"hi \"model\": x"}]"#[..]));
        let completion = br#"{"model":"m","prompt":"Once upon"}"#;
        assert_eq!(fields(completion).prompt(completion), Some(&br#""Once upon""#[..]));
        assert_eq!(fields(br#"{"model":"m"}"#).prompt(b""), None);
    }

    #[test]
    fn rewrites_only_the_model_bytes() {
        let body = Bytes::from_static(br#"{ "model" : "chat",  "messages": [ {"role":"user","content":"model"} ] }"#);
        let f = fields(&body);
        let out = rewrite_body(&body, &f, Rewrite { model: Some("deepseek-chat"), include_usage: false });
        assert_eq!(&out[..], br#"{ "model" : "deepseek-chat",  "messages": [ {"role":"user","content":"model"} ] }"#);
    }

    #[test]
    fn unchanged_bodies_are_not_copied() {
        let body = Bytes::from_static(br#"{"model":"m"}"#);
        let f = fields(&body);
        let out = rewrite_body(&body, &f, Rewrite::default());
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    #[test]
    fn asks_for_usage_when_the_client_did_not() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true}"#);
        let out = rewrite_body(&body, &fields(&body), Rewrite { model: None, include_usage: true });
        assert_eq!(&out[..], br#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#);

        let body = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#);
        let out = rewrite_body(&body, &fields(&body), Rewrite { model: Some("u"), include_usage: true });
        assert_eq!(&out[..], br#"{"model":"u","stream":true,"stream_options":{"include_usage":true}}"#);

        let body = Bytes::from_static(br#"{"model":"m","stream_options":{"include_usage":true}}"#);
        let f = fields(&body);
        assert!(f.include_usage);
        assert_eq!(rewrite_body(&body, &f, Rewrite { model: None, include_usage: true }), body);
    }

    #[test]
    fn escaped_model_names_are_unescaped_and_rewritten_whole() {
        let body = Bytes::from_static(br#"{"model":"a\/b"}"#);
        let f = fields(&body);
        assert_eq!(f.model, "a/b");
        assert_eq!(
            &rewrite_body(&body, &f, Rewrite { model: Some("c"), include_usage: false })[..],
            br#"{"model":"c"}"#
        );
    }

    #[test]
    fn bad_bodies_get_precise_errors() {
        assert!(matches!(read_fields(b"not json"), Err(ApiError::InvalidJson(_))));
        assert!(matches!(read_fields(b"[1]"), Err(ApiError::InvalidJson(m)) if m.contains("JSON object")));
        assert!(matches!(read_fields(br#"{"messages":[]}"#), Err(ApiError::InvalidParam { param: "model", .. })));
        assert!(matches!(read_fields(br#"{"model":3}"#), Err(ApiError::InvalidParam { param: "model", .. })));
        assert!(
            matches!(read_fields(br#"{"model":"a","model":"b"}"#), Err(ApiError::InvalidJson(m)) if m.contains("duplicate"))
        );
        assert!(matches!(read_fields(br#"{"model":"a","stream":"yes"}"#), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn an_array_with_every_field_is_no_request() {
        // Caught by the `body_fields` fuzz target's check that what read_fields accepts is an
        // object (on an input written to test that check): serde read it as a struct, so it was
        // routed (model "m", streamed) and the usage rewrite then made it invalid JSON.
        let body = br#"["m",true,null,null,null,null,null]"#;
        assert!(matches!(read_fields(body), Err(ApiError::InvalidJson(m)) if m.contains("JSON object")));
        assert!(read_fields(br#" {"model":"m"}"#).is_ok(), "whitespace before the object is fine");
    }
}

/// Token counts from a response's `usage` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Prompt tokens served from the upstream's prompt cache.
    pub cached_tokens: u64,
}

/// The `usage` of a response body or stream chunk, if it has one.
///
/// Reads only the `usage` object, found from the end (upstreams put it last): in valid JSON the
/// bytes `"usage"` followed by `:` can only be an object key, since quotes inside strings are
/// escaped. After it, three integers are read by their keys (their first occurrences after the
/// `usage` key are inside its object), so the rest of the body is never parsed. This runs once
/// per response on the hot path, hence the prebuilt searchers. A usage with neither
/// `prompt_tokens` nor `completion_tokens` is read from `input_tokens` and `output_tokens`
/// instead (image generation counts them so).
pub fn read_usage(json: &[u8]) -> Option<Usage> {
    use memchr::memmem::Finder;
    static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
    static PROMPT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"prompt_tokens\""));
    static COMPLETION: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"completion_tokens\""));
    static CACHED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"cached_tokens\""));
    static INPUT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"input_tokens\""));
    static OUTPUT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"output_tokens\""));
    // The last `"usage"` that is a key (a string value is not followed by a colon). The forward
    // search is several times faster than the reverse one; the key is rare. No list of the
    // matches is kept: a stream reads every chunk's `"usage":null`.
    let value = USAGE
        .find_iter(json)
        .filter_map(|at| json[at + 7..].trim_ascii_start().strip_prefix(b":"))
        .last()?
        .trim_ascii_start();
    if !value.starts_with(b"{") {
        return None;
    }
    let integer = |finder: &Finder<'_>| -> Option<u64> {
        let at = finder.find(value)?;
        let rest = value[at + finder.needle().len()..].trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    };
    let (mut prompt_tokens, mut completion_tokens) = (integer(&PROMPT), integer(&COMPLETION));
    if prompt_tokens.is_none() && completion_tokens.is_none() {
        (prompt_tokens, completion_tokens) = (integer(&INPUT), integer(&OUTPUT));
    }
    if prompt_tokens.is_none() && completion_tokens.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: prompt_tokens.unwrap_or(0),
        completion_tokens: completion_tokens.unwrap_or(0),
        cached_tokens: integer(&CACHED).unwrap_or(0),
    })
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn reads_usage_with_cached_tokens() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        assert_eq!(read_usage(body), Some(Usage { prompt_tokens: 10, completion_tokens: 3, cached_tokens: 8 }));
        assert_eq!(read_usage(br#"{"usage":null}"#), None);
        assert_eq!(read_usage(br#"{"data":[]}"#), None);
        // A key named usage inside a string is not the usage.
        let tricky = br#"{"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 9}"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        assert_eq!(read_usage(tricky), Some(Usage { prompt_tokens: 1, completion_tokens: 2, cached_tokens: 0 }));
        let spaced = br#"{"usage" : {"prompt_tokens": 4, "completion_tokens": 5}, "id": "x"}"#;
        assert_eq!(read_usage(spaced).map(|u| u.prompt_tokens), Some(4));
        // Nested details do not shadow the top-level counts.
        let nested =
            br#"{"usage":{"prompt_tokens_details":{"cached_tokens":3},"prompt_tokens":7,"completion_tokens":1}}"#;
        assert_eq!(read_usage(nested), Some(Usage { prompt_tokens: 7, completion_tokens: 1, cached_tokens: 3 }));
        assert_eq!(read_usage(br#"{"usage":{"total_tokens":5}}"#), None, "no counts, no usage");
        let image = br#"{"created":1,"data":[{"b64_json":"iVBO"}],"usage":{"total_tokens":95,"input_tokens":10,"output_tokens":85,"input_tokens_details":{"text_tokens":10,"image_tokens":0}}}"#;
        assert_eq!(read_usage(image), Some(Usage { prompt_tokens: 10, completion_tokens: 85, cached_tokens: 0 }));
        // "usage" as a string value is no key: the key after it counts, null or not.
        assert_eq!(read_usage(br#"{"choices":[{"delta":{"content":"usage"}}],"usage":null}"#), None);
        let valued =
            br#"{"choices":[{"delta":{"content":"usage"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#;
        assert_eq!(read_usage(valued).map(|u| (u.prompt_tokens, u.completion_tokens)), Some((2, 1)));
        assert_eq!(read_usage(br#"{"content":"usage"}"#), None, "a value only");
    }
}

#[cfg(test)]
mod usage_cost {
    #[test]
    #[ignore = "a measurement, run by hand: cargo test --release -p sluice-gateway usage_cost -- --ignored --nocapture"]
    fn read_usage_cost() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Eye were year want seem big have, why. Keep know high new much.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":16,"total_tokens":26,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp"}"#;
        let start = std::time::Instant::now();
        let mut total = 0;
        for _ in 0..100_000 {
            total += super::read_usage(std::hint::black_box(body)).map_or(0, |u| u.completion_tokens);
        }
        eprintln!("read_usage: {:?} per call ({total})", start.elapsed() / 100_000);
    }
}
