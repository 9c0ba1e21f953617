//! What a gateway's connections and requests in flight cost in memory: its resident memory with
//! no client, with `n` idle kept-alive connections (each answered once), and with `n` streams
//! held mid-answer. Plain blocking sockets: the client's own cost is not in the figure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::procs;

/// Resident memory of the gateway per idle connection and per stream in flight.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionMemory {
    /// Idle kept-alive connections opened (each answered one request first).
    pub idle_connections: usize,
    /// Resident memory added per idle connection, bytes.
    pub bytes_per_idle_connection: f64,
    /// Streams held open mid-answer, each on its own connection.
    pub streams: usize,
    /// Resident memory added per stream in flight, its connection included, bytes.
    pub bytes_per_stream: f64,
}

/// How long the memory is left to settle before it is read.
const SETTLE: Duration = Duration::from_millis(1500);

/// Measures the gateway `pid` serving at `addr`: `path` answers a GET with the key, and
/// `stream_path` takes `stream_body` as a stream that lasts several seconds.
pub fn measure(
    pid: u32,
    addr: SocketAddr,
    key: &str,
    (path, stream_path, stream_body): (&str, &str, &str),
    n: usize,
) -> anyhow::Result<ConnectionMemory> {
    std::thread::sleep(SETTLE);
    let before = procs::rss_bytes(&[pid]) as f64;
    let get = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {key}\r\n\r\n");
    let idle = open(addr, n, get.as_bytes(), "HTTP/1.1 200")?;
    std::thread::sleep(SETTLE);
    let with_idle = procs::rss_bytes(&[pid]) as f64;
    drop(idle);
    std::thread::sleep(SETTLE);

    let post = format!(
        "POST {stream_path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{stream_body}",
        stream_body.len()
    );
    let base = procs::rss_bytes(&[pid]) as f64;
    let streams = open(addr, n, post.as_bytes(), "HTTP/1.1 200")?;
    std::thread::sleep(SETTLE);
    let with_streams = procs::rss_bytes(&[pid]) as f64;
    drop(streams);
    Ok(ConnectionMemory {
        idle_connections: n,
        bytes_per_idle_connection: (with_idle - before) / n as f64,
        streams: n,
        bytes_per_stream: (with_streams - base) / n as f64,
    })
}

/// Opens `n` connections, sends `request` on each and reads the start of each answer, which
/// must begin with `expect`.
fn open(addr: SocketAddr, n: usize, request: &[u8], expect: &str) -> anyhow::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(request)?;
        streams.push(stream);
    }
    for stream in &mut streams {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = [0u8; 64];
        let read = stream.read(&mut head)?;
        let text = String::from_utf8_lossy(&head[..read]);
        anyhow::ensure!(text.starts_with(expect), "expected {expect:?}, the gateway answered {text:?}");
    }
    Ok(streams)
}
