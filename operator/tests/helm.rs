//! The Helm chart (`charts/sluice/`): `helm lint` and `helm template` with default and other
//! values, every rendered object validated offline against Kubernetes 1.34's schemas
//! (kubernetes-validate), then the rendered RBAC and Deployment applied to the real apiserver,
//! and an operator run as the chart's ServiceAccount (impersonated) serving the example tenant,
//! leader Lease included: the chart grants what the operator needs.
//!
//! Needs helm and kubectl (tests/setup/kube.sh) and `$SLUICE_PYTHON` with kubernetes-validate
//! (tests/setup/python.sh); fails, never skips, without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use common::{condition, describe, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use serde_json::Value;
use sluice_crds::api::{Project, Provider};
use sluice_operator::settings::{
    LeaderElectionSettings, NetworkPolicySettings, PodDefaults, Settings, WatchedNamespaces,
};
use sluice_testenv::{TestEnv, parse_yaml_documents, workspace_root};

fn chart() -> PathBuf {
    workspace_root().join("charts/sluice")
}

/// Runs a command and returns its stdout; the error quotes stderr.
fn output(mut command: Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let out = command.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn helm(env: &TestEnv, args: &[&str]) -> anyhow::Result<String> {
    let mut command = env.helm()?;
    command.args(args);
    output(command)
}

/// Validates manifests against Kubernetes 1.34's schemas, strictly (unknown fields are errors).
fn kubernetes_validate(manifests: &str, name: &str) -> anyhow::Result<()> {
    let python = std::env::var_os("SLUICE_PYTHON").context(
        "SLUICE_PYTHON is unset: run `source tests/setup/python.sh` (or tests/run-all), which installs kubernetes-validate",
    )?;
    let file = std::env::temp_dir().join(format!("sluice-chart-{}-{name}.yaml", std::process::id()));
    std::fs::write(&file, manifests)?;
    let mut command = Command::new(python);
    command.args(["-m", "kubernetes_validate", "--strict", "--quiet", "-k", "1.34.0"]).arg(&file);
    let result = output(command);
    let _ = std::fs::remove_file(&file);
    result.map(drop)
}

/// `helm template` with `sets`, validated; returns the rendered objects.
fn render(env: &TestEnv, release: &str, namespace: &str, sets: &[&str]) -> anyhow::Result<(String, Vec<Value>)> {
    let chart = chart();
    let chart = chart.to_str().context("chart path")?;
    let mut args = vec!["lint", chart, "--strict", "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(env, &args)?;
    let mut args = vec!["template", release, chart, "--namespace", namespace, "--include-crds"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let yaml = helm(env, &args)?;
    kubernetes_validate(&yaml, release)?;
    Ok((yaml.clone(), parse_yaml_documents(&yaml)?))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in the rendered chart"))
}

fn args_of(objects: &[Value], name: &str) -> anyhow::Result<Vec<String>> {
    let deployment = find(objects, "Deployment", name)?;
    Ok(deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect())
}

fn rules(role: &Value) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        for resource in rule["resources"].as_array().into_iter().flatten() {
            for verb in rule["verbs"].as_array().into_iter().flatten() {
                pairs.push((
                    resource.as_str().unwrap_or_default().to_owned(),
                    verb.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    pairs
}

/// Applies with kubectl, server-side (optionally as a dry run).
fn kubectl_apply(env: &TestEnv, yaml: &str, dry_run: bool) -> anyhow::Result<String> {
    // A file per call: tests apply at once, and two documents may well have the same length.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("sluice-apply-{}-{call}.yaml", std::process::id()));
    std::fs::write(&file, yaml)?;
    let mut command = env.kubectl()?;
    command.args(["apply", "--server-side", "--field-manager=helm-test", "-f"]).arg(&file);
    if dry_run {
        command.arg("--dry-run=server");
    }
    let result = output(command);
    let _ = std::fs::remove_file(Path::new(&file));
    result
}

/// The rendered objects without CRDs (installed already) and without the data-plane Namespace.
fn without_crds(objects: &[Value]) -> anyhow::Result<String> {
    let mut docs = Vec::new();
    for object in objects.iter().filter(|o| o["kind"] != "CustomResourceDefinition") {
        docs.push(serde_json::to_string(object)?);
    }
    Ok(docs.join("\n---\n"))
}

#[tokio::test]
async fn the_default_chart_lints_validates_and_is_accepted() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("helm-default").await?;
    let (_, objects) = render(env, "default-chart", &namespace, &[])?;
    let args = args_of(&objects, "default-chart-sluice")?;
    for expected in [
        "--watch-namespaces=".to_owned(),
        format!("--shared-namespace={namespace}"),
        "--dataplane-namespace=sluice-dataplanes".to_owned(),
        "--gateway-image=ghcr.io/sluice-dev/sluice-gateway:0.1.0".to_owned(),
        "--route-kind=ingress".to_owned(),
        "--leader-election=true".to_owned(),
        "--metrics-listen=0.0.0.0:8080".to_owned(),
    ] {
        assert!(args.contains(&expected), "{expected} not in {args:?}");
    }
    let deployment = find(&objects, "Deployment", "default-chart-sluice")?;
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["containers"][0]["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(pod["containers"][0]["livenessProbe"]["httpGet"]["path"], "/healthz");
    // All namespaces: tenant access comes from the ClusterRole.
    let cluster = rules(find(&objects, "ClusterRole", "default-chart-sluice")?);
    assert!(cluster.contains(&("secrets".into(), "create".into())));
    // Outside the data-plane namespace the operator deletes only the gateways' key Roles, and
    // holds `delete` on ApiKeys only to grant it to them (the key-management API).
    let deletes: Vec<&str> = cluster.iter().filter(|(_, verb)| verb == "delete").map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        deletes,
        ["apikeys", "roles", "rolebindings"],
        "nothing else is deleted outside the data-plane namespace"
    );
    let (_, without) = render(env, "no-keys", "sluice-system", &["dataPlane.gateway.keyManagement=false"])?;
    let without = rules(find(&without, "ClusterRole", "no-keys-sluice")?);
    assert!(!without.contains(&("apikeys".into(), "delete".into())), "no key management, no ApiKey writes");
    assert!(without.contains(&("roles".into(), "delete".into())), "its Roles can still be removed");
    find(&objects, "Namespace", "sluice-dataplanes")?;
    // The operator keeps one replica through node drains, and reads the gateway pods' defaults.
    let budget = find(&objects, "PodDisruptionBudget", "default-chart-sluice")?;
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    let defaults = find(&objects, "ConfigMap", "default-chart-sluice-gateway-pod")?;
    let defaults: Value = serde_json::from_str(defaults["data"]["gateway-pod.json"].as_str().unwrap_or_default())?;
    assert_eq!(defaults, serde_json::json!({"topologySpread": true}), "empty values left out");
    assert!(args.contains(&"--gateway-pod-defaults=/etc/sluice-operator/gateway-pod.json".to_owned()));
    assert!(args.contains(&"--network-policy=false".to_owned()));
    assert!(
        !args.iter().any(|a| a.starts_with("--gateway-trusted-proxies") || a.starts_with("--gateway-proxy-protocol"))
    );

    // The apiserver accepts everything (dry run: the data-plane namespace is not created).
    let objects: Vec<Value> = objects.into_iter().filter(|o| o["kind"] != "Namespace").collect();
    let cluster_scoped: Vec<Value> =
        objects.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding").cloned().collect();
    let in_release: Vec<Value> =
        objects.iter().filter(|o| o["metadata"]["namespace"] == namespace.as_str()).cloned().collect();
    kubectl_apply(env, &without_crds(&cluster_scoped)?, true)?;
    kubectl_apply(env, &without_crds(&in_release)?, true)?;
    Ok(())
}

#[tokio::test]
async fn the_chart_installs_and_upgrades_as_the_docs_say() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("helm-upgrade").await?;
    let dataplane = env.namespace("helm-upgrade-dp").await?;
    let chart = chart();
    let chart = chart.to_str().context("chart path")?;
    let release = "upgrade-test";
    let dp_value = format!("dataPlane.namespace={dataplane}");
    // A real install (the CRDs are the test control plane's already, as after a first install).
    helm(
        env,
        &[
            "install",
            release,
            chart,
            "-n",
            &namespace,
            "--skip-crds",
            "--set",
            &dp_value,
            "--set",
            "dataPlane.createNamespace=false",
        ],
    )?;
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client()?, &namespace);
    let replicas = || async {
        let deployment = deployments.get("upgrade-test-sluice").await?;
        anyhow::Ok(deployment.spec.and_then(|s| s.replicas))
    };
    assert_eq!(replicas().await?, Some(2));

    // docs/install.md's upgrade: the CRDs server-side first, then the release.
    let crds = workspace_root().join("charts/sluice/crds");
    let mut apply = env.kubectl()?;
    apply.args(["apply", "--server-side", "--force-conflicts", "-f"]).arg(&crds);
    let applied = output(apply)?;
    assert!(applied.contains("projects.sluice.dev serverside-applied"), "{applied}");
    helm(env, &["upgrade", release, chart, "-n", &namespace, "--reuse-values", "--set", "operator.replicas=3"])?;
    assert_eq!(replicas().await?, Some(3), "the upgrade took");
    let history = helm(env, &["history", release, "-n", &namespace, "-o", "json"])?;
    let history: Value = serde_json::from_str(&history)?;
    assert_eq!(history.as_array().map(Vec::len), Some(2));
    helm(env, &["uninstall", release, "-n", &namespace])?;
    Ok(())
}

#[tokio::test]
async fn the_operator_and_gateway_pods_pass_the_restricted_pod_security_level() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("helm-restricted").await?;
    let client = env.client()?;
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let enforce = serde_json::json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    namespaces.patch(&namespace, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&enforce)).await?;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, &namespace);
    let dry_run = kube::api::PostParams { dry_run: true, ..kube::api::PostParams::default() };

    // Pod Security admission judges Pods: create each template as a Pod, server-side dry run.
    let as_pod = |name: &str, template: Value| -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
        let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}});
        pod["spec"] = template["spec"].clone();
        Ok(serde_json::from_value(pod)?)
    };
    let (_, objects) = render(env, "restricted", &namespace, &[])?;
    let operator = find(&objects, "Deployment", "restricted-sluice")?["spec"]["template"].clone();
    pods.create(&dry_run, &as_pod("operator", operator)?).await.context("the operator's pod under `restricted`")?;

    let spec = sluice_crds::api::DataPlaneSpec::default();
    let input = sluice_operator::data_plane::DataPlaneInput {
        slug: "team-a",
        owner: "team-a/team-a",
        namespace: &namespace,
        spec: &spec,
        shards: 2,
    };
    let objects = sluice_operator::data_plane::build(&input, &Settings::default());
    let gateway = serde_json::to_value(&objects.deployment)?["spec"]["template"].clone();
    pods.create(&dry_run, &as_pod("gateway", gateway)?).await.context("a gateway pod under `restricted`")?;

    // The level is enforced: a pod running as root is refused.
    let root = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "x"}]}});
    let refused = pods.create(&dry_run, &as_pod("root", root)?).await.expect_err("refused");
    assert!(refused.to_string().contains("restricted"), "{refused}");
    Ok(())
}

#[test]
fn a_bad_values_file_is_refused_by_the_schema() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let chart = chart();
    let chart = chart.to_str().context("chart path")?;
    let dir = tempfile_dir()?;
    for (values, complaint) in [
        ("operator:\n  replica: 3\n", "additional properties 'replica' not allowed"),
        ("operator:\n  replicas: two\n", "want integer"),
        ("route:\n  kind: ingres\n", "value must be one of"),
        ("dataPlane:\n  gateway:\n    pod:\n      nodeSelecter: {a: b}\n", "'nodeSelecter' not allowed"),
        ("watchNamespaces: [Team_A]\n", "does not match pattern"),
        ("dataPlane:\n  gateway:\n    proxyProtocol: v3\n", "value must be one of"),
        ("dataPlane:\n  gateway:\n    trustedProxies: [everyone]\n", "does not match pattern"),
        ("dataPlane:\n  gateway:\n    proxyProtocol: required\n", "needs dataPlane.gateway.trustedProxies"),
    ] {
        let file = dir.join("values.yaml");
        std::fs::write(&file, values)?;
        let file = file.to_str().context("path")?;
        let refused = helm(env, &["template", "bad", chart, "-f", file]).expect_err(&format!("{values:?} refused"));
        assert!(format!("{refused:#}").contains(complaint), "{values:?}: {refused:#}");
    }
    // A good file of several values passes.
    let file = dir.join("good.yaml");
    std::fs::write(
        &file,
        "operator: {replicas: 3, logFormat: text}\nroute: {kind: none}\n\
         dataPlane: {redis: {secretName: limits-redis}, gateway: {pod: {topologySpread: false, terminationGracePeriodSeconds: 60}, \
         trustedProxies: [10.244.0.0/16, \"fd00::/8\"], proxyProtocol: optional}}\n",
    )?;
    helm(env, &["lint", chart, "--strict", "-f", file.to_str().context("path")?])?;
    let rendered = helm(env, &["template", "good", chart, "-f", file.to_str().context("path")?])?;
    assert!(rendered.contains("--gateway-trusted-proxies=10.244.0.0/16,fd00::/8"), "{rendered}");
    assert!(rendered.contains("--gateway-proxy-protocol=optional"));
    Ok(())
}

/// A fresh directory for this test's files.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("sluice-helm-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::test]
async fn the_chart_grants_what_the_operator_needs() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let release_ns = env.namespace("helm-sys").await?;
    let tenant = env.namespace("helm-tenant").await?;
    let dataplane = env.namespace("helm-dp").await?;
    let sets = [
        format!("watchNamespaces={{{tenant}}}"),
        format!("dataPlane.namespace={dataplane}"),
        "dataPlane.createNamespace=false".to_owned(),
        "route.kind=httproute".to_owned(),
        "route.gatewayParent=infra/public/https".to_owned(),
        "route.host=llm.example.com".to_owned(),
        "operator.replicas=3".to_owned(),
        "dataPlane.gateway.image.tag=dev".to_owned(),
        "dataPlane.networkPolicy.enabled=true".to_owned(),
        "dataPlane.networkPolicy.ingressNamespaces={ingress-nginx}".to_owned(),
        "dataPlane.networkPolicy.monitoringNamespaces={monitoring,observability}".to_owned(),
        "dataPlane.gateway.pod.priorityClassName=gateways".to_owned(),
        "dataPlane.redis.secretName=limits-redis".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let release = "rbac-chart";
    let (_, objects) = render(env, release, &release_ns, &sets)?;
    let args = args_of(&objects, "rbac-chart-sluice")?;
    for expected in [
        format!("--watch-namespaces={tenant}"),
        format!("--dataplane-namespace={dataplane}"),
        "--route-kind=httproute".to_owned(),
        "--gateway-parent=infra/public/https".to_owned(),
        "--host=llm.example.com".to_owned(),
        "--gateway-image=ghcr.io/sluice-dev/sluice-gateway:dev".to_owned(),
        "--network-policy=true".to_owned(),
        "--network-policy-ingress-namespaces=ingress-nginx".to_owned(),
        "--network-policy-monitoring-namespaces=monitoring,observability".to_owned(),
        "--gateway-redis-secret=limits-redis:url".to_owned(),
        "--gateway-key-management=true".to_owned(),
    ] {
        assert!(args.contains(&expected), "{expected} not in {args:?}");
    }
    let defaults = find(&objects, "ConfigMap", "rbac-chart-sluice-gateway-pod")?;
    let defaults: PodDefaults =
        serde_json::from_str(defaults["data"]["gateway-pod.json"].as_str().unwrap_or_default())?;
    assert_eq!(defaults.priority_class_name.as_deref(), Some("gateways"), "read as the operator reads it");
    assert!(objects.iter().all(|o| o["kind"] != "Namespace"));
    // A watch list: no Secret access cluster-wide, Roles in the tenant and shared namespaces.
    let cluster = rules(find(&objects, "ClusterRole", "rbac-chart-sluice")?);
    assert!(!cluster.iter().any(|(resource, _)| resource == "secrets"), "{cluster:?}");
    let roles: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "rbac-chart-sluice")
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(roles, [release_ns.as_str(), tenant.as_str()]);
    let dataplane_role = rules(find(&objects, "Role", "rbac-chart-sluice-dataplane")?);
    assert!(dataplane_role.contains(&("httproutes".into(), "patch".into())));
    for resource in ["poddisruptionbudgets", "horizontalpodautoscalers", "networkpolicies"] {
        assert!(dataplane_role.contains(&(resource.into(), "patch".into())), "{resource}: {dataplane_role:?}");
    }

    // Install for real, without the HTTPRoute rule's CRD concerns: RBAC accepts unknown resources.
    kubectl_apply(env, &without_crds(&objects)?, false)?;

    // Run the operator with exactly the chart's permissions, leader election included.
    let service_account = format!("system:serviceaccount:{release_ns}:rbac-chart-sluice");
    let client =
        env.client_as(&service_account, &["system:serviceaccounts", &format!("system:serviceaccounts:{release_ns}")])?;
    let settings = Settings {
        namespaces: WatchedNamespaces::Only(vec![tenant.clone()]),
        shared_namespace: release_ns.clone(),
        dataplane_namespace: dataplane.clone(),
        leader_election: Some(LeaderElectionSettings::new(&release_ns, "sluice-operator")),
        identity: "chart-test".to_owned(),
        network_policy: Some(NetworkPolicySettings {
            ingress_namespaces: vec!["ingress-nginx".into()],
            monitoring_namespaces: vec!["monitoring".into()],
            operator_namespace: Some(release_ns.clone()),
        }),
        ..Settings::default()
    };
    let operator = tokio::spawn(sluice_operator::run(client, settings, std::future::pending()));
    let admin = env.client()?;
    let examples = workspace_root().join("examples/kubernetes");
    for file in ["10-tiers.yaml", "20-providers.yaml", "30-project.yaml", "40-endpoints.yaml", "50-apikeys.yaml"] {
        let yaml = std::fs::read_to_string(examples.join(file))?.replace("sluice-system", &release_ns);
        for doc in yaml.split("\n---") {
            let target =
                if doc.contains("kind: Provider") || doc.contains("-credentials") { &release_ns } else { &tenant };
            if doc.lines().any(|l| l.starts_with("kind:")) {
                sluice_testenv::apply_yaml(&admin, target, doc).await?;
            }
        }
    }
    // No kubelet here: a stand-in reports the gateway Deployment rolled out.
    let _rollouts = sluice_testenv::Rollouts::start(admin.clone(), &dataplane);
    let projects: Api<Project> = Api::namespaced(admin.clone(), &tenant);
    let waited = eventually("the Project to be Ready under the chart's RBAC", Duration::from_secs(60), || async {
        if operator.is_finished() {
            return Ok(Err("the operator stopped".to_owned()));
        }
        let conditions = projects.get("team-a").await?.status.map(|s| s.conditions).unwrap_or_default();
        Ok(match condition(&conditions, "Ready") {
            Some(c) if c.status == "True" => Ok(()),
            _ => Err(describe(&conditions)),
        })
    })
    .await;
    if operator.is_finished() {
        let result = operator.await?;
        bail!("the operator stopped: {result:?}");
    }
    waited?;
    // Disruption budget and network policy, under the chart's RBAC too.
    let budgets = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &dataplane);
    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), &dataplane);
    ensure!(budgets.get_opt("sluice-gw-team-a").await?.is_some(), "the gateway's PodDisruptionBudget");
    ensure!(policies.get_opt("sluice-gw-team-a").await?.is_some(), "the gateway's NetworkPolicy");
    // The key-management API: the gateway may write the ApiKeys of its tenant's namespace only,
    // and nothing else there; the operator could grant it under the chart's RBAC.
    let gateway = format!("system:serviceaccount:{dataplane}:sluice-gw-team-a");
    for (verb, resource, namespace, expected) in [
        ("create", "apikeys.sluice.dev", &tenant, true),
        ("delete", "apikeys.sluice.dev", &tenant, true),
        ("update", "apikeys.sluice.dev", &tenant, true),
        ("create", "apikeys.sluice.dev", &release_ns, false),
        ("get", "secrets", &tenant, false),
        ("create", "endpoints.sluice.dev", &tenant, false),
    ] {
        let allowed = can_i(env, &gateway, verb, resource, namespace)?;
        ensure!(allowed == expected, "kubectl auth can-i {verb} {resource} -n {namespace} --as {gateway}: {allowed}");
    }
    // The Provider finalizer is the operator's to write, under the chart's RBAC too.
    let providers: Api<Provider> = Api::namespaced(admin.clone(), &release_ns);
    eventually("the Provider finalizer under the chart's RBAC", Duration::from_secs(30), || async {
        let finalizers = providers.get("deepseek").await?.metadata.finalizers.unwrap_or_default();
        Ok(if finalizers.iter().any(|f| f == "sluice.dev/provider-in-use") {
            Ok(())
        } else {
            Err(format!("{finalizers:?}"))
        })
    })
    .await?;
    let lease = Api::<Lease>::namespaced(admin, &release_ns).get("sluice-operator").await?;
    ensure!(
        lease.spec.and_then(|s| s.holder_identity).as_deref() == Some("chart-test"),
        "the operator holds the leader Lease"
    );
    operator.abort();
    Ok(())
}

/// `kubectl auth can-i VERB RESOURCE -n NAMESPACE --as USER`: whether the apiserver says yes.
fn can_i(env: &TestEnv, user: &str, verb: &str, resource: &str, namespace: &str) -> anyhow::Result<bool> {
    let mut command = env.kubectl()?;
    let (resource, subresource) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
    command.args(["auth", "can-i", verb, resource, "-n", namespace, "--as", user]);
    if let Some(subresource) = subresource {
        command.args(["--subresource", subresource]);
    }
    let out = command.output().context("running kubectl auth can-i")?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => {
            bail!("kubectl auth can-i {verb} {resource} answered {other:?}: {}", String::from_utf8_lossy(&out.stderr))
        }
    }
}

#[tokio::test]
async fn tenant_roles_open_endpoints_and_keys_of_their_namespace_only() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let release_ns = env.namespace("helm-roles").await?;
    let team_a = env.namespace("roles-a").await?;
    let team_b = env.namespace("roles-b").await?;
    let dataplane = env.namespace("roles-dp").await?;
    let sets = [format!("dataPlane.namespace={dataplane}"), "dataPlane.createNamespace=false".to_owned()];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let (_, objects) = render(env, "roles-chart", &release_ns, &sets)?;
    let edit = find(&objects, "ClusterRole", "roles-chart-sluice-tenant-edit")?;
    let view = find(&objects, "ClusterRole", "roles-chart-sluice-tenant-view")?;
    assert_eq!(edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true");
    assert_eq!(view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"], "true");
    let edit_rules = rules(edit);
    assert!(edit_rules.contains(&("apikeys".into(), "create".into())));
    assert!(
        !edit_rules.iter().any(|(resource, verb)| (resource == "projects" || resource == "servicetiers")
            && !["get", "list", "watch"].contains(&verb.as_str())),
        "tenants never write Projects or ServiceTiers: {edit_rules:?}"
    );
    assert!(!edit_rules.iter().any(|(resource, _)| resource.ends_with("/status")), "status is the operator's");
    // Without aggregation the labels are gone.
    let (_, plain) = render(env, "roles-plain", &release_ns, &["tenantRoles.aggregateToDefaultRoles=false"])?;
    let plain_edit = find(&plain, "ClusterRole", "roles-plain-sluice-tenant-edit")?;
    assert!(plain_edit["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-edit").is_none());

    kubectl_apply(env, &without_crds(&[edit.clone(), view.clone()])?, false)?;
    let admin = env.client()?;
    let binding = |name: &str, role: &str, user: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
        )
    };
    // Kubernetes' own roles, as a platform team binds them: the tenant roles arrive by aggregation.
    sluice_testenv::apply_yaml(&admin, &team_a, &binding("alice-edit", "edit", "alice")).await?;
    sluice_testenv::apply_yaml(&admin, &team_a, &binding("bob-view", "view", "bob")).await?;
    eventually("the tenant roles to be aggregated into edit and view", Duration::from_secs(30), || async {
        let edit = can_i(env, "alice", "create", "endpoints.sluice.dev", &team_a)?;
        let view = can_i(env, "bob", "list", "apikeys.sluice.dev", &team_a)?;
        Ok(if edit && view {
            Ok(())
        } else {
            Err(format!("alice may create endpoints: {edit}, bob may list keys: {view}"))
        })
    })
    .await?;
    for (user, verb, resource, namespace, expected) in [
        ("alice", "create", "apikeys.sluice.dev", &team_a, true),
        ("alice", "delete", "providers.sluice.dev", &team_a, true),
        ("alice", "get", "projects.sluice.dev", &team_a, true),
        ("alice", "create", "projects.sluice.dev", &team_a, false),
        ("alice", "patch", "endpoints.sluice.dev/status", &team_a, false),
        ("alice", "create", "servicetiers.sluice.dev", &team_a, false),
        ("alice", "get", "secrets", &dataplane, false),
        ("alice", "create", "endpoints.sluice.dev", &team_b, false),
        ("bob", "get", "endpoints.sluice.dev", &team_a, true),
        ("bob", "create", "endpoints.sluice.dev", &team_a, false),
    ] {
        let allowed = can_i(env, user, verb, resource, namespace)?;
        assert_eq!(allowed, expected, "kubectl auth can-i {verb} {resource} -n {namespace} --as {user}");
    }

    // Real requests as alice.
    let alice = env.client_as("alice", &["system:authenticated"])?;
    let endpoint = "apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {name: chat}\nspec:\n  slug: chat\n  \
                    models:\n    - name: m\n      backends:\n        - providerRef: {name: p}\n          model: m\n";
    let key = "apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: app}\nspec: {scopes: [inference]}\n";
    let project = "apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {name: squat}\n\
                   spec: {slug: squat, defaultTier: standard}\n";
    sluice_testenv::apply_yaml(&alice, &team_a, endpoint)
        .await
        .context("alice creates an Endpoint in her namespace")?;
    sluice_testenv::apply_yaml(&alice, &team_a, key).await.context("alice creates an ApiKey in her namespace")?;
    let forbidden = |result: anyhow::Result<Vec<kube::api::DynamicObject>>, what: &str| -> anyhow::Result<()> {
        match result {
            Ok(_) => bail!("alice could {what}"),
            Err(error) => {
                let text = format!("{error:?}");
                ensure!(text.contains("forbidden") || text.contains("Forbidden"), "{what}: {text}");
                Ok(())
            }
        }
    };
    forbidden(sluice_testenv::apply_yaml(&alice, &team_a, project).await, "create a Project")?;
    forbidden(sluice_testenv::apply_yaml(&alice, &team_b, endpoint).await, "create an Endpoint in another namespace")?;
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(alice.clone(), &dataplane)
        .list(&Default::default())
        .await;
    match secrets {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => bail!("alice listed the data-plane Secrets: {other:?}"),
    }
    Ok(())
}
