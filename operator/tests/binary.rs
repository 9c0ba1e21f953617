//! The `sluice-operator` binary: `--help` documents every flag with its environment variable, and
//! the binary runs against a real apiserver from a kubeconfig, elects itself leader and serves
//! `/healthz`, `/readyz` and `/metrics`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::eventually;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use sluice_testenv::TestEnv;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice-operator");

#[test]
fn help_documents_every_flag_and_its_environment_variable() -> anyhow::Result<()> {
    let output = std::process::Command::new(BINARY).arg("--help").output()?;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout)?;
    for (flag, env) in [
        ("--kubeconfig", "KUBECONFIG"),
        ("--watch-namespaces", "SLUICE_WATCH_NAMESPACES"),
        ("--shared-namespace", "SLUICE_SHARED_NAMESPACE"),
        ("--dataplane-namespace", "SLUICE_DATAPLANE_NAMESPACE"),
        ("--gateway-image", "SLUICE_GATEWAY_IMAGE"),
        ("--route-kind", "SLUICE_ROUTE_KIND"),
        ("--ingress-class", "SLUICE_INGRESS_CLASS"),
        ("--gateway-parent", "SLUICE_GATEWAY_PARENT"),
        ("--host", "SLUICE_HOST"),
        ("--public-url", "SLUICE_PUBLIC_URL"),
        ("--leader-election", "SLUICE_LEADER_ELECTION"),
        ("--leader-election-lease", "SLUICE_LEADER_ELECTION_LEASE"),
        ("--leader-election-namespace", "SLUICE_LEADER_ELECTION_NAMESPACE"),
        ("--metrics-listen", "SLUICE_METRICS_LISTEN"),
        ("--spend-status-interval-seconds", "SLUICE_SPEND_STATUS_INTERVAL_SECONDS"),
        ("--log-format", "SLUICE_LOG_FORMAT"),
    ] {
        assert!(help.contains(&format!("{flag} <")), "{flag} missing from --help");
        assert!(help.contains(&format!("[env: {env}=")), "{env} missing from --help");
    }
    assert!(help.contains("httproute") && help.contains("[default: sluice-dataplanes]"));
    Ok(())
}

#[tokio::test]
async fn the_binary_runs_elects_itself_and_serves_metrics() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let tenant = env.namespace("binary").await?;
    let system = env.namespace("binary-system").await?;
    let dataplane = env.namespace("binary-dp").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log_path = env.dir().join(format!("{tenant}-operator.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut child = tokio::process::Command::new(BINARY)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["--watch-namespaces", &tenant, "--shared-namespace", &system, "--dataplane-namespace", &dataplane])
        .args(["--leader-election-namespace", &system, "--identity", "binary-test", "--log-format", "text"])
        .arg(format!("--metrics-listen=127.0.0.1:{port}"))
        .stdout(Stdio::from(log))
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("/readyz", Duration::from_secs(30), || async {
        Ok(match http.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        })
    })
    .await?;
    assert!(http.get(format!("{base}/healthz")).send().await?.status().is_success());
    let leases: Api<Lease> = Api::namespaced(env.client()?, &system);
    eventually("the binary to hold the Lease and say so in /metrics", Duration::from_secs(30), || async {
        let holder = leases.get_opt("sluice-operator").await?.and_then(|l| l.spec?.holder_identity);
        let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
        Ok(if holder.as_deref() == Some("binary-test") && metrics.contains("sluice_operator_leader 1") {
            Ok(())
        } else {
            Err(format!("holder {holder:?}"))
        })
    })
    .await?;
    child.kill().await?;
    // Text logs into a file carry no terminal colour codes.
    let logged = std::fs::read_to_string(&log_path)?;
    assert!(logged.contains(" INFO "), "no log lines in {logged:?}");
    assert!(!logged.contains('\u{1b}'), "escape codes in the log file: {logged:?}");
    Ok(())
}
