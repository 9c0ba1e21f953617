//! The shipped examples load, validate against the CRD schemas and compile.

use std::path::PathBuf;

use sluice_crds::api::{ApiKind, ProviderType, RoutingPolicy, Scope};
use sluice_crds::compile::{CompileOptions, GeneratedKeys, compile};
use sluice_crds::config::hash_key;
use sluice_crds::manifests::load_path;
use sluice_crds::objects::Object;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

#[test]
fn quickstart_compiles_to_one_project_with_the_documented_key() {
    let loaded =
        sluice_crds::load_and_compile(&example("quickstart"), &CompileOptions::default()).expect("quickstart compiles");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let [config] = loaded.configs.as_slice() else { panic!("one project expected, got {}", loaded.configs.len()) };
    assert_eq!(config.project.slug, "demo");
    let endpoint = &config.endpoints["assistant"];
    assert_eq!(endpoint.models.keys().collect::<Vec<_>>(), ["demo-chat", "demo-embed", "demo-image"]);
    assert_eq!(endpoint.default_model.as_deref(), Some("demo-chat"));
    assert_eq!(endpoint.aliases["demo-chat-latest"].target, "demo-chat");
    assert_eq!(endpoint.apis, ApiKind::ALL);
    assert!(config.providers.values().all(|p| p.provider_type == ProviderType::Simulated));
    let [key, readonly] = config.keys.as_slice() else { panic!("two keys expected") };
    assert_eq!(key.id, "demo/demo");
    assert_eq!(key.scopes, [Scope::Inference]);
    assert_eq!(key.hashes[0].sha256, hash_key(b"sl_demo_quickstartkey"));
    assert_eq!(readonly.id, "demo/demo-readonly");
    assert_eq!(readonly.scopes, [Scope::ModelsRead]);
    assert_eq!(readonly.hashes[0].sha256, hash_key(b"sl_demo_readonlykey"));
    assert!(config.validate().is_ok());
}

#[test]
fn kubernetes_example_compiles_with_operator_generated_keys() {
    let manifests = load_path(&example("kubernetes")).expect("example loads");
    assert_eq!(manifests.warnings.len(), 1, "only the Namespace is skipped: {:?}", manifests.warnings);
    assert!(manifests.warnings[0].message.contains("v1 Namespace"));
    let options = CompileOptions { generated_keys: GeneratedKeys::Operator, ..CompileOptions::default() };
    let configs = compile(&manifests.objects, &options).expect("kubernetes example compiles");
    let [config] = configs.as_slice() else { panic!("one project") };
    assert_eq!(config.project.slug, "team-a");
    assert_eq!(config.endpoints.keys().collect::<Vec<_>>(), ["chat", "code", "embed"]);
    let code = &config.endpoints["code"];
    assert_eq!(code.routing, RoutingPolicy::LeastRequest);
    assert_eq!(code.tier.as_deref(), Some("premium"));
    let coder = &code.models["coder"];
    assert_eq!(
        coder.backends.iter().map(|b| (b.provider.as_str(), b.weight, b.priority)).collect::<Vec<_>>(),
        [("sluice-system/glm", 3, 0), ("sluice-system/qwen", 1, 0), ("sluice-system/deepseek", 1, 1)]
    );
    let chat = &config.endpoints["chat"];
    assert!(chat.aliases["gpt-3.5-turbo"].deprecated);
    assert!(chat.aliases["gpt-3.5-turbo"].sunset.is_some());
    assert!(!chat.aliases["deepseek-chat"].deprecated);
    // Only the partner key has key material until the operator generates the others.
    assert_eq!(config.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["team-a/partner"]);
    assert_eq!(
        config.providers["sluice-system/deepseek"].credential.as_ref().map(|c| c.expose()),
        Some("sk-replace-with-your-deepseek-key")
    );
    assert_eq!(config.tiers.keys().collect::<Vec<_>>(), ["premium", "standard"]);
    assert!(config.validate().is_ok());
}

#[test]
fn kubernetes_example_keys_all_compile_once_generated() {
    let mut manifests = load_path(&example("kubernetes")).expect("example loads");
    for name in ["web-app", "ci-bot", "dashboard"] {
        let mut data = std::collections::BTreeMap::new();
        data.insert("key".to_owned(), format!("sl_team-a_generated{name}0000000000").into_bytes());
        manifests.objects.push(Object::Secret(sluice_crds::objects::SecretData {
            namespace: "team-a".into(),
            name: sluice_crds::compile::generated_key_secret_name(name),
            data,
        }));
    }
    let options = CompileOptions { generated_keys: GeneratedKeys::Operator, ..CompileOptions::default() };
    let configs = compile(&manifests.objects, &options).expect("compiles");
    let ids: Vec<&str> = configs[0].keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["team-a/ci-bot", "team-a/dashboard", "team-a/partner", "team-a/web-app"]);
    let ci = &configs[0].keys[0];
    assert_eq!(ci.allowed_cidrs.as_deref(), Some(&["10.20.0.0/16".to_owned(), "2001:db8:20::/48".to_owned()][..]));
    assert_eq!(ci.budget.as_ref().map(|b| b.limit_usd), Some(50.0));
}
