//! Usage reports for the operator: each gateway pod writes what every key used in its current
//! period into its own data key of the project's usage ConfigMap (server-side apply, one field
//! manager per pod, so replicas never overwrite each other). The operator sums them into
//! `ApiKey.status.currentPeriodSpendUsd`; the gateway reads the other pods' entries back so a
//! budget holds across replicas, and its own entry after a restart so nothing is forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::{Deserialize, Serialize};
use sluice_crds::api::BudgetPeriod;

use crate::Gateway;
use crate::limits::{PeriodTotals, budget_period, period_id};
use crate::snapshot::{Key, Snapshot};

/// One pod's report, the value of its `<pod>.json` data key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The pod that wrote it.
    pub pod: String,
    /// When.
    pub reported_at: Timestamp,
    /// Usage by ApiKey id (`<namespace>/<name>`).
    pub keys: BTreeMap<String, KeyUsage>,
}

/// One key's usage in one period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    /// `daily:YYYY-MM-DD`, `monthly:YYYY-MM` or `total`.
    pub period: String,
    /// US dollars.
    pub spend_usd: f64,
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Largest report one pod writes: a ConfigMap holds 1 MiB, shared by every replica's entry.
pub const MAX_REPORT_BYTES: usize = 200 * 1024;

/// Keeps a report under [`MAX_REPORT_BYTES`]: keys with a budget first (their spend is
/// enforced across replicas), then the biggest spenders. Returns how many keys were left out.
pub fn fit(usage: &mut BTreeMap<String, KeyUsage>, budgeted: &dyn Fn(&str) -> bool) -> usize {
    // About what one entry takes in the JSON, with a margin.
    let size = |id: &str, u: &KeyUsage| id.len() + u.period.len() + 130;
    let total: usize = usage.iter().map(|(id, u)| size(id, u)).sum();
    if total <= MAX_REPORT_BYTES {
        return 0;
    }
    let mut ranked: Vec<(String, KeyUsage)> = std::mem::take(usage).into_iter().collect();
    ranked.sort_by(|(a, ua), (b, ub)| budgeted(b).cmp(&budgeted(a)).then(ub.spend_usd.total_cmp(&ua.spend_usd)));
    let mut used = 0;
    let mut left_out = 0;
    for (id, u) in ranked {
        let bytes = size(&id, &u);
        if used + bytes <= MAX_REPORT_BYTES {
            used += bytes;
            usage.insert(id, u);
        } else {
            left_out += 1;
        }
    }
    left_out
}

fn period_kind(key: &Key) -> BudgetPeriod {
    key.budget.as_ref().map_or(BudgetPeriod::Monthly, |b| b.period)
}

fn keys(snapshot: &Snapshot) -> impl Iterator<Item = &Key> {
    snapshot.projects.values().flat_map(|p| p.keys.iter())
}

/// What this process used, per key, in each key's current period.
pub fn local_usage(snapshot: &Snapshot, now: Timestamp) -> BTreeMap<String, KeyUsage> {
    keys(snapshot)
        .filter_map(|key| {
            let kind = period_kind(key);
            let totals = key.state.totals(budget_period(kind, now));
            (totals.requests > 0).then(|| {
                (
                    key.id.to_string(),
                    KeyUsage {
                        period: period_id(kind, now),
                        spend_usd: totals.spend_usd,
                        requests: totals.requests,
                        prompt_tokens: totals.prompt_tokens,
                        completion_tokens: totals.completion_tokens,
                    },
                )
            })
        })
        .collect()
}

/// Applies the other pods' reports: each key's current-period spend elsewhere.
pub fn apply_others(snapshot: &Snapshot, reports: &[Report], pod: &str, now: Timestamp) {
    for key in keys(snapshot) {
        let kind = period_kind(key);
        let current = period_id(kind, now);
        let elsewhere: f64 = reports
            .iter()
            .filter(|r| r.pod != pod)
            .filter_map(|r| r.keys.get(&*key.id))
            .filter(|u| u.period == current)
            .map(|u| u.spend_usd)
            .sum();
        key.state.set_spent_elsewhere(budget_period(kind, now), elsewhere);
    }
}

/// Restores this pod's own earlier report (a restarted container keeps its pod name).
pub fn restore_own(snapshot: &Snapshot, report: &Report, now: Timestamp) -> usize {
    let mut restored = 0;
    for key in keys(snapshot) {
        let kind = period_kind(key);
        if let Some(usage) = report.keys.get(&*key.id).filter(|u| u.period == period_id(kind, now)) {
            key.state.restore(PeriodTotals {
                period: budget_period(kind, now),
                spend_usd: usage.spend_usd,
                requests: usage.requests,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            });
            restored += 1;
        }
    }
    restored
}

fn parse_reports(config_map: &ConfigMap) -> Vec<Report> {
    config_map
        .data
        .iter()
        .flatten()
        .filter(|(name, _)| name.ends_with(".json"))
        .filter_map(|(name, text)| match serde_json::from_str::<Report>(text) {
            Ok(report) => Some(report),
            Err(error) => {
                tracing::warn!(entry = %name, %error, "ignoring an unreadable usage report");
                None
            }
        })
        .collect()
}

/// Writes this pod's report every `interval` when it changed, and reads the others'.
pub async fn run(
    gateway: Arc<Gateway>,
    client: kube::Client,
    namespace: String,
    name: String,
    pod: String,
    interval: Duration,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let field_manager = format!("sluice-gateway-{pod}");
    let entry = format!("{pod}.json");
    // Wait for a configuration, then pick up where a previous run of this pod left off.
    while gateway.snapshot().generation == 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match api.get_opt(&name).await {
        Ok(Some(config_map)) => {
            let reports = parse_reports(&config_map);
            if let Some(own) = reports.iter().find(|r| r.pod == pod) {
                let restored = restore_own(&gateway.snapshot(), own, Timestamp::now());
                tracing::info!(restored, "restored this pod's earlier usage");
            }
        }
        Ok(None) => tracing::warn!(namespace = %namespace, name = %name, "usage ConfigMap not found; will retry"),
        Err(error) => tracing::warn!(%error, "cannot read the usage ConfigMap; will retry"),
    }
    let mut last_written: Option<BTreeMap<String, KeyUsage>> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let snapshot = gateway.snapshot();
        let now = Timestamp::now();
        let mut usage = local_usage(&snapshot, now);
        let budgeted: std::collections::HashSet<String> =
            keys(&snapshot).filter(|k| k.budget.is_some()).map(|k| k.id.to_string()).collect();
        let left_out = fit(&mut usage, &|id| budgeted.contains(id));
        if left_out > 0 {
            tracing::warn!(
                left_out,
                "usage report too large for its ConfigMap; the smallest spenders without a budget are left out"
            );
        }
        if last_written.as_ref() != Some(&usage) {
            let report = Report { pod: pod.clone(), reported_at: now, keys: usage.clone() };
            let text = serde_json::to_string(&report).unwrap_or_default();
            let patch = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {entry.as_str(): text},
            });
            match api.patch(&name, &PatchParams::apply(&field_manager).force(), &Patch::Apply(&patch)).await {
                Ok(_) => last_written = Some(usage),
                Err(error) => tracing::warn!(%error, "writing the usage report failed; will retry"),
            }
        }
        match api.get_opt(&name).await {
            Ok(Some(config_map)) => apply_others(&snapshot, &parse_reports(&config_map), &pod, now),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "reading other pods' usage failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_reports_keep_budgeted_keys_and_big_spenders() {
        let entry = |spend: f64| KeyUsage {
            period: "monthly:2026-11".into(),
            spend_usd: spend,
            requests: 1,
            prompt_tokens: 1,
            completion_tokens: 1,
        };
        let mut usage: BTreeMap<String, KeyUsage> =
            (0..5_000).map(|i| (format!("team/key-{i:05}"), entry(f64::from(i)))).collect();
        let budgeted = |id: &str| id == "team/key-00000";
        let left_out = fit(&mut usage, &budgeted);
        assert!(left_out > 0 && left_out < 5_000, "{left_out}");
        assert!(usage.contains_key("team/key-00000"), "the budgeted key stays although it spent least");
        assert!(usage.contains_key("team/key-04999"), "the biggest spender stays");
        assert!(!usage.contains_key("team/key-00001"));
        let report = Report { pod: "p".into(), reported_at: Timestamp::UNIX_EPOCH, keys: usage };
        assert!(serde_json::to_string(&report).expect("json").len() <= MAX_REPORT_BYTES);
        let mut small: BTreeMap<String, KeyUsage> = [("a/b".to_owned(), entry(1.0))].into();
        assert_eq!(fit(&mut small, &budgeted), 0);
    }
}
