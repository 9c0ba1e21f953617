//! Log output off the request path. Formatted lines are appended to one shared buffer (a lock and
//! a copy, no system call, no wake-up), and a writer thread writes the buffer to stdout every
//! 20 ms. One `write(2)` per access-log line, and the wake-up of a writer per line, cost a
//! quarter of the gateway's throughput at `info`. Nothing is dropped: past 1 MiB waiting (stdout
//! stalled), the thread that logs writes the buffer out itself.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

mod access;
mod text;

pub use access::{AccessRecord, write_directly};
pub(crate) use text::write_timestamp;
pub use text::{ACCESS_TARGET, TextFormat};

/// A client's address in a log line. An IPv4 address is written in one piece: the standard
/// `Display` goes through the general formatter once per octet, a visible share of an access
/// line's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address(pub IpAddr);

/// Room for any address's text (an IPv6 address with an embedded IPv4 one is 45 bytes).
pub const ADDRESS_TEXT: usize = 46;

impl Address {
    /// The address as text, written into `buffer`.
    pub fn text(self, buffer: &mut [u8; ADDRESS_TEXT]) -> &str {
        let mut len = 0;
        match self.0 {
            IpAddr::V4(v4) => {
                let mut push = |byte: u8| {
                    buffer[len] = byte;
                    len += 1;
                };
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        push(b'.');
                    }
                    if octet >= 100 {
                        push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        push(b'0' + octet / 10 % 10);
                    }
                    push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let mut rest = &mut buffer[..];
                // Fits: 45 bytes at most.
                let _ = write!(rest, "{v6}");
                len = ADDRESS_TEXT - rest.len();
            }
        }
        std::str::from_utf8(&buffer[..len]).unwrap_or_default()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; ADDRESS_TEXT]))
    }
}

/// How often queued lines are written.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Queued bytes past which logging writes synchronously: about 80 ms of access log at 40,000
/// requests per second, so a slow stdout costs a bounded amount of memory, not throughput first.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;

struct Queue {
    /// Lines waiting to be written.
    lines: Mutex<Vec<u8>>,
    /// The batch being written, swapped with `lines`: held by whoever writes, so batches leave in
    /// order, and both buffers keep their capacity (no allocation per batch).
    writing: Mutex<Vec<u8>>,
    stopping: AtomicBool,
}

fn lock(buffer: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    fn new() -> Self {
        Self {
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            writing: Mutex::new(Vec::with_capacity(64 * 1024)),
            stopping: AtomicBool::new(false),
        }
    }

    /// Writes out what is queued.
    fn drain(&self) {
        let mut batch = lock(&self.writing);
        std::mem::swap(&mut *lock(&self.lines), &mut *batch);
        if !batch.is_empty() {
            let mut out = std::io::stdout();
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
    }
}

/// Where the log formatter writes.
#[derive(Clone)]
pub struct LogWriter {
    queue: Arc<Queue>,
}

/// Dropping it (at exit) writes out every queued line.
pub struct LogFlushGuard {
    queue: Arc<Queue>,
}

impl LogWriter {
    /// Starts the writer thread over stdout.
    pub fn stdout() -> std::io::Result<(Self, LogFlushGuard)> {
        let queue = Arc::new(Queue::new());
        let background = queue.clone();
        std::thread::Builder::new().name("sluice-log".into()).spawn(move || {
            while !background.stopping.load(Ordering::Relaxed) {
                std::thread::sleep(FLUSH_EVERY);
                background.drain();
            }
        })?;
        Ok((Self { queue: queue.clone() }, LogFlushGuard { queue }))
    }
}

impl Drop for LogFlushGuard {
    fn drop(&mut self) {
        self.queue.stopping.store(true, Ordering::Relaxed);
        self.queue.drain();
    }
}

/// Appends one formatted event (the formatter writes each event in one call).
pub struct QueueWriter<'a> {
    queue: &'a Queue,
}

impl Write for QueueWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut lines = lock(&self.queue.lines);
        lines.extend_from_slice(bytes);
        if lines.len() > MAX_QUEUED_BYTES {
            drop(lines);
            self.queue.drain();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = QueueWriter<'a>;

    fn make_writer(&'a self) -> QueueWriter<'a> {
        QueueWriter { queue: &self.queue }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_reads_as_the_standard_display_writes_it() {
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        for text in
            ["0.0.0.0", "127.0.0.1", "10.20.30.40", "255.255.255.255", "192.0.2.9", "::1", "2001:db8::7", longest]
        {
            let address: IpAddr = text.parse().expect("address");
            let shown = address.to_string();
            assert_eq!(Address(address).to_string(), shown);
            assert_eq!(Address(address).text(&mut [0; ADDRESS_TEXT]), shown);
            assert!(text == shown || text == longest, "{shown}");
        }
    }
}
