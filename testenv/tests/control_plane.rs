//! The harness against itself: the control plane is the pinned release, enforces CRD validation
//! (CEL, bounds, enums), runs the garbage collector and namespace controller, and leaves no
//! process behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use sluice_testenv::{TestEnv, api_status, apply_yaml, install_crds};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// Polls `check` every 200 ms until it returns true or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn serves_the_pinned_kubernetes_release() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let version = env.client()?.apiserver_version().await?;
    assert_eq!(version.git_version, "v1.34.10", "tests/k8s/build.sh pins v1.34.10: {version:?}");
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "34"));
    Ok(())
}

#[tokio::test]
async fn writes_a_kubeconfig_that_kube_can_load() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let kubeconfig = kube::config::Kubeconfig::read_from(env.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), env.server_url());
    let namespaces: Api<Namespace> = Api::all(kube::Client::try_from(config)?);
    namespaces.get("default").await.context("the admin token can read namespaces")?;
    Ok(())
}

#[tokio::test]
async fn hands_out_distinct_labelled_namespaces() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let a = env.namespace("distinct").await?;
    let b = env.namespace("distinct").await?;
    assert_ne!(a, b);
    let namespace = Api::<Namespace>::all(env.client()?).get(&b).await?;
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get(sluice_testenv::NAMESPACE_LABEL).map(String::as_str), Some("true"));
    Ok(())
}

#[tokio::test]
async fn the_apiserver_enforces_cel_bounds_and_enums_of_a_crd() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let client = env.client()?;
    let installed = install_crds(&client, fixtures()).await?;
    assert_eq!(installed, ["widgets.testenv.sluice.dev"]);
    let namespace = env.namespace("widgets").await?;
    let widget = |slug: &str, size: i64, color: &str| {
        format!(
            "apiVersion: testenv.sluice.dev/v1alpha1\nkind: Widget\nmetadata: {{name: w}}\n\
             spec: {{slug: {slug}, size: {size}, color: {color}}}\n"
        )
    };

    let stored = apply_yaml(&client, &namespace, &widget("alpha", 3, "red")).await?;
    assert_eq!(stored[0].data["spec"]["slug"], "alpha");

    let err = apply_yaml(&client, &namespace, &widget("beta", 3, "red")).await.expect_err("slug change");
    let status = api_status(&err).context("a rejection from the apiserver")?;
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    assert!(status.message.contains("spec.slug: Invalid value: \"string\": slug is immutable"), "{}", status.message);

    let err = apply_yaml(&client, &namespace, &widget("alpha", 11, "red")).await.expect_err("size 11");
    let message = &api_status(&err).context("a rejection from the apiserver")?.message;
    assert!(
        message.contains("spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"),
        "{message}"
    );

    let err = apply_yaml(&client, &namespace, &widget("alpha", 3, "purple")).await.expect_err("purple");
    let message = &api_status(&err).context("a rejection from the apiserver")?.message;
    assert!(
        message.contains(r#"spec.color: Unsupported value: "purple": supported values: "red", "green", "blue""#),
        "{message}"
    );

    let unknown = "apiVersion: testenv.sluice.dev/v1alpha1\nkind: Widget\nmetadata: {name: w}\n\
                   spec: {slug: alpha, flavor: mint}\n";
    let err = apply_yaml(&client, &namespace, unknown).await.expect_err("unknown field");
    let message = &api_status(&err).context("a rejection from the apiserver")?.message;
    assert!(message.contains(".spec.flavor: field not declared in schema"), "strict field validation: {message}");
    Ok(())
}

#[tokio::test]
async fn the_garbage_collector_deletes_owned_objects() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("gc").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client()?, &namespace);
    let config_map = |name: &str, owner: Option<OwnerReference>| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..ConfigMap::default()
    };
    let owner = config_maps.create(&PostParams::default(), &config_map("owner", None)).await?;
    let reference = OwnerReference {
        api_version: "v1".to_owned(),
        kind: "ConfigMap".to_owned(),
        name: "owner".to_owned(),
        uid: owner.metadata.uid.context("a stored object has a uid")?,
        ..OwnerReference::default()
    };
    config_maps.create(&PostParams::default(), &config_map("owned", Some(reference))).await?;
    config_maps.delete("owner", &DeleteParams::default()).await?;
    eventually(Duration::from_secs(90), "the garbage collector deletes the owned ConfigMap", || async {
        Ok(config_maps.get_opt("owned").await?.is_none())
    })
    .await
    .with_context(|| env.log_tail("kube-controller-manager", 30))
}

#[tokio::test]
async fn the_namespace_controller_finishes_namespace_deletion() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("doomed").await?;
    let client = env.client()?;
    apply_yaml(&client, &namespace, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n").await?;
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.delete(&namespace, &DeleteParams::default()).await?;
    eventually(Duration::from_secs(90), "namespace deletion completes", || async {
        Ok(namespaces.get_opt(&namespace).await?.is_none())
    })
    .await
    .with_context(|| env.log_tail("kube-controller-manager", 30))
}

/// Linux: the pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
}

/// Supervisors and the binaries under them.
fn process_tree(env: &TestEnv) -> Vec<u32> {
    env.processes().into_iter().flat_map(|(_, pid)| std::iter::once(pid).chain(children(pid))).collect()
}

#[tokio::test]
async fn dropping_an_env_stops_its_processes_and_removes_its_directory() -> anyhow::Result<()> {
    let env = TestEnv::builder().start().await?;
    let pids = process_tree(&env);
    assert!(pids.len() >= 4, "two supervisors and two binaries: {pids:?}");
    let dir = env.dir().to_owned();
    let stopping = Instant::now();
    drop(env);
    eprintln!("dropping a TestEnv took {:.1}s", stopping.elapsed().as_secs_f64());
    let still: Vec<u32> = pids.into_iter().filter(|&pid| alive(pid)).collect();
    assert!(still.is_empty(), "still running after drop: {still:?}");
    assert!(!dir.exists(), "{} still exists", dir.display());
    Ok(())
}

const LIFELINE_CHILD: &str = "SLUICE_TESTENV_LIFELINE_CHILD";

/// Not a test on its own: the process that `processes_die_with_a_killed_test_process` kills.
#[tokio::test]
async fn lifeline_child() -> anyhow::Result<()> {
    let Some(pid_file) = std::env::var_os(LIFELINE_CHILD) else {
        return Ok(());
    };
    let env = TestEnv::shared();
    let pids: Vec<String> = process_tree(env).iter().map(u32::to_string).collect();
    let report = format!("{}\n{}\n", env.dir().display(), pids.join(" "));
    std::fs::write(format!("{}.tmp", Path::new(&pid_file).display()), report)?;
    std::fs::rename(format!("{}.tmp", Path::new(&pid_file).display()), &pid_file)?;
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(())
}

#[tokio::test]
async fn processes_die_with_a_killed_test_process() -> anyhow::Result<()> {
    let pid_file = std::env::temp_dir().join(format!("sluice-testenv-lifeline-{}", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "lifeline_child", "--nocapture"])
        .env(LIFELINE_CHILD, &pid_file)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let started = Instant::now();
    let report = loop {
        if let Ok(report) = std::fs::read_to_string(&pid_file) {
            break report;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the child test process exited early: {status}");
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(180), "the child never reported its pids");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = std::fs::remove_file(&pid_file);
    let mut lines = report.lines();
    let dir = Path::new(lines.next().context("dir line")?).to_owned();
    let pids: Vec<u32> = lines.next().context("pids line")?.split(' ').filter_map(|p| p.parse().ok()).collect();
    assert!(pids.len() >= 6, "three supervisors and three binaries: {pids:?}");
    child.kill()?; // SIGKILL: no destructor, no exit hook runs in the child
    child.wait()?;
    eventually(Duration::from_secs(20), "the control plane stops after its test process is killed", || async {
        Ok(pids.iter().all(|&pid| !alive(pid)))
    })
    .await
    .with_context(|| format!("alive: {:?}", pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()))?;
    eventually(Duration::from_secs(20), "the janitor removes the directory", || async { Ok(!dir.exists()) }).await
}

#[tokio::test]
async fn kubectl_and_helm_work_against_the_control_plane() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("kubectl").await?;
    let manifest = env.dir().join(format!("{namespace}.yaml"));
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-kubectl}\ndata: {k: v}\n")?;
    let output = env.kubectl()?.args(["apply", "-n", &namespace, "-f"]).arg(&manifest).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl apply: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "configmap/from-kubectl created");

    let version = env.kubectl()?.args(["version", "-o", "json"]).output()?;
    let version: serde_json::Value = serde_json::from_slice(&version.stdout)?;
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.34.10");

    let output = env.helm()?.args(["list", "-n", &namespace, "-o", "json"]).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "helm list: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
    Ok(())
}

#[tokio::test]
async fn rbac_is_enforced_for_an_impersonated_user() -> anyhow::Result<()> {
    let env = TestEnv::shared();
    let namespace = env.namespace("rbac").await?;
    let as_jane: Api<ConfigMap> = Api::namespaced(env.client_as("jane", &["tenants"])?, &namespace);
    let err = as_jane.list(&Default::default()).await.expect_err("jane has no role yet");
    let kube::Error::Api(status) = err else { anyhow::bail!("not an apiserver answer: {err}") };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains(r#"User "jane" cannot list resource "configmaps" in API group "" in the namespace"#),
        "{}",
        status.message
    );

    let grant = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: configmap-reader}\n\
                 rules: [{apiGroups: [\"\"], resources: [configmaps], verbs: [get, list]}]\n\
                 ---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: tenants-read}\n\
                 roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}\n\
                 subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: tenants}]\n";
    apply_yaml(&env.client()?, &namespace, grant).await?;
    eventually(Duration::from_secs(10), "the Role and RoleBinding let jane list ConfigMaps", || async {
        Ok(as_jane.list(&Default::default()).await.is_ok())
    })
    .await
}
