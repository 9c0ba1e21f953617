//! The access log's line of an answered request: the gateway's one log event per request. With
//! the text format it is written straight into the log queue, in the same layout
//! [`super::TextFormat`] writes it; dispatching it through `tracing` (the subscriber lookup, the
//! filter, a visitor call and a dynamic dispatch per field) cost about as much again as
//! formatting it. With the JSON format, or under any other subscriber (tests), it goes through
//! `tracing` like every other event. Either way the filter decides: `sluice::access=warn` turns
//! it off.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tracing::Level;

use super::text::{push_escaped, push_quoted, write_f64, write_timestamp};
use super::{ACCESS_TARGET, ADDRESS_TEXT, Address, LogWriter, Queue, QueueWriter};

/// One answered (or failed after admission) request, as the access log reports it.
#[derive(Clone, Copy, Debug)]
pub struct AccessRecord<'a> {
    /// The request's id (the client's `x-request-id` or the gateway's).
    pub request_id: &'a str,
    /// The project's slug.
    pub project: &'a str,
    /// The endpoint's slug.
    pub endpoint: &'a str,
    /// The model the client named, as the endpoint exposes it.
    pub model: &'a str,
    /// The key's id (`<namespace>/<name>`), never the key.
    pub key: &'a str,
    /// The client's address.
    pub client: IpAddr,
    /// The backend that answered; empty when none did.
    pub backend: &'a str,
    /// The status the client got (499 when it went away first).
    pub status: u16,
    /// From the request's arrival to its settlement.
    pub duration_ms: u64,
    /// Until the first byte of the answer, when one came.
    pub ttft_ms: Option<u64>,
    /// Tokens billed.
    pub prompt_tokens: u64,
    /// Tokens billed.
    pub completion_tokens: u64,
    /// A whole number of nano-dollars, in dollars.
    pub cost_usd: f64,
    /// Why a stream ended early (a phrase: quoted).
    pub cut_short: Option<&'a str>,
}

/// Where the text format's access lines go directly.
struct Direct {
    queue: Arc<Queue>,
    ansi: bool,
}

static DIRECT: OnceLock<Direct> = OnceLock::new();

thread_local! {
    /// Where a line is formatted before it is queued.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Writes access lines straight into `writer`'s queue, in the text format (`ansi` colours the
/// level). Called once, by the binary that installed the text formatter over `writer`.
pub fn write_directly(writer: &LogWriter, ansi: bool) {
    let _ = DIRECT.set(Direct { queue: writer.queue.clone(), ansi });
}

impl AccessRecord<'_> {
    /// Logs the line, when the filter lets `sluice::access` through at `INFO`.
    pub fn log(&self) {
        let Some(direct) = DIRECT.get() else { return self.dispatch() };
        if !tracing::enabled!(target: ACCESS_TARGET, Level::INFO) {
            return;
        }
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => direct.write(self, &mut line),
            Err(_) => direct.write(self, &mut String::new()),
        });
    }

    /// The line as a `tracing` event.
    fn dispatch(&self) {
        let mut address = [0; ADDRESS_TEXT];
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = self.request_id,
            project = self.project,
            endpoint = self.endpoint,
            model = self.model,
            key = self.key,
            client = Address(self.client).text(&mut address),
            backend = self.backend,
            status = self.status,
            duration_ms = self.duration_ms,
            ttft_ms = self.ttft_ms,
            prompt_tokens = self.prompt_tokens,
            completion_tokens = self.completion_tokens,
            cost_usd = self.cost_usd,
            cut_short = self.cut_short,
            "request"
        );
    }

    /// The line as [`super::TextFormat`] writes the event, from the level on.
    fn render(&self, line: &mut String, ansi: bool) {
        // The level right-aligned in five columns, after a space.
        line.push_str(if ansi { " \x1b[32m INFO\x1b[0m " } else { "  INFO " });
        line.push_str(ACCESS_TARGET);
        line.push_str(": request");
        let mut numbers = itoa::Buffer::new();
        let bare = |line: &mut String, name: &str, value: &str| {
            line.push(' ');
            line.push_str(name);
            line.push('=');
            push_escaped(line, value);
        };
        bare(line, "request_id", self.request_id);
        bare(line, "project", self.project);
        bare(line, "endpoint", self.endpoint);
        bare(line, "model", self.model);
        bare(line, "key", self.key);
        bare(line, "client", Address(self.client).text(&mut [0; ADDRESS_TEXT]));
        bare(line, "backend", self.backend);
        let mut number = |line: &mut String, name: &str, value: Option<u64>| {
            if let Some(value) = value {
                line.push(' ');
                line.push_str(name);
                line.push('=');
                line.push_str(numbers.format(value));
            }
        };
        number(line, "status", Some(u64::from(self.status)));
        number(line, "duration_ms", Some(self.duration_ms));
        number(line, "ttft_ms", self.ttft_ms);
        number(line, "prompt_tokens", Some(self.prompt_tokens));
        number(line, "completion_tokens", Some(self.completion_tokens));
        line.push_str(" cost_usd=");
        write_f64(line, self.cost_usd);
        if let Some(cut_short) = self.cut_short {
            line.push_str(" cut_short=");
            push_quoted(line, cut_short);
        }
        line.push('\n');
    }
}

impl Direct {
    fn write(&self, record: &AccessRecord<'_>, line: &mut String) {
        line.clear();
        let _ = write_timestamp(line, SystemTime::now());
        record.render(line, self.ansi);
        let _ = QueueWriter { queue: &self.queue }.write(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::text::tests::capture_with;

    fn record(client: &str, cut_short: Option<&'static str>, ttft_ms: Option<u64>) -> AccessRecord<'static> {
        AccessRecord {
            request_id: "req_0123",
            project: "de\nmo",
            endpoint: "chat",
            model: "m \u{1b}[31m",
            key: "ns/k",
            client: client.parse().expect("an address"),
            backend: "ns/p/m@10.0.0.7:8000",
            status: 200,
            duration_ms: 583,
            ttft_ms,
            prompt_tokens: 8,
            completion_tokens: 48,
            cost_usd: 2e-5,
            cut_short,
        }
    }

    #[test]
    fn the_direct_line_is_the_line_the_text_formatter_writes() {
        for ansi in [false, true] {
            for record in [
                record("127.0.0.1", None, Some(12)),
                record("2001:db8::7", Some("upstream stream error"), None),
                AccessRecord { backend: "", cost_usd: 0.0, status: 499, ..record("10.1.2.3", Some("say \"x\""), None) },
                AccessRecord { cost_usd: 1234.5678, ..record("::1", None, Some(0)) },
            ] {
                let dispatched = capture_with(ansi, || record.dispatch());
                let mut direct = String::new();
                record.render(&mut direct, ansi);
                // The same after the timestamp (27 characters).
                assert_eq!(dispatched.get(27..), Some(direct.as_str()), "ansi {ansi}");
                assert_eq!(dispatched.lines().count(), 1);
            }
        }
    }

    #[test]
    fn a_direct_line_goes_into_the_queue_with_its_timestamp() {
        let queue = Arc::new(Queue::new());
        let direct = Direct { queue: queue.clone(), ansi: false };
        direct.write(&record("127.0.0.1", None, Some(12)), &mut String::new());
        let queued = String::from_utf8(super::super::lock(&queue.lines).clone()).expect("UTF-8");
        let mut expected = String::new();
        record("127.0.0.1", None, Some(12)).render(&mut expected, false);
        assert_eq!(queued.get(27..), Some(expected.as_str()), "{queued}");
        assert!(queued.get(..27).is_some_and(|t| t.ends_with('Z') && t.starts_with("20")), "{queued}");
    }
}
