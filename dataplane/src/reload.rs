//! Hot reload: watch the configuration's source, validate what changed, swap the snapshot
//! atomically. A bad configuration is logged, counted and shown at `/config`, and the last good
//! one keeps serving; requests in flight finish on the snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use notify::Watcher;
use sluice_crds::config::GatewayConfig;
use sluice_crds::config_secret::{self, SecretData};

use crate::Gateway;
use crate::config_source;

/// What `/config` reports about loading.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// Where configurations come from.
    pub source: String,
    /// Last attempt (successful or not).
    pub last_attempt_at: Option<Timestamp>,
    /// Last failure, if the last attempt failed (cleared by a success).
    pub last_error: Option<String>,
    /// When it failed.
    pub last_error_at: Option<Timestamp>,
    /// Content hashes of the live configurations.
    pub hashes: Vec<String>,
}

/// Applies a load's result: on success, swaps in a new snapshot (unless nothing changed); on
/// failure, keeps the current one. Returns whether a new snapshot went live.
pub fn apply(gateway: &Gateway, origin: &str, result: Result<Vec<GatewayConfig>, String>) -> bool {
    let now = Timestamp::now();
    let outcome = result.and_then(|configs| {
        let hashes = config_source::hashes(&configs);
        if gateway.snapshot().generation > 0 && gateway.status().hashes == hashes {
            return Ok(None);
        }
        gateway.install(&configs).map(|generation| Some((generation, hashes)))
    });
    let mut status = gateway.status_mut();
    status.last_attempt_at = Some(now);
    match outcome {
        Ok(None) => {
            status.last_error = None;
            drop(status);
            gateway.metrics.reload_unchanged();
            false
        }
        Ok(Some((generation, hashes))) => {
            status.last_error = None;
            status.hashes = hashes;
            drop(status);
            let snapshot = gateway.snapshot();
            let projects: Vec<&str> = snapshot.summaries.iter().map(|s| s.slug.as_str()).collect();
            tracing::info!(generation, origin, projects = ?projects, keys = snapshot.key_count(), "configuration loaded");
            gateway.metrics.reload(true);
            true
        }
        Err(error) => {
            status.last_error = Some(error.clone());
            status.last_error_at = Some(now);
            drop(status);
            gateway.metrics.reload(false);
            tracing::error!(origin, %error, "configuration rejected; the last good configuration keeps serving");
            false
        }
    }
}

/// Loads `path` once (off the async threads: parsing 50,000 keys takes a moment).
pub async fn load_path_once(gateway: &Arc<Gateway>, path: PathBuf) -> bool {
    let options = gateway.compile_options();
    let origin = path.display().to_string();
    load_and_apply(gateway, origin, move || config_source::load_path(&path, &options)).await
}

/// Runs `load` and [`apply`]s its result on one blocking thread, then returns what the load freed
/// to the operating system. Parsing allocates several times the configuration's final size; the
/// allocator keeps freed pages until their thread next calls it, and a loader thread goes idle
/// right after, so without the collection an idle gateway holds its last load's peak.
async fn load_and_apply<F>(gateway: &Arc<Gateway>, origin: String, load: F) -> bool
where
    F: FnOnce() -> Result<Vec<GatewayConfig>, String> + Send + 'static,
{
    let loader = gateway.clone();
    tokio::task::spawn_blocking(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
            .unwrap_or_else(|panic| Err(format!("loader panicked: {}", panic_message(panic.as_ref()))));
        let applied = apply(&loader, &origin, result);
        #[cfg(not(feature = "system-allocator"))]
        sluice_alloc::release_freed_memory();
        applied
    })
    .await
    // `apply` itself panicked (the load's panic is caught above); the panic hook has said so.
    .unwrap_or(false)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
}

/// Watches a folder or file: a file-system watch (reacting within a debounce of 150 ms) plus a
/// content-hash poll every `poll` as a safety net (some volumes send no events).
pub async fn watch_path(gateway: Arc<Gateway>, path: PathBuf, poll: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watched =
        if path.is_dir() { path.clone() } else { path.parent().map(PathBuf::from).unwrap_or_else(|| path.clone()) };
    // Only events about files the loader reads wake the loop: a log written into the same folder
    // (an audit log at 20 writes a second) would otherwise make it re-read every manifest.
    // Kubernetes swaps a mounted Secret or ConfigMap through `..data` links, which always count.
    let single = (!path.is_dir()).then(|| path.clone());
    let matters = move |file: &Path| {
        let swapped = file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".."));
        swapped || single.as_ref().map_or_else(|| config_source::is_config_file(file), |p| p == file)
    };
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An event without paths, or an error (the watch overflowed), may hide a change.
        let relevant = event.map_or(true, |event| event.paths.is_empty() || event.paths.iter().any(|p| matters(p)));
        if relevant {
            let _ = tx.try_send(());
        }
    }) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "no file-system watch; polling only");
            None
        }
    };
    if let Some(w) = watcher.as_mut()
        && let Err(error) = w.watch(&watched, notify::RecursiveMode::NonRecursive)
    {
        tracing::warn!(%error, path = %watched.display(), "cannot watch; polling only");
    }
    let mut last = fingerprint(&path).await.unwrap_or_default();
    let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // Let a burst of writes (an editor, `kubectl cp`, a volume swap) settle.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = ticker.tick() => {}
        }
        let Some(current) = fingerprint(&path).await else { continue };
        if current != last {
            last = current;
            load_path_once(&gateway, path.clone()).await;
        }
    }
}

/// [`config_source::fingerprint`] off the async threads (it reads every file); `None` if it
/// panicked.
async fn fingerprint(path: &Path) -> Option<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || config_source::fingerprint(&path)).await.ok()
}

/// Watches the operator's config Secret through the API; a change reaches this process in
/// about a second. Shards are read and checked against the Secret's hash before anything is
/// swapped.
pub async fn watch_secret(gateway: Arc<Gateway>, client: kube::Client, namespace: String, name: String) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api.clone(), config).default_backoff().boxed();
    let origin = format!("secret {namespace}/{name}");
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(secret) | Event::InitApply(secret)) => {
                let read = read_secret(&api, &name, &secret).await;
                load_and_apply(&gateway, origin.clone(), move || {
                    read.and_then(|bytes| config_source::parse(&bytes).map(|c| vec![c]))
                })
                .await;
            }
            Ok(Event::Delete(_)) => {
                tracing::warn!(origin = %origin, "config Secret deleted; the last configuration keeps serving");
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(error) => {
                tracing::warn!(origin = %origin, %error, "watching the config Secret failed; retrying");
                let mut status = gateway.status_mut();
                status.last_error = Some(format!("watch: {error}"));
                status.last_error_at = Some(Timestamp::now());
            }
        }
    }
}

/// The configuration bytes, joined from shards when split and checked against the primary's
/// hash (the contract in `sluice_crds::config_secret`).
async fn read_secret(api: &Api<Secret>, name: &str, secret: &Secret) -> Result<Vec<u8>, String> {
    let empty = SecretData::new();
    let primary = secret.data.as_ref().unwrap_or(&empty);
    let count = config_secret::shard_count(primary).map_err(|e| e.to_string())?.unwrap_or(0);
    let mut shards = Vec::with_capacity(count);
    for index in 0..count {
        let shard_name = config_secret::shard_of_primary(name, index);
        let shard = api.get(&shard_name).await.map_err(|e| format!("shard {shard_name}: {e}"))?;
        shards.push(shard.data.unwrap_or_default());
    }
    config_secret::assemble(primary, |index| shards.get(index)).map_err(|e| e.to_string())
}
