//! What an audit record says about one request, and how its fields are written: the request
//! path fills a [`RequestRecord`] (clones of shared strings, a few numbers: no text is made
//! there) and the writer thread turns it into the fields of a JSON line, always in the same
//! order, so the same record is always the same bytes.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use jiff::Timestamp;

/// The metadata of one API request, as the request path hands it to the writer. Never prompt or
/// completion text, never a key: the key is named by its public id (`<namespace>/<name>`).
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// When the request ended (was answered, refused, or its client went away).
    pub time: Timestamp,
    /// The request's id, as sent back in `x-request-id`.
    pub request_id: HeaderValue,
    /// Project slug, once the path named one the key opens.
    pub project: Option<Arc<str>>,
    /// Endpoint slug, likewise.
    pub endpoint: Option<Arc<str>>,
    /// The key's public id (`<namespace>/<name>`), once the key was recognised.
    pub key_id: Option<Arc<str>>,
    /// The model as the endpoint exposes it, once the body named one that resolved.
    pub model: Option<Arc<str>>,
    /// The backend that answered (`<namespace>/<provider>/<upstream model>`).
    pub backend: Option<Arc<str>>,
    /// Status sent to the client; 499 when the client went away first.
    pub status: u16,
    /// The error code of a refusal (`invalid_api_key`, `model_not_found`...).
    pub error: Option<&'static str>,
    /// Why a stream ended before its upstream's did.
    pub cut_short: Option<&'static str>,
    /// From the request's head to its end.
    pub duration_ms: u64,
    /// Prompt tokens billed.
    pub prompt_tokens: u64,
    /// Completion tokens billed.
    pub completion_tokens: u64,
    /// Cost billed, in whole nano-dollars (the access log's rounding, kept as an integer).
    pub cost_nano_usd: u64,
    /// The client's address.
    pub client: IpAddr,
}

impl RequestRecord {
    /// The record of a request with `status`, ending now, about which nothing else is known
    /// yet: no project, key or model, no backend, nothing billed.
    pub fn new(request_id: HeaderValue, status: u16, client: IpAddr) -> Self {
        Self {
            time: Timestamp::now(),
            request_id,
            project: None,
            endpoint: None,
            key_id: None,
            model: None,
            backend: None,
            status,
            error: None,
            cut_short: None,
            duration_ms: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_nano_usd: 0,
            client,
        }
    }

    /// The fields after a line's `seq` and `prev`, each preceded by its comma.
    pub(super) fn write_fields(&self, out: &mut Vec<u8>) {
        write_time(out, self.time);
        out.extend_from_slice(b",\"request_id\":");
        write_string(out, &String::from_utf8_lossy(self.request_id.as_bytes()));
        for (name, value) in [
            ("project", &self.project),
            ("endpoint", &self.endpoint),
            ("key_id", &self.key_id),
            ("model", &self.model),
            ("backend", &self.backend),
        ] {
            write_name(out, name);
            write_optional(out, value.as_deref());
        }
        write_name(out, "status");
        write_number(out, u64::from(self.status));
        write_name(out, "error");
        write_optional(out, self.error);
        write_name(out, "cut_short");
        write_optional(out, self.cut_short);
        write_name(out, "duration_ms");
        write_number(out, self.duration_ms);
        write_name(out, "prompt_tokens");
        write_number(out, self.prompt_tokens);
        write_name(out, "completion_tokens");
        write_number(out, self.completion_tokens);
        write_name(out, "cost_usd");
        write_nano_dollars(out, self.cost_nano_usd);
        write_name(out, "client");
        // An address's text never needs escaping.
        let _ = write!(out, "\"{}\"", self.client);
    }
}

/// Whole nano-dollars of `usd`, as the access log rounds them.
pub fn nano_dollars(usd: f64) -> u64 {
    // A cost is never negative nor near 2^64 nano-dollars; the cast saturates if it were.
    (usd * 1e9).round() as u64
}

/// `,"name":`.
pub(super) fn write_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `,"time":"2026-11-22T03:37:26.442598Z"`: RFC 3339 in UTC with microseconds, so every
/// record's time has the same width and sorts as text. Written as the text log writes its
/// timestamps (the date part made once a second), a third of the writer's time otherwise.
pub(super) fn write_time(out: &mut Vec<u8>, time: Timestamp) {
    struct Text<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for Text<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    out.extend_from_slice(b",\"time\":\"");
    // Writing into a Vec cannot fail.
    let _ = crate::logging::write_timestamp(&mut Text(out), std::time::SystemTime::from(time));
    out.push(b'"');
}

pub(super) fn write_number(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A JSON string, escaped as JSON requires (a request id is the client's and may hold quotes).
pub(super) fn write_string(out: &mut Vec<u8>, value: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

pub(super) fn write_optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => write_string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// Nano-dollars as an exact decimal number of dollars: `20000` is `0.00002`, never the
/// `2.0000000000000005e-5` of float formatting.
fn write_nano_dollars(out: &mut Vec<u8>, nanos: u64) {
    let (whole, fraction) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    write_number(out, whole);
    if fraction != 0 {
        let mut digits = [b'0'; 9];
        let mut rest = fraction;
        for slot in digits.iter_mut().rev() {
            // `rest % 10` is one decimal digit: the cast cannot truncate.
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let end = digits.iter().rposition(|d| *d != b'0').map_or(0, |last| last + 1);
        out.push(b'.');
        out.extend_from_slice(&digits[..end]);
    }
}

/// A record of an answered chat request, for tests.
#[cfg(test)]
pub(crate) fn sample() -> RequestRecord {
    RequestRecord {
        time: "2026-11-22T03:37:26.442598Z".parse().expect("time"),
        request_id: HeaderValue::from_static("req_1"),
        project: Some("demo".into()),
        endpoint: Some("assistant".into()),
        key_id: Some("demo/web".into()),
        model: Some("demo-chat".into()),
        backend: Some("demo/sim/sim-chat-8b".into()),
        status: 200,
        error: None,
        cut_short: None,
        duration_ms: 583,
        prompt_tokens: 8,
        completion_tokens: 48,
        cost_nano_usd: 20_000,
        client: "10.1.2.3".parse().expect("address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(record: &RequestRecord) -> String {
        let mut out = Vec::new();
        record.write_fields(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn fields_are_written_in_a_fixed_order() {
        assert_eq!(
            fields(&sample()),
            ",\"time\":\"2026-11-22T03:37:26.442598Z\",\"request_id\":\"req_1\",\"project\":\"demo\",\
             \"endpoint\":\"assistant\",\"key_id\":\"demo/web\",\"model\":\"demo-chat\",\
             \"backend\":\"demo/sim/sim-chat-8b\",\"status\":200,\"error\":null,\"cut_short\":null,\
             \"duration_ms\":583,\"prompt_tokens\":8,\"completion_tokens\":48,\"cost_usd\":0.00002,\
             \"client\":\"10.1.2.3\""
        );
    }

    #[test]
    fn a_refusal_has_nulls_where_nothing_was_known() {
        let record = RequestRecord {
            project: None,
            endpoint: None,
            key_id: None,
            model: None,
            backend: None,
            status: 401,
            error: Some("invalid_api_key"),
            request_id: HeaderValue::from_static("with \"quotes\" \\"),
            client: "::1".parse().expect("address"),
            cost_nano_usd: 0,
            ..sample()
        };
        let text = fields(&record);
        let parsed: serde_json::Value = serde_json::from_str(&format!("{{{}}}", &text[1..])).expect("valid JSON");
        assert_eq!(parsed["request_id"], "with \"quotes\" \\");
        assert_eq!(parsed["project"], serde_json::Value::Null);
        assert_eq!(parsed["error"], "invalid_api_key");
        assert_eq!(parsed["client"], "::1");
        assert!(text.contains("\"cost_usd\":0,"), "{text}");
    }

    #[test]
    fn costs_are_exact_decimals_of_nano_dollars() {
        let cost = |nanos| {
            let mut out = Vec::new();
            write_nano_dollars(&mut out, nanos);
            String::from_utf8(out).expect("UTF-8")
        };
        assert_eq!(cost(0), "0");
        assert_eq!(cost(1), "0.000000001");
        assert_eq!(cost(20_000), "0.00002");
        assert_eq!(cost(2_460_000_000), "2.46");
        assert_eq!(cost(7_000_000_000), "7");
        // Summed float prices round to the nano-dollar the access log shows.
        assert_eq!(nano_dollars(0.1 * 0.0002 + 0.000_000_000_000_000_5), 20_000);
    }

    #[test]
    fn a_queued_record_stays_small() {
        // The writer's queue bound (and its memory) assumes this.
        assert!(std::mem::size_of::<RequestRecord>() <= 256, "{}", std::mem::size_of::<RequestRecord>());
    }

    #[test]
    fn times_have_microseconds_in_utc() {
        let mut out = Vec::new();
        write_time(&mut out, "2026-01-02T03:04:05Z".parse().expect("time"));
        assert_eq!(String::from_utf8(out).expect("UTF-8"), ",\"time\":\"2026-01-02T03:04:05.000000Z\"");
    }
}
