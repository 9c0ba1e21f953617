//! The chart's Grafana dashboard (charts/sluice/dashboards/sluice.json) on real data, without
//! Grafana (AGPL, and in none of the package registries this project builds from). A gateway in
//! front of simulated backends takes about 24 s of modest mixed load: two keys (one on a tier
//! that rate-limits it), two models (one failing over from a flaky backend), streamed chats with
//! SLO hints, and a few errors and refusals. A real Prometheus (`$SLUICE_PROMETHEUS`) scrapes the
//! gateway's admin `/metrics` every second, labelled as the chart's PodMonitor labels it.
//!
//! Every query of every panel, with the dashboard's variables set as Grafana sets them (All,
//! then the project and endpoint its `label_values` queries find), is run as Grafana runs it
//! (`query_range`, or `query` for instant targets): each must parse, and exactly the queries in
//! [`EMPTY`] may come back without a number, so a query that names a wrong metric or label fails.
//! The panels are then drawn into a self-contained HTML page ([`render`]) and screenshotted, one
//! picture per dashboard row, by Debian's Chromium through Playwright (`screenshot.py`): into the
//! build's temporary folder on every run, over docs/observability/*.png with
//! `SLUICE_UPDATE_SCREENSHOTS=1`. Without Prometheus, Python or Chromium it fails, naming the
//! setup script: it never skips.

#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod prometheus;
mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Prometheus, Series, Target};
use render::Drawn;
use serde_json::{Value, json};
use sluice_sim::{ErrorFault, Profile};
use sluice_testenv::monitoring::dashboard;
use support::{Gateway, Manifests, Sim, apikey, client};

const WEB_KEY: &str = "sl_acme_dashboard_web_000001";
const BATCH_KEY: &str = "sl_acme_dashboard_batch_0001";
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(24);
/// Prometheus' scrape interval, and the step of every range query (one point a scrape).
const SCRAPE: Duration = Duration::from_secs(1);
/// `$__rate_interval` as Grafana computes it for a 1 s scrape and step: max(4 x scrape,
/// step + scrape).
const RATE_INTERVAL: &str = "4s";

/// The queries that legitimately return nothing here, by panel title and refId, with why. Any
/// other empty query fails the test, and so does one of these returning data.
const EMPTY: [(&str, &str, &str); 4] = [
    ("Budget used", "A", "the operator's budget gauges: no operator runs here"),
    ("Operator reconciles", "A", "the operator's metrics: no operator runs here"),
    ("Operator reconciles", "B", "the operator's metrics: no operator runs here"),
    ("Reconcile duration p95", "A", "the operator's metrics: no operator runs here"),
];

/// Tier `standard` and Project `acme`; a batch tier of 10 requests a minute; three Providers on
/// simulators (a pool of two healthy pods, a flaky server, a broken one); Endpoint `chat` with
/// `small` (the pool), `large` (the flaky server first, failing over to the pool) and `preview`
/// (the broken server); a web key with a budget and a batch key on the batch tier.
fn tenant(pods: [&str; 2], flaky: &str, broken: &str) -> String {
    // `at` is where the Provider's servers are: a `baseUrl`, or the `addresses` of a pool.
    let provider = |name: &str, at: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Provider\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  \
type: openai\n  {at}\n  models:\n    \
- {{name: llama-8b, capabilities: [chat], pricing: {{inputPerMillion: 0.2, outputPerMillion: 0.6}}}}\n    \
- {{name: llama-70b, capabilities: [chat], pricing: {{inputPerMillion: 0.9, outputPerMillion: 2.7}}}}\n---\n"
        )
    };
    format!(
        r#"{project}apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {{name: batch}}
spec:
  limits: {{requestsPerMinute: 10}}
  timeouts: {{firstTokenMs: 5000, totalMs: 20000, idleStreamMs: 5000}}
---
{gpu_a}{gpu_b}{gpu_c}apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: small
      backends: [{{providerRef: {{name: gpu-a}}, model: llama-8b}}]
    - name: large
      backends:
        - {{providerRef: {{name: gpu-b}}, model: llama-70b, priority: 0}}
        - {{providerRef: {{name: gpu-a}}, model: llama-70b, priority: 1}}
    - name: preview
      backends: [{{providerRef: {{name: gpu-c}}, model: llama-8b}}]
---
{web}---
{batch}"#,
        project = support::ACME_PROJECT,
        gpu_a = provider("gpu-a", &format!("addresses: [{}/v1, {}/v1]", pods[0], pods[1])),
        gpu_b = provider("gpu-b", &format!("baseUrl: {flaky}/v1")),
        gpu_c = provider("gpu-c", &format!("baseUrl: {broken}/v1")),
        web = apikey("acme", "web", WEB_KEY, "  budget: {limitUsd: 5}\n"),
        batch = apikey("acme", "batch", BATCH_KEY, "  tier: batch\n"),
    )
}

/// The simulators: two healthy GPUs, a slower one that answers 503 to a quarter of requests,
/// and one that fails every request.
async fn simulators() -> ([Sim; 2], Sim, Sim) {
    let healthy = [
        Sim::start(Profile { seed: 1, ..Profile::default() }).await,
        Sim::start(Profile { seed: 3, ..Profile::default() }).await,
    ];
    let mut flaky = Profile { seed: 2, prefill_overhead_ms: 120.0, inter_token_ms: 20.0, ..Profile::default() };
    flaky.faults.errors = vec![ErrorFault { status: 503, rate: 0.25 }];
    let flaky = Sim::start(flaky).await;
    let mut broken = Sim::fast();
    broken.faults.errors = vec![ErrorFault { status: 500, rate: 1.0 }];
    (healthy, flaky, Sim::start(broken).await)
}

/// How many answers of each status the load got.
type Statuses = Arc<Mutex<BTreeMap<u16, usize>>>;

/// One request of the load: a chat of `model` with `key`, streamed (with SLO hints) or not;
/// the whole answer is read.
async fn chat(gateway: &Gateway, key: &str, model: &str, stream: bool, statuses: &Statuses) {
    // The same long system prompt every time, as an application sends: the simulator's prefix
    // cache serves part of it, which the cached-tokens panel shows.
    let system = "You are the support assistant of a small online shop. Answer in two sentences.";
    let body = json!({"model": model, "stream": stream, "max_tokens": 16, "messages": [
        {"role": "system", "content": system.repeat(4)},
        {"role": "user", "content": "Where is my parcel?"}]});
    let mut request = client().post(gateway.url("/acme/chat/v1/chat/completions")).bearer_auth(key).json(&body);
    if stream {
        request = request.header("X-SLO-TTFT-Ms", "400").header("X-SLO-TPOT-Ms", "30");
    }
    let response = request.send().await.expect("a request");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    *statuses.lock().unwrap().entry(status).or_default() += 1;
}

/// Four clients until `LOAD` has passed, each pausing between its requests: the web app
/// streaming `small` and reading `large` whole, the batch job alternating both (faster than its
/// tier allows, so part of it is refused), and a client with a wrong key or a preview model.
async fn drive_load(gateway: &Gateway) -> BTreeMap<u16, usize> {
    let statuses = Statuses::default();
    let deadline = Instant::now() + LOAD;
    let client = |pause_ms: u64, plan: fn(usize) -> (&'static str, &'static str, bool)| {
        let statuses = statuses.clone();
        async move {
            let mut i = 0;
            while Instant::now() < deadline {
                let (key, model, stream) = plan(i);
                chat(gateway, key, model, stream, &statuses).await;
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                i += 1;
            }
        }
    };
    tokio::join!(
        client(150, |_| (WEB_KEY, "small", true)),
        client(200, |_| (WEB_KEY, "large", false)),
        client(500, |i| (BATCH_KEY, if i % 2 == 0 { "large" } else { "small" }, i % 3 == 0)),
        client(1500, |i| if i % 2 == 0 {
            ("sl_acme_not_a_key_00000000", "small", false)
        } else {
            (WEB_KEY, "preview", false)
        }),
    );
    Arc::try_unwrap(statuses).expect("the clients are done").into_inner().unwrap()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// One panel target: the panel's id, title and type, the target's refId, PromQL, legend format
/// and whether Grafana asks for it at one instant.
struct Query {
    panel: u64,
    title: String,
    ref_id: String,
    expr: String,
    legend_format: String,
    instant: bool,
}

/// Every target of every panel, rows' nested panels included.
fn queries(dashboard: &Value) -> Vec<Query> {
    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    let mut out = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let text = |key: &str| target[key].as_str().unwrap_or_default().to_owned();
            out.push(Query {
                panel: panel["id"].as_u64().expect("a panel id"),
                title: panel["title"].as_str().unwrap_or_default().to_owned(),
                ref_id: text("refId"),
                expr: text("expr"),
                legend_format: text("legendFormat"),
                instant: target["instant"] == true,
            });
        }
    }
    out
}

/// `value` as Grafana writes one selected value of a multi-value variable into a regex matcher.
fn regex_escape(value: &str) -> String {
    value.chars().fold(String::new(), |mut out, c| {
        if "\\.^$*+?()[]{}|".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// `expr` with the dashboard's variables (`$name` and `${name}`) and Grafana's range variables
/// replaced; fails on a variable it does not know.
fn substitute(expr: &str, variables: &[(String, String)], range: &str) -> String {
    let mut all: Vec<(&str, &str)> = variables.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    all.extend([("__rate_interval", RATE_INTERVAL), ("__interval", "1s"), ("__range", range)]);
    // Longest names first, so that no name is replaced as the start of another.
    all.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = expr.to_owned();
    for (name, value) in all {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "a variable this test does not set in {expr:?}: {out}");
    out
}

/// The dashboard's query variables set to All (their `allValue`), or to the first value their
/// `label_values` query finds (each query seeing the variables before it set the same way).
async fn variables(dashboard: &Value, prometheus: &Prometheus, all: bool) -> Vec<(String, String)> {
    let mut set: Vec<(String, String)> = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().expect("a variable name").to_owned();
        let query = variable["query"]["query"].as_str().or_else(|| variable["query"].as_str()).unwrap_or_default();
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')'));
        let (selector, label) = inner.and_then(|q| q.rsplit_once(',')).expect("label_values(selector, label)");
        let selector = substitute(selector.trim(), &set, "1s");
        let values = prometheus.label_values(label.trim(), &selector).await.expect("label values");
        assert!(!values.is_empty(), "{name}: {query} found nothing");
        let value = if all {
            assert_eq!(variable["includeAll"], true, "{name} offers All");
            variable["allValue"].as_str().expect("an allValue").to_owned()
        } else {
            regex_escape(&values[0])
        };
        set.push((name, value));
    }
    set
}

/// Runs every query with `variables` over `start..end`; returns the results by query and the
/// queries that returned no number. Fails listing every query Prometheus refused.
async fn run_queries(
    prometheus: &Prometheus,
    queries: &[Query],
    variables: &[(String, String)],
    start: f64,
    end: f64,
) -> (Vec<Vec<Series>>, BTreeSet<(String, String)>) {
    let range = format!("{:.0}s", end - start);
    let mut results = Vec::new();
    let mut empty = BTreeSet::new();
    let mut refused = Vec::new();
    for query in queries {
        let expr = substitute(&query.expr, variables, &range);
        let answer = if query.instant {
            prometheus.query(&expr, end).await
        } else {
            prometheus.query_range(&expr, start, end, SCRAPE.as_secs_f64()).await
        };
        let series = answer.unwrap_or_else(|error| {
            refused.push(format!("{} ({}): {expr}: {error}", query.title, query.ref_id));
            Vec::new()
        });
        if !series.iter().any(Series::has_numbers) {
            empty.insert((query.title.clone(), query.ref_id.clone()));
        }
        results.push(series);
    }
    assert!(refused.is_empty(), "queries Prometheus refused:\n{}", refused.join("\n"));
    (results, empty)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_real_prometheus_data() {
    let binary = support::tool("SLUICE_PROMETHEUS", "promtool.sh");
    let mut screenshot = support::playwright("dashboard_preview/screenshot.py");
    let (healthy, flaky, broken) = simulators().await;
    let manifests = Manifests::new();
    let url = |sim: &Sim| format!("http://{}", sim.addr);
    let pods = [url(&healthy[0]), url(&healthy[1])];
    manifests.write("tenant.yaml", &tenant([&pods[0], &pods[1]], &url(&flaky), &url(&broken)));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    // As the PodMonitor scrapes a gateway pod: job sluice-gateway, the pod's project.
    let target =
        Target { job: "sluice-gateway", address: gateway.admin.to_string(), labels: &[("sluice_project", "acme")] };
    let prometheus = Prometheus::start(&binary, SCRAPE, &[target]);
    let scraped = support::eventually(Duration::from_secs(20), || async {
        prometheus.query("up", now()).await.is_ok_and(|up| up.iter().any(|s| s.points.iter().any(|p| p.1 == 1.0)))
    })
    .await;
    assert!(scraped.is_some(), "prometheus never scraped the gateway:\n{}", prometheus.log_text());

    let start = now().floor() - 2.0;
    let statuses = drive_load(&gateway).await;
    // The last scrape of the load, then the end of the picture.
    tokio::time::sleep(SCRAPE * 2).await;
    let end = now().floor();
    eprintln!("load: {statuses:?}");
    for (statuses_wanted, what) in
        [(200..=200, "answers"), (401..=401, "wrong keys"), (429..=429, "rate limits"), (500..=599, "errors")]
    {
        assert!(statuses.range(statuses_wanted).next().is_some(), "no {what} in {statuses:?}");
    }

    let board = dashboard().expect("the dashboard");
    let queries = queries(&board);
    assert!(queries.len() >= 40, "every panel's targets: {}", queries.len());
    let expected: BTreeSet<(String, String)> =
        EMPTY.iter().map(|(t, r, _)| ((*t).to_owned(), (*r).to_owned())).collect();
    let mut drawn: HashMap<u64, Vec<Drawn>> = HashMap::new();
    for all in [true, false] {
        let variables = variables(&board, &prometheus, all).await;
        if !all {
            assert_eq!(variables, [("project".into(), "acme".into()), ("endpoint".into(), "chat".into())]);
        }
        let (results, empty) = run_queries(&prometheus, &queries, &variables, start, end).await;
        let unexpected: Vec<_> = empty.difference(&expected).collect();
        let filled: Vec<_> = expected.difference(&empty).collect();
        assert!(
            unexpected.is_empty() && filled.is_empty(),
            "with {variables:?}: empty but should have data: {unexpected:?}; expected empty but have data: {filled:?}"
        );
        if all {
            for (query, series) in queries.iter().zip(results) {
                let target = Drawn { legend_format: query.legend_format.clone(), series };
                drawn.entry(query.panel).or_default().push(target);
            }
        }
    }

    let note = format!(
        "Preview drawn by Sluice's test dataplane/tests/dashboard_preview from charts/sluice/dashboards/sluice.json \
         and a real Prometheus scraping a test gateway under {} s of simulated load (project=All, \
         endpoint=All). Not Grafana.",
        LOAD.as_secs()
    );
    let html = render::page(&board, &drawn, start, end, &note);
    let page = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-preview.html");
    std::fs::write(&page, &html).expect("write the page");
    let shots = support::screenshot_dir("observability");
    let output = screenshot.arg(&page).arg(&shots).output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the screenshots failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<&str> = board["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(stdout.matches("screenshot: ").count(), rows.len(), "{stdout}");
    for row in rows {
        let name = render::slug(row);
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "{}/{name}.png is a screenshot", shots.display());
    }
    eprintln!("dashboard preview: {} and {}", page.display(), shots.display());
}
