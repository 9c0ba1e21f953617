//! The README's first screen does what it says: two set-up commands, the first starts the
//! gateway on the embedded quickstart, and its curl example gets an answer.

mod support;

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README.md")
}

/// The ```sh blocks of the README, in order.
fn shell_blocks(text: &str) -> Vec<String> {
    text.split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block.to_owned()))
        .collect()
}

#[test]
fn the_first_screen_has_exactly_two_setup_commands() {
    let text = readme();
    let blocks = shell_blocks(&text);
    let commands: Vec<&str> =
        blocks[0].lines().map(|l| l.split('#').next().unwrap_or_default().trim()).filter(|l| !l.is_empty()).collect();
    assert_eq!(commands, ["cargo run --release -p sluice-gateway", "tests/run-all"]);
    let first_screen: String = text.lines().take(30).collect::<Vec<_>>().join("\n");
    assert!(first_screen.contains("tests/run-all") && first_screen.contains("cargo run --release -p sluice-gateway"));
    let ci =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run")).expect(".ci/run");
    assert!(ci.lines().any(|l| l.trim() == "tests/run-all"), ".ci/run runs the README's test command");
}

#[test]
fn the_first_command_serves_the_quickstart_and_the_curl_example_works() {
    let text = readme();
    let blocks = shell_blocks(&text);
    // The first command with no flags: the embedded quickstart (on free ports, chosen through the
    // environment variables the flags document, so the test never collides with a running copy).
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"));
    command
        .env("SLUICE_LISTEN", "127.0.0.1:0")
        .env("SLUICE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SLUICE_LOG_FORMAT", "json");
    let gateway = support::Gateway::spawn(command);
    let curl = blocks.iter().find(|b| b.starts_with("curl ")).expect("a curl example");
    assert!(curl.contains("http://127.0.0.1:8080/demo/assistant/v1"));
    let curl = curl
        .replace("http://127.0.0.1:8080", &format!("http://{}", gateway.api))
        .replace("curl ", "curl -sS --fail-with-body ");
    let output = Command::new("bash").arg("-c").arg(&curl).output().expect("curl runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON answer");
    assert!(answer["choices"][0]["message"]["content"].as_str().is_some_and(|c| !c.is_empty()), "{answer}");
    assert!(gateway.logs_with("serving the embedded quickstart").contains("serving the embedded quickstart"));
}
