//! The chart's monitoring (`monitoring.*` in charts/sluice): the ServiceMonitor, PodMonitor,
//! PrometheusRule and dashboard ConfigMap render well formed and select what the operator really
//! runs (its metrics Service, the gateway pods its Deployment builder makes); the rendered alerts
//! pass `promtool check rules` and their unit tests (`promtool test rules` with
//! tests/monitoring/alerts.test.yaml), every dashboard query parses, and the operator metrics the
//! alerts and dashboard name are in the operator's registry.
//!
//! Needs helm (tests/setup/kube.sh) and promtool (tests/setup/promtool.sh); fails, never skips,
//! without them. No apiserver: `helm template` only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use sluice_operator::data_plane::{DataPlaneInput, build};
use sluice_operator::metrics::{KeyBudget, KeyBudgets, Metrics};
use sluice_operator::settings::Settings;
use sluice_testenv::monitoring::{
    alert_expressions, alert_tests_file, alerts_file, dashboard, dashboard_expressions, dashboard_file, metric_names,
    series_names, without_grafana_variables,
};
use sluice_testenv::{parse_yaml_documents, workspace_root};

/// Runs a command and returns its stdout; the error quotes both outputs.
fn output(mut command: Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let out = command.output().with_context(|| format!("running {shown}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{shown} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// `helm lint --strict` then `helm template` of the chart with `sets`; the rendered objects.
fn render(sets: &[&str]) -> anyhow::Result<Vec<Value>> {
    let chart = workspace_root().join("charts/sluice");
    let helm = sluice_testenv::helm()?;
    let mut lint = Command::new(&helm);
    lint.arg("lint").arg(&chart).args(["--strict", "--namespace", "sluice-system"]);
    let mut template = Command::new(&helm);
    template.args(["template", "sluice"]).arg(&chart).args(["--namespace", "sluice-system"]);
    for set in sets {
        lint.args(["--set", set]);
        template.args(["--set", set]);
    }
    output(lint)?;
    let out = template.output().context("running helm template")?;
    if !out.status.success() {
        bail!("helm template {sets:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_yaml_documents(&String::from_utf8(out.stdout)?)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in the rendered chart"))
}

/// `promtool`: `$SLUICE_PROMTOOL`.
fn promtool() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("SLUICE_PROMTOOL").map(PathBuf::from).context(
        "SLUICE_PROMTOOL is unset: run `source tests/setup/promtool.sh` (or tests/run-all), which unpacks Debian's promtool",
    )?;
    ensure!(path.is_file(), "SLUICE_PROMTOOL={} is not a file", path.display());
    Ok(path)
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-monitoring-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Whether every `key: value` of `subset` is in `labels`.
fn selects(subset: &Value, labels: &Value) -> bool {
    subset.as_object().is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

const ALL_ON: [&str; 4] = [
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.podMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboards.enabled=true",
];

#[test]
fn the_monitoring_objects_select_what_the_operator_runs() -> anyhow::Result<()> {
    let monitoring_kinds = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];
    let default = render(&[])?;
    assert!(
        !default
            .iter()
            .any(|o| monitoring_kinds.iter().any(|k| o["kind"] == *k) || o["metadata"]["name"] == "sluice-dashboards"),
        "all off by default"
    );

    let mut sets = ALL_ON.to_vec();
    sets.extend([
        "dataPlane.namespace=llm-dataplanes",
        "monitoring.labels.release=kube-prometheus-stack",
        "monitoring.prometheusRule.alertLabels.team=platform",
        "monitoring.prometheusRule.alertLabels.severity=page",
        "monitoring.prometheusRule.disabledAlerts={SluiceOperatorDown}",
        "monitoring.dashboards.annotations.grafana_folder=Sluice",
    ]);
    let objects = render(&sets)?;
    for kind in monitoring_kinds {
        let object = objects.iter().find(|o| o["kind"] == kind).with_context(|| format!("no {kind}"))?;
        assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1", "{kind}");
        assert_eq!(object["metadata"]["namespace"], "sluice-system", "{kind}");
        assert_eq!(object["metadata"]["labels"]["release"], "kube-prometheus-stack", "{kind}: selectable by label");
        assert!(object["spec"].is_object(), "{kind} has a spec");
    }

    // The ServiceMonitor scrapes the operator's metrics Service, as job="sluice-operator".
    let monitor = find(&objects, "ServiceMonitor", "sluice")?;
    let service = find(&objects, "Service", "sluice-metrics")?;
    assert!(selects(&monitor["spec"]["selector"]["matchLabels"], &service["metadata"]["labels"]), "{monitor}");
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], json!(["sluice-system"]));
    let endpoint = &monitor["spec"]["endpoints"][0];
    let service_ports: Vec<&Value> = service["spec"]["ports"].as_array().into_iter().flatten().collect();
    assert!(service_ports.iter().any(|p| p["name"] == endpoint["port"]), "{endpoint} names a port of the Service");
    assert_eq!((&endpoint["path"], &endpoint["interval"]), (&json!("/metrics"), &json!("30s")));
    let job_label = monitor["spec"]["jobLabel"].as_str().context("jobLabel")?;
    assert_eq!(service["metadata"]["labels"][job_label], "sluice-operator", "the job the alerts select");

    // The PodMonitor selects the gateway pods the operator's own builder makes, in the data-plane
    // namespace, on their named admin port, as job="sluice-gateway".
    let pods = find(&objects, "PodMonitor", "sluice-gateways")?;
    assert_eq!(pods["spec"]["namespaceSelector"]["matchNames"], json!(["llm-dataplanes"]));
    let spec = sluice_crds::api::DataPlaneSpec::default();
    let input =
        DataPlaneInput { slug: "team-a", owner: "team-a/team-a", namespace: "llm-dataplanes", spec: &spec, shards: 0 };
    let deployment = serde_json::to_value(build(&input, &Settings::default()).deployment)?;
    let template = &deployment["spec"]["template"];
    let pod_labels = &template["metadata"]["labels"];
    assert!(selects(&pods["spec"]["selector"]["matchLabels"], pod_labels), "{pods}\nselects none of {pod_labels}");
    let scraped = &pods["spec"]["podMetricsEndpoints"][0];
    let container = &template["spec"]["containers"][0];
    let port = container["ports"].as_array().into_iter().flatten().find(|p| p["name"] == scraped["port"]);
    let port = port.with_context(|| format!("{scraped} names no port of the gateway container {container}"))?;
    assert_eq!(port["containerPort"], sluice_operator::data_plane::ADMIN_PORT, "where the gateway serves /metrics");
    assert_eq!(scraped["path"], "/metrics");
    assert_eq!(scraped["honorLabels"], true, "the gateway's `endpoint` label must not become exported_endpoint");
    let job_label = pods["spec"]["jobLabel"].as_str().context("jobLabel")?;
    assert_eq!(pod_labels[job_label], "sluice-gateway", "the job the alerts and dashboard select");
    let relabel = &scraped["relabelings"][0];
    // Prometheus' Kubernetes discovery spells a pod label with every other character as `_`.
    let source = relabel["sourceLabels"][0].as_str().context("a source label")?;
    let label = pod_labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| {
            source == format!("__meta_kubernetes_pod_label_{}", k.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
        })
        .with_context(|| format!("{source} reads no label of the gateway pods"))?;
    assert_eq!((label.as_str(), &relabel["targetLabel"]), ("sluice.dev/project", &json!("sluice_project")));

    // The PrometheusRule: the alerts of the file, the platform's labels added under the alerts'
    // own, the disabled one left out.
    let rule = find(&objects, "PrometheusRule", "sluice")?;
    let rendered: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    let names: BTreeSet<&str> = rendered.iter().filter_map(|r| r["alert"].as_str()).collect();
    let in_file: BTreeSet<String> = alert_expressions()?.into_iter().map(|(name, _)| name).collect();
    let expected: BTreeSet<&str> = in_file.iter().map(String::as_str).filter(|n| *n != "SluiceOperatorDown").collect();
    assert_eq!(names, expected);
    let docs = std::fs::read_to_string(workspace_root().join("docs/observability.md"))?;
    for alert in &rendered {
        let name = alert["alert"].as_str().context("name")?;
        assert!(alert["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name}: expr");
        assert!(alert["for"].as_str().is_some(), "{name}: for");
        assert_eq!(alert["labels"]["team"], "platform", "{name}: the platform's label");
        assert!(
            ["critical", "warning"].contains(&alert["labels"]["severity"].as_str().unwrap_or_default()),
            "{name}: its own severity wins over the platform's: {}",
            alert["labels"]
        );
        for annotation in ["summary", "description", "runbook_url"] {
            assert!(alert["annotations"][annotation].as_str().is_some(), "{name}: {annotation}");
        }
        let runbook = alert["annotations"]["runbook_url"].as_str().unwrap_or_default();
        assert!(runbook.ends_with(&format!("docs/observability.md#{}", name.to_lowercase())), "{name}: {runbook}");
        assert!(docs.contains(&format!("### {name}\n")), "docs/observability.md has no section for {name}");
    }

    // The dashboard, in a ConfigMap the Grafana sidecar picks up.
    let config_map = find(&objects, "ConfigMap", "sluice-dashboards")?;
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(config_map["metadata"]["annotations"]["grafana_folder"], "Sluice");
    let shipped: Value = serde_json::from_str(config_map["data"]["sluice.json"].as_str().context("sluice.json")?)?;
    assert_eq!(shipped, dashboard()?, "the file as it is");
    assert_eq!(shipped["uid"], "sluice-overview");
    let relabelled = render(&[
        "monitoring.dashboards.enabled=true",
        "monitoring.dashboards.label=dashboards",
        "monitoring.dashboards.labelValue=sluice",
        "monitoring.dashboards.namespace=grafana",
    ])?;
    let config_map = find(&relabelled, "ConfigMap", "sluice-dashboards")?;
    assert_eq!(config_map["metadata"]["labels"]["dashboards"], "sluice");
    assert_eq!(config_map["metadata"]["namespace"], "grafana");
    Ok(())
}

#[test]
fn mistakes_in_the_monitoring_values_are_refused() -> anyhow::Result<()> {
    for (sets, complaint) in [
        (
            vec![
                "monitoring.prometheusRule.enabled=true",
                "monitoring.prometheusRule.disabledAlerts={SluiceGatewayDwn}",
            ],
            "no alert SluiceGatewayDwn",
        ),
        (
            vec!["monitoring.serviceMonitor.enabled=true", "metrics.service.enabled=false"],
            "needs metrics.service.enabled",
        ),
        (vec!["monitoring.podMonitor.interval=30"], "'/monitoring/podMonitor/interval': got number, want string"),
        (vec!["monitoring.podmonitor.enabled=true"], "'podmonitor' not allowed"),
        (vec!["dataPlane.gateway.tracing.samplingRatio=2"], "samplingRatio': maximum: got 2, want 1"),
    ] {
        let refused = render(&sets).expect_err(&format!("{sets:?} refused"));
        assert!(format!("{refused:#}").contains(complaint), "{sets:?}: {refused:#}");
    }
    Ok(())
}

#[test]
fn tracing_values_reach_the_operator_as_flags() -> anyhow::Result<()> {
    let args = |objects: &[Value]| -> anyhow::Result<Vec<String>> {
        let deployment = find(objects, "Deployment", "sluice")?;
        Ok(deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .context("args")?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect())
    };
    let untraced = args(&render(&[])?)?;
    assert!(!untraced.iter().any(|a| a.contains("otlp") || a.contains("traces")), "off by default: {untraced:?}");
    let traced = args(&render(&[
        "dataPlane.gateway.tracing.endpoint=http://otel-collector.observability:4317",
        "dataPlane.gateway.tracing.protocol=grpc",
        "dataPlane.gateway.tracing.headersSecret.name=otlp-auth",
        "dataPlane.gateway.tracing.tls.secretName=collector-tls",
        "dataPlane.gateway.tracing.tls.clientCertificate=true",
        "dataPlane.gateway.tracing.samplingRatio=0.01",
        "dataPlane.gateway.tracing.serviceName=llm-gateway",
        "dataPlane.gateway.tracing.resourceAttributes.deployment\\.environment\\.name=prod",
        "dataPlane.gateway.tracing.resourceAttributes.team=ml",
    ])?)?;
    for expected in [
        "--gateway-otlp-endpoint=http://otel-collector.observability:4317",
        "--gateway-otlp-protocol=grpc",
        "--gateway-otlp-headers-secret=otlp-auth:headers",
        "--gateway-otlp-tls-secret=collector-tls",
        "--gateway-otlp-client-certificate",
        "--gateway-traces-sampler=parentbased_traceidratio",
        "--gateway-traces-sampler-arg=0.01",
        "--gateway-otel-service-name=llm-gateway",
        "--gateway-otel-resource-attributes=deployment.environment.name=prod,team=ml",
    ] {
        assert!(traced.contains(&expected.to_owned()), "{expected} not in {traced:?}");
    }
    // What the operator binary makes of those flags is unit-tested with its Deployment builder
    // (operator/src/data_plane: tracing_reaches_the_pods_as_the_opentelemetry_variables); here,
    // that the binary accepts them.
    let help = output({
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-operator"));
        command.arg("--help");
        command
    })?;
    for flag in traced.iter().filter(|a| a.contains("otlp") || a.contains("traces") || a.contains("otel")) {
        let name = flag.split('=').next().unwrap_or_default();
        assert!(help.contains(name), "sluice-operator has no {name}");
    }
    Ok(())
}

/// The test cases of a promtool unit-test file, by alert: how many expect it to fire, and how
/// many expect it quiet.
fn cases(tests: &Value) -> std::collections::BTreeMap<String, (usize, usize)> {
    let mut cases = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for case in tests["tests"].as_array().into_iter().flatten() {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().unwrap_or_default().to_owned();
            let fires = check["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fires {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    cases
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[test]
fn the_rendered_alerts_pass_promtool_and_their_unit_tests() -> anyhow::Result<()> {
    let promtool = promtool()?;
    let objects = render(&["monitoring.prometheusRule.enabled=true"])?;
    let groups = &find(&objects, "PrometheusRule", "sluice")?["spec"]["groups"];
    let dir = scratch("alerts")?;
    // JSON is YAML: promtool reads the groups as rendered.
    write(&dir.join("alerts.yaml"), &serde_json::to_string_pretty(&json!({"groups": groups}))?)?;
    let tests_text = std::fs::read_to_string(alert_tests_file())?;
    write(&dir.join("alerts.test.yaml"), &tests_text)?;

    let mut check = Command::new(&promtool);
    check.args(["check", "rules", "alerts.yaml"]).current_dir(&dir);
    let checked = output(check)?;
    let alerts = alert_expressions()?;
    assert!(checked.contains(&format!("SUCCESS: {} rules found", alerts.len())), "{checked}");

    let mut test = Command::new(&promtool);
    test.args(["test", "rules", "alerts.test.yaml"]).current_dir(&dir);
    let tested = output(test)?;
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Each alert has a case where it fires and one where it stays quiet.
    let tests = parse_yaml_documents(&tests_text)?.into_iter().next().context("the unit tests")?;
    let cases = cases(&tests);
    for (alert, _) in &alerts {
        let (firing, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(
            firing >= 1 && quiet >= 1,
            "{alert}: {firing} firing and {quiet} quiet cases in {}",
            alert_tests_file().display()
        );
    }
    // A rules file that differs from what was tested fails: the unit tests do check the alerts.
    let broken = std::fs::read_to_string(alerts_file())?.replace("> 0.1\n          and", "> 0.9\n          and");
    write(&dir.join("alerts.yaml"), &broken)?;
    let mut test = Command::new(&promtool);
    test.args(["test", "rules", "alerts.test.yaml"]).current_dir(&dir);
    let failed = test.output()?;
    assert!(!failed.status.success(), "a higher error-rate threshold goes unnoticed");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn every_dashboard_query_is_valid_promql() -> anyhow::Result<()> {
    let promtool = promtool()?;
    let board = dashboard()?;
    let queries = dashboard_expressions(&board);
    ensure!(queries.len() >= 30, "{} queries in {}", queries.len(), dashboard_file().display());
    // Each query as a recording rule: `promtool check rules` parses every expression.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"record": format!("sluice:dashboard_query_{i}"), "expr": without_grafana_variables(q)}))
        .collect();
    let dir = scratch("dashboard")?;
    write(
        &dir.join("dashboard.rules.yaml"),
        &serde_json::to_string_pretty(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))?,
    )?;
    let mut check = Command::new(&promtool);
    check.args(["check", "rules", "dashboard.rules.yaml"]).current_dir(&dir);
    let checked = output(check)?;
    assert!(checked.contains(&format!("SUCCESS: {} rules found", queries.len())), "{checked}");
    // And a broken one is refused: the check does parse.
    write(
        &dir.join("broken.rules.yaml"),
        r#"{"groups": [{"name": "d", "rules": [{"record": "x:y", "expr": "sum(rate(a[5m])"}]}]}"#,
    )?;
    let mut broken = Command::new(&promtool);
    broken.args(["check", "rules", "broken.rules.yaml"]).current_dir(&dir);
    assert!(!broken.output()?.status.success(), "promtool refuses an unclosed parenthesis");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

struct Budgets;

impl KeyBudgets for Budgets {
    fn key_budgets(&self) -> Vec<KeyBudget> {
        vec![KeyBudget { key_id: "team-a/web-app".to_owned(), limit_usd: 50.0, spend_usd: 45.0 }]
    }
}

#[test]
fn every_operator_metric_the_alerts_and_dashboard_use_is_registered() -> anyhow::Result<()> {
    let metrics = Metrics::new();
    // One reconcile that failed, a leader, a key with a budget: a series in every family.
    let error = sluice_operator::Error::Settings("a test".into());
    metrics.reconciled("project", std::time::Duration::from_millis(4), Some(&error));
    metrics.leader.set(1);
    let budgets: Arc<dyn KeyBudgets> = Arc::new(Budgets);
    metrics.follow_key_budgets(Arc::downgrade(&budgets));
    let exported = series_names(&metrics.encode());

    let mut used = BTreeSet::new();
    for expr in dashboard_expressions(&dashboard()?) {
        used.extend(metric_names(&without_grafana_variables(&expr)));
    }
    for (_, expr) in alert_expressions()? {
        used.extend(metric_names(&expr));
    }
    let operator: BTreeSet<&String> = used.iter().filter(|n| n.starts_with("sluice_operator_")).collect();
    for expected in [
        "sluice_operator_reconcile_errors_total",
        "sluice_operator_key_budget_spend_usd",
        "sluice_operator_key_budget_limit_usd",
        "sluice_operator_reconcile_duration_seconds_bucket",
    ] {
        assert!(operator.contains(&expected.to_owned()), "{expected} is not among {operator:?}");
    }
    let missing: Vec<&&String> = operator.iter().filter(|n| !exported.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "not in the operator's registry: {missing:?}\nexported: {exported:?}");
    Ok(())
}
