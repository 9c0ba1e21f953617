//! A real Prometheus server (`$SLUICE_PROMETHEUS`, tests/setup/promtool.sh) on a loopback port
//! with a temporary data folder, scraping the targets it is given, and its HTTP query API.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// One scrape target: the job's name, `host:port` and the labels Prometheus adds to its series.
pub struct Target<'a> {
    pub job: &'a str,
    pub address: String,
    pub labels: &'a [(&'a str, &'a str)],
}

/// A series of a query's answer: its labels and its (Unix time, value) points.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// Whether any point is a number (histogram_quantile over no observations gives NaN).
    pub fn has_numbers(&self) -> bool {
        self.points.iter().any(|(_, v)| v.is_finite())
    }
}

pub struct Prometheus {
    child: Child,
    url: String,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `targets` every `interval` (`/metrics`, labels honoured as the
    /// chart's PodMonitor does) and waits until it serves its API.
    pub fn start(binary: &str, interval: Duration, targets: &[Target<'_>]) -> Self {
        let dir = tempfile::tempdir().expect("a data folder");
        let seconds = format!("{}s", interval.as_secs().max(1));
        let jobs: Vec<Value> = targets
            .iter()
            .map(|target| {
                let labels: serde_json::Map<String, Value> =
                    target.labels.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
                serde_json::json!({
                    "job_name": target.job,
                    "scrape_interval": seconds,
                    "honor_labels": true,
                    "static_configs": [{"targets": [target.address], "labels": labels}],
                })
            })
            .collect();
        // JSON is YAML: the configuration needs no YAML writer.
        let config = serde_json::json!({"global": {"scrape_interval": seconds}, "scrape_configs": jobs});
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config.to_string()).expect("write the configuration");
        let mut child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .args(["--web.listen-address=127.0.0.1:0", "--log.level=info"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let lines = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // `msg="Listening on" address=127.0.0.1:<port>`: the port it bound.
                if line.contains("msg=\"Listening on\"")
                    && let Some(address) = line.split("address=").nth(1)
                {
                    let _ = tx.send(address.split_whitespace().next().unwrap_or_default().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(address) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("prometheus did not start:\n{}", logs.lock().unwrap().join("\n"));
        };
        Self { child, url: format!("http://{address}"), logs, _dir: dir }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.url)).expect("a URL");
        url.query_pairs_mut().extend_pairs(params);
        let response = crate::support::client().get(url).send().await.map_err(|e| format!("{path}: {e}"))?;
        let body: Value = response.json().await.map_err(|e| format!("{path}: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{} ({})", body["error"].as_str().unwrap_or("?"), body["errorType"]));
        }
        Ok(body["data"].clone())
    }

    /// `expr` evaluated at `time`: its series (one point each), or Prometheus' error.
    pub async fn query(&self, expr: &str, time: f64) -> Result<Vec<Series>, String> {
        let data = self.get("/api/v1/query", &[("query", expr), ("time", &time.to_string())]).await?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        match data["resultType"].as_str() {
            Some("vector") => Ok(result.iter().map(|s| series(s, std::slice::from_ref(&s["value"]))).collect()),
            // `vector(0)` alone and plain numbers.
            Some("scalar") => Ok(vec![series(&Value::Null, std::slice::from_ref(&data["result"]))]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// `expr` from `start` to `end` every `step` seconds, or Prometheus' error.
    pub async fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Result<Vec<Series>, String> {
        let (start, end, step) = (start.to_string(), end.to_string(), step.to_string());
        let params = [("query", expr), ("start", start.as_str()), ("end", end.as_str()), ("step", step.as_str())];
        let data = self.get("/api/v1/query_range", &params).await?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        Ok(result.iter().map(|s| series(s, s["values"].as_array().map(Vec::as_slice).unwrap_or_default())).collect())
    }

    /// The values of `label` on the series `selector` matches (Grafana's `label_values`).
    pub async fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self.get(&format!("/api/v1/label/{label}/values"), &[("match[]", selector)]).await?;
        Ok(data.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect())
    }
}

/// A series from the API's `{"metric": {...}}` and its `[time, "value"]` pairs.
fn series(item: &Value, points: &[Value]) -> Series {
    let labels = item["metric"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let points = points
        .iter()
        .filter_map(|p| {
            let time = p[0].as_f64()?;
            // Prometheus writes values as strings: "0.25", "NaN", "+Inf".
            let value = p[1].as_str()?.parse::<f64>().ok()?;
            Some((time, value))
        })
        .collect();
    Series { labels, points }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
