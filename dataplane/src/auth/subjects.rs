//! The live counters of a project's JWT subjects (rate limits, concurrency, budget spending),
//! kept like an API key's but made on a token's first use rather than from configuration. The
//! table is bounded: two generations of at most [`MAX_SUBJECTS`]` / 2` subjects each; when the
//! current generation fills up the older one is dropped and a subject used since then is carried
//! over on its next request. A subject idle through a whole generation starts afresh (its
//! per-minute windows have long refilled; its budget spending in this process restarts, and is
//! held across eviction only with Redis, where spending is kept per subject).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::limits::KeyState;

/// Most subjects a project's gateway holds counters for.
pub const MAX_SUBJECTS: usize = 10_000;

/// What a subject's requests share.
#[derive(Clone, Debug)]
pub struct Subject {
    /// `jwt:<subject>`: its id in logs, usage and limit keys.
    pub id: Arc<str>,
    /// Its counters.
    pub state: Arc<KeyState>,
}

/// One project's subjects (kept across reloads).
#[derive(Debug)]
pub struct Subjects {
    generations: Mutex<Generations>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<Box<str>, Subject>,
    previous: HashMap<Box<str>, Subject>,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::with_capacity(MAX_SUBJECTS)
    }
}

impl Subjects {
    /// A table holding at most `capacity` subjects.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { generations: Mutex::default(), capacity: capacity.max(2) }
    }

    /// The counters of `subject`, made on first use.
    pub fn get(&self, subject: &str) -> Subject {
        let mut generations = self.generations.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = generations.current.get(subject) {
            return found.clone();
        }
        let found = generations
            .previous
            .remove(subject)
            .unwrap_or_else(|| Subject { id: format!("jwt:{subject}").into(), state: Arc::new(KeyState::new()) });
        if generations.current.len() >= self.capacity / 2 {
            let full = std::mem::take(&mut generations.current);
            generations.previous = full;
        }
        generations.current.insert(subject.into(), found.clone());
        found
    }

    /// Number of subjects held.
    pub fn len(&self) -> usize {
        let generations = self.generations.lock().unwrap_or_else(PoisonError::into_inner);
        generations.current.len() + generations.previous.len()
    }

    /// Whether no subject is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_keeps_its_counters_and_the_table_stays_bounded() {
        let subjects = Subjects::with_capacity(4);
        let alice = subjects.get("alice");
        assert_eq!(&*alice.id, "jwt:alice");
        assert!(Arc::ptr_eq(&alice.state, &subjects.get("alice").state));
        for n in 0..100 {
            subjects.get(&format!("s{n}"));
            // Alice is used all along: she is carried over into every new generation.
            assert!(Arc::ptr_eq(&alice.state, &subjects.get("alice").state), "after s{n}");
            assert!(subjects.len() <= 4, "{} subjects held", subjects.len());
        }
        let first = subjects.get("s0");
        assert!(!Arc::ptr_eq(&first.state, &subjects.get("s99").state));
        assert_eq!(first.state.totals(0), Default::default(), "an evicted subject starts afresh");
    }
}
