//! One watch per kind over the watched namespaces, kept in a kube-runtime `Store` and fanned out
//! to every controller that reacts to the kind.
//!
//! kube-runtime's reflector watches one namespace or all of them; an operator told to serve a
//! list of namespaces needs one watch per namespace feeding one store. A re-list of one namespace
//! must then not clobber the others, so each list is applied object by object and what it no
//! longer holds is deleted from that namespace only. Subscribers get every touched object
//! (deletions included, which kube's shared streams leave out), optionally only when a
//! fingerprint of the object changed (generation, data), so status writes do not echo. Hooks
//! ([`Informer::on_change`]) see each change first, to keep indexes beside the store.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch as signal;

/// A fingerprint of the parts of an object a subscriber reacts to.
type Fingerprint<K> = Box<dyn Fn(&K) -> u64 + Send + Sync>;

/// What a watch saw happen to an object.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a, K> {
    /// Created or changed (or listed).
    Applied(&'a K),
    /// Deleted (or gone from a re-list).
    Deleted(&'a K),
}

type Hook<K> = Box<dyn Fn(Change<'_, K>) + Send + Sync>;

struct Subscriber<K: Resource<DynamicType = ()>> {
    tx: mpsc::UnboundedSender<Arc<K>>,
    fingerprint: Option<Fingerprint<K>>,
    seen: HashMap<ObjectRef<K>, u64>,
}

/// A watch of one kind, not started yet: take its store and subscriptions, then [`Informer::run`].
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    kind: &'static str,
    sources: Vec<(Option<String>, Api<K>)>,
    config: watcher::Config,
    writer: Writer<K>,
    subscribers: Vec<Subscriber<K>>,
    hooks: Vec<Hook<K>>,
    synced_tx: signal::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Watches `namespaces` (`None`: all namespaces) of a namespaced kind.
    pub fn namespaced(client: &Client, namespaces: Option<&[String]>, config: watcher::Config) -> Self
    where
        K: Resource<Scope = NamespaceResourceScope>,
    {
        let sources = match namespaces {
            None => vec![(None, Api::all(client.clone()))],
            Some(list) => list.iter().map(|ns| (Some(ns.clone()), Api::namespaced(client.clone(), ns))).collect(),
        };
        Self::new(sources, config)
    }

    /// Watches a cluster-scoped kind.
    pub fn cluster(client: &Client, config: watcher::Config) -> Self {
        Self::new(vec![(None, Api::all(client.clone()))], config)
    }

    fn new(sources: Vec<(Option<String>, Api<K>)>, config: watcher::Config) -> Self {
        let mut writer = Writer::default();
        // The store is marked initialised at once; readiness is tracked per namespace below.
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let (synced_tx, _) = signal::channel(false);
        Self {
            kind: std::any::type_name::<K>(),
            sources,
            config,
            writer,
            subscribers: Vec::new(),
            hooks: Vec::new(),
            synced_tx,
        }
    }

    /// The in-memory view of every watched object.
    pub fn store(&self) -> Store<K> {
        self.writer.as_reader()
    }

    /// Becomes true once every namespace has been listed.
    pub fn synced(&self) -> signal::Receiver<bool> {
        self.synced_tx.subscribe()
    }

    /// Every object touched (applied or deleted), from the first list on.
    pub fn subscribe(&mut self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.add_subscriber(None)
    }

    /// Objects whose `fingerprint` changed, and deleted objects.
    pub fn subscribe_changes(
        &mut self,
        fingerprint: impl Fn(&K) -> u64 + Send + Sync + 'static,
    ) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.add_subscriber(Some(Box::new(fingerprint)))
    }

    /// Calls `hook` with every change, after the store has it and before any subscriber hears
    /// of it.
    pub fn on_change(&mut self, hook: impl Fn(Change<'_, K>) + Send + Sync + 'static) {
        self.hooks.push(Box::new(hook));
    }

    fn add_subscriber(&mut self, fingerprint: Option<Fingerprint<K>>) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.push(Subscriber { tx, fingerprint, seen: HashMap::new() });
        rx
    }

    /// Watches until dropped, retrying with backoff on errors.
    pub async fn run(mut self) {
        let sources = std::mem::take(&mut self.sources);
        let namespaces: Vec<Option<String>> = sources.iter().map(|(ns, _)| ns.clone()).collect();
        let streams = sources.into_iter().enumerate().map(|(index, (_, api))| {
            watch(api, self.config.clone())
                .default_backoff()
                .modify(|object: &mut K| object.meta_mut().managed_fields = None)
                .map(move |event| (index, event))
                .boxed()
        });
        let mut merged = futures::stream::select_all(streams);
        let mut listing: Vec<Option<HashSet<ObjectRef<K>>>> = vec![None; namespaces.len()];
        let mut synced = vec![false; namespaces.len()];
        while let Some((index, event)) = merged.next().await {
            match event {
                Ok(Event::Init) => listing[index] = Some(HashSet::new()),
                Ok(Event::InitApply(object)) => {
                    if let Some(seen) = listing[index].as_mut() {
                        seen.insert(ObjectRef::from_obj(&object));
                    }
                    self.apply(object);
                }
                Ok(Event::InitDone) => {
                    let seen = listing[index].take().unwrap_or_default();
                    let namespace = namespaces[index].as_deref();
                    let stale: Vec<Arc<K>> = self
                        .writer
                        .as_reader()
                        .state()
                        .into_iter()
                        .filter(|o| namespace.is_none_or(|ns| o.namespace().as_deref() == Some(ns)))
                        .filter(|o| !seen.contains(&ObjectRef::from_obj(o.as_ref())))
                        .collect();
                    for object in stale {
                        self.delete(object.as_ref().clone());
                    }
                    synced[index] = true;
                    if synced.iter().all(|s| *s) {
                        self.synced_tx.send_replace(true);
                    }
                }
                Ok(Event::Apply(object)) => self.apply(object),
                Ok(Event::Delete(object)) => self.delete(object),
                Err(err) => tracing::warn!(kind = self.kind, error = %err, "watch failed; retrying"),
            }
        }
    }

    fn apply(&mut self, object: K) {
        let key = ObjectRef::from_obj(&object);
        self.writer.apply_watcher_event(&Event::Apply(object));
        if let Some(stored) = self.writer.as_reader().get(&key) {
            for hook in &self.hooks {
                hook(Change::Applied(stored.as_ref()));
            }
            self.notify(&key, stored, false);
        }
    }

    fn delete(&mut self, object: K) {
        let key = ObjectRef::from_obj(&object);
        self.writer.apply_watcher_event(&Event::Delete(object.clone()));
        for hook in &self.hooks {
            hook(Change::Deleted(&object));
        }
        self.notify(&key, Arc::new(object), true);
    }

    fn notify(&mut self, key: &ObjectRef<K>, object: Arc<K>, deleted: bool) {
        self.subscribers.retain(|s| !s.tx.is_closed());
        for subscriber in &mut self.subscribers {
            if let Some(fingerprint) = &subscriber.fingerprint {
                if deleted {
                    subscriber.seen.remove(key);
                } else {
                    let value = fingerprint(&object);
                    if subscriber.seen.insert(key.clone(), value) == Some(value) {
                        continue;
                    }
                }
            }
            // A closed receiver is dropped on the next notify.
            let _ = subscriber.tx.unbounded_send(object.clone());
        }
    }
}

/// Hashes anything hashable into a fingerprint.
pub fn fingerprint(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Fingerprint of what a spec-driven controller reacts to: the generation, deletion and
/// finalizers (status writes leave all three alone).
pub fn spec_fingerprint<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    fingerprint((meta.generation, meta.deletion_timestamp.is_some(), &meta.finalizers))
}

/// Waits until every receiver reads true.
pub async fn wait_synced(receivers: Vec<signal::Receiver<bool>>) {
    for mut receiver in receivers {
        // An error means the informer is gone, and so is the operator: nothing to wait for.
        let _ = receiver.wait_for(|synced| *synced).await;
    }
}
