//! The prefix cache: an LRU of prompt-block hashes, as vLLM's automatic prefix caching keeps KV
//! blocks. A prompt's cached tokens are its leading blocks found in the cache.

use std::collections::HashMap;

const NONE: usize = usize::MAX;

#[derive(Debug, Clone)]
struct Node {
    key: u64,
    prev: usize,
    next: usize,
}

/// A fixed-capacity LRU set of block hashes (O(1) per operation: a map into a slab of nodes
/// linked from most to least recently used).
#[derive(Debug, Clone)]
pub struct PrefixCache {
    capacity: usize,
    index: HashMap<u64, usize>,
    nodes: Vec<Node>,
    head: usize,
    tail: usize,
}

impl PrefixCache {
    /// An empty cache of `capacity` blocks (0 = disabled: nothing is ever cached).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, index: HashMap::new(), nodes: Vec::new(), head: NONE, tail: NONE }
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self::new(self.capacity);
    }

    /// Counts the leading `blocks` already cached, then caches all of them, leaving the first
    /// block most recently used (so a prompt's tail blocks are evicted before its head, as in
    /// vLLM).
    pub fn lookup_and_insert(&mut self, blocks: &[u64]) -> usize {
        if self.capacity == 0 {
            return 0;
        }
        let hits = blocks.iter().take_while(|hash| self.index.contains_key(hash)).count();
        // Only the last `capacity` blocks of the prompt's head can stay.
        for &hash in blocks.iter().take(self.capacity).rev() {
            self.touch(hash);
        }
        hits
    }

    fn touch(&mut self, key: u64) {
        if let Some(&slot) = self.index.get(&key) {
            self.unlink(slot);
            self.push_front(slot);
            return;
        }
        let slot = if self.index.len() < self.capacity {
            self.nodes.push(Node { key, prev: NONE, next: NONE });
            self.nodes.len() - 1
        } else {
            let slot = self.tail;
            self.unlink(slot);
            self.index.remove(&self.nodes[slot].key);
            self.nodes[slot].key = key;
            slot
        };
        self.index.insert(key, slot);
        self.push_front(slot);
    }

    fn unlink(&mut self, slot: usize) {
        let Node { prev, next, .. } = self.nodes[slot];
        if prev == NONE {
            self.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
    }

    fn push_front(&mut self, slot: usize) {
        self.nodes[slot].prev = NONE;
        self.nodes[slot].next = self.head;
        if self.head != NONE {
            self.nodes[self.head].prev = slot;
        }
        self.head = slot;
        if self.tail == NONE {
            self.tail = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_prefix_hits() {
        let mut cache = PrefixCache::new(100);
        assert_eq!(cache.lookup_and_insert(&[1, 2, 3]), 0);
        assert_eq!(cache.lookup_and_insert(&[1, 2, 3, 4]), 3);
        assert_eq!(cache.lookup_and_insert(&[1, 9, 3]), 1);
        assert_eq!(cache.lookup_and_insert(&[7, 2, 3]), 0);
        assert_eq!(cache.len(), 6);
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut cache = PrefixCache::new(3);
        cache.lookup_and_insert(&[1, 2]);
        cache.lookup_and_insert(&[3]);
        cache.lookup_and_insert(&[1]); // 1 is now the most recent; 2 the least
        cache.lookup_and_insert(&[4]);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.lookup_and_insert(&[2]), 0);
        // 2 went in and pushed out 3 (then least recent).
        assert_eq!(cache.lookup_and_insert(&[1, 4]), 2);
        assert_eq!(cache.lookup_and_insert(&[3]), 0);
    }

    #[test]
    fn head_blocks_outlive_tail_blocks() {
        let mut cache = PrefixCache::new(4);
        cache.lookup_and_insert(&[1, 2, 3, 4]);
        cache.lookup_and_insert(&[9]); // evicts 4, the prompt's last block
        assert_eq!(cache.lookup_and_insert(&[1, 2, 3]), 3);
    }

    #[test]
    fn disabled_and_overlong() {
        let mut off = PrefixCache::new(0);
        assert_eq!(off.lookup_and_insert(&[1]), 0);
        assert_eq!(off.lookup_and_insert(&[1]), 0);
        assert_eq!(off.len(), 0);
        let mut small = PrefixCache::new(2);
        small.lookup_and_insert(&[1, 2, 3, 4]);
        assert_eq!(small.lookup_and_insert(&[1, 2, 3, 4]), 2);
        small.clear();
        assert_eq!(small.len(), 0);
    }
}
