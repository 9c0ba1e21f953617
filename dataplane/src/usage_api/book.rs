//! The usage ledger: what every admitted request used, summed per (project, key, endpoint,
//! model) and UTC calendar month, for `GET /v1/usage`. Two months are kept, the current and
//! the previous one; each holds at most [`MAX_ROWS`] rows, and a combination first seen past
//! that is summed into its project's `(other)` row, so memory stays bounded whatever the traffic.
//! Recording also counts the per-key Prometheus series and, with Redis, marks the key for the
//! next publication of its figures.
//!
//! Beside the months, the last [`DAYS_KEPT`] UTC days are summed per (project, key, model) for
//! the daily charts (`/v1/keys/self/daily`, `/v1/usage/daily`), bounded the same way by
//! [`MAX_DAY_ROWS`]; a day older than that is dropped when a new day begins.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;
use sluice_crds::api::BudgetPeriod;

use crate::limits::{KeyState, Used, budget_period};
use crate::metrics::{KeyMetrics, Metrics};
use crate::snapshot::FastMap;

/// Rows one month may hold before new combinations go to `(other)`.
pub const MAX_ROWS: usize = 100_000;
/// The key, endpoint and model of the row that sums combinations past [`MAX_ROWS`].
pub const OTHER: &str = "(other)";
/// UTC days the daily rows go back (today included).
pub const DAYS_KEPT: i64 = 31;
/// Daily rows kept over all days before new combinations go to `(other)`.
pub const MAX_DAY_ROWS: usize = 100_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// What a group of requests used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests admitted and settled.
    pub requests: u64,
    /// Prompt tokens billed.
    pub input_tokens: u64,
    /// Completion tokens billed.
    pub output_tokens: u64,
    /// US dollars, at the backend's prices times the tier's multiplier.
    pub cost_usd: f64,
}

impl Totals {
    /// Adds `other` in.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }

    /// The cost in whole nano-dollars (`2e-5`, not the `2.0000000000000005e-5` of summed prices).
    pub fn rounded(mut self) -> Self {
        self.cost_usd = (self.cost_usd * 1e9).round() / 1e9;
        self
    }
}

/// One settled request, as accounting reports it.
#[derive(Clone, Copy, Debug)]
pub struct Settled<'a> {
    /// Project slug.
    pub project: &'a Arc<str>,
    /// Key id.
    pub key_id: &'a Arc<str>,
    /// Endpoint slug.
    pub endpoint: &'a Arc<str>,
    /// Model name (the exposed one).
    pub model: &'a Arc<str>,
    /// What it used (zero when it failed).
    pub used: Used,
    /// The key's counters, to publish from.
    pub key_state: &'a Arc<KeyState>,
    /// The period of the key's counters (its budget's; monthly without one).
    pub key_period: BudgetPeriod,
    /// When it ended.
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RowKey {
    project: Arc<str>,
    key_id: Arc<str>,
    endpoint: Arc<str>,
    model: Arc<str>,
}

/// One month's rows.
#[derive(Debug, Default)]
struct Ledger {
    /// [`budget_period`] of the month.
    month: i64,
    rows: FastMap<RowKey, Totals>,
}

/// A key whose figures changed since they were last published.
#[derive(Clone, Debug)]
pub struct Dirty {
    /// Project slug.
    pub project: Arc<str>,
    /// Key id.
    pub key_id: Arc<str>,
    /// Its counters.
    pub state: Arc<KeyState>,
    /// Their period.
    pub period: BudgetPeriod,
}

/// A daily row: a key's use of a model on one UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct DayKey {
    project: Arc<str>,
    key_id: Arc<str>,
    model: Arc<str>,
    /// Days since the Unix epoch.
    day: i64,
}

#[derive(Debug, Default)]
struct Book {
    current: Ledger,
    previous: Option<Ledger>,
    days: FastMap<DayKey, Totals>,
    /// The newest day recorded: when a later one begins, days past [`DAYS_KEPT`] are dropped.
    today: i64,
    keys: FastMap<(Arc<str>, Arc<str>), KeyMetrics>,
    dirty: FastMap<(Arc<str>, Arc<str>), Dirty>,
}

impl Book {
    /// Moves to `month`: the current month becomes the previous one when it is the one before.
    fn roll(&mut self, month: i64) {
        if self.current.month == month {
            return;
        }
        let old = std::mem::replace(&mut self.current, Ledger { month, rows: FastMap::default() });
        self.previous = (old.month == month - 1).then_some(old);
    }
}

impl Book {
    /// Adds to the daily row of `day`, first dropping days too old to keep when a day begins.
    fn record_day(&mut self, project: &Arc<str>, key_id: &Arc<str>, model: &Arc<str>, day: i64, totals: &Totals) {
        if day > self.today {
            self.today = day;
            self.days.retain(|row, _| row.day > day - DAYS_KEPT);
        }
        if day <= self.today - DAYS_KEPT {
            return;
        }
        let row = DayKey { project: project.clone(), key_id: key_id.clone(), model: model.clone(), day };
        if let Some(sum) = self.days.get_mut(&row) {
            sum.add(totals);
        } else if self.days.len() < MAX_DAY_ROWS {
            self.days.insert(row, *totals);
        } else {
            let other: Arc<str> = Arc::from(OTHER);
            let row = DayKey { project: project.clone(), key_id: other.clone(), model: other, day };
            self.days.entry(row).or_default().add(totals);
        }
    }
}

/// One day's use of a model by a key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayRow {
    /// The UTC day, `2026-03-10`.
    pub date: String,
    /// Key id (`<namespace>/<name>`).
    pub key_id: String,
    /// Model name (the exposed one).
    pub model: String,
    /// What it used.
    #[serde(flatten)]
    pub totals: Totals,
}

/// Which month `/v1/usage` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The current UTC calendar month.
    Current,
    /// The one before.
    Previous,
}

/// The usage ledger of this process.
pub struct UsageBook {
    inner: Mutex<Book>,
    metrics: Arc<Metrics>,
    publish: bool,
}

impl std::fmt::Debug for UsageBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageBook").field("publish", &self.publish).finish_non_exhaustive()
    }
}

/// One row of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Key id (`<namespace>/<name>`).
    pub key_id: String,
    /// Endpoint slug.
    pub endpoint: String,
    /// Model name.
    pub model: String,
    /// What they used.
    #[serde(flatten)]
    pub totals: Totals,
}

/// A UTC calendar month.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Month {
    /// Its first day.
    pub start: Date,
}

impl Month {
    /// The month numbered `n` by [`budget_period`] (`year * 12 + month`).
    pub fn numbered(n: i64) -> Self {
        let year = (n - 1).div_euclid(12);
        let month = (n - 1).rem_euclid(12) + 1;
        // Both are in range for any month a clock can show; the fallback is never reached.
        let start = Date::new(year as i16, month as i8, 1).unwrap_or(Date::constant(1970, 1, 1));
        Self { start }
    }

    /// `2026-03`.
    pub fn id(self) -> String {
        format!("{:04}-{:02}", self.start.year(), self.start.month())
    }

    /// The first instant of the month and of the next one.
    pub fn bounds(self) -> (Timestamp, Timestamp) {
        let at = |date: Date| {
            date.to_zoned(jiff::tz::TimeZone::UTC).map_or(Timestamp::UNIX_EPOCH, |zoned| zoned.timestamp())
        };
        let next = self.start.last_of_month().tomorrow().unwrap_or(self.start);
        (at(self.start), at(next))
    }
}

/// A month's rows of one project, sorted by key, endpoint and model.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The month.
    pub month: Month,
    /// Its rows.
    pub rows: Vec<Row>,
}

impl UsageBook {
    /// An empty ledger; `publish` marks keys for publication (with Redis).
    pub fn new(metrics: Arc<Metrics>, publish: bool) -> Self {
        Self { inner: Mutex::new(Book::default()), metrics, publish }
    }

    /// Adds a settled request to its row, its key's counters and (with Redis) the keys to publish.
    pub fn record(&self, settled: &Settled<'_>) {
        let Settled { project, key_id, endpoint, model, used, .. } = *settled;
        let totals = Totals {
            requests: 1,
            input_tokens: used.prompt_tokens,
            output_tokens: used.completion_tokens,
            cost_usd: used.cost_usd,
        };
        let month = budget_period(BudgetPeriod::Monthly, settled.at);
        let mut book = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        book.roll(month);
        let row = RowKey {
            project: project.clone(),
            key_id: key_id.clone(),
            endpoint: endpoint.clone(),
            model: model.clone(),
        };
        let rows = &mut book.current.rows;
        if let Some(sum) = rows.get_mut(&row) {
            sum.add(&totals);
        } else if rows.len() < MAX_ROWS {
            rows.insert(row, totals);
        } else {
            let other: Arc<str> = Arc::from(OTHER);
            let row = RowKey { project: project.clone(), key_id: other.clone(), endpoint: other.clone(), model: other };
            rows.entry(row).or_default().add(&totals);
        }
        book.record_day(project, key_id, model, settled.at.as_second().div_euclid(SECONDS_PER_DAY), &totals);
        let key = (project.clone(), key_id.clone());
        // Every JWT subject shares one series (`jwt`), so subjects cannot grow the label set.
        let metric_id = crate::metrics::key_label(key_id);
        let metrics = match book.keys.get(&(project.clone(), metric_id.clone())) {
            Some(metrics) => metrics,
            None => {
                let made = self.metrics.key(project, &metric_id);
                book.keys.entry((project.clone(), metric_id)).or_insert(made)
            }
        };
        metrics.requests.inc();
        metrics.tokens_in.inc_by(used.prompt_tokens);
        metrics.tokens_out.inc_by(used.completion_tokens);
        metrics.cost_usd.inc_by(used.cost_usd.max(0.0));
        if self.publish {
            book.dirty.entry(key).or_insert_with(|| Dirty {
                project: project.clone(),
                key_id: key_id.clone(),
                state: settled.key_state.clone(),
                period: settled.key_period,
            });
        }
    }

    /// The keys whose figures changed since the last call.
    pub fn take_dirty(&self) -> Vec<Dirty> {
        let mut book = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        book.dirty.drain().map(|(_, dirty)| dirty).collect()
    }

    /// Marks keys again whose publication failed.
    pub fn restore_dirty(&self, keys: Vec<Dirty>) {
        let mut book = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for dirty in keys {
            book.dirty.entry((dirty.project.clone(), dirty.key_id.clone())).or_insert(dirty);
        }
    }

    /// `project`'s rows of the month `which` names, as of `now`.
    pub fn report(&self, project: &str, which: Which, now: Timestamp) -> Report {
        let current = budget_period(BudgetPeriod::Monthly, now);
        let mut book = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        book.roll(current);
        let (month, ledger) = match which {
            Which::Current => (current, Some(&book.current)),
            Which::Previous => (current - 1, book.previous.as_ref()),
        };
        let mut rows: Vec<Row> = ledger
            .into_iter()
            .flat_map(|ledger| &ledger.rows)
            .filter(|(row, _)| *row.project == *project)
            .map(|(row, totals)| Row {
                key_id: row.key_id.to_string(),
                endpoint: row.endpoint.to_string(),
                model: row.model.to_string(),
                totals: totals.rounded(),
            })
            .collect();
        drop(book);
        rows.sort_by(|a, b| (&a.key_id, &a.endpoint, &a.model).cmp(&(&b.key_id, &b.endpoint, &b.model)));
        Report { month: Month::numbered(month), rows }
    }
}

impl UsageBook {
    /// `project`'s daily rows of the last `days` UTC days up to `now` (of one key, with
    /// `key_id`), sorted by day, key and model; and the days, oldest first.
    pub fn daily(&self, project: &str, key_id: Option<&str>, days: i64, now: Timestamp) -> (Vec<String>, Vec<DayRow>) {
        let today = now.as_second().div_euclid(SECONDS_PER_DAY);
        let first = today - days.clamp(1, DAYS_KEPT) + 1;
        let book = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<(i64, DayRow)> = book
            .days
            .iter()
            .filter(|(row, _)| {
                *row.project == *project
                    && (first..=today).contains(&row.day)
                    && key_id.is_none_or(|k| *row.key_id == *k)
            })
            .map(|(row, totals)| {
                let date = day_name(row.day);
                (
                    row.day,
                    DayRow {
                        date,
                        key_id: row.key_id.to_string(),
                        model: row.model.to_string(),
                        totals: totals.rounded(),
                    },
                )
            })
            .collect();
        drop(book);
        rows.sort_by(|(a_day, a), (b_day, b)| (a_day, &a.key_id, &a.model).cmp(&(b_day, &b.key_id, &b.model)));
        let names = (first..=today).map(day_name).collect();
        (names, rows.into_iter().map(|(_, row)| row).collect())
    }
}

/// `2026-03-10` for a day counted from the Unix epoch.
fn day_name(day: i64) -> String {
    Timestamp::from_second(day * SECONDS_PER_DAY)
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
        .unwrap_or_default()
}

/// Sums `rows` by the label `by` picks, sorted by it.
pub fn group_by<'r>(rows: &'r [Row], by: impl Fn(&'r Row) -> &'r str) -> Vec<(&'r str, Totals)> {
    let mut groups: Vec<(&str, Totals)> = Vec::new();
    for row in rows {
        let label = by(row);
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, sum)) => sum.add(&row.totals),
            None => groups.push((label, row.totals)),
        }
    }
    groups.sort_by(|a, b| a.0.cmp(b.0));
    groups.into_iter().map(|(label, totals)| (label, totals.rounded())).collect()
}

/// The sum of every row.
pub fn total(rows: &[Row]) -> Totals {
    let mut sum = Totals::default();
    for row in rows {
        sum.add(&row.totals);
    }
    sum.rounded()
}

/// The header of the CSV form.
pub const CSV_HEADER: &str = "month,key_id,endpoint,model,requests,input_tokens,output_tokens,cost_usd";

/// The report as CSV (RFC 4180: CRLF line ends, fields quoted when they need it).
pub fn to_csv(report: &Report) -> String {
    let mut out = String::with_capacity(64 * (report.rows.len() + 1));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    let month = report.month.id();
    for row in &report.rows {
        let t = &row.totals;
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "{month},{},{},{},{},{},{},{}\r\n",
            csv_field(&row.key_id),
            csv_field(&row.endpoint),
            csv_field(&row.model),
            t.requests,
            t.input_tokens,
            t.output_tokens,
            t.cost_usd
        );
    }
    out
}

/// A field quoted when it holds a comma, quote or line break, and made inert when a
/// spreadsheet would read it as a formula (a leading `=`, `+`, `-` or `@`).
fn csv_field(value: &str) -> std::borrow::Cow<'_, str> {
    let formula = value.starts_with(['=', '+', '-', '@']);
    if !formula && !value.contains([',', '"', '\r', '\n']) {
        return value.into();
    }
    let inner = value.replace('"', "\"\"");
    if formula { format!("\"'{inner}\"").into() } else { format!("\"{inner}\"").into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    struct Names {
        project: Arc<str>,
        state: Arc<KeyState>,
    }

    fn record(book: &UsageBook, names: &Names, key: &str, endpoint: &str, model: &str, used: Used, at: &str) {
        let (key, endpoint, model) = (arc(key), arc(endpoint), arc(model));
        book.record(&Settled {
            project: &names.project,
            key_id: &key,
            endpoint: &endpoint,
            model: &model,
            used,
            key_state: &names.state,
            key_period: BudgetPeriod::Monthly,
            at: at.parse().expect("time"),
        });
    }

    fn used(prompt: u64, completion: u64, cost: f64) -> Used {
        Used { prompt_tokens: prompt, completion_tokens: completion, cost_usd: cost }
    }

    fn names(project: &str) -> Names {
        Names { project: arc(project), state: Arc::new(KeyState::new()) }
    }

    #[test]
    fn rows_sum_per_key_endpoint_and_model_and_group() {
        let book = UsageBook::new(Arc::new(Metrics::new()), false);
        let p = names("p");
        let t = "2026-03-10T10:00:00Z";
        record(&book, &p, "ns/a", "chat", "m1", used(10, 5, 0.000_02), t);
        record(&book, &p, "ns/a", "chat", "m1", used(10, 5, 0.000_02), t);
        record(&book, &p, "ns/a", "embed", "e1", used(7, 0, 0.000_007), t);
        record(&book, &p, "ns/b", "chat", "m2", used(0, 0, 0.0), t);
        record(&book, &names("other"), "o/x", "chat", "m1", used(99, 99, 1.0), t);
        let report = book.report("p", Which::Current, t.parse().expect("time"));
        assert_eq!(report.month.id(), "2026-03");
        let keys: Vec<_> =
            report.rows.iter().map(|r| (&*r.key_id, &*r.endpoint, &*r.model, r.totals.requests)).collect();
        assert_eq!(keys, [("ns/a", "chat", "m1", 2), ("ns/a", "embed", "e1", 1), ("ns/b", "chat", "m2", 1)]);
        assert_eq!(
            report.rows[0].totals,
            Totals { requests: 2, input_tokens: 20, output_tokens: 10, cost_usd: 0.000_04 }
        );
        let by_key = group_by(&report.rows, |r| &r.key_id);
        assert_eq!(
            by_key.iter().map(|(k, t)| (*k, t.requests, t.input_tokens)).collect::<Vec<_>>(),
            [("ns/a", 3, 27), ("ns/b", 1, 0)]
        );
        let by_model = group_by(&report.rows, |r| &r.model);
        assert_eq!(
            by_model.iter().map(|(m, t)| (*m, t.requests)).collect::<Vec<_>>(),
            [("e1", 1), ("m1", 2), ("m2", 1)]
        );
        assert_eq!(total(&report.rows).cost_usd, 0.000_047, "nano-rounded, another project's not included");
    }

    #[test]
    fn days_are_kept_per_key_and_model_for_a_month_and_then_dropped() {
        let book = UsageBook::new(Arc::new(Metrics::new()), false);
        let p = names("p");
        record(&book, &p, "ns/a", "chat", "m1", used(10, 5, 0.1), "2026-03-09T23:00:00Z");
        record(&book, &p, "ns/a", "chat", "m1", used(10, 5, 0.1), "2026-03-10T01:00:00Z");
        record(&book, &p, "ns/a", "embed", "m1", used(1, 0, 0.1), "2026-03-10T02:00:00Z");
        record(&book, &p, "ns/b", "chat", "m2", used(3, 3, 0.2), "2026-03-10T03:00:00Z");
        record(&book, &names("q"), "ns/c", "chat", "m1", used(3, 3, 0.2), "2026-03-10T03:00:00Z");
        let now: Timestamp = "2026-03-10T12:00:00Z".parse().expect("time");
        let (days, rows) = book.daily("p", None, 2, now);
        assert_eq!(days, ["2026-03-09", "2026-03-10"]);
        let seen: Vec<_> =
            rows.iter().map(|r| (r.date.as_str(), r.key_id.as_str(), r.model.as_str(), r.totals.requests)).collect();
        assert_eq!(
            seen,
            [("2026-03-09", "ns/a", "m1", 1), ("2026-03-10", "ns/a", "m1", 2), ("2026-03-10", "ns/b", "m2", 1)]
        );
        let (_, mine) = book.daily("p", Some("ns/b"), 1, now);
        assert_eq!(mine.len(), 1);
        // A month later the old days are gone.
        record(&book, &p, "ns/a", "chat", "m1", used(1, 1, 0.0), "2026-04-09T00:00:00Z");
        let later: Timestamp = "2026-04-09T01:00:00Z".parse().expect("time");
        let (days, rows) = book.daily("p", None, 100, later);
        assert_eq!(days.len(), DAYS_KEPT as usize);
        assert_eq!(
            rows.iter().map(|r| r.date.as_str()).collect::<Vec<_>>(),
            ["2026-03-10", "2026-03-10", "2026-04-09"]
        );
    }

    #[test]
    fn the_current_month_becomes_the_previous_one_and_older_ones_go() {
        let book = UsageBook::new(Arc::new(Metrics::new()), false);
        let p = names("p");
        record(&book, &p, "ns/a", "chat", "m", used(1, 1, 0.1), "2026-01-31T23:59:59Z");
        record(&book, &p, "ns/a", "chat", "m", used(2, 2, 0.2), "2026-02-01T00:00:00Z");
        let feb = "2026-02-15T00:00:00Z".parse().expect("time");
        let previous = book.report("p", Which::Previous, feb);
        assert_eq!((previous.month.id(), previous.rows.len()), ("2026-01".to_owned(), 1));
        assert_eq!(previous.rows[0].totals.input_tokens, 1);
        assert_eq!(book.report("p", Which::Current, feb).rows[0].totals.input_tokens, 2);
        // Two months later nothing of February is left; a report alone rolls the months.
        let april = "2026-04-02T00:00:00Z".parse().expect("time");
        assert!(book.report("p", Which::Previous, april).rows.is_empty());
        assert!(book.report("p", Which::Current, april).rows.is_empty());
        let (start, end) = Month::numbered(budget_period(BudgetPeriod::Monthly, april)).bounds();
        assert_eq!(
            (start.to_string(), end.to_string()),
            ("2026-04-01T00:00:00Z".into(), "2026-05-01T00:00:00Z".into())
        );
        assert_eq!(
            Month::numbered(budget_period(BudgetPeriod::Monthly, "2025-12-05T00:00:00Z".parse().expect("t"))).id(),
            "2025-12"
        );
    }

    #[test]
    fn past_the_row_cap_new_combinations_are_summed_as_other() {
        let book = UsageBook::new(Arc::new(Metrics::new()), false);
        let p = names("p");
        let t = "2026-03-10T10:00:00Z";
        for i in 0..MAX_ROWS {
            record(&book, &p, "ns/a", "chat", &format!("m{i}"), used(1, 0, 0.0), t);
        }
        record(&book, &p, "ns/b", "chat", "new", used(5, 0, 0.0), t);
        record(&book, &p, "ns/c", "chat", "newer", used(6, 0, 0.0), t);
        record(&book, &p, "ns/a", "chat", "m0", used(1, 0, 0.0), t);
        let report = book.report("p", Which::Current, t.parse().expect("time"));
        assert_eq!(report.rows.len(), MAX_ROWS + 1);
        let other = report.rows.iter().find(|r| r.key_id == OTHER).expect("the other row");
        assert_eq!((other.totals.requests, other.totals.input_tokens), (2, 11));
        assert_eq!(report.rows.iter().find(|r| r.model == "m0").map(|r| r.totals.requests), Some(2));
    }

    #[test]
    fn keys_are_marked_for_publication_once_until_taken() {
        let book = UsageBook::new(Arc::new(Metrics::new()), true);
        let p = names("p");
        let t = "2026-03-10T10:00:00Z";
        record(&book, &p, "ns/a", "chat", "m", used(1, 0, 0.0), t);
        record(&book, &p, "ns/a", "embed", "m", used(1, 0, 0.0), t);
        let dirty = book.take_dirty();
        assert_eq!(dirty.iter().map(|d| &*d.key_id).collect::<Vec<_>>(), ["ns/a"]);
        assert!(book.take_dirty().is_empty());
        book.restore_dirty(dirty);
        assert_eq!(book.take_dirty().len(), 1);
        let quiet = UsageBook::new(Arc::new(Metrics::new()), false);
        record(&quiet, &p, "ns/a", "chat", "m", used(1, 0, 0.0), t);
        assert!(quiet.take_dirty().is_empty(), "nothing to publish without Redis");
    }

    #[test]
    fn per_key_counters_are_exported_by_id() {
        let metrics = Arc::new(Metrics::new());
        let book = UsageBook::new(metrics.clone(), false);
        let p = names("p");
        record(&book, &p, "ns/a", "chat", "m", used(10, 4, 0.5), "2026-03-10T10:00:00Z");
        record(&book, &p, "ns/a", "chat", "m", used(1, 1, 0.25), "2026-03-10T10:00:00Z");
        let text = metrics.render();
        assert!(text.contains(r#"sluice_key_requests_total{project="p",key_id="ns/a"} 2"#), "{text}");
        assert!(text.contains(r#"sluice_key_tokens_total{project="p",key_id="ns/a",direction="input"} 11"#));
        assert!(text.contains(r#"sluice_key_tokens_total{project="p",key_id="ns/a",direction="output"} 5"#));
        assert!(text.contains(r#"sluice_key_cost_usd_total{project="p",key_id="ns/a"} 0.75"#));
    }

    #[test]
    fn csv_has_a_header_a_line_per_row_and_escapes_fields() {
        let totals = Totals { requests: 2, input_tokens: 20, output_tokens: 10, cost_usd: 0.000_04 };
        let row = |key: &str, endpoint: &str, model: &str| Row {
            key_id: key.into(),
            endpoint: endpoint.into(),
            model: model.into(),
            totals,
        };
        let report = Report {
            month: Month::numbered(2026 * 12 + 3),
            rows: vec![row("ns/a", "chat", "m,1"), row("ns/b", "chat", "say \"hi\""), row("ns/c", "chat", "=cmd()")],
        };
        let csv = to_csv(&report);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "2026-03,ns/a,chat,\"m,1\",2,20,10,0.00004");
        assert_eq!(lines[2], "2026-03,ns/b,chat,\"say \"\"hi\"\"\",2,20,10,0.00004");
        assert_eq!(lines[3], "2026-03,ns/c,chat,\"'=cmd()\",2,20,10,0.00004");
        assert_eq!(lines[4], "", "every line ends with CRLF");
        assert_eq!(lines.len(), 5);
        assert_eq!(to_csv(&Report { month: report.month, rows: vec![] }), format!("{CSV_HEADER}\r\n"));
    }
}
