//! Black-box: fleet mode serves several backends, each with its own profile and port, from one
//! config, and reports where each listens (stdout ready line and `--ready-file`).

mod common;

use std::path::PathBuf;

use common::{Sim, client, post_json};
use serde_json::{Value, json};

fn scratch_dir(name: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("sluice-sim-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::test]
async fn one_process_serves_every_backend_of_the_config() {
    let dir = scratch_dir("fleet");
    std::fs::write(dir.join("small.yaml"), "models: [small]\ninterTokenMs: 1\nprefillOverheadMs: 1\n").expect("write");
    let config = dir.join("fleet.yaml");
    std::fs::write(
        &config,
        concat!(
            "backends:\n",
            "  - {name: small-a, profileFile: small.yaml}\n",
            "  - {name: small-b, profileFile: small.yaml}\n",
            "  - name: large\n",
            "    profile: {models: [large], interTokenMs: 2, prefillOverheadMs: 2}\n",
            "  - name: broken\n",
            "    profile: {models: [broken], faults: {errors: [{status: 503, rate: 1.0}]}}\n",
        ),
    )
    .expect("write");
    let ready_file = dir.join("ready.json");
    let sim = Sim::spawn(&[
        "fleet",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--ready-file",
        ready_file.to_str().expect("utf-8 path"),
        "--log",
        "warn",
    ]);
    let from_file: Value = serde_json::from_slice(&std::fs::read(&ready_file).expect("ready file")).expect("json");
    assert_eq!(from_file, sim.ready, "the ready file says what the ready line says");
    let backends = sim.ready["backends"].as_array().expect("backends").clone();
    let names: Vec<&str> = backends.iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, ["small-a", "small-b", "large", "broken"]);
    let mut ports: Vec<&str> = backends.iter().filter_map(|b| b["addr"].as_str()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 4, "one port each");

    for (backend, model, status) in [(0, "small", 200), (1, "small", 200), (2, "large", 200), (3, "broken", 503)] {
        let url = backends[backend]["url"].as_str().expect("url");
        let models: Value =
            client().get(format!("{url}/v1/models")).send().await.expect("send").json().await.expect("json");
        assert_eq!(models["data"][0]["id"], model);
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let (got, _) = post_json(&format!("{url}/v1/chat/completions"), &body).await;
        assert_eq!(got, status, "backend {backend}");
        let metrics = client().get(format!("{url}/metrics")).send().await.expect("send").text().await.expect("text");
        assert!(metrics.contains(&format!("model_name=\"{model}\"")));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_fleet_config_fails_with_a_message() {
    let dir = scratch_dir("bad-fleet");
    let config = dir.join("fleet.yaml");
    std::fs::write(&config, "backends:\n  - {name: a, profile: {interTokenMS: 3}}\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-sim"))
        .args(["fleet", "--config", config.to_str().expect("utf-8 path")])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interTokenMS"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
