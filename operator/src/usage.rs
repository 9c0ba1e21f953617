//! Usage reported by the gateway pods, summed into `ApiKey.status.currentPeriodSpendUsd`.
//!
//! Each pod of a project's gateway server-side applies one data key, `<pod>.json`, into the
//! project's usage ConfigMap: what every key it served spent in the key's current budget period.
//! [`UsageIndex`] keeps those reports parsed, by key, and tells which keys' entries changed; an
//! ApiKey's spend is the sum over all pods of the entries for the period the operator's clock is
//! in. [`follow`] feeds the index from the ConfigMap watch, nudges the ApiKeys whose entries
//! changed, and removes the reports of pods that are gone once every period in them has ended.
//! [`key_budgets`] gives the same sums, beside each budget, to the metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use sluice_crds::api::{ApiKey, BudgetPeriod};

use crate::cache::fingerprint;
use crate::context::Context;
use crate::labels::FIELD_MANAGER;
use crate::metrics::{KeyBudget, KeyBudgets};

/// Suffix of a pod's data key in the usage ConfigMap.
pub const REPORT_SUFFIX: &str = ".json";
/// How often every usage ConfigMap is checked for reports to remove, besides on each change.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The budget period an ApiKey's spend is counted over: its budget's, monthly without one.
pub fn key_period(apikey: &ApiKey) -> BudgetPeriod {
    apikey.spec.budget.as_ref().map_or(BudgetPeriod::Monthly, |b| b.period)
}

/// The id of the period `now` is in (UTC): `daily:YYYY-MM-DD`, `monthly:YYYY-MM` or `total`,
/// defined once in sluice-crds so the gateway's reports and this reader agree.
pub fn period_id(period: BudgetPeriod, now: Timestamp) -> String {
    period.period_id(now)
}

/// When the period `now` is in ends; `None` for `total`, which never does.
pub fn period_end(period: BudgetPeriod, now: Timestamp) -> Option<Timestamp> {
    let date = now.to_zoned(TimeZone::UTC).date();
    let next = match period {
        BudgetPeriod::Daily => date.tomorrow().ok()?,
        BudgetPeriod::Monthly => date.first_of_month().checked_add(jiff::Span::new().months(1)).ok()?,
        BudgetPeriod::Total => return None,
    };
    start_of(next)
}

/// When the period with id `id` ends; `None` for `total` and for ids this operator does not
/// know (which therefore never end).
pub fn id_end(id: &str) -> Option<Timestamp> {
    if let Some(day) = id.strip_prefix("daily:") {
        return start_of(strict_date(day)?.tomorrow().ok()?);
    }
    let month = id.strip_prefix("monthly:")?;
    let first = strict_date(&format!("{month}-01"))?;
    start_of(first.checked_add(jiff::Span::new().months(1)).ok()?)
}

/// `YYYY-MM-DD` exactly, as period ids write it.
fn strict_date(text: &str) -> Option<Date> {
    let date: Date = text.parse().ok()?;
    (format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()) == text).then_some(date)
}

fn start_of(date: Date) -> Option<Timestamp> {
    date.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// One key's usage in one period, as a pod reports it. Unknown fields are accepted: the gateway
/// may report more than the operator reads.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    /// The period id (see [`period_id`]).
    pub period: String,
    /// US dollars spent in the period.
    pub spend_usd: f64,
    /// Requests in the period.
    #[serde(default)]
    pub requests: u64,
    /// Prompt tokens in the period.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens in the period.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// One pod's report: its usable entries by ApiKey id (`<namespace>/<name>`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodReport {
    /// The pod that wrote it.
    pub pod: String,
    /// Usage by ApiKey id.
    pub keys: BTreeMap<String, KeyUsage>,
}

/// The envelope of a report; entries are parsed one by one so one bad entry costs only itself.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReport {
    pod: String,
    #[allow(dead_code)] // Required by the contract; the operator's clock decides periods.
    reported_at: Timestamp,
    keys: BTreeMap<String, serde_json::Value>,
}

/// Parses the value of data key `data_key`. `Err` when the report as a whole is unusable;
/// otherwise the report and a problem line for each entry left out.
pub fn parse_report(data_key: &str, text: &str) -> Result<(PodReport, Vec<String>), String> {
    let pod = data_key.strip_suffix(REPORT_SUFFIX).filter(|p| !p.is_empty()).ok_or("not a <pod>.json key")?;
    let raw: RawReport = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if raw.pod != pod {
        return Err(format!("written for pod {:?}", raw.pod));
    }
    let mut report = PodReport { pod: raw.pod, keys: BTreeMap::new() };
    let mut problems = Vec::new();
    for (id, value) in raw.keys {
        match serde_json::from_value::<KeyUsage>(value) {
            Ok(usage) if usage.spend_usd.is_finite() && usage.spend_usd >= 0.0 && id.contains('/') => {
                report.keys.insert(id, usage);
            }
            Ok(_) => problems.push(format!("{id}: not a <namespace>/<name> id with a finite, non-negative spendUsd")),
            Err(err) => problems.push(format!("{id}: {err}")),
        }
    }
    Ok((report, problems))
}

/// The spend of the entries for `period`, rounded to 6 decimals; `None` when none is for it.
pub fn sum_spend<'a>(entries: impl IntoIterator<Item = &'a KeyUsage>, period: &str) -> Option<f64> {
    let mut matching = entries.into_iter().filter(|u| u.period == period).peekable();
    matching.peek()?;
    let sum: f64 = matching.map(|u| u.spend_usd).sum();
    Some((sum * 1e6).round() / 1e6)
}

/// Every ApiKey of `apikeys` that has a budget (of more than nothing: a zero budget has no
/// share to alert on), with what the pods reported it spent in the period `now` is in.
pub fn key_budgets<'a>(
    apikeys: impl IntoIterator<Item = &'a ApiKey>,
    usage: &UsageIndex,
    now: Timestamp,
) -> Vec<KeyBudget> {
    apikeys
        .into_iter()
        .filter_map(|apikey| {
            let budget = apikey.spec.budget.as_ref().filter(|b| b.limit_usd > 0.0)?;
            let key_id = format!("{}/{}", apikey.namespace()?, apikey.name_any());
            let spend_usd = usage.spend(&key_id, &period_id(budget.period, now)).unwrap_or(0.0);
            Some(KeyBudget { key_id, limit_usd: budget.limit_usd, spend_usd })
        })
        .collect()
}

impl KeyBudgets for Context {
    fn key_budgets(&self) -> Vec<KeyBudget> {
        let apikeys = self.caches.apikeys.state();
        key_budgets(apikeys.iter().map(AsRef::as_ref), &self.usage, Timestamp::now())
    }
}

/// Whether every entry of `report` is for a period that ended before `now` (true for none).
pub fn all_ended(report: &PodReport, now: Timestamp) -> bool {
    report.keys.values().all(|u| id_end(&u.period).is_some_and(|end| end <= now))
}

/// A data key as last seen: a fingerprint of its text, and the report when it parsed.
#[derive(Clone, Debug)]
struct Seen {
    text: u64,
    report: Option<PodReport>,
}

#[derive(Debug, Default)]
struct IndexState {
    /// By ConfigMap name, then data key.
    maps: HashMap<String, BTreeMap<String, Seen>>,
    /// By ApiKey id: its entries by (ConfigMap, data key).
    by_key: HashMap<String, BTreeMap<(String, String), KeyUsage>>,
}

/// What an update of the index found.
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    /// ApiKey ids with an entry added, changed or removed.
    pub changed: BTreeSet<String>,
    /// Reports or entries left out, each `<data key>: <why>`.
    pub problems: Vec<String>,
}

/// Every pod's reported usage, by ApiKey, across the usage ConfigMaps.
#[derive(Debug, Default)]
pub struct UsageIndex {
    state: RwLock<IndexState>,
}

impl UsageIndex {
    /// Takes in the current data of ConfigMap `name` (empty when it is gone). Data keys whose
    /// text did not change are not parsed again.
    pub fn update(&self, name: &str, data: &BTreeMap<String, String>) -> Update {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let old = state.maps.remove(name).unwrap_or_default();
        let mut update = Update::default();
        let mut new = BTreeMap::new();
        for (data_key, text) in data {
            let text_print = fingerprint(text);
            let seen = match old.get(data_key) {
                Some(seen) if seen.text == text_print => seen.clone(),
                _ => {
                    let report = match parse_report(data_key, text) {
                        Ok((report, problems)) => {
                            update.problems.extend(problems.into_iter().map(|p| format!("{data_key}: {p}")));
                            Some(report)
                        }
                        Err(problem) => {
                            update.problems.push(format!("{data_key}: {problem}"));
                            None
                        }
                    };
                    Seen { text: text_print, report }
                }
            };
            new.insert(data_key.clone(), seen);
        }
        let entries = |seen: Option<&Seen>| -> BTreeMap<String, KeyUsage> {
            seen.and_then(|s| s.report.as_ref()).map(|r| r.keys.clone()).unwrap_or_default()
        };
        let data_keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for data_key in data_keys {
            let (before, after) = (entries(old.get(data_key)), entries(new.get(data_key)));
            let ids: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for id in ids {
                let now = after.get(id);
                if before.get(id) == now {
                    continue;
                }
                update.changed.insert(id.clone());
                let source = (name.to_owned(), data_key.clone());
                match now {
                    Some(usage) => {
                        state.by_key.entry(id.clone()).or_default().insert(source, usage.clone());
                    }
                    None => {
                        if let Some(sources) = state.by_key.get_mut(id) {
                            sources.remove(&source);
                            if sources.is_empty() {
                                state.by_key.remove(id);
                            }
                        }
                    }
                }
            }
        }
        if !new.is_empty() {
            state.maps.insert(name.to_owned(), new);
        }
        update
    }

    /// ApiKey `id`'s spend in `period` over every pod; `None` when no pod reported that period.
    pub fn spend(&self, id: &str, period: &str) -> Option<f64> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        sum_spend(state.by_key.get(id)?.values(), period)
    }

    /// Whether any pod reported ApiKey `id`, for any period.
    pub fn has_entries(&self, id: &str) -> bool {
        self.state.read().unwrap_or_else(PoisonError::into_inner).by_key.contains_key(id)
    }

    /// Data keys of ConfigMap `name` that may go: reports of pods that are not `alive` whose
    /// every entry is for a period that ended. Unparseable reports stay (someone may want to read
    /// them).
    pub fn prunable(&self, name: &str, now: Timestamp, alive: impl Fn(&str) -> bool) -> Vec<String> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let Some(reports) = state.maps.get(name) else { return Vec::new() };
        reports
            .iter()
            .filter_map(|(data_key, seen)| seen.report.as_ref().map(|r| (data_key, r)))
            .filter(|(_, report)| !alive(&report.pod) && all_ended(report, now))
            .map(|(data_key, _)| data_key.clone())
            .collect()
    }
}

/// Keeps [`Context::usage`] in step with the usage ConfigMaps: `changes` names ConfigMaps that
/// were touched (their current state is read from the cache), and every ApiKey whose entries
/// changed is sent to `nudge`. Runs until `changes` ends.
pub async fn follow(
    ctx: Arc<Context>,
    changes: impl Stream<Item = Arc<ConfigMap>> + Send,
    nudge: mpsc::UnboundedSender<ObjectRef<ApiKey>>,
) {
    let namespace = ctx.settings.dataplane_namespace.clone();
    let mut changes = std::pin::pin!(changes);
    let mut sweep = tokio::time::interval(PRUNE_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            touched = changes.next() => {
                let Some(touched) = touched else { return };
                let name = touched.name_any();
                let current = ctx.caches.usage_config_maps.get(&ObjectRef::new(&name).within(&namespace));
                let data = current.as_ref().and_then(|c| c.data.clone()).unwrap_or_default();
                let update = ctx.usage.update(&name, &data);
                for problem in &update.problems {
                    tracing::warn!(config_map = %name, problem, "ignoring a usage report entry");
                }
                for id in update.changed {
                    if let Some((key_namespace, key_name)) = id.split_once('/') {
                        // A closed receiver means the ApiKey controller stopped, and so does the operator.
                        let _ = nudge.unbounded_send(ObjectRef::new(key_name).within(key_namespace));
                    }
                }
                if let Some(current) = current {
                    prune(&ctx, &current).await;
                }
            }
            _ = sweep.tick() => {
                for config_map in ctx.caches.usage_config_maps.state() {
                    prune(&ctx, &config_map).await;
                }
            }
        }
    }
}

/// Removes the reports of gone pods whose periods all ended, at the resourceVersion they were
/// read at (a pod writing meanwhile wins). Failures are logged and retried on the next change or
/// sweep.
async fn prune(ctx: &Context, config_map: &ConfigMap) {
    let name = config_map.name_any();
    let alive = |pod: &str| {
        ctx.caches.gateway_pods.get(&ObjectRef::new(pod).within(&ctx.settings.dataplane_namespace)).is_some()
    };
    let stale = ctx.usage.prunable(&name, Timestamp::now(), alive);
    let Some(version) = config_map.meta().resource_version.clone().filter(|_| !stale.is_empty()) else { return };
    // A resourceVersion in a merge patch is a precondition: a pod that wrote meanwhile wins (409).
    let removals: serde_json::Map<String, serde_json::Value> =
        stale.iter().map(|key| (key.clone(), serde_json::Value::Null)).collect();
    let patch = serde_json::json!({"metadata": {"resourceVersion": version}, "data": removals});
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.dataplane_namespace);
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    match api.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(config_map = %name, reports = ?stale, "removed usage reports of gone pods"),
        // A pod wrote meanwhile: the next change looks again.
        Err(err) if crate::context::is_conflict(&err) => {
            tracing::debug!(config_map = %name, "usage reports not pruned this time: the ConfigMap changed");
        }
        Err(err) => tracing::warn!(config_map = %name, error = %err, "could not remove usage reports of gone pods"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn report(pod: &str, keys: &[(&str, &str, f64)]) -> String {
        let keys: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|(id, period, spend)| {
                let usage = serde_json::json!({
                    "period": period, "spendUsd": spend, "requests": 1, "promptTokens": 10, "completionTokens": 5
                });
                ((*id).to_owned(), usage)
            })
            .collect();
        serde_json::json!({"pod": pod, "reportedAt": "2026-03-14T10:00:00Z", "keys": keys}).to_string()
    }

    fn data(entries: &[(&str, String)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn period_ids_and_ends_follow_the_utc_calendar() {
        let now = at("2026-12-31T23:59:59.9Z");
        assert_eq!(period_id(BudgetPeriod::Daily, now), "daily:2026-12-31");
        assert_eq!(period_id(BudgetPeriod::Monthly, now), "monthly:2026-12");
        assert_eq!(period_id(BudgetPeriod::Total, now), "total");
        assert_eq!(period_end(BudgetPeriod::Daily, now), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(period_end(BudgetPeriod::Monthly, now), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(period_end(BudgetPeriod::Total, now), None);
        // An instant belongs to the period it starts.
        let midnight = at("2026-03-01T00:00:00Z");
        assert_eq!(period_id(BudgetPeriod::Daily, midnight), "daily:2026-03-01");
        assert_eq!(period_id(BudgetPeriod::Monthly, midnight), "monthly:2026-03");
        assert_eq!(period_id(BudgetPeriod::Daily, at("2028-02-29T12:00:00+05:00")), "daily:2028-02-29");
        assert_eq!(period_end(BudgetPeriod::Monthly, at("2028-02-10T00:00:00Z")), Some(at("2028-03-01T00:00:00Z")));
        // Ids back to ends.
        assert_eq!(id_end("daily:2026-12-31"), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(id_end("monthly:2026-02"), Some(at("2026-03-01T00:00:00Z")));
        for unknown in ["total", "weekly:2026-10", "daily:2026-1-5", "monthly:2026-13", "daily:20260105", ""] {
            assert_eq!(id_end(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn spend_sums_the_current_period_only_and_rounds() {
        let usage = |period: &str, spend: f64| KeyUsage {
            period: period.to_owned(),
            spend_usd: spend,
            requests: 1,
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        let entries = [usage("monthly:2026-03", 0.1), usage("monthly:2026-03", 0.2), usage("monthly:2026-02", 100.0)];
        assert_eq!(sum_spend(&entries, "monthly:2026-03"), Some(0.3), "0.1 + 0.2 rounded to 6 decimals");
        assert_eq!(sum_spend(&entries, "monthly:2026-02"), Some(100.0));
        assert_eq!(sum_spend(&entries, "monthly:2026-04"), None);
        assert_eq!(sum_spend(&[usage("daily:2026-03-14", 0.000_000_4)], "daily:2026-03-14"), Some(0.0));
        assert_eq!(sum_spend(&[usage("total", 1.234_567_89)], "total"), Some(1.234_568));
    }

    #[test]
    fn reports_parse_entry_by_entry() {
        let text = r#"{"pod":"gw-1","reportedAt":"2026-03-14T10:00:00Z","extra":true,"keys":{
            "t/a":{"period":"monthly:2026-03","spendUsd":0.5,"requests":2,"promptTokens":1,"completionTokens":1,"new":1},
            "t/b":{"period":"monthly:2026-03"},
            "t/c":{"period":"monthly:2026-03","spendUsd":-1},
            "nonamespace":{"period":"total","spendUsd":1}}}"#;
        let (report, problems) = parse_report("gw-1.json", text).expect("a report");
        assert_eq!(report.pod, "gw-1");
        assert_eq!(report.keys.keys().collect::<Vec<_>>(), ["t/a"]);
        assert_eq!((report.keys["t/a"].spend_usd, report.keys["t/a"].requests), (0.5, 2));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("t/b: missing field `spendUsd`")), "{problems:?}");

        assert!(parse_report("gw-2.json", text).expect_err("another pod's").contains("gw-1"));
        assert!(parse_report("gw-1", text).is_err(), "not a .json key");
        assert!(parse_report("gw-1.json", "{").is_err());
        assert!(parse_report("gw-1.json", r#"{"pod":"gw-1","keys":{}}"#).is_err(), "reportedAt is required");
    }

    #[test]
    fn budgets_come_with_the_current_period_spend() {
        let index = UsageIndex::default();
        index.update(
            "sluice-usage-p",
            &data(&[(
                "a.json",
                report("a", &[("t/daily", "daily:2026-03-14", 4.5), ("t/daily-old", "daily:2026-03-13", 9.0)]),
            )]),
        );
        let key = |name: &str, budget: serde_json::Value| {
            let mut apikey =
                ApiKey::new(name, serde_json::from_value(serde_json::json!({"budget": budget})).expect("spec"));
            apikey.metadata.namespace = Some("t".to_owned());
            apikey
        };
        let keys = [
            key("daily", serde_json::json!({"limitUsd": 5.0, "period": "daily"})),
            key("daily-old", serde_json::json!({"limitUsd": 10.0, "period": "daily"})),
            key("unused", serde_json::json!({"limitUsd": 1.0})),
            key("zero", serde_json::json!({"limitUsd": 0.0})),
            key("unlimited", serde_json::Value::Null),
        ];
        let budgets = key_budgets(&keys, &index, at("2026-03-14T12:00:00Z"));
        let found: Vec<(&str, f64, f64)> =
            budgets.iter().map(|b| (b.key_id.as_str(), b.limit_usd, b.spend_usd)).collect();
        assert_eq!(
            found,
            [("t/daily", 5.0, 4.5), ("t/daily-old", 10.0, 0.0), ("t/unused", 1.0, 0.0)],
            "yesterday's spend is not today's; no series for keys without a budget"
        );
    }

    #[test]
    fn the_index_sums_across_pods_and_tells_what_changed() {
        let index = UsageIndex::default();
        let first = index.update(
            "sluice-usage-p",
            &data(&[
                ("a.json", report("a", &[("t/k", "monthly:2026-03", 1.25), ("t/other", "daily:2026-03-14", 2.0)])),
                ("b.json", report("b", &[("t/k", "monthly:2026-03", 0.5)])),
                ("dead.json", report("dead", &[("t/k", "monthly:2026-02", 40.0)])),
                ("broken.json", "not json".to_owned()),
            ]),
        );
        assert_eq!(first.changed.iter().collect::<Vec<_>>(), ["t/k", "t/other"]);
        assert_eq!(first.problems.len(), 1, "{:?}", first.problems);
        assert_eq!(index.spend("t/k", "monthly:2026-03"), Some(1.75));
        assert_eq!(index.spend("t/k", "monthly:2026-02"), Some(40.0));
        assert_eq!(index.spend("t/other", "daily:2026-03-15"), None);
        assert!(index.has_entries("t/other"));
        assert_eq!(index.spend("t/unknown", "monthly:2026-03"), None);

        // Only pod b's entry moved: only t/k changed; the broken report is not parsed again.
        let second = index.update(
            "sluice-usage-p",
            &data(&[
                ("a.json", report("a", &[("t/k", "monthly:2026-03", 1.25), ("t/other", "daily:2026-03-14", 2.0)])),
                ("b.json", report("b", &[("t/k", "monthly:2026-03", 0.75)])),
                ("dead.json", report("dead", &[("t/k", "monthly:2026-02", 40.0)])),
                ("broken.json", "not json".to_owned()),
            ]),
        );
        assert_eq!(second, Update { changed: BTreeSet::from(["t/k".to_owned()]), problems: Vec::new() });
        assert_eq!(index.spend("t/k", "monthly:2026-03"), Some(2.0));

        // Another project's ConfigMap adds to the same key only if it reports it.
        index.update("sluice-usage-q", &data(&[("c.json", report("c", &[("u/k", "total", 3.0)]))]));
        assert_eq!(index.spend("t/k", "monthly:2026-03"), Some(2.0));

        // A report that goes away takes its entries with it.
        let gone = index.update("sluice-usage-p", &data(&[("a.json", report("a", &[]))]));
        assert_eq!(gone.changed.iter().collect::<Vec<_>>(), ["t/k", "t/other"]);
        assert_eq!(index.spend("t/k", "monthly:2026-03"), None);
        assert!(!index.has_entries("t/other"));
        index.update("sluice-usage-q", &BTreeMap::new());
        assert!(!index.has_entries("u/k"));
    }

    #[test]
    fn only_gone_pods_whose_periods_all_ended_are_pruned() {
        let index = UsageIndex::default();
        index.update(
            "m",
            &data(&[
                ("live.json", report("live", &[("t/k", "monthly:2026-02", 1.0)])),
                ("ended.json", report("ended", &[("t/k", "monthly:2026-02", 1.0), ("t/d", "daily:2026-03-13", 1.0)])),
                ("current.json", report("current", &[("t/k", "monthly:2026-03", 1.0)])),
                ("mixed.json", report("mixed", &[("t/k", "monthly:2026-02", 1.0), ("t/d", "daily:2026-03-14", 1.0)])),
                ("forever.json", report("forever", &[("t/t", "total", 1.0)])),
                ("empty.json", report("empty", &[])),
                ("odd.json", report("odd", &[("t/k", "weekly:11", 1.0)])),
                ("garbage.json", "]".to_owned()),
            ]),
        );
        let now = at("2026-03-14T10:00:00Z");
        let pruned = index.prunable("m", now, |pod| pod == "live");
        assert_eq!(pruned, ["empty.json", "ended.json"]);
        assert!(index.prunable("other", now, |_| false).is_empty());
    }
}
