//! Token counts in Anthropic's terms, read from a message (`usage`) or its stream
//! (`message_start`'s `message.usage`, then `message_delta`'s `usage`), for accounting: an
//! Anthropic upstream's answer, passed through or translated.

use serde::Deserialize;

use crate::protocol::openai::Usage;

/// Anthropic's usage fields, as far as they were seen; later events override earlier ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MessageUsage {
    /// Prompt tokens neither read from nor written to the cache.
    pub input_tokens: Option<u64>,
    /// Prompt tokens written to the cache (Anthropic bills them above the input price).
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    pub cache_read_input_tokens: Option<u64>,
    /// Generated tokens.
    pub output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope {
    usage: Option<MessageUsage>,
    message: Option<Inner>,
}

#[derive(Deserialize)]
struct Inner {
    usage: Option<MessageUsage>,
}

impl MessageUsage {
    /// Takes the fields `other` has.
    pub fn merge(&mut self, other: MessageUsage) {
        let take = |mine: &mut Option<u64>, theirs: Option<u64>| {
            if theirs.is_some() {
                *mine = theirs;
            }
        };
        take(&mut self.input_tokens, other.input_tokens);
        take(&mut self.cache_creation_input_tokens, other.cache_creation_input_tokens);
        take(&mut self.cache_read_input_tokens, other.cache_read_input_tokens);
        take(&mut self.output_tokens, other.output_tokens);
    }

    /// Reads the usage of a message body or of one stream event's data (`message_start`,
    /// `message_delta`) into `self`. Returns whether it had one.
    pub fn observe(&mut self, json: &[u8]) -> bool {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(json) else { return false };
        let Some(usage) = envelope.usage.or(envelope.message.and_then(|m| m.usage)) else { return false };
        self.merge(usage);
        true
    }

    /// In OpenAI's terms: every prompt token (cache reads and writes included) is a prompt
    /// token; cache reads are the cached ones.
    pub fn to_usage(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0) + cached,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cached,
        }
    }
}

/// The usage of a whole message body, if it has one.
pub fn read_usage(body: &[u8]) -> Option<Usage> {
    let mut usage = MessageUsage::default();
    usage.observe(body).then(|| usage.to_usage())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_usage_is_merged_from_start_and_delta() {
        let mut usage = MessageUsage::default();
        assert!(usage.observe(br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":7,"cache_creation_input_tokens":2,"cache_read_input_tokens":5,"output_tokens":1}}}"#));
        assert!(
            !usage.observe(br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"usage"}}"#)
        );
        assert!(
            usage.observe(
                br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}"#
            )
        );
        assert_eq!(usage.to_usage(), Usage { prompt_tokens: 14, completion_tokens: 12, cached_tokens: 5 });
    }

    #[test]
    fn whole_messages_have_their_usage() {
        let body = br#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":3,"output_tokens":4}}"#;
        assert_eq!(read_usage(body), Some(Usage { prompt_tokens: 3, completion_tokens: 4, cached_tokens: 0 }));
        assert_eq!(read_usage(br#"{"type":"error"}"#), None);
    }
}
