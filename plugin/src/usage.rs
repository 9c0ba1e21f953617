//! `usage`: what the project's keys used. By default from the usage ConfigMap the gateway
//! replicas report into (per key and budget period, summed over replicas: the figures the
//! operator turns into `ApiKey.status.currentPeriodSpendUsd`); with `--key`, from the gateway's
//! `GET /<project>/v1/usage`, by key, endpoint and model.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_crds::api::{BudgetPeriod, Endpoint};

use crate::cli::{UsageArgs, UsagePeriod};
use crate::cluster::Cluster;
use crate::keys::dollars;
use crate::output::Report;
use crate::probe::error_message;
use crate::table::Table;

/// The fields of a gateway pod's report (`<pod>.json`) that this reads; others are ignored,
/// as the operator ignores them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodReport {
    #[serde(default)]
    keys: BTreeMap<String, KeyUsage>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(rename_all = "camelCase")]
struct KeyUsage {
    period: String,
    #[serde(default)]
    spend_usd: f64,
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// One key's usage in one period, summed over the replicas that reported it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPeriodUsage {
    /// The ApiKey's name.
    pub key: String,
    /// `daily:YYYY-MM-DD`, `monthly:YYYY-MM` or `total`.
    pub period: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub spend_usd: f64,
    /// How many replicas reported this key.
    pub replicas: u32,
}

/// Shows usage as `args` asks.
pub async fn show(cluster: &Cluster, args: UsageArgs) -> anyhow::Result<Report> {
    match &args.key {
        Some(key) => from_gateway(cluster, &args, key).await,
        None => from_reports(cluster, &args).await,
    }
}

async fn from_reports(cluster: &Cluster, args: &UsageArgs) -> anyhow::Result<Report> {
    if args.period == UsagePeriod::Previous {
        bail!("--period previous needs --key: the replicas report only the periods they are in");
    }
    let slug = cluster.project().await?.spec.slug;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &args.dataplane_namespace);
    let selector = format!("sluice.dev/project={slug},app.kubernetes.io/component=usage");
    let found = maps.list(&ListParams::default().labels(&selector)).await.with_context(|| {
        format!(
            "reading the usage ConfigMap of project {slug} in namespace {} (--dataplane-namespace; or ask the gateway \
             with --key)",
            args.dataplane_namespace
        )
    })?;
    let reports: Vec<String> =
        found.items.into_iter().flat_map(|map| map.data.unwrap_or_default().into_values()).collect();
    let current = match args.period {
        UsagePeriod::All => None,
        _ => Some(current_periods(Timestamp::now())),
    };
    let rows = sum_reports(&reports, &cluster.namespace, current.as_ref(), args.name.as_deref());
    let mut table =
        Table::new(&["key", "period", "requests", "prompt tokens", "completion tokens", "spend", "replicas"]);
    for row in &rows {
        table.push(vec![
            row.key.clone(),
            row.period.clone(),
            row.requests.to_string(),
            row.prompt_tokens.to_string(),
            row.completion_tokens.to_string(),
            dollars(row.spend_usd),
            row.replicas.to_string(),
        ]);
    }
    let text = if table.is_empty() { format!("No usage reported for project {slug} yet.\n") } else { table.render() };
    Ok(Report { text, value: json!({"project": slug, "namespace": cluster.namespace, "items": rows}) })
}

/// The ids of the periods `now` is in, one per budget period kind.
pub fn current_periods(now: Timestamp) -> BTreeSet<String> {
    [BudgetPeriod::Daily, BudgetPeriod::Monthly, BudgetPeriod::Total].into_iter().map(|p| p.period_id(now)).collect()
}

/// Sums the pods' reports (`<pod>.json` texts) per key of `namespace` and period, keeping only
/// `periods` when given and key `only` when given. Unreadable reports are skipped, as the
/// operator skips them.
pub fn sum_reports(
    reports: &[String],
    namespace: &str,
    periods: Option<&BTreeSet<String>>,
    only: Option<&str>,
) -> Vec<KeyPeriodUsage> {
    let mut sums: BTreeMap<(String, String), KeyPeriodUsage> = BTreeMap::new();
    for text in reports {
        let Ok(report) = serde_json::from_str::<PodReport>(text) else { continue };
        for (id, usage) in report.keys {
            let Some(name) = id.strip_prefix(namespace).and_then(|rest| rest.strip_prefix('/')) else { continue };
            if only.is_some_and(|only| only != name) || periods.is_some_and(|p| !p.contains(&usage.period)) {
                continue;
            }
            let sum = sums.entry((name.to_owned(), usage.period.clone())).or_insert_with(|| KeyPeriodUsage {
                key: name.to_owned(),
                period: usage.period.clone(),
                ..KeyPeriodUsage::default()
            });
            sum.requests += usage.requests;
            sum.prompt_tokens += usage.prompt_tokens;
            sum.completion_tokens += usage.completion_tokens;
            sum.spend_usd += usage.spend_usd;
            sum.replicas += 1;
        }
    }
    sums.into_values().collect()
}

async fn from_gateway(cluster: &Cluster, args: &UsageArgs, key: &str) -> anyhow::Result<Report> {
    if args.period == UsagePeriod::All {
        bail!("--period all is for the replicas' reports: the gateway keeps the current and the previous month");
    }
    let slug = cluster.project().await?.spec.slug;
    let base = match &args.url {
        Some(base) => format!("{}/{slug}", base.trim_end_matches('/')),
        None => project_url_from_endpoints(cluster, &slug).await?,
    };
    let which = if args.period == UsagePeriod::Previous { "previous" } else { "current" };
    let url = format!("{base}/v1/usage?period={which}");
    let response =
        reqwest::Client::new().get(&url).bearer_auth(key).send().await.with_context(|| format!("asking {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("the gateway answered {status}: {}", error_message(&text));
    }
    let body: Value = serde_json::from_str(&text).context("the gateway's usage answer")?;
    Ok(Report { text: gateway_table(&body, &cluster.namespace), value: body })
}

/// The project's base URL (`.../<project>`), from any Endpoint's `status.url`
/// (`.../<project>/<endpoint>/v1`).
async fn project_url_from_endpoints(cluster: &Cluster, slug: &str) -> anyhow::Result<String> {
    let endpoints = cluster.api::<Endpoint>().list(&ListParams::default()).await.context("listing Endpoints")?;
    endpoints
        .items
        .iter()
        .find_map(|e| {
            let url = e.status.as_ref()?.url.as_deref()?;
            url.strip_suffix(&format!("/{}/v1", e.spec.slug)).filter(|base| base.ends_with(&format!("/{slug}")))
        })
        .map(str::to_owned)
        .context("no Endpoint has a status.url yet: pass the gateway's address with --url")
}

/// The gateway's `data` rows as a table: key (its name within `namespace`), endpoint, model.
pub fn gateway_table(body: &Value, namespace: &str) -> String {
    let mut table = Table::new(&["key", "endpoint", "model", "requests", "input tokens", "output tokens", "cost"]);
    let number = |v: &Value| v.as_u64().map(|n| n.to_string()).unwrap_or_default();
    for row in body["data"].as_array().into_iter().flatten() {
        let id = row["key_id"].as_str().unwrap_or_default();
        let key = id.strip_prefix(namespace).and_then(|r| r.strip_prefix('/')).unwrap_or(id);
        table.push(vec![
            key.to_owned(),
            row["endpoint"].as_str().unwrap_or_default().to_owned(),
            row["model"].as_str().unwrap_or_default().to_owned(),
            number(&row["requests"]),
            number(&row["input_tokens"]),
            number(&row["output_tokens"]),
            row["cost_usd"].as_f64().map(dollars).unwrap_or_default(),
        ]);
    }
    let period = body["period"]["id"].as_str().unwrap_or("?");
    let scope = body["scope"].as_str().unwrap_or("?");
    if table.is_empty() {
        return format!("No usage in {period} (scope: {scope}).\n");
    }
    format!("Period {period} (scope: {scope})\n{}", table.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(pod: &str, entries: &[(&str, &str, u64, f64)]) -> String {
        let keys: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(id, period, requests, spend)| {
                let usage = json!({"period": period, "spendUsd": spend, "requests": requests,
                    "promptTokens": requests * 10, "completionTokens": requests * 4, "byModel": {"future": 1}});
                ((*id).to_owned(), usage)
            })
            .collect();
        json!({"pod": pod, "reportedAt": "2026-03-05T00:00:00Z", "keys": keys}).to_string()
    }

    #[test]
    fn reports_sum_over_pods_per_key_and_period_of_the_namespace() {
        let reports = [
            report("gw-0", &[("team-a/ci", "monthly:2026-03", 2, 0.5), ("team-a/web", "daily:2026-03-05", 1, 0.1)]),
            report("gw-1", &[("team-a/ci", "monthly:2026-03", 3, 0.25), ("team-b/ci", "monthly:2026-03", 9, 9.0)]),
            report("gw-2", &[("team-a/ci", "monthly:2026-02", 7, 1.0)]),
            "not json".to_owned(),
        ];
        let current = current_periods("2026-03-05T12:00:00Z".parse().expect("time"));
        let rows = sum_reports(&reports, "team-a", Some(&current), None);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            rows[0],
            KeyPeriodUsage {
                key: "ci".into(),
                period: "monthly:2026-03".into(),
                requests: 5,
                prompt_tokens: 50,
                completion_tokens: 20,
                spend_usd: 0.75,
                replicas: 2
            }
        );
        assert_eq!((rows[1].key.as_str(), rows[1].requests), ("web", 1));
        let all = sum_reports(&reports, "team-a", None, Some("ci"));
        assert_eq!(
            all.iter().map(|r| (r.period.as_str(), r.requests)).collect::<Vec<_>>(),
            [("monthly:2026-02", 7), ("monthly:2026-03", 5)]
        );
        assert!(sum_reports(&reports, "team", None, None).is_empty(), "a namespace prefix is not a match");
    }

    #[test]
    fn gateway_rows_show_key_endpoint_and_model() {
        let body = json!({"scope": "replica", "period": {"id": "2026-03"}, "data": [
            {"key_id": "team-a/ci", "endpoint": "chat", "model": "m", "requests": 2, "input_tokens": 24,
             "output_tokens": 16, "cost_usd": 0.000056}
        ]});
        assert_eq!(
            gateway_table(&body, "team-a"),
            "Period 2026-03 (scope: replica)\n\
             KEY  ENDPOINT  MODEL  REQUESTS  INPUT TOKENS  OUTPUT TOKENS  COST\n\
             ci   chat      m      2         24            16             $0.000056\n"
        );
        assert_eq!(gateway_table(&json!({"data": []}), "x"), "No usage in ? (scope: ?).\n");
    }
}
