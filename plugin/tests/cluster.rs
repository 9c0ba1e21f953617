//! `kubectl sluice` against a real apiserver, the operator (in-process) and a real
//! `sluice-gateway` process that watches its config through the apiserver, serving a simulated
//! provider: every command's table and JSON output is checked, and what the key commands do is
//! checked where it matters, on the gateway.

#[path = "../../operator/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Gateway, World, eventually};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use reqwest::StatusCode;
use serde_json::Value;
use sluice_crds::api::ApiKey;
use sluice_crds::config::hash_key;

const WAIT: Duration = Duration::from_secs(60);
/// How long a key change may take to reach the gateway in these tests.
const SOON: Duration = Duration::from_secs(10);

/// One run of the plugin binary.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> anyhow::Result<Value> {
        anyhow::ensure!(self.ok, "the command failed: {}", self.stderr);
        Ok(serde_json::from_str(&self.stdout)?)
    }
}

/// Runs `kubectl-sluice` with `args` and no environment of the developer's.
async fn plugin(args: &[&str]) -> anyhow::Result<Run> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("SLUICE_API_KEY")
        .env_remove("SLUICE_DATAPLANE_NAMESPACE")
        .output()
        .await?;
    let run = Run {
        ok: output.status.success(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    };
    eprintln!("$ kubectl sluice {}\n{}{}", args.join(" "), run.stdout, run.stderr);
    Ok(run)
}

/// A world with the simulated tenant `slug` and a gateway reporting usage every second.
async fn tenant(name: &str, slug: &str) -> anyhow::Result<(World, Gateway)> {
    let world = World::start(name).await?;
    world.apply_simulated_tenant(slug).await?;
    // A tier with a limit, so that responses carry `x-ratelimit-*` headers.
    let tier = format!("{}-tier", world.tenant);
    world
        .apply(&format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: ServiceTier\nmetadata: {{name: {tier}}}\nspec: {{limits: {{requestsPerMinute: 600}}}}\n"
        ))
        .await?;
    eventually("the endpoint and the tier's limit in the configuration", WAIT, || async {
        let config = world.config(slug).await?;
        let ready = config.is_some_and(|c| {
            c.endpoints.contains_key("chat") && c.tiers.get(&tier).is_some_and(|t| t.requests_per_minute == Some(600))
        });
        Ok(if ready { Ok(()) } else { Err("not yet".into()) })
    })
    .await?;
    let dp = &world.dataplane;
    let extra = [
        "--usage-configmap".to_owned(),
        format!("{dp}/sluice-usage-{slug}"),
        "--pod-name".to_owned(),
        format!("gw-{slug}-0"),
        "--usage-report-seconds".to_owned(),
        "1".to_owned(),
    ];
    let gateway = Gateway::start_with(world.env, &format!("{dp}/sluice-config-{slug}"), &extra).await?;
    Ok((world, gateway))
}

async fn models_status(gateway: &Gateway, slug: &str, key: &str) -> anyhow::Result<StatusCode> {
    let url = format!("{}/{slug}/chat/v1/models", gateway.base);
    Ok(reqwest::Client::new().get(url).bearer_auth(key).send().await?.status())
}

/// Waits until the gateway answers `want` to `key`.
async fn gateway_answers(gateway: &Gateway, slug: &str, key: &str, want: StatusCode) -> anyhow::Result<()> {
    eventually(&format!("the gateway to answer {want}"), SOON, || async {
        let status = models_status(gateway, slug, key).await?;
        Ok(if status == want { Ok(()) } else { Err(format!("{status}; log:\n{}", gateway.log_tail())) })
    })
    .await
}

/// The line of a table whose first column is `name`.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .find(|l| l.split("  ").next() == Some(name))
        .map(|l| l.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect())
}

/// Every Secret's data in `namespace`, decoded, joined.
async fn all_secret_text(world: &World, namespace: &str) -> anyhow::Result<String> {
    let secrets: Api<Secret> = world.api(namespace);
    let mut text = String::new();
    for secret in secrets.list(&Default::default()).await? {
        for value in secret.data.unwrap_or_default().values() {
            text.push_str(&String::from_utf8_lossy(&value.0));
        }
        for value in secret.string_data.unwrap_or_default().values() {
            text.push_str(value);
        }
    }
    Ok(text)
}

/// A copy of the env's kubeconfig whose context defaults to `namespace`.
fn kubeconfig_in(world: &World, namespace: &str) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(world.env.kubeconfig())?;
    anyhow::ensure!(text.contains("namespace: default\n"), "unexpected kubeconfig:\n{text}");
    let path = world.env.dir().join(format!("kubeconfig-{namespace}"));
    std::fs::write(&path, text.replace("namespace: default\n", &format!("namespace: {namespace}\n")))?;
    Ok(path)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[tokio::test]
async fn keys_are_created_listed_rotated_and_revoked_on_a_live_gateway() -> anyhow::Result<()> {
    let (world, gateway) = tenant("plugin-keys", "pk").await?;
    let kubeconfig = world.env.kubeconfig().to_owned();
    let (kc, ns) = (path(&kubeconfig), world.tenant.as_str());

    // Create, JSON: the key is printed once, stored as its hash only, and works.
    let created = plugin(&[
        "keys",
        "create",
        "app",
        "--scopes",
        "inference,usage.read",
        "--budget-usd",
        "5",
        "--kubeconfig",
        kc,
        "-n",
        ns,
        "-o",
        "json",
    ])
    .await?
    .json()?;
    let key = created["key"].as_str().expect("a key field").to_owned();
    assert!(key.starts_with("sl_pk_") && key.len() > 40, "{key}");
    assert_eq!(created["name"], "app");
    assert_eq!(created["prefix"], key[..12]);
    assert_eq!(created["scopes"], serde_json::json!(["inference", "usage.read"]));
    let apikeys: Api<ApiKey> = world.api(ns);
    let stored = apikeys.get("app").await?.spec.key_hash.expect("spec.keyHash");
    assert_eq!(stored.sha256, hash_key(key.as_bytes()));
    gateway_answers(&gateway, "pk", &key, StatusCode::OK).await?;
    for namespace in [&world.tenant, &world.dataplane, &world.shared] {
        let secrets = all_secret_text(&world, namespace).await?;
        assert!(!secrets.contains(&key[12..]), "a Secret in {namespace} holds the key");
    }

    // Create, table: the namespace from the kubeconfig's context, a note that the key is shown once.
    let in_tenant = kubeconfig_in(&world, ns)?;
    let web = plugin(&[
        "keys",
        "create",
        "web",
        "--description",
        "the web app",
        "--expires-in",
        "30d",
        "--kubeconfig",
        path(&in_tenant),
        "--context",
        "sluice-testenv",
    ])
    .await?;
    assert!(web.ok, "{}", web.stderr);
    assert!(web.stdout.contains("will not be shown again"), "{}", web.stdout);
    let web_key =
        web.stdout.lines().find(|l| l.starts_with("sl_pk_")).expect("the key on a line of its own").to_owned();
    assert!(web.stdout.contains(&format!("apikey/web created in namespace {ns}")));
    gateway_answers(&gateway, "pk", &web_key, StatusCode::OK).await?;

    // List: table and JSON, once the operator has marked the keys Ready.
    let listed = eventually("both keys Ready in keys list", WAIT, || async {
        let run = plugin(&["keys", "list", "--kubeconfig", kc, "-n", ns]).await?;
        let ready = ["app", "web"].iter().all(|n| row(&run.stdout, n).is_some_and(|r| r.contains(&"True")));
        Ok(if ready { Ok(run.stdout) } else { Err(run.stdout + &run.stderr) })
    })
    .await?;
    let header: Vec<&str> = listed.lines().next().expect("a header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "PREFIX", "SCOPES", "TIER", "EXPIRES", "SPEND", "READY", "AGE"]);
    let app = row(&listed, "app").expect("app's row");
    assert_eq!(&app[..3], ["app", &key[..12], "inference,usage.read"], "{listed}");
    assert!(app.contains(&"/ $5 monthly") || app.iter().any(|c| c.ends_with("/ $5 monthly")), "{app:?}");
    assert!(!listed.contains(&stored.sha256), "no hash in the table");
    let web_row = row(&listed, "web").expect("web's row");
    assert_eq!(web_row[2], "inference");
    let list = plugin(&["keys", "list", "--kubeconfig", kc, "-n", ns, "-o", "json"]).await?.json()?;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.iter().map(|i| i["name"].as_str().unwrap_or_default()).collect::<Vec<_>>(), ["app", "web"]);
    assert_eq!(items[0]["ready"], "True");
    assert_eq!(items[0]["source"], "hash");
    assert_eq!(items[0]["budget"]["limitUsd"], 5.0);
    assert!(items[1]["expiresAt"].as_str().is_some_and(|t| t.starts_with('2')), "{}", items[1]);
    assert!(!list.to_string().contains(&key[12..]) && !list.to_string().contains(&stored.sha256));

    // Get: one key, never its material.
    let got = plugin(&["keys", "get", "web", "--kubeconfig", kc, "-n", ns]).await?;
    assert!(got.stdout.contains("Description:") && got.stdout.contains("the web app"), "{}", got.stdout);
    assert!(got.stdout.contains("Ready:") && got.stdout.contains("True"));
    assert!(!got.stdout.contains(&web_key[12..]) && !got.stdout.contains(&hash_key(web_key.as_bytes())));
    let yaml: Value = serde_saphyr::from_str(
        &plugin(&["keys", "get", "web", "--kubeconfig", kc, "-n", ns, "-o", "yaml"]).await?.stdout,
    )?;
    assert_eq!(yaml["description"], "the web app");
    assert!(!plugin(&["keys", "get", "nope", "--kubeconfig", kc, "-n", ns]).await?.ok);

    // Rotate a hashed key: the new key works, the old one too during its grace.
    let rotated = plugin(&["keys", "rotate", "app", "--grace", "1h", "--kubeconfig", kc, "-n", ns, "-o", "json"])
        .await?
        .json()?;
    let new_key = rotated["key"].as_str().expect("the new key").to_owned();
    assert_ne!(new_key, key);
    let spec = apikeys.get("app").await?.spec.key_hash.expect("keyHash");
    assert_eq!(spec.sha256, hash_key(new_key.as_bytes()));
    assert_eq!(spec.previous.as_ref().map(|p| p.sha256.as_str()), Some(stored.sha256.as_str()));
    assert_eq!(rotated["prefix"], new_key[..12]);
    assert!(
        rotated["previousKeyExpiresAt"].as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
        "{rotated}"
    );
    gateway_answers(&gateway, "pk", &new_key, StatusCode::OK).await?;
    assert_eq!(models_status(&gateway, "pk", &key).await?, StatusCode::OK, "the old key works during the grace");
    // With no grace the old key stops.
    let rotated = plugin(&["keys", "rotate", "web", "--grace", "0s", "--kubeconfig", kc, "-n", ns]).await?;
    assert!(rotated.stdout.contains("will not be shown again"), "{}", rotated.stderr);
    assert!(rotated.stdout.contains("the old key stops working now"), "{}", rotated.stdout);
    let new_web = rotated.stdout.lines().find(|l| l.starts_with("sl_pk_")).expect("the new key").to_owned();
    gateway_answers(&gateway, "pk", &new_web, StatusCode::OK).await?;
    gateway_answers(&gateway, "pk", &web_key, StatusCode::UNAUTHORIZED).await?;

    // Rotate a generated key: a rotation request; a key from the tenant's own Secret: refused.
    world.apply("apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: generated}\nspec: {}\n---\napiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: own}\nspec: {secretRef: {name: my-key}}\n").await?;
    let requested = plugin(&["keys", "rotate", "generated", "--grace", "10m", "--kubeconfig", kc, "-n", ns]).await?;
    assert!(requested.ok && requested.stdout.contains("rotation requested"), "{}", requested.stderr);
    let rotation = apikeys.get("generated").await?.spec.rotation.expect("spec.rotation");
    assert_eq!(rotation.grace_period_seconds, 600);
    let refused = plugin(&["keys", "rotate", "own", "--kubeconfig", kc, "-n", ns]).await?;
    assert!(!refused.ok && refused.stderr.contains("Secret my-key"), "{}", refused.stderr);

    // Revoke: the ApiKey is gone and the key stops working.
    let revoked = plugin(&["keys", "revoke", "app", "--kubeconfig", kc, "-n", ns]).await?;
    assert!(revoked.ok && revoked.stdout.contains("apikey/app deleted"), "{}", revoked.stderr);
    assert!(apikeys.get_opt("app").await?.is_none());
    gateway_answers(&gateway, "pk", &new_key, StatusCode::UNAUTHORIZED).await?;
    gateway_answers(&gateway, "pk", &key, StatusCode::UNAUTHORIZED).await?;
    Ok(())
}

#[tokio::test]
async fn endpoints_status_test_and_usage_show_the_project() -> anyhow::Result<()> {
    let (world, gateway) = tenant("plugin-view", "pv").await?;
    let kubeconfig = world.env.kubeconfig().to_owned();
    let (kc, ns, dp) = (path(&kubeconfig), world.tenant.as_str(), world.dataplane.as_str());
    let created = plugin(&[
        "keys",
        "create",
        "reader",
        "--scopes",
        "inference,usage.read",
        "--kubeconfig",
        kc,
        "-n",
        ns,
        "-o",
        "json",
    ])
    .await?
    .json()?;
    let key = created["key"].as_str().expect("key").to_owned();
    gateway_answers(&gateway, "pv", &key, StatusCode::OK).await?;

    // Endpoints: URL, models, Ready.
    let listed = eventually("the endpoint Ready", WAIT, || async {
        let run = plugin(&["endpoints", "list", "--kubeconfig", kc, "-n", ns]).await?;
        Ok(if row(&run.stdout, "chat").is_some_and(|r| r.contains(&"True")) {
            Ok(run.stdout)
        } else {
            Err(run.stdout + &run.stderr)
        })
    })
    .await?;
    let header: Vec<&str> = listed.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "URL", "MODELS", "TIER", "READY", "AGE"]);
    let chat = row(&listed, "chat").expect("chat");
    assert!(chat[1].ends_with("/pv/chat/v1"), "{chat:?}");
    assert_eq!(chat[2], "assistant");
    let json = plugin(&["endpoints", "list", "--kubeconfig", kc, "-n", ns, "-o", "json"]).await?.json()?;
    let endpoint = &json["items"][0];
    assert_eq!((endpoint["name"].as_str(), endpoint["slug"].as_str()), (Some("chat"), Some("chat")));
    assert_eq!(endpoint["models"], serde_json::json!(["assistant"]));
    assert_eq!(endpoint["ready"], "True");
    assert_eq!(endpoint["url"].as_str(), Some(chat[1]));

    // Status: every object with its conditions and reasons.
    let status = plugin(&["status", "--kubeconfig", kc, "-n", ns]).await?;
    assert!(status.ok, "{}", status.stderr);
    let header: Vec<&str> = status.stdout.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["KIND", "NAME", "CONDITION", "STATUS", "REASON", "MESSAGE"]);
    for kind in ["Project", "ServiceTier", "Provider", "Endpoint", "ApiKey"] {
        assert!(
            status.stdout.lines().any(|l| l.starts_with(kind) && l.contains("Ready")),
            "{kind}:\n{}",
            status.stdout
        );
    }
    let json = plugin(&["status", "--kubeconfig", kc, "-n", ns, "-o", "json"]).await?.json()?;
    let items = json["items"].as_array().expect("items");
    let endpoint = items.iter().find(|i| i["kind"] == "Endpoint").expect("the Endpoint");
    let ready = endpoint["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").expect("Ready");
    assert_eq!(ready["status"], "True");
    assert!(ready["reason"].as_str().is_some_and(|r| !r.is_empty()));

    // Test: a streamed request, timed, with the gateway's headers.
    let tested = plugin(&["test", "chat", "--key", &key, "--url", &gateway.base, "--kubeconfig", kc, "-n", ns]).await?;
    assert!(tested.ok, "{}", tested.stderr);
    for field in ["TTFT:", "Total:", "Backend:", "Request ID:", "x-ratelimit-limit-requests:"] {
        assert!(tested.stdout.contains(field), "{field} in\n{}", tested.stdout);
    }
    let probe =
        plugin(&["test", "chat", "--key", &key, "--url", &gateway.base, "--kubeconfig", kc, "-n", ns, "-o", "json"])
            .await?
            .json()?;
    assert_eq!(probe["status"], 200);
    assert_eq!(probe["model"], "assistant");
    let ttft = probe["ttftMs"].as_f64().expect("ttftMs");
    assert!(ttft > 0.0 && ttft <= probe["totalMs"].as_f64().expect("totalMs"), "{probe}");
    assert!(probe["backend"].as_str().is_some_and(|b| !b.is_empty()), "{probe}");
    assert!(probe["requestId"].as_str().is_some_and(|b| !b.is_empty()), "{probe}");
    assert!(!probe["reply"].as_str().unwrap_or_default().is_empty(), "{probe}");
    assert_eq!(probe["completionTokens"], 4, "the simulated provider's output");
    let refused = plugin(&[
        "test",
        "chat",
        "--key",
        "sl_pv_not-a-key-at-all-000000000000000000",
        "--url",
        &gateway.base,
        "--kubeconfig",
        kc,
        "-n",
        ns,
    ])
    .await?;
    assert!(!refused.ok && refused.stderr.contains("401"), "{}", refused.stderr);

    // Usage: the two requests above, as the gateway reported them, and from the gateway itself.
    let usage = eventually("the requests in the usage report", WAIT, || async {
        let run = plugin(&["usage", "--dataplane-namespace", dp, "--kubeconfig", kc, "-n", ns, "-o", "json"]).await?;
        let json = run.json()?;
        let reader = json["items"].as_array().into_iter().flatten().find(|i| i["key"] == "reader").cloned();
        Ok(match reader {
            Some(r) if r["requests"] == 2 => Ok(r),
            _ => Err(json.to_string()),
        })
    })
    .await?;
    assert_eq!(usage["completionTokens"], 8);
    assert_eq!(usage["replicas"], 1);
    assert!(usage["period"].as_str().is_some_and(|p| p.starts_with("monthly:")));
    let table = plugin(&["usage", "--dataplane-namespace", dp, "--kubeconfig", kc, "-n", ns]).await?.stdout;
    let header: Vec<&str> =
        table.lines().next().expect("header").split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(header, ["KEY", "PERIOD", "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS", "SPEND", "REPLICAS"]);
    assert_eq!(row(&table, "reader").expect("reader")[2], "2");
    let by_model = plugin(&["usage", "--key", &key, "--url", &gateway.base, "--kubeconfig", kc, "-n", ns]).await?;
    assert!(by_model.ok && by_model.stdout.starts_with("Period "), "{}", by_model.stderr);
    let reader = row(&by_model.stdout, "reader").expect("reader's row");
    assert_eq!(&reader[..4], ["reader", "chat", "assistant", "2"], "{}", by_model.stdout);
    let json = plugin(&["usage", "--key", &key, "--url", &gateway.base, "--kubeconfig", kc, "-n", ns, "-o", "json"])
        .await?
        .json()?;
    assert_eq!(json["data"][0]["key_id"], format!("{ns}/reader"));
    assert_eq!(json["totals"]["requests"], 2);
    Ok(())
}

#[tokio::test]
async fn completion_and_help() -> anyhow::Result<()> {
    for shell in ["bash", "zsh", "fish"] {
        let run = plugin(&["completion", shell]).await?;
        assert!(run.ok && run.stdout.contains("keys") && run.stdout.contains("rotate"), "{shell}: {}", run.stderr);
    }
    for command in [
        &["keys", "create"][..],
        &["keys", "list"],
        &["keys", "get"],
        &["keys", "rotate"],
        &["keys", "revoke"],
        &["endpoints", "list"],
        &["usage"],
        &["test"],
        &["status"],
        &["completion"],
    ] {
        let run = plugin(&[command, &["--help"]].concat()).await?;
        assert!(
            run.ok && run.stdout.contains("Example:") && run.stdout.contains("--namespace"),
            "{command:?}: {}",
            run.stdout
        );
    }
    Ok(())
}
