//! Usage reporting against a real apiserver: each Project gets a usage ConfigMap that its gateway
//! may write (flag, POD_NAME, Role rule); reports written as the gateway pods write them (one
//! server-side apply field manager per pod) become `ApiKey.status.currentPeriodSpendUsd`; the
//! operator's own applies never remove the pods' data keys; reports of gone pods go once their
//! periods ended; and a real `sluice-gateway` serving a request shows up in the key's status.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Gateway, World, describe, eventually, ready, secret_text};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sluice_crds::api::{ApiKey, BudgetPeriod};
use sluice_operator::usage::period_id;

const WAIT: Duration = Duration::from_secs(60);
/// How soon a report should show in the status.
const SOON: Duration = Duration::from_secs(10);

/// Writes `<pod>.json` as a gateway pod does: server-side apply, field manager
/// `sluice-gateway-<pod>`, forced, nothing but that data key.
async fn report(api: &Api<ConfigMap>, map: &str, pod: &str, text: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": map},
        "data": {format!("{pod}.json"): text},
    });
    api.patch(map, &PatchParams::apply(&format!("sluice-gateway-{pod}")).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// A report's JSON: `(apikey id, period, spend)` entries.
fn usage(pod: &str, entries: &[(&str, &str, f64)]) -> String {
    let keys: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(id, period, spend)| {
            let entry = serde_json::json!({
                "period": period, "spendUsd": spend, "requests": 3, "promptTokens": 30, "completionTokens": 12
            });
            ((*id).to_owned(), entry)
        })
        .collect();
    serde_json::json!({"pod": pod, "reportedAt": Timestamp::now().to_string(), "keys": keys}).to_string()
}

async fn spend(api: &Api<ApiKey>, name: &str) -> anyhow::Result<Option<f64>> {
    Ok(api.get(name).await?.status.and_then(|s| s.current_period_spend_usd))
}

/// Waits until ApiKey `name`'s reported spend is `expected`.
async fn spend_becomes(api: &Api<ApiKey>, name: &str, expected: Option<f64>) -> anyhow::Result<()> {
    eventually(&format!("{name}'s currentPeriodSpendUsd to be {expected:?}"), SOON, || async {
        let found = spend(api, name).await?;
        Ok(if found == expected { Ok(()) } else { Err(format!("{found:?}")) })
    })
    .await
}

fn data(map: &ConfigMap) -> BTreeMap<String, String> {
    map.data.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_project_gets_a_usage_config_map_its_gateway_may_write() -> anyhow::Result<()> {
    let world = World::start("usage-objects").await?;
    world.apply_simulated_tenant("metered").await?;
    let dp = world.dataplane.as_str();
    let maps: Api<ConfigMap> = world.api(dp);
    let map = eventually("the usage ConfigMap", WAIT, || async {
        Ok(maps.get_opt("sluice-usage-metered").await?.ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    let labels = map.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "sluice-operator");
    assert_eq!(labels["app.kubernetes.io/part-of"], "sluice");
    assert_eq!(labels["app.kubernetes.io/component"], "usage");
    assert_eq!(labels["sluice.dev/project"], "metered");
    let owner = map.metadata.annotations.clone().unwrap_or_default()["sluice.dev/owner"].clone();
    assert_eq!(owner, format!("{}/metered", world.tenant));
    assert!(map.data.is_none(), "the operator writes no data: {:?}", map.data);

    let deployment = eventually("the Deployment", WAIT, || async {
        Ok(world.api::<Deployment>(dp).get_opt("sluice-gw-metered").await?.ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("a pod template");
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert!(args.ends_with(&format!("--usage-configmap {dp}/sluice-usage-metered")), "{args}");
    let env = container.env.clone().unwrap_or_default();
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").expect("POD_NAME");
    let field = pod_name.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("from the downward API");
    assert_eq!(field.field_path, "metadata.name");

    let role = world.api::<Role>(dp).get("sluice-gw-metered").await?;
    let rule = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.resources.as_deref() == Some(&["configmaps".to_owned()][..]))
        .expect("a ConfigMap rule");
    assert_eq!(rule.resource_names.unwrap_or_default(), ["sluice-usage-metered"]);
    assert_eq!(rule.verbs, ["get", "patch"]);

    // The gateway's ServiceAccount may do what a pod does with exactly that Role.
    let service_account = format!("system:serviceaccount:{dp}:sluice-gw-metered");
    let as_gateway = world.env.client_as(&service_account, &["system:serviceaccounts"])?;
    let gateway_maps: Api<ConfigMap> = Api::namespaced(as_gateway, dp);
    report(&gateway_maps, "sluice-usage-metered", "gw-0", &usage("gw-0", &[])).await?;
    gateway_maps.get("sluice-usage-metered").await?;
    Ok(())
}

#[tokio::test]
async fn apikey_status_sums_the_current_period_over_every_pod() -> anyhow::Result<()> {
    // Spend-only status writes spaced by 2 s rather than 30: the test sees each step soon.
    let world = World::start_with("usage-spend", |s| s.spend_status_interval = Duration::from_secs(2)).await?;
    world.apply_simulated_tenant("spend").await?;
    world
        .apply(
            "apiVersion: sluice.dev/v1alpha1
kind: ApiKey
metadata: {name: app}
spec: {}
---
apiVersion: sluice.dev/v1alpha1
kind: ApiKey
metadata: {name: daily}
spec: {budget: {limitUsd: 10, period: daily}}
",
        )
        .await?;
    let keys: Api<ApiKey> = world.api(&world.tenant);
    let conditions = |k: &ApiKey| k.status.clone().map(|s| s.conditions).unwrap_or_default();
    let before = ready(&keys, "app", conditions).await?.status.unwrap_or_default();
    ready(&keys, "daily", conditions).await?;
    let dp = world.dataplane.as_str();
    let maps: Api<ConfigMap> = world.api(dp);
    let name = "sluice-usage-spend";
    eventually("the usage ConfigMap", WAIT, || async {
        Ok(maps.get_opt(name).await?.map(drop).ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    // A live gateway pod (no kubelet here: the Pod object is what counts).
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gw-live", "labels": {"app.kubernetes.io/name": "sluice-gateway", "sluice.dev/project": "spend"}},
        "spec": {"containers": [{"name": "gateway", "image": "sluice-gateway:test"}]},
    }))?;
    world.api::<Pod>(dp).create(&PostParams::default(), &pod).await?;

    let now = Timestamp::now();
    let (monthly, daily) = (period_id(BudgetPeriod::Monthly, now), period_id(BudgetPeriod::Daily, now));
    let (app, daily_key) = (format!("{}/app", world.tenant), format!("{}/daily", world.tenant));
    report(&maps, name, "gw-a", &usage("gw-a", &[(&app, &monthly, 1.25), (&daily_key, &daily, 0.5)])).await?;
    report(
        &maps,
        name,
        "gw-b",
        &usage("gw-b", &[(&app, &monthly, 0.000_000_3), (&daily_key, "daily:2001-01-01", 9.0)]),
    )
    .await?;
    // Ended periods: a gone pod's and a live pod's; and a report nobody can read.
    report(&maps, name, "gw-gone", &usage("gw-gone", &[(&app, "monthly:2000-01", 40.0)])).await?;
    report(&maps, name, "gw-live", &usage("gw-live", &[(&app, "monthly:2000-02", 7.0)])).await?;
    report(&maps, name, "gw-bad", "{\"pod\": \"gw-bad\", \"keys\": [").await?;

    spend_becomes(&keys, "app", Some(1.25)).await?;
    spend_becomes(&keys, "daily", Some(0.5)).await?;
    // Nothing else in the status moved.
    let after = keys.get("app").await?.status.unwrap_or_default();
    assert_eq!(after.conditions, before.conditions, "{}", describe(&after.conditions));
    assert_eq!(
        (after.key_prefix, after.secret_name, after.issued_at),
        (before.key_prefix, before.secret_name, before.issued_at)
    );

    // The gone pod's report goes; the live pod's and the unreadable one stay.
    eventually("the gone pod's report to be removed", SOON, || async {
        let keys: Vec<String> = data(&maps.get(name).await?).into_keys().collect();
        Ok(if keys == ["gw-a.json", "gw-b.json", "gw-bad.json", "gw-live.json"] {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        })
    })
    .await?;

    // Drift in the operator's part: it applies the ConfigMap again, and the reports stay as written.
    let written = data(&maps.get(name).await?);
    let drift = serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/part-of": "elsewhere"}}});
    maps.patch(name, &PatchParams::default(), &Patch::Merge(&drift)).await?;
    let repaired = eventually("the operator to apply the ConfigMap again", WAIT, || async {
        let map = maps.get(name).await?;
        let part_of = map.metadata.labels.clone().unwrap_or_default().get("app.kubernetes.io/part-of").cloned();
        Ok(if part_of.as_deref() == Some("sluice") { Ok(map) } else { Err(format!("part-of {part_of:?}")) })
    })
    .await?;
    assert_eq!(data(&repaired), written);
    let managers: Vec<String> =
        repaired.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    for pod in ["gw-a", "gw-b", "gw-live"] {
        assert!(managers.contains(&format!("sluice-gateway-{pod}")), "{managers:?}");
    }

    // A pod whose period has nothing left: its share goes, and a key nobody reports has no spend.
    report(&maps, name, "gw-a", &usage("gw-a", &[])).await?;
    spend_becomes(&keys, "app", Some(0.0)).await?;
    spend_becomes(&keys, "daily", None).await?;
    assert!(keys.get("daily").await?.status.is_some_and(|s| !s.conditions.is_empty()));
    Ok(())
}

#[tokio::test]
async fn a_live_gateways_spend_reaches_the_apikey_status() -> anyhow::Result<()> {
    let world = World::start("usage-live").await?;
    world.apply_simulated_tenant("live").await?;
    // The simulated model at list prices, so a request costs something.
    world
        .apply(
            "apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {name: sim}
spec:
  type: simulated
  models: [{name: sim-chat, pricing: {inputPerMillion: 1000, outputPerMillion: 2000}}]
  simulation: {prefillOverheadMs: 1, interTokenMs: 1, outputTokens: 4, seed: 7}
---
apiVersion: sluice.dev/v1alpha1
kind: ApiKey
metadata: {name: caller}
spec: {}
",
        )
        .await?;
    let secrets: Api<Secret> = world.api(&world.tenant);
    let key = eventually("the key", WAIT, || async {
        Ok(secrets
            .get_opt("sluice-key-caller")
            .await?
            .and_then(|s| secret_text(&s, "key"))
            .ok_or_else(|| "no key".to_owned()))
    })
    .await?;
    eventually("the priced key in the configuration", WAIT, || async {
        let config = world.config("live").await?;
        let priced = config.as_ref().is_some_and(|c| {
            c.keys.len() == 1 && serde_json::to_string(&c.providers).unwrap_or_default().contains("1000")
        });
        Ok(if priced { Ok(()) } else { Err("not yet".to_owned()) })
    })
    .await?;

    let dp = &world.dataplane;
    let extra = [
        "--usage-configmap".to_owned(),
        format!("{dp}/sluice-usage-live"),
        "--pod-name".to_owned(),
        "gw-live-0".to_owned(),
        "--usage-report-seconds".to_owned(),
        "1".to_owned(),
    ];
    let gateway = Gateway::start_with(world.env, &format!("{dp}/sluice-config-live"), &extra).await?;
    let response = reqwest::Client::new()
        .post(format!("{}/live/chat/v1/chat/completions", gateway.base))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "assistant", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
        .send()
        .await?;
    assert!(response.status().is_success(), "{}: {}", response.status(), gateway.log_tail());

    let keys: Api<ApiKey> = world.api(&world.tenant);
    let spent = eventually("the gateway's report in the ApiKey's status", SOON, || async {
        Ok(match spend(&keys, "caller").await? {
            Some(spent) if spent > 0.0 => Ok(spent),
            other => Err(format!("{other:?}; gateway log:\n{}", gateway.log_tail())),
        })
    })
    .await?;
    let map = world.api::<ConfigMap>(dp).get("sluice-usage-live").await?;
    let report: serde_json::Value = serde_json::from_str(&data(&map)["gw-live-0.json"])?;
    let entry = &report["keys"][format!("{}/caller", world.tenant)];
    assert_eq!(entry["period"], period_id(BudgetPeriod::Monthly, Timestamp::now()));
    let reported = entry["spendUsd"].as_f64().expect("spendUsd");
    assert_eq!((reported * 1e6).round() / 1e6, spent, "{report}");
    assert_eq!(entry["requests"], 1);
    Ok(())
}
