//! The official client SDKs, used as users use them, against the gateway on its embedded
//! quickstart.

mod support;

use std::process::Command;

use support::Gateway;

fn python() -> String {
    support::tool("SLUICE_PYTHON", "python.sh")
}

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/python").join(name)
}

#[test]
fn openai_python_sdk_on_the_quickstart() {
    let python = python();
    let gateway = Gateway::start(None, &[]);
    let base_url = gateway.url("/demo/assistant/v1");
    let output = Command::new(python).arg(script("gateway_openai.py")).arg(&base_url).output().expect("python runs");
    assert!(
        output.status.success(),
        "openai SDK checks failed:\n{}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        gateway.log_text()
    );
}
