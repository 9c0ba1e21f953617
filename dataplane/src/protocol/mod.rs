//! Wire formats: what the gateway reads from request bodies and upstream responses, without
//! deserialising or re-serialising more than a field that must change.

pub mod openai;
pub mod sse;
