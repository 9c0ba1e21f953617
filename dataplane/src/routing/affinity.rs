//! Prefix affinity: requests that share a prompt prefix go to the same backend, where the
//! prefix is likely still in its KV cache, without piling onto it.
//!
//! The prefix is the leading [`PREFIX_BYTES`] of the request's `messages` JSON text (chat) or
//! `prompt` (completions), as the body carries them: the system prompt and first messages, which
//! is what a prefix cache shares between requests. Hashing the raw text avoids parsing a big
//! body (the span is found by the same borrowed read that finds `model`) and costs the same for
//! any body size; two prompts that differ only in JSON spacing hash apart, which costs a cache
//! hit, never a wrong answer. Prompts shorter than [`MIN_PREFIX_BYTES`] have no affinity: there
//! is little to reuse.
//!
//! Prefixes map to backends by rendezvous hashing (highest score of `hash(prefix, backend)`),
//! which is consistent hashing without a ring to store: removing a backend moves only its own
//! prefixes. With bounded loads (Mirrokni et al., arXiv 1608.01350) a backend takes a prefix only
//! while its requests in flight (this one counted) stay within `ceil(c x mean)`, c =
//! [`LOAD_BOUND`]; otherwise the prefix spills to the next backend in its order, as the ring walk
//! would.

use std::hash::BuildHasher;

/// Bytes of the prompt's JSON text hashed (about 500 tokens).
pub const PREFIX_BYTES: usize = 2048;
/// Shorter prompts have no affinity.
pub const MIN_PREFIX_BYTES: usize = 256;
/// The load bound's factor on the mean (the common default, as in HAProxy and brpc).
pub const LOAD_BOUND: f64 = 1.25;

/// The affinity hash of a prompt's JSON text, if it is long enough to be worth it.
pub fn prefix_hash(prompt: &[u8]) -> Option<u64> {
    (prompt.len() >= MIN_PREFIX_BYTES)
        .then(|| foldhash::fast::FixedState::with_seed(0x5eed).hash_one(&prompt[..prompt.len().min(PREFIX_BYTES)]))
}

/// The rendezvous score of `backend` for `prefix` (splitmix64's finaliser over both).
pub fn score(prefix: u64, backend: u64) -> u64 {
    let mut z = prefix ^ backend.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The most requests in flight (this one counted) a backend may hold and still take a prefix,
/// with `total` in flight over `backends` backends.
pub fn load_cap(total: u32, backends: usize) -> u32 {
    let mean = (f64::from(total) + 1.0) / backends.max(1) as f64;
    (LOAD_BOUND * mean).ceil() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_prompts_have_no_affinity_and_only_the_prefix_counts() {
        assert_eq!(prefix_hash(b"[{\"role\":\"user\",\"content\":\"hi\"}]"), None);
        let system = "s".repeat(PREFIX_BYTES);
        let a = format!("[{{\"role\":\"system\",\"content\":\"{system}\"}},{{\"role\":\"user\",\"content\":\"a\"}}]");
        let b = format!("[{{\"role\":\"system\",\"content\":\"{system}\"}},{{\"role\":\"user\",\"content\":\"b\"}}]");
        assert_eq!(prefix_hash(a.as_bytes()), prefix_hash(b.as_bytes()));
        assert!(prefix_hash(a.as_bytes()).is_some());
        let c = a.replace("system", "System");
        assert_ne!(prefix_hash(a.as_bytes()), prefix_hash(c.as_bytes()));
    }

    #[test]
    fn the_load_cap_is_a_quarter_over_the_mean() {
        assert_eq!(load_cap(0, 2), 1, "an idle fleet: one each");
        assert_eq!(load_cap(7, 2), 5, "8 over 2 is 4, x 1.25 = 5");
        assert_eq!(load_cap(99, 4), 32);
    }

    #[test]
    fn prefixes_spread_over_backends() {
        let backends: Vec<u64> = (0..4u64).map(|i| foldhash::fast::FixedState::with_seed(2).hash_one(i)).collect();
        let mut owned = [0u32; 4];
        for prefix in 0..4000u64 {
            let prefix = foldhash::fast::FixedState::with_seed(1).hash_one(prefix);
            let best = (0..4).max_by_key(|&i| score(prefix, backends[i])).unwrap_or_default();
            owned[best] += 1;
        }
        assert!(owned.iter().all(|&n| (800..1200).contains(&n)), "{owned:?}");
    }
}
