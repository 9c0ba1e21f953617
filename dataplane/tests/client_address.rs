//! Client addresses behind proxies, on the real binary: a key's IP allow-list sees the client a
//! trusted proxy names (`X-Forwarded-For`, `Forwarded`, PROXY protocol v1 and v2), an untrusted
//! peer cannot claim another address with a header, and the access and audit logs show the
//! resolved one.
//! Loopback stands in for the networks: 127.0.0.2 is the trusted proxy, 127.0.0.1 a client that
//! connects directly; the key only opens to 203.0.113.0/24 and 2001:db8::/32.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KEY: &str = "sl_acme_proxied_0000000001";
const PROXY: &str = "127.0.0.2";
const DIRECT: &str = "127.0.0.1";

fn manifests(sim: &str) -> String {
    format!(
        r#"{}---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m-ok
      backends: [{{providerRef: {{name: primary}}, model: up-model}}]
---
{}
"#,
        support::acme_tenant(sim),
        apikey("acme", "office", KEY, "  allowedCidrs: [203.0.113.0/24, \"2001:db8::/32\"]\n"),
    )
}

async fn start(extra: &[&str]) -> (Sim, Manifests, Gateway) {
    let sim = Sim::start(Sim::fast()).await;
    let dir = Manifests::new();
    dir.write("acme.yaml", &manifests(&format!("http://{}", sim.addr)));
    let gateway = Gateway::start(Some(dir.path()), extra);
    (sim, dir, gateway)
}

/// A connection to the gateway from `source` (a loopback address).
async fn connect(gateway: &Gateway, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(source.parse().expect("ip"), 0)).expect("bind the source address");
    socket.connect(gateway.api).await.expect("connect")
}

/// Writes `preamble` (a PROXY header, or nothing), then a chat request with `headers`, on a
/// connection from `source`; returns the response's status (0 when the gateway closed the
/// connection without one) and body.
async fn send(gateway: &Gateway, source: &str, preamble: &[u8], headers: &[(&str, &str)], id: &str) -> (u16, String) {
    let body = json!({"model": "m-ok", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).to_string();
    let mut request = format!(
        "POST /acme/chat/v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {KEY}\r\n\
content-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let mut stream = connect(gateway, source).await;
    let mut bytes = preamble.to_vec();
    bytes.extend_from_slice(request.as_bytes());
    // The gateway may close a refused connection before everything is written.
    let _ = stream.write_all(&bytes).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn v2_header(source: IpAddr, port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let (family, mut address) = match source {
        IpAddr::V4(ip) => (0x11, [ip.octets().to_vec(), vec![127, 0, 0, 1]].concat()),
        IpAddr::V6(ip) => (0x21, [ip.octets().to_vec(), vec![0; 16]].concat()),
    };
    address.extend_from_slice(&port.to_be_bytes());
    address.extend_from_slice(&8080u16.to_be_bytes());
    header.extend_from_slice(&[0x21, family]);
    header.extend_from_slice(&u16::try_from(address.len()).expect("short").to_be_bytes());
    header.extend_from_slice(&address);
    header
}

/// The audit log's record of request `id`, once the writer has written it.
async fn audit_record(path: &std::path::Path, id: &str) -> Value {
    let needle = format!("\"request_id\":\"{id}\"");
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(&needle)) {
            return serde_json::from_str(line).expect("a JSON record");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit record for {id}");
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let audit = tempfile::tempdir().expect("tempdir");
    let audit_log = audit.path().join("audit.log");
    let audit_arg = audit_log.to_string_lossy().into_owned();
    let (_sim, _dir, gateway) = start(&["--trusted-proxies", "127.0.0.2/32", "--audit-log", &audit_arg]).await;

    // Through the trusted proxy, the client it names is allowed...
    let (status, body) = send(&gateway, PROXY, b"", &[("x-forwarded-for", "203.0.113.9")], "xff-ok").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gateway.access_line("xff-ok")["fields"]["client"], "203.0.113.9");
    assert_eq!(audit_record(&audit_log, "xff-ok").await["client"], "203.0.113.9", "the audit log too");
    // ...and the entry a client wrote itself before the proxy's own is not believed.
    let (status, body) =
        send(&gateway, PROXY, b"", &[("x-forwarded-for", "203.0.113.9, 198.51.100.7")], "xff-spoof-left").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ip_not_allowed"), "{body}");
    assert_eq!(gateway.access_line("xff-spoof-left")["fields"]["client"], "198.51.100.7");
    // RFC 7239 `Forwarded`, with IPv6.
    let forwarded = r#"for="[2001:db8::42]:4711";proto=https"#;
    let (status, body) = send(&gateway, PROXY, b"", &[("forwarded", forwarded)], "fwd-v6").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gateway.access_line("fwd-v6")["fields"]["client"], "2001:db8::42");

    // A peer that is not a trusted proxy cannot claim an allowed address.
    let (status, body) = send(&gateway, DIRECT, b"", &[("x-forwarded-for", "203.0.113.9")], "direct-spoof").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(gateway.access_line("direct-spoof")["fields"]["client"], DIRECT);
    assert_eq!(audit_record(&audit_log, "direct-spoof").await["client"], DIRECT);
    let (status, _) = send(&gateway, DIRECT, b"", &[("forwarded", "for=203.0.113.9")], "direct-spoof-2").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn proxy_protocol_names_the_client_for_trusted_peers_only() {
    let (_sim, _dir, gateway) = start(&["--trusted-proxies", "127.0.0.2", "--proxy-protocol", "optional"]).await;

    let v1 = b"PROXY TCP4 203.0.113.20 127.0.0.1 40000 8080\r\n";
    let (status, body) = send(&gateway, PROXY, v1, &[], "pp-v1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gateway.access_line("pp-v1")["fields"]["client"], "203.0.113.20");

    let v2 = v2_header("2001:db8::7".parse().expect("ip"), 4711);
    let (status, body) = send(&gateway, PROXY, &v2, &[], "pp-v2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gateway.access_line("pp-v2")["fields"]["client"], "2001:db8::7");

    // Optional: a trusted peer may also connect without a header (then it is the client).
    let (status, _) = send(&gateway, PROXY, b"", &[], "pp-none").await;
    assert_eq!(status, 403);
    assert_eq!(gateway.access_line("pp-none")["fields"]["client"], PROXY);

    // From an untrusted peer the header is not read: it is a malformed request, not an address.
    let (status, _) = send(&gateway, DIRECT, v1, &[], "pp-untrusted").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn required_proxy_protocol_closes_connections_without_it() {
    let (_sim, _dir, gateway) = start(&["--trusted-proxies", "127.0.0.2", "--proxy-protocol", "required"]).await;
    let (status, _) = send(&gateway, PROXY, b"", &[], "req-missing").await;
    assert_eq!(status, 0, "a plain request on a PROXY-only listener gets no answer");
    let (status, _) = send(&gateway, DIRECT, b"PROXY TCP4 203.0.113.20 127.0.0.1 1 2\r\n", &[], "req-untrusted").await;
    assert_eq!(status, 0, "an untrusted peer is closed at once");
    let (status, body) = send(&gateway, PROXY, b"PROXY TCP4 203.0.113.20 127.0.0.1 1 2\r\n", &[], "req-ok").await;
    assert_eq!(status, 200, "{body}");
    assert!(gateway.logs_with("not from a trusted proxy").contains("127.0.0.1"));
}

#[test]
fn proxy_protocol_without_trusted_proxies_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--proxy-protocol", "required"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--proxy-protocol needs --trusted-proxies"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-gateway"))
        .args(["--trusted-proxies", "10.0.0.0/8,nonsense", "--check"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nonsense") && stderr.contains("--trusted-proxies"), "{stderr}");
}
