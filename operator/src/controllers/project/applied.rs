//! What this process last applied of each Project's data-plane objects, so that a reconcile
//! writes only what changed: a project reconciles again for every batch of key changes, and its
//! dozen data-plane objects rarely change with them.
//!
//! An object is applied again when what the Project wants differs from what was last applied
//! (so a field the operator stops setting is removed, as server-side apply does), when the watch
//! shows the live object no longer holds it (drift: deleted, or a field changed), and in any case
//! once [`MAX_AGE`] has passed since, for the kinds that are not watched.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cache::fingerprint;

/// Objects not watched are applied again at least this often (the Project's resync).
pub const MAX_AGE: Duration = super::plan::RESYNC;

/// The last apply (or delete) of each object, by the Project that owns it.
#[derive(Debug, Default)]
pub struct Applied {
    by_owner: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Of the JSON applied; of `null` for a delete.
    fingerprint: u64,
    at: Instant,
}

/// What the watches show of an object.
#[derive(Clone, Debug)]
pub enum Live {
    /// A watched kind: the object as the cache has it (`None`: absent).
    Watched(Option<Value>),
    /// A kind the operator does not watch.
    Unwatched,
}

impl Applied {
    /// Whether applying `desired` (`null`: deleting) as `object` of `owner` would change nothing
    /// the operator knows of.
    pub fn unchanged(&self, owner: &str, object: &str, desired: &Value, live: &Live) -> bool {
        let last = self
            .by_owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(owner)
            .and_then(|objects| objects.get(object))
            .copied();
        let Some(last) = last.filter(|l| l.fingerprint == fingerprint(desired.to_string())) else { return false };
        match live {
            Live::Watched(Some(live)) => contains(live, desired),
            Live::Watched(None) => desired.is_null(),
            Live::Unwatched => last.at.elapsed() < MAX_AGE,
        }
    }

    /// Notes that `desired` (`null`: a delete) was written as `object` of `owner`.
    pub fn note(&self, owner: &str, object: &str, desired: &Value) {
        let entry = Entry { fingerprint: fingerprint(desired.to_string()), at: Instant::now() };
        let mut by_owner = self.by_owner.lock().unwrap_or_else(PoisonError::into_inner);
        by_owner.entry(owner.to_owned()).or_default().insert(object.to_owned(), entry);
    }

    /// Forgets everything `owner` applied (its data plane was removed).
    pub fn forget(&self, owner: &str) {
        self.by_owner.lock().unwrap_or_else(PoisonError::into_inner).remove(owner);
    }
}

/// Whether `live` holds everything `desired` says: each field of an object, each element of an
/// array (same length, in order), and equal scalars. Fields the apiserver or others added are
/// left out of the comparison.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, want)| live.get(key).is_some_and(|have| contains(have, want)))
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(have, want)| contains(have, want))
        }
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_live_object_holds_what_was_applied_whatever_was_added() {
        let desired = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80}]}});
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "uid": "u"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}, "status": {}});
        assert!(contains(&live, &desired));
        let edited = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"ports": [{"port": 80}]}});
        assert!(!contains(&edited, &desired), "a changed label");
        let more_ports = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        assert!(!contains(&more_ports, &desired), "a list is compared whole");
        assert!(!contains(&json!({"metadata": {"labels": {"a": "1"}}}), &desired), "a missing field");
    }

    #[test]
    fn only_what_was_applied_before_and_still_holds_is_skipped() {
        let applied = Applied::default();
        let desired = json!({"metadata": {"name": "gw"}, "spec": {"replicas": 2}});
        let live = Live::Watched(Some(json!({"metadata": {"name": "gw", "uid": "u"}, "spec": {"replicas": 2}})));
        assert!(!applied.unchanged("t/p", "Deployment/gw", &desired, &live), "never applied by this process");
        applied.note("t/p", "Deployment/gw", &desired);
        assert!(applied.unchanged("t/p", "Deployment/gw", &desired, &live));
        assert!(applied.unchanged("t/p", "Deployment/gw", &desired, &Live::Unwatched), "applied just now");
        assert!(!applied.unchanged("t/p", "Deployment/gw", &desired, &Live::Watched(None)), "deleted since");
        let drifted = Live::Watched(Some(json!({"metadata": {"name": "gw"}, "spec": {"replicas": 5}})));
        assert!(!applied.unchanged("t/p", "Deployment/gw", &desired, &drifted), "edited since");
        let fewer_fields = json!({"metadata": {"name": "gw"}, "spec": {}});
        assert!(!applied.unchanged("t/p", "Deployment/gw", &fewer_fields, &live), "a field to remove");
        assert!(!applied.unchanged("other/p", "Deployment/gw", &desired, &live), "another owner's");

        applied.note("t/p", "NetworkPolicy/gw", &Value::Null);
        assert!(applied.unchanged("t/p", "NetworkPolicy/gw", &Value::Null, &Live::Unwatched), "deleted just now");
        applied.forget("t/p");
        assert!(!applied.unchanged("t/p", "Deployment/gw", &desired, &live), "forgotten with the data plane");
    }
}
