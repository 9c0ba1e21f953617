//! A compiled configuration with 50,000 keys, given as a file: it loads (the YAML parser's node
//! budget does not apply to JSON files) and every key works.

mod support;

use std::time::Duration;

use sluice_crds::compile::CompileOptions;
use sluice_crds::config::{KeyConfig, KeyHash, hash_key};
use sluice_gateway::config_source;
use support::{Gateway, Manifests, client, eventually};

#[tokio::test]
async fn fifty_thousand_keys_load_from_a_compiled_file() {
    let mut config = config_source::quickstart(&CompileOptions::default()).expect("quickstart").remove(0);
    let template = config.keys[0].clone();
    config.keys = (0..50_000)
        .map(|i| KeyConfig {
            id: format!("demo/key-{i:05}"),
            hashes: vec![KeyHash { sha256: hash_key(format!("sl_demo_scale_{i:012}").as_bytes()), expires_at: None }],
            ..template.clone()
        })
        .collect();
    let manifests = Manifests::new();
    manifests.write("config.json", &String::from_utf8(config.to_canonical_json().expect("json")).expect("utf8"));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let status = |key: String| {
        let url = gateway.url("/demo/assistant/v1/models");
        async move { client().get(url).bearer_auth(key).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    for i in [0, 24_999, 49_999] {
        assert_eq!(status(format!("sl_demo_scale_{i:012}")).await, 200, "key {i}");
    }
    assert_eq!(status("sl_demo_scale_999999999999".into()).await, 401);
    let loaded = eventually(Duration::from_secs(1), || async {
        let page: serde_json::Value =
            client().get(gateway.admin_url("/config")).send().await.expect("config").json().await.expect("json");
        page["keys"] == 50_000
    })
    .await;
    assert!(loaded.is_some());
}
