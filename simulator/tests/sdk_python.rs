//! The official Python SDKs (`openai`, `anthropic`, pinned in tests/sdk/python/requirements.txt)
//! read the simulator's responses as users use them: chat plain and streamed, tools, JSON mode,
//! embeddings, models, messages plain and streamed, errors. `tests/run-all` prepares the
//! interpreter (tests/setup/python.sh) and exports SLUICE_PYTHON.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Sim;

fn python() -> String {
    std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SLUICE_PYTHON is not set: run the tests through `tests/run-all` (or \
             `source tests/setup/python.sh` first), which installs the Python SDKs"
        )
    })
}

fn run_script(script: &str) {
    let python = python();
    let sim = Sim::start(&["--prefill-overhead-ms", "1", "--inter-token-ms", "1", "--jitter", "0"]);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sdk/python").join(script);
    let output =
        Command::new(&python).arg(&path).arg(&sim.url).output().unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    eprintln!("{}", stdout.trim());
}

#[test]
fn openai_sdk_reads_chat_embeddings_and_models() {
    run_script("sim_openai.py");
}

#[test]
fn anthropic_sdk_reads_messages() {
    run_script("sim_anthropic.py");
}
