//! What a key can read about usage. `GET /<project>/v1/keys/self` (any valid key): the key's
//! scopes, tier, limits, its usage in its current period and what is left of its budget, from
//! the key's live counters; with Redis, the figures every replica published are added in
//! (`"scope": "cluster"`), else they are this replica's (`"scope": "replica"`).
//! `GET /<project>/v1/usage` (`usage.read`): the project's usage by key, endpoint and model for
//! the current or previous UTC month, as JSON or CSV, from the [`book`] accounting fills.
//! `GET /<project>/v1/keys/self/daily` (any valid key: its own) and `GET /<project>/v1/usage/daily`
//! (`usage.read`: every key's): the last `?days=` UTC days (1-31, default 14) by day, key and
//! model, for the console's charts.

pub mod book;

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use jiff::Timestamp;
use serde_json::{Value, json};
use sluice_crds::api::BudgetPeriod;

pub use book::UsageBook;
use book::{Report, Which};

use crate::Gateway;
use crate::accounting::RequestId;
use crate::auth::{KeyCaller, Need};
use crate::error::ApiError;
use crate::limits::budget_period;
use crate::limits::shared::{PublishedUsage, SharedLimits, UsageFigures};
use crate::respond::{self, body::ResponseBody};
use crate::route::ProjectRoute;
use crate::snapshot::Project;

/// Answers a project-level API for `caller`; `query` and `headers` are the request's.
pub async fn answer(
    gateway: &Gateway,
    caller: KeyCaller<'_>,
    route: ProjectRoute<'_>,
    query: Option<&str>,
    headers: &HeaderMap,
    now: Timestamp,
    request_id: &RequestId,
) -> Result<Response<ResponseBody>, ApiError> {
    let response = match route {
        ProjectRoute::KeySelf => respond::json(key_self(gateway, caller, now).await.to_string()),
        ProjectRoute::Usage => {
            caller.check_scope(Need::UsageRead)?;
            let (which, csv) = usage_query(query, headers)?;
            let report = gateway.usage.report(&caller.project.slug, which, now);
            if csv {
                let mut response = Response::new(ResponseBody::full(book::to_csv(&report)));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
                response
            } else {
                respond::json(usage_json(&caller.project.slug, which, &report).to_string())
            }
        }
        ProjectRoute::KeySelfDaily => {
            let days = days_query(query)?;
            let (names, rows) = gateway.usage.daily(&caller.project.slug, Some(&caller.key.id), days, now);
            respond::json(daily_json(&caller.project.slug, Some(&caller.key.id), &names, &rows).to_string())
        }
        ProjectRoute::UsageDaily => {
            caller.check_scope(Need::UsageRead)?;
            let days = days_query(query)?;
            let (names, rows) = gateway.usage.daily(&caller.project.slug, None, days, now);
            respond::json(daily_json(&caller.project.slug, None, &names, &rows).to_string())
        }
        ProjectRoute::SigningSecret => {
            caller.check_scope(Need::Management(route.display()))?;
            let mut response = respond::json(signing_secret_json(caller.project, now)?.to_string());
            // A secret: no cache between here and the client may keep it.
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        // The server sends these to the key API (with their bodies) and the console's.
        ProjectRoute::Keys
        | ProjectRoute::Key(_)
        | ProjectRoute::RotateKey(_)
        | ProjectRoute::Catalog
        | ProjectRoute::Health => {
            return Err(ApiError::UnknownPath { method: "GET".to_owned(), path: route.display().to_owned() });
        }
    };
    gateway.metrics.count_unrouted(&caller.project.slug, "", StatusCode::OK.as_u16());
    tracing::info!(target: "sluice::access", request_id = %request_id, project = %caller.project.slug,
        key = %caller.key.id, api = route.display(), status = 200, "usage read");
    Ok(response)
}

/// The secrets that sign the project's responses now, the current one first.
fn signing_secret_json(project: &Project, now: Timestamp) -> Result<Value, ApiError> {
    let live: Vec<_> = project.live_signing_secrets(now).collect();
    if live.is_empty() {
        return Err(ApiError::SigningNotEnabled);
    }
    let secrets: Vec<_> = live
        .iter()
        .map(|s| {
            json!({
                "secret": s.secret.expose(),
                "expires_at": s.expires_at.map(|t| t.to_string()),
            })
        })
        .collect();
    Ok(json!({
        "object": "signing_secret",
        "project": &*project.slug,
        "algorithm": "HMAC-SHA256",
        "secrets": secrets,
    }))
}

/// `?period=current|previous`, and CSV for `?format=csv` or `Accept: text/csv` (the query wins).
fn usage_query(query: Option<&str>, headers: &HeaderMap) -> Result<(Which, bool), ApiError> {
    let mut which = Which::Current;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut csv = accept.split(',').any(|media| media.split(';').next().is_some_and(|m| m.trim() == "text/csv"));
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "period" => {
                which = match value {
                    "current" => Which::Current,
                    "previous" => Which::Previous,
                    _ => return Err(invalid("period", "'period' must be 'current' or 'previous'.")),
                }
            }
            "format" => {
                csv = match value {
                    "json" => false,
                    "csv" => true,
                    _ => return Err(invalid("format", "'format' must be 'json' or 'csv'.")),
                }
            }
            _ => {}
        }
    }
    Ok((which, csv))
}

/// `?days=N` (1 to [`book::DAYS_KEPT`]), 14 without it.
fn days_query(query: Option<&str>) -> Result<i64, ApiError> {
    let mut days = 14;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if let Some(("days", value)) = pair.split_once('=') {
            days = value
                .parse()
                .ok()
                .filter(|d| (1..=book::DAYS_KEPT).contains(d))
                .ok_or_else(|| invalid("days", "'days' must be a whole number from 1 to 31."))?;
        }
    }
    Ok(days)
}

/// The daily form: every day (oldest first) with its totals, the totals by model (and by key,
/// for the whole project), then every row.
fn daily_json(project: &str, key_id: Option<&str>, days: &[String], rows: &[book::DayRow]) -> Value {
    let by_day: Vec<Value> = days
        .iter()
        .map(|day| {
            let mut totals = book::Totals::default();
            for row in rows.iter().filter(|r| r.date == *day) {
                totals.add(&row.totals);
            }
            let mut value = totals_json(&totals.rounded());
            value["date"] = json!(day);
            value
        })
        .collect();
    let grouped = |name: &str, by: fn(&book::DayRow) -> &str| -> Vec<Value> {
        let mut groups: Vec<(&str, book::Totals)> = Vec::new();
        for row in rows {
            let label = by(row);
            let at = match groups.iter().position(|(l, _)| *l == label) {
                Some(at) => at,
                None => {
                    groups.push((label, book::Totals::default()));
                    groups.len() - 1
                }
            };
            groups[at].1.add(&row.totals);
        }
        // Biggest spend first: the console's "top" lists.
        groups.sort_by(|a, b| b.1.cost_usd.total_cmp(&a.1.cost_usd).then(a.0.cmp(b.0)));
        groups
            .into_iter()
            .map(|(label, totals)| {
                let mut value = totals_json(&totals.rounded());
                value[name] = json!(label);
                value
            })
            .collect()
    };
    let mut value = json!({
        "object": "usage.daily",
        "project": project,
        "scope": "replica",
        "days": days,
        "by_day": by_day,
        "by_model": grouped("model", |r| &r.model),
        "data": rows,
    });
    match key_id {
        Some(key_id) => value["key_id"] = json!(key_id),
        None => value["by_key"] = json!(grouped("key_id", |r| &r.key_id)),
    }
    value
}

fn invalid(param: &'static str, message: &str) -> ApiError {
    ApiError::InvalidParam { param, code: "invalid_value", message: message.to_owned() }
}

fn totals_json(totals: &book::Totals) -> Value {
    json!({
        "requests": totals.requests,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": totals.cost_usd,
    })
}

/// The JSON form of a month's report: totals, then by key, endpoint and model, then every row.
fn usage_json(project: &str, which: Which, report: &Report) -> Value {
    let (start, end) = report.month.bounds();
    let grouped = |name: &str, by: fn(&book::Row) -> &str| -> Vec<Value> {
        book::group_by(&report.rows, by)
            .into_iter()
            .map(|(label, totals)| {
                let mut value = totals_json(&totals);
                value[name] = json!(label);
                value
            })
            .collect()
    };
    json!({
        "object": "usage",
        "project": project,
        "scope": "replica",
        "period": {
            "kind": "monthly",
            "which": match which { Which::Current => "current", Which::Previous => "previous" },
            "id": report.month.id(),
            "start": start.to_string(),
            "end": end.to_string(),
        },
        "totals": totals_json(&book::total(&report.rows)),
        "by_key": grouped("key_id", |r| &r.key_id),
        "by_endpoint": grouped("endpoint", |r| &r.endpoint),
        "by_model": grouped("model", |r| &r.model),
        "data": report.rows,
    })
}

/// The period a key's counters run over (its budget's, monthly without one), as JSON.
fn period_json(kind: BudgetPeriod, now: Timestamp) -> Value {
    let utc = now.to_zoned(jiff::tz::TimeZone::UTC);
    let day = utc.date();
    let bounds = match kind {
        BudgetPeriod::Daily => Some((day, day.tomorrow().unwrap_or(day))),
        BudgetPeriod::Monthly => {
            let first = day.first_of_month();
            Some((first, first.last_of_month().tomorrow().unwrap_or(first)))
        }
        BudgetPeriod::Total => None,
    };
    let at = |date: jiff::civil::Date| {
        date.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp().to_string()).unwrap_or_default()
    };
    let kind_name = match kind {
        BudgetPeriod::Daily => "daily",
        BudgetPeriod::Monthly => "monthly",
        BudgetPeriod::Total => "total",
    };
    json!({
        "kind": kind_name,
        "id": kind.period_id(now),
        "start": bounds.map(|(start, _)| at(start)),
        "end": bounds.map(|(_, end)| at(end)),
    })
}

/// The calling key as `/v1/keys/self` shows it (never its material).
async fn key_self(gateway: &Gateway, caller: KeyCaller<'_>, now: Timestamp) -> Value {
    let key = caller.key;
    let kind = key.budget.as_ref().map_or(BudgetPeriod::Monthly, |b| b.period);
    let period = budget_period(kind, now);
    let mine = key.state.totals(period);
    let own = UsageFigures {
        requests: mine.requests,
        prompt_tokens: mine.prompt_tokens,
        completion_tokens: mine.completion_tokens,
        cost_nano: nano(mine.spend_usd),
    };
    let elsewhere = match gateway.limiter.redis() {
        Some(redis) => redis.usage_elsewhere(&caller.project.slug, &key.id, kind, now).await,
        None => None,
    };
    let (scope, figures) = match elsewhere {
        Some(others) => ("cluster", sum(own, others)),
        None => ("replica", own),
    };
    let cost_usd = figures.cost_nano as f64 / 1e9;
    let budget = key.budget.as_ref().map(|budget| {
        // On one replica, what the others reported through usage reports counts too, as it does
        // for admission.
        let spent = match scope {
            "cluster" => cost_usd,
            _ => ((mine.spend_usd + key.state.spent_elsewhere(period)) * 1e9).round() / 1e9,
        };
        json!({
            "limit_usd": budget.limit_usd,
            "period": period_json(budget.period, now)["kind"],
            "spent_usd": spent,
            "remaining_usd": ((budget.limit_usd - spent).max(0.0) * 1e9).round() / 1e9,
        })
    });
    let (tier, own_tier) = caller.tier();
    let limits = &tier.config;
    let (namespace, name) = key.id.split_once('/').unwrap_or(("", &key.id));
    fn sorted(set: &Option<crate::snapshot::FastSet<String>>) -> Option<Vec<&String>> {
        set.as_ref().map(|set| {
            let mut names: Vec<&String> = set.iter().collect();
            names.sort();
            names
        })
    }
    json!({
        "object": "api_key",
        "id": &*key.id,
        "name": name,
        "namespace": namespace,
        "project": &*caller.project.slug,
        "scopes": key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "endpoints": sorted(&key.endpoints),
        "models": sorted(&key.models),
        "expires_at": key.expires_at.map(|t| t.to_string()),
        "tier": {
            "name": tier.name,
            "source": if own_tier { "key" } else { "project" },
        },
        "limits": {
            "requests_per_minute": limits.requests_per_minute,
            "tokens_per_minute": limits.tokens_per_minute,
            "max_concurrent": limits.max_concurrent,
            "price_multiplier": limits.price_multiplier,
        },
        "budget": budget,
        "usage": {
            "scope": scope,
            "period": period_json(kind, now),
            "requests": figures.requests,
            "input_tokens": figures.prompt_tokens,
            "output_tokens": figures.completion_tokens,
            "cost_usd": cost_usd,
        },
    })
}

fn nano(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 { (usd * 1e9).round() as u64 } else { 0 }
}

fn sum(a: UsageFigures, b: UsageFigures) -> UsageFigures {
    UsageFigures {
        requests: a.requests + b.requests,
        prompt_tokens: a.prompt_tokens + b.prompt_tokens,
        completion_tokens: a.completion_tokens + b.completion_tokens,
        cost_nano: a.cost_nano + b.cost_nano,
    }
}

/// Publishes this process's figures of every key used since the last round, every `every`, for
/// the other replicas' `/v1/keys/self`; what Redis did not take is tried again next round. Runs
/// for the life of the gateway (with `--redis-url` only).
pub async fn publish(gateway: Arc<Gateway>, redis: Arc<SharedLimits>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let dirty = gateway.usage.take_dirty();
        if dirty.is_empty() {
            continue;
        }
        let now = Timestamp::now();
        let entries: Vec<PublishedUsage> = dirty
            .iter()
            .map(|d| {
                let totals = d.state.totals(budget_period(d.period, now));
                PublishedUsage {
                    project: d.project.to_string(),
                    key_id: d.key_id.to_string(),
                    kind: d.period,
                    at: now,
                    figures: UsageFigures {
                        requests: totals.requests,
                        prompt_tokens: totals.prompt_tokens,
                        completion_tokens: totals.completion_tokens,
                        cost_nano: nano(totals.spend_usd),
                    },
                }
            })
            .collect();
        if !redis.publish_usage(&entries).await {
            gateway.usage.restore_dirty(dirty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_query_picks_the_month_and_the_format() {
        let none = HeaderMap::new();
        assert_eq!(usage_query(None, &none).expect("ok"), (Which::Current, false));
        assert_eq!(usage_query(Some("period=previous"), &none).expect("ok"), (Which::Previous, false));
        assert_eq!(usage_query(Some("format=csv&period=current"), &none).expect("ok"), (Which::Current, true));
        assert_eq!(usage_query(None, &accept("text/csv; charset=utf-8")).expect("ok"), (Which::Current, true));
        assert!(usage_query(None, &accept("application/json, text/csv;q=0.5")).expect("ok").1);
        assert!(!usage_query(Some("format=json"), &accept("text/csv")).expect("ok").1, "the query wins");
        for (query, param) in [("period=last", "period"), ("format=xml", "format")] {
            match usage_query(Some(query), &none) {
                Err(error @ ApiError::InvalidParam { .. }) => {
                    assert_eq!(error.param(), Some(param));
                    assert_eq!(error.parts().0, StatusCode::BAD_REQUEST);
                }
                other => panic!("expected 400 for {query}, got {other:?}"),
            }
        }
    }

    #[test]
    fn key_periods_have_their_utc_bounds() {
        let now: Timestamp = "2026-03-10T10:00:00Z".parse().expect("time");
        let monthly = period_json(BudgetPeriod::Monthly, now);
        assert_eq!(monthly["id"], "monthly:2026-03");
        assert_eq!(
            (monthly["start"].as_str(), monthly["end"].as_str()),
            (Some("2026-03-01T00:00:00Z"), Some("2026-04-01T00:00:00Z"))
        );
        let daily = period_json(BudgetPeriod::Daily, now);
        assert_eq!(
            (daily["start"].as_str(), daily["end"].as_str()),
            (Some("2026-03-10T00:00:00Z"), Some("2026-03-11T00:00:00Z"))
        );
        assert!(period_json(BudgetPeriod::Total, now)["start"].is_null());
    }
}
