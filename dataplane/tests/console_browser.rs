//! The web console in a real headless Chromium against the quickstart: `tests/console/browser.py`
//! (Playwright from `$SLUICE_PYTHON`'s venv, driving the Chromium at `$SLUICE_CHROMIUM`; see
//! tests/setup/python.sh and tests/setup/chromium.sh) signs in, reads models and prices, streams
//! a playground answer, sees the usage chart grow and a backend turn ejected, and creates and
//! revokes a key, taking the screenshots docs/console.md shows: into the build's temporary folder
//! on every run, and over docs/console/*.png with `SLUICE_UPDATE_SCREENSHOTS=1` (they show the
//! test gateway's random port, so rewriting them on every run would only churn the repository).
//! With no browser or Playwright the test fails and says how to get them: it never skips.

mod support;

use support::{Gateway, apikey, quickstart_manifests};

const ADMIN: &str = "sl_demo_console_admin_000001";
const SCREENSHOTS: [&str; 7] = ["signin-wrong-key", "models", "playground", "usage", "health", "keys", "phone-models"];

#[test]
fn the_console_works_in_a_real_browser() {
    let shots = support::screenshot_dir("console");
    let manifests = quickstart_manifests();
    manifests.write(
        "50-admin.yaml",
        &apikey("demo", "console-admin", ADMIN, "  scopes: [inference, models.read, usage.read, management]\n"),
    );
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let base = gateway.url("");
    let output = support::playwright("console/browser.py")
        .args([&base, "sl_demo_quickstartkey", ADMIN])
        .arg(&shots)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- gateway\n{}",
        gateway.log_text()
    );
    assert!(stdout.contains("browser: all checks passed"), "{stdout}");
    for name in SCREENSHOTS {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "{}/{name}.png is a screenshot", shots.display());
    }
}
