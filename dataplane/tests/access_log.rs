//! The access log in the text format, from the real binary on its embedded quickstart: the
//! line of an answered request as the text formatter lays out every event (it is written
//! without the subscriber's dispatch), and the filter turning it off.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::client;

const KEY: &str = "sl_demo_quickstartkey";

/// The quickstart gateway with text logs and `filter`; its API address and its log lines.
struct TextGateway {
    api: String,
    lines: Arc<Mutex<Vec<String>>>,
    child: std::process::Child,
}

impl TextGateway {
    fn start(filter: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "text"])
            .args(["--log", filter])
            .env_remove("SLUICE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway starts");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().expect("lines").push(line);
            }
        });
        let mut gateway = Self { api: String::new(), lines, child };
        let listening = gateway.line_with("sluice-gateway listening", Duration::from_secs(30)).expect("listening");
        let api = listening.split(' ').find_map(|field| field.strip_prefix("api=")).expect("api= in the line");
        gateway.api = api.to_owned();
        gateway
    }

    /// The first line containing `needle`, waiting at most `wait` (lines are written every
    /// 20 ms).
    fn line_with(&self, needle: &str, wait: Duration) -> Option<String> {
        let start = Instant::now();
        loop {
            let found = self.lines.lock().expect("lines").iter().find(|l| l.contains(needle)).cloned();
            if found.is_some() || start.elapsed() > wait {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn chat(&self, id: &str) {
        let response = client()
            .post(format!("http://{}/demo/assistant/v1/chat/completions", self.api))
            .bearer_auth(KEY)
            .header("x-request-id", id)
            .json(&serde_json::json!({"model": "demo-chat", "max_tokens": 4,
                "messages": [{"role": "user", "content": "Say hello"}]}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        let _ = response.text().await;
    }
}

impl Drop for TextGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_answered_request_has_its_access_line_in_the_text_layout() {
    let gateway = TextGateway::start("info");
    gateway.chat("text-line-1").await;
    let line = gateway.line_with("request_id=text-line-1", Duration::from_secs(5)).expect("the access line");
    let (timestamp, rest) = line.split_at(27);
    assert!(timestamp.starts_with("20") && timestamp.ends_with('Z'), "{line}");
    let expected = "  INFO sluice::access: request request_id=text-line-1 project=demo endpoint=assistant \
                    model=demo-chat key=demo/demo client=127.0.0.1 backend=demo/simulated-chat/sim-chat-8b status=200 duration_ms=";
    assert!(rest.starts_with(expected), "{line}");
    for field in [" ttft_ms=", " prompt_tokens=", " completion_tokens=", " cost_usd="] {
        assert!(rest.contains(field), "{field} in {line}");
    }
    assert!(!line.contains(KEY), "never the key");
}

#[tokio::test]
async fn the_filter_turns_the_access_line_off() {
    let gateway = TextGateway::start("sluice::access=warn,info");
    gateway.chat("text-line-off").await;
    // The request's own line would be written within 20 ms; a second request and half a
    // second give it every chance.
    gateway.chat("text-line-off-2").await;
    assert_eq!(gateway.line_with("sluice::access", Duration::from_millis(500)), None);
    assert!(gateway.line_with("sluice-gateway listening", Duration::ZERO).is_some(), "other lines stay");
}
