//! Benchmark: how long the operator takes to reconcile 100 projects with 10 endpoints and 100
//! keys each (10,000 keys) against a real apiserver, from a cold start with every object already
//! declared until every Project reports its full configuration and every ApiKey and Endpoint is
//! Ready; and where that time goes.
//!
//!     source tests/setup/kube.sh
//!     cargo run --release -p sluice-operator --example reconcile_bench [-- PROJECTS ENDPOINTS KEYS [generated|hashed]]
//!
//! `generated` (the default) declares ApiKeys the operator generates a key Secret for; `hashed`
//! declares ApiKeys minted as the management API and `kubectl sluice` mint them (`spec.keyHash`,
//! no Secret). Prints the figures and writes them to target/bench/reconcile-<keys>.json:
//! - the apiserver's pace for a plain client: the creates of the declaration (32 in flight), and
//!   once the operator stopped, status writes to the ApiKeys (applies with 8, 32 and 128 in
//!   flight, merge patches and replacements with 32);
//! - the operator's requests by verb and resource, with the time until each answered;
//! - Project reconciles' CPU by phase (gather, compile, serialize), and each controller's
//!   reconciles and time in them;
//! - the machine's load average before and after.
//!
//! A program, not a test: `cargo test` builds it (test = false in Cargo.toml) but never runs it,
//! and nothing asserts time.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use sluice_crds::api::{ApiKey, Endpoint, Project};
use sluice_operator::metrics::Metrics;
use sluice_operator::settings::{Settings, WatchedNamespaces};
use sluice_testenv::{Rollouts, TestEnv};
use tokio::sync::watch;

/// Requests in flight at once while declaring the objects, and for the apiserver's pace.
const PARALLEL: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |default: usize| args.next().map_or(Ok(default), |a| a.parse::<usize>());
    let (projects, endpoints, keys) = (number(100)?, number(10)?, number(100)?);
    let hashed = match std::env::args().nth(4).as_deref() {
        None | Some("generated") => false,
        Some("hashed") => true,
        Some(other) => anyhow::bail!("key kind {other:?}: generated or hashed"),
    };
    let key_kind = if hashed { "hashed" } else { "generated" };
    let load_before = load_average();

    let env = TestEnv::builder().sluice_crds().with_controller_manager().start().await?;
    let client = env.client()?;
    let shared = env.namespace("bench-shared").await?;
    let dataplane = env.namespace("bench-dp").await?;
    sluice_testenv::apply_yaml(
        &client,
        &shared,
        "apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {name: bench}
spec: {}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {name: sim}
spec: {type: simulated, models: [{name: sim-chat}]}
",
    )
    .await?;

    // Declare everything first, so the figure is the operator's alone.
    let mut tenants = Vec::new();
    for p in 0..projects {
        tenants.push(env.namespace(&format!("bench-{p:03}")).await?);
    }
    let objects = declarations(&tenants, endpoints, keys, hashed)?;
    let total = objects.len();
    let declared = Instant::now();
    futures::stream::iter(objects)
        .map(|(namespace, resource, object)| {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
            async move { api.create(&PostParams::default(), &object).await.map(drop) }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
    let declare_time = declared.elapsed();
    eprintln!(
        "declared {total} objects in {:.1} s ({:.0} creates/s, a plain client, {PARALLEL} in flight)",
        declare_time.as_secs_f64(),
        total as f64 / declare_time.as_secs_f64()
    );

    // The bench follows what the operator writes by watching (a poll would load the apiserver).
    let expected = (u32::try_from(keys)?, u32::try_from(endpoints)?);
    let (configured, _projects_watch) = follow(Api::<Project>::all(client.clone()), move |p: &Project| {
        p.status.as_ref().is_some_and(|s| (s.keys, s.endpoints) == (Some(expected.0), Some(expected.1)))
    })
    .await?;
    let (ready_keys, _keys_watch) =
        follow(Api::<ApiKey>::all(client.clone()), |k: &ApiKey| ready(k.status.as_ref().map(|s| &s.conditions)))
            .await?;
    let (ready_endpoints, _endpoints_watch) =
        follow(Api::<Endpoint>::all(client.clone()), |e: &Endpoint| ready(e.status.as_ref().map(|s| &s.conditions)))
            .await?;

    let settings = Settings {
        namespaces: WatchedNamespaces::Only(tenants.clone()),
        shared_namespace: shared.clone(),
        dataplane_namespace: dataplane.clone(),
        identity: "bench".to_owned(),
        ..Settings::default()
    };
    let metrics = Arc::new(Metrics::new());
    let operator_client = metrics.api_calls.client(env.config().clone())?;
    // The kubelet's part: the gateway Deployments the operator writes become available.
    let _rollouts = Rollouts::start(client.clone(), &dataplane);
    let cpu_before = cpu_seconds(&env);
    let started = Instant::now();
    let operator = tokio::spawn(sluice_operator::run_with_metrics(
        operator_client,
        settings,
        metrics.clone(),
        std::future::pending(),
    ));
    let synced = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            while !metrics.is_ready() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            started.elapsed()
        })
    };
    let all_projects = reached(configured, projects, started, &operator).await?;
    eprintln!("every Project configured after {:.1} s", all_projects.as_secs_f64());
    let keys_ready = reached(ready_keys, projects * keys, started, &operator).await?;
    let statuses = keys_ready.max(reached(ready_endpoints, projects * endpoints, started, &operator).await?);
    eprintln!("every ApiKey and Endpoint Ready after {:.1} s", statuses.as_secs_f64());
    operator.abort();
    let cpu = cpu_before
        .iter()
        .map(|(name, before)| {
            let after = cpu_seconds(&env).get(name).copied().unwrap_or(*before);
            (name.clone(), after - before)
        })
        .collect::<BTreeMap<String, f64>>();
    let peak_memory = peak_memory_mb(&env);
    let synced = synced.await?;
    let load_after = load_average();
    let report = Exposition::parse(&metrics.encode());

    // The apiserver's pace for the writes the operator makes most of: status writes.
    let pace = status_pace(&client, &tenants, keys).await?;

    let figures = serde_json::json!({
        "benchmark": "reconcile",
        "keys": key_kind,
        "projects": projects,
        "endpoints_per_project": endpoints,
        "keys_per_project": keys,
        "objects_declared": total,
        "declare_seconds": declare_time.as_secs_f64(),
        "caches_synced_seconds": synced.as_secs_f64(),
        "all_projects_configured_seconds": all_projects.as_secs_f64(),
        "all_statuses_ready_seconds": statuses.as_secs_f64(),
        "api_requests": report.api_requests(),
        "project_phase_seconds": report.by_label("sluice_operator_project_phase_seconds_total", "phase"),
        "reconciles": report.by_label("sluice_operator_reconciles_total", "controller"),
        "reconcile_seconds": report.by_label("sluice_operator_reconcile_duration_seconds_sum", "controller"),
        "config_writes": report.sum("sluice_operator_config_writes_total", &[]),
        "config_writes_deferred": report.sum("sluice_operator_config_writes_deferred_total", &[]),
        "plain_client_status_writes_per_second": pace,
        "cpu_seconds_until_ready": cpu,
        "peak_resident_mb": peak_memory,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    print_breakdown(&figures);
    eprintln!(
        "operator: {projects} projects x {endpoints} endpoints x {keys} {key_kind} keys configured in {:.1} s; every status Ready after {:.1} s (load {load_before:.1} before, {load_after:.1} after)",
        all_projects.as_secs_f64(),
        statuses.as_secs_f64()
    );
    let dir = sluice_testenv::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("reconcile-{key_kind}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&figures)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Every object to declare: per tenant a Project, its Endpoints and ApiKeys.
fn declarations(
    tenants: &[String],
    endpoints: usize,
    keys: usize,
    hashed: bool,
) -> anyhow::Result<Vec<(String, ApiResource, DynamicObject)>> {
    let resource = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&kube::core::GroupVersionKind::gvk("sluice.dev", "v1alpha1", kind), plural)
    };
    let (projects, endpoint, apikey) =
        (resource("Project", "projects"), resource("Endpoint", "endpoints"), resource("ApiKey", "apikeys"));
    let now = jiff::Timestamp::now();
    let mut rng = rand::rng();
    let mut objects = Vec::new();
    let mut push = |namespace: &str, resource: &ApiResource, mut body: serde_json::Value| -> anyhow::Result<()> {
        body["apiVersion"] = "sluice.dev/v1alpha1".into();
        body["kind"] = resource.kind.clone().into();
        objects.push((namespace.to_owned(), resource.clone(), serde_json::from_value(body)?));
        Ok(())
    };
    for (p, tenant) in tenants.iter().enumerate() {
        let slug = format!("p{p:03}");
        push(
            tenant,
            &projects,
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"slug": slug, "defaultTier": "bench"}}),
        )?;
        for e in 0..endpoints {
            push(
                tenant,
                &endpoint,
                serde_json::json!({"metadata": {"name": format!("e{e}")}, "spec": {"slug": format!("e{e}"),
                    "models": [{"name": "m", "backends": [{"providerRef": {"name": "sim"}, "model": "sim-chat"}]}]}}),
            )?;
        }
        for k in 0..keys {
            let mut spec = serde_json::json!({"scopes": ["inference"]});
            if hashed {
                let (_, hash) = sluice_crds::keys::mint(&slug, now, None, &mut rng);
                spec["keyHash"] = serde_json::to_value(hash)?;
            }
            push(tenant, &apikey, serde_json::json!({"metadata": {"name": format!("k{k:03}")}, "spec": spec}))?;
        }
    }
    Ok(objects)
}

fn ready(conditions: Option<&Vec<Condition>>) -> bool {
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Watches every object of `api` and publishes how many of them `done` holds for; returns once
/// the first list is in.
async fn follow<K>(
    api: Api<K>,
    done: impl Fn(&K) -> bool + Send + 'static,
) -> anyhow::Result<(watch::Receiver<usize>, AbortOnDrop)>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (count, counted) = watch::channel(0);
    let (listed, mut listed_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default().any_semantic()).default_backoff());
        let mut finished: HashSet<ObjectRef<K>> = HashSet::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    let key = ObjectRef::from_obj(&object);
                    if done(&object) {
                        finished.insert(key);
                    } else {
                        finished.remove(&key);
                    }
                }
                Ok(watcher::Event::Delete(object)) => {
                    finished.remove(&ObjectRef::from_obj(&object));
                }
                Ok(watcher::Event::InitDone) => {
                    listed.send_replace(true);
                }
                Ok(watcher::Event::Init) => finished.clear(),
                Err(err) => eprintln!("bench watch: {err}"),
            }
            count.send_replace(finished.len());
        }
    });
    listed_rx.wait_for(|l| *l).await?;
    Ok((counted, AbortOnDrop(task)))
}

/// Stops a task when dropped (the bench's watches, before the apiserver goes).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long after `started` the count reached `target`.
async fn reached(
    mut count: watch::Receiver<usize>,
    target: usize,
    started: Instant,
    operator: &tokio::task::JoinHandle<sluice_operator::Result<()>>,
) -> anyhow::Result<Duration> {
    loop {
        anyhow::ensure!(!operator.is_finished(), "the operator stopped");
        if *count.borrow_and_update() >= target {
            return Ok(started.elapsed());
        }
        // Checks the operator at least once a second.
        let _ = tokio::time::timeout(Duration::from_secs(1), count.changed()).await;
    }
}

/// Status writes per second that a plain client gets from the apiserver, each changing an
/// ApiKey's status as the operator's do, a fifth of the keys each: server-side applies with
/// 8, 32 and 128 in flight, JSON merge patches with 32, and replacements (PUT, with the
/// resourceVersion read just before) with 32.
async fn status_pace(client: &Client, tenants: &[String], keys: usize) -> anyhow::Result<BTreeMap<String, f64>> {
    let names: Vec<(String, String)> =
        tenants.iter().flat_map(|tenant| (0..keys).map(move |k| (tenant.clone(), format!("k{k:03}")))).collect();
    let fifth = names.len().div_ceil(5);
    let mut paces = BTreeMap::new();
    for (part, (label, write, parallel)) in names.chunks(fifth).zip([
        ("apply_8", StatusWrite::Apply, 8),
        ("apply_32", StatusWrite::Apply, 32),
        ("apply_128", StatusWrite::Apply, 128),
        ("merge_patch_32", StatusWrite::Merge, 32),
        ("replace_32", StatusWrite::Replace, 32),
    ]) {
        // Replacements carry the object as read: read them before the clock starts.
        let mut current = BTreeMap::new();
        if write == StatusWrite::Replace {
            for tenant in tenants {
                for key in Api::<ApiKey>::namespaced(client.clone(), tenant).list(&Default::default()).await? {
                    current.insert((tenant.clone(), key.metadata.name.clone().unwrap_or_default()), key);
                }
            }
        }
        let current = &current;
        let started = Instant::now();
        futures::stream::iter(part)
            .map(|(tenant, name)| {
                let api = Api::<ApiKey>::namespaced(client.clone(), tenant);
                async move {
                    let status = serde_json::json!({"currentPeriodSpendUsd": 1.5});
                    match write {
                        StatusWrite::Apply => {
                            let patch = serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "ApiKey", "status": status});
                            let params = PatchParams::apply("sluice-bench").force();
                            api.patch_status(name, &params, &Patch::Apply(&patch)).await.map(drop)?
                        }
                        StatusWrite::Merge => {
                            let patch = serde_json::json!({"status": status});
                            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)?
                        }
                        StatusWrite::Replace => {
                            let mut key = current
                                .get(&(tenant.clone(), name.clone()))
                                .cloned()
                                .with_context(|| format!("ApiKey {tenant}/{name} not listed"))?;
                            key.status = Some(serde_json::from_value(status)?);
                            api.replace_status(name, &PostParams::default(), &key).await.map(drop)?
                        }
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(parallel)
            .try_collect::<()>()
            .await?;
        paces.insert(label.to_owned(), part.len() as f64 / started.elapsed().as_secs_f64());
    }
    Ok(paces)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StatusWrite {
    Apply,
    Merge,
    Replace,
}

/// `own(pid)` summed over the process `pid` and every process it started, and theirs.
fn over_tree(pid: &str, own: &dyn Fn(&str) -> f64) -> f64 {
    // Each thread lists the children it started.
    let children: String = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .collect::<Vec<_>>()
        .join(" ");
    own(pid) + children.split_whitespace().map(|child| over_tree(child, own)).sum::<f64>()
}

/// CPU seconds (user and system) each control-plane process (with its children: each runs under
/// a supervising shell) and this one (the operator and the bench's watches) used so far.
fn cpu_seconds(env: &TestEnv) -> BTreeMap<String, f64> {
    fn cpu(pid: &str) -> f64 {
        let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
            // The fields after the command name in parentheses; utime and stime are the 14th and 15th.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // The kernel's USER_HZ is 100 on every Linux this runs on.
            Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
        });
        own.unwrap_or(0.0)
    }
    let mut out: BTreeMap<String, f64> =
        env.processes().into_iter().map(|(name, pid)| (name.to_owned(), over_tree(&pid.to_string(), &cpu))).collect();
    out.insert(
        "operator and bench".to_owned(),
        over_tree(&std::process::id().to_string(), &cpu) - out.values().sum::<f64>(),
    );
    out
}

/// Peak resident memory in MB of each control-plane process tree (the sum of its processes'
/// peaks) and of this process (the operator with the bench's own watches and client).
fn peak_memory_mb(env: &TestEnv) -> BTreeMap<String, f64> {
    fn peak_kb(pid: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or_default();
        line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).unwrap_or(0.0)
    }
    let mut out: BTreeMap<String, f64> = env
        .processes()
        .into_iter()
        .map(|(name, pid)| (name.to_owned(), over_tree(&pid.to_string(), &peak_kb) / 1024.0))
        .collect();
    out.insert("operator and bench".to_owned(), peak_kb(&std::process::id().to_string()) / 1024.0);
    out
}

/// The one-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Samples of the operator's `/metrics` text: name, labels, value.
struct Exposition(Vec<(String, BTreeMap<String, String>, f64)>);

impl Exposition {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels
                    .split(',')
                    .filter_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        Some((key.to_owned(), value.trim_matches('"').to_owned()))
                    })
                    .collect();
                Some((name.to_owned(), labels, value.parse().ok()?))
            })
            .collect();
        Self(samples)
    }

    /// The sum of `name`'s samples whose labels include `matching`.
    fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name && matching.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }

    /// `name`'s samples by the value of `label`.
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, labels, value) in &self.0 {
            if n == name {
                *out.entry(labels.get(label).cloned().unwrap_or_default()).or_insert(0.0) += value;
            }
        }
        out
    }

    /// Requests by `verb resource`: count, failures, seconds.
    fn api_requests(&self) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        for (n, labels, value) in &self.0 {
            let field = match n.as_str() {
                "sluice_operator_api_requests_total" => "count",
                "sluice_operator_api_request_failures_total" => "failures",
                "sluice_operator_api_request_seconds_total" => "seconds",
                _ => continue,
            };
            let key = format!(
                "{} {}",
                labels.get("verb").map_or("", String::as_str),
                labels.get("resource").map_or("", String::as_str)
            );
            let entry =
                out.entry(key).or_insert_with(|| serde_json::json!({"count": 0, "failures": 0, "seconds": 0.0}));
            entry[field] = (*value).into();
        }
        out
    }
}

/// Prints the figures as a table, the largest request counts first.
/// A JSON object's entries as `key value, ...`, each value with `precision` decimals.
fn entries(object: &serde_json::Value, precision: usize) -> String {
    let values: Vec<String> = object
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {:.precision$}", v.as_f64().unwrap_or(0.0)))
        .collect();
    values.join(", ")
}

fn print_breakdown(figures: &serde_json::Value) {
    let requests = figures["api_requests"].as_object().cloned().unwrap_or_default();
    let mut rows: Vec<(String, f64, f64, f64)> = requests
        .iter()
        .map(|(key, v)| {
            let field = |name: &str| v[name].as_f64().unwrap_or(0.0);
            (key.clone(), field("count"), field("failures"), field("seconds"))
        })
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let writes: f64 = rows
        .iter()
        .filter(|(key, ..)| ["create ", "update ", "apply ", "patch ", "delete "].iter().any(|v| key.starts_with(v)))
        .map(|row| row.1)
        .sum();
    let non_watch = |row: &&(String, f64, f64, f64)| !row.0.starts_with("watch ");
    let (requests_total, seconds_total): (f64, f64) =
        rows.iter().filter(non_watch).fold((0.0, 0.0), |(n, s), row| (n + row.1, s + row.3));
    eprintln!("operator requests (time until the response headers, summed; watches are long-lived):");
    eprintln!("  {:<44} {:>8} {:>8} {:>9}", "verb resource", "count", "failed", "seconds");
    for (key, count, failures, seconds) in &rows {
        eprintln!("  {key:<44} {count:>8} {failures:>8} {seconds:>9.1}");
    }
    eprintln!("  {:<44} {requests_total:>8} {:>8} {seconds_total:>9.1}", "all but watches", "");
    eprintln!("  writes: {writes}");
    for (title, field) in [
        ("project CPU by phase (s)", "project_phase_seconds"),
        ("reconciles", "reconciles"),
        ("time in reconciles (s)", "reconcile_seconds"),
    ] {
        eprintln!("{title}: {}", entries(&figures[field], 1));
    }
    eprintln!(
        "config writes: {} ({} deferred by spacing)",
        figures["config_writes"], figures["config_writes_deferred"]
    );
    eprintln!(
        "CPU seconds from the operator's start until every status was Ready: {}",
        entries(&figures["cpu_seconds_until_ready"], 1)
    );
    eprintln!("peak resident MB: {}", entries(&figures["peak_resident_mb"], 0));
    eprintln!(
        "caches synced after {:.1} s; a plain client's status writes per second, by kind and requests in flight: {}",
        figures["caches_synced_seconds"].as_f64().unwrap_or(0.0),
        entries(&figures["plain_client_status_writes_per_second"], 0)
    );
}
