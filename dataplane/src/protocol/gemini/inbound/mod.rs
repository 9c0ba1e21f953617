//! Gemini's API for clients that speak it (`/v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent`, `:countTokens`), served by any chat backend: the request turned
//! into a chat completions request ([`request`]), the answer back into a
//! `GenerateContentResponse` ([`response`]) or its SSE stream ([`stream`]), and errors in
//! Google's shape ([`error`]). The reverse directions of [`super::request`] and
//! [`super::response`]; a Gemini backend takes the client's own body instead. `:embedContent`
//! and `:batchEmbedContents` are served by embeddings backends ([`embed`]).

pub mod embed;
pub mod error;
pub mod request;
pub mod response;
pub mod stream;
