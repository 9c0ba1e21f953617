//! One attempt's wire format, chosen by the backend's provider type: what is sent (the client's
//! bytes with at most `model` rewritten, or a translation) and how the answer comes back. An
//! OpenAI-compatible backend gets the OpenAI body as before, with no copy when nothing changes;
//! an Anthropic backend gets a Messages request (the client's own, passed through, when the
//! client spoke Messages); a Gemini backend a `generateContent` request (the client's own when
//! it spoke Gemini). Translated answers are
//! turned into OpenAI's format here, whole or event by event, so that every later stage
//! (accounting, the Messages translation back, stream limits) reads an OpenAI answer, or, for a
//! Messages request passed through, the client's own format.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::{Body as HttpBody, Frame};
use sluice_crds::api::ProviderType;

use crate::error::ApiError;
use crate::protocol::AnswerFormat;
use crate::protocol::anthropic::outbound as anthropic;
use crate::protocol::completion::{ToOpenAiStream, error_body};
use crate::protocol::gemini;
use crate::protocol::openai::{self, RequestFields, Rewrite};
use crate::route::Api;
use crate::snapshot::Backend;
use crate::upstream::client::{Body, BoxError, Target, UpstreamBody};

/// The client's own body, for backends of its format to take as it is: a Messages body for
/// Anthropic backends, a `generateContent` body for Gemini ones.
#[derive(Clone, Copy)]
pub struct Native<'a> {
    /// The body as the client sent it.
    pub body: &'a Bytes,
    /// Its fields (`model`'s place, to rewrite it; a Gemini body names no model).
    pub fields: &'a RequestFields<'a>,
    /// Its format: [`AnswerFormat::Anthropic`] or [`AnswerFormat::Gemini`].
    pub format: AnswerFormat,
}

/// How an attempt's answer is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// OpenAI's format, as it came.
    OpenAi,
    /// The client's own Messages format, passed through as it came.
    Messages,
    /// The client's own Gemini format, passed through as it came.
    Gemini,
    /// Anthropic's format, translated into OpenAI's.
    FromAnthropic,
    /// Gemini's format, translated into OpenAI's.
    FromGemini,
}

/// What one attempt sends.
pub struct Outbound<'a> {
    /// Where.
    pub target: Target<'a>,
    /// The body.
    pub body: Bytes,
    /// Whether it is the client's or a translation.
    pub origin: Body,
    /// How the answer is read.
    pub reading: Reading,
}

/// Why a backend cannot take this request.
pub enum Unfit {
    /// Its wire format has no such API (embeddings to an Anthropic upstream).
    Api,
    /// The request uses what its wire format cannot express (a 400 if no backend takes it).
    Request(ApiError),
}

/// The request for `backend`: `body` (OpenAI's) with `fields`, or the client's `native` body.
/// `include_usage` asks an OpenAI upstream's stream for its usage chunk (chat and text
/// completions only: no other API takes `stream_options`).
pub fn prepare<'a>(
    api: Api,
    backend: &'a Backend,
    body: &Bytes,
    fields: &RequestFields<'_>,
    native: Option<Native<'_>>,
    include_usage: bool,
) -> Result<Outbound<'a>, Unfit> {
    let model = backend.model.as_str();
    let rename = |requested: &str| (requested != model).then_some(model);
    let include_usage = include_usage && matches!(api, Api::ChatCompletions | Api::Completions);
    match (backend.upstream.kind, api) {
        (ProviderType::Openai | ProviderType::Simulated, _) => Ok(Outbound {
            target: Target::Api(api),
            body: openai::rewrite_body(body, fields, Rewrite { model: rename(&fields.model), include_usage }),
            origin: Body::Forwarded,
            reading: Reading::OpenAi,
        }),
        (ProviderType::Anthropic, Api::ChatCompletions) => match native.filter(|n| n.format == AnswerFormat::Anthropic)
        {
            Some(native) => Ok(Outbound {
                target: Target::Messages,
                body: openai::rewrite_body(
                    native.body,
                    native.fields,
                    Rewrite { model: rename(&native.fields.model), include_usage: false },
                ),
                origin: Body::Forwarded,
                reading: Reading::Messages,
            }),
            None => {
                let max_tokens =
                    backend.upstream.max_output_tokens(model).map_or(anthropic::DEFAULT_MAX_TOKENS, u64::from);
                let body = anthropic::request_from_openai(body, model, max_tokens).map_err(Unfit::Request)?;
                Ok(Outbound {
                    target: Target::Messages,
                    body: Bytes::from(body),
                    origin: Body::Translated,
                    reading: Reading::FromAnthropic,
                })
            }
        },
        (ProviderType::Gemini, Api::ChatCompletions) => {
            if let Some(native) = native.filter(|n| n.format == AnswerFormat::Gemini) {
                // The model and streaming are in the URL: the body goes as it came.
                return Ok(Outbound {
                    target: Target::Gemini { model, stream: fields.stream },
                    body: native.body.clone(),
                    origin: Body::Forwarded,
                    reading: Reading::Gemini,
                });
            }
            let body = gemini::request::request_from_openai(body).map_err(Unfit::Request)?;
            Ok(Outbound {
                target: Target::Gemini { model, stream: fields.stream },
                body: Bytes::from(body),
                origin: Body::Translated,
                reading: Reading::FromGemini,
            })
        }
        (ProviderType::Anthropic | ProviderType::Gemini, _) => Err(Unfit::Api),
    }
}

/// A translation of a whole successful answer (`None`: not the answer expected).
type TranslateWhole = fn(&[u8], i64) -> Option<Vec<u8>>;
/// A translation of an error answer.
type TranslateError = fn(StatusCode, &[u8]) -> Vec<u8>;

impl Reading {
    /// The format the gateway reads the answer in, once through [`Reading::whole`] or
    /// [`Reading::stream`].
    pub fn format(self) -> AnswerFormat {
        match self {
            Self::Messages => AnswerFormat::Anthropic,
            Self::Gemini => AnswerFormat::Gemini,
            Self::OpenAi | Self::FromAnthropic | Self::FromGemini => AnswerFormat::OpenAi,
        }
    }

    /// Whether the answer is in the client's own format (nothing to translate back).
    pub fn is_native(self) -> bool {
        matches!(self, Self::Messages | Self::Gemini)
    }

    /// A whole answer in the format [`Reading::format`] names: an upstream's success
    /// translated into a chat completion (a `502` if it is none), its error into OpenAI's error
    /// shape. `created` stamps translated completions (Unix seconds; asked only for them).
    pub fn whole(self, status: StatusCode, bytes: Bytes, created: impl FnOnce() -> i64) -> (StatusCode, Bytes) {
        let (translate, error): (TranslateWhole, TranslateError) = match self {
            Self::OpenAi | Self::Messages | Self::Gemini => return (status, bytes),
            Self::FromAnthropic => (anthropic::completion_from_message, anthropic::error_to_openai),
            Self::FromGemini => (gemini::response::completion_from_response, gemini::error_to_openai),
        };
        if !status.is_success() {
            return (status, Bytes::from(error(status, &bytes)));
        }
        match translate(&bytes, created()) {
            Some(body) => (status, Bytes::from(body)),
            None => (
                StatusCode::BAD_GATEWAY,
                Bytes::from(error_body("The upstream's answer could not be translated.", "server_error", None)),
            ),
        }
    }

    /// A streamed answer in the format [`Reading::format`] names: a translated one's events
    /// become chat completion chunks as they arrive, stamped `created` (asked only for them).
    pub fn stream(self, body: UpstreamBody, created: impl FnOnce() -> i64) -> UpstreamBody {
        let translator: Box<dyn ToOpenAiStream> = match self {
            Self::OpenAi | Self::Messages | Self::Gemini => return body,
            Self::FromAnthropic => Box::new(anthropic::ChunksFromEvents::new(created())),
            Self::FromGemini => Box::new(gemini::response::ChunksFromGemini::new(created())),
        };
        Translating { inner: body, translator, failed: None, done: false }.boxed_unsync()
    }
}

/// An upstream stream whose events are translated as they pass. A translation that fails (an
/// error event, a stream that ends before its answer) ends it as a broken stream, after the
/// chunks translated before.
struct Translating {
    inner: UpstreamBody,
    translator: Box<dyn ToOpenAiStream>,
    failed: Option<String>,
    done: bool,
}

impl HttpBody for Translating {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(message) = this.failed.take() {
                this.done = true;
                return Poll::Ready(Some(Err(message.into())));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let mut out = BytesMut::new();
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if let Err(message) = this.translator.feed(&data, &mut out) {
                        this.failed = Some(message);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => match this.translator.finish(&mut out) {
                    Ok(()) => this.done = true,
                    Err(message) => this.failed = Some(message),
                },
                Poll::Pending => return Poll::Pending,
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn upstream(frames: Vec<Result<&'static str, &'static str>>) -> UpstreamBody {
        let stream = futures::stream::iter(frames.into_iter().map(|f| match f {
            Ok(text) => Ok(Frame::data(Bytes::from_static(text.as_bytes()))),
            Err(e) => Err(BoxError::from(e)),
        }));
        StreamBody::new(stream).boxed_unsync()
    }

    async fn drain(mut body: UpstreamBody) -> (String, Option<String>) {
        let mut text = String::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap_or_default())),
                Err(e) => return (text, Some(e.to_string())),
            }
        }
        (text, None)
    }

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":2,\"output_tokens\":1}}}\n\n";
    const TEXT: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
    const END: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[tokio::test]
    async fn translated_streams_end_with_usage_and_done() {
        let body = Reading::FromAnthropic.stream(upstream(vec![Ok(START), Ok(TEXT), Ok(END)]), || 1);
        let (text, error) = drain(body).await;
        assert_eq!(error, None);
        assert!(text.contains("\"content\":\"Hi\""), "{text}");
        assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }

    #[tokio::test]
    async fn streams_cut_short_or_broken_fail_after_what_arrived() {
        let (text, error) = drain(Reading::FromAnthropic.stream(upstream(vec![Ok(START), Ok(TEXT)]), || 1)).await;
        assert!(text.contains("\"content\":\"Hi\""), "{text}");
        assert_eq!(error.as_deref(), Some("the upstream's stream ended before message_stop"));
        let (text, error) =
            drain(Reading::FromAnthropic.stream(upstream(vec![Ok(START), Err("connection reset")]), || 1)).await;
        assert!(text.contains("\"role\":\"assistant\""), "{text}");
        assert_eq!(error.as_deref(), Some("connection reset"));
    }

    #[test]
    fn whole_answers_are_translated_or_refused() {
        let message = br#"{"id":"msg_1","type":"message","model":"c","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":2,"output_tokens":1}}"#;
        let (status, body) = Reading::FromAnthropic.whole(StatusCode::OK, Bytes::from_static(message), || 1);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(openai::read_usage(&body).map(|u| u.prompt_tokens), Some(2));
        let (status, body) = Reading::FromGemini.whole(StatusCode::OK, Bytes::from_static(b"[]"), || 1);
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(String::from_utf8_lossy(&body).contains("could not be translated"));
        let passed = Bytes::from_static(message);
        let (_, same) = Reading::Messages.whole(StatusCode::OK, passed.clone(), || 1);
        assert_eq!(same.as_ptr(), passed.as_ptr(), "passed through without a copy");
    }
}
