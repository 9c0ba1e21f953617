//! The headers the gateway writes on answers and refusals: the upstream's less those the client
//! must not get, the client's limits in OpenAI's format, and an alias's deprecation.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::limits::LimitReport;
use crate::resolve::Deprecation;
use crate::snapshot::Tier;

/// Response headers from upstream that the client must not get: hop-by-hop ones, lengths the
/// gateway recomputes, cookies, and the upstream's own rate limits (the client's are ours).
pub(super) fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        let dropped = matches!(
            n,
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "set-cookie"
                | "trailer"
                | "upgrade"
                | "proxy-connection"
                | "te"
        ) || n.starts_with("x-ratelimit-")
            || n == "retry-after";
        if !dropped {
            to.append(name.clone(), value.clone());
        }
    }
}

/// `Deprecation`, `Sunset` (RFC 8594) and the model to move to.
pub(super) fn deprecation_headers(headers: &mut HeaderMap, deprecation: Deprecation<'_>) {
    headers.insert(HeaderName::from_static("deprecation"), HeaderValue::from_static("true"));
    if let Some(sunset) = deprecation.sunset {
        let date = sunset.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(value) = HeaderValue::try_from(date) {
            headers.insert(HeaderName::from_static("sunset"), value);
        }
    }
    if let Ok(value) = HeaderValue::try_from(deprecation.replacement) {
        headers.insert(HeaderName::from_static("x-sluice-model-replacement"), value);
    }
}

/// A tier's `x-ratelimit-*` headers, made once for each set of windows a response shows and
/// cloned for each response with its numbers written in place. Cloning copies the map's slots;
/// inserting the nine headers one by one hashed every name (2,400 of a chat request's 82,600
/// instructions).
#[derive(Debug, Default)]
pub struct LimitHeaders {
    /// `x-ratelimit-limit-requests` and `-tokens` values.
    limits: [Option<HeaderValue>; 2],
    /// By the windows shown: bit 0 requests, bit 1 tokens.
    templates: [OnceLock<HeaderMap>; 4],
}

impl LimitHeaders {
    /// A tier's, from its requests and tokens per minute.
    pub fn new(requests_per_minute: Option<u32>, tokens_per_minute: Option<u64>) -> Self {
        Self {
            limits: [requests_per_minute.map(HeaderValue::from), tokens_per_minute.map(HeaderValue::from)],
            templates: Default::default(),
        }
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` in OpenAI's format, and
/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds when the bucket is full again)
/// for clients that read those: the requests-per-minute numbers, else the tokens-per-minute
/// ones. The limits are the tier's ready-made values; the other numbers are written into one
/// buffer that every value shares (one allocation instead of one per header).
pub(super) fn limit_headers(report: &LimitReport, tier: &Tier) -> HeaderMap {
    let own = &tier.limit_headers;
    let windows = [report.requests, report.tokens];
    let shown = [0, 1].map(|w| windows[w].filter(|_| own.limits[w].is_some()).map(|(_, left, reset)| (left, reset)));
    let shape = usize::from(shown[0].is_some()) | usize::from(shown[1].is_some()) << 1;
    let Some(&(_, generic_reset)) = shown.iter().flatten().next() else { return HeaderMap::new() };
    let mut headers = own.templates[shape].get_or_init(|| template(&own.limits, shape)).clone();

    // The numbers go one after the other into one buffer: at most 20 + 12 bytes a window and
    // 20 for the generic reset.
    let mut text = BytesMut::with_capacity(84);
    let mut numbers = itoa::Buffer::new();
    // Each value's start and end in `text`: a window's remaining count and reset.
    let mut spans = [((0, 0), (0, 0)); 3];
    for (span, (remaining, reset)) in spans.iter_mut().zip(shown.into_iter().flatten()) {
        let start = text.len();
        text.extend_from_slice(numbers.format(remaining).as_bytes());
        let middle = text.len();
        write_reset(&mut text, reset);
        *span = ((start, middle), (middle, text.len()));
    }
    let windows_shown = shape.count_ones() as usize;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let start = text.len();
    text.extend_from_slice(numbers.format((now + generic_reset).as_secs_f64().ceil() as u64).as_bytes());
    // The generic remaining count is the first shown window's.
    spans[windows_shown] = (spans[0].0, (start, text.len()));

    // Digits and `ms`, `s`, `m`, `.`: always a valid header value. The template holds each
    // window's limit, remaining and reset, then the generic three, in that order.
    let text = text.freeze();
    let mut values = headers.values_mut();
    for (remaining, reset) in &spans[..=windows_shown] {
        let _limit = values.next();
        for (value, range) in values.by_ref().take(2).zip([remaining, reset]) {
            if let Ok(number) = HeaderValue::from_maybe_shared(text.slice(range.0..range.1)) {
                *value = number;
            }
        }
    }
    headers
}

/// The headers of the windows in `shape` (bit 0 requests, bit 1 tokens), with the limits filled
/// in and `0` for the rest.
fn template(limits: &[Option<HeaderValue>; 2], shape: usize) -> HeaderMap {
    static NAMES: [[HeaderName; 3]; 3] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
        ],
    ];
    // Room for the upstream's headers and the gateway's others without growing the table.
    let mut headers = HeaderMap::with_capacity(32);
    let windows = [0, 1].into_iter().filter(|&w| shape & (1 << w) != 0);
    let generic = windows.clone().next();
    for (names, w) in windows.map(|w| (&NAMES[w], w)).chain(generic.map(|w| (&NAMES[2], w))) {
        let limit = limits[w].clone().unwrap_or(HeaderValue::from_static("0"));
        headers.append(names[0].clone(), limit);
        headers.append(names[1].clone(), HeaderValue::from_static("0"));
        headers.append(names[2].clone(), HeaderValue::from_static("0"));
    }
    headers
}

/// Appends a duration as OpenAI writes it in `x-ratelimit-reset-*`: `120ms`, `7s`, `1.5s`,
/// `6m0s`.
fn write_reset(text: &mut BytesMut, duration: Duration) {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut numbers = itoa::Buffer::new();
    if ms < 1000 {
        text.extend_from_slice(numbers.format(ms).as_bytes());
        text.extend_from_slice(b"ms");
    } else if ms < 60_000 {
        text.extend_from_slice(numbers.format(ms / 1000).as_bytes());
        let fraction = ms % 1000;
        if fraction > 0 {
            // Milliseconds as a decimal fraction without trailing zeros: 500 -> .5, 250 -> .25.
            let digits = [fraction / 100, fraction / 10 % 10, fraction % 10].map(|d| b'0' + d as u8);
            let kept = if digits[2] != b'0' {
                3
            } else if digits[1] != b'0' {
                2
            } else {
                1
            };
            text.extend_from_slice(b".");
            text.extend_from_slice(&digits[..kept]);
        }
        text.extend_from_slice(b"s");
    } else {
        text.extend_from_slice(numbers.format(ms / 60_000).as_bytes());
        text.extend_from_slice(b"m");
        text.extend_from_slice(numbers.format((ms % 60_000) / 1000).as_bytes());
        text.extend_from_slice(b"s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(duration: Duration) -> String {
        let mut text = BytesMut::new();
        write_reset(&mut text, duration);
        String::from_utf8(text.to_vec()).expect("ASCII")
    }

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(reset(Duration::from_millis(120)), "120ms");
        assert_eq!(reset(Duration::from_millis(7000)), "7s");
        assert_eq!(reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset(Duration::from_millis(1250)), "1.25s");
        assert_eq!(reset(Duration::from_millis(1005)), "1.005s");
        assert_eq!(reset(Duration::from_millis(59_999)), "59.999s");
        assert_eq!(reset(Duration::from_secs(360)), "6m0s");
    }

    fn tier(requests_per_minute: Option<u32>, tokens_per_minute: Option<u64>) -> Tier {
        let config = serde_json::from_value(serde_json::json!({
            "requestsPerMinute": requests_per_minute, "tokensPerMinute": tokens_per_minute,
            "firstTokenMs": 1, "totalMs": 1, "idleStreamMs": 1, "priority": 0, "priceMultiplier": 1.0,
            "retryPercent": 0, "minRetriesPerSecond": 0,
        }))
        .expect("tier");
        Tier {
            name: "t".to_owned(),
            config,
            retries: Default::default(),
            limit_headers: LimitHeaders::new(requests_per_minute, tokens_per_minute),
        }
    }

    fn assert_values(headers: &HeaderMap, expected: &[(&str, &str)]) {
        for (name, value) in expected {
            assert_eq!(headers[*name], *value, "{name}");
        }
    }

    #[test]
    fn limits_are_written_per_window_and_generically_from_the_first_shown() {
        let report = LimitReport {
            requests: Some((60, 59, Duration::from_millis(1_000))),
            tokens: Some((10_000, 9_000, Duration::from_millis(6_500))),
        };
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let headers = limit_headers(&report, &tier(Some(60), Some(10_000)));
        let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        assert_values(
            &headers,
            &[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-limit-tokens", "10000"),
                ("x-ratelimit-remaining-tokens", "9000"),
                ("x-ratelimit-reset-tokens", "6.5s"),
                ("x-ratelimit-limit", "60"),
                ("x-ratelimit-remaining", "59"),
            ],
        );
        let reset: u64 = headers["x-ratelimit-reset"].to_str().expect("ASCII").parse().expect("a number");
        assert!((before + 1..=after + 2).contains(&reset), "{reset} not 1 s after {before}..{after}");

        assert_eq!(headers.len(), 9, "{headers:?}");

        // The next response of the tier, from the same template, carries its own numbers.
        let both = tier(Some(60), Some(10_000));
        let first = limit_headers(&report, &both);
        let later = LimitReport {
            requests: Some((60, 3, Duration::from_millis(120))),
            tokens: Some((10_000, 12, Duration::from_secs(360))),
        };
        let headers = limit_headers(&later, &both);
        assert_values(
            &headers,
            &[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "3"),
                ("x-ratelimit-reset-requests", "120ms"),
                ("x-ratelimit-limit-tokens", "10000"),
                ("x-ratelimit-remaining-tokens", "12"),
                ("x-ratelimit-reset-tokens", "6m0s"),
                ("x-ratelimit-remaining", "3"),
            ],
        );
        assert_eq!(first["x-ratelimit-remaining-requests"], "59", "the first response's numbers stay its own");

        // A tier without a requests limit shows the tokens window, also generically.
        let headers = limit_headers(&report, &tier(None, Some(10_000)));
        assert!(headers.get("x-ratelimit-limit-requests").is_none());
        assert!(headers.get("x-ratelimit-remaining-requests").is_none());
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "9000");
        assert_eq!(headers["x-ratelimit-limit"], "10000");
        assert_eq!(headers["x-ratelimit-remaining"], "9000");

        // No limits shown, no headers.
        let headers = limit_headers(&report, &tier(None, None));
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn upstream_hop_by_hop_and_rate_limit_headers_stay_upstream() {
        let mut upstream = HeaderMap::new();
        for name in ["content-type", "connection", "content-length", "set-cookie", "x-ratelimit-remaining-tokens"] {
            upstream.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        }
        upstream.insert(HeaderName::from_static("retry-after"), HeaderValue::from_static("1"));
        upstream.append(HeaderName::from_static("x-upstream"), HeaderValue::from_static("a"));
        upstream.append(HeaderName::from_static("x-upstream"), HeaderValue::from_static("b"));
        let mut client = HeaderMap::new();
        copy_response_headers(&upstream, &mut client);
        let names: Vec<&str> = client.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-upstream"]);
        assert_eq!(client.get_all("x-upstream").iter().count(), 2);
    }

    #[test]
    fn deprecations_name_the_sunset_and_the_replacement() {
        let mut headers = HeaderMap::new();
        let sunset = "2099-01-01T00:00:00Z".parse().expect("time");
        deprecation_headers(&mut headers, Deprecation { sunset: Some(sunset), replacement: "m" });
        assert_eq!(headers["deprecation"], "true");
        assert_eq!(headers["sunset"], "Thu, 01 Jan 2099 00:00:00 GMT");
        assert_eq!(headers["x-sluice-model-replacement"], "m");
    }
}
