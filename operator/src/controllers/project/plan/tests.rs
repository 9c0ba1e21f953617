//! The Project plan for representative inputs, without an API server.

use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_crds::config::KeyHash;
use sluice_crds::manifests::load_str;

use super::*;
use crate::config_secret::SHARD_BYTES;
use crate::reports::ObjectVerdict;

/// A project `t/p` (slug `p`) with one Endpoint on a shared Provider and one key.
const TENANT: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"ServiceTier","metadata":{"name":"std"},"spec":{}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"sim","namespace":"sluice-system"},"spec":{"type":"simulated","models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"good","namespace":"t"},"spec":{"slug":"good","models":[{"name":"m","backends":[{"providerRef":{"name":"sim"},"model":"m"}]}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{"name":"ok","namespace":"t"},"spec":{"secretRef":{"name":"ok-key"}}}
---
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ok-key","namespace":"t"},"stringData":{"key":"sl_p_0123456789abcdef0123456789"}}"#;

/// An Endpoint whose Provider does not exist.
const MISSING_PROVIDER: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"typo","namespace":"t"},"spec":{"slug":"typo","models":[{"name":"m","backends":[{"providerRef":{"name":"nope"},"model":"m"}]}]}}"#;

/// An Endpoint on a Provider in a namespace that is neither its own nor the shared one.
const FOREIGN_PROVIDER: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"far","namespace":"other"},"spec":{"type":"simulated","models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"foreign","namespace":"t"},"spec":{"slug":"foreign","models":[{"name":"m","backends":[{"providerRef":{"name":"far","namespace":"other"},"model":"m"}]}]}}"#;

/// The objects of JSON (so YAML) documents separated by `---` lines.
fn objects(documents: &str) -> Vec<Object> {
    load_str(Path::new("fixture.yaml"), documents).expect("a valid fixture").objects
}

/// Project `t/p`, slug `p`, with the operator's finalizer.
fn project() -> Project {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Project",
        "metadata": {
            "name": "p", "namespace": "t", "generation": 1, "uid": "uid-p",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [PROJECT_FINALIZER],
        },
        "spec": {"slug": "p", "defaultTier": "std"},
    }))
    .expect("a project")
}

fn now() -> Timestamp {
    "2026-02-01T00:00:00Z".parse().expect("time")
}

/// Inputs for `project` over the tenant's objects and `extra` ones.
fn inputs(project: Project, extra: &[&str]) -> Inputs {
    let mut all = vec![Object::Project(project.clone())];
    all.extend(objects(TENANT));
    for documents in extra {
        all.extend(objects(documents));
    }
    Inputs {
        neighbours: vec![ProjectClaim::of(&project)],
        slug_claims: vec![ProjectClaim::of(&project)],
        project: Arc::new(project),
        now: now(),
        objects: all,
        previous: None,
        ready_replicas: 2,
        available_replicas: 2,
        pool_addresses: BTreeMap::new(),
        gateway_created: Some(now()),
    }
}

fn run(inputs: &Inputs) -> Plan {
    run_over(inputs, &WrittenConfig::default())
}

/// The plan with config Secrets that hold `written`.
fn run_over(inputs: &Inputs, written: &WrittenConfig) -> Plan {
    plan(inputs, &Settings::default(), || written.clone()).expect("a plan")
}

fn condition<'a>(plan: &'a Plan, type_: &str) -> (&'a str, &'a str, &'a str) {
    let status = plan.status.as_ref().expect("a status to write");
    let c = status.conditions.iter().find(|c| c.type_ == type_).expect("the condition");
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn served(plan: &Plan) -> (Vec<&str>, Vec<&str>) {
    let report = plan.report.as_ref().expect("a report");
    let mut endpoints: Vec<&str> = report.endpoints.iter().filter(|(_, v)| v.served).map(|(n, _)| n.as_str()).collect();
    let mut keys: Vec<&str> = report.keys.iter().filter(|(_, v)| v.served).map(|(n, _)| n.as_str()).collect();
    endpoints.sort_unstable();
    keys.sort_unstable();
    (endpoints, keys)
}

#[test]
fn a_valid_project_writes_its_configuration_and_data_plane_and_reports_serving() {
    let plan = run(&inputs(project(), &[]));
    assert_eq!(plan.finalizer, Finalizer::Keep);
    let write = plan.config.as_ref().expect("a configuration to write");
    assert!(write.secrets.shards.is_empty() && write.stale_shards.is_empty());
    assert!(write.note.contains("1 endpoint(s), 1 key(s)"), "{}", write.note);
    let data_plane = plan.data_plane.as_ref().expect("a data plane");
    assert_eq!(write.role, data_plane.role, "no shards to switch: the Role is the data plane's");
    assert_eq!(served(&plan), (vec!["good"], vec!["ok"]));
    let (status, reason, message) = condition(&plan, READY);
    assert_eq!((status, reason), ("True", "Serving"));
    assert!(message.contains("serves 1 endpoint(s) and 1 key(s); 2 of "), "{message}");
    assert_eq!(plan.report.as_ref().and_then(|r| r.gateway_unavailable.clone()), None);
    assert_eq!(condition(&plan, DEGRADED).1, "AsDeclared");
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.config_hash.as_deref(), Some(write.secrets.hash.as_str()));
    assert_eq!((status.endpoints, status.keys, status.ready_replicas), (Some(1), Some(1), Some(2)));
    assert!(plan.events.is_empty());
    assert_eq!(plan.requeue, Some(RESYNC));
}

#[test]
fn without_an_available_gateway_replica_nothing_is_ready() {
    let mut inputs = inputs(project(), &[]);
    inputs.available_replicas = 0;
    let plan = run(&inputs);
    assert!(plan.config.is_some() && plan.data_plane.is_some(), "the configuration is still written");
    let (status, reason, message) = condition(&plan, READY);
    assert_eq!((status, reason), ("False", "GatewayUnavailable"));
    assert!(message.contains("0 of 2 gateway replica(s) available"), "{message}");
    let report = plan.report.as_ref().expect("report");
    assert!(report.gateway_unavailable.as_deref().is_some_and(|m| m.contains("project p")), "{report:?}");
    assert_eq!(served(&plan), (vec!["good"], vec!["ok"]), "in the configuration all the same");
}

#[test]
fn a_new_gateway_has_a_first_rollout_to_wait_for_and_an_old_one_none() {
    let mut inputs = inputs(project(), &[]);
    inputs.available_replicas = 0;
    let until = |inputs: &Inputs| run(inputs).report.expect("report").first_rollout_until;
    inputs.gateway_created = None;
    assert_eq!(until(&inputs), Some(now() + FIRST_ROLLOUT_GRACE), "about to be created");
    inputs.gateway_created = Some(now() - SignedDuration::from_secs(10));
    assert_eq!(until(&inputs), Some(now() + SignedDuration::from_secs(20)));
    inputs.gateway_created = Some(now() - SignedDuration::from_secs(60));
    assert_eq!(until(&inputs), None, "a rollout that long is news");
    inputs.available_replicas = 1;
    inputs.gateway_created = Some(now());
    assert_eq!(until(&inputs), None, "it serves");
}

#[test]
fn a_first_reconcile_adds_the_finalizer() {
    let mut fresh = project();
    fresh.metadata.finalizers = None;
    assert_eq!(run(&inputs(fresh, &[])).finalizer, Finalizer::Add);
}

#[test]
fn a_missing_provider_leaves_its_endpoint_out_and_says_so() {
    let plan = run(&inputs(project(), &[MISSING_PROVIDER]));
    assert_eq!(served(&plan), (vec!["good"], vec!["ok"]), "the rest is served");
    let verdict = &plan.report.as_ref().expect("report").endpoints["typo"];
    assert!(!verdict.served);
    assert_eq!(
        verdict.problems,
        ["spec.models[0].backends[0].providerRef: no Provider \"nope\" in namespace t or sluice-system"]
    );
    assert_eq!(condition(&plan, READY).1, "Serving");
    let (status, reason, message) = condition(&plan, REFERENCES_RESOLVED);
    assert_eq!((status, reason), ("False", "InvalidReferences"));
    assert!(message.starts_with("Endpoint t/typo: spec.models[0].backends[0].providerRef: no Provider"), "{message}");
    let (status, reason, message) = condition(&plan, DEGRADED);
    assert_eq!((status, reason), ("True", "ObjectsLeftOut"));
    assert!(message.ends_with("Endpoint t/typo"), "{message}");
    assert_eq!(plan.events.len(), 1);
    assert_eq!((plan.events[0].type_, plan.events[0].reason), (EventType::Warning, "InvalidReferences"));

    // Once the status says so, the Event is not repeated.
    let mut again = inputs(project(), &[MISSING_PROVIDER]);
    Arc::make_mut(&mut again.project).status = plan.status.clone();
    let second = run(&again);
    assert!(second.events.is_empty());
    assert!(second.status.is_none(), "the status already reads so");
}

#[test]
fn a_provider_in_a_foreign_namespace_is_refused() {
    let plan = run(&inputs(project(), &[FOREIGN_PROVIDER]));
    assert_eq!(served(&plan), (vec!["good"], vec!["ok"]));
    let verdict = &plan.report.as_ref().expect("report").endpoints["foreign"];
    assert!(!verdict.served);
    assert_eq!(
        verdict.problems,
        [
            "spec.models[0].backends[0].providerRef: namespace other is neither this object's namespace (t) nor the shared namespace (sluice-system)"
        ]
    );
    assert_eq!(condition(&plan, DEGRADED).1, "ObjectsLeftOut");
}

#[test]
fn a_broken_project_keeps_the_written_configuration_serving() {
    let mut broken = project();
    broken.spec.default_tier = "gold".into();
    broken.status = Some(ProjectStatus { config_hash: Some("sha256:old".into()), ..ProjectStatus::default() });
    let mut inputs = inputs(broken, &[MISSING_PROVIDER]);
    inputs.previous = Some(Arc::new(ProjectReport {
        keys: [("ok".to_owned(), ObjectVerdict { served: true, problems: Vec::new() })].into(),
        tiers: ["std".to_owned()].into(),
        ..ProjectReport::default()
    }));
    let plan = run(&inputs);
    assert!(plan.config.is_none() && plan.data_plane.is_none(), "nothing is written");
    let report = plan.report.as_ref().expect("report");
    assert!(report.failure.as_deref().is_some_and(|f| f.contains("no ServiceTier \"gold\"")));
    assert_eq!(served(&plan), (vec![], vec!["ok"]), "what was served still is");
    assert_eq!(report.tiers, ["std".to_owned()].into());
    let (_, reason, message) = condition(&plan, READY);
    assert_eq!(reason, "CompileFailed");
    let (fatal, left_out) = (message.find("no ServiceTier \"gold\""), message.find("Endpoint t/typo"));
    assert!(fatal.is_some() && left_out.is_some() && fatal < left_out, "the fatal cause first: {message}");
    assert_eq!(condition(&plan, DEGRADED).1, "NotCompiled");
    assert_eq!(plan.status.as_ref().and_then(|s| s.config_hash.as_deref()), Some("sha256:old"));
    assert_eq!(plan.events.iter().map(|e| e.reason).collect::<Vec<_>>(), ["CompileFailed"]);
}

#[test]
fn a_second_project_in_the_namespace_is_refused() {
    let mut second = project();
    second.metadata.name = Some("q".into());
    second.spec.slug = "q".into();
    let mut inputs = inputs(second.clone(), &[]);
    inputs.neighbours = vec![ProjectClaim::of(&project()), ProjectClaim::of(&second)];
    let plan = run(&inputs);
    assert!(plan.config.is_none() && plan.data_plane.is_none());
    let (status, reason, message) = condition(&plan, READY);
    assert_eq!((status, reason), ("False", "Conflict"));
    assert_eq!(message, "namespace t already has Project p; one Project per namespace");
    assert!(plan.report.is_none(), "the namespace's report stays the serving Project's");
    assert_eq!(plan.status.as_ref().and_then(|s| s.config_hash.as_ref()), None);
}

#[test]
fn the_oldest_project_of_a_namespace_serves_whatever_the_names() {
    let mut newer = project();
    newer.metadata.name = Some("aaa".into());
    newer.metadata.uid = Some("uid-aaa".into());
    newer.spec.slug = "aaa".into();
    newer.metadata.creation_timestamp = Some(Time("2026-01-02T00:00:00Z".parse().expect("time")));
    let claims = vec![ProjectClaim::of(&newer), ProjectClaim::of(&project())];

    let mut elder_inputs = inputs(project(), &[]);
    elder_inputs.neighbours.clone_from(&claims);
    let elder = run(&elder_inputs);
    assert_eq!(condition(&elder, READY).1, "Serving", "a newer Project named first changes nothing");
    assert!(elder.cleanup.is_none() && elder.config.is_some());

    let mut newer_inputs = inputs(newer.clone(), &[]);
    newer_inputs.neighbours = claims;
    let refused = run(&newer_inputs);
    assert_eq!(condition(&refused, READY).2, "namespace t already has Project p; one Project per namespace");
    assert!(refused.config.is_none() && refused.data_plane.is_none());
    assert!(refused.report.is_none(), "the namespace's report is the serving Project's");
    assert_eq!(refused.cleanup, Some(Cleanup { owner: "t/aaa".into(), slug: "aaa".into(), release: false }));
    assert_eq!(
        refused.events.iter().map(|n| (n.type_, n.reason)).collect::<Vec<_>>(),
        [(EventType::Warning, "Conflict")],
        "the refusal is an Event on the refused Project"
    );

    // Deleting the refused one leaves the serving one's report and state alone.
    newer.metadata.deletion_timestamp = Some(Time(now()));
    newer_inputs.project = Arc::new(newer);
    let deleted = run(&newer_inputs);
    assert_eq!(deleted.cleanup.map(|c| c.release), Some(false));
}

#[test]
fn a_slug_belongs_first_to_the_namespace_of_its_name() {
    // A squatter in namespace t claimed slug "team" long ago; namespace "team" claims it now.
    let mut squatter = project();
    squatter.spec.slug = "team".into();
    let mut owner = project();
    owner.metadata.namespace = Some("team".into());
    owner.metadata.uid = Some("uid-owner".into());
    owner.spec.slug = "team".into();
    owner.metadata.creation_timestamp = Some(Time("2026-01-30T00:00:00Z".parse().expect("time")));
    let claims = vec![ProjectClaim::of(&squatter), ProjectClaim::of(&owner)];

    let mut squatter_inputs = inputs(squatter, &[]);
    squatter_inputs.slug_claims.clone_from(&claims);
    let refused = run(&squatter_inputs);
    assert_eq!(condition(&refused, READY).2, "slug \"team\" is already served for Project team/p");
    assert_eq!(refused.cleanup.as_ref().map(|c| (c.owner.as_str(), c.release)), Some(("t/p", false)));
    assert!(refused.report.as_ref().is_some_and(|r| r.failure.is_some()), "nothing of namespace t is served");

    let mut owner_inputs = inputs(owner, &[]);
    owner_inputs.slug_claims = claims;
    assert_eq!(condition(&run(&owner_inputs), READY).1, "Serving");
}

#[test]
fn a_slug_claimed_first_elsewhere_is_refused() {
    let mut elder = project();
    elder.metadata.namespace = Some("u".into());
    elder.metadata.creation_timestamp = Some(Time("2025-01-01T00:00:00Z".parse().expect("time")));
    let mut deleting = elder.clone();
    deleting.metadata.namespace = Some("v".into());
    deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
    let mut inputs = inputs(project(), &[]);
    inputs.slug_claims.push(ProjectClaim::of(&deleting));
    assert_eq!(condition(&run(&inputs), READY).1, "Serving", "a Project being deleted claims nothing");
    inputs.slug_claims.push(ProjectClaim::of(&elder));
    assert_eq!(condition(&run(&inputs), READY).2, "slug \"p\" is already served for Project u/p");
}

#[test]
fn deletion_removes_the_data_plane_then_the_finalizer() {
    let mut deleted = project();
    deleted.metadata.deletion_timestamp = Some(Time(now()));
    let mut inputs = inputs(deleted.clone(), &[]);
    inputs.objects.clear();
    let plan = run(&inputs);
    assert_eq!(plan.finalizer, Finalizer::Remove);
    assert_eq!(plan.cleanup, Some(Cleanup { owner: "t/p".into(), slug: "p".into(), release: true }));
    assert!(plan.config.is_none() && plan.data_plane.is_none() && plan.report.is_none() && plan.status.is_none());
    assert_eq!(plan.requeue, None, "nothing more until the next change");

    deleted.metadata.finalizers = None;
    let plan = run(&Inputs { project: Arc::new(deleted), ..inputs });
    assert_eq!((plan.finalizer, plan.cleanup), (Finalizer::Keep, None), "not ours to clean up");
}

/// `count` more keys, each with its own Secret: about 150 bytes of configuration each.
fn many_keys(count: usize) -> Vec<Object> {
    let documents: Vec<String> = (0..count)
        .map(|i| {
            let apikey = serde_json::json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "ApiKey",
                "metadata": {"name": format!("key-{i:05}"), "namespace": "t"},
                "spec": {"secretRef": {"name": format!("key-{i:05}")}},
            });
            let secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("key-{i:05}"), "namespace": "t"},
                "stringData": {"key": format!("sl_p_{i:028}")},
            });
            format!("{apikey}\n---\n{secret}")
        })
        .collect();
    objects(&documents.join("\n---\n"))
}

#[test]
fn an_oversized_configuration_is_sharded_and_its_writes_spaced() {
    let mut large = inputs(project(), &[]);
    large.objects.extend(many_keys(SHARD_BYTES / 100));
    let plan = run(&large);
    let write = plan.config.as_ref().expect("a configuration to write");
    let shards = write.secrets.shards.len();
    assert!(shards >= 1, "{} bytes in one Secret", write.secrets.size);
    let data_plane = plan.data_plane.as_ref().expect("data plane");
    let readable = |role: &Role| role.rules.as_ref().expect("rules")[0].resource_names.clone().unwrap_or_default();
    assert_eq!(readable(&data_plane.role), write.secrets.names(), "the gateway may read every part");

    // The same configuration again, once written: nothing to write.
    let mut written = WrittenConfig { shards, ..WrittenConfig::default() };
    for secret in std::iter::once(&write.secrets.primary).chain(&write.secrets.shards) {
        let name = secret.metadata.name.clone().expect("name");
        written.hashes.insert(name, write.secrets.hash.clone());
    }
    assert!(run_over(&large, &written).config.is_none());

    // A change right after a write waits (spaced by size); the written one keeps serving.
    let mut changed = large.clone();
    changed.objects.extend(many_keys(SHARD_BYTES / 100 + 1).split_off(2 * (SHARD_BYTES / 100)));
    Arc::make_mut(&mut changed.project).status = plan.status.clone();
    let just_written = WrittenConfig { since_last_write: Some(Duration::from_millis(10)), ..written.clone() };
    let waiting = run_over(&changed, &just_written);
    assert!(waiting.config.is_none());
    assert!(waiting.requeue.is_some_and(|r| r < RESYNC));
    let (_, reason, message) = condition(&waiting, READY);
    assert_eq!(reason, "Serving");
    assert!(message.contains("a newer configuration is written in"), "{message}");
    let status = waiting.status.as_ref().expect("status");
    assert_eq!(status.config_hash.as_deref(), Some(write.secrets.hash.as_str()));
    assert_eq!(status.keys, Some(u32::try_from(SHARD_BYTES / 100 + 1).expect("count")), "the written key count");

    // A key deleted right after a write is revoked at once: no spacing.
    let mut revoked = large.clone();
    let gone = revoked
        .objects
        .iter()
        .position(|o| matches!(o, Object::ApiKey(k) if k.name_any() != "ok"))
        .expect("a generated key");
    let Object::ApiKey(gone_key) = revoked.objects.remove(gone) else { unreachable!("an ApiKey") };
    revoked.previous = plan.report.clone().map(Arc::new);
    assert!(revoked.previous.as_ref().is_some_and(|r| r.keys[&gone_key.name_any()].served));
    let revoking = run_over(&revoked, &just_written);
    let write = revoking.config.as_ref().expect("written at once");
    assert!(!write.note.contains(&format!("{} key(s)", SHARD_BYTES / 100 + 1)), "{}", write.note);

    // A smaller configuration replacing a sharded one: the Role covers both while they switch,
    // and the shards left over go.
    let plan = run_over(&inputs(project(), &[]), &written);
    let write = plan.config.as_ref().expect("a write");
    assert!(write.secrets.shards.is_empty());
    assert_eq!(write.stale_shards.len(), shards);
    assert_eq!(readable(&write.role).len(), 1 + shards);
    assert_eq!(readable(&plan.data_plane.as_ref().expect("data plane").role).len(), 1);
}

#[test]
fn a_deferred_write_reports_what_the_secrets_hold() {
    let options = CompileOptions { generated_keys: GeneratedKeys::Operator, ..CompileOptions::default() };
    let inputs = inputs(project(), &[]);
    let config = compile_partially(&inputs.project, &inputs.objects, &options).config.expect("config");
    let served = (config.endpoints.len(), config.keys.len());
    assert_eq!(serving_counts(&config, false, None), served);
    let written = ProjectStatus { endpoints: Some(7), keys: Some(48_451), ..ProjectStatus::default() };
    assert_eq!(serving_counts(&config, false, Some(&written)), served);
    assert_eq!(serving_counts(&config, true, Some(&written)), (7, 48_451));
    assert_eq!(serving_counts(&config, true, None), (0, 0));
}

#[test]
fn the_next_expiry_is_the_earliest_future_one() {
    let options = CompileOptions { generated_keys: GeneratedKeys::Operator, ..CompileOptions::default() };
    let inputs = inputs(project(), &[]);
    let mut config = compile_partially(&inputs.project, &inputs.objects, &options).config.expect("config");
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
    assert_eq!(next_expiry(&config, now), None);
    config.keys[0].expires_at = Some("2026-03-01T00:00:00Z".parse().expect("time"));
    config.keys[0]
        .hashes
        .push(KeyHash { sha256: "0".repeat(64), expires_at: Some("2026-02-01T00:00:00Z".parse().expect("time")) });
    assert_eq!(next_expiry(&config, now), Some("2026-02-01T00:00:00Z".parse().expect("time")));
    assert_eq!(
        next_expiry(&config, "2026-02-15T00:00:00Z".parse().expect("time")),
        Some("2026-03-01T00:00:00Z".parse().expect("time"))
    );
}

/// A vLLM pool behind Service `vllm` in the tenant's namespace, and an Endpoint on it.
const POOL: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"pool","namespace":"t"},"spec":{"type":"openai","service":{"name":"vllm","port":8000},"models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"self-hosted","namespace":"t"},"spec":{"slug":"self-hosted","models":[{"name":"m","backends":[{"providerRef":{"name":"pool"},"model":"m"}]}]}}"#;

#[test]
fn a_pool_on_a_service_gets_the_ready_pods_behind_it() {
    let mut inputs = inputs(project(), &[POOL]);
    inputs.pool_addresses.insert(("t".into(), "vllm".into()), vec!["10.0.0.7".into(), "fd00::2".into()]);
    let plan = run(&inputs);
    let config = plan.config.as_ref().expect("a write").secrets.primary.data.clone().expect("data");
    let text = String::from_utf8(config["config.json"].0.clone()).expect("utf-8");
    let config: GatewayConfig = serde_json::from_str(&text).expect("the configuration");
    let pool = &config.providers["t/pool"];
    assert_eq!(pool.pods, ["http://10.0.0.7:8000/v1", "http://[fd00::2]:8000/v1"]);
    assert!(config.endpoints.contains_key("self-hosted"));

    // No ready pod: a pool without pods, the Endpoint still in the configuration.
    let plan = run(&self::inputs(project(), &[POOL]));
    assert_eq!(served(&plan).0, vec!["good", "self-hosted"]);
}

#[test]
fn keys_arriving_counts_keys_new_to_the_report_and_generated_keys_without_their_secret() {
    let generated = |name: &str| {
        format!(
            r#"{{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{{"name":"{name}","namespace":"t"}},"spec":{{}}}}"#
        )
    };
    let with_secret = format!(
        "{}\n---\n{}",
        generated("made"),
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"sluice-key-made","namespace":"t"},"stringData":{"key":"sl_p_abcdef0123456789abcdef0123"}}"#
    );
    let (waiting, made) = (generated("waiting"), with_secret.as_str());
    let mut inputs = inputs(project(), &[&waiting, made]);
    let first = run(&inputs).report.expect("a report");
    assert_eq!(first.keys_arriving, 3, "with no report before, every key is arriving");
    assert_eq!(served(&run(&inputs)).1, ["made", "ok"]);

    inputs.previous = Some(Arc::new(first));
    let second = run(&inputs).report.expect("a report");
    assert_eq!(second.keys_arriving, 1, "only the generated key still without its Secret");
    assert!(!second.importing());
}
