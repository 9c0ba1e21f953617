//! A request's prompt as the simulator sees it: its token count, the chained hashes of its
//! whole blocks (for the prefix cache) and a hash of all of it (to seed the output). Every wire
//! format feeds its messages through a [`PromptBuilder`], so the same text costs the same tokens
//! everywhere.

use crate::rng::{combine, fnv1a, mix64};
use crate::tokenizer;

/// Marker tokens that frame a chat message (start, role end, message end), as chat templates do.
pub const MESSAGE_OVERHEAD: usize = 3;
/// Marker tokens that open the assistant's reply.
pub const REPLY_PRIMING: usize = 3;

/// What the latency model and prefix cache need to know of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Tokens, as counted by the approximate tokenizer plus framing tokens.
    pub tokens: usize,
    /// Chained hash at the end of each whole block (`prefixCacheBlockSize` tokens).
    pub blocks: Vec<u64>,
    /// Hash of the whole prompt (and the model name).
    pub hash: u64,
}

/// Accumulates a prompt token by token.
#[derive(Debug, Clone)]
pub struct PromptBuilder {
    tokens: usize,
    block_size: usize,
    in_block: usize,
    state: u64,
    blocks: Vec<u64>,
}

impl PromptBuilder {
    /// A builder whose hashes are seeded with the model name (a cache per model, as in vLLM).
    pub fn new(model: &str, block_size: usize) -> Self {
        Self {
            tokens: 0,
            block_size: block_size.max(1),
            in_block: 0,
            state: fnv1a(model.as_bytes()),
            blocks: Vec::new(),
        }
    }

    /// Adds the tokens of `text`.
    pub fn text(&mut self, text: &str) -> &mut Self {
        for piece in tokenizer::pieces(text) {
            self.token(fnv1a(piece.as_bytes()));
        }
        self
    }

    /// Adds `n` framing tokens, identified by `marker` (so different framings hash differently).
    pub fn markers(&mut self, marker: u64, n: usize) -> &mut Self {
        for i in 0..n {
            self.token(mix64(marker ^ i as u64 ^ 0x5EED));
        }
        self
    }

    /// Adds one message: framing tokens around its role and what `content` adds.
    pub fn message(&mut self, role: &str, content: impl FnOnce(&mut Self)) {
        self.markers(1, 1).text(role).markers(2, 1);
        content(self);
        self.markers(3, MESSAGE_OVERHEAD - 2);
    }

    /// Adds tool definitions (serialized JSON), as chat templates put them before the messages.
    pub fn tools(&mut self, tools: Option<&Vec<serde_json::Value>>) {
        if let Some(tools) = tools.filter(|t| !t.is_empty()) {
            let mut json = Vec::new();
            for (i, tool) in tools.iter().enumerate() {
                json.push(if i == 0 { b'[' } else { b',' });
                json.extend_from_slice(tool.to_string().as_bytes());
            }
            json.push(b']');
            self.markers(5, 1).text(&String::from_utf8_lossy(&json));
        }
    }

    /// Adds the tokens that prime the assistant's reply and returns the prompt.
    pub fn finish_chat(mut self) -> Prompt {
        self.markers(4, REPLY_PRIMING);
        self.finish()
    }

    /// Returns the prompt.
    pub fn finish(self) -> Prompt {
        Prompt { tokens: self.tokens, blocks: self.blocks, hash: mix64(self.state) }
    }

    fn token(&mut self, hash: u64) {
        self.tokens += 1;
        self.state = combine(self.state, hash);
        self.in_block += 1;
        if self.in_block == self.block_size {
            self.blocks.push(self.state);
            self.in_block = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(system: &str, user: &str) -> Prompt {
        let mut b = PromptBuilder::new("m", 4);
        b.message("system", |b| {
            b.text(system);
        });
        b.message("user", |b| {
            b.text(user);
        });
        b.finish_chat()
    }

    #[test]
    fn counts_messages_with_framing() {
        let p = chat("Be brief.", "Hi");
        // system: 3 framing + 2 role ("syst", "em") + 4 ("Be", " brie", "f", ".");
        // user: 3 + 1 + 1; priming 3.
        assert_eq!(p.tokens, 9 + 5 + 3);
        assert_eq!(p.blocks.len(), 17 / 4);
    }

    #[test]
    fn shared_prefix_shares_leading_blocks() {
        let long = "You are a careful assistant who answers questions about the weather.";
        let a = chat(long, "What about Paris today?");
        let b = chat(long, "And what of Rome tomorrow morning?");
        let shared = a.blocks.iter().zip(&b.blocks).take_while(|(x, y)| x == y).count();
        assert!(shared >= 4, "shared {shared} of {}", a.blocks.len());
        assert_ne!(a.blocks.last(), b.blocks.last());
        assert_ne!(a.hash, b.hash);
        assert_eq!(a, chat(long, "What about Paris today?"));
    }

    #[test]
    fn model_name_separates_caches() {
        let mut x = PromptBuilder::new("x", 1);
        x.text("same words");
        let mut y = PromptBuilder::new("y", 1);
        y.text("same words");
        assert_ne!(x.finish().blocks, y.finish().blocks);
    }
}
