//! What the last compile of each project found about each of its objects. The Project controller
//! compiles once per project and publishes a report here; the Endpoint, ApiKey and ServiceTier
//! controllers read it for their status, and are nudged only for objects whose verdict changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::channel::mpsc;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use sluice_crds::api::{ApiKey, Endpoint, ServiceTier};

use crate::conditions::{READY, Verdict};

/// What the compile said about one Endpoint or ApiKey.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectVerdict {
    /// It is in the configuration the gateway serves.
    pub served: bool,
    /// Problems the compiler found, each naming the field.
    pub problems: Vec<String>,
}

/// The outcome of one project's last reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectReport {
    /// Name of the Project.
    pub project: String,
    /// Its slug.
    pub slug: String,
    /// Why nothing could be served (problems in the Project itself, a slug conflict); `None` when
    /// the configuration was compiled.
    pub failure: Option<String>,
    /// Why the configuration is not served although it is written: no gateway replica is
    /// available. `None` when one is (or nothing was compiled: see `failure`).
    pub gateway_unavailable: Option<String>,
    /// While a new gateway's first rollout may still be under way: until when (see
    /// [`ProjectReport::first_status_wait`]).
    pub first_rollout_until: Option<Timestamp>,
    /// Verdicts by Endpoint name.
    pub endpoints: HashMap<String, ObjectVerdict>,
    /// Verdicts by ApiKey name.
    pub keys: HashMap<String, ObjectVerdict>,
    /// ServiceTiers the configuration uses.
    pub tiers: BTreeSet<String>,
    /// ApiKeys this compile saw for the first time or whose generated key has no Secret yet:
    /// keys still arriving (see [`ProjectReport::import_wait`]).
    pub keys_arriving: usize,
}

/// From this many arriving keys on, a project is taking a bulk import of keys.
pub const IMPORT_KEYS: usize = 16;

/// A served key's first status waits for the end of a bulk import at most this long from the
/// key's creation, however long the import takes or if some of its keys never get a Secret.
pub const IMPORT_HOLD: Duration = Duration::from_secs(300);

impl ProjectReport {
    /// How long an Endpoint's or ApiKey's first status waits when all it would say is that
    /// the gateway is not available yet, `ready` being its Ready verdict: while a new gateway's
    /// first rollout may be under way. Its next status then says the gateway serves it (the
    /// report changes and nudges it), and a project created with many keys costs the apiserver
    /// one status write per object rather than two. `None`: write now.
    pub fn first_status_wait(&self, has_status: bool, ready: &Verdict, now: Timestamp) -> Option<Duration> {
        let until = self.first_rollout_until.filter(|until| *until > now)?;
        let unavailable = ready.type_ == READY && !ready.status && ready.reason == GATEWAY_UNAVAILABLE;
        (!has_status && unavailable).then(|| Duration::try_from(until.duration_since(now)).unwrap_or_default())
    }

    /// Whether the project is taking a bulk import of keys: the first statuses of its served
    /// keys wait until it ends.
    pub fn importing(&self) -> bool {
        self.keys_arriving >= IMPORT_KEYS
    }

    /// How long an ApiKey's first status, saying it is served (`ready` true), waits while its
    /// project takes a bulk import of keys, the key `created` when given. Each such status
    /// costs the apiserver as much as three to five creates; held back, the creates that serving
    /// the other keys needs (the ApiKeys, their Secrets) go first. When the import ends, every
    /// key of the project is nudged ([`Reports::publish`]). Problems are told at once, and
    /// statuses already written follow every change at once. `None`: write now.
    pub fn import_wait(
        &self,
        has_status: bool,
        ready: &Verdict,
        created: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Duration> {
        if has_status || !ready.status || !self.importing() {
            return None;
        }
        let until = created?.checked_add(IMPORT_HOLD).ok().filter(|until| *until > now)?;
        Some(Duration::try_from(until.duration_since(now)).unwrap_or_default())
    }
}

/// The reason of a Ready condition that is false only because no gateway replica is available.
pub const GATEWAY_UNAVAILABLE: &str = "GatewayUnavailable";

/// The reports of every project, by the Project's namespace.
pub struct Reports {
    by_namespace: RwLock<HashMap<String, Arc<ProjectReport>>>,
    endpoints: mpsc::UnboundedSender<ObjectRef<Endpoint>>,
    apikeys: mpsc::UnboundedSender<ObjectRef<ApiKey>>,
    tiers: mpsc::UnboundedSender<ObjectRef<ServiceTier>>,
}

/// Streams of objects whose verdict changed, one per controller that reads reports.
pub struct ReportNudges {
    /// Endpoints to reconcile.
    pub endpoints: mpsc::UnboundedReceiver<ObjectRef<Endpoint>>,
    /// ApiKeys to reconcile.
    pub apikeys: mpsc::UnboundedReceiver<ObjectRef<ApiKey>>,
    /// ServiceTiers to reconcile.
    pub tiers: mpsc::UnboundedReceiver<ObjectRef<ServiceTier>>,
}

impl Reports {
    /// No reports yet.
    pub fn new() -> (Self, ReportNudges) {
        let (endpoints, endpoints_rx) = mpsc::unbounded();
        let (apikeys, apikeys_rx) = mpsc::unbounded();
        let (tiers, tiers_rx) = mpsc::unbounded();
        let reports = Self { by_namespace: RwLock::default(), endpoints, apikeys, tiers };
        (reports, ReportNudges { endpoints: endpoints_rx, apikeys: apikeys_rx, tiers: tiers_rx })
    }

    /// The report of the Project in `namespace`.
    pub fn get(&self, namespace: &str) -> Option<Arc<ProjectReport>> {
        self.by_namespace.read().unwrap_or_else(PoisonError::into_inner).get(namespace).cloned()
    }

    /// Stores a project's report and nudges every object whose verdict changed.
    pub fn publish(&self, namespace: &str, report: ProjectReport) {
        let report = Arc::new(report);
        let old = self
            .by_namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(namespace.to_owned(), report.clone());
        self.nudge(namespace, old.as_deref(), Some(&report));
    }

    /// Forgets a project (deleted) and nudges everything it had a verdict on.
    pub fn remove(&self, namespace: &str) {
        let old = self.by_namespace.write().unwrap_or_else(PoisonError::into_inner).remove(namespace);
        self.nudge(namespace, old.as_deref(), None);
    }

    /// How many projects use ServiceTier `name`.
    pub fn tier_users(&self, name: &str) -> u32 {
        let reports = self.by_namespace.read().unwrap_or_else(PoisonError::into_inner);
        let count = reports.values().filter(|r| r.tiers.contains(name)).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    fn nudge(&self, namespace: &str, old: Option<&ProjectReport>, new: Option<&ProjectReport>) {
        let empty = ProjectReport::default();
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let failure_changed = old.failure != new.failure || old.gateway_unavailable != new.gateway_unavailable;
        for name in changed(&old.endpoints, &new.endpoints, failure_changed) {
            let _ = self.endpoints.unbounded_send(ObjectRef::new(name).within(namespace));
        }
        // The first statuses held back during an import are written when it ends.
        let import_ended = old.importing() && !new.importing();
        for name in changed(&old.keys, &new.keys, failure_changed || import_ended) {
            let _ = self.apikeys.unbounded_send(ObjectRef::new(name).within(namespace));
        }
        for tier in old.tiers.symmetric_difference(&new.tiers) {
            let _ = self.tiers.unbounded_send(ObjectRef::new(tier));
        }
    }
}

fn changed<'a>(
    old: &'a HashMap<String, ObjectVerdict>,
    new: &'a HashMap<String, ObjectVerdict>,
    everything: bool,
) -> impl Iterator<Item = &'a str> {
    let gone = old.keys().filter(|name| !new.contains_key(*name));
    let differs =
        new.iter().filter(move |(name, verdict)| everything || old.get(*name) != Some(*verdict)).map(|(n, _)| n);
    gone.chain(differs).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn served() -> ObjectVerdict {
        ObjectVerdict { served: true, problems: Vec::new() }
    }

    #[test]
    fn a_first_status_that_would_only_say_the_gateway_is_starting_waits_for_it() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().expect("time");
        let until = now + jiff::SignedDuration::from_secs(20);
        let report = ProjectReport { first_rollout_until: Some(until), ..ProjectReport::default() };
        let starting = Verdict::no(READY, GATEWAY_UNAVAILABLE, "none of the 2 gateway replica(s) is available yet");
        assert_eq!(report.first_status_wait(false, &starting, now), Some(Duration::from_secs(20)));
        assert_eq!(report.first_status_wait(true, &starting, now), None, "a status already written follows at once");
        let broken = Verdict::no(READY, "InvalidReferences", "see ReferencesResolved");
        assert_eq!(report.first_status_wait(false, &broken, now), None, "problems are told at once");
        assert_eq!(report.first_status_wait(false, &starting, until), None, "the rollout took too long: say so");
        assert_eq!(ProjectReport::default().first_status_wait(false, &starting, now), None, "an older gateway");
    }

    #[test]
    fn a_served_keys_first_status_waits_for_a_bulk_import_to_end_for_a_while() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().expect("time");
        let created = Some(now - jiff::SignedDuration::from_secs(100));
        let importing = ProjectReport { keys_arriving: IMPORT_KEYS, ..ProjectReport::default() };
        let serving = Verdict::yes(READY, "Serving", "served by 2 of 2 gateway replica(s)");
        assert_eq!(importing.import_wait(false, &serving, created, now), Some(IMPORT_HOLD - Duration::from_secs(100)));
        assert_eq!(
            importing.import_wait(true, &serving, created, now),
            None,
            "a status already written follows at once"
        );
        let broken = Verdict::no(READY, "InvalidReferences", "see ReferencesResolved");
        assert_eq!(importing.import_wait(false, &broken, created, now), None, "problems are told at once");
        let long_ago = Some(now - jiff::SignedDuration::from_secs(301));
        assert_eq!(importing.import_wait(false, &serving, long_ago, now), None, "held long enough");
        assert_eq!(importing.import_wait(false, &serving, None, now), None);
        let trickle = ProjectReport { keys_arriving: IMPORT_KEYS - 1, ..ProjectReport::default() };
        assert_eq!(trickle.import_wait(false, &serving, created, now), None, "a few new keys are no import");
    }

    #[tokio::test]
    async fn every_key_is_nudged_when_an_import_ends() {
        let (reports, mut nudges) = Reports::new();
        let keys = HashMap::from([("a".into(), served()), ("b".into(), served())]);
        let importing = ProjectReport { keys: keys.clone(), keys_arriving: 40, ..ProjectReport::default() };
        reports.publish("ns", importing.clone());
        for _ in 0..2 {
            nudges.apikeys.next().await.expect("nudge");
        }
        reports.publish("ns", ProjectReport { keys_arriving: 20, ..importing });
        reports.publish("ns", ProjectReport { keys, keys_arriving: 3, ..ProjectReport::default() });
        let mut ended: Vec<String> = Vec::new();
        while let Some(Some(nudge)) = futures::FutureExt::now_or_never(nudges.apikeys.next()) {
            ended.push(nudge.name);
        }
        ended.sort();
        assert_eq!(ended, ["a", "b"], "unchanged verdicts, nudged once: when the import ended");
    }

    #[tokio::test]
    async fn only_changed_verdicts_are_nudged() {
        let (reports, mut nudges) = Reports::new();
        let mut report = ProjectReport {
            project: "p".into(),
            slug: "p".into(),
            keys: HashMap::from([("a".into(), served()), ("b".into(), served())]),
            tiers: BTreeSet::from(["gold".into()]),
            ..ProjectReport::default()
        };
        reports.publish("ns", report.clone());
        let mut first: Vec<String> = Vec::new();
        for _ in 0..2 {
            first.push(nudges.apikeys.next().await.expect("nudge").name);
        }
        first.sort();
        assert_eq!(first, ["a", "b"]);
        assert_eq!(nudges.tiers.next().await.expect("tier").name, "gold");
        assert_eq!(reports.tier_users("gold"), 1);

        report.keys.insert("b".into(), ObjectVerdict { served: false, problems: vec!["bad".into()] });
        report.keys.remove("a");
        reports.publish("ns", report);
        let mut second = Vec::new();
        for _ in 0..2 {
            second.push(nudges.apikeys.next().await.expect("nudge").name);
        }
        second.sort();
        assert_eq!(second, ["a", "b"]);
        reports.remove("ns");
        assert_eq!(nudges.apikeys.next().await.expect("nudge").name, "b");
        assert_eq!(reports.tier_users("gold"), 0);
        assert!(reports.get("ns").is_none());
    }
}
